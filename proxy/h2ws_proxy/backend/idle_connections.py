"""The backend pool's idle connections, kept two ways.

* Per backend address, in the order they went idle: the oldest expires first (the reaper
  looks at the front only) and the newest is the least likely to be stale. A connection
  given back with a reading older than the newest's (a poller round's shared reading, after
  a release that read the clock itself) takes the newest's: later by at most that round,
  which only keeps it a little longer and sends its next take to its own quiet check.
* Per poller, the ones *parked* there (still in its epoll set: ``backend/pool.py``): a
  request of that poller's client connection takes one of these first, with no
  ``epoll_ctl``.

Both are insertion-ordered dicts used as sets: taking a connection from the middle (one
parked in the caller's poller, a stale one) is O(1), where a deque would shift or scan.

Per request an address's group is looked up three times (is one idle, take, give back), so:

* The group met last is remembered with its address *object*: a lookup for that same object
  (a backend server's requests all carry its one address) is an identity test, where the
  dict would hash the address (a frozen dataclass's hash builds a tuple of all its fields).
  Any other address, equal or not, goes through the dict.
* Only a connection kept makes a group; a lookup never does (asked about an address with
  none, the answer is "none", nothing is remembered). A group stays when it empties (a
  request that takes the last connection gives it back soon), so the remembered one is
  never a group the dict forgot; :meth:`expired` (the reaper's pass) drops the empty ones,
  so at most the addresses that had idle connections since the last pass have one. A
  poller's group goes when it empties: it must not keep an ended client connection's poller.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from h2ws_proxy.config import BackendAddress
from h2ws_proxy.transport.poller import BackendPoller

#: How many of an address's newest connections :meth:`IdleConnections.best_for` looks
#: through for one parked nowhere before it takes one parked in another poller.
_UNPARKED_LOOKBACK = 16


class Idle(Protocol):
    """What is kept of an idle connection here (``kept_connection.BackendConnection``)."""

    address: BackendAddress
    idle_since: float
    parked_in: BackendPoller | None
    #: Its descriptor, whether it is in its poller's epoll set, and whether it was taken
    #: again after an idle spell (:meth:`IdleConnections.take_parked_quiet` reads and sets).
    fd: int
    watched: bool
    reused: bool


BackendConnection = TypeVar("BackendConnection", bound=Idle)


class IdleConnections(Generic[BackendConnection]):
    """Idle connections by address (oldest first) and by the poller they are parked in."""

    def __init__(self) -> None:
        self._by_address: dict[BackendAddress, dict[BackendConnection, None]] = {}
        self._by_poller: dict[BackendPoller, dict[BackendConnection, None]] = {}
        #: The address looked up last and its group (see the module docstring).
        self._last_address: BackendAddress | None = None
        self._last_group: dict[BackendConnection, None] = {}
        #: The pool's ``backend_keepalive_s`` (the pool keeps it current), for
        #: :meth:`take_parked_quiet`.
        self.keepalive = 0.0

    def __len__(self) -> int:
        return sum(len(group) for group in self._by_address.values())

    def _group(self, address: BackendAddress) -> dict[BackendConnection, None] | None:
        """``address``'s group, remembered, or None (nothing made, nothing remembered).
        Callers test the remembered address first, inline: the test is what saves the hash."""
        group = self._by_address.get(address)
        if group is not None:
            self._last_address, self._last_group = address, group
        return group

    def has(self, address: BackendAddress) -> bool:
        group = self._last_group if address is self._last_address else self._group(address)
        return bool(group)

    def count(self, address: BackendAddress) -> int:
        group = self._by_address.get(address)
        return len(group) if group is not None else 0

    def add_if_room(
        self,
        connection: BackendConnection,
        now: float,
        most: int,
        parked_in: BackendPoller | None = None,
    ) -> bool:
        """``connection`` went idle ``now`` (the newest of its address, parked in
        ``parked_in``), if its address has fewer than ``most`` idle; False: no room for it."""
        address = connection.address
        group = self._last_group if address is self._last_address else self._group(address)
        if group is None:
            if most <= 0:
                return False
            group = self._by_address[address] = {}
            self._last_address, self._last_group = address, group
        elif len(group) >= most:
            return False
        elif group and (newest := next(reversed(group)).idle_since) > now:
            now = newest  # an older reading given (one round's, shared): the order holds
        connection.idle_since = now
        group[connection] = None
        if parked_in is not None:  # (``mark_parked``, in place: a lean request's end runs this)
            connection.parked_in = parked_in
            parked = self._by_poller.get(parked_in)
            if parked is None:
                parked = self._by_poller[parked_in] = {}
            parked[connection] = None
        return True

    def remove(self, connection: BackendConnection) -> bool:
        """Forget ``connection`` (and where it is parked); False if it was not idle."""
        address = connection.address
        group = self._last_group if address is self._last_address else self._group(address)
        if group is None:
            return False
        try:
            del group[connection]
        except KeyError:
            return False
        poller = connection.parked_in  # (``mark_unparked``, inline: a take runs this)
        if poller is not None:
            connection.parked_in = None
            parked = self._by_poller.get(poller)
            if parked is not None:
                parked.pop(connection, None)
                if not parked:
                    del self._by_poller[poller]
        return True

    def mark_parked(self, connection: BackendConnection, poller: BackendPoller) -> None:
        connection.parked_in = poller
        parked = self._by_poller.get(poller)
        if parked is None:
            parked = self._by_poller[poller] = {}
        parked[connection] = None

    def mark_unparked(self, connection: BackendConnection) -> None:
        poller = connection.parked_in
        if poller is not None:
            connection.parked_in = None
            parked = self._by_poller.get(poller)
            if parked is not None:
                parked.pop(connection, None)
                if not parked:
                    del self._by_poller[poller]

    def newest(self, address: BackendAddress) -> BackendConnection | None:
        group = self._by_address.get(address)
        return next(reversed(group)) if group else None

    def best_for(self, address: BackendAddress, poller: BackendPoller) -> BackendConnection | None:
        """The connection a request on ``poller``'s client connection should take: the
        newest parked in ``poller``, else one of the newest parked nowhere (moving it into
        a set costs one ``epoll_ctl``), else the newest (parked in another poller: two)."""
        parked = self._by_poller.get(poller)
        if parked:
            for connection in reversed(parked):
                if connection.address is address or connection.address == address:
                    return connection
        group = self._last_group if address is self._last_address else self._group(address)
        if not group:
            return None
        for looked, connection in enumerate(reversed(group)):
            if connection.parked_in is None:
                return connection
            if looked >= _UNPARKED_LOOKBACK:
                break
        return next(reversed(group))

    def take_parked(
        self,
        address: BackendAddress,
        poller: BackendPoller,
        now: float = -1.0,
        ready: set[int] | None = None,
    ) -> BackendConnection | None:
        """The connection :meth:`best_for` gives first, the newest to ``address`` parked in
        ``poller``, removed as by :meth:`remove`; None: none is parked there (then ask
        :meth:`best_for`). One call and one look-up of ``poller``'s group per take of the
        common connection, where :meth:`best_for` then :meth:`remove` make two of each.

        With ``ready`` (as :meth:`take_parked_quiet`): taken, and marked reused, only when
        it is good with no check of its own: younger than :attr:`keepalive` at ``now``, and
        quiet by the pool's rule for a client read's ready set (``backend/pool.py``): parked
        since before ``now``, in its epoll set, its descriptor not in ``ready`` (the set's
        ready descriptors, asked after ``now`` was read). Else None and nothing taken: the
        pool's own take (``BackendPool.take_idle_now``) checks it. One call per take of the
        common connection, where the pool's take and this one make two."""
        parked = self._by_poller.get(poller)
        if parked:
            for connection in reversed(parked):
                own = connection.address
                if own is address or own == address:
                    if ready is not None:
                        idle_since = connection.idle_since
                        if (
                            now - idle_since >= self.keepalive
                            or idle_since >= now
                            or not connection.watched
                            or connection.fd in ready
                        ):
                            return None
                        connection.reused = True
                    del parked[connection]
                    if not parked:
                        del self._by_poller[poller]
                    connection.parked_in = None
                    group = self._last_group if own is self._last_address else self._group(own)
                    assert group is not None  # (an idle connection is in its address's group)
                    del group[connection]
                    return connection
        return None

    #: :meth:`take_parked` given a client read's clock reading and ready set: the lean
    #: start's usual take (``relay/kept_start.py``, through ``BackendPool``).
    take_parked_quiet = take_parked

    def expired(self, now: float, keepalive: float) -> tuple[list[BackendConnection], float]:
        """The connections idle for ``keepalive`` seconds or more (left in place), and when
        the next of the others expires (``inf``: none); empty groups are dropped."""
        expired: list[BackendConnection] = []
        next_expiry = float("inf")
        by_address = self._by_address
        for address in [address for address, group in by_address.items() if not group]:
            del by_address[address]
        self._last_address, self._last_group = None, {}
        for group in by_address.values():
            for connection in group:
                if now - connection.idle_since < keepalive:
                    next_expiry = min(next_expiry, connection.idle_since + keepalive)
                    break
                expired.append(connection)
        return expired, next_expiry

    def everything(self) -> list[BackendConnection]:
        return [connection for group in self._by_address.values() for connection in group]
