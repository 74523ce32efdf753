"""A kept connection stays its socket's watcher in the poller from its take to its release
(``backend/kept_connection.py``): a take from the poller it is parked in changes nothing in
the poller, one from elsewhere registers the connection there; while a lean request uses it
(``BackendConnection.user``) the poller's callbacks go to that request; a release parks it
as its own watcher again, back in the epoll set if its user paused it.

Real socketpairs and a poller that is not run: the tests call its rounds (``dispatch``).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from h2ws_proxy.backend.kept_connection import BackendConnection
from h2ws_proxy.config import BackendAddress
from h2ws_proxy.transport.poller import BackendPoller
from tests.unit.test_pool_quiet_takes import Parked

pytestmark = pytest.mark.socket

ADDRESS = BackendAddress(scheme="http", host="127.0.0.1", port=1)


class User:
    """A lean request's callbacks, noted."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_readable(self) -> None:
        self.calls.append("readable")

    def on_error(self) -> None:
        self.calls.append("error")

    def on_closed(self) -> None:
        self.calls.append("closed")


@pytest.fixture
def parked() -> Iterator[Parked]:
    made = Parked()
    yield made
    made.close()


@pytest.fixture
async def poller() -> AsyncIterator[BackendPoller]:
    made = BackendPoller()
    yield made
    made.close()


def watcher_of(poller: BackendPoller, connection: BackendConnection) -> object:
    return poller._watchers.get(connection.fd)


async def test_a_users_callbacks_come_through_the_connection(
    parked: Parked, poller: BackendPoller
) -> None:
    connection = parked.park(poller)
    registered = dict(poller._watchers)
    assert parked.pool.take_idle_now(ADDRESS, poller) is connection
    assert poller._watchers == registered  # (no register: it stays the watcher)
    user = User()
    connection.user = user
    parked.backend_side[connection].send(b"HTTP/1.1 200 OK\r\n")
    poller.dispatch()
    connection.on_error()
    assert user.calls == ["readable", "error"]
    assert parked.pool.idle_count == 0  # (not dropped as an idle connection would be)
    assert connection.stream.fileno() != -1  # type: ignore[attr-defined]
    poller.close()
    assert user.calls == ["readable", "error", "closed"]
    assert not connection.watched


async def test_a_connection_taken_from_elsewhere_comes_registered_here(
    parked: Parked, poller: BackendPoller
) -> None:
    """Parked in another client connection's poller: it leaves that one's set and comes in
    the taker's, its own watcher there, watched."""
    elsewhere = BackendPoller()
    try:
        theirs = parked.park(elsewhere)
        assert parked.pool.take_idle_now(ADDRESS, poller) is theirs
        assert watcher_of(elsewhere, theirs) is None
        assert watcher_of(poller, theirs) is theirs
        assert theirs.watched
        user = User()
        theirs.user = user
        parked.backend_side[theirs].send(b"x")
        poller.dispatch()
        assert user.calls == ["readable"]
    finally:
        elsewhere.close()


async def test_a_release_after_a_pause_puts_it_back_in_the_set(
    parked: Parked, poller: BackendPoller
) -> None:
    """Its user paused its watch (the client could not take more) and ended so: parked
    again, it is back in the epoll set, so bytes while idle still drop it."""
    connection = parked.park(poller)
    assert parked.pool.take_idle_now(ADDRESS, poller) is connection
    connection.user = User()
    poller.pause(connection.fd)
    assert not connection.watched
    connection.user = None
    parked.pool.release_now(connection, poller)
    assert connection.watched
    assert watcher_of(poller, connection) is connection
    parked.backend_side[connection].send(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    poller.dispatch()
    assert parked.pool.idle_count == 0
    assert connection.stream.fileno() == -1  # type: ignore[attr-defined]


class RefusingEpoll:
    """The poller's epoll, whose every ``register`` the kernel refuses (ENOSPC)."""

    def __init__(self, real: object) -> None:
        self._real = real

    def register(self, fd: int, mask: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)


async def test_a_connection_the_kernel_refuses_to_watch_is_not_handed_out(
    parked: Parked, poller: BackendPoller
) -> None:
    """Taken from elsewhere into a poller whose epoll refuses it: closed, and the take
    goes on (nothing else here: none)."""
    elsewhere = BackendPoller()
    real = poller._epoll
    try:
        theirs = parked.park(elsewhere)
        poller._epoll = RefusingEpoll(real)  # type: ignore[assignment]
        assert parked.pool.take_idle_now(ADDRESS, poller) is None
        assert theirs.stream.fileno() == -1  # type: ignore[attr-defined]
        assert watcher_of(poller, theirs) is None
    finally:
        poller._epoll = real
        elsewhere.close()


async def test_a_connections_receive_now_is_its_sockets_own_recv(
    parked: Parked, poller: BackendPoller
) -> None:
    """A lean request reads its answer with ``receive_now``: the socket's bytes, nothing
    there as ``BlockingIOError`` (a wake-up for nothing), the backend's EOF as ``b""``."""
    connection = parked.park(poller)
    backend = parked.backend_side[connection]
    with pytest.raises(BlockingIOError):
        connection.receive_now(100)
    backend.send(b"HTTP/1.1 200 OK\r\n")
    assert connection.receive_now(100) == b"HTTP/1.1 200 OK\r\n"
    backend.shutdown(socket.SHUT_WR)
    assert connection.receive_now(100) == b""
