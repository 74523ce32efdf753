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

from h2ws_proxy.backend.pool import BackendConnection
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


async def test_one_read_meets_a_stale_connection_first_and_reuses_the_others(
    timed_poller: BackendPoller,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three parked; the backend closed the newest (taken first) before the read. The
    read asks once: its first take checks the stale one alone and drops it, the read's
    takes reuse the two others with no check of their own, and a third start finds none."""
    kept = KeptServers("http://127.0.0.1:9")
    try:
        backends = [kept.park(0, timed_poller) for _ in range(3)]
        connections = idle_connections(kept)  # (oldest first, as parked)
        read = Read(kept, lean_requests(kept, timed_poller))
        assert read.start()  # a first read makes the poller's timers known
        assert backends[2].recv(65536).startswith(b"GET /0 ")
        kept.park(0, timed_poller)  # (one more, so three are parked again)
        connections = idle_connections(kept)
        autojump_clock.jump(1.0)  # the read comes after they were parked
        newest = connections[-1]
        newest_backend = kept._pairs[-1][1]
        newest_backend.close()  # the backend's idle close of the newest one
        asks = count_asks(timed_poller, monkeypatch)
        read.begin()
        assert [read.start(), read.start(), read.start()] == [True, True, False]
        assert asks == [1]
        assert newest.stream.fileno() == -1  # type: ignore[attr-defined]
        reused = [c for c in connections if c is not newest]
        assert [c.quiet_poll for c in reused] == [None, None]
        for backend in (backends[0], backends[1]):
            assert backend.recv(65536).startswith(b"GET /0 ")
    finally:
        kept.close()


async def test_bytes_that_came_after_one_read_are_met_by_the_next_reads_check(
    timed_poller: BackendPoller,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read's answer is its own: unsolicited bytes on a parked connection after read A
    are seen by read B's check (asked anew), and that connection is not reused."""
    kept = KeptServers("http://127.0.0.1:9")
    try:
        backends = [kept.park(0, timed_poller) for _ in range(3)]
        read = Read(kept, lean_requests(kept, timed_poller))
        assert read.start()  # (the poller's timers known; the newest taken)
        autojump_clock.jump(1.0)
        asks = count_asks(timed_poller, monkeypatch)
        read.begin()  # read A
        assert read.start()
        assert backends[1].recv(65536).startswith(b"GET /0 ")
        (spoken,) = idle_connections(kept)
        backends[0].send(STRAY)  # after A's check
        read.begin()  # read B
        assert not read.start()  # the spoken-on one dropped: none left to take
        assert asks == [1, 1]
        assert spoken.stream.fileno() == -1  # type: ignore[attr-defined]
        assert received_nothing(backends[0])  # closed, never written to
    finally:
        kept.close()


async def test_a_full_ready_array_makes_every_take_of_the_read_check_alone(
    timed_poller: BackendPoller,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """More ready than the array holds: the read's answer is "not known", so each take
    checks its connection alone (the spoken-on ones are dropped, the quiet one checked)."""
    kept = KeptServers("http://127.0.0.1:9")
    try:
        backends = [kept.park(0, timed_poller) for _ in range(4)]
        read = Read(kept, lean_requests(kept, timed_poller))
        assert read.start()  # (the poller's timers known; the newest taken)
        quiet, spoken, also_spoken = idle_connections(kept)
        autojump_clock.jump(1.0)
        backends[1].send(STRAY)
        backends[2].send(STRAY)
        timed_poller.ready_most = 1
        read.begin()
        assert read.start()
        assert not read.start()
        for dropped in (spoken, also_spoken):
            assert dropped.stream.fileno() == -1  # type: ignore[attr-defined]
        assert quiet.quiet_poll is not None  # checked alone
        assert backends[0].recv(65536).startswith(b"GET /0 ")
    finally:
        kept.close()
