"""``BackendPoller.run``'s one-watcher round, inline in its loop: a watcher that, in that
round, registers a second one, unregisters itself, or raises, and the poller goes on as
through ``_run_handlers``. (From the review of the branch; the tunnels' tests reach this
path only through a tunnel.)"""

from __future__ import annotations

import gc
import socket
import weakref

import pytest
import trio
import trio.testing

from h2ws_proxy.transport.poller import BackendPoller
from tests.protocol.test_backend_poller import Watch

pytestmark = pytest.mark.socket


async def test_a_watcher_registering_another_and_leaving_in_its_one_watcher_round() -> None:
    poller, calls = BackendPoller(), []
    a, a_peer = socket.socketpair()
    b, b_peer = socket.socketpair()
    with a, a_peer, b, b_peer:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poller.run)

            def read_b() -> None:
                calls.append(("b", b.recv(100)))

            def read_a() -> None:
                calls.append(("a", a.recv(100)))
                # During the one-watcher round: a second watcher in, this one out.
                poller.register(b.fileno(), Watch(read_b, lambda: calls.append(("b", "error"))))
                poller.unregister(a.fileno())

            watch_a = Watch(read_a, lambda: calls.append(("a", "error")))
            poller.register(a.fileno(), watch_a)
            b_peer.send(b"early")  # readable before it is registered
            a_peer.send(b"one")
            await trio.testing.wait_all_tasks_blocked()
            assert calls == [("a", b"one"), ("b", b"early")]
            gone = weakref.ref(watch_a)
            del watch_a
            gc.collect()
            assert gone() is None  # not held by the poller's loop while it waits
            a_peer.send(b"ignored")
            b_peer.send(b"two")
            await trio.testing.wait_all_tasks_blocked()
            assert calls[2:] == [("b", b"two")]
            nursery.cancel_scope.cancel()


async def test_a_raising_watcher_in_the_one_watcher_round_is_dropped_alone() -> None:
    poller, calls = BackendPoller(), []
    a, a_peer = socket.socketpair()
    b, b_peer = socket.socketpair()
    with a, a_peer, b, b_peer:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poller.run)

            def read_a() -> None:
                a.recv(100)
                raise RuntimeError("bug")

            poller.register(a.fileno(), Watch(read_a, lambda: calls.append("a error")))
            a_peer.send(b"x")
            await trio.testing.wait_all_tasks_blocked()
            assert calls == ["a error"]
            poller.register(b.fileno(), Watch(lambda: calls.append(b.recv(10)), calls.append))
            b_peer.send(b"y")
            await trio.testing.wait_all_tasks_blocked()
            assert calls == ["a error", b"y"]
            nursery.cancel_scope.cancel()
