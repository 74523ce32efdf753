"""The lean request path (http2/polled_request.py) ends every request as the task path does.

Each test runs twice: ``lean_path`` makes the request under test on a kept-alive backend
connection (a first request leaves one idle in the pool), so that it runs without a task;
``task_path_control`` makes the same request where it runs on a task (stream_tasks.py),
the behaviour the lean path must match. Each case is one the lean path once got wrong
(found in review): the connection cancelled from outside, new credit that moves no byte,
trailers that are all dropped, and the one retry a kept connection's failure allows.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import pytest
import trio

from h2ws_proxy.relay.context import ServerStats
from h2ws_proxy.server.serve import BoundAddresses, serve
from tests.conftest import StartProxy
from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.h2_client import H2TestClient, StreamState, open_h2_client
from tests.helpers.records import ProxyRecords
from tests.helpers.setup import backend_url, make_config

pytestmark = pytest.mark.socket

CANCEL = 0x8
Header = tuple[bytes, bytes]
#: ``answer(connection, request_head)``: answer one request; False ends the connection.
Answer = Callable[[BackendConnection, bytes], Awaitable[bool]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"
PATHS = pytest.mark.parametrize("lean", [True, False], ids=["lean_path", "task_path_control"])


def get(path: bytes) -> list[Header]:
    return [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", path),
        (b":authority", b"proxy.test"),
    ]


def scripted(answer: Answer) -> Callable[[BackendConnection], Awaitable[None]]:
    """Per connection: read each request head and let ``answer`` answer it."""

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
            if not await answer(connection, bytes(head)):
                return

    return behaviour


async def fetch(client: H2TestClient, path: bytes) -> StreamState:
    state = await client.request(get(path), end_stream=True)
    with trio.fail_after(15):
        return await client.finished(state)


async def until_closed(connection: BackendConnection) -> bool:
    while await connection.stream.receive_some(65536):
        pass  # until the proxy closes this connection
    return False


# ---- 1. the connection's nursery cancelled from outside (the drain's deadline) ----


@PATHS
async def test_a_request_cut_by_the_drain_deadline_is_ended_and_logged(
    nursery: trio.Nursery, proxy_records: ProxyRecords, lean: bool
) -> None:
    """At the drain's deadline serve cancels the connections' nursery: H2Frontend.run gets
    Cancelled in its read loop and never reaches the loop that breaks its streams. A task
    request ends anyway (its task is cancelled: finally → finish_exchange). A lean request
    has no task: nothing ends it. It keeps ``stats.requests`` and its server's ``active``
    count up for good, gets no access line, and its backend socket is never closed (only
    the garbage collector may close it: it sits in a reference cycle)."""
    asked = trio.Event()

    async def answer(connection: BackendConnection, head: bytes) -> bool:
        if head.startswith(b"GET /slow "):
            asked.set()
            return await until_closed(connection)
        await connection.stream.send_all(OK)
        return True

    backend = ScriptedBackend(scripted(answer))
    port = await nursery.start(backend.run)
    config = make_config(
        ("/", backend_url(port)), graceful_timeout_s=0.2, close_wait_s=0.1, http_idle_timeout_s=60
    )
    shutdown, stats = trio.Event(), ServerStats()
    async with trio.open_nursery() as proxy:
        bound: BoundAddresses = await proxy.start(
            functools.partial(serve, config, shutdown=shutdown, stats=stats)
        )
        address = bound.listeners[0]
        stream = await trio.open_tcp_stream(address.host, address.port)
        async with open_h2_client(stream) as client:
            if lean:
                assert (await fetch(client, b"/one")).status == 200  # a kept connection
            await client.request(get(b"/slow"), end_stream=True)
            with trio.fail_after(10):
                await asked.wait()
            assert stats.requests == 1
            shutdown.set()
            with trio.fail_after(10):
                await client.closed.wait()  # the drain's deadline cut the connection
    # serve has returned.
    slow = [line for line in proxy_records.named("request.closed") if line["path"] == "/slow"]
    assert stats.backend_servers is not None
    active = [server["active"] for server in stats.backend_servers()]
    assert (stats.requests, active, len(slow)) == (0, [0], 1)
    slow_connection = backend.connections[-1]
    with trio.fail_after(5):
        await slow_connection.closed.wait()  # the proxy closed the /slow connection


# ---- 2. the idle timer re-armed when no byte moved ----


@PATHS
async def test_a_shut_window_times_out_even_if_the_client_sends_connection_updates(
    nursery: trio.Nursery, start_proxy: StartProxy, proxy_records: ProxyRecords, lean: bool
) -> None:
    """``PolledRequest._send_pending`` calls ``_progress()`` (re-arms the idle timer) after
    every ``send_now``, also when it sent nothing. ``client_writable`` runs for every
    connection-level WINDOW_UPDATE (and every SETTINGS) while the stream waits for credit,
    so a client that keeps its stream window shut and sends a connection WINDOW_UPDATE now
    and then holds the request, its backend connection and server slot for ever. The task
    path calls ``progress()`` only once ``send_body`` returned (a byte moved): its idle
    timer fires and the stream is reset CANCEL."""

    async def answer(connection: BackendConnection, head: bytes) -> bool:
        if head.startswith(b"GET /big "):
            body = b"z" * 200_000
            await connection.stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            )
            return await until_closed(connection)
        await connection.stream.send_all(OK)
        return True

    backend = ScriptedBackend(scripted(answer))
    port = await nursery.start(backend.run)
    address = await start_proxy(make_config(("/", backend_url(port)), http_idle_timeout_s=0.5))
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with open_h2_client(stream) as client:
        if lean:
            assert (await fetch(client, b"/one")).status == 200  # a kept connection
        big = await client.request(get(b"/big"), end_stream=True, auto_ack=False)
        with trio.fail_after(10):
            await client.wait_for(lambda: big.unacked >= 65535, big)  # the window is shut
        with trio.move_on_after(3):  # six idle timeouts
            while big.reset_code is None:
                client.conn.increment_flow_control_window(1)  # stream 0: no byte can move
                await client.flush()
                await trio.sleep(0.1)  # paces the client's frames; waits for nothing
        assert big.reset_code == CANCEL
    line = [line for line in proxy_records.named("request.closed") if line["path"] == "/big"]
    assert [entry["end"] for entry in line] == ["idle_timeout"]


# ---- 3. trailers that are all filtered out ----


@PATHS
async def test_trailers_that_are_all_dropped_end_the_stream_as_on_the_task_path(
    nursery: trio.Nursery, start_proxy: StartProxy, lean: bool
) -> None:
    """``PolledRequest._end_answer`` tests ``event.trailers`` (the backend's) but sends
    ``trailer_fields(event.trailers)`` (what may be relayed): when every trailer field is
    dropped (here a forwarding claim), it sends an empty trailer HEADERS frame. The task
    path (``client.end(trailer_fields(...))`` with an empty list) ends the stream with an
    empty DATA frame: no trailer section at all."""

    async def answer(connection: BackendConnection, head: bytes) -> bool:
        if head.startswith(b"GET /trailers "):
            await connection.stream.send_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n0\r\nX-Forwarded-For: 192.0.2.1\r\n\r\n"
            )
            return True
        await connection.stream.send_all(OK)
        return True

    backend = ScriptedBackend(scripted(answer))
    port = await nursery.start(backend.run)
    address = await start_proxy(make_config(("/", backend_url(port))))
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with open_h2_client(stream) as client:
        if lean:
            assert (await fetch(client, b"/one")).status == 200  # a kept connection
        state = await fetch(client, b"/trailers")
    assert (state.status, bytes(state.data), state.ended) == (200, b"hello", True)
    assert state.trailers is None


# ---- 4. the retry after a kept connection the backend closed ----


@PATHS
async def test_a_request_the_backend_drops_on_kept_connections_is_sent_at_most_twice(
    nursery: trio.Nursery, start_proxy: StartProxy, proxy_records: ProxyRecords, lean: bool
) -> None:
    """The task path tries a request once on a kept connection and, if that fails before
    any answer, once more on a NEW one (``forward_exchange``: ``_Retry`` → ``pool.connect``).
    A lean request that fails so is handed to ``serve_exchange`` (``_hand_to_task``), which
    starts over with ``pool.take_idle``: with a second kept connection idle it is tried
    there too, then retried on a new one: the backend gets the request three times (a
    bodiless POST too). polled_request.py's rules say the task path "dials" here."""
    both = trio.Event()
    heads: list[bytes] = []

    async def answer(connection: BackendConnection, head: bytes) -> bool:
        heads.append(head.split(b"\r\n", 1)[0])
        if head.startswith(b"GET /c "):
            if not connection.received.startswith(b"GET /c "):
                return False  # a kept connection: closed without a word, as it took /c
            await connection.stream.send_all(OK)
            return True
        if len(heads) == 2:
            both.set()
        await both.wait()  # /a and /b are answered together: two connections stay idle
        await connection.stream.send_all(OK)
        return True

    backend = ScriptedBackend(scripted(answer))
    port = await nursery.start(backend.run)
    address = await start_proxy(make_config(("/", backend_url(port))))
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with open_h2_client(stream) as client:
        a = await client.request(get(b"/a"), end_stream=True)
        b = await client.request(get(b"/b"), end_stream=True)
        with trio.fail_after(10):
            await client.finished(a)
            await client.finished(b)
        assert len(backend.connections) == 2  # both now idle in the pool
        if lean:
            c = await fetch(client, b"/c")
        else:
            # HEADERS without END_STREAM, then an empty DATA ending it: the task path.
            c = await client.request(get(b"/c"))
            await client.end_stream(c)
            with trio.fail_after(15):
                await client.finished(c)
    assert c.status == 200
    lines = [line for line in proxy_records.named("request.closed") if line["path"] == "/c"]
    assert len(lines) == 1  # one line whatever the attempts
    assert heads.count(b"GET /c HTTP/1.1") == 2  # a kept connection, then a new one
