"""The HTTP/1.1 frontend: ordinary requests (kept alive) and classic ``Upgrade: websocket``.

Browsers often open WebSockets over HTTP/1.1 even where HTTP/2 is on offer (Chromium does
unless an HTTP/2 connection to the origin is already open), so the same listener and routes
serve them too.

* Ordinary requests are forwarded by :mod:`h2ws_proxy.relay.exchange`, one after another on a
  kept-alive connection (pipelined requests wait in h11's buffer, bounded). Between requests
  the connection may idle for ``idle_connection_timeout_s``; a draining server closes idle
  connections and marks the last answer ``connection: close``. Framing that could smuggle
  a request (CL+TE, conflicting lengths, bodies on GET...) is refused before anything
  reaches a backend (see :mod:`h2ws_proxy.http.message`).
* A WebSocket upgrade: check the client's handshake, do our own fresh-nonce handshake with
  the backend (the same checks as for HTTP/2), answer ``101`` with the accept for the
  *client's* key, then hand both raw streams to the tunnel; the bytes the client sent
  behind its request head go first. The connection ends with the tunnel, or after any
  answer other than our 101.
"""

from __future__ import annotations

import enum
import logging
import math

import h11
import trio

from h2ws_proxy.backend.upgrade import READ_SIZE, connect_and_upgrade
from h2ws_proxy.errors import BackendRejected, ClientProtocolError, ProxyError
from h2ws_proxy.http.backend_handshake import build_backend_upgrade, new_websocket_key
from h2ws_proxy.http.fields import split_header_list
from h2ws_proxy.http.handshake import h1_switching_headers, parse_h1_upgrade
from h2ws_proxy.http.message import BodyFraming, request_from_h1
from h2ws_proxy.http1.client_side import H1ClientSide
from h2ws_proxy.relay.context import ClientInfo, ServerContext
from h2ws_proxy.relay.exchange import forward_exchange
from h2ws_proxy.relay.exchange_contract import ExchangeAborted, ExchangeResult
from h2ws_proxy.relay.outcome import RelayEnd
from h2ws_proxy.relay.record import RelayRecord
from h2ws_proxy.relay.routing import http_route, websocket_route
from h2ws_proxy.relay.tunnel import run_tunnel
from h2ws_proxy.transport.errors import STREAM_GONE
from h2ws_proxy.transport.lingering import linger_before_close

logger = logging.getLogger(__name__)

Header = tuple[bytes, bytes]


class _NoHalfClose(trio.abc.HalfCloseableStream):
    """A TLS client stream in a tunnel: TLS has no half-close, so EOF closes it whole.

    When the backend ends its side we close the client connection (close_notify), as the
    backend's full close would; the tunnel then sees a clean EOF from the client side.
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._closed_by_us = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._closed_by_us:
            await trio.lowlevel.checkpoint()
            return b""
        try:
            return await self._stream.receive_some(max_bytes)
        except trio.ClosedResourceError:
            if self._closed_by_us:
                return b""
            raise

    async def send_eof(self) -> None:
        self._closed_by_us = True
        await self._stream.aclose()

    async def aclose(self) -> None:
        await self._stream.aclose()


class _After(enum.Enum):
    """What becomes of the connection after an ordinary request."""

    KEEP_ALIVE = "keep-alive"
    LINGER = "linger"  #: answered, but the connection cannot carry another request
    CLOSED = "closed"


def _is_websocket_upgrade(request: h11.Request) -> bool:
    upgrade = [value for name, value in request.headers if name == b"upgrade"]
    return b"websocket" in {item.lower() for item in split_header_list(upgrade)}


class H1Frontend:
    """Serve one HTTP/1.1 client connection: ordinary requests (kept alive), or one upgrade."""

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
        self._conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self._limits.max_header_list_bytes
        )
        if initial_data:  # h11 reads b"" as end of stream
            self._conn.receive_data(initial_data)

    async def run(self) -> None:
        first = True
        while True:
            if not first and not await self._wait_for_next_request():
                return
            try:
                with trio.fail_after(self._limits.client_handshake_timeout_s):
                    request = await self._read_request_head()
            except trio.TooSlowError:
                if first:
                    await self._send_error(408, "the request head did not arrive in time")
                return
            except h11.RemoteProtocolError as error:
                await self._send_error(error.error_status_hint, f"bad request: {error}")
                return
            if request is None:
                return
            first = False
            if _is_websocket_upgrade(request):
                await self._serve(request)
                return  # a tunnel, or a refused upgrade: either way the connection ends
            if not await self._serve_http(request):
                return
            self._conn.start_next_cycle()

    async def _wait_for_next_request(self) -> bool:
        """Between requests: wait for the next one's first bytes, or the end.

        False when the client left, stayed idle past ``idle_connection_timeout_s``, or the
        server is draining (an idle keep-alive connection is simply closed then).
        """
        if self._conn.trailing_data[0]:
            return not self._server.shutdown.is_set()  # a pipelined request is waiting
        idle_s = self._limits.idle_connection_timeout_s or math.inf
        got_bytes = False
        async with trio.open_nursery() as nursery:

            async def read_some() -> None:
                nonlocal got_bytes
                got_bytes = await self._receive_into_h11()
                nursery.cancel_scope.cancel()

            async def stop_on_shutdown() -> None:
                await self._server.shutdown.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(read_some)
            nursery.start_soon(stop_on_shutdown)
            nursery.cancel_scope.deadline = trio.current_time() + idle_s
        return got_bytes

    async def _receive_into_h11(self) -> bool:
        """Read once from the client into h11; False if it closed or broke."""
        try:
            data = await self._client.receive_some(READ_SIZE)
        except STREAM_GONE:
            return False
        self._conn.receive_data(bytes(data))
        return bool(data)

    async def _read_request_head(self) -> h11.Request | None:
        """Read one request head; None if the client left first. The body stays unread."""
        while True:
            event = self._conn.next_event()
            if event is h11.NEED_DATA:
                if not await self._receive_into_h11():
                    self._conn.receive_data(b"")
                continue
            if isinstance(event, h11.Request):
                return event
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None

    async def _finish_upgrade_request(self) -> bool:
        """Read up to the end of an upgrade request (it has no body); False if the client left."""
        while True:
            event = self._conn.next_event()
            if event is h11.NEED_DATA:
                if not await self._receive_into_h11():
                    return False
                continue
            if event is h11.PAUSED or isinstance(event, h11.EndOfMessage):
                return True
            if isinstance(event, h11.ConnectionClosed):
                return False

    async def _serve(self, request: h11.Request) -> None:
        record = RelayRecord(
            front="h1",
            connection_id=self._info.connection_id,
            stream_id=None,
            path=request.target,
            route="-",
            backend="-",
        )
        try:
            await self._upgrade_and_run(request, record)
        finally:
            record.log()

    async def _upgrade_and_run(self, request: h11.Request, record: RelayRecord) -> None:
        try:
            ws_request, client_key = parse_h1_upgrade(request, tls=self._info.tls)
            route = websocket_route(self._server.router, ws_request.path)
            if not await self._finish_upgrade_request():
                return
            record.route, record.backend = route.path, str(route.backend)
            key = new_websocket_key()
            upgrade = build_backend_upgrade(ws_request, route, key, self._info.address)
            upgraded = await connect_and_upgrade(
                route.backend, upgrade, key, ws_request, self._limits, self._server.connect_backend
            )
        except BackendRejected as rejection:
            record.status = rejection.status
            await self._send_response(rejection.status, rejection.headers, rejection.body)
            return
        except ProxyError as error:
            record.status, record.error = error.status_hint, error.message
            extra = error.extra_headers if isinstance(error, ClientProtocolError) else ()
            await self._send_error(error.status_hint, error.message, extra)
            return
        try:
            answer = h11.InformationalResponse(
                status_code=101,
                headers=h1_switching_headers(upgraded.accepted, client_key),
                reason=b"Switching Protocols",
            )
            await self._client.send_all(self._conn.send(answer))
        except STREAM_GONE:
            await trio.aclose_forcefully(upgraded.stream)
            return
        record.status, record.opened = 101, True
        client_leftover, _ = self._conn.trailing_data
        client: trio.abc.HalfCloseableStream = (
            self._client
            if isinstance(self._client, trio.abc.HalfCloseableStream)
            else _NoHalfClose(self._client)
        )
        with self._server.stats.count_tunnel():
            await run_tunnel(
                client,
                upgraded.stream,
                client_leftover=bytes(client_leftover),
                backend_leftover=upgraded.leftover,
                idle_timeout_s=self._limits.idle_timeout_s,
                half_closed_timeout_s=self._limits.half_closed_timeout_s,
                stats=record.stats,
            )

    async def _serve_http(self, request: h11.Request) -> bool:
        """Forward one ordinary request; True if the connection may carry another."""
        record = RelayRecord(
            front="h1",
            connection_id=self._info.connection_id,
            stream_id=None,
            path=request.target,
            route="-",
            backend="-",
            kind="request",
            method=request.method,
        )
        result = ExchangeResult()
        try:
            with self._server.stats.count_request():
                after = await self._forward(request, record, result)
        finally:
            record.status = record.status or result.status
            record.opened = result.head_sent
            record.log()
        if after is _After.LINGER:
            # The backend answered before the request body ended (or someone asked to
            # close): close politely, so that the client still reads the answer.
            await linger_before_close(self._client, half_close=True)
        return after is _After.KEEP_ALIVE

    async def _forward(
        self, request: h11.Request, record: RelayRecord, result: ExchangeResult
    ) -> _After:
        try:
            http_request = request_from_h1(request, tls=self._info.tls)
            if http_request.framing is BodyFraming.NONE:
                # h11 ends a bodiless request at once; take that end so the next cycle can start.
                end = self._conn.next_event()
                assert isinstance(end, h11.EndOfMessage), end
            route = http_route(self._server.router, http_request.target)
            record.route, record.backend = route.path, str(route.backend)
            await forward_exchange(
                http_request,
                route,
                H1ClientSide(self._client, self._conn, self._server),
                self._server.pool,
                self._limits,
                self._info.address,
                record.stats,
                result,
            )
        except ProxyError as error:
            record.status, record.error = error.status_hint, error.message
            if self._conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                extra = error.extra_headers if isinstance(error, ClientProtocolError) else ()
                await self._send_error(error.status_hint, error.message, extra)
            return _After.CLOSED
        except ExchangeAborted as abort:
            # Half an answer went out: only dropping the connection tells the client.
            record.error = abort.reason
            record.stats.end = abort.end
            await trio.aclose_forcefully(self._client)
            return _After.CLOSED
        record.stats.end = RelayEnd.CLEAN
        if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            return _After.KEEP_ALIVE
        return _After.LINGER

    async def _send_error(self, status: int, reason: str, extra: tuple[Header, ...] = ()) -> None:
        headers = [(b"content-type", b"text/plain; charset=utf-8"), *extra]
        await self._send_response(status, headers, (reason + "\n").encode("utf-8", "replace"))

    async def _send_response(
        self, status: int, headers: list[Header] | tuple[Header, ...], body: bytes
    ) -> None:
        """Send a complete answer and close: after a refused upgrade the connection ends."""
        all_headers = [
            *headers,
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        try:
            data = self._conn.send(h11.Response(status_code=status, headers=all_headers))
            if body:
                data += self._conn.send(h11.Data(data=body))
            data += self._conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            # The backend's answer cannot be expressed to this client (h11 refuses it).
            return
        try:
            await self._client.send_all(data)
            await linger_before_close(self._client, half_close=True)
        except STREAM_GONE:
            return
