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
import gc
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import cast

import pytest
import trio

from h2ws_proxy.http2.polled_request import PolledRequest
from h2ws_proxy.relay.context import ServerStats
from h2ws_proxy.server.serve import BoundAddresses, serve
from tests.conftest import StartProxy
from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.h2_client import open_h2_client
from tests.helpers.records import ProxyRecords
from tests.helpers.scripted_http import OK, fetch, get, scripted, until_closed
from tests.helpers.scripted_proxy import proxy_for
from tests.helpers.setup import backend_url, make_config

pytestmark = pytest.mark.socket

CANCEL = 0x8
INITIAL_WINDOW_SIZE = 0x4
Header = tuple[bytes, bytes]
PATHS = pytest.mark.parametrize("lean", [True, False], ids=["lean_path", "task_path_control"])


def answers_by_path(
    answers: dict[bytes, bytes],
) -> Callable[[BackendConnection, bytes, int], Awaitable[bool]]:
    """A scripted backend's answer: the bytes given for the request's path, else ``OK``."""

    async def answer(connection: BackendConnection, head: bytes, _number: int) -> bool:
        await connection.stream.send_all(answers.get(head.split(b" ")[1], OK))
        return True

    return answer


# ---- 1. the connection's nursery cancelled from outside (the drain's deadline) ----


@PATHS
async def test_a_request_cut_by_the_drain_deadline_is_ended_and_logged(
    nursery: trio.Nursery, proxy_records: ProxyRecords, lean: bool
) -> None:
    """At the drain's deadline serve cancels the connections' nursery, and the front end's
    read loop gets Cancelled. A request on a task ends as its task is cancelled; a request
    without a task ends in the front end's own end (a ``finally``), all the same: its
    count, its server's place and its backend socket given back, its line logged."""
    asked = trio.Event()

    async def answer(connection: BackendConnection, head: bytes, _number: int) -> bool:
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
    """New credit that moves no byte is not activity: a client that keeps its stream window
    shut and sends connection WINDOW_UPDATEs now and then (each calls the stream's writable
    callback) still has the request reset with CANCEL after the idle timeout, as on the
    task path, where only a byte handed on re-arms the timer."""

    async def answer(connection: BackendConnection, head: bytes, _number: int) -> bool:
        if head.startswith(b"GET /big "):
            body = b"z" * 200_000
            await connection.stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            )
            return await until_closed(connection)
        await connection.stream.send_all(OK)
        return True

    _, stream = await proxy_for(nursery, start_proxy, answer, http_idle_timeout_s=0.5)
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
    """Trailer fields that may not be relayed (here a forwarding claim) are dropped; when none
    is left, the stream ends with an empty DATA frame and no trailer section, not an empty
    trailer HEADERS frame."""

    answer = answers_by_path(
        {
            b"/trailers": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\nX-Forwarded-For: 192.0.2.1\r\n\r\n"
        }
    )
    _, stream = await proxy_for(nursery, start_proxy, answer)
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
    """A bodiless request a kept connection failed before any answer is retried once, on a
    new connection: with a second kept connection idle, it is not tried there too (the
    backend sees it twice, never three times), and it is logged once."""
    both = trio.Event()
    heads: list[bytes] = []

    async def answer(connection: BackendConnection, head: bytes, _number: int) -> bool:
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

    backend, stream = await proxy_for(nursery, start_proxy, answer)
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


async def test_a_kept_connection_reset_before_the_answer_is_retried_on_a_new_one(
    nursery: trio.Nursery, start_proxy: StartProxy, proxy_records: ProxyRecords
) -> None:
    """A kept connection the backend resets (RST: the lean read's error, not an EOF) as it
    takes the request: the one retry, on a new connection, answers it; one line, and the
    poller's handler did not fail."""

    async def answer(connection: BackendConnection, head: bytes, _number: int) -> bool:
        if head.startswith(b"GET /c ") and not connection.received.startswith(b"GET /c "):
            raw = cast(trio.SocketStream, connection.stream).socket
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False  # closed with a reset, as it took /c
        await connection.stream.send_all(OK)
        return True

    backend, stream = await proxy_for(nursery, start_proxy, answer)
    async with open_h2_client(stream) as client:
        assert (await fetch(client, b"/a")).status == 200  # leaves its connection idle
        c = await fetch(client, b"/c")
    assert c.status == 200
    assert len(backend.connections) == 2
    lines = [line for line in proxy_records.named("request.closed") if line["path"] == "/c"]
    assert len(lines) == 1
    assert lines[0]["status"] == 200
    assert not proxy_records.named("poller.handler_failed")  # the read's error, handled


async def test_a_wake_up_with_nothing_to_read_leaves_the_lean_request_waiting(
    nursery: trio.Nursery, start_proxy: StartProxy, proxy_records: ProxyRecords
) -> None:
    """The poller may call a lean request's ``on_readable`` with nothing to read (a round
    that does not ask epoll: ``BackendPoller._run_handlers``): the read finds nothing and
    the request waits on, on its kept connection; no failure, no retry."""
    asked, release = trio.Event(), trio.Event()

    async def answer(connection: BackendConnection, head: bytes, _number: int) -> bool:
        if head.startswith(b"GET /wait "):
            asked.set()
            await release.wait()
        await connection.stream.send_all(OK)
        return True

    backend, stream = await proxy_for(nursery, start_proxy, answer)
    statuses: list[int] = []
    async with open_h2_client(stream) as client:
        assert (await fetch(client, b"/a")).status == 200  # leaves its connection idle

        async def waiting() -> None:
            statuses.append((await fetch(client, b"/wait")).status)

        async with trio.open_nursery() as both:
            both.start_soon(waiting)
            await asked.wait()
            (request,) = [
                found
                for found in gc.get_objects()
                if type(found) is PolledRequest and not found._done
            ]
            request.on_readable()  # nothing there yet
            release.set()
    assert statuses == [200]
    assert len(backend.connections) == 1
    lines = [line for line in proxy_records.named("request.closed") if line["path"] == "/wait"]
    assert [(line["status"], line["end"]) for line in lines] == [(200, "clean")]


# ---- 5. an answer that came whole, held back by the client's window ----


@PATHS
async def test_a_whole_answer_the_window_takes_in_pieces_ends_cleanly_and_is_kept(
    nursery: trio.Nursery, start_proxy: StartProxy, proxy_records: ProxyRecords, lean: bool
) -> None:
    """The common answer comes in one read (head, body and end, relayed in one pass); when the
    stream's window takes only part of the body, the rest follows as credit comes, the end
    only with it, and the backend connection is still kept for the next request."""
    body = bytes(range(256)) * 4

    answer = answers_by_path(
        {b"/whole": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body}
    )

    backend, stream = await proxy_for(nursery, start_proxy, answer)
    async with open_h2_client(stream, settings={INITIAL_WINDOW_SIZE: 100}) as client:
        if lean:
            assert (await fetch(client, b"/one")).status == 200  # a kept connection
        state = await fetch(client, b"/whole")
        assert (await fetch(client, b"/two")).status == 200
    assert (state.status, bytes(state.data), state.ended) == (200, body, True)
    assert len(backend.connections) == 1  # kept after /whole, and used again
    line = [line for line in proxy_records.named("request.closed") if line["path"] == "/whole"]
    assert [(entry["end"], entry["bytes_down"]) for entry in line] == [("clean", len(body))]


# ---- 6. answers that came whole and went at once: their short end ----


@PATHS
async def test_whole_answers_sent_at_once_end_cleanly_are_logged_and_forgotten(
    nursery: trio.Nursery, start_proxy: StartProxy, proxy_records: ProxyRecords, lean: bool
) -> None:
    """An answer that came whole and that the client's windows take at once ends in the same
    call (``PolledRequest._relay_whole``'s short way): with a body, with an empty one,
    without one (a 204, a HEAD), each as on the task path (the answer, its line, the
    connection kept) and each stream forgotten: the connection goes idle and, after its
    idle timeout, away."""
    answers = {
        b"/body": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"/empty": b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"/none": b"HTTP/1.1 204 No Content\r\n\r\n",
        b"/head": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",  # (HEAD: no body)
    }

    answer = answers_by_path(answers)
    backend, stream = await proxy_for(nursery, start_proxy, answer, idle_connection_timeout_s=1)
    got = {}
    async with open_h2_client(stream) as client:
        if lean:
            assert (await fetch(client, b"/one")).status == 200  # a kept connection
        for path in (b"/body", b"/empty", b"/none"):
            state = await fetch(client, path)
            got[path] = (state.status, bytes(state.data), state.ended)
        head = [(b":method", b"HEAD"), *get(b"/head")[1:]]
        state = await client.request(head, end_stream=True)
        with trio.fail_after(15):
            await client.finished(state)
        got[b"/head"] = (state.status, bytes(state.data), state.ended)
        with trio.fail_after(10):
            await client.closed.wait()  # idle (every stream forgotten), then told to go
        assert client.terminated is not None
        assert client.terminated.error_code == 0
    assert got == {
        b"/body": (200, b"hello", True),
        b"/empty": (200, b"", True),
        b"/none": (204, b"", True),
        b"/head": (200, b"", True),
    }
    assert len(backend.connections) == 1  # kept after each
    lines = {
        line["path"]: (line["status"], line["end"], line["bytes_down"])
        for line in proxy_records.named("request.closed")
    }
    assert {path: lines[path.decode()] for path in answers} == {
        b"/body": (200, "clean", 5),
        b"/empty": (200, "clean", 0),
        b"/none": (204, "clean", 0),
        b"/head": (200, "clean", 0),
    }
