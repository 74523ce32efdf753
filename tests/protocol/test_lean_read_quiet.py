"""The lean start's quiet check once per client read (http2/lean_requests.py,
backend/pool.py): the read's first lean start asks the poller once which descriptors are
ready, right after the read's clock reading; the read's takes use that answer, and the next
read (``read_time`` cleared, as the frontend does per read) asks anew.

``LeanRequests`` driven directly, with real socketpairs as the backends' connections and a
poller that is not run. A connection never checked alone has no ``quiet_poll``.
"""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from h2ws_proxy.backend.kept_connection import BackendConnection
from h2ws_proxy.counters import ProxyCounters
from h2ws_proxy.http2.lean_requests import LeanRequests
from h2ws_proxy.http2.request_scope import CancelNoted
from h2ws_proxy.http2.stream import H2Stream
from h2ws_proxy.transport.poller import BackendPoller
from tests.protocol.test_lean_start_clock import QuietPort, lean_requests, timed_poller
from tests.protocol.test_repeated_request_intake import KeptServers

__all__ = ["timed_poller"]  # (the fixture, used by name)

STRAY = b"HTTP/1.1 408 Request Timeout\r\n\r\n"


class Read:
    """Lean starts of one route's GET, read by read, on fresh streams."""

    def __init__(self, kept: KeptServers, lean: LeanRequests) -> None:
        self.kept, self.lean = kept, lean
        self.request, self.route = kept.request(0)
        self._next_id = 1
        #: Every stream started on, in order.
        self.streams: list[H2Stream] = []

    def begin(self) -> None:
        self.lean.read_time = -1.0  # (what the frontend does per read)

    def start(self) -> bool:
        stream = H2Stream(
            self.lean.session,
            QuietPort(),  # type: ignore[arg-type]
            self._next_id,
            CancelNoted(),
            True,
        )
        self._next_id += 2
        self.streams.append(stream)
        return self.lean.try_start(stream, self.request, self.route)


def received_nothing(backend: socket.socket) -> bool:
    """The proxy closed its end without writing: an EOF, or a reset (it closed with the
    stray bytes unread)."""
    try:
        return backend.recv(65536) == b""
    except ConnectionResetError:
        return True


def idle_connections(kept: KeptServers) -> list[BackendConnection]:
    return kept.server.pool._idle.everything()


def count_asks(poller: BackendPoller, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    asks: list[int] = []
    original = poller.ready_descriptors

    def ready_descriptors() -> set[int] | None:
        asks.append(1)
        return original()

    monkeypatch.setattr(poller, "ready_descriptors", ready_descriptors)
    return asks


def parked_connections(
    kept: KeptServers, poller: BackendPoller, count: int
) -> tuple[Read, list[BackendConnection], list[socket.socket]]:
    """``count`` parked, one of them (the newest) taken by a first read that makes the
    poller's timers known; the others, oldest first, and every backend's end."""
    backends = [kept.park(0, poller) for _ in range(count)]
    read = Read(kept, lean_requests(kept, poller))
    read.begin()
    assert read.start()
    assert backends[-1].recv(65536).startswith(b"GET /0 ")
    return read, idle_connections(kept), backends


def closed(connection: BackendConnection) -> bool:
    return connection.stream.fileno() == -1  # type: ignore[attr-defined]


async def test_one_read_drops_stale_connections_and_reuses_the_others(
    timed_poller: BackendPoller,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Four parked; before the read, the backend closed the newest (the first take meets
    it) and another one (a later take meets it). The read's first take checks alone: it
    drops the stale one and takes the next, checked too. Its second start asks the poller
    once; that take meets the other stale one among the ready, checks it alone and drops
    it, and takes the last one with no check of its own. A third start finds none."""
    kept = KeptServers("http://127.0.0.1:9")
    try:
        read, parked, backends = parked_connections(kept, timed_poller, 5)
        oldest, second_stale, first_good, first_stale = parked
        autojump_clock.jump(1.0)  # the read comes after they were parked
        backends[3].close()  # the backend's idle close of ``first_stale``
        backends[1].close()  # and of ``second_stale``
        asks = count_asks(timed_poller, monkeypatch)
        read.begin()
        assert [read.start(), read.start(), read.start()] == [True, True, False]
        assert asks == [1]
        assert [closed(first_stale), closed(second_stale)] == [True, True]
        assert first_good.quiet_poll is not None  # the read's first take: checked alone
        assert oldest.quiet_poll is None  # quiet by the read's one check
        for backend in (backends[2], backends[0]):
            assert backend.recv(65536).startswith(b"GET /0 ")
    finally:
        kept.close()


async def test_bytes_that_came_after_one_read_are_met_by_the_next_reads_check(
    timed_poller: BackendPoller,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read's answer is its own: unsolicited bytes on a parked connection after read A's
    check are seen by read B's (asked anew), and that connection is not reused. A read of
    one start asks nothing (its take checks alone)."""
    kept = KeptServers("http://127.0.0.1:9")
    try:
        read, parked, backends = parked_connections(kept, timed_poller, 6)
        oldest, spoken, b_first, a_second, a_first = parked
        autojump_clock.jump(1.0)
        asks = count_asks(timed_poller, monkeypatch)
        read.begin()  # read A
        assert [read.start(), read.start()] == [True, True]
        assert a_second.quiet_poll is None
        backends[1].send(STRAY)  # after A's check
        read.begin()  # read B
        assert [read.start(), read.start()] == [True, True]
        assert asks == [1, 1]
        assert closed(spoken)
        assert received_nothing(backends[1])  # closed, never written to
        assert oldest.quiet_poll is None
        read.begin()  # read C: one start, none left
        assert not read.start()
        assert asks == [1, 1]
        assert [closed(c) for c in (oldest, b_first, a_second, a_first)] == [False] * 4
    finally:
        kept.close()


async def test_a_full_ready_array_makes_every_take_of_the_read_check_alone(
    timed_poller: BackendPoller,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """More ready than the array holds: the read's answer is "not known", so each of its
    takes checks its connection alone (the spoken-on ones are dropped, the quiet one is
    checked and taken)."""
    kept = KeptServers("http://127.0.0.1:9")
    try:
        read, parked, backends = parked_connections(kept, timed_poller, 5)
        quiet, spoken, also_spoken, _first = parked
        autojump_clock.jump(1.0)
        backends[1].send(STRAY)
        backends[2].send(STRAY)
        timed_poller.ready_most = 1
        read.begin()
        assert [read.start(), read.start(), read.start()] == [True, True, False]
        assert [closed(spoken), closed(also_spoken)] == [True, True]
        assert quiet.quiet_poll is not None  # checked alone
        assert backends[0].recv(65536).startswith(b"GET /0 ")
    finally:
        kept.close()


async def test_a_records_start_is_its_reads_reading_and_its_duration_never_shorter(
    timed_poller: BackendPoller,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A lean request's record starts at its read's clock reading (no reading of its own):
    a start later in the same read still has its read's reading, and its duration, read at
    its end, is the time since then: never negative, never shorter than since its own
    start, longer by no more than the read's processing before it."""
    kept = KeptServers("http://127.0.0.1:9")
    try:
        read, _parked, _backends = parked_connections(kept, timed_poller, 3)
        autojump_clock.jump(1.0)
        read.begin()
        read_began = trio.current_time()
        starts = [read.start()]
        autojump_clock.jump(0.25)  # (the read's processing before its second request)
        second_started = trio.current_time()
        starts.append(read.start())
        assert starts == [True, True]
        records = [  # (begun at their first need: here)
            stream.on_writable._the_record()  # type: ignore[union-attr]
            for stream in read.streams[-2:]
        ]
        assert [record.started for record in records] == [read_began, read_began]
        autojump_clock.jump(0.5)  # the answers' end
        counted: list[float] = []
        counters = ProxyCounters()
        for record in records:
            record.status = 200
            before = counters.request_seconds.sum
            record.log(counters)
            counted.append(counters.request_seconds.sum - before)  # its duration, as counted
        assert counted == [0.75, 0.75]
        assert counted[1] >= trio.current_time() - second_started
        assert counted[1] - (trio.current_time() - second_started) <= 0.25
    finally:
        kept.close()
