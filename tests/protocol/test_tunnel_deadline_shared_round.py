"""One poller round serves several tunnels' backends, one of which ends in that round: the
others' deadlines move from the round (``BackendPoller.moved``), the ended one leaves no
timer; one client read carries messages for two tunnels and a reset for a third between
them: the two move from the read, the reset one leaves no timer."""

from __future__ import annotations

import os
import socket

import hpack
import trio
import trio.testing

from h2ws_proxy.relay.relay_state import TIMER_SLACK_S
from h2ws_proxy.transport.poller import BackendPoller
from tests.helpers.backends import BackendConnection
from tests.helpers.frames import frame
from tests.helpers.memory import MemoryNet
from tests.helpers.raw_h2 import GOOD, raw_client
from tests.protocol.test_tunnel_deadline_per_round import (
    BACKEND_CLOSE,
    BACKEND_MESSAGE,
    CLIENT_CLOSE,
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    IDLE_S,
    ProxyFrames,
    pollers,
)

__all__ = ["pollers"]  # the fixture, shared with the per-tunnel tests


async def test_three_backends_in_one_round_one_ends(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, pollers: list[BackendPoller]
) -> None:
    backends: list[socket.socket] = []

    async def held(stream: trio.abc.HalfCloseableStream) -> None:
        conn = BackendConnection(stream)
        await conn.accept(await conn.read_upgrade())
        assert isinstance(stream, trio.SocketStream)
        backends.append(stream.socket)
        await trio.sleep_forever()

    net = MemoryNet(nursery, held, backend_sockets=True)
    client = await raw_client(nursery, net, idle_timeout_s=IDLE_S)
    frames = ProxyFrames()
    nursery.start_soon(frames.run, client)
    encoder = hpack.Encoder()
    for stream_id in (1, 3, 5):  # one at a time: backends[i] is tunnel (1, 3, 5)[i]
        await client.send_all(frame(HEADERS, END_HEADERS, stream_id, encoder.encode(GOOD)))
        await trio.testing.wait_all_tasks_blocked()
    assert len(backends) == 3
    (poller,) = pollers
    assert poller.timers is not None
    assert poller.timers.armed() == 3
    await trio.sleep(IDLE_S / 2)
    await client.send_all(frame(DATA, END_STREAM, 3, CLIENT_CLOSE))
    await trio.testing.wait_all_tasks_blocked()
    rounds = poller.rounds
    # All three ready before the poller wakes: one round reads them.
    os.write(backends[0].fileno(), BACKEND_MESSAGE)
    os.write(backends[1].fileno(), BACKEND_MESSAGE + BACKEND_CLOSE)
    backends[1].shutdown(socket.SHUT_WR)
    os.write(backends[2].fileno(), BACKEND_MESSAGE)
    active = trio.current_time()
    await frames.wait_for(lambda: 3 in frames.ended)
    await trio.testing.wait_all_tasks_blocked()
    assert poller.rounds == rounds + 1
    assert frames.data[1] == BACKEND_MESSAGE
    assert frames.data[5] == BACKEND_MESSAGE
    assert frames.data[3] == BACKEND_MESSAGE + BACKEND_CLOSE
    assert poller.timers.armed() == 2
    assert not getattr(poller, "moved", [])
    await frames.wait_for(lambda: 1 in frames.resets and 5 in frames.resets)
    assert 3 not in frames.resets
    for stream_id in (1, 5):
        assert IDLE_S <= frames.resets[stream_id] - active <= IDLE_S + TIMER_SLACK_S


async def test_a_read_with_a_reset_between_two_tunnels_messages(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, pollers: list[BackendPoller]
) -> None:
    """One client read: a message on 1, RST_STREAM on 3, a message on 5 (the slow path
    after the reset): 1 and 5 move their deadlines from the read, 3 leaves no timer."""
    from tests.protocol.test_tunnel_deadline_per_round import CLIENT_MESSAGE, open_tunnels, sink

    client, frames = await open_tunnels(
        nursery, MemoryNet(nursery, sink, backend_sockets=True), [1, 3, 5]
    )
    (poller,) = pollers
    assert poller.timers is not None
    assert poller.timers.armed() == 3
    await trio.sleep(IDLE_S / 2)
    rst = frame(0x3, 0, 3, (8).to_bytes(4, "big"))
    await client.send_all(
        frame(DATA, 0, 1, CLIENT_MESSAGE) + rst + frame(DATA, 0, 5, CLIENT_MESSAGE)
    )
    active = trio.current_time()
    await trio.testing.wait_all_tasks_blocked()
    assert poller.timers.armed() == 2
    await frames.wait_for(lambda: 1 in frames.resets and 5 in frames.resets)
    for stream_id in (1, 5):
        assert IDLE_S <= frames.resets[stream_id] - active <= IDLE_S + TIMER_SLACK_S
    assert 3 not in frames.resets
