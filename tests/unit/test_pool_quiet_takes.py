"""The backend pool's quiet check per take (backend/pool.py): every take of a parked
connection peeks its socket, right before the request's write, whether or not other takes
of the same client read came before it; stray bytes or an EOF that reached a parked
connection since it was parked, or since the previous take, are caught.

Real socketpairs and a poller that is not run (its rounds would drop what the tests want
the takes to meet): the "backend" writes stray bytes or closes its side of a parked
connection, and the next take must not hand that connection out.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from h2ws_proxy.backend.kept_connection import BackendConnection
from h2ws_proxy.backend.pool import BackendPool
from h2ws_proxy.config import BackendAddress, Limits
from h2ws_proxy.transport.poller import BackendPoller
from h2ws_proxy.transport.socket_stream import LeanSocketStream
from tests.unit.test_backend_pool import no_dial

pytestmark = pytest.mark.socket

ADDRESS = BackendAddress(scheme="http", host="127.0.0.1", port=1)
STRAY = b"HTTP/1.1 408 Request Timeout\r\n\r\n"


class Parked:
    """Connections to park, with the backend's end of each."""

    def __init__(self) -> None:
        self.pool = BackendPool(Limits(backend_keepalive_s=60.0), no_dial)
        self.sockets: list[socket.socket] = []
        self.backend_side: dict[BackendConnection, socket.socket] = {}

    def park(self, poller: BackendPoller) -> BackendConnection:
        ours, theirs = socket.socketpair()
        self.sockets += [ours, theirs]
        connection = BackendConnection(
            address=ADDRESS, stream=LeanSocketStream(ours), pool=self.pool
        )
        self.backend_side[connection] = theirs
        self.pool.release_now(connection, poller)
        assert connection.parked_in is poller
        return connection

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def parked() -> Iterator[Parked]:
    made = Parked()
    yield made
    made.close()


@pytest.fixture
async def poller() -> AsyncIterator[BackendPoller]:
    made = BackendPoller()
    yield made
    made.close()  # (in the run: closing tells trio)


def closed(connection: BackendConnection) -> bool:
    return connection.stream.fileno() == -1  # type: ignore[attr-defined]


async def test_a_take_drops_parked_connections_the_backend_spoke_on_or_closed(
    parked: Parked, poller: BackendPoller
) -> None:
    """While they sat parked the backend wrote to one connection and closed another: the
    take hands out neither, only the quiet one."""
    quiet, spoken, ended = parked.park(poller), parked.park(poller), parked.park(poller)
    parked.backend_side[spoken].send(STRAY)
    parked.backend_side[ended].close()
    assert parked.pool.take_idle_now(ADDRESS, poller) is quiet
    assert parked.pool.take_idle_now(ADDRESS, poller) is None
    assert [closed(spoken), closed(ended), closed(quiet)] == [True, True, False]
    assert parked.pool.idle_count == 0


async def test_a_connection_given_back_and_then_spoken_on_is_not_handed_out_again(
    parked: Parked, poller: BackendPoller
) -> None:
    """Taken, given back (a request that could not go), then spoken on before the next take
    (of the same client read or a later one): that take peeks it and closes it."""
    other = parked.park(poller)
    taken = parked.pool.take_idle_now(ADDRESS, poller)
    assert taken is other
    parked.pool.release_now(taken, poller)
    parked.backend_side[taken].send(STRAY)
    assert parked.pool.take_idle_now(ADDRESS, poller) is None
    assert closed(taken)


async def test_bytes_or_an_eof_between_two_takes_are_seen_by_the_second(
    parked: Parked, poller: BackendPoller
) -> None:
    """What reaches a parked connection after one take and before the next (within one
    client read or between two) is met by the next take's own peek: no earlier take's
    check answers for it (the window a shared check would leave: backend/pool.py)."""
    first, second, third = parked.park(poller), parked.park(poller), parked.park(poller)
    assert parked.pool.take_idle_now(ADDRESS, poller) is third
    parked.backend_side[second].send(STRAY)
    assert parked.pool.take_idle_now(ADDRESS, poller) is first
    assert closed(second)
    parked.pool.release_now(first, poller)
    parked.backend_side[first].close()
    assert parked.pool.take_idle_now(ADDRESS, poller) is None
    assert closed(first)


async def test_a_connection_parked_in_another_poller_is_peeked_alone(
    parked: Parked, poller: BackendPoller
) -> None:
    """One parked in another client connection's poller is peeked as well before it moves."""
    elsewhere = BackendPoller()
    try:
        theirs = parked.park(elsewhere)
        parked.backend_side[theirs].send(STRAY)
        ours = parked.park(poller)
        assert parked.pool.take_idle_now(ADDRESS, poller) is ours
        assert parked.pool.take_idle_now(ADDRESS, poller) is None
        assert closed(theirs)
    finally:
        elsewhere.close()
