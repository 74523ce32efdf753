"""The backend pool's reaper closes every idle connection when its keep-alive runs out."""

from __future__ import annotations

import trio
import trio.testing

from h2ws_proxy.backend.pool import BackendConnection, BackendPool
from h2ws_proxy.config import BackendAddress, Limits

ADDRESS = BackendAddress(scheme="http", host="127.0.0.1", port=1)
OTHER = BackendAddress(scheme="http", host="127.0.0.1", port=2)
KEEPALIVE_S = 4.0


async def no_dial(address: BackendAddress) -> trio.abc.HalfCloseableStream:
    raise AssertionError("the test never dials")


async def test_each_idle_connection_is_closed_when_its_keepalive_ends(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Also those given back while the reaper already waits for an earlier expiry, and
    those given back after it went idle with nothing to wait for."""
    pool = BackendPool(Limits(backend_keepalive_s=KEEPALIVE_S), no_dial)
    nursery.start_soon(pool.reap)
    closed_at: dict[float, float] = {}
    released = [(0.0, ADDRESS), (1.0, ADDRESS), (2.5, OTHER), (20.0, ADDRESS)]
    for at, address in released:
        await trio.sleep_until(at)
        stream = trio.testing.MemorySendStream(
            close_hook=lambda at=at: closed_at.setdefault(at, trio.current_time())
        )
        await pool.release(BackendConnection(address=address, stream=stream))  # type: ignore[arg-type]
    await trio.sleep_until(30.0)
    assert closed_at == {at: at + KEEPALIVE_S for at, _ in released}
    assert pool.idle_count == 0
