"""The read's shared quiet check and a parked connection out of the poller's epoll set.

``BackendPoller.resume`` survives a descriptor the kernel refuses to watch (``epoll_ctl``
failing with ENOSPC or ENOMEM: ``fs.epoll.max_user_watches`` reached, memory): it logs
``poller.rewatch_failed`` and calls the owner's ``on_error``; for a connection
``release_now`` just parked that finds it quiet and leaves it parked, out of the set. Such a
descriptor is never among the poller's ready ones, so the read's shared check says nothing
about it: its take must check it alone (``BackendConnection.watched``), or stray bytes the
backend sent (a 408 as it closes) would be read as the next request's answer.
"""

from __future__ import annotations

import errno
import select
import socket

import trio
import trio.testing

from h2ws_proxy.http2.lean_requests import LeanRequests
from h2ws_proxy.transport.poller import BackendPoller
from tests.protocol.test_lean_read_quiet import Read, closed, idle_connections
from tests.protocol.test_lean_start_clock import lean_requests, timed_poller
from tests.protocol.test_repeated_request_intake import KeptServers

__all__ = ["timed_poller"]

STRAY = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class RefusingEpoll:
    """The poller's epoll, whose next ``register`` the kernel refuses (ENOSPC)."""

    def __init__(self, real: select.epoll) -> None:
        self._real = real
        self.refuse_next = False

    def register(self, fd: int, mask: int) -> None:
        if self.refuse_next:
            self.refuse_next = False
            raise OSError(errno.ENOSPC, "No space left on device")
        self._real.register(fd, mask)

    def unregister(self, fd: int) -> None:
        self._real.unregister(fd)

    def poll(self, timeout: float = -1, maxevents: int = -1) -> list[tuple[int, int]]:
        return self._real.poll(timeout, maxevents)

    def fileno(self) -> int:
        return self._real.fileno()

    def close(self) -> None:
        self._real.close()


def received_nothing(backend: socket.socket) -> bool:
    backend.setblocking(False)
    try:
        return backend.recv(65536) == b""
    except ConnectionResetError:
        return True
    except BlockingIOError:
        return False


async def test_a_parked_connection_out_of_the_set_is_still_checked(
    timed_poller: BackendPoller,
    autojump_clock: trio.testing.MockClock,
) -> None:
    kept = KeptServers("http://127.0.0.1:9")
    epoll = RefusingEpoll(timed_poller._epoll)
    timed_poller._epoll = epoll  # type: ignore[assignment]
    try:
        epoll.refuse_next = True
        unwatched_backend = kept.park(0, timed_poller)  # oldest: parked, out of the set
        good_backend = kept.park(0, timed_poller)
        primer_backend = kept.park(0, timed_poller)
        parked = idle_connections(kept)
        assert len(parked) == 3  # kept although the kernel refused to watch it
        unwatched = parked[0]
        assert unwatched.parked_in is timed_poller
        assert not unwatched.watched
        lean: LeanRequests = lean_requests(kept, timed_poller)
        read = Read(kept, lean)
        read.begin()  # a first read: the connection's poller and timers become known
        assert read.start()
        assert primer_backend.recv(65536).startswith(b"GET /0 ")
        autojump_clock.jump(1.0)  # the next read comes later
        unwatched_backend.send(STRAY)  # the backend gives up on the idle connection
        read.begin()
        first = read.start()  # takes ``good`` (checked alone)
        second = read.start()  # meets ``unwatched``: its stray bytes must be seen
        assert first
        assert good_backend.recv(65536).startswith(b"GET /0 ")
        # Its own poll(0) sees the stray answer: the connection is closed and no idle one is
        # left (the request goes to the task path), rather than the queued 408 read as its
        # answer.
        assert received_nothing(unwatched_backend), "request written to a spoken-on connection"
        assert closed(unwatched)
        assert not second
    finally:
        timed_poller._epoll = epoll._real
        kept.close()


async def test_a_connection_given_back_while_its_watch_was_paused_is_in_the_set(
    timed_poller: BackendPoller,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A lean request whose backend watch was paused (the client's window shut) ends and
    gives its connection back: ``release_now``'s register puts the descriptor back in the
    set, or the read's shared check would miss the backend's later bytes. The read's second
    take meets it and drops it."""
    kept = KeptServers("http://127.0.0.1:9")
    try:
        oldest_backend = kept.park(0, timed_poller)
        paused_backend = kept.park(0, timed_poller)
        primer_backend = kept.park(0, timed_poller)
        lean = lean_requests(kept, timed_poller)
        read = Read(kept, lean)
        read.begin()
        assert read.start()
        assert primer_backend.recv(65536).startswith(b"GET /0 ")
        autojump_clock.jump(1.0)
        read.begin()
        assert read.start()  # takes the one to be paused
        assert paused_backend.recv(65536).startswith(b"GET /0 ")
        request = read.streams[-1].on_writable
        connection = request._connection  # type: ignore[union-attr]
        timed_poller.pause(connection.fileno())  # (``PolledRelay._pause``)
        kept.server.pool.release_now(connection, timed_poller)  # (``_stop(keep=True)``)
        request._done = True  # type: ignore[union-attr]
        newest_backend = kept.park(0, timed_poller)
        autojump_clock.jump(1.0)
        paused_backend.send(STRAY)
        read.begin()
        assert [read.start(), read.start()] == [True, True]
        assert newest_backend.recv(65536).startswith(b"GET /0 ")
        assert closed(connection)
        assert received_nothing(paused_backend)
        assert oldest_backend.recv(65536).startswith(b"GET /0 ")
    finally:
        kept.close()
