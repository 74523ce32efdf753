"""The poller's round reading (``BackendPoller.round_time``): a lean GET's end takes the
clock once per round of handlers, and the pool's release and the record's end share it.

A reading never outlives its round: each round (``run``'s and ``dispatch``'s) starts with
none and clears what a handler took, so the next round reads the clock anew (the pool's
quiet check takes an ``idle_since`` below a client read's reading as parked before it).
"""

from __future__ import annotations

import socket

import trio
import trio.testing

from h2ws_proxy.transport.poller import BackendPoller


class _Taker:
    """Takes the round's reading as a lean GET's end does, and notes what it saw."""

    watched = False
    deadline = 0.0

    def __init__(self, poller: BackendPoller, sock: socket.socket) -> None:
        self.poller, self.sock = poller, sock
        self.seen: list[tuple[float, float]] = []

    def on_readable(self) -> None:
        self.sock.recv(64)
        poller = self.poller
        before = poller.round_time
        if poller.round_time < 0.0:
            poller.round_time = poller.now()
        self.seen.append((before, poller.round_time))

    def on_error(self) -> None:
        raise AssertionError("no error expected")

    def on_closed(self) -> None:
        pass


async def test_a_rounds_reading_is_taken_once_and_not_kept_into_the_next_round(
    autojump_clock: trio.testing.MockClock,
) -> None:
    poller = BackendPoller()
    pairs = [socket.socketpair() for _ in range(2)]
    takers = [_Taker(poller, ours) for ours, _ in pairs]
    try:
        for taker, (ours, _theirs) in zip(takers, pairs, strict=True):
            poller.register(ours.fileno(), taker)
        for _ours, theirs in pairs:
            theirs.send(b"x")
        poller.dispatch()  # one round, both ready: the first takes, the second shares
        assert sorted(before for taker in takers for before, _ in taker.seen) == [-1.0, 0.0]
        assert poller.round_time == -1.0  # cleared at the round's end
        autojump_clock.jump(1.0)
        pairs[0][1].send(b"y")
        poller.dispatch()
        assert takers[0].seen[-1] == (-1.0, 1.0)  # a new reading, not the last round's
        poller.round_time = 5.0  # one taken outside a round (a test's call) ...
        pairs[1][1].send(b"z")
        poller.dispatch()
        assert takers[1].seen[-1] == (-1.0, 1.0)  # ... is not the next round's
        poller.round_time = 5.0
        autojump_clock.jump(1.0)
        async with trio.open_nursery() as nursery:  # ``run``'s rounds, the same rule
            nursery.start_soon(poller.run)
            pairs[0][1].send(b"w")
            await trio.sleep(0.5)
            assert takers[0].seen[-1] == (-1.0, 2.0)
            assert poller.round_time == -1.0
            nursery.cancel_scope.cancel()
    finally:
        poller.close()
        for ours, theirs in pairs:
            ours.close()
            theirs.close()
