"""The backend pool: its reaper closes every idle connection when its keep-alive runs out, and
a connection parked in a poller is dropped for what reaches it while idle, and only then."""

from __future__ import annotations

import socket

import trio
import trio.testing

from h2ws_proxy.backend.kept_connection import BackendConnection
from h2ws_proxy.backend.pool import BackendPool
from h2ws_proxy.config import BackendAddress, Limits
from h2ws_proxy.transport.poller import BackendPoller
from h2ws_proxy.transport.socket_stream import LeanSocketStream

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


async def test_a_parked_connection_is_dropped_for_bytes_not_for_a_spurious_event() -> None:
    """The poller may call a watcher with nothing to read (its one-watcher round does not ask
    epoll): a quiet parked connection stays; one the backend wrote to goes."""
    pool = BackendPool(Limits(backend_keepalive_s=KEEPALIVE_S), no_dial)
    poller = BackendPoller()
    ours, backend_side = socket.socketpair()
    try:
        connection = BackendConnection(address=ADDRESS, stream=LeanSocketStream(ours), pool=pool)
        pool.release_now(connection, poller)
        assert connection.parked_in is poller
        connection.on_readable()  # spurious: nothing there
        assert pool.idle_count == 1
        assert connection.parked_in is poller
        backend_side.send(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        connection.on_readable()
        assert pool.idle_count == 0
        assert connection.parked_in is None
        assert ours.fileno() == -1  # closed
    finally:
        backend_side.close()
        ours.close()
        poller.close()
