"""ConnectionTimers: one task fires a connection's deadlines, in order, never early."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from h2ws_proxy.transport.timers import ConnectionTimers


class Recorder:
    __slots__ = ("deadline", "fired", "name", "on_fire")

    def __init__(self, name: str, fired: list[tuple[str, float]]) -> None:
        self.name = name
        self.deadline = math.inf
        self.fired = fired
        self.on_fire: object = None

    def on_timer(self) -> None:
        self.fired.append((self.name, trio.current_time()))
        if callable(self.on_fire):
            self.on_fire()


async def test_fires_at_its_deadline_not_before(autojump_clock: trio.testing.MockClock) -> None:
    fired: list[tuple[str, float]] = []
    timers = ConnectionTimers()
    a, b = Recorder("a", fired), Recorder("b", fired)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        timers.arm(a, 10.0, start)
        timers.arm(b, 3.0, start)  # a shorter length, armed later: fires first
        await trio.sleep(20)
        nursery.cancel_scope.cancel()
    assert [name for name, _ in fired] == ["b", "a"]
    assert fired[0][1] == pytest.approx(start + 3.0)
    assert fired[1][1] == pytest.approx(start + 10.0)
    assert a.deadline == math.inf
    assert timers.armed() == 0


async def test_rearming_moves_the_deadline(autojump_clock: trio.testing.MockClock) -> None:
    fired: list[tuple[str, float]] = []
    timers = ConnectionTimers()
    a, b = Recorder("a", fired), Recorder("b", fired)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        start = trio.current_time()
        timers.arm(a, 5.0, start)
        timers.arm(b, 5.0, start + 1.0)
        await trio.sleep(4)
        timers.arm(a, 5.0, trio.current_time())  # activity: a now comes due after b
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert fired == [("b", pytest.approx(start + 6.0)), ("a", pytest.approx(start + 9.0))]


async def test_disarmed_timer_never_fires(autojump_clock: trio.testing.MockClock) -> None:
    fired: list[tuple[str, float]] = []
    timers = ConnectionTimers()
    a, b = Recorder("a", fired), Recorder("b", fired)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        now = trio.current_time()
        timers.arm(a, 5.0, now)
        timers.arm(b, 7.0, now)
        timers.disarm(a, 5.0)
        timers.disarm(a, 5.0)  # twice: ignored
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert [name for name, _ in fired] == ["b"]


async def test_disarmed_with_another_length_it_holds_up_no_timer_behind_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A caller that reads its timeout again (a reload changed it) and disarms with the new
    length: the timer still leaves its queue, so the ones armed behind it fire on time."""
    fired: list[tuple[str, float]] = []
    timers = ConnectionTimers()
    a, b = Recorder("a", fired), Recorder("b", fired)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        start = trio.current_time()
        timers.arm(a, 5.0, start)
        timers.arm(b, 5.0, start + 1.0)
        timers.disarm(a, 9.0)  # armed with 5
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert fired == [("b", pytest.approx(start + 6.0))]
    assert timers.armed() == 0


async def test_an_earlier_deadline_wakes_a_long_sleep(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fired: list[tuple[str, float]] = []
    timers = ConnectionTimers()
    slow, quick = Recorder("slow", fired), Recorder("quick", fired)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        start = trio.current_time()
        timers.arm(slow, 100.0, start)
        await trio.testing.wait_all_tasks_blocked()  # the task sleeps until start + 100
        timers.arm(quick, 1.0, trio.current_time())
        await trio.sleep(2)
        assert [name for name, _ in fired] == ["quick"]
        nursery.cancel_scope.cancel()


async def test_a_failing_handler_does_not_stop_the_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fired: list[tuple[str, float]] = []
    timers = ConnectionTimers()
    bad, good = Recorder("bad", fired), Recorder("good", fired)

    def explode() -> None:
        raise RuntimeError("bug")

    bad.on_fire = explode
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        now = trio.current_time()
        timers.arm(bad, 1.0, now)
        timers.arm(good, 1.0, now)
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    assert [name for name, _ in fired] == ["bad", "good"]


async def test_a_handler_may_rearm_itself(autojump_clock: trio.testing.MockClock) -> None:
    fired: list[tuple[str, float]] = []
    timers = ConnectionTimers()
    ticker = Recorder("tick", fired)

    def again() -> None:
        if len(fired) < 3:
            timers.arm(ticker, 2.0, trio.current_time())

    ticker.on_fire = again
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        start = trio.current_time()
        timers.arm(ticker, 2.0, start)
        await trio.sleep(20)
        nursery.cancel_scope.cancel()
    assert [at for _, at in fired] == [
        pytest.approx(start + 2.0),
        pytest.approx(start + 4.0),
        pytest.approx(start + 6.0),
    ]


async def test_armed_before_the_task_runs(autojump_clock: trio.testing.MockClock) -> None:
    fired: list[tuple[str, float]] = []
    timers = ConnectionTimers()
    a = Recorder("a", fired)
    start = trio.current_time()
    timers.arm(a, 1.0, start)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        await trio.sleep(2)
        nursery.cancel_scope.cancel()
    assert fired == [("a", pytest.approx(start + 1.0))]


async def test_arm_at_fires_at_a_point_in_time_among_the_queues(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fired: list[tuple[str, float]] = []
    timers = ConnectionTimers()
    a, b, c = Recorder("a", fired), Recorder("b", fired), Recorder("c", fired)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        timers.arm(a, 10.0, start)
        timers.arm_at(b, start + 4.0)  # earlier than the queue's: wakes the task
        timers.arm_at(c, start + 2.0)
        timers.disarm_at(c)  # forgotten: its heap entry is stale
        assert timers.armed() == 2
        await trio.sleep(20)
        nursery.cancel_scope.cancel()
    assert fired == [("b", pytest.approx(start + 4.0)), ("a", pytest.approx(start + 10.0))]
    assert c.deadline == math.inf


async def test_arm_at_again_moves_the_point(autojump_clock: trio.testing.MockClock) -> None:
    fired: list[tuple[str, float]] = []
    timers = ConnectionTimers()
    a = Recorder("a", fired)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        start = trio.current_time()
        timers.arm_at(a, start + 3.0)
        timers.arm_at(a, start + 7.0)  # the first entry no longer fires
        await trio.sleep(10)
        a.on_fire = lambda: timers.arm_at(a, trio.current_time() + 1.0)  # re-armed from on_timer
        timers.arm_at(a, trio.current_time() + 1.0)
        await trio.sleep(2.5)  # fires at +1, re-arms itself, fires again at +2
        nursery.cancel_scope.cancel()
    assert fired == [
        ("a", pytest.approx(start + 7.0)),
        ("a", pytest.approx(start + 11.0)),
        ("a", pytest.approx(start + 12.0)),
    ]
