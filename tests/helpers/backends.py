"""Backends for tests: real independent WebSocket servers, and a scripted raw one.

* :func:`websockets_backend` runs the ``websockets`` library's own server (its threaded
  implementation, so it lives beside trio without sharing a loop): a real RFC 6455 peer we
  did not write. It echoes, picks the first subprotocol it supports, and answers the text
  ``__headers__`` with the upgrade request it saw, as JSON.
* :class:`ScriptedBackend` is a trio TCP server whose per-connection behaviour is a test
  function (wrong accept, 403 with a body, frames right behind the 101, stall, reset). It
  records every byte each connection received, so tests can prove what reached a backend.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import h11
import trio
from websockets.sync.server import ServerConnection, serve
from wsproto.utilities import generate_accept_token


@contextlib.contextmanager
def websockets_backend(
    subprotocols: list[str] | None = None,
    closes: list[int | None] | None = None,
    *,
    deflate: bool = False,
    ssl_context: ssl.SSLContext | None = None,
) -> Iterator[int]:
    """Run a ``websockets`` echo server on 127.0.0.1 (over TLS with ``ssl_context``);
    yields its port. ``deflate``: it accepts permessage-deflate (RFC 7692) when the client
    offers it.

    ``closes``: gets, per connection once it ended, the code of the Close frame the server
    received (None for none). ``websockets`` checks that a client's frames are masked, so a
    code here came in a well-formed, masked Close frame.
    """

    def handler(connection: ServerConnection) -> None:
        try:
            echo(connection)
        finally:
            if closes is not None:
                received = connection.protocol.close_rcvd
                closes.append(received.code if received is not None else None)

    def echo(connection: ServerConnection) -> None:
        for message in connection:
            if message == "__headers__":
                request = connection.request
                assert request is not None
                connection.send(
                    json.dumps(
                        {
                            "path": request.path,
                            "headers": [[k.lower(), v] for k, v in request.headers.raw_items()],
                        }
                    )
                )
            else:
                connection.send(message)

    server = serve(
        handler,
        "127.0.0.1",
        0,
        subprotocols=subprotocols,  # type: ignore[arg-type]
        max_size=None,
        compression="deflate" if deflate else None,
        close_timeout=2,
        ssl=ssl_context,
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.socket.getsockname()[1]
    finally:
        server.shutdown()
        thread.join(timeout=10)


@dataclass
class BackendConnection:
    """One backend connection (a :class:`ScriptedBackend`'s, or an in-memory one)."""

    stream: trio.SocketStream | trio.abc.HalfCloseableStream | trio.abc.Stream
    received: bytearray = field(default_factory=bytearray)
    closed: trio.Event = field(default_factory=trio.Event)
    _buffer: bytearray = field(default_factory=bytearray)

    async def receive(self) -> bytes:
        """The next bytes from the proxy (b"" at EOF)."""
        if self._buffer:
            data, self._buffer = bytes(self._buffer), bytearray()
            return data
        data = bytes(await self.stream.receive_some(65536))
        self.received += data
        return data

    async def read_upgrade(self) -> h11.Request:
        """Read the proxy's upgrade request head; later bytes stay buffered."""
        conn = h11.Connection(h11.SERVER)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await self.receive())
                continue
            if isinstance(event, h11.ConnectionClosed):
                raise trio.ClosedResourceError("the proxy closed before sending its upgrade")
            if isinstance(event, h11.Request):
                request = event
            if event is h11.PAUSED or isinstance(event, h11.EndOfMessage):
                self._buffer += conn.trailing_data[0]
                return request

    async def accept(
        self,
        request: h11.Request,
        *,
        extra: bytes = b"",
        accept: bytes | None = None,
        headers: bytes = b"",
    ) -> None:
        """Answer 101 with the right accept (or ``accept``) and ``extra`` bytes, in one write."""
        key = dict((k.lower(), v) for k, v in request.headers)[b"sec-websocket-key"]
        token = accept if accept is not None else generate_accept_token(key)
        await self.stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + token + b"\r\n" + headers + b"\r\n" + extra
        )

    async def echo_until_eof(self) -> None:
        while data := await self.receive():
            await self.stream.send_all(data)


class HeadRecorder:
    """An in-memory backend behaviour that records each request head it receives, then
    accepts an upgrade or answers 204 to an ordinary request."""

    def __init__(self) -> None:
        self.heads: list[h11.Request] = []

    async def __call__(self, stream: trio.abc.HalfCloseableStream) -> None:
        conn = BackendConnection(stream)
        request = await conn.read_upgrade()
        self.heads.append(request)
        if any(name.lower() == b"upgrade" for name, _ in request.headers):
            await conn.accept(request)
        else:
            await stream.send_all(b"HTTP/1.1 204 No Content\r\n\r\n")


Behaviour = Callable[[BackendConnection], Awaitable[None]]


class ScriptedBackend:
    """A TCP server on 127.0.0.1 that runs ``behaviour`` for each connection (over TLS with
    ``ssl_context``: trio's SSLStream, whose handshake runs at the behaviour's first read)."""

    def __init__(self, behaviour: Behaviour, ssl_context: ssl.SSLContext | None = None) -> None:
        self.behaviour = behaviour
        self.ssl_context = ssl_context
        self.connections: list[BackendConnection] = []
        self.port = 0
        self.connected = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, socket_stream: trio.SocketStream) -> None:
        stream: trio.abc.Stream = socket_stream
        if self.ssl_context is not None:
            stream = trio.SSLStream(socket_stream, self.ssl_context, server_side=True)
        connection = BackendConnection(stream)
        self.connections.append(connection)
        self.connected.set()
        try:
            await self.behaviour(connection)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            connection.closed.set()
            await trio.aclose_forcefully(stream)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def all_received(self) -> bytes:
        return b"".join(bytes(c.received) for c in self.connections)
