"""Keep-alive connections to backends for ordinary HTTP requests: a bounded pool.

WebSocket tunnels always get a connection of their own (it is upgraded and never comes
back). Ordinary requests borrow one from here and give it back only when the exchange
ended in a state where the next request cannot be misread (the exchange asks its
:class:`~h2ws_proxy.backend.h1_wire.H1BackendWire`, and gives back only what passes):

* both messages complete and neither side asked to close;
* no byte from the backend beyond its answer (a backend that sent more than its framing
  said, say a body on a 204, would have those bytes read as the *next* client's answer:
  response-queue poisoning, the mirror image of request smuggling);
* on the way out again, a non-blocking peek finds the socket quiet: no EOF (the backend
  closed it while it sat idle), no unsolicited bytes.

Bounds: at most ``backend_max_idle`` idle connections per backend, each kept at most
``backend_keepalive_s`` (below the usual backend keep-alive, so we close first and rarely
send a request into a connection the backend is closing). :meth:`BackendPool.reap` closes
expired ones; the server runs it in the background.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import trio

from h2ws_proxy.backend.upgrade import ConnectBackend
from h2ws_proxy.config import BackendAddress, Limits
from h2ws_proxy.counters import Histogram
from h2ws_proxy.errors import BackendConnectTimeout
from h2ws_proxy.transport.capabilities import as_pollable, idle_is_quiet


@dataclass(slots=True, eq=False)
class BackendConnection:
    """One HTTP/1.1 connection to a backend, between requests (we are the client)."""

    address: BackendAddress
    stream: trio.abc.HalfCloseableStream
    #: True for a connection that already served a request (a stale one may be retried).
    reused: bool = False
    idle_since: float = field(default=0.0)


class BackendPool:
    """Idle keep-alive connections per backend address, bounded in count and age."""

    def __init__(
        self, limits: Limits, connect: ConnectBackend, connect_times: Histogram | None = None
    ) -> None:
        self._limits = limits
        self._connect = connect
        #: Observes how long each new connection took to connect.
        self._connect_times = connect_times
        self._idle: dict[BackendAddress, deque[BackendConnection]] = {}
        self._changed = trio.Event()
        #: When :meth:`reap` wakes next (``inf``: nothing idle, it waits for ``_changed``).
        self._next_reap = float("inf")

    def apply_limits(self, limits: Limits) -> None:
        """Keep-alive limits from now on (a reload); the idle connections stay."""
        self._limits = limits

    @property
    def idle_count(self) -> int:
        return sum(len(queue) for queue in self._idle.values())

    async def acquire(self, address: BackendAddress) -> BackendConnection:
        """An idle connection that still looks alive, else a new one (bounded in time).

        Raises BackendUnavailable or BackendTimeout as :func:`backend.open_backend_stream`.
        """
        connection = await self.take_idle(address)
        return connection if connection is not None else await self.connect(address)

    async def take_idle(self, address: BackendAddress) -> BackendConnection | None:
        """An idle connection that still looks alive, or None; never waits for the network
        (stale connections met on the way are closed, which yields)."""
        queue = self._idle.get(address)
        if not queue:
            return None
        now = trio.current_time()
        while queue:
            connection = queue.pop()  # most recently used first: the least likely stale
            if self._still_good(connection, now):
                return connection
            await trio.aclose_forcefully(connection.stream)
        return None

    def take_idle_now(self, address: BackendAddress) -> BackendConnection | None:
        """:meth:`take_idle` for a caller that must not yield (a request run without a
        task): a connection whose socket a poller can drive, or None. Stale ones met on the
        way are closed at once; a connection that is not such a socket stays for
        :meth:`take_idle`."""
        queue = self._idle.get(address)
        if not queue:
            return None
        now = trio.current_time()
        while queue:
            connection = queue[-1]  # most recently used first: the least likely stale
            pollable = as_pollable(connection.stream)
            if pollable is None:
                return None
            queue.pop()
            if self._still_good(connection, now):
                return connection
            pollable.close_now()
        return None

    def _still_good(self, connection: BackendConnection, now: float) -> bool:
        """Young enough and quiet (see the module rules): then marked reused."""
        if now - connection.idle_since < self._limits.backend_keepalive_s and idle_is_quiet(
            connection.stream
        ):
            connection.reused = True
            return True
        return False

    async def connect(self, address: BackendAddress) -> BackendConnection:
        """A new connection to ``address``."""
        limits = self._limits
        started = trio.current_time()
        with trio.move_on_after(limits.connect_timeout_s) as scope:
            stream = await self._connect(address)
        if scope.cancelled_caught:
            raise BackendConnectTimeout(
                f"backend {address} did not accept within {limits.connect_timeout_s}s"
            )
        if self._connect_times is not None:
            self._connect_times.observe(trio.current_time() - started)
        return BackendConnection(address=address, stream=stream)

    async def release(self, connection: BackendConnection) -> None:
        """Keep ``connection`` (its last cycle ended cleanly) if there is room, else close it."""
        if self._keep(connection):
            # The exchange that gave it back yielded on its reads; a trip here only costs.
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        await trio.aclose_forcefully(connection.stream)

    def release_now(self, connection: BackendConnection) -> None:
        """:meth:`release` without a yield, for a connection :meth:`take_idle_now` gave
        (its socket closes at once when there is no room for it)."""
        if not self._keep(connection):
            pollable = as_pollable(connection.stream)
            assert pollable is not None, "only take_idle_now's connections come back here"
            pollable.close_now()

    def _keep(self, connection: BackendConnection) -> bool:
        """Keep ``connection`` idle if there is room; False: the caller closes it."""
        limits = self._limits
        queue = self._idle.get(connection.address)
        if queue is None:
            queue = self._idle[connection.address] = deque()
        if limits.backend_keepalive_s > 0 and len(queue) < limits.backend_max_idle:
            connection.idle_since = trio.current_time()
            queue.append(connection)
            # Every connection is kept for the same time, so one given back now expires
            # after all the others: the reaper needs waking only if it waits for none.
            if self._next_reap == float("inf"):
                self._changed.set()
            return True
        return False

    async def reap(self) -> None:
        """Close idle connections as they expire; runs until cancelled."""
        while True:
            expired, self._next_reap = self._take_expired()
            for connection in expired:
                await trio.aclose_forcefully(connection.stream)
            with trio.move_on_at(self._next_reap):
                await self._changed.wait()
                self._changed = trio.Event()

    def _take_expired(self) -> tuple[list[BackendConnection], float]:
        """Remove expired idle connections; returns them and when the next one expires."""
        keepalive = self._limits.backend_keepalive_s
        now = trio.current_time()
        expired: list[BackendConnection] = []
        next_expiry = float("inf")
        for address, queue in list(self._idle.items()):
            while queue and now - queue[0].idle_since >= keepalive:
                expired.append(queue.popleft())
            if queue:
                next_expiry = min(next_expiry, queue[0].idle_since + keepalive)
            else:
                del self._idle[address]
        return expired, next_expiry

    async def aclose(self) -> None:
        """Close every idle connection (server shutdown)."""
        for queue in self._idle.values():
            for connection in queue:
                await trio.aclose_forcefully(connection.stream)
        self._idle.clear()
