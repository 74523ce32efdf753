"""The HTTP/2 frontend: one client connection, its tasks, its streams and their tunnels.

Concurrency rules (STYLE §2.4):

* R1. Only the reader task feeds h2 (``H2Session.receive``). Only the writer task writes
  to the client socket, except that whoever ends an output batch may first send what the
  kernel takes at once while the writer is idle (``end_output_batch``): a synchronous
  call, so nothing interleaves with it, and no write lock is needed.
* R2. Every mutation of the session is synchronous and flushes into the outbound buffer
  (which wakes the writer) before the next ``await``. Trio's single thread makes each
  mutation atomic.
* R3. The reader never awaits a stream's consumer: it appends to per-stream buffers and
  sets events, so one slow tunnel cannot hold up the others.
* R4. Events with several waiters are replaced by the *setter* (``set`` then a new
  ``Event``); a single waiter (the writer, a stream's reader or sender) waits on a
  reusable :class:`~h2ws_proxy.transport.wakeup.Wakeup` and re-checks its condition after it.
* R5. Tunnel tasks live in this connection's nursery; each has its own cancel scope
  (``H2TunnelStream.scope``), entered for the stream's whole life (the backend dial, then
  the tunnel), so a client reset cancels either at once.

Memory bounds: inbound, each stream holds at most the window we advertise, and credit for
bytes a tunnel never consumed goes back when the tunnel ends (else the connection window
would leak away). Outbound, producers wait while more than ``_PRODUCER_HIGH_WATER`` bytes
are queued for the client, and the reader stops reading while more than
``_READER_HIGH_WATER`` are (a peer that floods PINGs and never reads the ACKs stops being
read).

Ending: the connection ends when the client closes it, on a connection error (h2 queues
the GOAWAY), or, after a GOAWAY either way (our drain, or the client's polite goodbye),
once its last tunnel has ended.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import h2.events
import h2.exceptions
import trio
from h2.errors import ErrorCodes

from h2ws_proxy.backend.upgrade import BackendUpgraded, connect_and_upgrade
from h2ws_proxy.config import RouteConfig, advertises_connect_protocol
from h2ws_proxy.errors import BackendRejected, ClientProtocolError, ProxyError
from h2ws_proxy.http.backend_handshake import build_backend_upgrade, new_websocket_key
from h2ws_proxy.http.handshake import (
    WebSocketRequest,
    h2_success_headers,
    parse_extended_connect,
)
from h2ws_proxy.http.message import BodyFraming, HttpRequest, request_from_h2
from h2ws_proxy.http.request_head import H2RequestHead, parse_h2_request_head
from h2ws_proxy.http2.budget import SlidingWindowBudget
from h2ws_proxy.http2.h2lib_direct import DirectData
from h2ws_proxy.http2.h2lib_session import H2Session, StreamUnusable
from h2ws_proxy.http2.stream import H2ClientSide, H2TunnelStream
from h2ws_proxy.log import log_event
from h2ws_proxy.relay.context import ClientInfo, ServerContext
from h2ws_proxy.relay.exchange import (
    EXCHANGE_ABORT_ENDS,
    ExchangeAborted,
    ExchangeResult,
    forward_exchange,
)
from h2ws_proxy.relay.record import TunnelRecord
from h2ws_proxy.relay.routing import http_route, websocket_route
from h2ws_proxy.relay.tunnel import TunnelEnd, run_tunnel
from h2ws_proxy.transport.lingering import linger_before_close
from h2ws_proxy.transport.poller import BackendPoller
from h2ws_proxy.transport.socket_stream import LeanSocketStream
from h2ws_proxy.transport.tls_stream import LeanTLSStream
from h2ws_proxy.transport.wakeup import Wakeup

logger = logging.getLogger(__name__)

Header = tuple[bytes, bytes]

_READ_SIZE = 65536
_SEND_SLICE = 16384  # small enough that a slow but live reader makes progress per slice
_PRODUCER_HIGH_WATER = 256 * 1024
_READER_HIGH_WATER = 1024 * 1024
#: How long the writer may take to flush a final GOAWAY to a client that stopped reading.
_FINAL_FLUSH_S = 5.0
_POLLER_NAME = "h2ws_proxy.http2.frontend.backend_poller"
#: Constant task names: trio would otherwise format one from the bound method per stream.
_TUNNEL_TASK_NAME = "h2ws_proxy.http2.frontend.tunnel"
_EXCHANGE_TASK_NAME = "h2ws_proxy.http2.frontend.exchange"
#: Statuses whose answers carry no content-length (RFC 9110 §8.6, §15.4.5).
_NO_LENGTH_STATUSES = frozenset({204, 304})


class H2Frontend:
    """Serve one HTTP/2 client connection until it ends."""

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
        self.session = H2Session(
            self._limits,
            connect_protocol_enabled=advertises_connect_protocol(server.config, info.listener),
            on_output=self._wake_writer,
        )
        self._streams: dict[int, H2TunnelStream] = {}
        self._in_flight = 0
        self._outbound_ready = Wakeup()  # only the writer waits on it
        #: Inside an output batch (see ``begin_output_batch``), and whether it made output.
        self._batching = False
        self._output_in_batch = False
        self._drained = trio.Event()
        #: A task waits on ``_drained`` (see ``_signal_drained``).
        self._drain_waited = False
        self._reader_done = False
        self._writer_done = trio.Event()
        #: No new streams: we sent GOAWAY (drain) or the client did.
        self._closing = False
        self._read_scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        #: Producers without a task (tunnels driven by backend readiness) waiting for the
        #: client to take our output (see ``call_when_drained``).
        self._drain_callbacks: list[Callable[[], None]] = []
        self._poller: BackendPoller | None = None
        #: Streams that found a flow-control window shut (see ``_on_window_change``).
        self._window_waiters: set[H2TunnelStream] = set()
        limits = self._limits
        self._resets = SlidingWindowBudget(limits.max_stream_resets, limits.stream_reset_window_s)
        self._empty_frames = SlidingWindowBudget(
            limits.max_empty_frames, limits.stream_reset_window_s
        )
        #: Since when the connection has had no stream (None while it has some).
        self._idle_since: float | None = trio.current_time()
        self._became_idle = trio.Event()
        self._settings_received = trio.Event()
        #: Closed with ENHANCE_YOUR_CALM: nothing more from this client is acted on.
        self._calmed = False
        #: The writer found the client gone (broken, or no progress within the send timeout).
        self._client_gone = False

    # ---- lifetime ----

    async def run(self) -> None:
        """Serve until the connection ends; then every tunnel of this connection ends."""
        self.session.start()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._write_loop)
            nursery.start_soon(self._drain_on_shutdown)
            nursery.start_soon(self._require_settings)
            if self._limits.idle_connection_timeout_s > 0:
                nursery.start_soon(self._close_when_idle)
            with self._read_scope:
                if not self._initial_data or self._receive(self._initial_data):
                    await self._read_loop()
            self._reader_done = True
            for stream in list(self._streams.values()):
                # A stream both sides had ended was done, not aborted, whatever its task
                # had got round to.
                done = stream.local_ended and stream.remote_ended
                stream.break_stream("client connection closed", by_peer=not done)
                stream.scope.cancel()
            # Let the writer flush what is queued (a GOAWAY), then end: bounded, since a
            # client that stopped reading may never take it.
            self._wake_writer()
            with trio.move_on_after(_FINAL_FLUSH_S):
                await self._writer_done.wait()
                if not self._client_gone:
                    # Don't let a reset eat our GOAWAY (see lingering.py).
                    await linger_before_close(self._client, half_close=False)
            nursery.cancel_scope.cancel()

    async def _read_loop(self) -> None:
        while True:
            if self._outbound_bytes() > _READER_HIGH_WATER:  # not a coroutine per read
                await self._wait_outbound_below(_READER_HIGH_WATER)
            try:
                data = await self._client.receive_some(_READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return
            if not data or not self._receive(bytes(data)):
                return

    def _receive(self, data: bytes) -> bool:
        """Feed client bytes to h2 and act on the events; False once the connection is over."""
        self.begin_output_batch()
        try:
            try:
                events = self.session.receive(data)
            except h2.exceptions.ProtocolError as error:
                # h2 has queued a GOAWAY with the right code; the writer flushes it.
                self._log("h2.connection_error", error=str(error))
                return False
            for event in events:
                if self._calmed:
                    return False  # the connection is being closed: the rest is not ours
                if isinstance(event, DirectData):
                    self._on_direct_data(event)
                else:
                    self._handle_event(event)
            return True
        finally:
            self.end_output_batch()

    async def _write_loop(self) -> None:
        try:
            while True:
                if not self.session.outbound:
                    if self._reader_done:
                        return
                    await self._outbound_ready.wait()
                    continue
                data = self.session.take_outbound()
                self._in_flight = len(data)
                try:
                    sent = await self._send_with_progress(data)
                finally:
                    self._in_flight = 0
                if not sent:
                    # The client is gone or takes nothing: end the connection as if it had
                    # closed it (its tunnels end as aborted by the client).
                    self._client_gone = True
                    self._read_scope.cancel()
                    return
                self._signal_drained()
        finally:
            self._writer_done.set()

    async def _send_with_progress(self, data: bytearray) -> bool:
        """Send ``data``; False if the client broke or took no slice within the send timeout.

        The timeout is per slice, so a slow but live client is never cut off for the size
        of the batch, only for taking none of our bytes for ``send_timeout_s``.
        """
        view = memoryview(data)
        client = self._client
        try:
            if isinstance(client, LeanSocketStream):
                # Usually the kernel takes it all at once: then no timer is needed.
                view = view[client.send_nowait(view) :]
            tls = client if isinstance(client, LeanTLSStream) else None
            for start in range(0, len(view), _SEND_SLICE):
                piece = view[start : start + _SEND_SLICE]
                if tls is not None:
                    # One slice is one TLS record, written whole or not at all; most go at
                    # once, and a timer (a cancel scope, a deadline in trio's heap) per
                    # record was a fifth of the CPU of a TLS bulk transfer. One that must
                    # wait is repeated below with the same bytes, as OpenSSL requires.
                    piece = piece[tls.send_nowait(piece) :]
                    if not piece:
                        continue
                with trio.move_on_after(self._limits.send_timeout_s) as timeout:
                    await client.send_all(piece)
                if timeout.cancelled_caught:
                    self._log("client.send_timeout", send_timeout_s=self._limits.send_timeout_s)
                    return False
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return False
        return True

    def _wake_writer(self) -> None:
        if self._batching:
            self._output_in_batch = True  # sent at the batch's end (see end_output_batch)
        else:
            self._outbound_ready.set()

    def begin_output_batch(self) -> None:
        """Output from here to :meth:`end_output_batch` is sent once, at the end.

        The reader (one read's frames) and the backend poller (one round of ready
        backends) bracket their work with these. At the end, if the writer is idle, the
        output goes straight to the client's socket, without waking the writer: a trip
        through trio's scheduler per message saved. Over plain TCP as far as the kernel
        takes it; over TLS only whole (OpenSSL writes all or nothing) and only up to one
        of the writer's slices (a write that had to wait is repeated by the writer, which
        must then hold all of its bytes in its first slice). The rest is the writer's.
        """
        self._batching = True

    def end_output_batch(self) -> None:
        self._batching = False
        if self._output_in_batch:
            self._output_in_batch = False
            if not self._send_inline():
                self._outbound_ready.set()

    def _send_inline(self) -> bool:
        """Send queued output now, without waiting; True if nothing is left for the writer."""
        client, outbound = self._client, self.session.outbound
        if self._in_flight or self._reader_done:
            return not outbound  # the writer is mid-send (or done)
        if isinstance(client, LeanTLSStream):
            # A TLS write that has to wait must be repeated with at least the same bytes:
            # the writer's first slice (``_send_with_progress``) must hold all of them.
            if len(outbound) > _SEND_SLICE:
                return False
        elif not isinstance(client, LeanSocketStream):
            return not outbound  # not a socket of ours to write
        try:
            sent = client.send_nowait(outbound)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False  # the writer meets the error and ends the connection
        if sent:
            del outbound[:sent]
            self._signal_drained()
        return not outbound

    def _signal_drained(self) -> None:
        """Output went to the client: wake whoever waits for it to drain.

        The event is replaced only when a task waited on it: a new ``trio.Event`` per
        message costs CPU (bench/cpu_per_message.py), and usually nobody waits.
        """
        if self._drain_waited:
            self._drain_waited = False
            self._drained.set()
            self._drained = trio.Event()
        if self._drain_callbacks:
            self._call_drain_callbacks()

    async def _drain_on_shutdown(self) -> None:
        """On server shutdown: GOAWAY(NO_ERROR), refuse new streams, let open ones finish."""
        await self._server.shutdown.wait()
        self.session.send_goaway()
        self._closing = True
        self._end_if_idle()

    async def _require_settings(self) -> None:
        """The client's preface ends with its SETTINGS: no SETTINGS in time, no connection.

        Without this, a client that completes TLS and then sends nothing (slowloris on the
        preface) would hold the connection until the idle timeout.
        """
        with trio.move_on_after(self._limits.client_handshake_timeout_s):
            await self._settings_received.wait()
            return
        self._log(
            "h2.preface_timeout", client_handshake_timeout_s=self._limits.client_handshake_timeout_s
        )
        self._read_scope.cancel()

    def _end_if_idle(self) -> None:
        """After a GOAWAY either way, the connection ends with its last tunnel."""
        if self._streams:
            return
        if self._idle_since is None:
            self._idle_since = trio.current_time()
            self._became_idle.set()
            self._became_idle = trio.Event()
        if self._closing:
            self._read_scope.cancel()

    async def _close_when_idle(self) -> None:
        """A connection with no stream for ``idle_connection_timeout_s`` gets GOAWAY."""
        timeout_s = self._limits.idle_connection_timeout_s
        while True:
            idle_since = self._idle_since
            if idle_since is None:
                await self._became_idle.wait()
                continue
            await trio.sleep_until(idle_since + timeout_s)
            if self._idle_since == idle_since:
                self._log("h2.idle_connection_closed", idle_connection_timeout_s=timeout_s)
                self.session.send_goaway()
                self._closing = True
                self._end_if_idle()
                return

    def _count_reset(self) -> None:
        """A stream cancelled by the client, refused, or reset as malformed: the budget.

        Past ``max_stream_resets`` within ``stream_reset_window_s`` the connection is
        closed with ENHANCE_YOUR_CALM (CVE-2023-44487): each such stream costs us work
        (and possibly a backend dial) while costing the client almost nothing.
        """
        if self._resets.spend(trio.current_time()):
            self._calm_down("h2.rapid_reset", resets=len(self._resets))

    def _count_empty_frame(self) -> None:
        """An empty DATA frame that ends nothing: it costs us work and carries nothing."""
        if self._empty_frames.spend(trio.current_time()):
            self._calm_down("h2.empty_frame_flood", frames=len(self._empty_frames))

    def _calm_down(self, event: str, **fields: object) -> None:
        if self._calmed:
            return
        self._calmed = True
        self._log(event, **fields)
        self.session.close_connection(ErrorCodes.ENHANCE_YOUR_CALM)
        self._read_scope.cancel()

    # ---- backpressure, used by H2TunnelStream ----

    def _outbound_bytes(self) -> int:
        return len(self.session.outbound) + self._in_flight

    def backlogged(self) -> bool:
        """Producers should stop adding output until :meth:`call_when_drained` calls back."""
        # ``_outbound_bytes`` inline: asked once per message by a polled tunnel.
        return len(self.session.outbound) + self._in_flight > _PRODUCER_HIGH_WATER

    def call_when_drained(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` from the writer once output is below the producers' bound."""
        self._drain_callbacks.append(callback)

    def _call_drain_callbacks(self) -> None:
        if self._drain_callbacks and not self.backlogged():
            callbacks, self._drain_callbacks = self._drain_callbacks, []
            for callback in callbacks:
                callback()

    def _backend_poller(self) -> BackendPoller | None:
        """The connection's watcher of its tunnels' backend sockets, started on first use."""
        if self._poller is None and BackendPoller.available() and self._nursery is not None:
            try:
                poller = BackendPoller(
                    on_round_start=self.begin_output_batch, on_round_end=self.end_output_batch
                )
            except OSError as error:
                # Out of descriptors or memory: this tunnel runs on pump tasks instead,
                # and the next one tries again.
                self._log("h2.backend_poller_unavailable", error=str(error))
                return None
            self._poller = poller
            self._nursery.start_soon(poller.run, name=_POLLER_NAME)
        return self._poller

    async def _wait_outbound_below(self, limit: int) -> None:
        while self._outbound_bytes() > limit:
            self._drain_waited = True
            await self._drained.wait()

    async def wait_outbound_drained(self) -> None:
        """Wait until the client has taken enough of our output (producer backpressure)."""
        if self._outbound_bytes() > _PRODUCER_HIGH_WATER:
            await self._wait_outbound_below(_PRODUCER_HIGH_WATER)
        else:
            await trio.lowlevel.checkpoint()

    async def wait_outbound_drained_lean(self) -> None:
        """As :meth:`wait_outbound_drained`, but no yield when there is room.

        For ``H2TunnelStream.send_all``: its callers receive next, which yields, so a
        second trip through the scheduler per message only costs CPU.
        """
        if self._outbound_bytes() > _PRODUCER_HIGH_WATER:
            await self._wait_outbound_below(_PRODUCER_HIGH_WATER)
        else:
            await trio.lowlevel.checkpoint_if_cancelled()

    # ---- h2 events (reader only) ----

    def _handle_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._on_request(event)
        elif isinstance(event, h2.events.DataReceived):
            self._on_data(event)
        elif isinstance(event, h2.events.StreamEnded):
            self._on_stream_ended(event.stream_id or 0)
        elif isinstance(event, h2.events.StreamReset):
            self._on_reset(event)
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                self._settings_received.set()
            self._on_window_change(getattr(event, "stream_id", 0) or 0)
        elif isinstance(event, h2.events.TrailersReceived):
            self._on_trailers(event)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._on_goaway(event)

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        self._log(
            "h2.goaway_received", code=str(event.error_code), last_stream=event.last_stream_id
        )
        self._closing = True
        if event.error_code != ErrorCodes.NO_ERROR:
            self._read_scope.cancel()  # the client is aborting: end everything now
        else:
            self._end_if_idle()

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        assert stream_id is not None
        assert event.headers is not None
        if self._closing or self._over_stream_limit():
            # RFC 9113 §5.1.2: over the limit (or draining) the stream is refused, not the
            # connection; the client may retry it.
            self.session.reset(stream_id, ErrorCodes.REFUSED_STREAM)
            if not self._closing:
                self._count_reset()
            return
        ended = event.stream_ended is not None
        try:
            head = parse_h2_request_head(list(event.headers))
            if head.method == b"CONNECT" or head.protocol is not None:
                request, route = self._accept_websocket(head)
            else:
                http_request, route = self._accept_http(head, ended=ended)
        except ProxyError as error:
            self._refuse(stream_id, error)
            return
        stream = H2TunnelStream(self, stream_id)
        if ended:
            stream.feed_eof()
        self._streams[stream_id] = stream
        self._idle_since = None
        assert self._nursery is not None
        if head.method == b"CONNECT" or head.protocol is not None:
            self._nursery.start_soon(
                self._serve_tunnel, stream, request, route, name=_TUNNEL_TASK_NAME
            )
            return
        stream.exchange = stream.opened = True  # its DATA is the request body
        if not ended:
            self.session.direct_streams.add(stream_id)
        if http_request.framing is BodyFraming.NONE:
            stream.declared_length = 0
        elif http_request.framing is BodyFraming.LENGTH:
            stream.declared_length = http_request.content_length
        self._nursery.start_soon(
            self._serve_exchange, stream, http_request, route, name=_EXCHANGE_TASK_NAME
        )

    def _over_stream_limit(self) -> bool:
        """More inbound streams open than ``max_concurrent_streams`` (this one counted)?"""
        conn = self.session.conn
        if len(conn.streams) <= self._limits.max_concurrent_streams:
            # h2 counts open streams by walking its whole stream table, per new stream; the
            # table's size bounds that count, so under the limit the walk can be skipped.
            return False
        return conn.open_inbound_streams > self._limits.max_concurrent_streams

    def _accept_http(self, head: H2RequestHead, *, ended: bool) -> tuple[HttpRequest, RouteConfig]:
        request = request_from_h2(head, tls=self._info.tls, end_stream=ended)
        return request, http_route(self._server.router, request.target)

    def _accept_websocket(self, head: H2RequestHead) -> tuple[WebSocketRequest, RouteConfig]:
        if head.protocol is None:
            raise ClientProtocolError(
                "plain CONNECT (a TCP tunnel to host:port) is not offered here; "
                "only extended CONNECT with :protocol websocket",
                status_hint=501,
            )
        request = parse_extended_connect(
            head,
            connect_protocol_enabled=self.session.connect_protocol_enabled,
            tls=self._info.tls,
        )
        return request, websocket_route(self._server.router, request.path)

    def _refuse(self, stream_id: int, error: ProxyError) -> None:
        """Answer ``error``'s status. The answer ends our side; the client ends its own.

        RFC 9113 §8.1 allows RST_STREAM(NO_ERROR) after it, but h2 then answers the client's
        late END_STREAM with RST_STREAM(STREAM_CLOSED): noise that a browser may count against
        WebSocket over HTTP/2. Late DATA on such a stream is acknowledged and dropped.
        """
        extra = error.extra_headers if isinstance(error, ClientProtocolError) else ()
        self.session.respond(stream_id, error.status_hint, error.message, extra)
        self._log(
            "h2.request_refused", stream=stream_id, status=error.status_hint, reason=error.message
        )
        if isinstance(error, ClientProtocolError) and error.stream_error:
            self.session.reset(stream_id, ErrorCodes.PROTOCOL_ERROR)  # RFC 9113 §8.1.1
            self._count_reset()  # a flood of malformed (or empty) HEADERS spends the budget

    def _on_data(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id or 0
        length = event.flow_controlled_length or 0
        if not event.data and event.stream_ended is None:
            self._count_empty_frame()  # padding does not make a frame less empty
        stream = self._streams.get(stream_id)
        if stream is None:
            # A stream we already answered or reset: return the credit, drop the bytes.
            self.session.acknowledge(stream_id, length)
        elif not stream.opened:
            self.session.acknowledge(stream_id, length)
            if event.data and not stream.answered:
                self._fail_stream(stream_id, "DATA on an extended CONNECT before its 200")
        else:
            self._deliver(stream, event.data or b"", length)

    def _on_direct_data(self, item: DirectData) -> None:
        """DATA of an open tunnel or a request body, read without h2 (see h2_direct)."""
        stream = self._streams.get(item.stream_id)
        if stream is None:  # not expected: direct streams are forgotten with their stream
            self.session.acknowledge(item.stream_id, len(item.data))
        elif stream.broken_reason is None and not stream.exchange:
            stream.feed_data(item.data, len(item.data))  # an open tunnel's: ``_deliver``'s case
        else:
            self._deliver(stream, item.data, len(item.data))

    def _deliver(self, stream: H2TunnelStream, data: bytes, length: int) -> None:
        """Hand DATA of an opened stream to its consumer (a request body: within its length)."""
        if stream.broken_reason is not None:
            # Reset already (say as malformed) while later frames of the same read still
            # come: their credit goes back; they are not a second violation to count.
            self.session.acknowledge(stream.stream_id, length)
            return
        problem = stream.count_body(len(data)) if stream.exchange else None
        if problem is not None:
            self.session.acknowledge(stream.stream_id, length)
            self._fail_stream(stream.stream_id, f"malformed request: {problem}")
            return
        stream.feed_data(data, length)

    def _on_stream_ended(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        problem = stream.count_body(0, ended=True) if stream.exchange else None
        if problem is not None:
            self._fail_stream(stream_id, f"malformed request: {problem}")
            return
        stream.feed_eof()

    def _on_trailers(self, event: h2.events.TrailersReceived) -> None:
        stream_id = event.stream_id or 0
        stream = self._streams.get(stream_id)
        if stream is None or not stream.exchange:
            self._fail_stream(stream_id, "trailers on a tunnel stream")
            return
        stream.trailers = list(event.headers or [])

    def _fail_stream(self, stream_id: int, reason: str) -> None:
        """A protocol violation on one stream: reset it PROTOCOL_ERROR, end its tunnel."""
        self._log("h2.stream_error", stream=stream_id, reason=reason)
        self.session.reset(stream_id, ErrorCodes.PROTOCOL_ERROR)
        self._count_reset()
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.break_stream(reason, by_peer=True)
            stream.scope.cancel()

    def _on_reset(self, event: h2.events.StreamReset) -> None:
        stream = self._streams.get(event.stream_id or 0)
        if stream is not None and not stream.local_ended:
            # Only work in progress counts: a client cancelling its half of a stream we
            # already answered (say a 502 while a backend restarts) is not an attack.
            self._count_reset()
        if stream is not None:
            stream.break_stream(f"client reset the stream ({event.error_code!r})", by_peer=True)
            # Close the backend at once, even if no pump is waiting on the client side.
            stream.scope.cancel()

    def _on_window_change(self, stream_id: int) -> None:
        """Wake the sender(s) the new credit may unblock.

        A connection-wide change (WINDOW_UPDATE on stream 0, a new initial window) wakes
        only the streams that found a window shut (``wait_for_window``), not every stream:
        clients send those updates all the time, and a hostile one may send them by the
        million.
        """
        if stream_id:
            stream = self._streams.get(stream_id)
            if stream is not None:
                self._window_waiters.discard(stream)
                stream.wake_writer()
            return
        waiters, self._window_waiters = self._window_waiters, set()
        for stream in waiters:
            stream.wake_writer()

    def wait_for_window(self, stream: H2TunnelStream) -> None:
        """``stream`` could not send all it had: wake it when credit arrives."""
        self._window_waiters.add(stream)

    def _log(self, event: str, **fields: object) -> None:
        log_event(logger, logging.INFO, event, conn=self._info.connection_id, **fields)

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
            # One scope for the stream's whole life: the dial's deadlines, then the
            # tunnel's timers (run_tunnel keeps them on it rather than entering its own).
            with stream.scope:
                upgraded = await self._open_tunnel(stream, request, route, record)
                if upgraded is None:
                    return
                # This frame lives as long as the tunnel: keep no handshake objects alive
                # in it.
                backend, leftover = upgraded.stream, upgraded.leftover
                del upgraded, request
                with self._server.stats.count_tunnel():
                    await run_tunnel(
                        stream,
                        backend,
                        backend_leftover=leftover,
                        idle_timeout_s=self._limits.idle_timeout_s,
                        half_closed_timeout_s=self._limits.half_closed_timeout_s,
                        stats=record.stats,
                        scope=stream.scope,
                        poller=self._backend_poller(),
                    )
        finally:
            self._finish_tunnel(stream, record)

    async def _open_tunnel(
        self,
        stream: H2TunnelStream,
        request: WebSocketRequest,
        route: RouteConfig,
        record: TunnelRecord,
    ) -> BackendUpgraded | None:
        """Dial and upgrade the backend, answer the client; the upgraded backend, or None.

        Runs inside ``stream.scope``, which holds the dial's deadlines.
        """
        key = new_websocket_key()
        try:
            upgrade = build_backend_upgrade(request, route, key, self._info.address)
            upgraded = await connect_and_upgrade(
                route.backend,
                upgrade,
                key,
                request,
                self._limits,
                self._server.connect_backend,
                scope=stream.scope,
            )
        except BackendRejected as rejection:
            record.status = rejection.status
            stream.answered = True
            await self._relay_rejection(stream, rejection)
            return None
        except ProxyError as error:
            record.status, record.error = error.status_hint, error.message
            stream.answered = True
            self._refuse(stream.stream_id, error)
            stream.mark_ended_locally()
            return None
        try:
            self.session.send_headers(stream.stream_id, h2_success_headers(upgraded.accepted))
        except StreamUnusable as error:
            # The client reset the stream while the backend was answering.
            record.error = str(error)
            await trio.aclose_forcefully(upgraded.stream)
            return None
        record.status = 200
        stream.opened = record.opened = True
        self.session.direct_streams.add(stream.stream_id)
        return upgraded

    async def _relay_rejection(self, stream: H2TunnelStream, rejection: BackendRejected) -> None:
        """Pass the backend's non-101 answer back as it came (status, headers, body)."""
        headers = [(b":status", str(rejection.status).encode()), *rejection.headers]
        if rejection.status not in _NO_LENGTH_STATUSES:
            headers.append((b"content-length", str(len(rejection.body)).encode()))
        try:
            self.session.send_headers(stream.stream_id, headers, end_stream=not rejection.body)
        except StreamUnusable:
            return
        if not rejection.body:
            stream.mark_ended_locally()
        else:
            # The client's window decides how fast the body goes; a client that never
            # opens it does not keep the stream forever.
            with trio.move_on_after(self._limits.handshake_timeout_s):
                try:
                    await stream.send_all(rejection.body)
                    await stream.send_eof()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return

    def _finish_tunnel(self, stream: H2TunnelStream, record: TunnelRecord) -> None:
        """Reset the stream unless it ended cleanly, return its credit, forget it, log it."""
        if stream.reset_by_peer:
            record.stats.end = TunnelEnd.CLIENT_ABORTED
        elif (
            record.stats.end is TunnelEnd.CANCELLED
            and stream.local_ended
            and stream.remote_ended
            and not stream.buffered_bytes
        ):
            # Cancelled (the connection closed) after both sides had ended and every byte
            # had moved on: that tunnel had finished.
            record.stats.end = TunnelEnd.CLEAN
        if record.stats.end is TunnelEnd.HALF_CLOSED_TIMEOUT and stream.local_ended:
            # Our side is complete; RFC 9113 §8.1: NO_ERROR tells the client to stop.
            self.session.reset(stream.stream_id, ErrorCodes.NO_ERROR)
            stream.break_stream("half-closed timeout", by_peer=False)
        elif record.opened and record.stats.end is not TunnelEnd.CLEAN:
            stream.reset(cancel=record.stats.end is not TunnelEnd.BACKEND_ABORTED)
        elif not record.opened and not stream.local_ended:
            stream.reset(cancel=True)  # cancelled, or an answer cut short: say so
        self._forget(stream, record)

    # ---- one ordinary request ----

    async def _serve_exchange(
        self, stream: H2TunnelStream, request: HttpRequest, route: RouteConfig
    ) -> None:
        record = TunnelRecord(
            front="h2",
            connection_id=self._info.connection_id,
            stream_id=stream.stream_id,
            path=request.target,
            route=route.path,
            backend=str(route.backend),
            kind="request",
            method=request.method,
        )
        result = ExchangeResult()
        try:
            with self._server.stats.count_request():
                await self._forward(stream, request, route, record, result)
        finally:
            self._finish_exchange(stream, record, result)

    async def _forward(
        self,
        stream: H2TunnelStream,
        request: HttpRequest,
        route: RouteConfig,
        record: TunnelRecord,
        result: ExchangeResult,
    ) -> None:
        try:
            await forward_exchange(
                request,
                route,
                H2ClientSide(stream),
                self._server.pool,
                self._limits,
                self._info.address,
                record.stats,
                result,
                on_start=stream.adopt_scope,  # a reset cancels the exchange's own scope
            )
        except ProxyError as error:
            # Nothing of the answer went out yet: answer the error ourselves.
            record.status, record.error = error.status_hint, error.message
            self._refuse(stream.stream_id, error)
            stream.mark_ended_locally()
            return
        except ExchangeAborted as abort:
            record.error = abort.reason
            record.stats.end = EXCHANGE_ABORT_ENDS[abort.side]
            return
        if not result.cancelled:
            record.stats.end = TunnelEnd.CLEAN

    def _finish_exchange(
        self, stream: H2TunnelStream, record: TunnelRecord, result: ExchangeResult
    ) -> None:
        """Reset what did not end cleanly, return credit, forget the stream, log it."""
        record.status = record.status or result.status
        record.opened = result.head_sent
        if stream.reset_by_peer:
            record.stats.end = TunnelEnd.CLIENT_ABORTED
        elif record.stats.end is TunnelEnd.CANCELLED and result.head_sent and stream.local_ended:
            # Cancelled (the connection closed) after the whole answer was queued: done.
            record.stats.end = TunnelEnd.CLEAN
        if stream.broken_reason is None:
            if not stream.local_ended:
                # An answer cut short: the client must not take it for a whole one.
                code = (
                    ErrorCodes.INTERNAL_ERROR
                    if record.stats.end is TunnelEnd.BACKEND_ABORTED
                    else ErrorCodes.CANCEL
                )
                self.session.reset(stream.stream_id, code)
            elif not stream.remote_ended:
                # RFC 9113 §8.1: the answer is complete; the client may stop sending.
                self.session.reset(stream.stream_id, ErrorCodes.NO_ERROR)
            stream.break_stream("the exchange ended", by_peer=False)
        self._forget(stream, record)

    def _forget(self, stream: H2TunnelStream, record: TunnelRecord) -> None:
        """The stream's work is over: return its credit, drop every reference, log it."""
        # Bytes nobody consumed still hold connection window: give it back.
        self.session.acknowledge(stream.stream_id, stream.release_unconsumed())
        self.session.direct_streams.discard(stream.stream_id)
        self._window_waiters.discard(stream)
        self._streams.pop(stream.stream_id, None)
        record.log()
        self._end_if_idle()
