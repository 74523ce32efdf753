"""Ordinary HTTP exchanges in memory, with a jumping MockClock: timeouts, the keep-alive
pool's rules, and backpressure on a download the client does not read.

Backends here are scripted with h11 on the far end of an in-memory stream, so each test
controls exactly when and what a backend answers.
"""

from __future__ import annotations

import h11
import trio
import trio.testing

from tests.helpers.h2_client import H2TestClient, StreamState, open_h2_client
from tests.helpers.memory import MemoryNet, open_memory_client
from tests.helpers.setup import make_config

CANCEL = 0x8
Header = tuple[bytes, bytes]


def get(path: bytes = b"/") -> list[Header]:
    return [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", path),
        (b":authority", b"proxy.test"),
    ]


async def read_request(stream: trio.abc.ReceiveStream, conn: h11.Connection) -> h11.Request | None:
    """The next request (its body read and dropped); None when the proxy closed."""
    request: h11.Request | None = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.EndOfMessage):
            return request
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def answer(stream: trio.abc.SendStream, conn: h11.Connection, body: bytes) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    data = conn.send(h11.Response(status_code=200, headers=headers))
    data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    await stream.send_all(data)
    conn.start_next_cycle()


async def keep_alive_backend(stream: trio.abc.HalfCloseableStream) -> None:
    """Answers every request with its own path, keeping the connection open."""
    conn = h11.Connection(h11.SERVER)
    while (request := await read_request(stream, conn)) is not None:
        await answer(stream, conn, request.target)


async def answer_once_then_close(stream: trio.abc.HalfCloseableStream) -> None:
    """Keeps the connection alive by its headers, then closes it right after answering (a
    backend whose keep-alive timer fired while the proxy held the connection idle)."""
    conn = h11.Connection(h11.SERVER)
    request = await read_request(stream, conn)
    assert request is not None
    await answer(stream, conn, request.target)


async def until_closed(stream: trio.abc.ReceiveStream) -> None:
    while await stream.receive_some(65536):
        pass


async def silent_backend(stream: trio.abc.HalfCloseableStream) -> None:
    """Reads the request, never answers; returns when the proxy closes the connection."""
    conn = h11.Connection(h11.SERVER)
    await read_request(stream, conn)
    await until_closed(stream)


async def head_then_silence(stream: trio.abc.HalfCloseableStream) -> None:
    conn = h11.Connection(h11.SERVER)
    await read_request(stream, conn)
    await stream.send_all(conn.send(h11.Response(status_code=200, headers=[])) + b"5\r\nfirst\r\n")
    await until_closed(stream)


async def fetch(client: H2TestClient, path: bytes = b"/") -> StreamState:
    return await client.finished(await client.request(get(path), end_stream=True))


CONFIG = make_config(("/", "http://127.0.0.1:9"), http_idle_timeout_s=7.0, backend_keepalive_s=4.0)


async def test_backend_that_never_answers_gives_504_at_the_idle_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net = MemoryNet(nursery, silent_backend)
    async with open_h2_client(await open_memory_client(nursery, CONFIG, net)) as client:
        started = trio.current_time()
        state = await fetch(client)
        assert state.status == 504
        # The timer is lazy by up to a tenth of the timeout, never early.
        assert 7.0 <= trio.current_time() - started <= 7.0 + 0.7 + 1e-9  # float sums
        await net.backend_closed[0].wait()


async def test_backend_that_stalls_mid_answer_is_cut_off_and_the_stream_reset(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net = MemoryNet(nursery, head_then_silence)
    async with open_h2_client(await open_memory_client(nursery, CONFIG, net)) as client:
        state = await fetch(client)
        assert state.status == 200
        assert bytes(state.data) == b"first"
        assert state.reset_code == CANCEL  # half an answer must not look whole
        await net.backend_closed[0].wait()


async def test_the_idle_timeout_never_fires_before_that_long_without_a_byte(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The timer moves lazily (within a slack of a tenth of the timeout), but a stall is
    cut off no sooner than the full timeout after the last byte, and at most a slack late."""
    last_byte_at: list[float] = []

    async def trickle_then_silence(stream: trio.abc.HalfCloseableStream) -> None:
        conn = h11.Connection(h11.SERVER)
        await read_request(stream, conn)
        await stream.send_all(conn.send(h11.Response(status_code=200, headers=[])))
        # The first chunk moves the timer; the second comes 1.3 s later, when a lazy timer
        # may not have moved again (a slack is 0.7 s here).
        for pause, chunk in ((1.0, b"5\r\nfirst\r\n"), (1.3, b"6\r\nsecond\r\n")):
            await trio.sleep(pause)
            await stream.send_all(chunk)
        last_byte_at.append(trio.current_time())
        await until_closed(stream)

    net = MemoryNet(nursery, trickle_then_silence)
    async with open_h2_client(await open_memory_client(nursery, CONFIG, net)) as client:
        state = await fetch(client)
        silent_for = trio.current_time() - last_byte_at[0]
        assert bytes(state.data) == b"firstsecond"
        assert state.reset_code == CANCEL
        assert 7.0 <= silent_for <= 7.0 + 0.7 + 1e-9  # float sums


async def test_connections_are_reused_within_the_keepalive_and_closed_after(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net = MemoryNet(nursery, keep_alive_backend)
    async with open_h2_client(await open_memory_client(nursery, CONFIG, net)) as client:
        assert bytes((await fetch(client, b"/one")).data) == b"/one"
        await trio.sleep(3.9)
        assert bytes((await fetch(client, b"/two")).data) == b"/two"
        assert net.dials == 1
        await trio.sleep(4.0)  # idle for the whole keep-alive: not reused
        assert bytes((await fetch(client, b"/three")).data) == b"/three"
        assert net.dials == 2
        await net.backend_closed[0].wait()


async def test_a_stale_connection_is_retried_once_on_a_new_one(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net = MemoryNet(nursery, answer_once_then_close)
    async with open_h2_client(await open_memory_client(nursery, CONFIG, net)) as client:
        assert bytes((await fetch(client, b"/one")).data) == b"/one"
        # The pooled connection's backend is gone; the proxy finds out when it sends.
        second = await fetch(client, b"/two")
        assert second.status == 200
        assert bytes(second.data) == b"/two"
        assert net.dials == 2


async def test_a_client_reset_during_the_backend_dial_cancels_it(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net = MemoryNet(nursery, keep_alive_backend, connect_delay_s=1.0)
    async with open_h2_client(await open_memory_client(nursery, CONFIG, net)) as client:
        state = await client.request(get(b"/gone"), end_stream=True)
        await trio.testing.wait_all_tasks_blocked()
        assert net.dials == 1
        await client.reset(state, CANCEL)
        await trio.sleep(5)  # virtual: far past the 1 s dial, had it not been cancelled
        assert net.dials_cancelled == 1
        assert net.backend_closed == []
        assert bytes((await fetch(client, b"/next")).data) == b"/next"  # the connection lives


async def test_a_client_reset_while_the_answer_is_awaited_closes_the_backend_connection(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net = MemoryNet(nursery, silent_backend)
    async with open_h2_client(await open_memory_client(nursery, CONFIG, net)) as client:
        state = await client.request(get(b"/slow"), end_stream=True)
        await trio.sleep(1)
        started = trio.current_time()
        await client.reset(state, CANCEL)
        await net.backend_closed[0].wait()  # closed, not kept for the next request
        assert trio.current_time() == started


async def test_reuse_can_be_turned_off(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = make_config(("/", "http://127.0.0.1:9"), backend_max_idle=0)
    net = MemoryNet(nursery, keep_alive_backend)
    async with open_h2_client(await open_memory_client(nursery, config, net)) as client:
        for path in (b"/a", b"/b", b"/c"):
            assert bytes((await fetch(client, path)).data) == path
        assert net.dials == 3


async def test_a_download_the_client_does_not_read_holds_the_backend_back(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Flow control is the backpressure: with the client's window shut, the proxy stops
    reading the backend, whose writes then block (lockstep streams have no buffer)."""
    written = 0
    total = 32 * 1024 * 1024

    async def big_download(stream: trio.abc.HalfCloseableStream) -> None:
        nonlocal written
        conn = h11.Connection(h11.SERVER)
        await read_request(stream, conn)
        head = h11.Response(status_code=200, headers=[(b"content-length", str(total).encode())])
        await stream.send_all(conn.send(head))
        chunk = b"x" * 16384
        while written < total:
            await stream.send_all(conn.send(h11.Data(data=chunk)))
            written += len(chunk)

    net = MemoryNet(nursery, big_download, lockstep=True)
    async with open_h2_client(await open_memory_client(nursery, CONFIG, net)) as client:
        state = await client.request(get(), end_stream=True, auto_ack=False)
        await client.wait_for(lambda: state.unacked >= 65535)  # the default window is full
        await trio.testing.wait_all_tasks_blocked()
        stalled_at = written
        await trio.sleep(5.0)  # virtual time: nothing moves while the window stays shut
        assert written == stalled_at
        assert written < 1024 * 1024  # window + one read + outbound bound, not the body
        await client.ack(state)  # open the window: the download moves again
        await client.wait_for(lambda: state.unacked > 0)
        assert written > stalled_at
        await client.reset(state, CANCEL)
        await net.backend_closed[0].wait()


async def read_until_eof(stream: trio.abc.ReceiveStream) -> bytes:
    data = bytearray()
    while chunk := await stream.receive_some(65536):
        data += chunk
    return bytes(data)


async def test_an_idle_http11_keep_alive_connection_is_closed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = make_config(("/", "http://127.0.0.1:9"), idle_connection_timeout_s=30.0)
    net = MemoryNet(nursery, keep_alive_backend)
    client = await open_memory_client(nursery, config, net)
    await client.send_all(b"GET /one HTTP/1.1\r\nHost: p\r\n\r\n")
    answered = trio.current_time()
    answer = await read_until_eof(client)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b"/one")
    assert trio.current_time() - answered == 30.0


async def test_draining_closes_idle_http11_connections_and_ends_busy_ones_after_the_answer(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def slow_backend(stream: trio.abc.HalfCloseableStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while (request := await read_request(stream, conn)) is not None:
            await trio.sleep(5)
            await answer(stream, conn, request.target)

    shutdown = trio.Event()
    net = MemoryNet(nursery, slow_backend)
    idle = await open_memory_client(nursery, CONFIG, net, shutdown=shutdown)
    busy = await open_memory_client(nursery, CONFIG, net, shutdown=shutdown)
    await idle.send_all(b"GET /idle HTTP/1.1\r\nHost: p\r\n\r\n")
    await trio.sleep(6)  # answered; the connection now idles between requests
    await busy.send_all(b"GET /busy HTTP/1.1\r\nHost: p\r\n\r\n")
    await trio.sleep(1)
    shutdown.set()
    drained = trio.current_time()
    idle_answer = await read_until_eof(idle)
    assert trio.current_time() == drained  # closed at once
    assert idle_answer.endswith(b"/idle")
    busy_answer = await read_until_eof(busy)
    assert trio.current_time() - drained == 4.0  # after its answer, not before
    assert b"connection: close" in busy_answer.lower()
    assert busy_answer.endswith(b"/busy")
