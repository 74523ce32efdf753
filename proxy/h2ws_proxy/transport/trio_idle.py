"""When trio's run loop would sleep, and on what: a fenced module.

The data plane (``data_plane.py``) sleeps in its own ``epoll`` in the run loop's stead while
the loop has nothing to do, so that a ready client or backend socket is served without a
trip through the loop (its ``epoll_wait``, a task's reschedule and step, and the re-arming
``epoll_ctl`` of the task's next wait: bench/README.md, "The data plane"). To do that
safely it must know what the loop itself would do at that moment:

* whether any task can run (the run queue), a KeyboardInterrupt is pending, or another task
  waits for the loop to go idle (``wait_all_tasks_blocked``: the loop wakes those only when
  it would sleep, so it must be the one to sleep then);
* how long the loop would sleep: until its next deadline, by its clock (``SystemClock``
  only: a test's ``MockClock`` jumps when the loop is idle, and only the loop can do that),
  and not at all while an instrument wants to hear of the loop's sleeps;
* the loop's own ``epoll`` descriptor: readable whenever a descriptor the loop watches is
  ready (a task's socket, the wake-up socket of ``run_sync_soon``, signals, threads), so
  the data plane, watching it too, hands back to the loop at once when the loop has work;
* whether another task's wait for the loop to go idle began while the plane's own was on
  (the loop's table of such waits, a ``SortedDict``, is wrapped in one that counts
  them): the loop wakes all the shortest such waits in one batch, so that task may be
  waiting in the batch to run, and the plane must not sleep before it has;
* how to keep one descriptor a task waits on (the data plane's own epoll, for its task that
  serves it while the loop is busy) from making the loop's epoll readable while the plane
  sleeps: the loop arms a wait for one event (``EPOLLIN | EPOLLONESHOT``, its
  ``_update_registrations``), so the plane disarms it before sleeping and arms it again,
  as it was, before any task runs.

These are trio's private internals (``GLOBAL_RUN_CONTEXT.runner``'s ``runq``,
``deadlines``, ``clock``, ``waiting_for_idle``, ``ki_pending``, ``instruments``,
``is_guest`` and its I/O manager's ``_epoll``), so they are fenced (STYLE): :func:`problems`
checks that they exist and that the sources of the steps this relies on (the run loop that
computes its sleep from these, the deadlines' ``next_deadline``, the clock's
``deadline_to_sleep_time``, ``wait_all_tasks_blocked``, the I/O manager's ``get_events``,
``process_events`` and ``_update_registrations``) have the fingerprints of a trio tested
(:data:`TESTED`). Wherever anything differs, :func:`loop_idle` is None and the
data plane waits in the loop like any task: only the speed differs.

To test another trio: install it, print :func:`fingerprints`, read the diff of each changed
source against the tested one (how the loop computes its timeout and wakes idle waiters is
what matters), run tests/unit/test_data_plane*.py with it, and add its entry to
:data:`TESTED`.
"""

from __future__ import annotations

import select
from collections.abc import Callable, Iterator
from typing import Any

import trio
import trio.testing

from h2ws_proxy.transport.trio_waits import fingerprint

#: The loop's own longest sleep (trio's ``_MAX_TIMEOUT``): a deadline further away waits
#: this long at most, and the next sleep is computed afresh.
_LONGEST_SLEEP_S = 24 * 60 * 60

#: An instrument with this hook is told of the loop's every sleep: the plane leaves the
#: sleeping to the loop while one is installed, and asks again this often.
_IO_WAIT_HOOK = "before_io_wait"
_INSTRUMENTED_RECHECK_S = 0.1

#: How long after another task's wait for the loop to stay idle the plane asks again.
_AFTER_IDLE_WAIT_S = 0.001

#: (the trio versions, their sources' fingerprints by name): read and tested.
TESTED: tuple[tuple[str, dict[str, str]], ...] = (
    (
        "0.35.0",
        {
            "unrolled_run": "9226ba6956c1ca77c9a82b37847f1aa5",
            "Deadlines.next_deadline": "03f7988ec29896138a65b2e1c5ed4dd9",
            "SystemClock.deadline_to_sleep_time": "68f44f603ba7822b14b5c314fe94b96b",
            "Runner.wait_all_tasks_blocked": "e8a5c0b39a5dc078b53ea09d236f619b",
            "EpollIOManager.get_events": "b15c4ffbdf99c8b971cebdd759288a6f",
            "EpollIOManager._update_registrations": "b927f98bc53dae5971c6c56cf141ddec",
            "EpollIOManager.process_events": "739e0d690946fd8d0ea8336bb304847d",
        },
    ),
)

_Source = Callable[..., object]


def _sources() -> dict[str, _Source]:
    from trio._core import _io_epoll, _run

    return {
        "unrolled_run": _run.unrolled_run,
        "Deadlines.next_deadline": _run.Deadlines.next_deadline,
        "SystemClock.deadline_to_sleep_time": _run.SystemClock.deadline_to_sleep_time,
        "Runner.wait_all_tasks_blocked": _run.Runner.wait_all_tasks_blocked,
        "EpollIOManager.get_events": _io_epoll.EpollIOManager.get_events,
        "EpollIOManager._update_registrations": _io_epoll.EpollIOManager._update_registrations,
        "EpollIOManager.process_events": _io_epoll.EpollIOManager.process_events,
    }


def fingerprints() -> dict[str, str | None]:
    """The installed trio's fingerprints of the sources this module relies on."""
    return {name: fingerprint(source) for name, source in _sources().items()}


def problems() -> list[str]:
    """What is missing or changed of the trio internals this uses (empty: none)."""
    try:
        from trio._core._io_epoll import EpollIOManager
        from trio._core._run import GLOBAL_RUN_CONTEXT, Runner  # noqa: F401 (checked)
    except ImportError as error:  # another trio, or no epoll here
        return [f"trio._core internals: {error}"]
    fields = {field.name for field in getattr(Runner, "__attrs_attrs__", ())}
    wanted = {"runq", "deadlines", "clock", "io_manager", "waiting_for_idle", "is_guest"}
    wanted |= {"ki_pending", "instruments"}
    if not wanted <= fields:
        return ["Runner's " + ", ".join(sorted(wanted - fields))]
    manager_fields = [field.name for field in getattr(EpollIOManager, "__attrs_attrs__", ())]
    if "_epoll" not in manager_fields:
        return ["EpollIOManager._epoll"]
    found = fingerprints()
    for _versions, tested in TESTED:
        if all(tested.get(name) == digest for name, digest in found.items()):
            return []
    return ["trio's run loop and idle waits: not as in a trio tested"]


#: Checked once, at import (the sources do not change while the process runs).
PROBLEMS = problems()


class LoopIdle:
    """The running loop's facts, read per question (each is an attribute or two)."""

    __slots__ = (
        "_clock",
        "_deadlines",
        "_instruments",
        "_loop_epoll",
        "_runner",
        "_runq",
        "_waiting_for_idle",
        "loop_fd",
    )

    def __init__(self, runner: Any) -> None:
        self._runner = runner
        self._runq = runner.runq
        self._deadlines = runner.deadlines
        self._clock = runner.clock
        self._instruments = runner.instruments
        self._waiting_for_idle = runner.waiting_for_idle
        self._loop_epoll: select.epoll = runner.io_manager._epoll
        #: The loop's own epoll: readable while a descriptor the loop watches is ready.
        self.loop_fd: int = self._loop_epoll.fileno()

    def tasks_can_run(self) -> bool:
        """A task is scheduled (or a KeyboardInterrupt waits to be delivered to one)."""
        return bool(self._runq) or self._runner.ki_pending

    def idle_waits_begun(self) -> int:
        """How many waits for the loop to go idle began so far (the plane's own included)."""
        waits: _CountedIdleWaits = self._waiting_for_idle
        return waits.begun

    def not_now(self) -> float | None:
        """How long to leave the sleeping to the loop before asking again, or None: the
        plane may wait for the loop to go idle and sleep in its stead. Not while another
        task waits for the loop to stay idle a while (a test's ``wait_all_tasks_blocked``:
        the loop must sleep that, and it wakes the shortest wait first), nor while an
        instrument wants to hear of the loop's every sleep."""
        waiting = self._waiting_for_idle
        if waiting:
            return float(max(cushion for cushion, _task in waiting)) + _AFTER_IDLE_WAIT_S
        if _IO_WAIT_HOOK in self._instruments:
            return _INSTRUMENTED_RECHECK_S
        return None

    def sleep_time(self) -> float:
        """How long the loop would sleep now, in seconds; 0: it would not sleep (a task can
        run, a deadline is due, or another task waits for the loop to go idle)."""
        if self._runq or self._waiting_for_idle or self._runner.ki_pending:
            return 0.0
        if _IO_WAIT_HOOK in self._instruments:
            return 0.0  # an instrument is told of each of the loop's own sleeps
        timeout = self._clock.deadline_to_sleep_time(self._deadlines.next_deadline())
        if timeout <= 0:
            return 0.0
        return timeout if timeout < _LONGEST_SLEEP_S else _LONGEST_SLEEP_S

    def disarm(self, fd: int) -> bool:
        """Stop the loop's epoll reporting ``fd``, which a task waits on (the loop armed it
        for one event, ``EPOLLONESHOT``); False if the loop does not watch it now."""
        try:
            self._loop_epoll.modify(fd, select.EPOLLONESHOT)
        except OSError:
            return False
        return True

    def rearm(self, fd: int) -> bool:
        """Undo :meth:`disarm`, before any task runs: as the waiting task's registration was;
        False if the kernel refused (out of memory)."""
        try:
            self._loop_epoll.modify(fd, select.EPOLLIN | select.EPOLLONESHOT)
        except OSError:
            return False
        return True


class _CountedIdleWaits:
    """The loop's table of tasks waiting for it to go idle (trio's ``SortedDict``, kept),
    counting the waits begun: the loop wakes every wait with the shortest cushion together,
    in one batch, so a wait that began while the plane's own was on may have been woken
    with it, and may not have run yet when the plane looks (it is in the batch, not in the
    run queue). Only what the loop and ``wait_all_tasks_blocked`` do with the table (their
    sources are fingerprinted): set, delete, truth, the first key, the first item."""

    __slots__ = ("_table", "begun")

    def __init__(self, table: Any) -> None:
        self._table = table
        self.begun = 0

    def __setitem__(self, key: tuple[float, int], task: object) -> None:
        self.begun += 1
        self._table[key] = task

    def __delitem__(self, key: tuple[float, int]) -> None:
        del self._table[key]

    def __len__(self) -> int:
        return len(self._table)

    def __iter__(self) -> Iterator[tuple[float, int]]:
        return iter(self._table)

    def keys(self) -> Any:
        return self._table.keys()

    def peekitem(self, index: int = -1) -> Any:
        return self._table.peekitem(index)


def loop_idle() -> LoopIdle | None:
    """The running loop's :class:`LoopIdle`; None where the fence does not hold, the loop
    runs as a guest or on another clock than trio's own."""
    if PROBLEMS:
        return None
    from trio._core._run import GLOBAL_RUN_CONTEXT, SystemClock

    runner = GLOBAL_RUN_CONTEXT.runner
    if runner.is_guest or type(runner.clock) is not SystemClock:
        return None
    waits = runner.waiting_for_idle
    if type(waits).__name__ == "SortedDict":
        runner.waiting_for_idle = _CountedIdleWaits(waits)
    elif type(waits) is not _CountedIdleWaits:
        return None
    return LoopIdle(runner)


#: Public, for the data plane's wait: returns when no other task can run and nothing the
#: loop watches is ready (the loop would sleep).
wait_loop_idle = trio.testing.wait_all_tasks_blocked
