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

One difference that does not matter here: trio's generated function is protected from
``KeyboardInterrupt`` (raised at its next checkpoint instead); the manager's own method is
not marked so. The proxy serves with SIGINT taken by ``trio.open_signal_receiver``
(server/serve.py), so trio raises no ``KeyboardInterrupt`` into its tasks meanwhile.
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

    def readable_waiter() -> ReadableWait:
        try:
            manager: Any = GLOBAL_RUN_CONTEXT.runner.io_manager
        except AttributeError:  # not inside trio.run
            return _PUBLIC
        if type(manager) is not EpollIOManager:
            return _PUBLIC
        return functools.partial(manager._epoll_wait, attr_name="read_task")

    return readable_waiter


def _public_waiter() -> ReadableWait:
    return _PUBLIC


#: The running loop's wait for readability (``await waiter(fd)``), as ``wait_readable``;
#: call it inside the loop and keep it for that loop only.
readable_waiter: Callable[[], ReadableWait] = _public_waiter if problems() else _internal_waiter()
