"""The fenced clock reading (``transport/run_clock.py``) is ``trio.current_time()``."""

from __future__ import annotations

import threading

import trio
import trio.testing

from h2ws_proxy.transport import run_clock


def test_this_trio_has_the_internals_it_reads() -> None:
    assert run_clock.problems() == []
    assert run_clock.now is not trio.current_time


async def test_it_reads_the_system_clock_as_trio_does() -> None:
    for _ in range(100):
        before = trio.current_time()
        reading = run_clock.now()
        assert before <= reading <= trio.current_time()


def test_it_reads_a_mock_clock_through_the_clock() -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def main() -> None:
        assert run_clock.now() == trio.current_time()
        clock.jump(12.5)
        assert run_clock.now() == trio.current_time()
        await trio.sleep(1)
        assert run_clock.now() == trio.current_time()

    trio.run(main, clock=clock)


def test_outside_a_run_it_raises_as_trio_does() -> None:
    raised: list[BaseException] = []

    def read() -> None:  # a thread of its own: no trio run in it
        for reader in (run_clock.now, trio.current_time):
            try:
                reader()
            except RuntimeError as error:
                raised.append(error)

    thread = threading.Thread(target=read)
    thread.start()
    thread.join()
    assert [type(error) for error in raised] == [RuntimeError, RuntimeError]
