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
attrs' generated ``__init__``: a Python call each, per wait.

This touches trio's private internals, so it is fenced (STYLE): at import it checks that
``trio._core._run.GLOBAL_RUN_CONTEXT``, ``EpollIOManager._epoll_wait`` (the wait this one
repeats) and ``_update_registrations`` exist with their parameters, and that the attrs
classes it reads or makes (``EpollIOManager``'s ``_epoll`` and ``_registered``,
``EpollWaiters``, ``WaitTaskRescheduled``) have the fields it uses, and that the two records
have nothing in their ``__init__`` but their fields; at each
:func:`readable_waiter`, that the running loop's I/O manager is that class. Where any of it
differs (another trio, another platform, outside a loop), :func:`readable_waiter` is
trio's public ``wait_readable``: only the speed differs.

A ``KeyboardInterrupt`` is deferred in it as in trio's public wait (marked with trio's public
``enable_ki_protection``). The waiter is shared by everything of one loop; a stream keeps it
for the loop it lives in.

The loop's first waiter also makes the loop's every wake-up cheaper: the run loop asks its
``Instruments`` (a ``UserDict``) five times per task step and I/O wait whether a hook has
an instrument, a Python call each; :func:`_lighten_instruments` gives the runner the same
table as a dict subclass (:class:`_HookTable`), with trio's own methods, so asking is not
a call. Instruments given to ``trio.run`` stay, and ``add_instrument``/``remove_instrument``
work as before. The fence checks that ``Runner`` has ``instruments`` and ``Instruments`` is
a ``UserDict`` with the methods taken over.
"""

from __future__ import annotations

import inspect
import types
from collections import UserDict
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Protocol

import trio


class HasFileno(Protocol):
    def fileno(self) -> int: ...


#: ``await wait(fd)``: a descriptor or an object with ``fileno()``, as ``wait_readable`` takes.
ReadableWait = Callable[[int | HasFileno], Awaitable[None]]

_PUBLIC: ReadableWait = trio.lowlevel.wait_readable


def problems() -> list[str]:
    """What is missing or changed of the trio internals this module uses (empty: none)."""
    try:
        from trio._core._instrumentation import Instruments
        from trio._core._io_epoll import EpollIOManager, EpollWaiters
        from trio._core._run import (
            GLOBAL_RUN_CONTEXT,  # noqa: F401 (its presence is checked)
            Runner,
        )
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
    for record in (EpollWaiters, WaitTaskRescheduled):
        if not _plain_record(record):
            return [f"{record.__name__}, a plain record (made without its __init__)"]
    if "instruments" not in _field_names(Runner):
        return ["Runner.instruments"]
    if not issubclass(Instruments, UserDict) or any(
        not callable(getattr(Instruments, name, None)) for name in _INSTRUMENTS_METHODS
    ):
        return ["trio's Instruments, a UserDict with " + ", ".join(_INSTRUMENTS_METHODS)]
    return []


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

        async def wait(fd: int | HasFileno) -> None:
            if not isinstance(fd, int):
                fd = fd.fileno()
            # The records are made as attrs' ``__init__`` would make them (the fence checks
            # they have nothing more), without its Python call: trio deletes a descriptor's
            # record when its wait ends, so every wait makes one.
            waiters = registered.get(fd)
            if waiters is None:
                waiters = registered[fd] = make(EpollWaiters)
                waiters.write_task = None
                waiters.current_flags = 0
            elif waiters.read_task is not None:
                raise trio.BusyResourceError("another task is already reading / writing this fd")
            waiters.read_task = GLOBAL_RUN_CONTEXT.task
            update(fd)

            def abort(_raise_cancel: object) -> trio.lowlevel.Abort:
                waiters.read_task = None
                update(fd)
                return succeeded

            message = make(WaitTaskRescheduled)
            set_field(message, "abort_func", abort)  # (frozen)
            # What the run loop sends back is the wait's outcome: None, or the exception
            # that ended it (a cancel, the descriptor closed), raised here.
            (await _suspend(message)).unwrap()

        # A KeyboardInterrupt is deferred in it as in trio's public wait: one in the middle
        # of the registration would leave the descriptor's record set, and the next wait on
        # it would fail with BusyResourceError. (The mark is on the code, shared by every
        # loop's waiter.)
        trio.lowlevel.enable_ki_protection(wait)
        return wait

    def readable_waiter() -> ReadableWait:
        try:
            manager: Any = GLOBAL_RUN_CONTEXT.runner.io_manager
        except AttributeError:  # not inside trio.run
            return _PUBLIC
        if type(manager) is not EpollIOManager:
            return _PUBLIC
        if shared and shared[0][0] is manager:
            return shared[0][1]
        _lighten_instruments(GLOBAL_RUN_CONTEXT.runner)
        wait = waiter_of(manager)
        shared[:] = [(manager, wait)]
        return wait

    return readable_waiter


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
    and ``remove_instrument`` work on it as before."""
    from trio._core._instrumentation import Instruments

    instruments = runner.instruments
    if type(instruments) is Instruments:
        runner.instruments = _HookTable(instruments.data)


def _take_over_instruments() -> None:
    from trio._core._instrumentation import Instruments

    for name in _INSTRUMENTS_METHODS:
        setattr(_HookTable, name, getattr(Instruments, name))


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
    _take_over_instruments()
    readable_waiter = _internal_waiter()
