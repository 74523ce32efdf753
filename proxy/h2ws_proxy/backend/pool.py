"""Keep-alive connections to backends for ordinary HTTP requests: a bounded pool.

WebSocket tunnels always get a connection of their own (it is upgraded and never comes
back). Ordinary requests borrow one from here and give it back only when the exchange
ended in a state where the next request cannot be misread (the exchange asks its
:class:`~h2ws_proxy.backend.h1_wire.H1BackendWire`, and gives back only what passes):

* both messages complete and neither side asked to close;
* no byte from the backend beyond its answer (a backend that sent more than its framing
  said, say a body on a 204, would have those bytes read as the *next* client's answer:
  response-queue poisoning, the mirror image of request smuggling);
* on the way out again, the socket is found quiet: no EOF (the backend closed it while it
  sat idle), no unsolicited bytes (the quiet check, below).

A connection a request without a task gave back (:meth:`BackendPool.release_now` with the
client connection's poller) stays *parked* in that poller's epoll set while idle: the next
request of the same client connection takes it with no ``epoll_ctl`` pair (each client
connection prefers the ones it parked), and bytes or an EOF that arrive while it is idle
wake the poller, which drops it at once (:meth:`BackendConnection.on_readable`); it stays
the socket's watcher while a request uses it (``backend/kept_connection.py``). A take
still checks: the poller may not have run since they came (trio may run its round after the
taker's in the same batch).

The quiet check: a connection is found quiet *at some moment of the client read that takes
it, before its take*, not necessarily right before it (the same bound as the read's shared
clock reading, ``http2/lean_requests.py``). A parked connection is in its poller's
level-triggered epoll set, so bytes or an EOF on it make that set ready: the second lean
start of a client read asks the set once which descriptors are ready
(:meth:`BackendPoller.ready_descriptors`, one ``epoll_wait`` that waits for nothing and
consumes nothing), and from then on the read's takes of connections parked there since
before the read began (``idle_since`` below the read's reading) whose descriptors are not
among them need no check of their own. The others (the read's first take, connections ready
then, parked since, taken from elsewhere, out of the set because the kernel refused to watch
them (``watched``: such a socket is never ready), or all of a read whose answer is unknown
because the array came back full) are checked alone, one ``poll(0)`` each.

Why this is safe: the check was never exact, since a backend can close or speak a moment
after it; what it cannot catch is the same either way, only the window is longer (at most
a read's processing: other requests' starts, HPACK, log lines, where a check per take left
microseconds). An EOF in that window costs what it always could: the write or the answer's
read fails before any answer byte, and a reused connection's request without a body is
retried once on a new connection (``http2/polled_request.py``, ``reused``). Bytes in that
window (a backend's 408 as it closes an idle connection) would be read as the answer, as
bytes arriving just after a per-take check always could; ``backend_keepalive_s`` below the
backends' own keep-alive keeps us the side that closes an idle connection first.

Bounds: at most ``backend_max_idle`` idle connections per backend, each kept at most
``backend_keepalive_s`` (below the usual backend keep-alive, so we close first and rarely
send a request into a connection the backend is closing). :meth:`BackendPool.reap` closes
expired ones; the server runs it in the background.
"""

from __future__ import annotations

import math
import select

import trio

from h2ws_proxy.backend.idle_connections import IdleConnections
from h2ws_proxy.backend.kept_connection import BackendConnection
from h2ws_proxy.backend.upgrade import ConnectBackend
from h2ws_proxy.config import BackendAddress, Limits
from h2ws_proxy.counters import Histogram
from h2ws_proxy.errors import BackendConnectTimeout
from h2ws_proxy.transport.capabilities import PollableSocket, idle_is_quiet
from h2ws_proxy.transport.poller import BackendPoller


class BackendPool:
    """Idle keep-alive connections per backend address, bounded in count and age."""

    def __init__(
        self, limits: Limits, connect: ConnectBackend, connect_times: Histogram | None = None
    ) -> None:
        self._limits = limits
        self._connect = connect
        #: Observes how long each new connection took to connect.
        self._connect_times = connect_times
        self._idle: IdleConnections[BackendConnection] = IdleConnections()
        self._idle.keepalive = limits.backend_keepalive_s
        #: ``take_idle_now``'s usual take in one call, when the caller's client read asked
        #: its poller's ready set (``ready``): the newest connection parked in the caller's
        #: poller, taken when it needs no check of its own, else None and nothing taken:
        #: then :meth:`take_idle_now` (:meth:`IdleConnections.take_parked_quiet`).
        self.take_parked_quiet = self._idle.take_parked_quiet
        self._changed = trio.Event()
        #: When :meth:`reap` wakes next (``inf``: nothing idle, it waits for ``_changed``).
        self._next_reap = math.inf

    def apply_limits(self, limits: Limits) -> None:
        """Keep-alive limits from now on (a reload); the idle connections stay."""
        self._limits = limits
        self._idle.keepalive = limits.backend_keepalive_s

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    def has_idle(self, address: BackendAddress) -> bool:
        return self._idle.has(address)

    async def acquire(self, address: BackendAddress) -> BackendConnection:
        """An idle connection that still looks alive, else a new one (bounded in time).

        Raises BackendUnavailable or BackendTimeout as :func:`backend.open_backend_stream`.
        """
        connection = await self.take_idle(address)
        return connection if connection is not None else await self.connect(address)

    async def take_idle(self, address: BackendAddress) -> BackendConnection | None:
        """An idle connection that still looks alive, or None; never waits for the network
        (stale connections met on the way are closed, which yields)."""
        now = trio.current_time()
        while (connection := self._idle.newest(address)) is not None:
            self._detach(connection)  # a task waits on it in trio from now on
            if self._still_good(connection, now):
                return connection
            await trio.aclose_forcefully(connection.stream)
        return None

    def take_idle_now(
        self,
        address: BackendAddress,
        poller: BackendPoller,
        now: float | None = None,
        ready: set[int] | None = None,
    ) -> BackendConnection | None:
        """:meth:`take_idle` for a request run without a task on ``poller``'s client
        connection: a connection whose socket a poller can drive, or None. Stale ones met
        on the way are closed at once; a connection that is not such a socket stays for
        :meth:`take_idle`.

        One parked in ``poller`` is preferred. The connection comes in ``poller``'s epoll
        set, its own watcher there (one parked in it stays so; another is registered): the
        caller makes itself the connection's :attr:`~BackendConnection.user`, and then gives
        the connection back with :meth:`release_now` and the same poller, or unregisters the
        descriptor before closing it.

        ``now``: the caller's reading of the clock, taken at most one client read's
        processing ago (``http2/lean_requests.py``), else one is taken here. A reading that
        old can only take a connection that much past ``backend_keepalive_s``, a limit set
        well below the backends' own keep-alive for that reason (see the module).

        ``ready``: the descriptors of ``poller``'s set found ready at the start of the
        caller's client read (:meth:`BackendPoller.ready_descriptors`, asked after ``now``
        was read, in the same read), if it asked; then a connection parked in ``poller``
        since before ``now`` (``idle_since < now``) whose descriptor is not among them is
        quiet as of that read's start and taken without a check of its own (the module's
        rule). None: every take checks its connection itself.
        """
        if now is None:
            timers = poller.timers  # the clock the timers read: one call, not trio's three
            now = timers.now() if timers is not None else trio.current_time()
            ready = None  # (asked before a reading of the caller's only)
        keepalive = self._limits.backend_keepalive_s
        idle = self._idle
        while True:
            # ``_still_good``, with the socket's own check (it is one of ours), and
            # ``_detach``, inline: this runs per lean request.
            connection = idle.take_parked(address, poller)  # the usual one, taken at once
            if connection is not None:
                parked_in: BackendPoller | None = poller
                pollable = connection.socket  # (only a pollable socket is ever parked)
                assert pollable is not None
            else:
                connection = idle.best_for(address, poller)
                if connection is None:
                    return None
                pollable = connection.socket
                if pollable is None:
                    return None  # (it stays for ``take_idle``)
                parked_in = connection.parked_in
                idle.remove(connection)
            idle_since = connection.idle_since
            good = now - idle_since < keepalive
            if good and not (  # quiet as of the read's start (the module's rule)
                ready is not None
                and parked_in is poller
                and connection.watched  # (a socket the kernel refused to watch is never ready)
                and idle_since < now
                and connection.fd not in ready
            ):  # else ``pollable.is_quiet()``, without a register and unregister per take
                quiet_poll = connection.quiet_poll
                if quiet_poll is None:
                    quiet_poll = connection.quiet_poll = select.poll()
                    quiet_poll.register(pollable.fileno(), select.POLLIN)
                good = not quiet_poll.poll(0)
            if parked_in is not None and (parked_in is not poller or not good):
                parked_in.unregister(pollable.fileno())
            if good:
                if not connection.watched:  # parked elsewhere, nowhere, or out of the set
                    poller.register(connection.fd, connection)
                    if not connection.watched:  # the kernel refused it (the poller dropped it)
                        pollable.close_now()
                        continue
                connection.reused = True
                return connection
            pollable.close_now()

    def _still_good(self, connection: BackendConnection, now: float) -> bool:
        """Young enough and quiet (see the module rules): then marked reused."""
        if now - connection.idle_since < self._limits.backend_keepalive_s and idle_is_quiet(
            connection.stream
        ):
            connection.reused = True
            return True
        return False

    def _detach(self, connection: BackendConnection, keep_in: BackendPoller | None = None) -> None:
        """No longer idle: its socket leaves the epoll set it is parked in, unless that is
        ``keep_in``'s (the taker's own: its place there goes to the taker)."""
        parked_in = connection.parked_in
        self._idle.remove(connection)
        if parked_in is not None and parked_in is not keep_in:
            parked_in.unregister(connection.fileno())

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
        return BackendConnection(address=address, stream=stream, pool=self)

    async def release(self, connection: BackendConnection) -> None:
        """Keep ``connection`` (its last cycle ended cleanly) if there is room, else close it."""
        if self._keep(connection, trio.current_time()):
            # The exchange that gave it back yielded on its reads; a trip here only costs.
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        await trio.aclose_forcefully(connection.stream)

    def release_now(
        self,
        connection: BackendConnection,
        poller: BackendPoller,
        socket: PollableSocket | None = None,
        fd: int = -1,
        now: float = -1.0,
    ) -> None:
        """:meth:`release` without a yield, for a connection :meth:`take_idle_now` gave
        (its user cleared): kept, it stays parked in ``poller``, its socket's watcher there
        (put back in the set if its user paused it, registered if it never was); with no
        room for it, its socket leaves the set and closes at once. ``socket`` and
        ``fd``: the connection's, when the caller holds them already. Its ``idle_since`` is
        ``now``, a reading of the poller's clock taken in the poller's round going on
        (``BackendPoller.round_time``), or, when not given (-1.0), a reading taken here;
        never an older one shared: the quiet check takes a connection with ``idle_since``
        below a read's reading as parked before that read began, and no client read begins
        within a round of handlers (it runs without a yield)."""
        if socket is None:
            socket = connection.socket
            assert socket is not None, "only take_idle_now's connections come back here"
            fd = socket.fileno()
        if now < 0.0:
            timers = poller.timers  # the clock the timers read: one call, not trio's layers
            now = timers.now() if timers is not None else trio.current_time()
        if poller.closed:
            poller.unregister(fd)
            if not self._keep(connection, now):
                socket.close_now()
            return
        limits = self._limits  # (``_keep``, in place: this runs per lean request)
        if limits.backend_keepalive_s > 0 and self._idle.add_if_room(
            connection, now, limits.backend_max_idle, poller
        ):
            if self._next_reap == math.inf:
                self._changed.set()
            if not connection.watched:  # (paused by its user, or not in the set yet)
                poller.register(fd, connection)
            return
        poller.unregister(fd)
        socket.close_now()

    def discard_parked(self, connection: BackendConnection) -> None:
        """A parked connection turned readable while idle (the poller's callback): forget
        and close it."""
        if connection.parked_in is None:
            return  # taken meanwhile
        self._detach(connection)
        pollable = connection.socket
        if pollable is not None:
            pollable.close_now()

    def poller_gone(self, connection: BackendConnection) -> None:
        """The poller ``connection`` was parked in closed: it stays idle, parked nowhere."""
        self._idle.mark_unparked(connection)

    def _keep(
        self, connection: BackendConnection, now: float, parked_in: BackendPoller | None = None
    ) -> bool:
        """Keep ``connection`` idle from ``now`` (parked in ``parked_in``) if there is room;
        False: the caller closes it."""
        limits = self._limits
        if limits.backend_keepalive_s > 0 and self._idle.add_if_room(
            connection, now, limits.backend_max_idle, parked_in
        ):
            # Every connection is kept for the same time, so one given back now expires
            # after all the others: the reaper needs waking only if it waits for none.
            if self._next_reap == math.inf:
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
        expired, next_expiry = self._idle.expired(
            trio.current_time(), self._limits.backend_keepalive_s
        )
        for connection in expired:
            self._detach(connection)
        return expired, next_expiry

    async def aclose(self) -> None:
        """Close every idle connection (server shutdown)."""
        for connection in self._idle.everything():
            self._detach(connection)
            await trio.aclose_forcefully(connection.stream)
