"""A scripted HTTP/1.1 backend for ordinary requests, and the HTTP/2 client's side of them.

:func:`scripted` turns an ``answer`` function into a :class:`~tests.helpers.backends.
ScriptedBackend` behaviour: per connection, each request head is read and handed to
``answer(connection, head, number)`` (``number``: the request's place among all the
backend's requests, from 0), which writes whatever the test needs; False ends that
connection. Tests use it to close, stall or misbehave at exactly one request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from tests.helpers.backends import BackendConnection
from tests.helpers.h2_client import H2TestClient, StreamState

Header = tuple[bytes, bytes]
Answer = Callable[[BackendConnection, bytes, int], Awaitable[bool]]
#: A small complete answer, kept alive.
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"


def get(path: bytes) -> list[Header]:
    """An HTTP/2 GET's header block for ``path``."""
    return [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", path),
        (b":authority", b"proxy.test"),
    ]


def scripted(answer: Answer) -> Callable[[BackendConnection], Awaitable[None]]:
    """A backend behaviour that lets ``answer`` answer each request (see the module)."""
    counter = [0]

    async def behaviour(connection: BackendConnection) -> None:
        pending = bytearray()
        while True:
            while b"\r\n\r\n" not in pending:
                chunk = await connection.stream.receive_some(65536)
                if not chunk:
                    return
                connection.received += chunk
                pending += chunk
            head, pending = pending.split(b"\r\n\r\n", 1)
            number = counter[0]
            counter[0] += 1
            if not await answer(connection, bytes(head), number):
                return

    return behaviour


async def fetch(client: H2TestClient, path: bytes, *, auto_ack: bool = True) -> StreamState:
    """GET ``path`` (HEADERS with END_STREAM) and wait for its end or reset."""
    state = await client.request(get(path), end_stream=True, auto_ack=auto_ack)
    with trio.fail_after(15):
        return await client.finished(state)


async def until_closed(connection: BackendConnection) -> bool:
    """Read until the proxy closes ``connection``; False (the connection is over)."""
    while await connection.stream.receive_some(65536):
        pass
    return False
