"""The running trio loop's clock in one call, not three: a fenced module.

``trio.current_time()`` is trio's generated module function, which calls its runner's
``current_time``, which calls the clock's: three Python calls for one reading, and every
request's record reads the clock twice (when it begins and when it ends). :func:`now` reads
the runner's clock itself, and for trio's own ``SystemClock`` its reading
(``offset + perf_counter()``) without the call: the same value.

This touches trio's private internals, so it is fenced (STYLE): at import it checks that
``trio._core._run.GLOBAL_RUN_CONTEXT`` and ``SystemClock`` exist and that
``SystemClock.current_time`` reads ``self.offset + perf_counter()`` (its source, and one
reading of a clock made here). Where any of it differs (another trio), :func:`now` is
``trio.current_time`` itself: only the speed differs. Another clock (a test's ``MockClock``)
is read through its own ``current_time``; outside a run :func:`now` raises trio's
``RuntimeError``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from time import perf_counter

import trio

#: The source line of the reading this module makes without the call.
_SYSTEM_READING = "return self.offset + perf_counter()"


def problems() -> list[str]:
    """What is missing or changed of the trio internals this module uses (empty: none)."""
    try:
        from trio._core import _run
    except ImportError as error:
        return [f"trio._core._run: {error}"]
    clock_class = getattr(_run, "SystemClock", None)
    if getattr(_run, "GLOBAL_RUN_CONTEXT", None) is None or clock_class is None:
        return ["trio._core._run.GLOBAL_RUN_CONTEXT and SystemClock"]
    try:
        source = inspect.getsource(clock_class.current_time)
    except (OSError, TypeError):
        return ["SystemClock.current_time's source"]
    if _SYSTEM_READING not in source or getattr(_run, "perf_counter", None) is not perf_counter:
        return [f"SystemClock.current_time as {_SYSTEM_READING!r} of time.perf_counter"]
    clock = clock_class()
    before = clock.offset + perf_counter()
    if not before <= clock.current_time() <= clock.offset + perf_counter():
        return ["SystemClock's reading as its offset plus perf_counter()"]
    return []


def _fenced_now() -> Callable[[], float]:
    """:func:`now` where the internals are there."""
    from trio._core._run import GLOBAL_RUN_CONTEXT, SystemClock

    current_time = trio.current_time

    def now() -> float:
        """``trio.current_time()``: the running loop's clock."""
        try:
            clock = GLOBAL_RUN_CONTEXT.runner.clock
        except AttributeError:  # not inside trio.run: trio's own error
            return current_time()
        if type(clock) is SystemClock:
            return clock.offset + perf_counter()
        return clock.current_time()

    return now


#: ``trio.current_time()``, in one call (see the module's rules).
now: Callable[[], float] = trio.current_time if problems() else _fenced_now()
