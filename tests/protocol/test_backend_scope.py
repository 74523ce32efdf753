"""connect_and_upgrade holding its deadlines on the caller's cancel scope (the HTTP/2
frontend passes each stream's): timeouts still become BackendTimeout at the same moments,
any other cancellation reaches the scope that was cancelled, and the deadline is given back."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from h2ws_proxy.backend.upgrade import connect_and_upgrade
from h2ws_proxy.config import BackendAddress
from h2ws_proxy.errors import BackendTimeout
from h2ws_proxy.http.backend_handshake import build_backend_upgrade
from tests.helpers.setup import make_config
from tests.protocol.test_backend_upgrade import KEY, LIMITS, REQUEST

ROUTE = make_config(("/", "http://127.0.0.1:9")).routes[0]
UPGRADE = build_backend_upgrade(REQUEST, ROUTE, KEY, None)


async def never_connects(_address: BackendAddress) -> trio.abc.HalfCloseableStream:
    await trio.sleep_forever()
    raise AssertionError("unreachable")


async def never_connects_in_a_nursery(_address: BackendAddress) -> trio.abc.HalfCloseableStream:
    """Like trio.open_tcp_stream's attempts: cancelled children come out as a group."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.sleep_forever)
        nursery.start_soon(trio.sleep_forever)
    raise AssertionError("unreachable")


async def never_answers(_address: BackendAddress) -> trio.abc.HalfCloseableStream:
    proxy_side, _backend_side = trio.testing.memory_stream_pair()
    return proxy_side


async def dial(connect: object, scope: trio.CancelScope) -> None:
    await connect_and_upgrade(
        ROUTE.backend.servers[0],
        UPGRADE,
        KEY,
        REQUEST,
        LIMITS,
        connect,  # type: ignore[arg-type]
        scope=scope,
    )


@pytest.mark.parametrize("connect", [never_connects, never_connects_in_a_nursery])
async def test_connect_timeout_on_the_callers_scope(
    connect: object, autojump_clock: trio.testing.MockClock
) -> None:
    started = trio.current_time()
    with trio.CancelScope() as scope:
        with pytest.raises(BackendTimeout, match=r"did not accept within 3\.0s"):
            await dial(connect, scope)
        assert trio.current_time() - started == 3.0
        assert scope.deadline == math.inf
    assert not scope.cancelled_caught


async def test_handshake_timeout_on_the_callers_scope(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started = trio.current_time()
    with trio.CancelScope() as scope:
        with pytest.raises(BackendTimeout, match=r"did not answer the upgrade within 10\.0s"):
            await dial(never_answers, scope)
        assert trio.current_time() - started == 10.0
        assert scope.deadline == math.inf


@pytest.mark.parametrize("connect", [never_connects, never_connects_in_a_nursery, never_answers])
async def test_a_cancel_of_the_callers_scope_is_no_timeout(
    connect: object, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:
            nursery.start_soon(_cancel_after, scope, 1.0)  # a client reset, say
            await dial(connect, scope)
    assert scope.cancelled_caught
    assert scope.deadline == math.inf


async def test_an_outer_cancel_passes_through(autojump_clock: trio.testing.MockClock) -> None:
    with trio.move_on_after(1.0) as outer:
        with trio.CancelScope() as scope:
            await dial(never_answers, scope)
    assert outer.cancelled_caught
    assert not scope.cancelled_caught


async def _cancel_after(scope: trio.CancelScope, seconds: float) -> None:
    await trio.sleep(seconds)
    scope.cancel()
