"""Fair shares of the server between clients: per-client caps, and room made at the cap.

Rules:

* A client is its address; an IPv6 address counts by its /64 (one host is routinely
  given a whole /64), an IPv4-mapped IPv6 address as the IPv4 one. An unknown address
  (in-memory tests) is never limited.
* :class:`ClientTable` (one per server) counts each client's connections, across
  listeners, and its open tunnels, across connections. Past ``max_connections_per_client``
  a new connection is closed at once; past ``max_tunnels_per_client`` a new tunnel gets
  ``429``. So one address cannot take the whole server, however many connections it opens.
* :class:`ListenerCapacity` (one per listener) holds ``max_connections``. At the cap the
  listener does not accept (clients wait in the kernel's backlog, as with HAProxy's
  maxconn) unless a client is waiting and some connection is idle: then the connection
  idle the longest is told to go, and the waiting client takes its place, as nginx and
  HAProxy do under pressure. A connection with nothing in progress (no stream, no request:
  a preface-only connection, a keep-alive one between requests) is idle.
* :class:`ConnectionSlot` is one connection's place in both. Its front end says when it
  becomes idle or busy, and says how to make it go (:attr:`ConnectionSlot.on_evict`; by
  default the connection is cancelled). An evicted connection gives its place back at
  once: the GOAWAY and close that follow are bounded and no longer hold the listener.
* All of it is synchronous bookkeeping on trio's single thread; only
  :meth:`ListenerCapacity.reserve` waits.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Awaitable, Callable

import trio

from h2ws_proxy.config import Limits
from h2ws_proxy.errors import TooManyRequests

ClientKey = str


@functools.lru_cache(maxsize=4096)  # parsed once per recent client, not per connection
def client_key(address: str | None) -> ClientKey | None:
    """The key ``address`` counts under: the IPv4 address, or an IPv6 address's /64."""
    if address is None:
        return None
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class ClientTable:
    """Connections and tunnels per client, server-wide (per worker process)."""

    def __init__(self, limits: Limits) -> None:
        self._connections: dict[ClientKey, int] = {}
        self._tunnels: dict[ClientKey, int] = {}
        self.apply_limits(limits)

    def apply_limits(self, limits: Limits) -> None:
        """Caps for new connections and tunnels from now on (a reload); the counts stay."""
        self.max_connections = limits.connections_per_client()
        self.max_tunnels = limits.tunnels_per_client()

    def connections_of(self, key: ClientKey) -> int:
        return self._connections.get(key, 0)

    def tunnels_of(self, key: ClientKey) -> int:
        return self._tunnels.get(key, 0)

    def admit(self, address: str | None, capacity: ListenerCapacity) -> ConnectionSlot | None:
        """A slot for a new connection from ``address``; None when the client is at its cap.

        The caller holds a reservation of ``capacity`` (:meth:`ListenerCapacity.reserve`),
        which the slot takes over.
        """
        key = client_key(address)
        if key is not None:
            count = self._connections.get(key, 0)
            if self.max_connections and count >= self.max_connections:
                return None
            self._connections[key] = count + 1
        return ConnectionSlot(key, self, capacity)

    def _forget_connection(self, key: ClientKey) -> None:
        _decrement(self._connections, key)


def _decrement(counts: dict[ClientKey, int], key: ClientKey) -> None:
    count = counts[key] - 1
    if count:
        counts[key] = count
    else:
        del counts[key]


class ListenerCapacity:
    """``max_connections`` of one listener, shared by its sockets, with idle eviction."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        #: Places taken: connections, and reservations of accepts in progress.
        self.used = 0
        #: Idle connections, the longest idle first (dicts keep insertion order).
        self._idle: dict[ConnectionSlot, None] = {}
        #: Set (and replaced) when a place frees up or a connection becomes idle, if an
        #: accept waits for that (connections go idle and busy per request: no Event each).
        self._changed = trio.Event()
        self._waiting = False
        self.evictions = 0

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    def resize(self, capacity: int) -> None:
        """A new ``max_connections`` (a reload): open connections stay, new accepts wait
        for a place under it."""
        self.capacity = capacity
        self._notify()

    async def reserve(self, wait_for_client: Callable[[], Awaitable[object]]) -> None:
        """Take a place for the next accept, making one if a client waits for it.

        ``wait_for_client`` returns an awaitable that completes when a client is waiting
        to be accepted (the listening socket is readable).
        """
        while self.used >= self.capacity:
            if not self._idle:
                self._waiting = True
                await self._changed.wait()
                continue
            await wait_for_client()
            if self.used >= self.capacity and self._idle:
                self.evictions += 1
                next(iter(self._idle)).evict()
        self.used += 1

    def unreserve(self) -> None:
        """Give back a reservation that did not become a connection."""
        self.used -= 1
        self._notify()

    def _idle_now(self, slot: ConnectionSlot) -> None:
        self._idle[slot] = None
        self._notify()

    def _release(self, slot: ConnectionSlot) -> None:
        self._idle.pop(slot, None)
        self.used -= 1
        self._notify()

    def _notify(self) -> None:
        if self._waiting:
            self._waiting = False
            self._changed.set()
            self._changed = trio.Event()


class ConnectionSlot:
    """One client connection's place: its client's counts and its listener's capacity."""

    __slots__ = ("_capacity", "_clients", "_released", "evicted", "key", "on_evict", "tunnels")

    def __init__(
        self, key: ClientKey | None, clients: ClientTable, capacity: ListenerCapacity
    ) -> None:
        self.key = key
        self._clients = clients
        self._capacity = capacity
        self._released = False
        #: How to make this connection go; the front end may set a politer way.
        self.on_evict: Callable[[], None] = _nothing
        self.evicted = False
        #: Tunnels open on this connection.
        self.tunnels = 0
        capacity._idle_now(self)

    def idle(self) -> None:
        """Nothing is in progress on the connection: it may be evicted at the cap. (Runs
        per request on a kept-alive connection: the capacity's bookkeeping is inlined.)"""
        if not self._released:
            capacity = self._capacity
            capacity._idle[self] = None
            if capacity._waiting:
                capacity._notify()

    def busy(self) -> None:
        """A request or stream is in progress: the connection is not evicted."""
        self._capacity._idle.pop(self, None)

    def begin_tunnel(self) -> None:
        """Count a new tunnel of this client; raises TooManyRequests (429) past its cap.
        (Runs per tunnel: the table's bookkeeping is inlined.)"""
        key = self.key
        if key is not None:
            clients = self._clients
            count = clients._tunnels.get(key, 0)
            if clients.max_tunnels and count >= clients.max_tunnels:
                raise TooManyRequests(
                    f"this client already has {count} tunnels open (max_tunnels_per_client); "
                    "close one first"
                )
            clients._tunnels[key] = count + 1
        self.tunnels += 1

    def end_tunnel(self) -> None:
        self.tunnels -= 1
        if self.key is not None:
            _decrement(self._clients._tunnels, self.key)

    def evict(self) -> None:
        """Make the connection go and give its place back at once."""
        self.evicted = True
        self._give_back_place()
        self.on_evict()

    def release(self) -> None:
        """The connection ended: give back its place (if eviction has not) and its count."""
        self._give_back_place()
        if self.key is not None:
            self._clients._forget_connection(self.key)
            self.key = None

    def _give_back_place(self) -> None:
        if not self._released:
            self._released = True
            self._capacity._release(self)


def _nothing() -> None:
    return None


def unlimited_slot(limits: Limits) -> ConnectionSlot:
    """A slot outside any listener's accounting (in-memory front ends in tests)."""
    capacity = ListenerCapacity(limits.max_connections)
    capacity.used = 1
    return ConnectionSlot(None, ClientTable(limits), capacity)
