"""HTTP/1.1 requests end the same on the lean path (http1/lean_exchange.py) and the task path.

Each test runs twice over a raw HTTP/1.1 client on loopback. A first request on the same
client connection comes first in both runs: ``lean_path`` lets its backend connection wait
idle in the pool, so that the request under test runs without a task; in
``task_path_control`` the pool keeps nothing (``backend_keepalive_s = 0``), so every
request dials a new connection on the task path (relay/exchange.py), the behaviour the lean
path must match. A fixture checks that each run took the path it names. The scripted
backend closes, stalls or misbehaves at exactly the request under test.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import h11
import pytest
import trio
import trio.testing

from h2ws_proxy.http1 import frontend
from h2ws_proxy.relay.context import ServerStats
from h2ws_proxy.server.serve import BoundAddresses, serve
from tests.conftest import StartProxy
from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.records import ProxyRecords
from tests.helpers.scripted_http import OK, Answer, scripted, until_closed
from tests.helpers.setup import backend_url, make_config

pytestmark = pytest.mark.socket

PATHS = pytest.mark.parametrize("lean", [True, False], ids=["lean_path", "task_path_control"])


@pytest.fixture(autouse=True)
def _path_taken(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[None]:
    """Each run took the path it names: the lean one at least once, or never."""
    calls: list[object] = []
    original = frontend.run_lean

    async def counted(*args: Any) -> bool | None:
        calls.append(args)
        return await original(*args)

    monkeypatch.setattr(frontend, "run_lean", counted)
    yield
    callspec = getattr(request.node, "callspec", None)
    lean = callspec.params.get("lean", True) if callspec is not None else True
    assert bool(calls) == lean


def first_then(answer: Answer) -> Answer:
    """Answer the first request with :data:`OK`, then let ``answer`` answer."""

    async def script(connection: BackendConnection, head: bytes, number: int) -> bool:
        if number == 0:
            await connection.stream.send_all(OK)
            return True
        return await answer(connection, head, number)

    return script


def request(path: bytes, *fields: bytes, version: bytes = b"1.1") -> bytes:
    lines = [b"GET %s HTTP/%s" % (path, version), b"host: proxy.test", *fields]
    return b"\r\n".join(lines) + b"\r\n\r\n"


class RawClient:
    """An HTTP/1.1 client that reads answers framed by ``content-length``."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def more(self) -> bool:
        chunk = await self.stream.receive_some(65536)
        self.buffer += chunk
        return bool(chunk)

    async def answer(self) -> tuple[bytes, bytes] | None:
        """The next answer's head and body; None if the connection ended before it did."""
        with trio.fail_after(10):
            while b"\r\n\r\n" not in self.buffer:
                if not await self.more():
                    return None
            end = self.buffer.index(b"\r\n\r\n") + 4
            head = bytes(self.buffer[:end])
            length = 0
            for line in head.lower().split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            while len(self.buffer) < end + length:
                if not await self.more():
                    return None
            body = bytes(self.buffer[end : end + length])
            del self.buffer[: end + length]
            return head, body

    async def ended(self) -> bool:
        """True once the proxy closed the connection (what is left is read and dropped)."""
        with trio.fail_after(10):
            try:
                while await self.more():
                    pass
            except trio.BrokenResourceError:
                pass
        await self.stream.aclose()  # (the proxy lingers until it sees our end)
        return True


async def setup(
    nursery: trio.Nursery, start_proxy: StartProxy, lean: bool, answer: Answer, **limits: float
) -> tuple[ScriptedBackend, RawClient]:
    if not lean:
        limits["backend_keepalive_s"] = 0  # nothing kept: every request on the task path
    backend = ScriptedBackend(scripted(first_then(answer)))
    port = await nursery.start(backend.run)
    address = await start_proxy(make_config(("/", backend_url(port)), **limits))
    client = RawClient(await trio.open_tcp_stream(address.host, address.port))
    await client.stream.send_all(request(b"/one"))
    first = await client.answer()
    assert first is not None
    assert first[1] == b"first"
    return backend, client


async def ends(records: ProxyRecords) -> list[tuple[str, int | str, str]]:
    """How each request after the first ended, once the proxy logged them all."""
    await trio.testing.wait_all_tasks_blocked()
    lines = records.named("request.closed")
    return [(line["path"], line["status"], line["end"]) for line in lines[1:]]


@PATHS
async def test_a_plain_answer_and_a_pipelined_pair(
    nursery: trio.Nursery, start_proxy: StartProxy, proxy_records: ProxyRecords, lean: bool
) -> None:
    async def answer(connection: BackendConnection, head: bytes, number: int) -> bool:
        body = head.split(b" ")[1]
        data = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-N: %d\r\n\r\n%s"
        await connection.stream.send_all(data % (len(body), number, body))
        return True

    _backend, client = await setup(nursery, start_proxy, lean, answer)
    await client.stream.send_all(request(b"/two") + request(b"/three"))
    two, three = await client.answer(), await client.answer()
    assert two is not None
    assert three is not None
    assert (two[1], three[1]) == (b"/two", b"/three")
    assert two[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"x-n: 1\r\n" in two[0]
    await client.stream.send_all(request(b"/four", b"connection: close"))
    four = await client.answer()
    assert four is not None
    assert b"connection: close" in four[0].lower()
    assert four[1] == b"/four"
    assert await client.ended()
    clean = [("/two", 200, "clean"), ("/three", 200, "clean"), ("/four", 200, "clean")]
    assert await ends(proxy_records) == clean


@PATHS
async def test_an_http10_request_is_answered_then_closed(
    nursery: trio.Nursery, start_proxy: StartProxy, lean: bool
) -> None:
    async def answer(connection: BackendConnection, _head: bytes, _number: int) -> bool:
        await connection.stream.send_all(OK)
        return True

    _backend, client = await setup(nursery, start_proxy, lean, answer)
    await client.stream.send_all(request(b"/two", version=b"1.0"))
    two = await client.answer()
    assert two is not None
    assert two[0].startswith(b"HTTP/1.1 200 ")
    assert two[1] == b"first"
    assert await client.ended()


@PATHS
async def test_a_client_that_leaves_before_the_head_cancels_the_backend_request(
    nursery: trio.Nursery, start_proxy: StartProxy, proxy_records: ProxyRecords, lean: bool
) -> None:
    asked, gone = trio.Event(), trio.Event()

    async def answer(connection: BackendConnection, _head: bytes, _number: int) -> bool:
        asked.set()
        await until_closed(connection)
        gone.set()
        return False

    _backend, client = await setup(nursery, start_proxy, lean, answer)
    await client.stream.send_all(request(b"/two"))
    with trio.fail_after(10):
        await asked.wait()
    await client.stream.aclose()
    with trio.fail_after(10):
        await gone.wait()  # the proxy closed the backend connection
    await trio.testing.wait_all_tasks_blocked()  # and logged the request
    line = proxy_records.named("request.closed")[1]
    assert (line["status"], line["end"]) == ("-", "client_aborted")
    assert line["error"] == "the client went away before the answer began"


@PATHS
async def test_a_silent_backend_gets_504_and_a_stall_mid_body_drops_the_client(
    nursery: trio.Nursery, start_proxy: StartProxy, proxy_records: ProxyRecords, lean: bool
) -> None:
    async def answer(connection: BackendConnection, head: bytes, _number: int) -> bool:
        if b"/body" in head:
            await connection.stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
        return await until_closed(connection)

    _backend, client = await setup(nursery, start_proxy, lean, answer, http_idle_timeout_s=0.3)
    await client.stream.send_all(request(b"/silent"))
    silent = await client.answer()
    assert silent is not None
    assert silent[0].startswith(b"HTTP/1.1 504 ")
    assert await client.ended()
    assert await ends(proxy_records) == [("/silent", 504, "refused")]


@PATHS
async def test_a_stall_mid_body_drops_the_client_after_the_idle_timeout(
    nursery: trio.Nursery, start_proxy: StartProxy, proxy_records: ProxyRecords, lean: bool
) -> None:
    async def answer(connection: BackendConnection, _head: bytes, _number: int) -> bool:
        await connection.stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
        return await until_closed(connection)

    _backend, client = await setup(nursery, start_proxy, lean, answer, http_idle_timeout_s=0.3)
    await client.stream.send_all(request(b"/stall"))
    assert await client.answer() is None  # the head and two bytes, then the end
    assert bytes(client.buffer).endswith(b"\r\n\r\nab")
    assert await ends(proxy_records) == [("/stall", 200, "idle_timeout")]


@PATHS
@pytest.mark.parametrize(
    ("script", "status", "end"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab", 200, "backend_aborted"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", 502, "refused"),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", 502, "refused"),
        (b"HTTP/1.1 200 OK\r\nContent-L", 502, "refused"),
    ],
    ids=["closed_mid_body", "bad_length", "switched", "closed_mid_head"],
)
async def test_a_backend_that_closes_or_misbehaves(
    nursery: trio.Nursery,
    start_proxy: StartProxy,
    proxy_records: ProxyRecords,
    lean: bool,
    script: bytes,
    status: int,
    end: str,
) -> None:
    async def answer(connection: BackendConnection, _head: bytes, _number: int) -> bool:
        await connection.stream.send_all(script)
        return False  # then closed

    _backend, client = await setup(nursery, start_proxy, lean, answer)
    await client.stream.send_all(request(b"/two"))
    two = await client.answer()
    if status == 502:
        assert two is not None
        assert two[0].startswith(b"HTTP/1.1 502 ")
    else:
        assert two is None
    assert await client.ended()
    assert await ends(proxy_records) == [("/two", status, end)]


async def test_a_kept_connection_the_backend_closes_is_retried_on_a_new_one(
    nursery: trio.Nursery, start_proxy: StartProxy, proxy_records: ProxyRecords
) -> None:
    async def answer(connection: BackendConnection, _head: bytes, number: int) -> bool:
        if number == 1:
            return False  # took the second request, then closed without a word
        await connection.stream.send_all(OK)
        return True

    backend, client = await setup(nursery, start_proxy, True, answer)
    await client.stream.send_all(request(b"/two"))
    two = await client.answer()
    assert two is not None
    assert two[1] == b"first"
    assert len(backend.connections) == 2
    assert backend.connections[0].received.count(b"GET /two ") == 1  # sent, unanswered
    assert backend.connections[1].received.startswith(b"GET /two ")
    assert await ends(proxy_records) == [("/two", 200, "clean")]


@PATHS
async def test_the_drain_closes_an_idle_kept_connection_and_marks_the_last_answer(
    nursery: trio.Nursery, lean: bool
) -> None:
    async def answer(connection: BackendConnection, _head: bytes, _number: int) -> bool:
        await connection.stream.send_all(OK)
        return True

    backend = ScriptedBackend(scripted(first_then(answer)))
    port = await nursery.start(backend.run)
    keep = {} if lean else {"backend_keepalive_s": 0.0}
    config = make_config(("/", backend_url(port)), graceful_timeout_s=5, close_wait_s=0.1, **keep)
    shutdown, stats = trio.Event(), ServerStats()
    async with trio.open_nursery() as proxy:
        bound: BoundAddresses = await proxy.start(
            functools.partial(serve, config, shutdown=shutdown, stats=stats)
        )
        address = bound.listeners[0]
        client = RawClient(await trio.open_tcp_stream(address.host, address.port))
        idle = RawClient(await trio.open_tcp_stream(address.host, address.port))
        await client.stream.send_all(request(b"/one"))
        assert await client.answer() is not None
        await idle.stream.send_all(request(b"/idle"))
        assert await idle.answer() is not None
        # Both wait between requests now; the drain closes the idle one at once.
        shutdown.set()
        assert await idle.ended()
        assert await client.ended()


@PATHS
async def test_an_answer_under_way_when_the_drain_begins_is_the_last_one(
    nursery: trio.Nursery, lean: bool
) -> None:
    asked, answer_now = trio.Event(), trio.Event()

    async def answer(connection: BackendConnection, _head: bytes, _number: int) -> bool:
        asked.set()
        await answer_now.wait()
        await connection.stream.send_all(OK)
        return True

    backend = ScriptedBackend(scripted(first_then(answer)))
    port = await nursery.start(backend.run)
    keep = {} if lean else {"backend_keepalive_s": 0.0}
    config = make_config(("/", backend_url(port)), graceful_timeout_s=5, close_wait_s=0.1, **keep)
    shutdown = trio.Event()
    async with trio.open_nursery() as proxy:
        bound: BoundAddresses = await proxy.start(
            functools.partial(serve, config, shutdown=shutdown, stats=ServerStats())
        )
        address = bound.listeners[0]
        client = RawClient(await trio.open_tcp_stream(address.host, address.port))
        await client.stream.send_all(request(b"/one"))
        assert await client.answer() is not None
        await client.stream.send_all(request(b"/two"))
        with trio.fail_after(10):
            await asked.wait()
        shutdown.set()
        answer_now.set()
        two = await client.answer()
        assert two is not None
        assert b"connection: close" in two[0].lower()
        assert await client.ended()


@PATHS
async def test_a_large_answer_in_many_reads_arrives_whole(
    nursery: trio.Nursery, start_proxy: StartProxy, proxy_records: ProxyRecords, lean: bool
) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB

    async def answer(connection: BackendConnection, _head: bytes, _number: int) -> bool:
        await connection.stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        for start in range(0, len(body), 100_000):
            await connection.stream.send_all(body[start : start + 100_000])
        return True

    _backend, client = await setup(nursery, start_proxy, lean, answer)
    await client.stream.send_all(request(b"/big"))
    big = await client.answer()
    assert big is not None
    assert big[1] == body
    await client.stream.send_all(request(b"/again"))
    again = await client.answer()
    assert again is not None
    assert again[1] == body
    assert await ends(proxy_records) == [("/big", 200, "clean"), ("/again", 200, "clean")]


@PATHS
async def test_a_client_that_half_closes_after_the_head_still_gets_the_whole_answer(
    nursery: trio.Nursery, start_proxy: StartProxy, proxy_records: ProxyRecords, lean: bool
) -> None:
    rest = trio.Event()

    async def answer(connection: BackendConnection, _head: bytes, _number: int) -> bool:
        await connection.stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
        await rest.wait()
        await connection.stream.send_all(b"cdefghij")
        return True

    _backend, client = await setup(nursery, start_proxy, lean, answer)
    await client.stream.send_all(request(b"/two"))
    with trio.fail_after(10):
        while b"\r\n\r\nab" not in client.buffer:
            assert await client.more()
    await client.stream.send_eof()  # the head is in: an EOF now is no abort
    await trio.testing.wait_all_tasks_blocked()
    rest.set()
    two = await client.answer()
    assert two is not None
    assert two[1] == b"abcdefghij"
    assert await client.ended()
    assert await ends(proxy_records) == [("/two", 200, "clean")]


@PATHS
async def test_what_a_client_pipelines_while_answers_are_awaited_stays_bounded(
    nursery: trio.Nursery, start_proxy: StartProxy, lean: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """About 200 KiB of small GETs pipelined against slow answers: h11 never holds much more
    than ``max_header_list_bytes`` of them (plus one read of the next request's wait), and
    every answer comes, in order (found by a review: the budget was per exchange, so the
    buffer grew by a read per request)."""
    biggest = [0]
    receive_data = h11.Connection.receive_data

    def measured(self: h11.Connection, data: bytes) -> None:
        receive_data(self, data)
        if self.our_role is h11.SERVER:
            biggest[0] = max(biggest[0], len(self.trailing_data[0]))

    monkeypatch.setattr(h11.Connection, "receive_data", measured)
    gate = trio.Semaphore(0)

    async def answer(connection: BackendConnection, head: bytes, _number: int) -> bool:
        await gate.acquire()
        path = head.split(b" ")[1]
        await connection.stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(path), path)
        )
        return True

    limits: dict[str, Any] = {"max_header_list_bytes": 4096}
    if not lean:
        limits["backend_keepalive_s"] = 0
    backend = ScriptedBackend(scripted(answer))
    port = await nursery.start(backend.run)
    address = await start_proxy(make_config(("/", backend_url(port)), **limits))
    client = RawClient(await trio.open_tcp_stream(address.host, address.port))
    gate.release()
    await client.stream.send_all(request(b"/one"))
    assert await client.answer() is not None
    count = 5000
    nursery.start_soon(client.stream.send_all, b"".join(request(b"/p%d" % n) for n in range(count)))
    for n in range(count):
        gate.release()
        got = await client.answer()
        assert got is not None
        assert got[1] == b"/p%d" % n
    assert biggest[0] <= 4096 + 65536, biggest[0]


@PATHS
async def test_an_http10_client_gets_a_chunked_answer_with_trailers_without_them(
    nursery: trio.Nursery, start_proxy: StartProxy, proxy_records: ProxyRecords, lean: bool
) -> None:
    """Trailers need chunked framing, which an HTTP/1.0 client does not read: the body goes,
    the trailers are dropped, the request ends clean (found by a review: a refused send put
    h11 in its ERROR state, and the request was logged cancelled or backend_aborted)."""

    async def answer(connection: BackendConnection, _head: bytes, _number: int) -> bool:
        await connection.stream.send_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\nx-checksum: 1\r\n\r\n"
        )
        return True

    _backend, client = await setup(nursery, start_proxy, lean, answer)
    await client.stream.send_all(request(b"/two", version=b"1.0"))
    with trio.fail_after(10):
        while await client.more():  # close-delimited: the proxy closes after it
            pass
    head, _, body = bytes(client.buffer).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == b"abc"
    assert b"x-checksum" not in bytes(client.buffer)
    assert await ends(proxy_records) == [("/two", 200, "clean")]
