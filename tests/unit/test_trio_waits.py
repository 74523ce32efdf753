"""The fence around trio's epoll wait: the internal one where trio has it, as good as the
public one (wakes, cancels, waits again), and the public one wherever anything differs."""

from __future__ import annotations

import socket
from collections import UserDict

import pytest
import trio
import trio.lowlevel
from trio._core._instrumentation import Instruments
from trio._core._io_epoll import EpollIOManager

from h2ws_proxy.transport import trio_waits
from h2ws_proxy.transport.trio_waits import hook_table_problems, problems, readable_waiter

#: The table is swapped only where trio's ``Instruments`` is a ``UserDict`` (trio 0.30 and
#: later); before, it is a dict, asked without a call, and left as it is.
needs_userdict_instruments = pytest.mark.skipif(
    not issubclass(Instruments, UserDict), reason="trio's Instruments is a dict: no swap"
)


def test_the_installed_trio_has_what_the_fast_wait_uses() -> None:
    assert problems() == []
    assert readable_waiter is not trio_waits._public_waiter


def test_a_changed_signature_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    async def _epoll_wait(self: object, fd: int) -> None: ...

    monkeypatch.setattr(EpollIOManager, "_epoll_wait", _epoll_wait)
    assert problems() == ["EpollIOManager._epoll_wait(self, fd, attr_name)"]


def test_outside_a_loop_it_is_the_public_wait() -> None:
    assert readable_waiter() is trio.lowlevel.wait_readable


async def test_inside_a_loop_it_is_the_fenced_wait() -> None:
    wait = readable_waiter()
    assert wait is not trio.lowlevel.wait_readable
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        b.setblocking(False)
        async with trio.open_nursery() as nursery:
            woken = trio.Event()

            async def waiter() -> None:
                await wait(a)
                woken.set()

            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert not woken.is_set()
            b.send(b"x")
            await woken.wait()
        assert a.recv(10) == b"x"


async def test_a_cancelled_wait_leaves_nothing_behind() -> None:
    wait = readable_waiter()
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        with trio.CancelScope() as scope:
            scope.cancel()
            await wait(a)
        assert scope.cancelled_caught
        with trio.move_on_after(0.01) as idle:
            await wait(a)  # registered again: no "another task is already reading"
        assert idle.cancelled_caught
        b.send(b"y")
        await wait(a.fileno())  # a descriptor number, as trio takes it
        assert a.recv(10) == b"y"


async def test_a_second_waiter_on_one_descriptor_is_refused_as_by_trio() -> None:
    wait = readable_waiter()
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait, a)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await wait(a)
            nursery.cancel_scope.cancel()


def _socket_pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def test_an_interrupt_while_a_wait_registers_leaves_the_descriptor_waitable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The manager's wait defers a KeyboardInterrupt as trio's public wait does: one that
    arrives while the wait registers ends that wait cleanly, and the descriptor can be
    waited on again (not BusyResourceError for a record left set)."""
    import signal

    from h2ws_proxy.transport.socket_stream import LeanSocketStream

    original = EpollIOManager._update_registrations
    interrupted: list[int] = []
    a, b = _socket_pair()
    target = a.fileno()

    def registering(self: EpollIOManager, fd: int) -> None:
        if not interrupted and fd == target:
            interrupted.append(fd)
            signal.raise_signal(signal.SIGINT)  # its handler runs at the next bytecode
        original(self, fd)

    monkeypatch.setattr(EpollIOManager, "_update_registrations", registering)
    stream = LeanSocketStream(a)

    async def main() -> bytes:
        with pytest.raises(KeyboardInterrupt):
            with trio.fail_after(5):
                await stream.receive_some(10)
        async with trio.open_nursery() as nursery:

            async def send_once_waiting() -> None:
                await trio.testing.wait_all_tasks_blocked()
                b.send(b"after")

            nursery.start_soon(send_once_waiting)
            with trio.fail_after(5):
                return await stream.receive_some(10)

    try:
        assert trio.run(main) == b"after"
        assert interrupted == [target]
    finally:
        a.close()
        b.close()


async def test_streams_share_their_loops_waiter() -> None:
    """One waiter per loop, not one per stream: an idle connection's stream keeps a
    reference, not a partial, a bound method and a dict of its own."""
    from h2ws_proxy.transport.socket_stream import LeanSocketStream

    pairs = [_socket_pair() for _ in range(3)]
    streams = [LeanSocketStream(a) for a, _ in pairs]
    try:
        for stream in streams:  # each one's first wait, as an idle reader's
            with trio.CancelScope() as scope:
                scope.cancel()
                await stream.receive_some(10)
        waits = {id(stream._wait) for stream in streams}
        assert len(waits) == 1
        assert streams[0]._wait is readable_waiter()
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_changed_records_are_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fields the wait reads or makes are checked, each: a trio that renamed one gets
    the public wait, not a wait that sets an attribute trio no longer reads."""
    import attrs
    from trio._core import _io_epoll, _traps

    @attrs.define(eq=False)
    class Renamed:
        reader: object = None
        write_task: object = None
        current_flags: int = 0

    monkeypatch.setattr(_io_epoll, "EpollWaiters", Renamed)
    assert problems() == ["EpollWaiters(read_task, write_task, current_flags)"]
    monkeypatch.undo()

    @attrs.frozen(slots=False)
    class Message:
        abort: object

    monkeypatch.setattr(_traps, "WaitTaskRescheduled", Message)
    assert problems() == ["WaitTaskRescheduled(abort_func)"]
    monkeypatch.undo()

    # Records the wait makes without their __init__: one that does more is a problem.
    @attrs.define(eq=False)
    class Checked:
        read_task: object = None
        write_task: object = None
        current_flags: int = attrs.field(default=0, validator=attrs.validators.instance_of(int))

    @attrs.define(eq=False)
    class Completed:
        read_task: object = None
        write_task: object = None
        current_flags: int = 0

        def __attrs_post_init__(self) -> None: ...

    for record in (Checked, Completed):
        monkeypatch.setattr(_io_epoll, "EpollWaiters", record)
        assert problems() == [f"{record.__name__}, a plain record (made without its __init__)"]
        monkeypatch.undo()

    def _update_registrations(self: object, fd: int, flags: int) -> None: ...

    monkeypatch.setattr(EpollIOManager, "_update_registrations", _update_registrations)
    assert problems() == ["EpollIOManager._update_registrations(self, fd)"]
    monkeypatch.undo()

    from trio._core import _instrumentation

    # The instruments table has its own fence: what it finds leaves the wait as it is.
    class Hooks(dict[str, object]):
        def call(self, hookname: str, *args: object) -> None: ...

    monkeypatch.setattr(_instrumentation, "Instruments", Hooks)
    assert hook_table_problems() == ["trio's Instruments, a dict already (nothing to swap)"]
    assert problems() == []
    monkeypatch.undo()

    class Table(UserDict[str, object]):
        def call(self, hookname: str, *args: object) -> None: ...

    monkeypatch.setattr(_instrumentation, "Instruments", Table)
    assert hook_table_problems() == [
        "trio's Instruments, a UserDict with add_instrument, remove_instrument, call"
    ]
    assert problems() == []
    monkeypatch.undo()
    assert problems() == []


async def test_a_descriptor_closed_under_a_wait_ends_it_as_trios_does() -> None:
    wait = readable_waiter()
    a, b = _socket_pair()
    with a, b:
        async with trio.open_nursery() as nursery:
            ended: list[BaseException] = []

            async def waiter() -> None:
                try:
                    await wait(a)
                except trio.ClosedResourceError as error:
                    ended.append(error)

            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            trio.lowlevel.notify_closing(a)
        assert len(ended) == 1
        b.send(b"z")
        await wait(a)  # nothing left registered for it
        assert a.recv(10) == b"z"


async def test_a_reader_and_a_writer_of_one_descriptor_both_wake() -> None:
    """The read wait registers through the manager's own bookkeeping: a writer waiting on
    the same socket keeps its interest, and each is woken for its own readiness."""
    wait = readable_waiter()
    a, b = _socket_pair()
    with a, b:
        while True:  # fill a's send buffer: a writer must wait
            try:
                a.send(b"x" * 65536)
            except BlockingIOError:
                break
        woken: list[str] = []
        async with trio.open_nursery() as nursery:

            async def reader() -> None:
                await wait(a)
                woken.append("read")

            async def writer() -> None:
                await trio.lowlevel.wait_writable(a)
                woken.append("write")

            nursery.start_soon(reader)
            nursery.start_soon(writer)
            await trio.testing.wait_all_tasks_blocked()
            assert woken == []
            b.send(b"y")
            await trio.testing.wait_all_tasks_blocked()
            assert woken == ["read"]
            while True:  # b drains what a sent: a is writable again
                try:
                    b.recv(1 << 20)
                except BlockingIOError:
                    break
        assert sorted(woken) == ["read", "write"]


async def test_a_descriptor_that_is_not_open_fails_the_wait_as_trios_does() -> None:
    wait = readable_waiter()
    a, b = _socket_pair()
    fd = a.fileno()
    a.close()
    b.close()
    with pytest.raises(OSError, match="Bad file descriptor") as ours:
        await wait(fd)
    with pytest.raises(OSError, match="Bad file descriptor") as theirs:
        await trio.lowlevel.wait_readable(fd)
    assert type(ours.value) is type(theirs.value)
    assert ours.value.errno == theirs.value.errno


class _Steps(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps = 0
        self.waits = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1

    def after_io_wait(self, timeout: float) -> None:
        self.waits += 1


@needs_userdict_instruments
def test_the_loops_instruments_work_as_before_once_the_hooks_are_a_dict() -> None:
    """The first waiter of a loop gives its runner the hook table: the instruments given to
    ``trio.run`` stay, and ``add_instrument``/``remove_instrument`` work on it as on
    trio's own (hooks called while installed, not after)."""
    from trio._core._run import GLOBAL_RUN_CONTEXT

    given, added = _Steps(), _Steps()

    async def main() -> None:
        readable_waiter()
        table = GLOBAL_RUN_CONTEXT.runner.instruments
        assert type(table) is trio_waits._HookTable
        assert "before_task_step" in table
        assert "task_spawned" not in table
        given_steps = given.steps
        await trio.lowlevel.checkpoint()
        assert given.steps > given_steps
        trio.lowlevel.add_instrument(added)
        assert "after_io_wait" in table
        await trio.lowlevel.checkpoint()
        await trio.sleep(0.001)
        assert added.steps > 0
        assert added.waits > 0
        trio.lowlevel.remove_instrument(added)
        trio.lowlevel.remove_instrument(given)
        assert "before_task_step" not in table
        assert "after_io_wait" not in table
        steps = added.steps, given.steps
        await trio.lowlevel.checkpoint()
        assert (added.steps, given.steps) == steps
        with pytest.raises(KeyError):
            trio.lowlevel.remove_instrument(added)

    trio.run(main, instruments=[given])


@needs_userdict_instruments
async def test_a_loop_without_instruments_gets_an_empty_table() -> None:
    from trio._core._run import GLOBAL_RUN_CONTEXT

    readable_waiter()
    table = GLOBAL_RUN_CONTEXT.runner.instruments
    assert type(table) is trio_waits._HookTable
    assert dict(table) == {"_all": {}}
    readable_waiter()
    assert GLOBAL_RUN_CONTEXT.runner.instruments is table
