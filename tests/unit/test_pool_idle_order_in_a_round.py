"""The pool's idle connections stay in the order they went idle, oldest first, when one
poller round gives several back (``idle_connections.py``: the reaper looks at the front
only).

In one ``BackendPoller`` round a whole answer's end parks its connection with the round's
reading (``round_time``, taken at the round's first such end), an answer that ended through
the wire (``PolledRequest._stop``) parks its own with a reading taken then, later; a later
whole answer of the same round parks its connection with the round's reading again. The
reaper must still close each connection when its own keep-alive ends.
"""

from __future__ import annotations

import socket

import trio
import trio.testing

from h2ws_proxy.backend.kept_connection import BackendConnection
from h2ws_proxy.backend.pool import BackendPool
from h2ws_proxy.config import Limits
from h2ws_proxy.transport.poller import BackendPoller
from h2ws_proxy.transport.socket_stream import LeanSocketStream
from tests.unit.test_backend_pool import ADDRESS, KEEPALIVE_S, no_dial


async def test_connections_given_back_in_one_round_expire_each_at_its_own_keepalive(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    pool = BackendPool(Limits(backend_keepalive_s=KEEPALIVE_S), no_dial)
    poller = BackendPoller()
    pairs = [socket.socketpair() for _ in range(3)]
    closed_at: dict[str, float] = {}
    try:
        nursery.start_soon(pool.reap)
        await trio.sleep(1.0)
        connections = {
            name: BackendConnection(address=ADDRESS, stream=LeanSocketStream(ours), pool=pool)
            for name, (ours, _theirs) in zip("abc", pairs, strict=True)
        }
        # One round (no yield between the three): the round's reading, then a reading of
        # its own a moment later (the round's processing, made visible by the jump), then
        # the round's reading again.
        round_time = poller.now()
        pool.release_now(connections["a"], poller, now=round_time)
        autojump_clock.jump(0.5)
        pool.release_now(connections["b"], poller)
        pool.release_now(connections["c"], poller, now=round_time)
        idle_since = {name: c.idle_since for name, c in connections.items()}
        while len(closed_at) < 3 and trio.current_time() < 20.0:
            for name, (ours, _theirs) in zip("abc", pairs, strict=True):
                if ours.fileno() == -1 and name not in closed_at:
                    closed_at[name] = trio.current_time()
            await trio.sleep(0.01)
        late = {
            name: round(closed_at[name] - (idle_since[name] + KEEPALIVE_S), 3) for name in "abc"
        }
        # (Seen every 10 ms: each closed within 20 ms of its expiry, none a round later.)
        assert all(0.0 <= late[name] <= 0.02 for name in "abc"), (late, closed_at, idle_since)
    finally:
        poller.close()
        for ours, theirs in pairs:
            ours.close()
            theirs.close()
