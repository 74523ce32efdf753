"""Timeouts, cancellation and protocol violations, in memory with a jumping MockClock.

No test here waits in real time: ``autojump_clock`` jumps to the next deadline whenever
every task is blocked, so "10 seconds" of handshake timeout take microseconds, and the
assertions check the exact virtual time at which the proxy acted.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from h2ws_proxy.relay.context import ServerStats
from h2ws_proxy.relay.relay_state import TIMER_SLACK_S
from tests.helpers.backends import BackendConnection
from tests.helpers.h2_client import open_h2_client
from tests.helpers.memory import CONNECT_HEADERS, MemoryNet, echo_backend, open_memory_client
from tests.helpers.records import capture_proxy_records
from tests.helpers.setup import make_config

pytestmark = pytest.mark.usefixtures("both_backend_kinds")

PROTOCOL_ERROR, CANCEL, NO_ERROR = 0x1, 0x8, 0x0


async def silent_backend(stream: trio.abc.HalfCloseableStream) -> None:
    """Reads the upgrade, never answers; returns when the proxy closes the connection."""
    conn = BackendConnection(stream)
    await conn.read_upgrade()
    assert await conn.receive() == b""


CONFIG = make_config(("/", "http://127.0.0.1:9"), handshake_timeout_s=10.0, connect_timeout_s=3.0)


async def test_backend_that_never_answers_gives_504_at_the_handshake_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net = MemoryNet(nursery, silent_backend)
    async with open_h2_client(await open_memory_client(nursery, CONFIG, net)) as client:
        started = trio.current_time()
        state = await client.finished(await client.request(CONNECT_HEADERS))
        assert state.status == 504
        assert trio.current_time() - started == 10.0
        await net.backend_closed[0].wait()


async def test_backend_that_never_accepts_gives_504_at_the_connect_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net = MemoryNet(nursery, echo_backend, connect_delay_s=None)
    async with open_h2_client(await open_memory_client(nursery, CONFIG, net)) as client:
        started = trio.current_time()
        state = await client.finished(await client.request(CONNECT_HEADERS))
        assert state.status == 504
        assert trio.current_time() - started == 3.0
        assert net.dials_cancelled == 1


async def test_client_reset_during_backend_dial_leaves_no_backend_connection(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net = MemoryNet(nursery, echo_backend, connect_delay_s=1.0)
    async with open_h2_client(await open_memory_client(nursery, CONFIG, net)) as client:
        state = await client.request(CONNECT_HEADERS)
        await trio.testing.wait_all_tasks_blocked()
        assert net.dials == 1
        await client.reset(state, CANCEL)
        await trio.sleep(5)  # virtual: far past the 1 s dial, had it not been cancelled
        assert net.dials_cancelled == 1
        assert net.backend_closed == []


async def test_idle_tunnel_is_closed_at_the_idle_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = make_config(("/", "http://127.0.0.1:9"), idle_timeout_s=60.0)
    net = MemoryNet(nursery, echo_backend)
    async with open_h2_client(await open_memory_client(nursery, config, net)) as client:
        ws = await client.websocket("/")
        assert ws.status == 200
        await trio.sleep(59)
        # Activity restarts the idle clock (the backend echoes raw bytes).
        await client.send_data(ws.state, b"still here")
        await client.wait_for(lambda: bytes(ws.state.data) == b"still here")
        active = trio.current_time()
        await client.wait_for(lambda: ws.state.reset_code is not None)
        assert ws.state.reset_code == CANCEL
        # Never early; at most TIMER_SLACK_S late (the deadline is not moved per message).
        assert 60.0 <= trio.current_time() - active <= 60.0 + TIMER_SLACK_S
        await net.backend_closed[0].wait()


async def test_a_client_that_never_ends_its_side_is_cut_off_after_the_backend_ended(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Firefox leaves its CONNECT stream open after a WebSocket's closing handshake; once
    the backend has closed, the stream gets half_closed_timeout_s, then RST(NO_ERROR)."""

    async def bye_backend(stream: trio.abc.HalfCloseableStream) -> None:
        conn = BackendConnection(stream)
        await conn.accept(await conn.read_upgrade())
        await stream.send_all(b"bye")
        await stream.send_eof()
        while await stream.receive_some(65536):
            pass

    config = make_config(("/", "http://127.0.0.1:9"), half_closed_timeout_s=10.0)
    net = MemoryNet(nursery, bye_backend)
    async with open_h2_client(await open_memory_client(nursery, config, net)) as client:
        ws = await client.websocket("/")
        await client.wait_for(lambda: ws.state.ended)  # the backend's end became END_STREAM
        ended = trio.current_time()
        await trio.sleep(9)
        await client.send_data(ws.state, b"late")  # activity restarts the clock
        active = trio.current_time()
        await client.wait_for(lambda: ws.state.reset_code is not None)
        assert ws.state.reset_code == NO_ERROR
        assert 10.0 <= trio.current_time() - active <= 10.0 + TIMER_SLACK_S
        assert active - ended == 9.0
        assert bytes(ws.state.data) == b"bye"


async def test_data_before_the_200_is_a_stream_error_and_reaches_no_backend(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    received: list[bytes] = []

    async def recording_backend(stream: trio.abc.HalfCloseableStream) -> None:
        conn = BackendConnection(stream)
        try:
            await trio.sleep(1)  # answers late: the client's DATA arrives first
            await conn.accept(await conn.read_upgrade())
            await conn.echo_until_eof()
        finally:
            received.append(bytes(conn.received))

    net = MemoryNet(nursery, recording_backend)
    async with open_h2_client(await open_memory_client(nursery, CONFIG, net)) as client:
        early = await client.request(CONNECT_HEADERS)
        await client.send_data(early, b"GET /smuggled HTTP/1.1\r\n\r\n")
        await client.wait_for(lambda: early.reset_code is not None)
        assert early.reset_code == PROTOCOL_ERROR
        await trio.sleep(5)
        assert all(b"smuggled" not in data for data in received)
        ws = await client.websocket("/")  # the connection is still fine
        assert ws.status == 200


async def test_shutdown_sends_goaway_and_open_tunnels_keep_working(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    shutdown = trio.Event()
    net = MemoryNet(nursery, echo_backend)
    client_stream = await open_memory_client(nursery, CONFIG, net, shutdown=shutdown)
    async with open_h2_client(client_stream) as client:
        ws = await client.websocket("/")
        shutdown.set()
        await client.wait_for(lambda: client.terminated is not None)
        assert client.terminated is not None
        assert client.terminated.error_code == 0
        assert client.terminated.last_stream_id == ws.state.stream_id
        # The open tunnel is left to finish (the server's graceful timeout bounds it).
        # h2, the client library here, stops sending after a GOAWAY, so the tunnel's
        # survival is checked at the backend; the Node client test covers the rest.
        await trio.sleep(30)
        assert not net.backend_closed[0].is_set()


async def test_cleartext_client_that_sends_nothing_is_dropped(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = make_config(("/", "http://127.0.0.1:9"), client_handshake_timeout_s=5.0)
    client = await open_memory_client(nursery, config, MemoryNet(nursery, echo_backend))
    started = trio.current_time()
    assert await client.receive_some() == b""
    assert trio.current_time() - started == 5.0


async def test_slow_http1_request_head_is_answered_408_and_closed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = make_config(("/", "http://127.0.0.1:9"), client_handshake_timeout_s=5.0)
    client = await open_memory_client(nursery, config, MemoryNet(nursery, echo_backend))
    started = trio.current_time()
    await client.send_all(b"GET / HTTP/1.1\r\nHost: proxy.test\r\n")  # never finished
    answer = b""
    while data := await client.receive_some():
        answer += data
    assert trio.current_time() - started == 5.0
    assert answer.startswith(b"HTTP/1.1 408 ")


async def test_the_idle_timer_ends_a_half_closed_tunnel_when_it_comes_first(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The backend ended its side; the idle timeout (5 s) comes before the half-closed one
    (30 s), so the tunnel is cut as idle (CANCEL), not after the half-closed timeout."""

    async def bye_backend(stream: trio.abc.HalfCloseableStream) -> None:
        conn = BackendConnection(stream)
        await conn.accept(await conn.read_upgrade())
        await stream.send_eof()
        while await stream.receive_some(65536):
            pass

    config = make_config(("/", "http://127.0.0.1:9"), idle_timeout_s=5.0, half_closed_timeout_s=30)
    net = MemoryNet(nursery, bye_backend)
    async with open_h2_client(await open_memory_client(nursery, config, net)) as client:
        ws = await client.websocket("/")
        opened = trio.current_time()
        await client.wait_for(lambda: ws.state.ended)
        await client.wait_for(lambda: ws.state.reset_code is not None)
        assert ws.state.reset_code == CANCEL
        assert 5.0 <= trio.current_time() - opened <= 5.0 + TIMER_SLACK_S


async def test_idle_tunnels_of_one_connection_each_end_at_their_own_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Three tunnels on one connection share its timers; activity on the middle one moves
    only its own deadline."""
    config = make_config(("/", "http://127.0.0.1:9"), idle_timeout_s=60.0)
    net = MemoryNet(nursery, echo_backend)
    async with open_h2_client(await open_memory_client(nursery, config, net)) as client:
        tunnels = [await client.websocket("/") for _ in range(3)]
        opened = trio.current_time()
        await trio.sleep(30)
        await client.send_data(tunnels[1].state, b"ping")
        await client.wait_for(lambda: bytes(tunnels[1].state.data) == b"ping")
        active = trio.current_time()
        ended: dict[int, float] = {}

        def note_ends() -> bool:
            for index, ws in enumerate(tunnels):
                if ws.state.reset_code is not None and index not in ended:
                    ended[index] = trio.current_time()
            return len(ended) == 3

        await client.wait_for(note_ends)
        for index in (0, 2):
            assert 60.0 <= ended[index] - opened <= 60.0 + TIMER_SLACK_S
        assert 60.0 <= ended[1] - active <= 60.0 + TIMER_SLACK_S


async def test_cancelling_the_connection_ends_an_idle_tunnel_and_logs_it(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The connection's task tree cancelled from outside (a hard stop): the idle tunnel,
    which has no task of its own over a socket backend, still ends, closes its backend,
    leaves the tunnel count and logs its line."""
    config = make_config(("/", "http://127.0.0.1:9"), idle_timeout_s=60.0)
    net = MemoryNet(nursery, echo_backend)
    stats = ServerStats()
    with capture_proxy_records() as records:
        async with trio.open_nursery() as proxy:
            client_end = await open_memory_client(proxy, config, net, stats=stats)
            async with open_h2_client(client_end) as client:
                ws = await client.websocket("/")
                await client.send_data(ws.state, b"hi")
                await client.wait_for(lambda: bytes(ws.state.data) == b"hi")
                await trio.testing.wait_all_tasks_blocked()
                assert stats.tunnels == 1
                proxy.cancel_scope.cancel()
        with trio.fail_after(5):  # (virtual time: it fails at once if nothing closes it)
            await net.backend_closed[0].wait()
    assert stats.tunnels == 0
    (line,) = records.named("tunnel.closed")
    assert line["end"] == "cancelled"
    assert line["bytes_up"] == line["bytes_down"] == 2
