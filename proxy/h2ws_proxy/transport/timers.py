"""The deadlines of one connection's streams, kept by one task instead of a cancel scope each.

A trio cancel scope with a deadline costs a heap push and pop on entry and exit, and moving
its deadline costs about as much again; a request or an idle tunnel that holds one pays for
it, and for the task that must sit inside the scope. A connection's streams share a few
timeouts (the request idle timeout, a tunnel's idle and half-closed timeouts), so their
deadlines come due in the order they were set: one FIFO per timeout length, kept in an
``OrderedDict`` (arm, re-arm and disarm in O(1), the earliest is the first), and one task
per connection that sleeps until the earliest deadline of all.

Rules:

* A :class:`Timer` is an object with a ``deadline`` slot and an ``on_timer()`` method; it is
  armed for one timeout length at a time (:meth:`ConnectionTimers.arm`), and re-arming it
  (activity) moves it to the end of that length's queue. :meth:`ConnectionTimers.disarm`
  forgets it; a timer that fired is forgotten before ``on_timer`` runs.
* ``on_timer`` runs in the timers' task, synchronously: it must not block or raise (an
  exception is logged and the others still fire). It may arm or disarm any timer.
* A deadline fires at or after it is due, never before: the task sleeps until the earliest
  one and checks the clock again on waking.
* Arms may share a reading (one client read's lean requests do): a timer armed later with
  an older reading sits behind a later deadline in its length's queue, so the queue's order
  is kept within one read's processing, and such a timer fires late by at most that much.
* The task is started by the connection (:meth:`run` in its nursery) and needs no wake-up
  unless a new deadline is earlier than the one it sleeps until, which happens only when a
  queue was empty (equal lengths keep FIFO order), so arming costs no scheduler call.
* A deadline that fits no queue's order (a fixed point in time, such as the drain's end of
  the Close wait) is armed with :meth:`ConnectionTimers.arm_at` into a heap: rare, so its
  stale entries are only dropped when they come up. Either way a timer is armed once.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import trio

from h2ws_proxy.log import log_event

logger = logging.getLogger(__name__)


def _clock_reader() -> Callable[[], float]:
    """The running trio clock's ``current_time``; outside a run (a test that builds the
    timers first), ``trio.current_time`` itself, which finds the clock at each call."""
    try:
        return trio.lowlevel.current_clock().current_time
    except RuntimeError:
        return trio.current_time


class Timer(Protocol):
    """The owner of one deadline (a request's idle timer, a tunnel's)."""

    #: When it fires (the clock's seconds); set by :class:`ConnectionTimers` only.
    deadline: float

    def on_timer(self) -> None:
        """The deadline passed (see the module rules)."""
        ...


class ConnectionTimers:
    """The armed timers of one connection, and the task that fires them."""

    __slots__ = (
        "_at", "_at_live", "_queues", "_sequence", "_sleeping_until", "_task", "now", "queues",
    )  # fmt: skip

    def __init__(self) -> None:
        #: ``trio.current_time()`` in one call rather than three: the run's clock's own
        #: reading, for the timers' owners that read the time per message (a tunnel).
        self.now: Callable[[], float] = _clock_reader()
        #: One queue per timeout length, in deadline order.
        self._queues: dict[float, OrderedDict[Timer, float]] = {}
        #: The same dict, for an owner that arms a new timer in place (:meth:`arm`'s rule
        #: for a queue that is not empty: a timer in no queue put at its end, its
        #: ``deadline`` set, no wake-up); never rebound, so the two stay one dict.
        self.queues = self._queues
        #: Deadlines armed with :meth:`arm_at`: (deadline, sequence, timer), a heap; an entry
        #: is live while ``_at_live`` maps its timer to its sequence.
        self._at: list[tuple[float, int, Timer]] = []
        self._at_live: dict[Timer, int] = {}
        self._sequence = itertools.count()
        #: The deadline the task sleeps until (``math.inf``: until woken).
        self._sleeping_until = math.inf
        self._task: trio.lowlevel.Task | None = None

    def arm(self, timer: Timer, timeout: float, now: float) -> None:
        """Fire ``timer`` ``timeout`` seconds after ``now`` (a clock reading taken no earlier
        than the activity the timeout counts from: a lean request's is its client read's,
        ``http2/lean_requests.py``), unless armed again or disarmed first. A timer is in one
        length's queue at a time."""
        deadline = now + timeout
        timer.deadline = deadline
        queue = self._queues.get(timeout)
        if queue is None:
            queue = self._queues[timeout] = OrderedDict()
        if timer in queue:
            queue.move_to_end(timer)
        else:
            queue[timer] = timeout
        if deadline < self._sleeping_until and self._task is not None:
            # Only a queue that was empty can bring an earlier deadline.
            self._wake(deadline)

    def arm_at(self, timer: Timer, deadline: float) -> None:
        """Fire ``timer`` at ``deadline``, unless armed again or disarmed (``disarm_at``)
        first; for a point in time rather than a length (see the module rules). A timer
        armed in a queue is disarmed from it by the caller first."""
        timer.deadline = deadline
        sequence = next(self._sequence)
        self._at_live[timer] = sequence
        heapq.heappush(self._at, (deadline, sequence, timer))
        if deadline < self._sleeping_until and self._task is not None:
            self._wake(deadline)

    def _wake(self, deadline: float) -> None:
        self._sleeping_until = deadline
        if self._task is not None:
            trio.lowlevel.reschedule(self._task)
            self._task = None

    def disarm(self, timer: Timer, timeout: float) -> None:
        """Forget ``timer`` (armed with ``timeout``); a timer not armed is ignored."""
        queue = self._queues.get(timeout)
        if queue is None or queue.pop(timer, None) is None:
            # Not in that queue: armed with another length (say, read again after a
            # reload), or not armed. Left in a queue with its deadline gone, it would hold
            # up every timer behind it (a queue fires in order): look in the others.
            for other in self._queues.values():
                if other.pop(timer, None) is not None:
                    break
        timer.deadline = math.inf

    def disarm_at(self, timer: Timer) -> None:
        """Forget ``timer`` armed with :meth:`arm_at` (its heap entry goes when it comes up)."""
        self._at_live.pop(timer, None)
        timer.deadline = math.inf

    def armed(self) -> int:
        return sum(len(queue) for queue in self._queues.values()) + len(self._at_live)

    async def run(self) -> None:
        """Fire timers as they come due, until cancelled (the connection's nursery)."""
        try:
            while True:
                now = trio.current_time()
                self._fire_due(now)
                earliest = self._earliest()
                self._sleeping_until = earliest
                if earliest == math.inf:
                    await self._park()
                else:
                    with trio.move_on_at(earliest):
                        await self._park()
        finally:
            self._task = None
            self._queues.clear()
            self._at.clear()
            self._at_live.clear()

    async def _park(self) -> None:
        self._task = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)

    def _abort(self, _raise_cancel: object) -> trio.lowlevel.Abort:
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _earliest(self) -> float:
        earliest = math.inf
        for queue in self._queues.values():
            if queue:
                first = next(iter(queue))
                if first.deadline < earliest:
                    earliest = first.deadline
        at = self._at
        while at and self._at_live.get(at[0][2]) != at[0][1]:
            heapq.heappop(at)  # disarmed or armed again since
        if at and at[0][0] < earliest:
            earliest = at[0][0]
        return earliest

    def _fire_due(self, now: float) -> None:
        for queue in list(self._queues.values()):
            while queue:
                timer = next(iter(queue))
                if timer.deadline > now:
                    break
                del queue[timer]
                _fire(timer)
        at, live = self._at, self._at_live
        while at and at[0][0] <= now:
            _deadline, sequence, timer = heapq.heappop(at)
            if live.get(timer) == sequence:
                del live[timer]
                _fire(timer)


def _fire(timer: Timer) -> None:
    timer.deadline = math.inf
    try:
        timer.on_timer()
    except Exception as error:
        log_event(logger, logging.ERROR, "timers.handler_failed", error=repr(error))
        logger.debug("timer handler failed", exc_info=True)
