"""Waiting for readability one coroutine frame from trio's epoll, not three: a fenced module.

``trio.lowlevel.wait_readable(fd)`` is trio's generated module function, which awaits the I/O
manager's ``wait_readable``, which awaits its ``_epoll_wait(fd, "read_task")``: three
coroutine frames made on the way down and resumed on the way back up, in every wait. The
proxy waits once per read of a client connection (``LeanSocketStream.receive_some``) and once
per round of a connection's backend poller, so in a one-tunnel ping-pong two of each
message's waits go through them (bench/README.md, "One tunnel message's hop").
:func:`readable_waiter` gives the running loop's ``_epoll_wait`` itself, bound to
``"read_task"``: the same wait, its registration and its cancellation unchanged.

This touches trio's private internals, so it is fenced (STYLE): at import it checks that
``trio._core._run.GLOBAL_RUN_CONTEXT`` and ``trio._core._io_epoll.EpollIOManager._epoll_wait``
exist with the parameters this module passes, and at each :func:`readable_waiter` that the
running loop's I/O manager is that class. Where any of it differs (another trio, another
platform, outside a loop), :func:`readable_waiter` is trio's public ``wait_readable``: only
the speed differs.

A ``KeyboardInterrupt`` is deferred in it as in trio's public wait (marked with trio's public
``enable_ki_protection``, which changes nothing for trio's own callers, protected already).
The waiter is shared by everything of one loop; a stream keeps it for the loop it lives in.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
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
        from trio._core._io_epoll import EpollIOManager
        from trio._core._run import GLOBAL_RUN_CONTEXT  # noqa: F401 (its presence is checked)
    except ImportError as error:  # another trio, or no epoll here
        return [f"trio._core internals: {error}"]
    wait = getattr(EpollIOManager, "_epoll_wait", None)
    if wait is None or not inspect.iscoroutinefunction(wait):
        return ["trio._core._io_epoll.EpollIOManager._epoll_wait as a coroutine function"]
    if list(inspect.signature(wait).parameters) != ["self", "fd", "attr_name"]:
        return ["EpollIOManager._epoll_wait(self, fd, attr_name)"]
    return []


def _internal_waiter() -> Callable[[], ReadableWait]:
    """:func:`readable_waiter` where the internals are there."""
    from trio._core._io_epoll import EpollIOManager
    from trio._core._run import GLOBAL_RUN_CONTEXT

    # The manager's wait, when called straight from our code, defers a KeyboardInterrupt to
    # its next checkpoint as trio's public wait does (trio's own callers are protected
    # already, so for them nothing changes): an interrupt in the middle of its
    # registration would leave the descriptor's record set, and the next wait on it
    # would fail with BusyResourceError.
    trio.lowlevel.enable_ki_protection(EpollIOManager._epoll_wait)
    # One waiter per loop, shared by every stream and poller of it: a waiter per stream
    # would cost each idle connection a partial, a bound method and a dict.
    shared: list[tuple[object, ReadableWait]] = []

    def readable_waiter() -> ReadableWait:
        try:
            manager: Any = GLOBAL_RUN_CONTEXT.runner.io_manager
        except AttributeError:  # not inside trio.run
            return _PUBLIC
        if type(manager) is not EpollIOManager:
            return _PUBLIC
        if shared and shared[0][0] is manager:
            return shared[0][1]
        wait = functools.partial(manager._epoll_wait, attr_name="read_task")
        shared[:] = [(manager, wait)]
        return wait

    return readable_waiter


def _public_waiter() -> ReadableWait:
    return _PUBLIC


#: The running loop's wait for readability (``await waiter(fd)``), as ``wait_readable``;
#: call it inside the loop and keep it for that loop only.
readable_waiter: Callable[[], ReadableWait] = _public_waiter if problems() else _internal_waiter()
