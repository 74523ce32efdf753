"""Which server of a backend group takes the next tunnel or request, and which are up.

Rules:

* Per group (``[[backend]]``, or a route's own URL or list), ``balance`` picks among the
  servers that are up: ``round_robin`` in turn; ``least_connections`` the one with the
  fewest tunnels and requests in progress (ties in turn); ``client_ip`` a consistent hash
  of the client's address (each server owns many points on a ring, so a server that goes
  away moves only its own clients, to the next point's server); ``cookie`` the server the
  client's sticky cookie names, else in turn (and the answer sets the cookie).
* A server is up unless passive health took it out (``max_fails`` connect failures or
  timeouts in a row: out for ``fail_timeout_s``, then tried again; with active health
  checks, out until they pass ``healthy`` times) or active health checks (health.py)
  found it unhealthy. A group of one server is never taken out by passive
  health (nginx does the same): there is nothing to move to, and a 502 says more than a
  503. Every server down: :class:`~h2ws_proxy.errors.NoServerAvailable` (503).
* ``max_connections`` per server: a pick skips full servers; when every candidate is
  full (or the sticky one is), the caller waits up to ``queue_timeout_s`` for a place,
  then gets 503.
* The caller holds a server from :meth:`GroupBalancer.take` until its tunnel or request
  ends, then :meth:`GroupBalancer.give_back`; it reports connect outcomes with
  :meth:`GroupBalancer.connect_failed` / :meth:`GroupBalancer.connect_succeeded`.
* State is per worker process: each worker balances, counts and checks on its own.
* A reload builds new :class:`Balancers` from the previous ones: a group equal to one
  before keeps its balancer; a changed group gets a new one holding the same
  :class:`ServerState` for each server it keeps (same group name, or the same URLs for a
  route's own group, and same address), so health and active counts carry over, and a
  tunnel that took a server from the old balancer gives it back there, waking the new
  one's waiters too.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import math
from collections.abc import Iterable, Mapping

import trio

from h2ws_proxy.config import BackendAddress, BackendGroup
from h2ws_proxy.errors import NoServerAvailable
from h2ws_proxy.log import log_event

logger = logging.getLogger(__name__)

#: Points per server on the client_ip ring: enough for an even spread over a few servers.
_RING_POINTS = 64


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def sticky_value(address: BackendAddress) -> str:
    """The sticky cookie's value for ``address``: stable across workers and restarts, and
    naming nothing about the server."""
    return hashlib.blake2b(str(address).encode(), digest_size=6).hexdigest()


class ServerState:
    """One server of a group, as this worker sees it."""

    __slots__ = (
        "active",
        "address",
        "check_fails",
        "check_passes",
        "checked_up",
        "down_until",
        "fails",
        "label",
        "sticky",
    )

    def __init__(self, address: BackendAddress) -> None:
        self.address = address
        #: How logs write it (made once: every tunnel and request names its server).
        self.label = str(address)
        self.sticky = sticky_value(address)
        #: Tunnels and requests in progress on it.
        self.active = 0
        #: Connect failures in a row (passive health), and until when it is left out.
        self.fails = 0
        self.down_until = -math.inf
        #: Active health: the last verdict (up until a check says otherwise) and the run
        #: of passes or failures leading to the next one.
        self.checked_up = True
        self.check_passes = 0
        self.check_fails = 0

    def up(self, now: float) -> bool:
        return self.checked_up and now >= self.down_until

    def describe(self, now: float) -> dict[str, object]:
        """For ``/stats``."""
        if not self.checked_up:
            state = "down (health check)"
        elif now < self.down_until:
            state = f"down (failing, back in {self.down_until - now:.1f}s)"
        else:
            state = "up"
        return {"server": str(self.address), "state": state, "active": self.active}


class GroupBalancer:
    """Picks servers of one group and keeps their live state."""

    def __init__(
        self,
        group: BackendGroup,
        carried: Mapping[tuple[str, BackendAddress], ServerState] | None = None,
    ) -> None:
        self.group = group
        carried = carried or {}
        self.servers = [
            carried.get((str(group), address)) or ServerState(address) for address in group.servers
        ]
        if group.health_check is None:
            for server in self.servers:  # no checks left to bring it back
                server.checked_up = True
        #: The balancer a reload replaced this one with (its waiters wake on our give_back).
        self.successor: GroupBalancer | None = None
        self._by_sticky = {server.sticky: server for server in self.servers}
        self._next = 0
        self._passive = group.max_fails > 0 and len(self.servers) > 1
        #: The one server of a group of one without a cap: no choice to make. Read by a
        #: caller that takes it in place of :meth:`take_at_once` (``relay/kept_start.py``);
        #: set only here.
        self.single = (
            self.servers[0] if len(self.servers) == 1 and not group.max_connections else None
        )
        self._released = trio.Event()
        self._ring: list[tuple[int, int]] = []
        if group.balance == "client_ip":
            self._ring = sorted(
                (_hash64(f"{server.address}#{point}"), index)
                for index, server in enumerate(self.servers)
                for point in range(_RING_POINTS)
            )

    @property
    def name(self) -> str:
        return str(self.group)

    def sticky_server(self, cookie_value: str | None) -> ServerState | None:
        return self._by_sticky.get(cookie_value) if cookie_value else None

    def take_at_once(self) -> ServerState | None:
        """The usual route of one server, no cap, up: taken without a coroutine (it runs
        per request). None: use :meth:`take`."""
        single = self.single
        if single is not None and single.checked_up:
            single.active += 1
            return single
        return None

    async def take(
        self,
        *,
        client_key: str | None = None,
        sticky: str | None = None,
        exclude: Iterable[ServerState] = (),
    ) -> ServerState:
        """A server for a new tunnel or request, counted as active until
        :meth:`give_back`; waits up to ``queue_timeout_s`` while the candidates are full.

        Raises NoServerAvailable (503) when every server is down (or excluded), or none
        had a place in time.
        """
        servers = self.servers
        if not exclude and (taken := self.take_at_once()) is not None:
            return taken
        deadline = trio.current_time() + self.group.queue_timeout_s
        excluded = set(exclude)
        while True:
            now = trio.current_time()
            candidates = [s for s in servers if s not in excluded and s.up(now)]
            if not candidates:
                raise NoServerAvailable(self._none_up_reason(now, excluded))
            picked = self._pick(candidates, client_key, sticky)
            if picked is not None:
                picked.active += 1
                return picked
            if now >= deadline:
                raise NoServerAvailable(
                    f"every server of backend {self.name} is at max_connections "
                    f"({self.group.max_connections}) and none freed up within "
                    f"{self.group.queue_timeout_s:g}s"
                )
            with trio.move_on_at(min(deadline, self._next_recovery(now))):
                await self._released.wait()

    def give_back(self, server: ServerState) -> None:
        server.active -= 1
        if self.group.max_connections:
            self._wake_waiters()
        successor = self.successor
        while successor is not None:  # a reload moved the server on: its waiters may go
            successor._wake_waiters()
            successor = successor.successor

    def server_came_back(self) -> None:
        """A server is up again: picks waiting for a place may take it."""
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        self._released.set()
        self._released = trio.Event()

    def connect_succeeded(self, server: ServerState) -> None:
        server.fails = 0

    def connect_failed(self, server: ServerState, reason: str) -> None:
        """A refused or timed-out connect: past ``max_fails`` in a row, the server is left
        out for ``fail_timeout_s``."""
        if not self._passive:
            return
        server.fails += 1
        if server.fails < self.group.max_fails:
            return
        server.fails = 0
        if self.group.health_check is not None:
            # The checks bring it back (``healthy`` passes in a row), as HAProxy's observe.
            server.checked_up = False
            server.check_passes = 0
            back = "after its health checks pass"
        else:
            server.down_until = trio.current_time() + self.group.fail_timeout_s
            back = f"in {self.group.fail_timeout_s:g}s"
        log_event(
            logger,
            logging.WARNING,
            "backend.server_down",
            backend=self.name,
            server=str(server.address),
            reason=reason,
            check="passive",
            back=back,
        )

    def has_other(self, excluded: Iterable[ServerState]) -> bool:
        """Whether a server that is up remains once ``excluded`` are left out."""
        now = trio.current_time()
        left_out = set(excluded)
        return any(s.up(now) for s in self.servers if s not in left_out)

    # ---- picking ----

    def _pick(
        self, candidates: list[ServerState], client_key: str | None, sticky: str | None
    ) -> ServerState | None:
        """The server ``balance`` picks among ``candidates``; None: wait (it is full)."""
        limit = self.group.max_connections
        balance = self.group.balance
        if balance == "client_ip" and client_key is not None:
            server = self._on_ring(candidates, client_key)
            return server if not limit or server.active < limit else None
        if balance == "cookie":
            pinned = self.sticky_server(sticky)
            if pinned is not None and pinned in candidates:
                return pinned if not limit or pinned.active < limit else None
        open_ = [s for s in candidates if not limit or s.active < limit]
        if not open_:
            return None
        if balance == "least_connections":
            fewest = min(s.active for s in open_)
            open_ = [s for s in open_ if s.active == fewest]
        self._next += 1
        return open_[self._next % len(open_)]

    def _on_ring(self, candidates: list[ServerState], client_key: str) -> ServerState:
        """The first candidate clockwise from the client's point on the ring."""
        ring, servers = self._ring, self.servers
        allowed = {id(s) for s in candidates}
        start = bisect.bisect(ring, (_hash64(client_key), -1))
        for offset in range(len(ring)):
            server = servers[ring[(start + offset) % len(ring)][1]]
            if id(server) in allowed:
                return server
        return candidates[0]  # unreachable: every candidate has points

    def _none_up_reason(self, now: float, excluded: set[ServerState]) -> str:
        down = [s for s in self.servers if not s.up(now)]
        tried = len(excluded)
        parts = [f"{len(down)} of {len(self.servers)} down"]
        if tried:
            parts.append(f"{tried} tried and failed")
        return f"no server of backend {self.name} is available ({', '.join(parts)})"

    def _next_recovery(self, now: float) -> float:
        """When a passively failed server comes back (so a waiting pick can use it)."""
        later = [s.down_until for s in self.servers if s.down_until > now]
        return min(later, default=math.inf)


class Balancers:
    """Every group's balancer, for one server (worker process) and one generation of the
    config (``relay/context.py``)."""

    def __init__(self, groups: Iterable[BackendGroup], previous: Balancers | None = None) -> None:
        self._by_id: dict[int, GroupBalancer] = {}
        self._groups: list[GroupBalancer] = []
        same: dict[BackendGroup, GroupBalancer] = {}
        carried: dict[tuple[str, BackendAddress], ServerState] = {}
        if previous is not None:
            for balancer in previous._groups:
                same.setdefault(balancer.group, balancer)
                for server in balancer.servers:
                    carried.setdefault((str(balancer.group), server.address), server)
        own: dict[int, GroupBalancer] = {}
        for group in groups:
            if id(group) in own:
                continue
            kept = same.get(group)
            if kept is None:
                balancer = GroupBalancer(group, carried)
                old = next((b for b in same.values() if str(b.group) == str(group)), None)
                if old is not None:
                    old.successor = balancer
            else:
                balancer = kept
            own[id(group)] = balancer
            if balancer not in self._groups:
                self._groups.append(balancer)
        self._by_id.update(own)
        if previous is not None:
            # A request routed just before the switch looks its balancer up just after.
            for group_id, balancer in previous._own.items():
                self._by_id.setdefault(group_id, balancer)
        #: This generation's own groups (the next one keeps them for a moment).
        self._own: dict[int, GroupBalancer] = own

    def of(self, group: BackendGroup) -> GroupBalancer:
        """The balancer of ``group`` (created on first use for groups built in code)."""
        balancer = self._by_id.get(id(group))
        if balancer is None:
            balancer = self._by_id[id(group)] = GroupBalancer(group)
            self._groups.append(balancer)
        return balancer

    @property
    def groups(self) -> list[GroupBalancer]:
        return self._groups

    def describe(self) -> list[dict[str, object]]:
        """Each server's state, for ``/stats``."""
        now = trio.current_time()
        return [
            {"backend": balancer.name, **server.describe(now)}
            for balancer in self._groups
            for server in balancer.servers
        ]
