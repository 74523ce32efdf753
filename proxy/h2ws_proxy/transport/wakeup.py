"""A reusable wake-up signal for one waiting task: the cheap form of "new trio.Event per wait".

The HTTP/2 streams and the frontend's writer wait for "something changed" many times per
second per tunnel (bytes arrived, the window grew, output is queued) and re-check their
condition after each wake-up. With ``trio.Event`` that is a new event object, with a set of
waiting tasks, per wait: CPU per message and memory per idle tunnel. :class:`Wakeup` is one
object for the life of its owner, with two slots.

Rules: at most one task waits at a time (the owner's single reader or writer; a second
waiter is a bug and raises). A :meth:`set` with nobody waiting is remembered, so the next
:meth:`wait` returns at once: a wake-up is never lost, and a spurious one only costs the
waiter a re-check of its condition, which every caller makes anyway. :meth:`wait` is a
checkpoint either way, like ``trio.Event.wait``.
"""

from __future__ import annotations

from collections.abc import Awaitable

import trio


class Wakeup:
    """Wake the one task that waits, or remember that it should not wait next time."""

    __slots__ = ("_pending", "_task")

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None
        self._pending = False

    def set(self) -> None:
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)
        else:
            self._pending = True

    def discard(self) -> None:
        """Forget a remembered :meth:`set`: the waiter is about to re-check its condition
        anyway (e.g. it takes all the output the wake-ups announced), so waking it again for
        them would only cost it a trip through the scheduler to find nothing to do."""
        self._pending = False

    def parked(self) -> bool:
        """A task waits now (not yet woken, and its wait not cancelled)."""
        return self._task is not None

    async def wait(self) -> None:
        if self._pending:
            self._pending = False
            await trio.lowlevel.checkpoint()
            return
        if self._task is not None:
            raise trio.BusyResourceError("another task is already waiting on this wake-up")
        self._task = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)

    def park(self) -> Awaitable[object]:
        """:meth:`wait` without a coroutine frame of its own: await it at once, in the task
        that waits (it names the current task when called, so ``start_soon(w.park)``
        would park the caller). A parked task's frames are most of an idle tunnel's
        memory (bench/README.md, idle memory): the HTTP/2 stream's receive waits here."""
        if self._pending:
            self._pending = False
            return trio.lowlevel.checkpoint()  # noqa: ASYNC105 (the caller awaits it)
        if self._task is not None:
            raise trio.BusyResourceError("another task is already waiting on this wake-up")
        self._task = trio.lowlevel.current_task()
        return trio.lowlevel.wait_task_rescheduled(self._abort)  # noqa: ASYNC105 (as above)

    def _abort(self, _raise_cancel: object) -> trio.lowlevel.Abort:
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED
