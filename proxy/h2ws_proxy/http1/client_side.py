"""An HTTP/1.1 client connection as the exchange's client side (and the request relay's front).

The frontend owns the connection and its h11 state; while a request is being forwarded this
object reads the request body from it and writes the answer to it. Reading and writing run
in different tasks, which trio's streams allow (one receiver and one sender at a time).
"""

from __future__ import annotations

import http
from collections.abc import Callable

import h11
import trio

from h2ws_proxy.backend.upgrade import READ_SIZE
from h2ws_proxy.errors import ProxyError
from h2ws_proxy.http1.answers import send_proxy_error
from h2ws_proxy.relay.context import ServerContext
from h2ws_proxy.transport.capabilities import as_client_stream
from h2ws_proxy.transport.errors import STREAM_GONE

Header = tuple[bytes, bytes]


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


class H1ClientSide:
    """Request body in, answer out, over one h11 server connection (a :class:`RequestFront`)."""

    for_h2 = False
    watches_disconnect = True
    #: The exchange's scope is its own: the connection's task is cancelled as a whole.
    on_start: Callable[[trio.CancelScope], object] | None = None

    def __init__(
        self, client: trio.abc.Stream, conn: h11.Connection, server: ServerContext
    ) -> None:
        self._client = client
        #: The same connection, for writes that go without waiting (see ``_send_bytes``).
        self._writer = as_client_stream(client)
        self._conn = conn
        self._server = server
        self._limits = server.config.limits
        self._trailers: list[Header] = []
        #: The answer's head as h11 wrote it: whether trailers fit (``_end_event``).
        self._head = b""

    async def refuse(self, error: ProxyError) -> None:
        if self._conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            await send_proxy_error(self._client, self._conn, error)

    async def cut_short(self) -> None:
        # Half an answer went out: only dropping the connection tells the client.
        await trio.aclose_forcefully(self._client)

    async def receive_body(self) -> bytes:
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as error:
                raise trio.BrokenResourceError(f"request body: {error}") from error
            if event is h11.NEED_DATA:
                await self._read_into_h11()
                continue
            if isinstance(event, h11.Data):
                return bytes(event.data)
            if isinstance(event, h11.EndOfMessage):
                self._trailers = list(event.headers)
                return b""
            raise trio.BrokenResourceError(f"unexpected {event!r} in a request body")

    async def _read_into_h11(self) -> None:
        try:
            data = await self._client.receive_some(READ_SIZE)
        except (trio.ClosedResourceError, OSError) as error:
            raise trio.BrokenResourceError(str(error)) from error
        self._conn.receive_data(bytes(data))  # b"" marks the end: h11 then reports it

    def request_trailers(self) -> list[Header]:
        return self._trailers

    async def wait_gone(self) -> None:
        """Keep reading after the request: EOF means the client left (it cancels the backend
        request); bytes are a pipelined next request, kept in h11 for later (bounded)."""
        while (room := self.pipelined_room()) > 0:
            try:
                data = await self._client.receive_some(min(READ_SIZE, room))
            except STREAM_GONE:
                return
            if not data:
                return
            self._conn.receive_data(bytes(data))
        await trio.sleep_forever()

    def pipelined_room(self) -> int:
        """How many more pipelined bytes may wait in h11: ``max_header_list_bytes`` in all,
        counting those earlier exchanges left there (each consumes one request of them)."""
        return self._limits.max_header_list_bytes - len(self._conn.trailing_data[0])

    async def send_informational(self, status: int, headers: list[Header]) -> None:
        await self._send(h11.InformationalResponse(status_code=status, headers=headers))

    async def send_head(self, status: int, headers: list[Header], *, has_body: bool) -> None:
        if self._server.shutdown.is_set():
            headers = [*headers, (b"connection", b"close")]  # draining: this is the last one
        response = h11.Response(status_code=status, headers=headers, reason=_reason(status))
        self._head = self._bytes(response)
        await self._send_bytes(self._head)

    async def send_body(self, data: bytes) -> None:
        await self._send(h11.Data(data=data))

    async def end(self, trailers: list[Header]) -> None:
        await self._send_bytes(self._bytes(self._end_event(trailers)))

    def _end_event(self, trailers: list[Header]) -> h11.EndOfMessage:
        """The answer's end, with ``trailers`` only if its framing carries them: chunked,
        which h11 chose iff it wrote the head with ``Transfer-Encoding: chunked`` (not to an
        HTTP/1.0 client, nor with a content-length). Decided before sending: a send h11
        refuses leaves the connection in its ERROR state, so no plain end could follow."""
        if trailers and b"transfer-encoding: chunked" in self._head.lower():
            return h11.EndOfMessage(headers=trailers)
        return h11.EndOfMessage()

    # ---- the lean path's serialization (``http1/lean_exchange.py``: one write per round) ----

    def take_pipelined(self, data: bytes | bytearray) -> None:
        """Bytes read while the answer is awaited: a pipelined next request (bounded by
        the caller, as in :meth:`wait_gone`)."""
        self._conn.receive_data(bytes(data))

    def informational_bytes(self, status: int, headers: list[Header]) -> bytes:
        return self._bytes(h11.InformationalResponse(status_code=status, headers=headers))

    def head_bytes(self, status: int, headers: list[Header]) -> bytes:
        if self._server.shutdown.is_set():
            headers = [*headers, (b"connection", b"close")]  # draining: this is the last one
        response = h11.Response(status_code=status, headers=headers, reason=_reason(status))
        self._head = self._bytes(response)
        return self._head

    def body_bytes(self, data: bytes) -> bytes:
        return self._bytes(h11.Data(data=data))

    def end_bytes(self, trailers: list[Header]) -> bytes:
        return self._bytes(self._end_event(trailers))

    def _bytes(self, event: h11.Event) -> bytes:
        """``event`` serialized; raises trio.BrokenResourceError as :meth:`_send` does."""
        try:
            return self._conn.send(event) or b""
        except h11.LocalProtocolError as error:
            raise trio.BrokenResourceError(
                f"answer cannot be sent over HTTP/1.1: {error}"
            ) from error

    async def send_bytes(self, data: bytes) -> None:
        await self._send_bytes(data)

    def hold(self) -> None:
        pass  # each write goes to the socket as it comes

    def flush(self) -> None:
        pass

    async def _send(self, event: h11.Event) -> None:
        try:
            data = self._conn.send(event)
        except h11.LocalProtocolError as error:
            raise trio.BrokenResourceError(
                f"answer cannot be sent over HTTP/1.1: {error}"
            ) from error
        await self._send_bytes(data or b"")

    async def _send_bytes(self, data: bytes) -> None:
        """Write ``data``: what the kernel takes at once needs no timer (a cancel scope
        per write); only what is left waits, at most ``send_timeout_s``."""
        try:
            sent = self._writer.send_nowait(data) if data else 0
            if sent == len(data):
                await trio.lowlevel.checkpoint_if_cancelled()  # as send_all's own would
                return
            with trio.fail_after(self._limits.send_timeout_s):
                # (Over TLS a write is all or nothing: ``sent`` is 0 and the same bytes go.)
                await self._client.send_all(memoryview(data)[sent:])
        except (trio.TooSlowError, trio.ClosedResourceError, OSError) as error:
            raise trio.BrokenResourceError(f"client stopped reading: {error}") from error
