"""An HTTP/2 backend that floods control frames, or sends faster than a client reads.

Floods of WINDOW_UPDATE and PING (bounded: 10,000 each) leave the tunnel working and
every PING answered. A backend sending to a client that does not read is held by flow
control end to end: from the backend's own count, it never sent more than the stream
window we advertised plus what the client took, while a neighbour tunnel on the same
backend connection still echoes (no head-of-line stall).
"""

from __future__ import annotations

import os
import struct

import h2.events
import pytest
import trio

from tests.conftest import StartProxy
from tests.helpers.h2_backend_setup import echoes, h2_client, proxy_to
from tests.helpers.scripted_h2_backend import H2Peer, PeerStream, ScriptedH2Backend

pytestmark = pytest.mark.socket

FLOOD = 10_000
WINDOW = 65_535  # the proxy's stream window toward the backend, and the client's
SIZE = 1024 * 1024


async def test_window_update_and_ping_floods_leave_the_tunnel_working(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    backend = ScriptedH2Backend()
    address = await proxy_to(nursery, start_proxy, backend)
    with trio.fail_after(20):
        async with h2_client(address) as client:
            ws = await client.websocket("/flooded")
            await echoes(ws)
            peer = backend.peers[0]
            (stream_id,) = peer.streams
            for index in range(FLOOD):
                peer.conn.increment_flow_control_window(1)
                peer.conn.increment_flow_control_window(1, stream_id)
                peer.conn.ping(struct.pack(">Q", index))
            await peer.flush()
            await echoes(ws, "after the flood")
            await peer.wait_until(lambda: len(peer.events_of(h2.events.PingAckReceived)) >= FLOOD)
            await echoes(ws, "still")
            await echoes(await client.websocket("/next"))
    acks = peer.events_of(h2.events.PingAckReceived)
    assert sorted(struct.unpack(">Q", ack.ping_data)[0] for ack in acks) == list(range(FLOOD))
    assert len(backend.peers) == 1
    assert not peer.closed.is_set()


async def test_a_client_that_does_not_read_holds_only_its_own_stream(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    payload = os.urandom(SIZE)
    message = b"\x82\x7f" + struct.pack(">Q", SIZE) + payload  # one unmasked binary frame

    async def firehose(peer: H2Peer, state: PeerStream) -> None:
        await peer.respond(state.stream_id, [(b":status", b"200")])
        await peer.send_data(state.stream_id, message)

    backend = ScriptedH2Backend({"/firehose": firehose})
    address = await proxy_to(nursery, start_proxy, backend, stream_window_bytes=WINDOW)
    with trio.fail_after(20):
        async with h2_client(address) as client:
            healthy = await client.websocket("/ok")
            await echoes(healthy)
            slow = await client.websocket("/firehose", auto_ack=False)
            assert slow.status == 200
            peer = backend.peers[0]
            (state,) = [s for s in peer.streams.values() if s.path == "/firehose"]
            # The client's window is full; ours toward the backend fills up behind it.
            await client.wait_for(lambda: len(slow.state.data) >= WINDOW)
            await peer.wait_until(
                lambda: state.sent > 0 and peer.conn.local_flow_control_window(state.stream_id) == 0
            )
            for round_trip in range(3):
                await echoes(healthy, f"no stall {round_trip}")
            taken = len(slow.state.data)
            assert taken == WINDOW  # the client's window, no more
            assert peer.conn.local_flow_control_window(state.stream_id) == 0
            assert WINDOW <= state.sent <= WINDOW + taken
            # The client reads: the rest comes, bounded the same way all along.
            for _ in range(SIZE // 512):  # each round brings at least one DATA frame
                if len(slow.state.data) >= len(message):
                    break
                before = len(slow.state.data)
                assert state.sent <= WINDOW + before
                await client.ack(slow.state)
                await client.wait_for(lambda before=before: len(slow.state.data) > before)
            await echoes(healthy, "done")
    assert bytes(slow.state.data) == message
    assert state.sent == len(message)
    assert len(backend.peers) == 1
