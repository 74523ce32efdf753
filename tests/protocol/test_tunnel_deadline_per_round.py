"""A polled tunnel's idle deadline moves with one clock reading per client read and per
poller round, not one per message.

A client read's tunnels share one reading, taken by the first that sent bytes on
(``BackendPoller.read_time``, set back after each read); a poller round lists the tunnels
whose bytes it moved (``BackendPoller.moved``) and moves their deadlines once its output
went, from one reading taken then (``rearm_moved``, ``Relay.rearm``). These check that each
direction alone still moves the deadline, that every tunnel of a read of several tunnels'
frames moves its own, and that a tunnel that moved bytes and ended within one round leaves
no timer armed. Socketpair backends (the polled path), raw frames in memory, a virtual
clock.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import hpack
import pytest
import trio
import trio.testing

from h2ws_proxy.relay.relay_state import TIMER_SLACK_S
from h2ws_proxy.transport.poller import BackendPoller
from tests.helpers.backends import BackendConnection
from tests.helpers.frames import frame
from tests.helpers.memory import MemoryNet
from tests.helpers.raw_h2 import GOOD, raw_client

DATA, HEADERS, RST_STREAM = 0x0, 0x1, 0x3
END_STREAM, END_HEADERS = 0x1, 0x4
CANCEL = 0x8
IDLE_S = 60.0
#: A masked WebSocket binary frame of 2 bytes (client to backend) and an unmasked one.
CLIENT_MESSAGE = b"\x82\x82\x00\x00\x00\x00hi"
BACKEND_MESSAGE = b"\x82\x02hi"
BACKEND_CLOSE = b"\x88\x02\x03\xe8"
CLIENT_CLOSE = b"\x88\x82\x00\x00\x00\x00\x03\xe8"


class ProxyFrames:
    """Reads the proxy's frames in the background: when each stream was reset or ended."""

    def __init__(self) -> None:
        self.resets: dict[int, float] = {}
        self.ended: dict[int, float] = {}
        self.data: dict[int, bytes] = {}
        self.changed = trio.Event()

    async def run(self, stream: trio.abc.ReceiveStream) -> None:
        buffer = b""
        while data := await stream.receive_some():
            buffer += data
            while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
                end = 9 + int.from_bytes(buffer[:3], "big")
                kind, flags = buffer[3], buffer[4]
                stream_id = int.from_bytes(buffer[5:9], "big")
                if kind == RST_STREAM:
                    self.resets.setdefault(stream_id, trio.current_time())
                elif kind == DATA:
                    self.data[stream_id] = self.data.get(stream_id, b"") + buffer[9:end]
                    if flags & END_STREAM:
                        self.ended.setdefault(stream_id, trio.current_time())
                buffer = buffer[end:]
                self.changed.set()
                self.changed = trio.Event()

    async def wait_for(self, done: Any) -> None:
        with trio.fail_after(5 * IDLE_S):
            while not done():
                await self.changed.wait()


async def open_tunnels(
    nursery: trio.Nursery, net: MemoryNet, stream_ids: list[int]
) -> tuple[trio.abc.HalfCloseableStream, ProxyFrames]:
    client = await raw_client(nursery, net, idle_timeout_s=IDLE_S)
    frames = ProxyFrames()
    nursery.start_soon(frames.run, client)
    encoder = hpack.Encoder()
    for stream_id in stream_ids:
        await client.send_all(frame(HEADERS, END_HEADERS, stream_id, encoder.encode(GOOD)))
    await trio.testing.wait_all_tasks_blocked()
    return client, frames


async def sink(stream: trio.abc.HalfCloseableStream) -> None:
    """Accepts the upgrade, then takes whatever comes and sends nothing."""
    conn = BackendConnection(stream)
    await conn.accept(await conn.read_upgrade())
    while await conn.receive():
        pass


async def test_the_clients_bytes_alone_move_the_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Client → backend only: each client read that carried bytes moves the deadline, from
    its own reading (the frontend's read loop sets the last one back)."""
    net = MemoryNet(nursery, sink, backend_sockets=True)
    client, frames = await open_tunnels(nursery, net, [1])
    for _ in range(3):
        await trio.sleep(IDLE_S * 2 / 3)
        await client.send_all(frame(DATA, 0, 1, CLIENT_MESSAGE))
        await trio.testing.wait_all_tasks_blocked()
        assert 1 not in frames.resets
    active = trio.current_time()
    await frames.wait_for(lambda: 1 in frames.resets)
    assert IDLE_S <= frames.resets[1] - active <= IDLE_S + TIMER_SLACK_S


async def test_the_backends_bytes_alone_move_the_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Backend → client only: the deadline moves after each poller round that carried
    bytes."""
    sent_at: list[float] = []

    async def talker(stream: trio.abc.HalfCloseableStream) -> None:
        conn = BackendConnection(stream)
        await conn.accept(await conn.read_upgrade())
        for _ in range(3):
            await trio.sleep(IDLE_S * 2 / 3)
            await stream.send_all(BACKEND_MESSAGE)
            sent_at.append(trio.current_time())
        while await conn.receive():
            pass

    _client, frames = await open_tunnels(
        nursery, MemoryNet(nursery, talker, backend_sockets=True), [1]
    )
    await frames.wait_for(lambda: 1 in frames.resets)
    assert len(sent_at) == 3
    assert frames.data[1] == BACKEND_MESSAGE * 3
    assert IDLE_S <= frames.resets[1] - sent_at[-1] <= IDLE_S + TIMER_SLACK_S


async def test_every_tunnel_of_a_read_moves_its_own_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """One client read carries messages for tunnels 1 and 5 (not 3): both of theirs move,
    3's does not."""
    client, frames = await open_tunnels(
        nursery, MemoryNet(nursery, sink, backend_sockets=True), [1, 3, 5]
    )
    opened = trio.current_time()
    await trio.sleep(IDLE_S / 2)
    await client.send_all(frame(DATA, 0, 1, CLIENT_MESSAGE) + frame(DATA, 0, 5, CLIENT_MESSAGE))
    active = trio.current_time()
    await frames.wait_for(lambda: len(frames.resets) == 3)
    assert set(frames.resets.values()) <= {frames.resets[1], frames.resets[3], frames.resets[5]}
    assert IDLE_S <= frames.resets[3] - opened <= IDLE_S + TIMER_SLACK_S
    for stream_id in (1, 5):
        assert IDLE_S <= frames.resets[stream_id] - active <= IDLE_S + TIMER_SLACK_S
    assert list(frames.resets) == [3, 1, 5]


@pytest.fixture
def pollers(monkeypatch: pytest.MonkeyPatch) -> list[BackendPoller]:
    """Every backend poller made while the test runs."""
    made: list[BackendPoller] = []
    init = BackendPoller.__init__

    def kept(poller: BackendPoller, **options: Any) -> None:
        init(poller, **options)
        made.append(poller)

    monkeypatch.setattr(BackendPoller, "__init__", kept)
    return made


async def test_a_tunnel_that_moved_bytes_and_ended_in_one_round_leaves_no_timer(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, pollers: list[BackendPoller]
) -> None:
    """The client ended its side; later the backend's last message, its Close and its FIN
    come together: one round reads them, ends the tunnel (its timer disarmed), and the
    round's end must not arm that timer again."""

    async def last_words(stream: trio.abc.HalfCloseableStream) -> None:
        conn = BackendConnection(stream)
        await conn.accept(await conn.read_upgrade())
        while await conn.receive():  # until the client's end (its Close, then the FIN)
            pass
        await trio.sleep(2 * TIMER_SLACK_S)  # past the slack: the round's end re-arms
        assert isinstance(stream, trio.SocketStream)
        os.write(stream.socket.fileno(), BACKEND_MESSAGE + BACKEND_CLOSE)  # (no checkpoint)
        stream.socket.shutdown(socket.SHUT_WR)

    client, frames = await open_tunnels(
        nursery, MemoryNet(nursery, last_words, backend_sockets=True), [1]
    )
    (poller,) = pollers
    assert poller.timers is not None
    assert poller.timers.armed() == 1  # the tunnel's idle timer
    await client.send_all(frame(DATA, END_STREAM, 1, CLIENT_CLOSE))
    await frames.wait_for(lambda: 1 in frames.ended)
    assert frames.data[1] == BACKEND_MESSAGE + BACKEND_CLOSE
    await trio.testing.wait_all_tasks_blocked()
    assert 1 not in frames.resets
    assert poller.timers.armed() == 0
    assert not poller.moved
