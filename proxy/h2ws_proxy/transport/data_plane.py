"""The data plane: every plain HTTP/2 connection's readiness, served from one ``epoll`` that
sleeps in the run loop's stead while the loop has nothing else to do.

Each such connection's :class:`~h2ws_proxy.transport.poller.BackendPoller` watches its
client socket and its backends' sockets; the data plane watches the pollers' descriptors
(an epoll is readable while a socket in its set is), and a ready one gets a round of its
handlers (:meth:`BackendPoller.round`), in the data plane's one task. Served through trio,
every such wake-up would cost a trip through the run loop (its ``epoll_wait``, a task's
reschedule and step) and the ``epoll_ctl`` that re-arms the task's next wait; a one-tunnel
ping-pong pays that twice per message (bench/README.md, "The data plane").

Rules:

* Sleeping (``sleep_when_idle``): only when the loop would sleep itself (``trio_idle.py``:
  no task can run, no deadline is due, no other task waits for the loop to go idle:
  ``wait_all_tasks_blocked`` says when), and never past the loop's next deadline. The epoll
  it sleeps in holds the loop's own epoll descriptor beside the pollers', so it wakes when
  anything the loop watches is ready (a task's socket, ``run_sync_soon``, a signal) and
  hands back to the loop at once. After a round it hands back too if the round made a task
  runnable (a writer woken, a task started): the loop runs it, and the plane sleeps again
  once the loop is idle again.
* While the loop is busy (``serve_ready``), a task waits in the loop for the pollers' own
  epoll to be readable, like any task: a busy loop still serves the pollers in turn with
  its other tasks, never only once it goes idle.
* A round must not raise (handlers' errors are the poller's: it drops the descriptor and
  tells its owner); should a round itself fail, its owner is told (``on_failed``) and the
  poller leaves the plane: one connection fails, not the others.
* One per run loop, started on first use as a system task (it outlives any connection);
  where ``trio_idle`` does not hold (another trio, a test's ``MockClock``, guest mode)
  there is none, and each poller runs its own task as before.
"""

from __future__ import annotations

import contextlib
import logging
import select
from collections.abc import Callable

import trio

from h2ws_proxy.log import log_event
from h2ws_proxy.transport.trio_idle import LoopIdle, loop_idle, wait_loop_idle
from h2ws_proxy.transport.trio_waits import readable_waiter

logger = logging.getLogger(__name__)

#: Ready pollers served per ``epoll_wait`` (more are served on the next one).
_MAX_EVENTS = 256

_SERVER_NAME = "h2ws_proxy.transport.data_plane.serve_ready"
_SLEEPER_NAME = "h2ws_proxy.transport.data_plane.sleep_when_idle"


class _Member:
    """A poller in the plane: its round, and whom to tell if the round fails."""

    __slots__ = ("on_failed", "round")

    def __init__(self, round_: Callable[[], None], on_failed: Callable[[BaseException], None]):
        self.round = round_
        self.on_failed = on_failed


class DataPlane:
    """The run loop's pollers, watched together (see the module rules)."""

    def __init__(self, idle: LoopIdle) -> None:
        self._idle = idle
        #: The pollers, for the loop to watch while it is busy (it cannot watch an epoll
        #: that holds its own: the kernel refuses such a loop of sets).
        self._epoll = select.epoll()
        #: The pollers and the loop's own epoll, for sleeping in the loop's stead.
        self._sleeper = select.epoll()
        self._loop_fd = idle.loop_fd
        self._sleeper.register(self._loop_fd, select.EPOLLIN)
        self._members: dict[int, _Member] = {}
        #: Times the plane slept in the loop's stead, and rounds served while it did:
        #: what a test reads to see that an exchange took the sleeping path.
        self.sleeps = 0
        self.rounds_asleep = 0
        #: Set when a poller joins an empty plane (the sleeper waits for one).
        self._joined = trio.Event()
        self.closed = False

    def add(
        self, fd: int, round_: Callable[[], None], on_failed: Callable[[BaseException], None]
    ) -> None:
        """Serve ``round_`` whenever ``fd`` (a poller's epoll) is readable."""
        self._epoll.register(fd, select.EPOLLIN)
        try:
            self._sleeper.register(fd, select.EPOLLIN)
        except OSError:
            self._epoll.unregister(fd)
            raise
        self._members[fd] = _Member(round_, on_failed)
        if not self._joined.is_set():
            self._joined.set()

    def remove(self, fd: int) -> None:
        """Stop serving ``fd`` (before it is closed); unknown descriptors are ignored."""
        if self._members.pop(fd, None) is not None:
            if not self._members:
                self._joined = trio.Event()
            for epoll in (self._epoll, self._sleeper):
                # Closed already: the kernel dropped it from the set.
                with contextlib.suppress(OSError):
                    epoll.unregister(fd)

    async def serve_ready(self) -> None:
        """Serve the pollers whenever the loop sees one ready (while the loop is busy, or
        until the sleeper takes over)."""
        epoll = self._epoll
        plane_fd, wait_readable, serve = epoll.fileno(), readable_waiter(), self._serve
        try:
            while True:
                await wait_readable(plane_fd)
                serve(epoll.poll(0, _MAX_EVENTS))
        finally:
            self._close()

    async def sleep_when_idle(self) -> None:
        """Sleep in the loop's stead each time the loop would sleep (see the module rules)."""
        idle = self._idle
        try:
            while True:
                if not self._members:
                    await self._joined.wait()
                    continue
                later = idle.not_now()
                if later is not None:
                    await trio.sleep(later)
                    continue
                begun = idle.idle_waits_begun()
                await wait_loop_idle()
                if idle.idle_waits_begun() == begun + 1:  # no other wait woken with it
                    self._sleep()
        finally:
            self._close()

    def _sleep(self) -> None:
        """Sleep and serve in the loop's stead until the loop has work."""
        idle, plane_fd = self._idle, self._epoll.fileno()
        # The loop must not see the pollers ready through ``serve_ready``'s wait while the
        # plane sleeps (its epoll would be readable then, for nothing the loop must do).
        disarmed = idle.disarm(plane_fd)
        try:
            self._sleep_disarmed()
        finally:
            if disarmed and not idle.rearm(plane_fd):
                # The loop would never wake ``serve_ready`` again: the pollers are served
                # only while the plane sleeps from now on (the loop idles often enough).
                log_event(logger, logging.ERROR, "data_plane.rearm_failed", fd=plane_fd)

    def _sleep_disarmed(self) -> None:
        sleeper, idle = self._sleeper, self._idle
        self.sleeps += 1
        while self._members:
            timeout = idle.sleep_time()
            if timeout <= 0.0:
                return
            events = sleeper.poll(timeout, _MAX_EVENTS)
            if not events:
                return  # the loop's next deadline: its timers' turn
            if self._serve(events):
                return  # the loop has work
            self.rounds_asleep += 1
            if idle.tasks_can_run():
                return

    def _serve(self, events: list[tuple[int, int]]) -> bool:
        """A round for each ready poller; True if the loop's own epoll was ready too."""
        loop_ready = False
        members, loop_fd = self._members, self._loop_fd
        for fd, _events in events:
            if fd == loop_fd:
                loop_ready = True
                continue
            member = members.get(fd)  # None: removed by an earlier round of these
            if member is None:
                continue
            try:
                member.round()
            except Exception as error:
                self._failed(fd, member, error)
        return loop_ready

    def _close(self) -> None:
        """The run ends (its system tasks are cancelled): the plane's epolls close."""
        if not self.closed:
            self.closed = True
            self._epoll.close()
            self._sleeper.close()

    def _failed(self, fd: int, member: _Member, error: Exception) -> None:
        log_event(logger, logging.ERROR, "data_plane.round_failed", fd=fd, error=repr(error))
        logger.debug("a poller's round failed (fd %d)", fd, exc_info=True)
        self.remove(fd)
        try:
            member.on_failed(error)
        except Exception as second:
            log_event(logger, logging.ERROR, "data_plane.round_failed", fd=fd, error=repr(second))


_PLANE: trio.lowlevel.RunVar[DataPlane | None] = trio.lowlevel.RunVar("h2ws_proxy.data_plane")


def current_data_plane() -> DataPlane | None:
    """The running loop's data plane, started on first use; None where there is none."""
    try:
        return _PLANE.get()
    except LookupError:
        pass
    idle = loop_idle()
    plane = None if idle is None else DataPlane(idle)
    _PLANE.set(plane)
    if plane is not None:
        trio.lowlevel.spawn_system_task(plane.serve_ready, name=_SERVER_NAME)
        trio.lowlevel.spawn_system_task(plane.sleep_when_idle, name=_SLEEPER_NAME)
    return plane
