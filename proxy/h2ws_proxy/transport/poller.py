"""One readiness watcher for the backend sockets of one client connection's tunnels.

A trio task waiting on a socket costs a task (with its frames: most of an idle tunnel's
memory), an ``epoll_ctl`` per wait and a trip through the scheduler per wake-up. The
backend → client direction of an HTTP/2 tunnel needs none of that: the bytes it reads are
handed on synchronously (into the connection's HTTP/2 output). So the connection keeps one
``epoll`` of its own, level-triggered, with every such backend socket registered once; one
task waits for *that* descriptor to become readable (Linux lets an epoll be watched like a
socket) and then calls the handler of every ready backend. With many tunnels on a
connection, one wake-up serves all the backends that became readable together.

Rules:

* A handler (a :class:`Watcher`'s ``on_readable``) is a plain method: it must not block,
  and it reads at most one chunk per call (the descriptor stays ready if more is queued,
  so tunnels take turns); a tunnel reads once more after its backend's Close, for the
  end that follows it (``relay/polled.py``).
* A handler pauses its socket (:meth:`BackendPoller.pause`) when its client cannot take
  more (flow-control window, output backlog) and resumes it when it can: so, as with the
  task-based pump, a backend is read only as fast as its client takes the bytes.
* A handler must not raise. An unexpected exception is logged, the descriptor dropped and
  its ``on_error`` called (the tunnel fails), so one bug cannot stop the others; so is a
  descriptor the kernel refuses to watch again (``resume``: out of memory or watches).
* A handler whose tunnel moved bytes lists its lazily moved deadline in :attr:`moved`
  rather than reading the clock itself: once the round's output went (``on_round_end``),
  one reading taken then moves them all (:meth:`rearm_moved`). The client's reader does
  the same with one reading per client read (:attr:`read_time`).
* Linux only (``select.epoll``); :func:`BackendPoller.available` says whether it works
  here, and callers fall back to the task-based pump otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import select
from collections.abc import Callable
from typing import Protocol

import trio

from h2ws_proxy.log import log_event
from h2ws_proxy.transport.timers import ConnectionTimers
from h2ws_proxy.transport.trio_waits import readable_waiter

logger = logging.getLogger(__name__)

#: Ready sockets handled per ``epoll.poll`` call (more are handled on the next round).
_MAX_EVENTS = 256


class Watcher(Protocol):
    """The owner of a watched descriptor (a tunnel's downward direction). One object, not
    two callbacks: a bound method or a closure per tunnel is memory every idle tunnel pays
    (bench/README.md, idle memory)."""

    #: Set by the poller only: the descriptor is in its epoll set now. A flag here rather
    #: than a set of descriptors in the poller: a set entry per tunnel costs more.
    watched: bool

    def on_readable(self) -> None:
        """The descriptor is readable (bytes, EOF or an error): read at most one chunk."""
        ...

    def on_error(self) -> None:
        """The descriptor cannot be served any more (see the module docstring)."""
        ...

    def on_closed(self) -> None:
        """The poller ended (the connection's end): the descriptor is watched no more."""
        ...


class MovedTimer(Protocol):
    """A deadline that activity moves lazily (a tunnel's: ``relay_state.Relay``), listed in
    :attr:`BackendPoller.moved` when its owner moved bytes."""

    #: From this clock reading on, activity moves the deadline.
    rearm_from: float

    def rearm(self, now: float) -> None:
        """Activity came before ``now``, which reached ``rearm_from``: move the deadline."""
        ...


class BackendPoller:
    """The backend sockets of one client connection, watched together."""

    def __init__(
        self,
        *,
        on_round_start: Callable[[], None] | None = None,
        on_round_end: Callable[[], None] | None = None,
        timers: ConnectionTimers | None = None,
        nursery: trio.Nursery | None = None,
    ) -> None:
        #: Called around each round of handlers (the frontend batches its output there).
        self._on_round_start = on_round_start
        self._on_round_end = on_round_end
        #: The same connection's timers, where the tunnels it serves keep their deadlines
        #: (a polled tunnel needs both: ``run_tunnel``).
        self.timers = timers
        #: The connection's nursery, where a handler starts what must wait (a tunnel's
        #: direction that cannot go on synchronously: ``tunnel_polled.py``).
        self.nursery = nursery
        self._epoll = select.epoll()
        self._watchers: dict[int, Watcher] = {}
        #: How many descriptors are in the epoll set now (``Watcher.watched``). A paused one
        #: is taken out rather than given an empty event mask: epoll reports a hang-up or an
        #: error whatever the mask, and a paused tunnel must not be told its backend ended
        #: before it delivered the rest.
        self._watched = 0
        #: It ended (its connection did): it watches nothing any more. (A plain attribute:
        #: the pool reads it per request given back.)
        self.closed = False
        #: Rounds of handlers made so far (:meth:`run`'s and :meth:`dispatch`'s): what a test
        #: counts to check that an event took the one round it should.
        self.rounds = 0
        #: The timers of the tunnels whose bytes the round going on moved, moved once it is
        #: over (:meth:`rearm_moved`).
        self.moved: list[MovedTimer] = []
        #: The clock reading of the client read going on, taken by the first tunnel that
        #: moved bytes in it (``Relay.forward_up``); -1.0: none yet. The connection's reader
        #: sets it back after each read.
        self.read_time = -1.0
        #: The clock reading of the round of handlers going on, taken by the first handler
        #: that needs one (a lean request's end: the pool's release and the record's end);
        #: -1.0: none yet. Set back at each round's start and end, so a reading is never
        #: used outside the round it was taken in (the pool's quiet check relies on that).
        self.round_time = -1.0
        #: The timers' clock, in one call (``trio.current_time`` without timers).
        self.now: Callable[[], float] = trio.current_time if timers is None else timers.now

    @staticmethod
    def available() -> bool:
        return hasattr(select, "epoll")

    def register(self, fd: int, watcher: Watcher, *, paused: bool = False) -> None:
        """Call ``watcher.on_readable()`` whenever ``fd`` is readable (has bytes, EOF or an
        error), and ``watcher.on_error()`` if ``fd`` cannot be served any more.

        ``fd``'s place in the epoll set carries over from its previous watcher (a tunnel's
        opening hands its backend on: no ``epoll_ctl``), unless ``paused``: then it is out
        of the set, as after :meth:`pause`, until :meth:`resume`."""
        previous = self._watchers.get(fd)
        watched = watcher.watched = previous is not None and previous.watched
        self._watchers[fd] = watcher
        if paused:
            self.pause(fd)
        elif not watched:
            self.resume(fd)

    def pause(self, fd: int) -> None:
        watcher = self._watchers.get(fd)
        if watcher is not None and watcher.watched:
            watcher.watched = False
            self._watched -= 1
            # Already closed: the kernel dropped it from the set.
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)

    def resume(self, fd: int) -> None:
        watcher = self._watchers.get(fd)
        if watcher is not None and not watcher.watched and not self.closed:
            try:
                self._epoll.register(fd, select.EPOLLIN)
            except OSError as error:
                log_event(logger, logging.ERROR, "poller.rewatch_failed", fd=fd, error=str(error))
                self._drop(fd)
                return
            watcher.watched = True
            self._watched += 1

    def _drop(self, fd: int) -> None:
        """Stop serving ``fd`` and tell its owner."""
        watcher = self._watchers.get(fd)
        self.unregister(fd)
        if watcher is not None:
            watcher.on_error()

    def unregister(self, fd: int) -> None:
        """Forget ``fd`` (call before closing it); unknown descriptors are ignored."""
        self.pause(fd)
        self._watchers.pop(fd, None)

    def forget_closing(self, fd: int) -> None:
        """:meth:`unregister` for a descriptor its owner closes next, before any ``await``:
        no ``epoll_ctl``, as closing a socket's only descriptor drops it from every epoll
        set. Only for such a socket: one that was never dup'd nor inherited by a process
        that still holds it (the proxy does neither: sockets are made ``SOCK_CLOEXEC`` and
        workers are exec'd), or its stale entry would go on reporting to this set."""
        watcher = self._watchers.pop(fd, None)
        if watcher is not None and watcher.watched:
            watcher.watched = False
            self._watched -= 1

    def fileno(self) -> int:
        """The epoll descriptor, readable while a watched socket is: for an owner that
        waits in its own task instead of :meth:`run` (an HTTP/1.1 connection's)."""
        return self._epoll.fileno()

    def dispatch(self) -> None:
        """One round of handlers (as :meth:`run` makes after each wake-up), for such an owner."""
        self.rounds += 1
        self.round_time = -1.0
        try:
            self._run_handlers()
        finally:
            self.round_time = -1.0
            if self.moved:
                self.rearm_moved()

    def rearm_moved(self) -> None:
        """The end of a round in which tunnels moved bytes (:attr:`moved`): their deadlines
        move from one clock reading, taken now.

        So a round reads the clock once, not once per message, and after its output went
        (``run``): nothing between a wake-up and its send waits on it. The reading comes
        after every byte of the round was read, so no deadline is set early; it is late by
        at most the round's processing, and the timers' task cannot run before it (the
        round never yields). Whoever lists a timer in :attr:`moved` calls this before its
        next ``await``."""
        moved = self.moved
        now = self.now()
        for timer in moved:
            if now >= timer.rearm_from:
                timer.rearm(now)
        moved.clear()

    async def run(self) -> None:
        """Dispatch readiness until cancelled (the connection's nursery owns this task)."""
        epoll_fd, wait_readable, one_round = self._epoll.fileno(), readable_waiter(), self.round
        try:
            while True:
                await wait_readable(epoll_fd)
                one_round()
        finally:
            self.close()

    def round(self) -> None:
        """One round of handlers, after the epoll descriptor was seen readable (by
        :meth:`run`'s wait, or the data plane's: ``data_plane.py``)."""
        self.rounds += 1
        self.round_time = -1.0
        round_start = self._on_round_start
        if round_start is not None:
            round_start()
        try:
            self._run_handlers()
        finally:
            self.round_time = -1.0
            round_end = self._on_round_end
            if round_end is not None:
                round_end()  # (the round's output goes out here)
            if self.moved:
                self.rearm_moved()

    def _run_handlers(self) -> None:
        watchers = self._watchers
        if self._watched == 1 and len(watchers) == 1:
            # The epoll descriptor is readable only while a socket in its set is (the
            # kernel re-checks the ready ones when trio re-arms its wait), so with one
            # socket watched, that one is ready: no ``epoll_wait`` syscall to learn which
            # (one-tunnel ping-pong, bench/cpu_per_message.py). Should its bytes be gone
            # by now, its handler reads nothing and returns, as for a spurious event.
            # (One watched among several registered asks epoll: which one is not kept.)
            ((fd, watcher),) = watchers.items()
            try:
                watcher.on_readable()
            except Exception as error:
                self._handler_failed(fd, error)
            return
        for fd, _events in self._epoll.poll(0, _MAX_EVENTS):
            ready = watchers.get(fd)  # None: dropped by an earlier handler of this round
            if ready is not None:
                try:
                    ready.on_readable()
                except Exception as error:
                    self._handler_failed(fd, error)

    def _handler_failed(self, fd: int, error: Exception) -> None:
        """A bug: one line (the traceback at debug level); the tunnel fails alone."""
        log_event(logger, logging.ERROR, "poller.handler_failed", fd=fd, error=repr(error))
        logger.debug("backend readiness handler failed (fd %d)", fd, exc_info=True)
        self._drop(fd)

    def close(self) -> None:
        """Stop watching; every owner still registered is told (``on_closed``): a tunnel
        without a task of its own ends then, rather than never."""
        if not self.closed:
            self.closed = True
            watchers = list(self._watchers.values())
            self._watchers.clear()
            self._watched = 0
            trio.lowlevel.notify_closing(self._epoll.fileno())
            self._epoll.close()
            for watcher in watchers:
                try:
                    watcher.on_closed()
                except Exception as error:
                    log_event(logger, logging.ERROR, "poller.handler_failed", error=repr(error))
                    logger.debug("closing handler failed", exc_info=True)

    # ---- the pool's quiet check, once per client read (``backend/pool.py``) ----

    #: How many ready descriptors :meth:`ready_descriptors` can report; that many or more
    #: and it reports none (the pool then checks each take itself).
    ready_most = 256

    def ready_descriptors(self) -> set[int] | None:
        """The descriptors of the set that are ready now (bytes, an EOF or an error), from
        one ``epoll_wait`` that does not wait; None: not known (``ready_most`` or more were
        ready, so the array may have left some out, or the poller ended). Level-triggered:
        the descriptors stay ready for the poller's own rounds; this takes none of them."""
        if self.closed:
            return None
        most = self.ready_most
        events = self._epoll.poll(0, most)
        if len(events) >= most:
            return None
        return {fd for fd, _events in events}
