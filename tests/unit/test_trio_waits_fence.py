"""The wait's fence compares what trio's functions do, not only their names: a trio that
changes the steps inside ``_epoll_wait``, ``wait_task_rescheduled`` or the others the wait
copies (names and parameters kept) gets trio's public wait, which follows the change; the
instruments table has a fence of its own, and a trio whose ``Instruments`` is a dict already
(0.25 to 0.29) keeps the fast wait. (From the review of the branch.)"""

from __future__ import annotations

import functools
import socket
from collections import UserDict

import pytest
import trio
from trio._core import _traps
from trio._core._instrumentation import Instruments
from trio._core._io_epoll import EpollIOManager

from h2ws_proxy.transport import trio_waits
from h2ws_proxy.transport.trio_sources_tested import TESTED_TRIO_SOURCES


def _wait_once_readable() -> list[int]:
    """Run a loop that waits once, with the loop's waiter, on a socket with data; return
    the descriptor waited on."""
    ours: list[int] = []

    async def main() -> None:
        wait = trio_waits.readable_waiter()
        a, b = socket.socketpair()
        with a, b:
            a.setblocking(False)
            ours.append(a.fileno())
            b.send(b"x")
            await wait(a)

    trio.run(main)
    return ours


def test_a_changed_epoll_wait_body_is_followed(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, str]] = []
    original = EpollIOManager._epoll_wait

    async def _epoll_wait(self: EpollIOManager, fd: int, attr_name: str) -> None:
        calls.append((fd if isinstance(fd, int) else fd.fileno(), attr_name))  # one more step
        await original(self, fd, attr_name)

    monkeypatch.setattr(EpollIOManager, "_epoll_wait", _epoll_wait)
    ours = _wait_once_readable()
    assert [name for fd, name in calls if fd in ours] == ["read_task"]
    assert trio_waits.problems() == [
        "trio's source of EpollIOManager._epoll_wait: not as in a trio tested"
    ]


def test_a_changed_wait_task_rescheduled_is_followed(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    original = _traps.wait_task_rescheduled

    async def wait_task_rescheduled(abort_func: object) -> object:
        calls.append(trio.lowlevel.current_task().name)
        return await original(abort_func)  # type: ignore[arg-type]

    monkeypatch.setattr(trio._core, "wait_task_rescheduled", wait_task_rescheduled)
    _wait_once_readable()
    assert len([name for name in calls if name.endswith("main")]) == 1
    assert trio_waits.problems() == [
        "trio's source of wait_task_rescheduled: not as in a trio tested"
    ]


def test_a_source_that_cannot_be_read_gets_the_public_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An install without sources (here a function made at run time) cannot be compared:
    the public wait, as for any other difference."""
    namespace: dict[str, object] = {"original": EpollIOManager._update_registrations}
    exec("def _update_registrations(self, fd):\n    original(self, fd)\n", namespace)
    monkeypatch.setattr(EpollIOManager, "_update_registrations", namespace["_update_registrations"])
    assert trio_waits.problems() == [
        "trio's source of EpollIOManager._update_registrations: not as in a trio tested"
    ]

    async def main() -> None:
        assert trio_waits.readable_waiter() is trio.lowlevel.wait_readable

    trio.run(main)


def test_a_wrapper_is_not_taken_for_the_function_it_wraps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``inspect.getsource`` follows ``__wrapped__``; a trio that wraps ``_epoll_wait`` in a
    step of its own is still a change."""
    original = EpollIOManager._epoll_wait

    @functools.wraps(original)
    async def _epoll_wait(self: EpollIOManager, fd: int, attr_name: str) -> None:
        await original(self, fd, attr_name)

    monkeypatch.setattr(EpollIOManager, "_epoll_wait", _epoll_wait)
    assert trio_waits.problems() == [
        "trio's source of EpollIOManager._epoll_wait: not as in a trio tested"
    ]


def test_the_installed_trio_is_a_tested_one() -> None:
    """What a maintainer adds for a newly tested trio (bench/trio_fingerprints.py): the
    installed one is in the table, every source read."""
    found = trio_waits.fingerprints()
    assert None not in found.values()
    versions = [versions for versions, tested in TESTED_TRIO_SOURCES if tested == found]
    assert len(versions) == 1
    assert trio.__version__ in versions[0].split(", ")


def test_a_trio_whose_instruments_are_a_dict_keeps_the_fast_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """trio 0.25 to 0.29 define ``Instruments`` as a dict subclass: asking it is no call
    already, so the table is not swapped, and the wait stays the fast one."""
    from trio._core import _instrumentation

    class Instruments(dict[str, dict[object, None]]):  # trio <= 0.29's shape
        __slots__ = ()
        add_instrument = _instrumentation.Instruments.add_instrument
        remove_instrument = _instrumentation.Instruments.remove_instrument
        call = _instrumentation.Instruments.call

    monkeypatch.setattr(_instrumentation, "Instruments", Instruments)
    assert trio_waits.problems() == []
    assert trio_waits.hook_table_problems() == [
        "trio's Instruments, a dict already (nothing to swap)"
    ]


@pytest.mark.skipif(
    not issubclass(Instruments, UserDict), reason="trio's Instruments is a dict: no swap"
)
def test_a_changed_instruments_keeps_trios_table_and_the_fast_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trio._core import _instrumentation
    from trio._core._run import GLOBAL_RUN_CONTEXT

    class Instruments(_instrumentation.Instruments):  # the same, but not trio's source
        __slots__ = ()

    monkeypatch.setattr(_instrumentation, "Instruments", Instruments)
    assert trio_waits.hook_table_problems() == [
        "trio's source of Instruments: not as in a trio tested"
    ]

    async def main() -> None:
        wait = trio_waits.readable_waiter()
        assert wait is not trio.lowlevel.wait_readable
        assert type(GLOBAL_RUN_CONTEXT.runner.instruments) is not trio_waits._HookTable

    trio.run(main)


@pytest.mark.parametrize("name", ["notify_closing", "process_events"])
def test_a_changed_step_where_trio_drops_a_record_is_a_problem(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """The kept record relies on trio dropping a descriptor's record only with no task set
    or as it reschedules the tasks: the functions that drop one are fingerprinted too."""
    original = getattr(EpollIOManager, name)

    @functools.wraps(original)
    def changed(self: EpollIOManager, *args: object) -> None:
        original(self, *args)

    monkeypatch.setattr(EpollIOManager, name, changed)
    assert trio_waits.problems() == [
        f"trio's source of EpollIOManager.{name}: not as in a trio tested"
    ]


def test_a_changed_wake_all_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    from trio._core import _io_epoll

    original = _io_epoll.wake_all

    @functools.wraps(original)
    def wake_all(*args: object) -> None:
        original(*args)

    monkeypatch.setattr(_io_epoll, "wake_all", wake_all)
    assert trio_waits.problems() == ["trio's source of wake_all: not as in a trio tested"]
