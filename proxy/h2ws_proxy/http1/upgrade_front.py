"""One classic ``Upgrade: websocket`` on an HTTP/1.1 connection, as the tunnel relay's front.

Rules: every answer but our 101 is the connection's last (:mod:`~h2ws_proxy.http1.answers`);
the 101 carries the accept for the *client's* key and goes out as bytes the relay writes;
the client's bytes behind its request head (h11's trailing data) go to the backend first;
the raw client stream is the tunnel's client end (a TLS one behind :class:`_NoHalfClose`).
"""

from __future__ import annotations

import h11
import trio

from h2ws_proxy.errors import BackendRejected, ProxyError
from h2ws_proxy.http.handshake import BackendAccepted, h1_switching_headers
from h2ws_proxy.http1.answers import send_proxy_error, send_response
from h2ws_proxy.relay.record import RelayRecord
from h2ws_proxy.transport.poller import BackendPoller


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


class H1UpgradeFront:
    """The client's end of one HTTP/1.1 WebSocket upgrade (a :class:`TunnelFront`)."""

    __slots__ = ("_conn", "answer_stream", "client_key")

    open_status = 101
    #: The dial and the tunnel enter their own scopes (an answer after a dial's timeout
    #: awaits, which a scope cancelled for good would forbid).
    scope: trio.CancelScope | None = None
    pushable = None

    def __init__(self, client: trio.abc.Stream, conn: h11.Connection) -> None:
        self.answer_stream = client
        self._conn = conn
        #: The client's ``Sec-WebSocket-Key``, once its handshake parsed.
        self.client_key = b""

    @property
    def tunnel_client(self) -> trio.abc.HalfCloseableStream:
        client = self.answer_stream
        if isinstance(client, trio.abc.HalfCloseableStream):
            return client
        return _NoHalfClose(client)

    async def refuse(self, error: ProxyError) -> None:
        await send_proxy_error(self.answer_stream, self._conn, error)

    async def relay_rejection(self, rejection: BackendRejected) -> None:
        await send_response(
            self.answer_stream, self._conn, rejection.status, rejection.headers, rejection.body
        )

    def answer_upgrade(self, accepted: BackendAccepted, record: RelayRecord) -> bytes | None:
        answer = h11.InformationalResponse(
            status_code=101,
            headers=h1_switching_headers(accepted, self.client_key),
            reason=b"Switching Protocols",
        )
        return self._conn.send(answer)

    def client_leftover(self) -> bytes:
        return bytes(self._conn.trailing_data[0])

    def backend_poller(self) -> BackendPoller | None:
        return None
