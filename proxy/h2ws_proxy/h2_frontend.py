"""The HTTP/2 frontend: one client connection, its h2 state machine, and its streams.

Concurrency rules (STYLE §2.4):

* R1. Only the reader task calls ``H2Connection.receive_data``; only the writer task
  writes to the client socket. Nothing else touches the socket, so no write lock.
* R2. Every mutation of the ``H2Connection`` is synchronous and followed by
  :meth:`_flush` (which moves h2's output into our outbound buffer and wakes the writer)
  before the next ``await``. Trio's single thread makes each mutation atomic.
* R3. The reader never awaits a stream's consumer: it appends to per-stream buffers and
  sets events, so one slow tunnel cannot hold up the others.
* R4. Events with several waiters are replaced by the *setter* (``set`` then a new
  ``Event``); single-waiter events are replaced by their waiter.
* R5. Tunnel tasks live in this connection's nursery; each has its own cancel scope
  (``H2TunnelStream.scope``) so a client reset cancels a backend dial at once.

Memory bounds: inbound, each stream holds at most the window we advertise
(``stream_window_bytes``) and the connection window is raised so that one stalled stream
cannot starve the others. Outbound, producers wait while more than
``_PRODUCER_HIGH_WATER`` bytes are queued for the client, and the reader stops reading
while more than ``_READER_HIGH_WATER`` are queued (a peer that floods PINGs or SETTINGS and
never reads its ACKs stops being read).
"""

from __future__ import annotations

import logging

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from h2ws_proxy.backend import connect_and_upgrade
from h2ws_proxy.config import RouteConfig
from h2ws_proxy.context import ClientInfo, ServerContext
from h2ws_proxy.errors import BackendRejected, ClientProtocolError, ProxyError, RouteNotFound
from h2ws_proxy.h2_request import parse_h2_request_head
from h2ws_proxy.h2_stream import H2TunnelStream
from h2ws_proxy.handshake import (
    WebSocketRequest,
    build_backend_upgrade,
    h2_success_headers,
    new_websocket_key,
    parse_extended_connect,
)
from h2ws_proxy.log import log_event
from h2ws_proxy.record import TunnelRecord
from h2ws_proxy.tunnel import TunnelEnd, run_tunnel

logger = logging.getLogger(__name__)

Header = tuple[bytes, bytes]

_READ_SIZE = 65536
_PRODUCER_HIGH_WATER = 256 * 1024
_READER_HIGH_WATER = 1024 * 1024
#: How long the writer may take to flush a final GOAWAY to a client that stopped reading.
_FINAL_FLUSH_S = 5.0
_MAX_WINDOW = 2**31 - 1  # RFC 9113 §6.9.1


class H2Frontend:
    """Serve one HTTP/2 client connection until it closes."""

    def __init__(
        self,
        client: trio.abc.Stream,
        server: ServerContext,
        info: ClientInfo,
        initial_data: bytes = b"",
    ) -> None:
        self._client = client
        self._server = server
        self._info = info
        self._limits = server.config.limits
        self._initial_data = initial_data
        self._conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(
                client_side=False,
                header_encoding=None,
                # h2's own checks make a malformed request a connection error; ours
                # (h2_request) make it a stream error, as RFC 9113 §8.1.1 asks.
                validate_inbound_headers=False,
                normalize_inbound_headers=True,  # joins cookie crumbs (RFC 9113 §8.2.3)
            )
        )
        self._streams: dict[int, H2TunnelStream] = {}
        self._outbound = bytearray()
        self._in_flight = 0
        self._outbound_ready = trio.Event()
        self._drained = trio.Event()
        self._reader_done = False
        self._writer_done = trio.Event()
        self._draining = False
        self._nursery: trio.Nursery | None = None

    @property
    def connect_protocol_enabled(self) -> bool:
        return self._info.listener.enable_connect_protocol

    # ---- lifetime ----

    async def run(self) -> None:
        """Serve until the client goes away; then every tunnel of this connection ends."""
        self._start_connection()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._write_loop)
            nursery.start_soon(self._drain_on_shutdown)
            if self._initial_data:
                self._receive(self._initial_data)
            await self._read_loop()
            self._reader_done = True
            for stream in list(self._streams.values()):
                stream.break_stream("client connection closed", by_peer=True)
                stream.scope.cancel()
            # Let the writer flush what is queued (a GOAWAY), then end: bounded, since a
            # client that stopped reading may never take it.
            self._outbound_ready.set()
            with trio.move_on_after(_FINAL_FLUSH_S):
                await self._writer_done.wait()
            nursery.cancel_scope.cancel()

    def _start_connection(self) -> None:
        limits = self._limits
        settings = {
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: limits.stream_window_bytes,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_bytes,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
        }
        if self.connect_protocol_enabled:
            # RFC 8441 §3. Browsers take this as "WebSocket over HTTP/2 works here".
            settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL] = 1
        self._conn.local_settings = h2.settings.Settings(client=False, initial_values=settings)
        self._conn.initiate_connection()
        # One stalled stream may hold its whole window unacknowledged; give the connection
        # room for every stream's window so the others keep moving.
        target = min(limits.max_concurrent_streams * limits.stream_window_bytes, _MAX_WINDOW)
        increment = target - self._conn.inbound_flow_control_window
        if increment > 0:
            self._conn.increment_flow_control_window(increment)
        self._flush()

    async def _read_loop(self) -> None:
        while True:
            await self._wait_outbound_below(_READER_HIGH_WATER)
            try:
                data = await self._client.receive_some(_READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return
            if not data or not self._receive(bytes(data)):
                return

    def _receive(self, data: bytes) -> bool:
        """Feed client bytes to h2 and act on the events; False once the connection is over."""
        try:
            events = self._conn.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            # h2 has queued a GOAWAY with the right code; flush it and end.
            log_event(
                logger,
                logging.INFO,
                "h2.protocol_error",
                conn=self._info.connection_id,
                error=str(error),
            )
            self._flush()
            return False
        for event in events:
            self._handle_event(event)
        self._flush()
        return True

    async def _write_loop(self) -> None:
        try:
            await self._write_until_done()
        finally:
            self._writer_done.set()

    async def _write_until_done(self) -> None:
        while True:
            if not self._outbound:
                if self._reader_done:
                    return
                await self._outbound_ready.wait()
                self._outbound_ready = trio.Event()
                continue
            data, self._outbound = self._outbound, bytearray()
            self._in_flight = len(data)
            try:
                await self._client.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self._connection_lost()
                return
            finally:
                self._in_flight = 0
            self._drained.set()
            self._drained = trio.Event()

    def _connection_lost(self) -> None:
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    async def _drain_on_shutdown(self) -> None:
        """On server shutdown: GOAWAY(NO_ERROR), refuse new streams, let open ones finish.

        h2's ``close_connection`` moves its state machine to CLOSED, after which it refuses
        to send anything, which would kill every open tunnel. So the GOAWAY is written here
        as a bare frame, between whole frames of h2's output, and h2 stays OPEN.
        """
        await self._server.shutdown.wait()
        self._draining = True
        self._flush()
        goaway = GoAwayFrame(0, last_stream_id=self._conn.highest_inbound_stream_id, error_code=0)
        self._outbound += goaway.serialize()
        self._outbound_ready.set()

    # ---- used by H2TunnelStream (synchronous, R2) ----

    def _flush(self) -> None:
        data = self._conn.data_to_send()
        if data:
            self._outbound += data
            self._outbound_ready.set()

    def _outbound_bytes(self) -> int:
        return len(self._outbound) + self._in_flight

    async def _wait_outbound_below(self, limit: int) -> None:
        while self._outbound_bytes() > limit:
            await self._drained.wait()

    async def wait_outbound_drained(self) -> None:
        """Wait until the client has taken enough of our output (producer backpressure)."""
        if self._outbound_bytes() > _PRODUCER_HIGH_WATER:
            await self._wait_outbound_below(_PRODUCER_HIGH_WATER)
        else:
            await trio.lowlevel.checkpoint()

    def acknowledge(self, stream_id: int, size: int) -> None:
        """Return ``size`` bytes of flow-control credit on ``stream_id`` and the connection."""
        self._conn.acknowledge_received_data(size, stream_id)
        self._flush()

    def send_data_nowait(self, stream_id: int, data: memoryview) -> int:
        """Send as much of ``data`` as the peer's windows allow; returns how much went."""
        try:
            allowed = min(self._conn.local_flow_control_window(stream_id), len(data))
            frame_size = self._conn.max_outbound_frame_size
            sent = 0
            while sent < allowed:
                size = min(frame_size, allowed - sent)
                self._conn.send_data(stream_id, bytes(data[sent : sent + size]))
                sent += size
        except h2.exceptions.StreamClosedError as error:
            raise trio.BrokenResourceError("the stream is closed") from error
        self._flush()
        return sent

    def end_stream_nowait(self, stream_id: int) -> None:
        try:
            self._conn.end_stream(stream_id)
        except h2.exceptions.StreamClosedError as error:
            raise trio.BrokenResourceError("the stream is closed") from error
        self._flush()

    def reset_stream_nowait(self, stream_id: int, *, cancel: bool) -> None:
        code = ErrorCodes.CANCEL if cancel else ErrorCodes.CONNECT_ERROR
        self._reset(stream_id, code)

    def _reset(self, stream_id: int, code: ErrorCodes) -> None:
        try:
            self._conn.reset_stream(stream_id, code)
        except h2.exceptions.StreamClosedError:
            return
        self._flush()

    # ---- h2 events (reader only) ----

    def _handle_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._on_request(event)
        elif isinstance(event, h2.events.DataReceived):
            self._on_data(event)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.feed_eof()
        elif isinstance(event, h2.events.StreamReset):
            self._on_reset(event)
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._on_window_change(event)
        elif isinstance(event, h2.events.TrailersReceived):
            self._fail_stream(event.stream_id, "trailers on a tunnel stream")

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        assert stream_id is not None
        assert event.headers is not None
        if self._draining:
            self._reset(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        try:
            request, route = self._accept_request(list(event.headers))
        except ProxyError as error:
            self._refuse(stream_id, error)
            return
        stream = H2TunnelStream(self, stream_id)
        if event.stream_ended is not None:
            stream.feed_eof()
        self._streams[stream_id] = stream
        assert self._nursery is not None
        self._nursery.start_soon(self._serve_tunnel, stream, request, route)

    def _accept_request(self, headers: list[Header]) -> tuple[WebSocketRequest, RouteConfig]:
        head = parse_h2_request_head(headers)
        if head.protocol is None:
            if head.method == b"CONNECT":
                raise ClientProtocolError(
                    "plain CONNECT (a TCP tunnel to host:port) is not offered here; "
                    "only extended CONNECT with :protocol websocket",
                    status_hint=501,
                )
            raise ClientProtocolError(
                "ordinary HTTP requests are not proxied yet; open a WebSocket "
                "(extended CONNECT with :protocol websocket)",
                status_hint=501,
            )
        request = parse_extended_connect(
            head, connect_protocol_enabled=self.connect_protocol_enabled, tls=self._info.tls
        )
        route = self._server.router.match(request.path)
        if route is None:
            raise RouteNotFound(f"no route for {request.path.decode('ascii', 'replace')}")
        return request, route

    def _refuse(self, stream_id: int, error: ProxyError) -> None:
        extra = error.extra_headers if isinstance(error, ClientProtocolError) else ()
        self._respond_nowait(stream_id, error.status_hint, error.message, extra)
        stream_error = isinstance(error, ClientProtocolError) and error.stream_error
        log_event(
            logger,
            logging.INFO,
            "h2.request_refused",
            conn=self._info.connection_id,
            stream=stream_id,
            status=error.status_hint,
            reason=error.message,
        )
        if stream_error:
            self._reset(stream_id, ErrorCodes.PROTOCOL_ERROR)  # RFC 9113 §8.1.1
        # Otherwise the answer ends our side and the client ends its own. RFC 9113 §8.1
        # allows RST_STREAM(NO_ERROR) here, but h2 then answers the client's late
        # END_STREAM with RST_STREAM(STREAM_CLOSED): noise a browser may count against
        # WebSocket over HTTP/2. Late DATA on such a stream is acknowledged and dropped.

    def _respond_nowait(
        self, stream_id: int, status: int, reason: str, extra: tuple[Header, ...] = ()
    ) -> None:
        """Answer with a short text body (dropped if the client's window cannot take it)."""
        body = (reason + "\n").encode("utf-8", "replace")
        try:
            if len(body) > min(self._conn.local_flow_control_window(stream_id), 16384):
                body = b""
            headers = [
                (b":status", str(status).encode()),
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ]
            self._conn.send_headers(stream_id, headers, end_stream=not body)
            if body:
                self._conn.send_data(stream_id, body, end_stream=True)
        except h2.exceptions.StreamClosedError:
            return
        self._flush()

    def _on_data(self, event: h2.events.DataReceived) -> None:
        assert event.stream_id is not None
        assert event.data is not None
        length = event.flow_controlled_length or 0
        stream = self._streams.get(event.stream_id)
        if stream is None:
            # A stream we already answered or reset: return the credit, drop the bytes.
            self._conn.acknowledge_received_data(length, event.stream_id)
            return
        if not stream.opened:
            self._conn.acknowledge_received_data(length, event.stream_id)
            self._fail_stream(event.stream_id, "DATA on an extended CONNECT before its 200")
            return
        stream.feed_data(event.data, length)

    def _fail_stream(self, stream_id: int, reason: str) -> None:
        """A protocol violation on one stream: reset it PROTOCOL_ERROR, end its tunnel."""
        log_event(
            logger,
            logging.INFO,
            "h2.stream_error",
            conn=self._info.connection_id,
            stream=stream_id,
            reason=reason,
        )
        self._reset(stream_id, ErrorCodes.PROTOCOL_ERROR)
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.break_stream(reason, by_peer=True)
            stream.scope.cancel()

    def _on_reset(self, event: h2.events.StreamReset) -> None:
        assert event.stream_id is not None
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            stream.break_stream(f"client reset the stream ({event.error_code!r})", by_peer=True)
            # Close the backend at once, even if no pump is waiting on the client side.
            stream.scope.cancel()

    def _on_window_change(self, event: h2.events.Event) -> None:
        stream_id = getattr(event, "stream_id", 0)
        if stream_id:
            stream = self._streams.get(stream_id)
            if stream is not None:
                stream.wake_writer()
            return
        for stream in self._streams.values():
            stream.wake_writer()

    # ---- one tunnel ----

    async def _serve_tunnel(
        self, stream: H2TunnelStream, request: WebSocketRequest, route: RouteConfig
    ) -> None:
        record = TunnelRecord(
            front="h2",
            connection_id=self._info.connection_id,
            stream_id=stream.stream_id,
            path=request.path,
            route=route.path,
            backend=str(route.backend),
        )
        try:
            with stream.scope:
                await self._open_and_run_tunnel(stream, request, route, record)
        finally:
            self._finish_tunnel(stream, record)

    async def _open_and_run_tunnel(
        self,
        stream: H2TunnelStream,
        request: WebSocketRequest,
        route: RouteConfig,
        record: TunnelRecord,
    ) -> None:
        key = new_websocket_key()
        try:
            upgrade = build_backend_upgrade(request, route, key, self._info.address)
            upgraded = await connect_and_upgrade(
                route.backend, upgrade, key, request, self._limits, self._server.connect_backend
            )
        except BackendRejected as rejection:
            record.status = rejection.status
            await self._relay_rejection(stream, rejection)
            return
        except ProxyError as error:
            record.status, record.error = error.status_hint, error.message
            self._refuse(stream.stream_id, error)
            return
        record.status = 200
        self._send_headers_nowait(stream.stream_id, h2_success_headers(upgraded.accepted))
        stream.opened = record.opened = True
        await run_tunnel(
            stream,
            upgraded.stream,
            backend_leftover=upgraded.leftover,
            idle_timeout_s=self._limits.idle_timeout_s,
            stats=record.stats,
        )

    async def _relay_rejection(self, stream: H2TunnelStream, rejection: BackendRejected) -> None:
        """Pass the backend's non-101 answer back as it came (status, headers, body)."""
        headers = [
            (b":status", str(rejection.status).encode()),
            *rejection.headers,
            (b"content-length", str(len(rejection.body)).encode()),
        ]
        try:
            self._send_headers_nowait(stream.stream_id, headers, end_stream=not rejection.body)
        except h2.exceptions.ProtocolError:
            self._refuse(
                stream.stream_id,
                ProxyError("backend answer cannot be relayed"),
            )
            return
        if rejection.body:
            try:
                await stream.send_all(rejection.body)
                await stream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return

    def _send_headers_nowait(
        self, stream_id: int, headers: list[Header], *, end_stream: bool = False
    ) -> None:
        self._conn.send_headers(stream_id, headers, end_stream=end_stream)
        self._flush()

    def _finish_tunnel(self, stream: H2TunnelStream, record: TunnelRecord) -> None:
        """Reset the stream unless it ended cleanly, forget it, and log the record."""
        if stream.reset_by_peer:
            record.stats.end = TunnelEnd.CLIENT_ABORTED
        if record.opened and record.stats.end is not TunnelEnd.CLEAN:
            stream.reset(cancel=record.stats.end is not TunnelEnd.BACKEND_ABORTED)
        self._streams.pop(stream.stream_id, None)
        record.log()
