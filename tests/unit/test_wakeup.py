"""Wakeup: one waiter, never a lost wake-up, cancellable, and a second waiter is refused."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from h2ws_proxy.transport.wakeup import Wakeup


async def test_set_wakes_the_waiter() -> None:
    wakeup, woken = Wakeup(), []
    async with trio.open_nursery() as nursery:

        async def waiter() -> None:
            await wakeup.wait()
            woken.append(True)

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert not woken
        wakeup.set()
    assert woken == [True]


async def test_a_set_before_the_wait_is_remembered_once() -> None:
    wakeup = Wakeup()
    wakeup.set()
    wakeup.set()
    with trio.testing.assert_checkpoints():
        await wakeup.wait()  # returns at once, still a checkpoint
    with trio.move_on_after(0.01) as timeout:
        await wakeup.wait()  # the two sets were one wake-up
    assert timeout.cancelled_caught


async def test_a_cancelled_wait_leaves_it_usable() -> None:
    wakeup = Wakeup()
    with trio.move_on_after(0.01):
        await wakeup.wait()
    wakeup.set()
    with trio.fail_after(1):
        await wakeup.wait()


async def test_a_second_waiter_is_a_bug() -> None:
    wakeup = Wakeup()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wakeup.wait)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await wakeup.wait()
        wakeup.set()


async def test_parked_only_while_a_wait_is_neither_woken_nor_cancelled() -> None:
    """The HTTP/2 stream forwards client bytes itself only to a parked tunnel pump: once
    the pump's scope is cancelled, the wait is no longer parked, before the pump runs."""
    wakeup = Wakeup()
    assert not wakeup.parked()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wakeup.wait)
        await trio.testing.wait_all_tasks_blocked()
        assert wakeup.parked()
        wakeup.set()
        assert not wakeup.parked()  # woken, though not run yet
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wakeup.wait)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
        assert not wakeup.parked()  # trio aborted the wait as the cancel happened


async def test_park_is_wait_without_a_frame_of_its_own() -> None:
    """``park()`` awaited at once behaves as ``wait()``: woken by a set, a set before it is
    remembered once (and it is still a checkpoint), a cancelled park leaves it usable, and
    a second waiter is refused."""
    wakeup, woken = Wakeup(), []

    async def parker() -> None:
        await wakeup.park()
        woken.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(parker)
        await trio.testing.wait_all_tasks_blocked()
        assert wakeup.parked()
        assert not woken
        with pytest.raises(trio.BusyResourceError):
            await wakeup.park()
        wakeup.set()
    assert woken == [True]
    wakeup.set()
    wakeup.set()
    with trio.testing.assert_checkpoints():
        await wakeup.park()
    with trio.move_on_after(0.01) as timeout:
        await wakeup.park()
    assert timeout.cancelled_caught
    assert not wakeup.parked()
    wakeup.set()
    with trio.fail_after(1):
        await wakeup.park()
