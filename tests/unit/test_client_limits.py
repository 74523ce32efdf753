"""The per-client and per-listener bookkeeping (relay/client_limits.py), without sockets."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from h2ws_proxy.config import Limits
from h2ws_proxy.errors import TooManyRequests
from h2ws_proxy.relay.client_limits import ClientTable, ConnectionSlot, ListenerCapacity


def _admit(table: ClientTable, capacity: ListenerCapacity, address: str) -> ConnectionSlot:
    capacity.used += 1  # what reserve() does before an accept
    slot = table.admit(address, capacity)
    assert slot is not None
    return slot


def test_a_client_at_its_cap_is_refused_and_admitted_again_once_one_ends() -> None:
    table = ClientTable(Limits(max_connections_per_client=2))
    capacity = ListenerCapacity(100)
    first = _admit(table, capacity, "192.0.2.1")
    _admit(table, capacity, "192.0.2.1")
    assert table.admit("192.0.2.1", capacity) is None
    assert table.admit("192.0.2.2", capacity) is not None  # another client
    # Two IPv6 addresses of one /64 are one client; of another /64, another.
    _admit(table, capacity, "2001:db8::1")
    _admit(table, capacity, "2001:db8::2")
    assert table.admit("2001:db8::3", capacity) is None
    assert table.admit("2001:db8:0:1::3", capacity) is not None
    first.release()
    first.release()  # ending twice counts once
    assert table.connections_of("192.0.2.1") == 1
    assert table.admit("192.0.2.1", capacity) is not None


def test_tunnels_are_counted_per_client_across_its_connections() -> None:
    table = ClientTable(Limits(max_tunnels_per_client=2))
    capacity = ListenerCapacity(100)
    one, two = _admit(table, capacity, "192.0.2.1"), _admit(table, capacity, "192.0.2.1")
    one.begin_tunnel()
    two.begin_tunnel()
    with pytest.raises(TooManyRequests) as refused:
        one.begin_tunnel()
    assert refused.value.status_hint == 429
    _admit(table, capacity, "192.0.2.9").begin_tunnel()  # another client is not affected
    two.end_tunnel()
    one.begin_tunnel()
    assert (table.tunnels_of("192.0.2.1"), one.tunnels, two.tunnels) == (2, 2, 0)


def test_zero_lifts_the_caps() -> None:
    table = ClientTable(Limits(max_connections_per_client=0, max_tunnels_per_client=0))
    capacity = ListenerCapacity(10_000)
    slots = [_admit(table, capacity, "192.0.2.1") for _ in range(5_000)]
    for slot in slots:
        slot.begin_tunnel()
    assert table.tunnels_of("192.0.2.1") == 5_000


async def test_at_the_cap_a_waiting_client_evicts_the_longest_idle_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    table, capacity = ClientTable(Limits()), ListenerCapacity(3)
    evicted: list[str] = []
    slots = {}
    for name in ("a", "b", "c"):
        await capacity.reserve(trio.lowlevel.checkpoint)
        slots[name] = table.admit(f"192.0.2.{len(slots) + 1}", capacity)
        assert slots[name] is not None
        slots[name].on_evict = lambda name=name: evicted.append(name)
    # Idle since admission: a, then b, then c. a gets busy, then idle again (the newest).
    slots["a"].busy()
    slots["a"].idle()
    slots["b"].busy()  # busy: never evicted
    client_waiting = trio.Event()
    client_waiting.set()
    await capacity.reserve(client_waiting.wait)
    assert evicted == ["c"]
    assert (capacity.used, capacity.evictions) == (3, 1)
    slots["c"].release()  # its end after the eviction gives nothing back twice
    assert capacity.used == 3
    await capacity.reserve(client_waiting.wait)
    assert evicted == ["c", "a"]
    # Only b is left, busy: the next reservation waits until a place frees up.
    with trio.move_on_after(10) as waited:
        await capacity.reserve(client_waiting.wait)
    assert waited.cancelled_caught
    async with trio.open_nursery() as nursery:
        nursery.start_soon(capacity.reserve, client_waiting.wait)
        await trio.testing.wait_all_tasks_blocked()
        slots["b"].idle()  # now idle: evicted for the waiting client
    assert evicted == ["c", "a", "b"]
