"""The pool's idle connections: which one a request takes, which expire, the bound."""

from __future__ import annotations

from dataclasses import dataclass

from h2ws_proxy.backend.idle_connections import IdleConnections
from h2ws_proxy.config import BackendAddress
from h2ws_proxy.transport.poller import BackendPoller

ADDRESS = BackendAddress(scheme="http", host="127.0.0.1", port=1)
OTHER = BackendAddress(scheme="http", host="127.0.0.1", port=2)


@dataclass(eq=False)
class Idle:
    address: BackendAddress
    idle_since: float = 0.0
    parked_in: BackendPoller | None = None
    fd: int = -1
    watched: bool = False
    reused: bool = False


def kept(idle: IdleConnections[Idle], *connections: Idle, at: float = 0.0) -> None:
    for connection in connections:
        assert idle.add_if_room(connection, at, most=10)


def test_a_request_takes_its_own_pollers_newest_then_one_parked_nowhere_then_any() -> None:
    mine, theirs = BackendPoller(), BackendPoller()
    idle: IdleConnections[Idle] = IdleConnections()
    nowhere, old_mine, new_mine, other_address, elsewhere = (
        Idle(ADDRESS),
        Idle(ADDRESS),
        Idle(ADDRESS),
        Idle(OTHER),
        Idle(ADDRESS),
    )
    kept(idle, nowhere, old_mine, new_mine, other_address, elsewhere)
    idle.mark_parked(old_mine, mine)
    idle.mark_parked(new_mine, mine)
    idle.mark_parked(other_address, mine)
    idle.mark_parked(elsewhere, theirs)

    assert idle.best_for(ADDRESS, mine) is new_mine
    assert idle.remove(new_mine)
    assert new_mine.parked_in is None
    assert idle.best_for(ADDRESS, mine) is old_mine
    idle.remove(old_mine)
    assert idle.best_for(ADDRESS, mine) is nowhere  # before one parked in another poller
    idle.remove(nowhere)
    assert idle.best_for(ADDRESS, mine) is elsewhere
    idle.remove(elsewhere)
    assert idle.best_for(ADDRESS, mine) is None
    assert idle.best_for(OTHER, mine) is other_address
    assert not idle.remove(elsewhere)  # taken already
    assert len(idle) == 1


def test_take_parked_takes_what_best_for_gives_first_and_only_that() -> None:
    """``take_parked`` is ``best_for`` then ``remove`` for a connection parked in the
    caller's poller (the newest to that address), and takes nothing else: not one of
    another address parked there, not one parked nowhere or in another poller."""
    mine, theirs = BackendPoller(), BackendPoller()
    idle: IdleConnections[Idle] = IdleConnections()
    nowhere, old_mine, new_mine, other_address, elsewhere = (
        Idle(ADDRESS),
        Idle(ADDRESS),
        Idle(ADDRESS),
        Idle(OTHER),
        Idle(ADDRESS),
    )
    kept(idle, nowhere, old_mine, new_mine, other_address, elsewhere)
    idle.mark_parked(old_mine, mine)
    idle.mark_parked(new_mine, mine)
    idle.mark_parked(other_address, mine)
    idle.mark_parked(elsewhere, theirs)
    equal = BackendAddress(scheme="http", host="127.0.0.1", port=1)  # equal, not the same

    assert idle.best_for(ADDRESS, mine) is new_mine
    assert idle.take_parked(ADDRESS, mine) is new_mine
    assert new_mine.parked_in is None
    assert not idle.remove(new_mine)  # gone from its address's group too
    assert idle.take_parked(equal, mine) is old_mine
    assert idle.take_parked(ADDRESS, mine) is None  # other_address stays parked there
    assert other_address.parked_in is mine
    assert idle.best_for(ADDRESS, mine) is nowhere
    assert len(idle) == 3
    assert idle.take_parked(OTHER, mine) is other_address
    assert idle.take_parked(OTHER, mine) is None  # (``mine``'s group went when it emptied)
    assert idle.take_parked(ADDRESS, theirs) is elsewhere
    assert [idle.best_for(ADDRESS, mine), len(idle)] == [nowhere, 1]


def test_the_oldest_expire_first_and_the_bound_holds_per_address() -> None:
    idle: IdleConnections[Idle] = IdleConnections()
    first, second, third = Idle(ADDRESS), Idle(ADDRESS), Idle(ADDRESS)
    assert idle.add_if_room(first, 0.0, most=2)
    assert idle.add_if_room(second, 1.0, most=2)
    assert not idle.add_if_room(third, 2.0, most=2)
    assert idle.add_if_room(Idle(OTHER), 2.0, most=2)
    assert not idle.add_if_room(Idle(OTHER, 0.0), 2.0, most=0)
    expired, next_expiry = idle.expired(now=4.5, keepalive=4.0)
    assert (expired, next_expiry) == ([first], 5.0)
    idle.remove(first)
    assert idle.newest(ADDRESS) is second
    assert idle.count(ADDRESS) == 1
    assert sorted(c.idle_since for c in idle.everything()) == [1.0, 2.0]


def test_an_address_object_met_again_finds_its_group_an_equal_one_too() -> None:
    """The group remembered for the last address object: another object for the same
    server (a reload's) and other addresses in between find theirs."""
    idle: IdleConnections[Idle] = IdleConnections()
    same_server = BackendAddress(scheme="http", host="127.0.0.1", port=1)
    assert same_server is not ADDRESS
    first, other, second = Idle(ADDRESS), Idle(OTHER), Idle(same_server)
    kept(idle, first, other, second)
    assert idle.has(same_server)
    assert idle.count(ADDRESS) == 2
    assert idle.newest(ADDRESS) is second
    assert idle.remove(first)
    assert idle.has(ADDRESS)
    assert idle.remove(second)
    assert not idle.has(ADDRESS)
    assert idle.has(OTHER)
    assert idle.best_for(same_server, BackendPoller()) is None


def test_a_group_the_reapers_pass_dropped_is_not_remembered() -> None:
    """Emptied, a group stays until the reaper's pass; a connection kept after the pass
    must land in the group the dict holds, not in the dropped one."""
    idle: IdleConnections[Idle] = IdleConnections()
    first, second = Idle(ADDRESS), Idle(ADDRESS)
    kept(idle, first)
    assert idle.remove(first)
    assert not idle.has(ADDRESS)
    assert idle.expired(now=1.0, keepalive=4.0) == ([], float("inf"))
    kept(idle, second, at=1.0)
    assert len(idle) == 1
    assert idle.everything() == [second]
    assert idle.expired(now=9.0, keepalive=4.0) == ([second], float("inf"))


def test_asking_about_an_address_with_no_idle_connection_makes_no_group() -> None:
    """``has``, ``best_for`` and ``remove`` only look: an address asked about (every
    request's, even with keep-alive off) gets no group; the next kept connection makes it."""
    idle: IdleConnections[Idle] = IdleConnections()
    kept(idle, Idle(ADDRESS))
    stranger = Idle(OTHER)
    assert not idle.has(OTHER)
    assert idle.best_for(OTHER, BackendPoller()) is None
    assert not idle.remove(stranger)
    assert not idle.add_if_room(stranger, 0.0, most=0)
    assert list(idle._by_address) == [ADDRESS]
    assert idle.has(ADDRESS)
    kept(idle, stranger)
    assert idle.has(OTHER)
    assert idle.newest(OTHER) is stranger
    assert sorted(a.port for a in idle._by_address) == [1, 2]


def test_take_parked_quiet_takes_take_parkeds_connection_only_when_it_needs_no_check() -> None:
    """The newest connection parked in the caller's poller is taken (and marked reused) only
    when it is young, parked before the read's reading, watched, and not ready; otherwise
    nothing is taken, not even an older one: the pool's own take judges it."""
    mine = BackendPoller()
    idle: IdleConnections[Idle] = IdleConnections()
    idle.keepalive = 10.0
    old, new = Idle(ADDRESS, fd=7, watched=True), Idle(ADDRESS, fd=8, watched=True)
    kept(idle, old, new, at=100.0)
    idle.mark_parked(old, mine)
    idle.mark_parked(new, mine)

    assert idle.take_parked_quiet(OTHER, mine, 105.0, set()) is None  # none to that address
    assert idle.take_parked_quiet(ADDRESS, BackendPoller(), 105.0, set()) is None  # elsewhere
    assert idle.take_parked_quiet(ADDRESS, mine, 105.0, {8}) is None  # ready: checked alone
    assert idle.take_parked_quiet(ADDRESS, mine, 100.0, set()) is None  # parked at the reading
    assert idle.take_parked_quiet(ADDRESS, mine, 110.0, set()) is None  # too old
    new.watched = False
    assert idle.take_parked_quiet(ADDRESS, mine, 105.0, set()) is None  # out of the set
    assert [new.parked_in, old.parked_in, new.reused, len(idle)] == [mine, mine, False, 2]
    new.watched = True

    assert idle.take_parked_quiet(ADDRESS, mine, 105.0, {7}) is new
    assert [new.parked_in, new.reused, idle.remove(new)] == [None, True, False]
    equal = BackendAddress(scheme="http", host="127.0.0.1", port=1)  # equal, not the same
    assert idle.take_parked_quiet(equal, mine, 105.0, set()) is old
    assert [old.reused, len(idle), idle.take_parked(ADDRESS, mine)] == [True, 0, None]
