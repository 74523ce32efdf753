"""The data plane (transport/data_plane.py): pollers served from one epoll that sleeps in the
run loop's stead while the loop is idle, and hands back whenever the loop has work.

Real sockets (socketpairs) and real peers outside trio, so that while the test task waits
the loop is truly idle and the plane sleeps: an echo in another process (as the proxy's
clients and backends are), and plain threads where a write needs no GIL-free timing.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from h2ws_proxy.transport import data_plane as data_plane_module
from h2ws_proxy.transport import trio_idle
from h2ws_proxy.transport.data_plane import DataPlane, current_data_plane
from h2ws_proxy.transport.poller import BackendPoller

MESSAGE = b"x" * 64


#: An echo of every read on the descriptor given until EOF (a process of its own: no GIL
#: shared with the loop).
ECHO = """
import socket, sys
sock = socket.socket(fileno=int(sys.argv[1]))
while data := sock.recv(65536):
    sock.sendall(data)
"""


class EchoProcess:
    def __init__(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        self._process = subprocess.Popen([sys.executable, "-c", ECHO, str(fd)], pass_fds=[fd])
        sock.close()

    def join(self) -> None:
        self._process.wait(5)


class PingPong:
    """A poller watcher that answers each echo until ``rounds`` came back."""

    watched = False

    def __init__(self, sock: socket.socket, rounds: int) -> None:
        self._sock = sock
        self._left = rounds
        self.done = trio.Event()

    def on_readable(self) -> None:
        self._sock.recv(65536)
        self._left -= 1
        if self._left:
            self._sock.send(MESSAGE)
        else:
            self.done.set()

    def on_error(self) -> None:
        raise AssertionError("the poller dropped the socket")

    def on_closed(self) -> None:
        pass


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    with ours:
        yield ours, theirs


def plane_of_this_loop() -> DataPlane:
    plane = current_data_plane()
    assert plane is not None, trio_idle.PROBLEMS
    return plane


def never_fails(error: BaseException) -> None:
    raise AssertionError(f"a round failed: {error!r}")


@contextlib.contextmanager
def a_member(plane: DataPlane, sock: socket.socket | None = None) -> Iterator[BackendPoller]:
    """A poller on the plane (watching ``sock``, woken by a read, if given), taken off and
    closed at the end."""
    poller = BackendPoller()
    if sock is not None:
        poller.register(sock.fileno(), WakeOnRead(sock, trio.Event()))
    plane.add(poller.fileno(), poller.round, never_fails)
    try:
        yield poller
    finally:
        plane.remove(poller.fileno())
        poller.close()


def test_the_fence_holds_for_the_installed_trio() -> None:
    """The installed trio is one whose run loop was read and tested (trio_idle.TESTED): if
    this fails after an upgrade, the plane is off (only slower) until it is tested."""
    assert trio_idle.PROBLEMS == []


async def test_a_ping_pong_is_served_while_the_plane_sleeps(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    plane = plane_of_this_loop()
    poller = BackendPoller()
    watcher = PingPong(ours, 200)
    poller.register(ours.fileno(), watcher)
    plane.add(poller.fileno(), poller.round, never_fails)
    echo = EchoProcess(theirs)
    try:
        asleep_before = plane.rounds_asleep
        ours.send(MESSAGE)
        with trio.fail_after(10):
            await watcher.done.wait()
        # Each answer was read and the next message sent without the loop's help: but
        # for the first few (the plane may not be asleep yet), all in the plane's sleep.
        assert plane.rounds_asleep - asleep_before >= 190
        assert poller.rounds == 200
    finally:
        plane.remove(poller.fileno())
        poller.close()
        ours.shutdown(socket.SHUT_WR)
        echo.join()


async def test_the_loop_gets_its_turn_while_the_plane_sleeps(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A socket the loop watches, a thread's ``run_sync_soon``, a deadline and a task made
    runnable by a round: each gets the loop back from a sleeping plane at once."""
    ours, theirs = pair
    plane = plane_of_this_loop()
    poller = BackendPoller()
    plane.add(poller.fileno(), poller.round, never_fails)  # a member: the plane sleeps
    loops_socket, its_peer = socket.socketpair()
    try:
        with trio.fail_after(10):
            # A deadline: the plane never sleeps past the loop's next one. (Until one of
            # the plane's sleeps took the loop's: a loaded machine may delay its first.)
            sleeps = plane.sleeps
            while plane.sleeps == sleeps:
                with trio.move_on_after(0.01):
                    await trio.sleep_forever()

            # A socket the loop watches, written by a thread while the plane sleeps.
            def write_soon() -> None:
                its_peer.send(b"!")

            loops_socket.setblocking(False)
            writer = threading.Timer(0.01, write_soon)
            writer.start()
            await trio.lowlevel.wait_readable(loops_socket)
            writer.join()
            assert loops_socket.recv(1) == b"!"

            # A thread's call into the loop (trio's wake-up socket).
            assert await trio.to_thread.run_sync(lambda: 7) == 7

            # A round that makes a task runnable: the loop runs it.
            woken = trio.Event()
            waker = WakeOnRead(ours, woken)
            poller.register(ours.fileno(), waker)
            theirs.send(b"?")
            await woken.wait()
    finally:
        plane.remove(poller.fileno())
        poller.close()
        loops_socket.close()
        its_peer.close()
        theirs.close()


class WakeOnRead:
    watched = False

    def __init__(self, sock: socket.socket, event: trio.Event) -> None:
        self._sock = sock
        self._event = event

    def on_readable(self) -> None:
        self._sock.recv(1)
        self._event.set()

    def on_error(self) -> None:
        raise AssertionError("the poller dropped the socket")

    def on_closed(self) -> None:
        pass


async def test_a_failing_round_fails_its_own_member_only(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    plane = plane_of_this_loop()
    failed: list[BaseException] = []

    def broken_round() -> None:
        raise RuntimeError("a bug")

    broken_a, broken_b = socket.socketpair()
    broken = BackendPoller()
    broken.register(broken_a.fileno(), WakeOnRead(broken_a, trio.Event()))
    plane.add(broken.fileno(), broken_round, failed.append)
    poller = BackendPoller()
    woken = trio.Event()
    poller.register(ours.fileno(), WakeOnRead(ours, woken))
    plane.add(poller.fileno(), poller.round, never_fails)
    try:
        broken_b.send(b"!")
        theirs.send(b"!")
        with trio.fail_after(10):
            await woken.wait()
            while not failed:
                await trio.testing.wait_all_tasks_blocked()
        assert [type(error) for error in failed] == [RuntimeError]
        # The broken one left the plane; the other is still served.
        woken = trio.Event()
        poller.register(ours.fileno(), WakeOnRead(ours, woken))
        theirs.send(b"!")
        with trio.fail_after(10):
            await woken.wait()
    finally:
        plane.remove(poller.fileno())
        poller.close()
        broken.close()
        for sock in (broken_a, broken_b, theirs):
            sock.close()


async def test_another_task_waiting_for_the_loop_to_idle_is_woken(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """``wait_all_tasks_blocked`` with a cushion: the loop, not the plane, sleeps it."""
    ours, _theirs = pair
    with a_member(plane_of_this_loop(), ours), trio.fail_after(10):
        await trio.testing.wait_all_tasks_blocked(0.01)
        await trio.testing.wait_all_tasks_blocked()


async def test_no_plane_on_a_mock_clock(autojump_clock: trio.testing.MockClock) -> None:
    """A test's clock jumps when the loop is idle: only the loop can do that."""
    assert current_data_plane() is None


async def test_no_plane_where_the_fence_does_not_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trio_idle, "PROBLEMS", ["trio's run loop: not as in a trio tested"])
    assert trio_idle.loop_idle() is None
    assert data_plane_module.current_data_plane() is None


def test_a_changed_source_breaks_the_fence(monkeypatch: pytest.MonkeyPatch) -> None:
    tested = [(versions, dict(sources)) for versions, sources in trio_idle.TESTED]
    for _versions, sources in tested:
        sources["unrolled_run"] = "0" * 32
    monkeypatch.setattr(trio_idle, "TESTED", tuple(tested))
    assert trio_idle.problems() == ["trio's run loop and idle waits: not as in a trio tested"]


class IoWaits(trio.abc.Instrument):
    def __init__(self) -> None:
        self.waits = 0

    def before_io_wait(self, timeout: float) -> None:
        self.waits += 1


async def test_an_instrument_of_the_loops_sleeps_keeps_the_sleeping_to_the_loop(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    plane = plane_of_this_loop()
    poller = BackendPoller()
    plane.add(poller.fileno(), poller.round, never_fails)
    instrument = IoWaits()
    trio.lowlevel.add_instrument(instrument)
    try:
        woken = trio.Event()
        poller.register(ours.fileno(), WakeOnRead(ours, woken))
        await trio.sleep(0.2)  # the plane's next look finds the instrument
        sleeps, asleep, waits = plane.sleeps, plane.rounds_asleep, instrument.waits
        writer = threading.Timer(0.01, lambda: theirs.send(b"!"))
        writer.start()
        with trio.fail_after(10):
            await woken.wait()
        writer.join()
        # Served through the loop, which slept (and told the instrument so) meanwhile.
        assert (plane.sleeps, plane.rounds_asleep) == (sleeps, asleep)
        assert instrument.waits > waits
    finally:
        trio.lowlevel.remove_instrument(instrument)
        plane.remove(poller.fileno())
        poller.close()
        theirs.close()


async def test_a_task_woken_with_the_plane_from_an_idle_wait_runs_at_once(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """``wait_all_tasks_blocked()`` (no cushion) called while the plane's own idle wait is
    on: the loop wakes both in one batch; whichever runs first, the other must run next,
    not after the plane slept to the loop's next deadline (review of branch D)."""
    ours, _theirs = pair
    with a_member(plane_of_this_loop(), ours):
        for _ in range(20):
            # The plane sleeps to this deadline, then waits for the loop to go idle again.
            await trio.sleep(0.001)
            start = trio.current_time()
            with trio.move_on_after(1):  # the loop's next deadline
                await trio.testing.wait_all_tasks_blocked()
            assert trio.current_time() - start < 0.5
