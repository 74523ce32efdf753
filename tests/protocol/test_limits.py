"""Per-connection limits: excess streams refused, rapid reset, idle connections, a client
that never reads. In memory, on a jumping clock (the listener's and per-client caps:
test_client_fairness.py)."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.settings
import pytest
import trio
import trio.testing

from h2ws_proxy.http2.stream import H2Stream
from tests.helpers.frames import PREFACE
from tests.helpers.h2_client import open_h2_client
from tests.helpers.memory import MemoryNet, echo_backend, open_memory_client
from tests.helpers.setup import make_config

pytestmark = pytest.mark.usefixtures("both_backend_kinds")

REFUSED_STREAM, ENHANCE_YOUR_CALM, CANCEL = 0x7, 0xB, 0x8


async def test_streams_over_the_limit_are_refused_and_the_connection_lives(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = make_config(("/", "http://127.0.0.1:9"), max_concurrent_streams=2)
    net = MemoryNet(nursery, echo_backend)
    async with open_h2_client(await open_memory_client(nursery, config, net)) as client:
        assert client.conn.remote_settings.max_concurrent_streams == 2  # as advertised
        first = await client.websocket("/")
        second = await client.websocket("/")
        # h2 (the client library) honours the limit; lift it to act as a client that doesn't.
        client.conn.remote_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = 100
        client.conn.remote_settings.acknowledge()
        third = await client.websocket("/")
        assert third.state.reset_code == REFUSED_STREAM
        for ws in (first, second):
            assert ws.status == 200
            await client.send_data(ws.state, b"alive")
            await client.wait_for(lambda ws=ws: bytes(ws.state.data) == b"alive")


async def test_rapid_reset_closes_the_connection_with_enhance_your_calm(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = make_config(
        ("/", "http://127.0.0.1:9"), max_stream_resets=20, stream_reset_window_s=10.0
    )
    net = MemoryNet(nursery, echo_backend, connect_delay_s=0.5)
    async with open_h2_client(await open_memory_client(nursery, config, net)) as client:
        headers = [
            (b":method", b"CONNECT"),
            (b":protocol", b"websocket"),
            (b":scheme", b"http"),
            (b":path", b"/"),
            (b":authority", b"proxy.test"),
            (b"sec-websocket-version", b"13"),
        ]
        for _ in range(25):
            state = await client.request(headers)
            await client.reset(state, CANCEL)
            if client.terminated is not None:
                break
        await client.wait_for(lambda: client.terminated is not None)
        assert client.terminated is not None
        assert client.terminated.error_code == ENHANCE_YOUR_CALM
        await client.closed.wait()
    await trio.sleep(5)
    # Every dial that was started was cancelled or closed: nothing left at the backends.
    assert net.dials_cancelled + len(net.backend_closed) == net.dials
    assert all(closed.is_set() for closed in net.backend_closed)


async def test_a_browser_closing_a_few_sockets_is_not_rapid_reset(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = make_config(
        ("/", "http://127.0.0.1:9"), max_stream_resets=20, stream_reset_window_s=10.0
    )
    net = MemoryNet(nursery, echo_backend)
    async with open_h2_client(await open_memory_client(nursery, config, net)) as client:
        for _ in range(10):
            ws = await client.websocket("/")
            await client.reset(ws.state, CANCEL)
            await trio.sleep(1)
        ws = await client.websocket("/")
        assert ws.status == 200
        assert client.terminated is None


async def test_idle_connection_gets_goaway_and_is_closed(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = make_config(("/", "http://127.0.0.1:9"), idle_connection_timeout_s=30.0)
    net = MemoryNet(nursery, echo_backend)
    async with open_h2_client(await open_memory_client(nursery, config, net)) as client:
        ws = await client.websocket("/")
        await trio.sleep(100)  # a stream is open: not idle
        assert client.terminated is None
        await client.end_stream(ws.state)
        await client.finished(ws.state)
        ended = trio.current_time()
        await client.wait_for(lambda: client.terminated is not None)
        assert client.terminated is not None
        assert client.terminated.error_code == 0
        assert trio.current_time() - ended == pytest.approx(30.0)
        await client.closed.wait()  # after a short lingering close
        assert trio.current_time() - ended <= 30.0 + 2.0


async def test_client_that_never_reads_is_disconnected_after_the_send_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = make_config(("/", "http://127.0.0.1:9"), send_timeout_s=60.0)
    net = MemoryNet(nursery, echo_backend)
    client_side = await open_memory_client(nursery, config, net, lockstep=True)  # no buffer
    h2_client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    h2_client.initiate_connection()
    await client_side.send_all(h2_client.data_to_send())
    await trio.sleep(61)  # we never read: the proxy's first write cannot complete
    # It gave up and closed: reading now finds at most what it had offered, then the end.
    # (Had it not given up, it would go on serving and never close.)
    with trio.fail_after(1):
        while await client_side.receive_some():
            pass


async def test_http2_client_that_stops_after_the_preface_is_dropped(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = make_config(("/", "http://127.0.0.1:9"), client_handshake_timeout_s=5.0)
    client = await open_memory_client(nursery, config, MemoryNet(nursery, echo_backend))
    started = trio.current_time()
    await client.send_all(PREFACE)  # the preface, but no SETTINGS
    while await client.receive_some():  # our SETTINGS, then the close
        pass
    # Dropped at the timeout, after a lingering close of at most 2 s.
    assert 5.0 <= trio.current_time() - started <= 5.0 + 2.0


@pytest.mark.parametrize("pad_length", [None, 0], ids=["plain", "padded"])
async def test_empty_data_frame_flood_closes_the_connection(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, pad_length: int | None
) -> None:
    config = make_config(("/", "http://127.0.0.1:9"), max_empty_frames=50)
    net = MemoryNet(nursery, echo_backend)
    async with open_h2_client(await open_memory_client(nursery, config, net)) as client:
        ws = await client.websocket("/")
        for _ in range(60):
            client.conn.send_data(ws.state.stream_id, b"", pad_length=pad_length)
        await client.flush()
        await client.wait_for(lambda: client.terminated is not None)
        assert client.terminated is not None
        assert client.terminated.error_code == ENHANCE_YOUR_CALM


async def test_ping_flood_from_a_client_that_never_reads_stays_bounded(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # A connection without a request is told to go after client_handshake_timeout_s (see
    # test_client_fairness.py); here the flood must be bounded while the connection lives.
    config = make_config(("/", "http://127.0.0.1:9"), client_handshake_timeout_s=60.0)
    net = MemoryNet(nursery, echo_backend)
    client_side = await open_memory_client(nursery, config, net, lockstep=True)  # writes block
    h2_client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    h2_client.initiate_connection()
    await client_side.send_all(h2_client.data_to_send())
    ping = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + b"12345678"  # 17 bytes, ACK is 17 too
    accepted = 0
    with trio.move_on_after(30):  # virtual time; the proxy stops reading long before
        while accepted < 20 * 1024 * 1024:
            await client_side.send_all(ping * 1000)
            accepted += len(ping) * 1000
    # The proxy read (and queued ACKs for) about 1 MiB, plus one read, then stopped
    # reading because we take none of its output: its memory for us stayed bounded.
    assert accepted <= 1024 * 1024 + 65536 + 17 * 1000


async def test_connection_window_updates_wake_only_streams_waiting_for_window(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clients send WINDOW_UPDATE on stream 0 all the time (a hostile one by the million):
    each wakes only the senders that found a window shut, not every stream."""
    wakes: list[int] = []
    real_wake = H2Stream.wake_writer

    def counting_wake(self: H2Stream) -> None:
        wakes.append(self.stream_id)
        real_wake(self)

    monkeypatch.setattr(H2Stream, "wake_writer", counting_wake)
    net = MemoryNet(nursery, echo_backend)
    config = make_config(("/", "http://127.0.0.1:9"))
    async with open_h2_client(await open_memory_client(nursery, config, net)) as client:
        tunnels = [await client.websocket("/") for _ in range(10)]
        for _ in range(200):
            client.conn.increment_flow_control_window(1)
        await client.flush()
        await client.ping()  # the updates were handled
        assert wakes == []
        ws = tunnels[0]
        await client.send_data(ws.state, b"still echoing")
        await client.wait_for(lambda: bytes(ws.state.data) == b"still echoing")
