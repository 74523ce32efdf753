"""Waiting for readability with one coroutine frame of trio's epoll wait, not three: a fenced
module.

``trio.lowlevel.wait_readable(fd)`` is trio's generated module function, which awaits the I/O
manager's ``wait_readable``, which awaits its ``_epoll_wait(fd, "read_task")``, which awaits
``wait_task_rescheduled``, which awaits the yield to the run loop: coroutine frames made on
the way down and resumed on the way back up, in every wait, and a few calls between them
(the current task, the waiter record's attribute by name). The proxy waits once per read
of a client connection (``LeanSocketStream.receive_some``) and once per round of a
connection's backend poller, so in a one-tunnel ping-pong each message pays two waits
(bench/README.md, "One tunnel message's hop", "A tunnel's round trip").
:func:`readable_waiter` gives a wait that does what ``_epoll_wait(fd, "read_task")`` does,
in one coroutine that yields to the run loop itself: the same waiter record set in the
same order, the same registration (the manager's own ``_update_registrations``), the same
abort on a cancel, the same outcome (trio's ``WaitTaskRescheduled`` and its answer). The two
records a wait makes (the descriptor's ``EpollWaiters``, which trio drops when a wait ends,
and the ``WaitTaskRescheduled``) are made with their fields set directly, not through
attrs' generated ``__init__``: a Python call each, per wait. Both are made once per
descriptor number and kept, for the last few numbers waited on (a bounded table): the
abort the ``WaitTaskRescheduled`` carries finds the descriptor's record when it runs, which
is the one the aborted wait set (trio drops a record whose task is set only as it
reschedules that task, and then no abort follows), so it holds nothing of one wait; and a
record trio dropped is held by nothing that acts on it again, so the next wait sets it up
afresh (its fields as a new one's) instead of making one. A wait on a kept number makes
no function and no record.

This touches trio's private internals, so it is fenced (STYLE): :func:`problems` checks that
``trio._core._run.GLOBAL_RUN_CONTEXT``, ``EpollIOManager._epoll_wait`` (the wait this one
repeats) and ``_update_registrations`` exist with their parameters, that the attrs classes
it reads or makes (``EpollIOManager``'s ``_epoll`` and ``_registered``, ``EpollWaiters``,
``WaitTaskRescheduled``) have the fields it uses, and that the two records have nothing in
their ``__init__`` but their fields. Names are not steps: it also compares the fingerprint
(a sha256 of the source, indentation removed) of every trio function and record whose steps
the wait copies or relies on (:func:`fingerprints`: the public wait, the manager's
``wait_readable``, ``_epoll_wait``, ``_update_registrations``, ``wait_task_rescheduled``,
``_async_yield``, the two records, and where trio drops a record: the manager's
``notify_closing`` and ``process_events`` and ``wake_all``) with those of the trio versions tested
(``trio_sources_tested.py``, every release pyproject allows). It runs at import and again
at each loop's first :func:`readable_waiter`. Where anything differs or a source cannot be
read (another trio, another platform, an install without sources, outside a loop),
:func:`readable_waiter` is trio's public ``wait_readable``: only the speed differs.

To add a newly tested trio: install it, run ``bench/trio_fingerprints.py``, read the diff of
each source whose fingerprint is new against the nearest tested version (a changed step is
a change to make here first), run tests/unit/test_trio_waits*.py with it, and add its entry
to ``TESTED_TRIO_SOURCES`` (and widen pyproject's bound).

A ``KeyboardInterrupt`` is deferred in it as in trio's public wait (marked with trio's public
``enable_ki_protection``). The waiter is shared by everything of one loop; a stream keeps it
for the loop it lives in.

The loop's first waiter also makes the loop's every wake-up cheaper: the run loop asks its
``Instruments`` (a ``UserDict`` since trio 0.30) five times per task step and I/O wait
whether a hook has an instrument, a Python call each; :func:`_lighten_instruments` gives the
runner the same table as a dict subclass (:class:`_HookTable`), with trio's own methods, so
asking is not a call. Instruments given to ``trio.run`` stay, and
``add_instrument``/``remove_instrument`` work as before. The table has a fence of its own
(:func:`hook_table_problems`: ``Runner.instruments``, ``Instruments`` a ``UserDict`` with the
methods taken over, its source's fingerprint a tested one); where it does not hold, or
``Instruments`` is a dict already (trio 0.25 to 0.29: asking is no call there), the table is
left as trio made it and the wait is unaffected.
"""

from __future__ import annotations

import hashlib
import inspect
import textwrap
import types
from collections import UserDict
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Protocol

import trio

from h2ws_proxy.transport.trio_sources_tested import TESTED_TRIO_SOURCES


class HasFileno(Protocol):
    def fileno(self) -> int: ...


#: ``await wait(fd)``: a descriptor or an object with ``fileno()``, as ``wait_readable`` takes.
ReadableWait = Callable[[int | HasFileno], Awaitable[None]]

_PUBLIC: ReadableWait = trio.lowlevel.wait_readable

#: The manager's methods that drop a descriptor's record (besides ``_update_registrations``).
_DROPPING = ("notify_closing", "process_events")

#: A trio function or class whose source is fingerprinted.
_Source = Callable[..., object]


def problems() -> list[str]:
    """What is missing or changed of the trio internals the wait uses (empty: none)."""
    try:
        from trio._core import _io_epoll
        from trio._core._io_epoll import EpollIOManager, EpollWaiters
        from trio._core._run import GLOBAL_RUN_CONTEXT  # noqa: F401 (its presence is checked)
        from trio._core._traps import WaitTaskRescheduled
    except ImportError as error:  # another trio, or no epoll here
        return [f"trio._core internals: {error}"]
    wait = getattr(EpollIOManager, "_epoll_wait", None)
    if wait is None or not inspect.iscoroutinefunction(wait):
        return ["trio._core._io_epoll.EpollIOManager._epoll_wait as a coroutine function"]
    if list(inspect.signature(wait).parameters) != ["self", "fd", "attr_name"]:
        return ["EpollIOManager._epoll_wait(self, fd, attr_name)"]
    update = getattr(EpollIOManager, "_update_registrations", None)
    if update is None or list(inspect.signature(update).parameters) != ["self", "fd"]:
        return ["EpollIOManager._update_registrations(self, fd)"]
    if _field_names(EpollIOManager)[:2] != ["_epoll", "_registered"]:
        return ["EpollIOManager's _epoll and _registered"]
    if _field_names(EpollWaiters) != ["read_task", "write_task", "current_flags"]:
        return ["EpollWaiters(read_task, write_task, current_flags)"]
    if _field_names(WaitTaskRescheduled) != ["abort_func"]:
        return ["WaitTaskRescheduled(abort_func)"]
    if not all(callable(getattr(EpollIOManager, name, None)) for name in _DROPPING) or (
        not callable(vars(_io_epoll).get("wake_all"))
    ):
        return ["EpollIOManager's notify_closing, process_events and wake_all"]
    for record in (EpollWaiters, WaitTaskRescheduled):
        if not _plain_record(record):
            return [f"{record.__name__}, a plain record (made without its __init__)"]
    return _untested_sources(_wait_sources())


def hook_table_problems() -> list[str]:
    """Why the loop's instruments stay trio's own table (empty: none, the loop's first waiter
    gives the runner a :class:`_HookTable`). The wait does not depend on it."""
    try:
        from trio._core._instrumentation import Instruments
        from trio._core._run import Runner
    except ImportError as error:
        return [f"trio._core internals: {error}"]
    if "instruments" not in _field_names(Runner):
        return ["Runner.instruments"]
    if issubclass(Instruments, dict) and Instruments.__contains__ is dict.__contains__:
        # trio 0.25 to 0.29: asking the table is no Python call already.
        return ["trio's Instruments, a dict already (nothing to swap)"]
    if not issubclass(Instruments, UserDict) or any(
        not callable(getattr(Instruments, name, None)) for name in _INSTRUMENTS_METHODS
    ):
        return ["trio's Instruments, a UserDict with " + ", ".join(_INSTRUMENTS_METHODS)]
    return _untested_sources({"Instruments": Instruments})


def fingerprints() -> dict[str, str | None]:
    """The fingerprint of every trio function and class whose steps this module copies or
    relies on, by name: the wait's and the hook table's (None: its source cannot be read).
    ``bench/trio_fingerprints.py`` prints them as an entry of ``TESTED_TRIO_SOURCES``."""
    from trio._core._instrumentation import Instruments

    sources = _wait_sources() | {"Instruments": Instruments}
    return {name: fingerprint(source) for name, source in sources.items()}


def _wait_sources() -> dict[str, _Source]:
    """What the wait copies or relies on, found where trio's own code finds it when it
    waits: a trio that changes any of these steps, names kept, is not one we tested."""
    from trio import _core
    from trio._core import _io_epoll, _traps

    manager = _io_epoll.EpollIOManager
    return {
        "trio.lowlevel.wait_readable": trio.lowlevel.wait_readable,  # the wait replaced
        "EpollIOManager.wait_readable": manager.wait_readable,
        "EpollIOManager._epoll_wait": manager._epoll_wait,
        "EpollIOManager._update_registrations": manager._update_registrations,
        # Where trio drops a descriptor's record, which the kept record relies on doing
        # only with no task set or while rescheduling its tasks (``kept_for``).
        "EpollIOManager.notify_closing": manager.notify_closing,
        "EpollIOManager.process_events": manager.process_events,
        "wake_all": vars(_io_epoll)["wake_all"],  # as notify_closing calls it
        "EpollWaiters": _io_epoll.EpollWaiters,
        # as _epoll_wait calls it (``_core.wait_task_rescheduled``)
        "wait_task_rescheduled": vars(_core)["wait_task_rescheduled"],
        "_async_yield": _traps._async_yield,
        "WaitTaskRescheduled": _traps.WaitTaskRescheduled,
    }


def _untested_sources(sources: dict[str, _Source]) -> list[str]:
    """Empty when one tested trio had all of ``sources`` as they are (a part is taken whole
    from one version, not mixed); else the names that differ from the nearest tested."""
    found = {name: fingerprint(source) for name, source in sources.items()}
    differences = [
        [name for name, digest in found.items() if digest is None or tested.get(name) != digest]
        for _versions, tested in TESTED_TRIO_SOURCES
    ] or [list(found)]
    changed = min(differences, key=len)
    if not changed:
        return []
    return [f"trio's source of {', '.join(changed)}: not as in a trio tested"]


#: Fingerprints made, by object (kept, so an id is not reused): the fence runs again at
#: each loop's first waiter, and reading a source is not free.
_FINGERPRINTS: dict[int, tuple[_Source, str | None]] = {}


def fingerprint(source: _Source) -> str | None:
    """The first 32 hex digits of the sha256 of ``source``'s text, its leading indentation
    removed (None: no text to read, as in an install without sources). A function's text is
    its own code's: ``inspect.getsource`` would follow a wrapper's ``__wrapped__`` to the
    function it wraps, and miss the wrapper's steps."""
    known = _FINGERPRINTS.get(id(source))
    if known is not None and known[0] is source:
        return known[1]
    try:
        text = textwrap.dedent(inspect.getsource(getattr(source, "__code__", source)))
    except (OSError, TypeError):
        digest = None
    else:
        digest = hashlib.sha256(text.encode()).hexdigest()[:32]
    _FINGERPRINTS[id(source)] = (source, digest)
    return digest


def _field_names(cls: type) -> list[str]:
    """An attrs class's fields (none for anything else)."""
    fields = getattr(cls, "__attrs_attrs__", ())
    return [field.name for field in fields]


def _plain_record(cls: type) -> bool:
    """An attrs class whose ``__init__`` only sets its fields: no validator, converter or
    post-init step that a record made without it would miss, and no ``__new__`` of its own."""
    fields = getattr(cls, "__attrs_attrs__", ())
    return (
        bool(fields)
        and all("__new__" not in vars(base) for base in cls.__mro__[:-1])
        and not hasattr(cls, "__attrs_post_init__")
        and not hasattr(cls, "__attrs_pre_init__")
        and all(field.validator is None and field.converter is None for field in fields)
    )


def _internal_waiter() -> Callable[[], ReadableWait]:
    """:func:`readable_waiter` where the internals are there."""
    from outcome import Value  # (trio's dependency, public: a wait that ended well)
    from trio._core._io_epoll import EpollIOManager, EpollWaiters
    from trio._core._run import GLOBAL_RUN_CONTEXT
    from trio._core._traps import WaitTaskRescheduled

    succeeded = trio.lowlevel.Abort.SUCCEEDED
    # One waiter per loop, shared by every stream and poller of it: a waiter per stream
    # would cost each idle connection a closure or two.
    shared: list[tuple[object, ReadableWait]] = []

    def waiter_of(manager: Any) -> ReadableWait:
        """``manager._epoll_wait(fd, "read_task")`` with ``wait_task_rescheduled`` folded
        into it: the same record set in the same order, the same registration, the same
        abort."""
        registered = manager._registered
        update = manager._update_registrations
        make, set_field = object.__new__, object.__setattr__
        #: Per descriptor number, made at its first wait and kept: the run loop's message
        #: (it only carries the abort, which reads nothing of one wait but the descriptor:
        #: see ``kept_for``) and a spare record. At most ``_KEPT_DESCRIPTORS`` numbers,
        #: emptied when full: closed descriptors' numbers would otherwise hold theirs for
        #: the loop's life. Emptying is safe: a pending abort finds its record through
        #: ``registered``, and a spare is used only where ``registered`` has none.
        kept: dict[int, tuple[object, Any]] = {}

        def kept_for(fd: int) -> tuple[object, Any]:
            """The ``WaitTaskRescheduled`` whose abort does what ``_epoll_wait``'s does for
            ``fd``, and a record for ``fd``'s waits. The abort finds the record when it runs,
            not kept from the wait: while a wait is aborted its record is the one it set
            (``_update_registrations`` keeps a record whose task is set; ``notify_closing``,
            an event and a failed registration drop it only as they reschedule the task, and
            no abort comes after that). For the same reason a record trio dropped is held by
            nothing that acts on it again, so the next wait may set it up afresh."""

            def abort(_raise_cancel: object) -> trio.lowlevel.Abort:
                registered[fd].read_task = None
                update(fd)
                return succeeded

            if len(kept) >= _KEPT_DESCRIPTORS:
                kept.clear()
            message = make(WaitTaskRescheduled)
            set_field(message, "abort_func", abort)  # (frozen)
            pair = kept[fd] = (message, make(EpollWaiters))
            return pair

        async def wait(fd: int | HasFileno) -> None:
            if not isinstance(fd, int):
                fd = fd.fileno()
            message, spare = kept.get(fd) or kept_for(fd)
            waiters = registered.get(fd)
            if waiters is None:
                # The record set up as attrs' ``__init__`` sets up a new one (the fence
                # checks it has nothing more), without its Python call: trio drops a
                # descriptor's record when its wait ends, so nearly every wait sets one.
                # Not in ``registered``, the spare is in no wait (see ``kept_for``).
                waiters = registered[fd] = spare
                waiters.write_task = None
                waiters.current_flags = 0  # (``notify_closing`` drops one with its flags)
            elif waiters.read_task is not None:
                raise trio.BusyResourceError("another task is already reading / writing this fd")
            waiters.read_task = GLOBAL_RUN_CONTEXT.task
            update(fd)
            # What the run loop sends back is the wait's outcome: ``Value(None)``, not
            # unwrapped (it holds nothing this wait returns, and nothing else sees it), or
            # the exception that ended it (a cancel, the descriptor closed), raised here.
            result = await _suspend(message)
            if type(result) is not Value:
                result.unwrap()

        # A KeyboardInterrupt is deferred in it as in trio's public wait: one in the middle
        # of the registration would leave the descriptor's record set, and the next wait on
        # it would fail with BusyResourceError. (trio 0.28 and later mark the code, shared
        # by every loop's waiter, and return it; before, they return a wrapper.)
        return trio.lowlevel.enable_ki_protection(wait)

    def readable_waiter() -> ReadableWait:
        try:
            runner: Any = GLOBAL_RUN_CONTEXT.runner
        except AttributeError:  # not inside trio.run
            return _PUBLIC
        manager = runner.io_manager
        if type(manager) is not EpollIOManager:
            return _PUBLIC
        if shared and shared[0][0] is manager:
            return shared[0][1]
        # A new loop: the fence again, as trio's functions may have been replaced since
        # import (fingerprints are kept per object, so this reads no source twice).
        wait = _PUBLIC if problems() else waiter_of(manager)
        _lighten_instruments(runner)
        shared[:] = [(manager, wait)]
        return wait

    return readable_waiter


#: The descriptor numbers whose wait records a loop's waiter keeps (then it empties its
#: table): the few a busy connection waits on in turn (a client socket, a backend poller),
#: not one per connection a burst has opened and closed.
_KEPT_DESCRIPTORS = 16


#: The methods of trio's ``Instruments`` that :class:`_HookTable` takes over.
_INSTRUMENTS_METHODS = ("add_instrument", "remove_instrument", "call")


class _HookTable(dict[str, dict[Any, None]]):
    """trio's ``Instruments`` (a ``UserDict`` of the hooks that have instruments) as a dict
    subclass, with the same contents and the same methods (trio's own functions, which use
    only ``self.data``: here the table itself). The run loop asks ``"hook" in
    runner.instruments`` five times per task step and I/O wait, with none installed; on a
    ``UserDict`` each ask is a Python call, on a dict it is not."""

    __slots__ = ()

    @property
    def data(self) -> dict[str, dict[Any, None]]:
        return self


def _lighten_instruments(runner: Any) -> None:
    """Give the loop's ``runner`` a :class:`_HookTable` for its ``Instruments`` (once: a
    table stays), holding the same hooks and instruments; ``trio.lowlevel.add_instrument``
    and ``remove_instrument`` work on it as before. Only where the table's own fence holds,
    for the class whose methods the table took over."""
    instruments = runner.instruments
    if _taken_from and type(instruments) is _taken_from[0] and not hook_table_problems():
        runner.instruments = _HookTable(instruments.data)


#: The ``Instruments`` class whose methods :class:`_HookTable` has (none: no table).
_taken_from: list[type[Any]] = []


def _take_over_instruments() -> None:
    from trio._core._instrumentation import Instruments

    for name in _INSTRUMENTS_METHODS:
        setattr(_HookTable, name, getattr(Instruments, name))
    _taken_from[:] = [Instruments]


@types.coroutine
def _suspend(message: object) -> Generator[object, Any, Any]:
    """Hand ``message`` to the run loop, and return what it sends back (trio's own yield)."""
    return (yield message)


def _public_waiter() -> ReadableWait:
    return _PUBLIC


#: The running loop's wait for readability (``await waiter(fd)``), as ``wait_readable``;
#: call it inside the loop and keep it for that loop only.
readable_waiter: Callable[[], ReadableWait] = _public_waiter
if not problems():
    readable_waiter = _internal_waiter()
    if not hook_table_problems():
        _take_over_instruments()
