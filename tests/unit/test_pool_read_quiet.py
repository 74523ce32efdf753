"""The pool's quiet check once per client read (backend/pool.py): a take given the read's
ready descriptors (``BackendPoller.ready_descriptors``, asked after the read's reading) skips
its own ``poll(0)`` only for a connection parked in that poller since before the reading
whose descriptor was not ready; everything else is checked alone, as before.

Real socketpairs and a poller that is not run (its rounds would drop what the tests want
the takes to meet). A connection never checked alone has no ``quiet_poll`` set: that is how
these tests see which takes checked.
"""

from __future__ import annotations

import socket

import trio

from h2ws_proxy.config import Limits
from h2ws_proxy.transport.poller import BackendPoller
from tests.unit.test_pool_quiet_takes import ADDRESS, STRAY, Parked, closed, parked, poller

__all__ = ["parked", "poller"]  # (the fixtures, used by name)

#: The read's reading in these tests; connections parked before it are made older.
READ_AT = 1000.0


def age(*connections: object) -> None:
    for connection in connections:
        connection.idle_since = READ_AT - 1.0  # type: ignore[attr-defined]


async def test_a_reads_takes_of_quiet_parked_connections_check_nothing_alone(
    parked: Parked, poller: BackendPoller
) -> None:
    """Parked before the read, none ready: each take is quiet by the read's one check."""
    first, second, third = parked.park(poller), parked.park(poller), parked.park(poller)
    age(first, second, third)
    ready = poller.ready_descriptors()
    assert ready == set()
    pool = parked.pool
    taken = [pool.take_idle_now(ADDRESS, poller, READ_AT, ready) for _ in range(3)]
    assert taken == [third, second, first]
    assert [c.quiet_poll for c in taken] == [None, None, None]
    assert [closed(c) for c in taken] == [False, False, False]


async def test_a_ready_descriptor_is_checked_alone_and_dropped_the_others_reused(
    parked: Parked, poller: BackendPoller
) -> None:
    """The backend spoke on one parked connection and closed another before the read: the
    read's check finds both ready, their takes check them alone and drop them; the quiet
    one is reused without a check of its own."""
    quiet, spoken, ended = parked.park(poller), parked.park(poller), parked.park(poller)
    age(quiet, spoken, ended)
    parked.backend_side[spoken].send(STRAY)
    parked.backend_side[ended].close()
    ready = poller.ready_descriptors()
    assert ready == {spoken.fd, ended.fd}
    pool = parked.pool
    assert pool.take_idle_now(ADDRESS, poller, READ_AT, ready) is quiet
    assert quiet.quiet_poll is None
    assert [closed(spoken), closed(ended)] == [True, True]
    assert pool.take_idle_now(ADDRESS, poller, READ_AT, ready) is None


async def test_a_connection_parked_since_the_reads_reading_is_checked_alone(
    parked: Parked, poller: BackendPoller
) -> None:
    """Taken in a read, given back in the same read (its ``idle_since`` then no earlier
    than the read's reading) and spoken on: the read's check, asked before it was parked
    again, does not answer for it; its next take checks it and drops it."""
    connection = parked.park(poller)
    connection.idle_since = trio.current_time() - 1.0
    now = trio.current_time()
    ready = poller.ready_descriptors()
    pool = parked.pool
    assert pool.take_idle_now(ADDRESS, poller, now, ready) is connection
    pool.release_now(connection, poller)
    assert connection.idle_since >= now
    parked.backend_side[connection].send(STRAY)
    assert pool.take_idle_now(ADDRESS, poller, now, ready) is None
    assert closed(connection)


async def test_a_connection_parked_in_another_poller_is_checked_alone(
    parked: Parked, poller: BackendPoller
) -> None:
    """The read's check covers its own poller's set only: one parked elsewhere, spoken on,
    is not among the read's ready descriptors and is still checked (and dropped)."""
    elsewhere = BackendPoller()
    try:
        theirs = parked.park(elsewhere)
        age(theirs)
        parked.backend_side[theirs].send(STRAY)
        ready = poller.ready_descriptors()
        assert ready == set()
        assert parked.pool.take_idle_now(ADDRESS, poller, READ_AT, ready) is None
        assert closed(theirs)
    finally:
        elsewhere.close()


async def test_a_full_ready_array_answers_nothing(parked: Parked, poller: BackendPoller) -> None:
    """As many ready as the array holds: some may be left out, so the answer is "not
    known" (every take of the read checks alone), never a partial set."""
    quiet, spoken, ended = parked.park(poller), parked.park(poller), parked.park(poller)
    parked.backend_side[spoken].send(STRAY)
    parked.backend_side[ended].close()
    poller.ready_most = 2
    assert poller.ready_descriptors() is None
    poller.ready_most = 3
    assert poller.ready_descriptors() == {spoken.fd, ended.fd}
    assert not closed(quiet)


async def test_asking_which_are_ready_leaves_them_ready_for_the_pollers_round(
    poller: BackendPoller,
) -> None:
    """Level-triggered: the read's check takes nothing from the poller's own round, which
    still calls the ready descriptor's handler (a request in flight whose answer came)."""

    class Recorder:
        watched = False

        def __init__(self) -> None:
            self.readable = 0

        def on_readable(self) -> None:
            self.readable += 1

        def on_error(self) -> None:
            raise AssertionError("not expected")

        def on_closed(self) -> None:
            pass

    pairs = [socket.socketpair() for _ in range(2)]
    try:
        recorders = [Recorder(), Recorder()]
        for (ours, _theirs), recorder in zip(pairs, recorders, strict=True):
            poller.register(ours.fileno(), recorder)
        pairs[1][1].send(b"an answer")
        assert poller.ready_descriptors() == {pairs[1][0].fileno()}
        assert poller.ready_descriptors() == {pairs[1][0].fileno()}  # (still ready)
        poller.dispatch()
        assert [recorder.readable for recorder in recorders] == [0, 1]
        for ours, _theirs in pairs:
            poller.unregister(ours.fileno())
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()


async def test_a_closed_poller_answers_nothing(poller: BackendPoller) -> None:
    poller.close()
    assert poller.ready_descriptors() is None


async def test_the_pools_one_call_take_is_take_idle_nows_for_a_quiet_parked_connection(
    parked: Parked, poller: BackendPoller
) -> None:
    """``take_parked_quiet`` takes what ``take_idle_now`` would take without a check of its
    own, and leaves a ready connection for ``take_idle_now``, which checks it and drops it;
    it follows the keep-alive limit of a reload."""
    first, spoken = parked.park(poller), parked.park(poller)
    age(first, spoken)
    parked.backend_side[spoken].send(STRAY)
    pool = parked.pool
    ready = poller.ready_descriptors()
    assert ready == {spoken.fd}
    assert pool.take_parked_quiet(ADDRESS, poller, READ_AT, ready) is None
    assert [spoken.parked_in, closed(spoken)] == [poller, False]
    assert pool.take_idle_now(ADDRESS, poller, READ_AT, ready) is first
    assert closed(spoken)
    again = parked.park(poller)
    age(again)
    pool.apply_limits(Limits(backend_keepalive_s=0.5))
    assert pool.take_parked_quiet(ADDRESS, poller, READ_AT, set()) is None  # too old now
    pool.apply_limits(Limits(backend_keepalive_s=60.0))
    assert pool.take_parked_quiet(ADDRESS, poller, READ_AT, set()) is again
    assert [again.reused, again.quiet_poll, again.parked_in, closed(again)] == [
        True, None, None, False,
    ]  # fmt: skip
