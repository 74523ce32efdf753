"""The backend pool's quiet check per turn (backend/pool.py): within one read of a client
connection, one look at its poller's epoll set stands in for a peek per connection, but
only for the connections parked there before that look; every other take peeks its socket.

Real socketpairs and a poller that is not run (its rounds would drop what the tests want
the takes to meet): the "backend" writes stray bytes or closes its side of a parked
connection, and the next take must not hand that connection out.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from h2ws_proxy.backend.pool import BackendConnection, BackendPool
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


async def test_the_turns_check_drops_parked_connections_the_backend_spoke_on_or_closed(
    parked: Parked, poller: BackendPoller
) -> None:
    """Between turns the backend writes to one parked connection and closes another: the
    first take of the next turn hands out neither, only the quiet one."""
    quiet, spoken, ended = parked.park(poller), parked.park(poller), parked.park(poller)
    parked.backend_side[spoken].send(STRAY)
    parked.backend_side[ended].close()
    poller.begin_turn()
    assert parked.pool.take_idle_now(ADDRESS, poller) is quiet
    assert parked.pool.take_idle_now(ADDRESS, poller) is None
    poller.end_turn()
    assert [closed(spoken), closed(ended), closed(quiet)] == [True, True, False]
    assert parked.pool.idle_count == 0


async def test_later_takes_of_a_turn_trust_its_check_and_leave_active_sockets_be(
    parked: Parked, poller: BackendPoller
) -> None:
    """The check runs once per turn, and a socket it finds readable that is not parked (a
    request's, waiting for the poller's next round) is neither read nor dropped."""
    calls: list[str] = []

    class Active:
        watched = False

        def on_readable(self) -> None:
            calls.append("readable")

        def on_error(self) -> None:
            calls.append("error")

        def on_closed(self) -> None:
            calls.append("closed")

    ours, theirs = socket.socketpair()
    parked.sockets += [ours, theirs]
    active = Active()
    poller.register(ours.fileno(), active)
    theirs.send(b"an answer")
    first, second = parked.park(poller), parked.park(poller)
    poller.begin_turn()
    assert parked.pool.take_idle_now(ADDRESS, poller) is second
    assert poller.checked_turn == poller.turn
    assert parked.pool.take_idle_now(ADDRESS, poller) is first
    poller.end_turn()
    assert calls == []
    assert active.watched
    assert poller.ready_watchers() == [active]


async def test_a_connection_parked_during_the_turn_is_peeked_alone(
    parked: Parked, poller: BackendPoller
) -> None:
    """Given back after the turn's check (a request that could not go), then spoken on: the
    check never saw it, so the next take of the same turn peeks it."""
    other = parked.park(poller)
    poller.begin_turn()
    taken = parked.pool.take_idle_now(ADDRESS, poller)
    assert taken is other
    parked.pool.release_now(taken, poller)
    parked.backend_side[taken].send(STRAY)
    assert parked.pool.take_idle_now(ADDRESS, poller) is None
    poller.end_turn()
    assert closed(taken)


async def test_a_check_holds_for_its_own_turn_only(parked: Parked, poller: BackendPoller) -> None:
    """Bytes that come after a turn ended are seen by a take outside any turn (a peek) and
    by the next turn (a check of its own)."""
    first, second, third = parked.park(poller), parked.park(poller), parked.park(poller)
    poller.begin_turn()
    assert parked.pool.take_idle_now(ADDRESS, poller) is third
    poller.end_turn()
    parked.backend_side[second].send(STRAY)
    assert parked.pool.take_idle_now(ADDRESS, poller) is first  # outside a turn: peeked
    assert closed(second)
    parked.pool.release_now(first, poller)
    parked.backend_side[first].close()
    poller.begin_turn()
    assert parked.pool.take_idle_now(ADDRESS, poller) is None
    poller.end_turn()
    assert closed(first)


async def test_a_connection_parked_in_another_poller_is_peeked_alone(
    parked: Parked, poller: BackendPoller
) -> None:
    """The taker's check looks at its own set only."""
    elsewhere = BackendPoller()
    try:
        theirs = parked.park(elsewhere)
        parked.backend_side[theirs].send(STRAY)
        ours = parked.park(poller)
        poller.begin_turn()
        assert parked.pool.take_idle_now(ADDRESS, poller) is ours  # the check runs here
        assert parked.pool.take_idle_now(ADDRESS, poller) is None
        poller.end_turn()
        assert closed(theirs)
    finally:
        elsewhere.close()
