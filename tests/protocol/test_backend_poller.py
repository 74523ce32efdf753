"""BackendPoller on real socketpairs: readiness reaches the handler, a paused socket stays
silent even when its peer hangs up, and a failing handler cannot stop the others."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from h2ws_proxy.backend_poller import BackendPoller

pytestmark = pytest.mark.socket


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

            poller.register(ours.fileno(), read)
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


async def test_a_failing_handler_is_dropped_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    poller, calls = BackendPoller(), []
    bad, bad_peer = socket.socketpair()
    good, good_peer = socket.socketpair()
    with bad, bad_peer, good, good_peer:

        def explode() -> None:
            raise RuntimeError("a bug")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(poller.run)
            poller.register(bad.fileno(), explode)
            poller.register(good.fileno(), lambda: calls.append(good.recv(100)))
            bad_peer.send(b"x")
            good_peer.send(b"y")
            await trio.testing.wait_all_tasks_blocked()
            good_peer.send(b"z")
            await trio.testing.wait_all_tasks_blocked()
            assert b"".join(calls) == b"yz"
            nursery.cancel_scope.cancel()
    assert "backend readiness handler failed" in caplog.text
