"""Kept-alive backend connections parked in a client connection's poller while idle
(backend/pool.py): the poller watches them, so what happens to one while it waits is seen
at once, and a connection moves between client connections without being lost or misread.

The backend is a scripted raw one on loopback (tests/helpers/scripted_http.py). A client
connection's first request runs on a task (nothing idle yet) and its connection goes back
unparked; the second runs without a task on that connection and parks it. Each test waits
for events (an answer received, a backend connection's end), never for time.
"""

from __future__ import annotations

import pytest
import trio

from tests.conftest import StartProxy
from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.h2_client import open_h2_client
from tests.helpers.scripted_http import OK, Answer, fetch, scripted, until_closed
from tests.helpers.setup import backend_url, make_config

pytestmark = pytest.mark.socket

#: Longer than any test: only the poller's watch can close an idle connection early.
LONG_KEEPALIVE_S = 120.0


async def start(
    nursery: trio.Nursery, start_proxy: StartProxy, answer: Answer, **limits: float
) -> tuple[ScriptedBackend, tuple[str, int]]:
    backend = ScriptedBackend(scripted(answer))
    port = await nursery.start(backend.run)
    address = await start_proxy(make_config(("/", backend_url(port)), **limits))
    return backend, (address.host, address.port)


async def test_a_backend_closing_an_idle_connection_is_seen_at_once(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    """The backend ends its side of a parked connection; the proxy closes its side promptly
    (no request needed to find out), and the next request goes to a new connection."""
    answered = trio.Event()

    async def answer(connection: BackendConnection, _head: bytes, number: int) -> bool:
        await connection.stream.send_all(OK)
        if number == 1:
            await answered.wait()
            await connection.stream.send_eof()  # type: ignore[union-attr]
            return await until_closed(connection)
        return True

    backend, (host, port) = await start(
        nursery, start_proxy, answer, backend_keepalive_s=LONG_KEEPALIVE_S
    )
    async with open_h2_client(await trio.open_tcp_stream(host, port)) as client:
        statuses = [(await fetch(client, path)).status for path in (b"/zero", b"/one")]
        answered.set()
        with trio.fail_after(5):
            await backend.connections[0].closed.wait()
        statuses.append((await fetch(client, b"/two")).status)
    assert statuses == [200, 200, 200]
    assert len(backend.connections) == 2
    assert b"/two" not in backend.connections[0].received


async def test_bytes_a_backend_sends_while_idle_never_reach_a_client(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    """An unsolicited answer on a parked connection (a 408 before closing, say): the
    connection is dropped at once, never read as the next request's answer."""
    answered = trio.Event()

    async def answer(connection: BackendConnection, _head: bytes, number: int) -> bool:
        await connection.stream.send_all(OK)
        if number == 1:
            await answered.wait()
            await connection.stream.send_all(
                b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 4\r\n\r\nlate"
            )
            return await until_closed(connection)
        return True

    backend, (host, port) = await start(
        nursery, start_proxy, answer, backend_keepalive_s=LONG_KEEPALIVE_S
    )
    async with open_h2_client(await trio.open_tcp_stream(host, port)) as client:
        for path in (b"/zero", b"/one"):
            await fetch(client, path)
        answered.set()
        with trio.fail_after(5):
            await backend.connections[0].closed.wait()
        second = await fetch(client, b"/two")
    assert (second.status, bytes(second.data)) == (200, b"first")
    assert len(backend.connections) == 2


async def test_one_backend_connection_serves_client_connections_in_turn(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    """Parked by one client connection, taken by another (it moves between their pollers),
    still kept when the first one closes, and kept again after the second closes (then
    parked nowhere): every request answered, one backend connection for all."""

    async def answer(connection: BackendConnection, _head: bytes, _number: int) -> bool:
        await connection.stream.send_all(OK)
        return True

    backend, (host, port) = await start(
        nursery, start_proxy, answer, backend_keepalive_s=LONG_KEEPALIVE_S
    )
    statuses = []
    async with open_h2_client(await trio.open_tcp_stream(host, port)) as first:
        statuses.append((await fetch(first, b"/a1")).status)
        async with open_h2_client(await trio.open_tcp_stream(host, port)) as second:
            statuses.append((await fetch(second, b"/b1")).status)
            statuses.append((await fetch(first, b"/a2")).status)
            statuses.append((await fetch(second, b"/b2")).status)
        statuses.append((await fetch(first, b"/a3")).status)  # the second one is gone
    async with open_h2_client(await trio.open_tcp_stream(host, port)) as third:
        statuses.append((await fetch(third, b"/c1")).status)  # both pollers gone
        statuses.append((await fetch(third, b"/c2")).status)
    assert statuses == [200] * 7
    assert len(backend.connections) == 1
    received = bytes(backend.connections[0].received)
    assert [received.count(b"GET /" + name + b" ") for name in (b"a1", b"b2", b"c2")] == [1] * 3


async def test_a_reaped_connection_leaves_no_trace_in_the_poller(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    """The reaper closes a connection parked in a live poller; the next connections (the
    kernel likely gives the new socket the same descriptor number) are watched afresh."""
    reaped = trio.Event()

    async def answer(connection: BackendConnection, _head: bytes, number: int) -> bool:
        await connection.stream.send_all(OK)
        if number == 1:
            await until_closed(connection)
            reaped.set()
            return False
        return True

    backend, (host, port) = await start(nursery, start_proxy, answer, backend_keepalive_s=1.0)
    async with open_h2_client(await trio.open_tcp_stream(host, port)) as client:
        paths = (b"/zero", b"/one", b"/two", b"/three")
        statuses = [(await fetch(client, path)).status for path in paths[:2]]
        with trio.fail_after(5):
            await reaped.wait()
        statuses += [(await fetch(client, path)).status for path in paths[2:]]
    assert statuses == [200] * 4
    assert len(backend.connections) == 2
