"""BackendPoller on real socketpairs: readiness reaches the handler, a paused socket stays
silent even when its peer hangs up, and a failing handler cannot stop the others."""

from __future__ import annotations

import errno
import select
import socket
from collections.abc import Callable

import pytest
import trio
import trio.testing

from h2ws_proxy.transport.poller import BackendPoller
from tests.helpers.h2_client import open_h2_client
from tests.helpers.memory import MemoryNet, echo_backend, open_memory_client
from tests.helpers.setup import make_config

pytestmark = pytest.mark.socket


class Watch:
    """A watcher made of two callbacks (the poller takes one object per descriptor)."""

    def __init__(self, read: Callable[[], object], error: Callable[[], object]) -> None:
        self._read, self._error = read, error
        self.watched = False
        self.closed = False

    def on_readable(self) -> None:
        self._read()

    def on_error(self) -> None:
        self._error()

    def on_closed(self) -> None:
        self.closed = True


async def test_ready_paused_resumed_and_unregistered() -> None:
    poller, calls = BackendPoller(), []
    ours, theirs = socket.socketpair()
    with ours, theirs:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poller.run)

            def read() -> None:
                calls.append(ours.recv(100))
                if not calls[-1]:
                    poller.pause(ours.fileno())  # EOF stays readable: a handler stops there

            poller.register(ours.fileno(), Watch(read, lambda: calls.append(b"error")))
            theirs.send(b"one")
            await trio.testing.wait_all_tasks_blocked()
            assert calls == [b"one"]
            poller.pause(ours.fileno())
            theirs.send(b"two")
            theirs.close()  # a hang-up: epoll reports it whatever the mask, so no mask at all
            await trio.testing.wait_all_tasks_blocked()
            assert calls == [b"one"]
            poller.resume(ours.fileno())
            await trio.testing.wait_all_tasks_blocked()
            assert calls == [b"one", b"two", b""]
            poller.unregister(ours.fileno())
            poller.resume(ours.fileno())  # unknown now: ignored
            await trio.testing.wait_all_tasks_blocked()
            assert calls == [b"one", b"two", b""]
            nursery.cancel_scope.cancel()


async def test_a_watch_handed_over_carries_over_unless_the_new_watcher_is_paused() -> None:
    """A tunnel's opening hands its backend socket to the tunnel (``register`` again): the
    socket stays in the epoll set for a watcher that reads at once, and is taken out for
    one that starts paused, or the poller would call it in every round while it must not
    read."""
    poller, calls = BackendPoller(), []
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    with ours, theirs:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poller.run)
            fd = ours.fileno()
            poller.register(fd, Watch(lambda: calls.append(b"first"), lambda: None))
            later = Watch(lambda: calls.append(ours.recv(100)), lambda: None)
            poller.register(fd, later)
            assert later.watched
            theirs.send(b"one")
            await trio.testing.wait_all_tasks_blocked()
            assert calls == [b"one"]
            paused = Watch(lambda: calls.append(ours.recv(100)), lambda: None)
            poller.register(fd, paused, paused=True)
            assert not paused.watched
            theirs.send(b"two")
            await trio.testing.wait_all_tasks_blocked()
            assert calls == [b"one"]
            poller.resume(fd)
            await trio.testing.wait_all_tasks_blocked()
            assert calls == [b"one", b"two"]
            poller.unregister(fd)
            nursery.cancel_scope.cancel()


async def test_one_watched_socket_is_served_without_asking_epoll_which() -> None:
    """With one socket watched the poller skips ``epoll_wait``: its handler must still be
    called once per arrival, not again once the bytes are gone (the poller would spin), and
    not at all for bytes someone else took before the poller ran."""
    poller, calls = BackendPoller(), []
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    with ours, theirs:

        def read() -> None:
            try:
                calls.append(ours.recv(100))
            except BlockingIOError:
                calls.append(b"nothing")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(poller.run)
            poller.register(ours.fileno(), Watch(read, lambda: calls.append(b"error")))
            for chunk in (b"one", b"two"):
                theirs.send(chunk)
                await trio.testing.wait_all_tasks_blocked()
            assert calls == [b"one", b"two"]
            theirs.send(b"taken")
            assert ours.recv(100) == b"taken"  # before the poller's task ran
            await trio.testing.wait_all_tasks_blocked()
            assert calls == [b"one", b"two"]
            theirs.send(b"three")
            await trio.testing.wait_all_tasks_blocked()
            assert calls == [b"one", b"two", b"three"]
            nursery.cancel_scope.cancel()


async def test_a_failing_handler_is_dropped_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    poller, calls, errors = BackendPoller(), [], []
    bad, bad_peer = socket.socketpair()
    good, good_peer = socket.socketpair()
    with bad, bad_peer, good, good_peer:

        def explode() -> None:
            raise RuntimeError("a bug")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(poller.run)
            poller.register(bad.fileno(), Watch(explode, lambda: errors.append("bad")))
            poller.register(
                good.fileno(),
                Watch(lambda: calls.append(good.recv(100)), lambda: errors.append("good")),
            )
            bad_peer.send(b"x")
            good_peer.send(b"y")
            await trio.testing.wait_all_tasks_blocked()
            good_peer.send(b"z")
            await trio.testing.wait_all_tasks_blocked()
            assert b"".join(calls) == b"yz"
            assert errors == ["bad"]  # its owner (the tunnel) is told, once
            nursery.cancel_scope.cancel()
    assert "poller.handler_failed" in caplog.text  # one structured line, no traceback
    assert "Traceback" not in caplog.text


async def test_no_epoll_to_be_had_means_pump_tasks_not_a_dead_connection(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of descriptors when the first tunnel wants the connection's poller: that tunnel
    runs on pump tasks, and the next one gets the poller."""
    real_epoll, failures = select.epoll, [OSError(errno.EMFILE, "Too many open files")]

    def epoll_or_emfile() -> select.epoll:
        if failures:
            raise failures.pop()
        return real_epoll()

    monkeypatch.setattr(select, "epoll", epoll_or_emfile)
    net = MemoryNet(nursery, echo_backend, backend_sockets=True)
    config = make_config(("/", "http://127.0.0.1:9"))
    async with open_h2_client(await open_memory_client(nursery, config, net)) as client:
        for text in (b"first, on pumps", b"second, on the poller"):
            ws = await client.websocket("/")
            assert ws.status == 200
            await client.send_data(ws.state, text)
            await client.wait_for(lambda ws=ws, text=text: bytes(ws.state.data) == text)
    assert not failures
