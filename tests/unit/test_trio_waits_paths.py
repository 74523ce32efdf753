"""The fenced readable wait and the instruments table on the paths trio's own wait takes:
cancels (alone and racing readiness), a busy descriptor, a writer's interest kept,
``notify_closing`` and a reused descriptor number, a KeyboardInterrupt in the wait, an
instrument that raises, several loops in turn and in threads. (From the review of the
branch; each holds for trio's public wait as well.)"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import traceback

import pytest
import trio
import trio.lowlevel
import trio.testing
from trio._core._run import GLOBAL_RUN_CONTEXT

from h2ws_proxy.transport.trio_waits import readable_waiter


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def _registered() -> dict[int, object]:
    return GLOBAL_RUN_CONTEXT.runner.io_manager._registered


async def test_a_cancelled_wait_leaves_no_record_and_waits_again() -> None:
    wait = readable_waiter()
    a, b = _pair()
    with a, b:
        for _ in range(3):
            with trio.move_on_after(0.01) as scope:
                await wait(a)
            assert scope.cancelled_caught
            assert a.fileno() not in _registered()
        b.send(b"x")
        await wait(a)
        assert a.recv(10) == b"x"
        assert a.fileno() not in _registered()


async def test_a_cancel_racing_readiness_reschedules_the_task_once() -> None:
    """Readiness and a cancel in the same loop tick: one outcome, no double reschedule."""
    wait = readable_waiter()
    a, b = _pair()
    with a, b:
        for _ in range(20):
            async with trio.open_nursery() as nursery:
                outcomes: list[str] = []

                async def waiter(outcomes: list[str]) -> None:
                    try:
                        await wait(a)
                        outcomes.append("woke")
                    except trio.Cancelled:
                        outcomes.append("cancelled")
                        raise

                nursery.start_soon(waiter, outcomes)
                await trio.testing.wait_all_tasks_blocked()
                b.send(b"x")
                nursery.cancel_scope.cancel()
            assert len(outcomes) == 1
            assert a.fileno() not in _registered()
            a.recv(10)


async def test_a_second_reader_is_busy_and_the_first_still_wakes() -> None:
    wait = readable_waiter()
    a, b = _pair()
    with a, b:
        woke: list[str] = []
        async with trio.open_nursery() as nursery:

            async def first() -> None:
                await wait(a)
                woke.append("first")

            nursery.start_soon(first)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.BusyResourceError):
                await wait(a)
            with pytest.raises(trio.BusyResourceError):
                await trio.lowlevel.wait_readable(a)
            b.send(b"x")
        assert woke == ["first"]
        assert a.fileno() not in _registered()


async def test_a_cancelled_reader_keeps_the_writers_interest() -> None:
    wait = readable_waiter()
    a, b = _pair()
    with a, b:
        while True:
            try:
                a.send(b"x" * 65536)
            except BlockingIOError:
                break
        woke: list[str] = []
        async with trio.open_nursery() as nursery:

            async def writer() -> None:
                await trio.lowlevel.wait_writable(a)
                woke.append("write")

            nursery.start_soon(writer)
            await trio.testing.wait_all_tasks_blocked()
            with trio.move_on_after(0.01):
                await wait(a)
            assert _registered()[a.fileno()].write_task is not None
            while True:
                try:
                    b.recv(1 << 20)
                except BlockingIOError:
                    break
        assert woke == ["write"]


async def test_a_descriptors_later_waits_are_aborted_with_their_own_record() -> None:
    """The run loop's message for a descriptor (its abort) is made at its first wait and
    kept: a later wait on that number, another socket's, is aborted by a cancel with the
    record it set (a writer's interest on it kept, the reader's dropped), and waits again."""
    wait = readable_waiter()
    a, b = _pair()
    fd = a.fileno()
    with a, b:
        b.send(b"x")
        with trio.fail_after(2):
            await wait(a)  # a wait that ended: the descriptor's message is made
        assert a.recv(10) == b"x"
    c, d = _pair()
    with c, d:
        assert c.fileno() == fd  # the descriptor's number reused
        while True:
            try:
                c.send(b"x" * 65536)
            except BlockingIOError:
                break
        woke: list[str] = []
        async with trio.open_nursery() as nursery:

            async def writer() -> None:
                await trio.lowlevel.wait_writable(c)
                woke.append("write")

            nursery.start_soon(writer)
            await trio.testing.wait_all_tasks_blocked()
            with trio.move_on_after(0.01) as scope:
                await wait(c)
            assert scope.cancelled_caught
            record = _registered()[fd]
            assert (record.read_task, record.write_task is not None) == (None, True)
            while True:
                try:
                    d.recv(1 << 20)
                except BlockingIOError:
                    break
        assert woke == ["write"]
        assert fd not in _registered()
        d.send(b"y")
        with trio.fail_after(2):
            await wait(c)
        assert c.recv(10) == b"y"


async def test_notify_closing_ends_the_wait_and_a_new_socket_on_that_fd_works() -> None:
    wait = readable_waiter()
    a, b = _pair()
    fd = a.fileno()
    async with trio.open_nursery() as nursery:
        got: list[type] = []

        async def waiter() -> None:
            try:
                await wait(a)
            except BaseException as error:
                got.append(type(error))

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        trio.lowlevel.notify_closing(a)
        a.close()
    assert got == [trio.ClosedResourceError]
    c, d = _pair()
    with b, c, d:
        assert c.fileno() == fd  # the descriptor's number reused
        d.send(b"y")
        with trio.fail_after(2):
            await wait(c)
        assert c.recv(10) == b"y"


def test_keyboard_interrupt_during_the_wait_leaves_no_record() -> None:
    seen: dict[str, object] = {}

    async def main() -> None:
        wait = readable_waiter()
        a, b = _pair()
        seen["pair"] = (a, b)
        seen["registered"] = _registered()
        seen["fd"] = a.fileno()
        async with trio.open_nursery() as nursery:

            @trio.lowlevel.enable_ki_protection
            async def interrupt() -> None:
                await trio.testing.wait_all_tasks_blocked()
                signal.raise_signal(signal.SIGINT)  # delivered to the main task, in the wait

            nursery.start_soon(interrupt)
            await wait(a)

    with pytest.raises((KeyboardInterrupt, BaseExceptionGroup)) as raised:
        trio.run(main)
    error = raised.value
    while isinstance(error, BaseExceptionGroup):
        (error,) = error.exceptions
    assert isinstance(error, KeyboardInterrupt)
    names = [f.name for f in traceback.extract_tb(error.__traceback__)]
    assert "main" in names, names
    a, b = seen["pair"]  # type: ignore[misc]
    a.close()
    b.close()
    registered = seen["registered"]
    assert seen["fd"] not in registered  # type: ignore[operator]


class _Raises(trio.abc.Instrument):
    def __init__(self) -> None:
        self.calls = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("instrument broke")


class _Counts(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps = 0
        self.runs_ended = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1

    def after_run(self) -> None:
        self.runs_ended += 1


def test_a_raising_instrument_is_removed_and_the_others_stay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    raising, counting = _Raises(), _Counts()

    async def main() -> None:
        a, b = _pair()
        with a, b:
            wait = readable_waiter()
            trio.lowlevel.add_instrument(raising)
            for _ in range(5):
                await trio.lowlevel.checkpoint()
            assert raising.calls == 3
            b.send(b"x")
            await wait(a)
            with pytest.raises(KeyError):
                trio.lowlevel.remove_instrument(raising)
            table = GLOBAL_RUN_CONTEXT.runner.instruments
            assert "before_task_step" in table  # the counting one is still there

    with caplog.at_level(logging.ERROR, logger="trio.abc.Instrument"):
        trio.run(main, instruments=[counting])
    assert counting.runs_ended == 1
    assert counting.steps > 5
    assert any("instrument broke" in r.getMessage() or r.exc_info for r in caplog.records)


def test_several_runs_in_turn_and_one_in_a_second_thread() -> None:
    counts = [_Counts() for _ in range(3)]

    async def main(count: _Counts, rounds: int) -> None:
        wait = readable_waiter()
        a, b = _pair()
        with a, b:
            for _ in range(rounds):
                b.send(b"x")
                await wait(a)
                assert a.recv(10) == b"x"
                await trio.lowlevel.checkpoint()
            assert "before_task_step" in GLOBAL_RUN_CONTEXT.runner.instruments

    trio.run(main, counts[0], 50, instruments=[counts[0]])
    errors: list[BaseException] = []

    def in_thread() -> None:
        try:
            trio.run(main, counts[1], 2000, instruments=[counts[1]])
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=in_thread)
    thread.start()
    trio.run(main, counts[2], 2000, instruments=[counts[2]])
    thread.join(30)
    assert not thread.is_alive()
    assert errors == []
    assert [c.runs_ended for c in counts] == [1, 1, 1]
