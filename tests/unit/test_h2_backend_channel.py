"""H2BackendConnection and its H2Channels in memory, against the ``h2`` library as server.

Credit goes back only as the owner comes back for more; sending waits for the windows;
a close resets (CANCEL) and hands back the connection credit of what was never read; the
end of a close handshake resets with NO_ERROR; refused streams are flagged for a retry;
a peer that floods PINGs and reads nothing does not grow our output without bound.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from h2ws_proxy.backend.h2.channel import H2Channel
from h2ws_proxy.backend.h2.connection import HIGH_WATER, READ_SIZE, H2BackendConnection
from tests.helpers.frames import frame
from tests.helpers.h2_backend_setup import CANCEL, NO_ERROR, REFUSED_STREAM
from tests.helpers.scripted_h2_backend import (
    GOAWAY,
    PING,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    H2Peer,
    PeerStream,
    ScriptedH2Backend,
)

WINDOW = 65_535
CONNECT = [
    (b":method", b"CONNECT"),
    (b":protocol", b"websocket"),
    (b":scheme", b"http"),
    (b":path", b"/"),
    (b":authority", b"backend.test"),
]


async def accept(peer: H2Peer, state: PeerStream) -> None:
    await peer.respond(state.stream_id, [(b":status", b"200")])


@asynccontextmanager
async def connected() -> AsyncIterator[tuple[H2BackendConnection, ScriptedH2Backend]]:
    """A connection whose server (one :class:`H2Peer`) sent its SETTINGS."""
    ours, theirs = trio.testing.memory_stream_pair()
    backend = ScriptedH2Backend({"/": accept})
    connection = H2BackendConnection(
        ours,
        "backend.test",
        stream_window=WINDOW,
        max_header_list_size=65536,
        idle_timeout_s=60,
        ping_interval_s=60,
        ping_timeout_s=60,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(backend.serve_connection, theirs)
        nursery.start_soon(connection.run)
        with trio.fail_after(5):
            await connection.settings_received.wait()
        yield connection, backend
        nursery.cancel_scope.cancel()


async def opened(
    connection: H2BackendConnection, backend: ScriptedH2Backend
) -> tuple[H2Channel, H2Peer, PeerStream]:
    channel = connection.open_channel(CONNECT)
    await channel.next_head()
    peer = backend.peers[0]
    return channel, peer, peer.streams[channel.stream_id]


def updates(peer: H2Peer, stream_id: int) -> list[int]:
    return [struct.unpack(">I", f.payload)[0] for f in peer.frames_of(WINDOW_UPDATE, stream_id)]


def resets(peer: H2Peer, stream_id: int) -> list[int]:
    return [struct.unpack(">I", f.payload)[0] for f in peer.frames_of(RST_STREAM, stream_id)]


async def test_credit_goes_back_only_when_receive_some_comes_back() -> None:
    async with connected() as (connection, backend):
        channel, peer, state = await opened(connection, backend)
        await peer.send_data(state.stream_id, b"a" * 40_000)
        await trio.testing.wait_all_tasks_blocked()
        assert updates(peer, state.stream_id) == []  # queued, not taken: no credit
        chunk = await channel.receive_some(40_000)
        await trio.testing.wait_all_tasks_blocked()
        assert updates(peer, state.stream_id) == []  # handed out, not written on yet
        taken = len(chunk)
        for _ in range(40_000):
            if taken >= 40_000:
                break
            chunk = await channel.receive_some()
            taken += len(chunk)
        await trio.testing.wait_all_tasks_blocked()
        # Every chunk but the last came back for more: that credit went (over half the
        # window, so in one WINDOW_UPDATE); the last one's waits for the next call.
        assert updates(peer, state.stream_id) == [40_000 - len(chunk)]


async def test_send_all_waits_for_the_stream_window() -> None:
    async with connected() as (connection, backend):
        channel, peer, state = await opened(connection, backend)
        peer.auto_ack = False
        peer.conn.update_settings({4: 1000})  # INITIAL_WINDOW_SIZE: 1000 for our sends
        await peer.flush()
        await peer.wait_until(lambda: connection.session.unacknowledged_settings == 0)
        await trio.testing.wait_all_tasks_blocked()
        done = trio.Event()

        async def send() -> None:
            await channel.send_all(b"b" * 5000)
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            await peer.wait_until(lambda: len(state.data) >= 1000)
            await trio.testing.wait_all_tasks_blocked()
            assert len(state.data) == 1000
            assert not done.is_set()
            peer.conn.increment_flow_control_window(4000, state.stream_id)
            await peer.flush()
            with trio.fail_after(5):
                await done.wait()
        await peer.wait_until(lambda: len(state.data) >= 5000)
        assert bytes(state.data) == b"b" * 5000


async def test_close_now_resets_with_cancel_and_credits_the_unread_bytes() -> None:
    async with connected() as (connection, backend):
        channel, peer, state = await opened(connection, backend)
        credited: list[tuple[int, int]] = []
        acknowledge = connection.session.acknowledge_received_data

        def spy(stream_id: int, size: int) -> None:
            credited.append((stream_id, size))
            acknowledge(stream_id, size)

        connection.session.acknowledge_received_data = spy  # type: ignore[method-assign]
        await peer.send_data(state.stream_id, b"c" * 30_000)
        await trio.testing.wait_all_tasks_blocked()
        channel.close_now()
        await peer.wait_until(lambda: state.reset_code is not None)
        assert state.reset_code == CANCEL
        assert credited == [(state.stream_id, 30_000)]
        assert connection.open_channels == 0
        with pytest.raises(trio.ClosedResourceError):
            await channel.send_all(b"x")


async def test_close_handshake_done_resets_with_no_error() -> None:
    async with connected() as (connection, backend):
        channel, peer, state = await opened(connection, backend)
        channel.close_handshake_done()
        await peer.wait_until(lambda: state.reset_code is not None)
        assert resets(peer, state.stream_id) == [NO_ERROR]
        assert channel.finished
        assert connection.open_channels == 0
        assert await channel.receive_some() == b""
        channel.close_now()  # nothing more is sent
        await trio.testing.wait_all_tasks_blocked()
        assert resets(peer, state.stream_id) == [NO_ERROR]


async def test_refused_streams_are_flagged() -> None:
    async with connected() as (connection, backend):
        backend.handlers["/"] = refuse
        channel = connection.open_channel(CONNECT)
        with pytest.raises(trio.BrokenResourceError):
            await channel.next_head()
        assert channel.refused
        assert channel.reset_code == REFUSED_STREAM
        assert connection.has_room()


async def refuse(peer: H2Peer, state: PeerStream) -> None:
    peer.conn.reset_stream(state.stream_id, REFUSED_STREAM)
    await peer.flush()


async def test_streams_above_goaway_are_refused_and_older_ones_go_on() -> None:
    async with connected() as (connection, backend):
        old, peer, state = await opened(connection, backend)
        backend.handlers["/"] = ignore
        new = connection.open_channel(CONNECT)
        await peer.wait_until(lambda: new.stream_id in peer.streams)
        last = struct.pack(">II", old.stream_id, NO_ERROR)
        await peer.send_frame(GOAWAY, 0, 0, last)
        with pytest.raises(trio.BrokenResourceError):
            await new.next_head()
        assert new.refused
        assert not connection.has_room()
        await peer.send_data(state.stream_id, b"still", end_stream=True)
        assert await old.receive_some() == b"still"
        assert not old.broken


async def ignore(peer: H2Peer, state: PeerStream) -> None:
    pass


async def test_a_ping_flood_from_a_peer_that_does_not_read_stays_bounded() -> None:
    """Our PING answers are output like any other: while the peer reads none of it, we
    stop reading its PINGs, and what waits to be written stays near HIGH_WATER."""
    ours, theirs = trio.testing.lockstep_stream_pair()  # no buffer: unread means unsent
    connection = H2BackendConnection(
        ours,
        "backend.test",
        stream_window=WINDOW,
        max_header_list_size=65536,
        idle_timeout_s=60,
        ping_interval_s=60,
        ping_timeout_s=60,
    )
    pings = b"".join(frame(PING, 0, 0, struct.pack(">Q", index)) for index in range(30_000))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection.run)
        nursery.start_soon(theirs.send_all, frame(SETTINGS, 0, 0, b"") + pings)
        await trio.testing.wait_all_tasks_blocked()
        assert len(connection.session.outbound) <= HIGH_WATER + READ_SIZE
        nursery.cancel_scope.cancel()
