"""The lean start's shortcuts (http2/lean_requests.py, relay/kept_start.py,
backend/pool.py): one clock reading per client read, the connection's poller passed once
known. Each test fails if its shortcut is wrong: a reading kept past its read, a stale
connection taken by an old reading, a request sent with no idle connection to take.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from h2ws_proxy.http2.lean_requests import LeanRequests
from h2ws_proxy.http2.proxy_session import ProxySession
from h2ws_proxy.http2.request_scope import CancelNoted
from h2ws_proxy.http2.stream import H2Stream
from h2ws_proxy.relay.context import ClientInfo
from h2ws_proxy.relay.kept_start import LastRequest, start_on_kept_connection
from h2ws_proxy.transport.poller import BackendPoller
from h2ws_proxy.transport.timers import ConnectionTimers
from tests.protocol.test_repeated_request_intake import KeptServers

TIMEOUT_S = 30.0


class QuietPort:
    """A stream's connection port that is never behind (nothing is answered here)."""

    def backlogged(self) -> bool:
        return False

    def wait_for_window(self, stream: H2Stream) -> None:
        raise AssertionError("nothing is sent")


@pytest.fixture
async def timed_poller() -> AsyncIterator[BackendPoller]:
    made = BackendPoller(timers=ConnectionTimers())
    yield made
    made.close()


def lean_requests(kept: KeptServers, poller: BackendPoller) -> LeanRequests:
    info = ClientInfo(1, kept.config.listeners[0], "127.0.0.1", tls=False)
    return LeanRequests(
        ProxySession(kept.config.limits, connect_protocol_enabled=False),
        kept.server,
        info,
        poller=lambda: poller,
        refuse=lambda _stream_id, error: None,
        finish=lambda _stream, _record, _result: None,
        forget=lambda _stream: None,
        run_on_task=lambda *_args: pytest.fail("no request here runs on a task"),
    )


async def test_lean_starts_share_their_reads_clock_reading(
    timed_poller: BackendPoller, autojump_clock: trio.testing.MockClock
) -> None:
    """The starts of one client read arm their idle timers from the read's one reading;
    the next read (``read_time`` cleared, as the frontend does per read) reads anew, so a
    request's deadline is never earlier than its timeout after the read that brought it."""
    kept = KeptServers("http://127.0.0.1:9")
    timeout = kept.config.limits.http_idle_timeout_s
    assert timeout > 0
    try:
        backends = [kept.park(0, timed_poller) for _ in range(3)]
        lean = lean_requests(kept, timed_poller)
        request, route = kept.request(0)
        session = lean.session
        streams = [
            H2Stream(session, QuietPort(), stream_id, CancelNoted(), True)  # type: ignore[arg-type]
            for stream_id in (1, 3, 5)
        ]
        lean.read_time = -1.0  # a read begins
        first_read = trio.current_time()
        assert lean.try_start(streams[0], request, route)
        await trio.sleep(1)  # (the reading stays this read's, however long it takes)
        assert lean.try_start(streams[1], request, route)
        lean.read_time = -1.0  # the next read
        second_read = trio.current_time()
        assert second_read == first_read + 1
        assert lean.try_start(streams[2], request, route)
        deadlines = [stream.on_writable.deadline for stream in streams]  # type: ignore[union-attr]
        assert deadlines == [
            first_read + timeout,
            first_read + timeout,
            second_read + timeout,
        ]
        for backend in backends:
            assert backend.recv(65536).startswith(b"GET /0 ")
    finally:
        kept.close()


async def test_a_reading_past_the_keepalive_drops_the_idle_connection(
    timed_poller: BackendPoller,
) -> None:
    """The reading the caller gives is the one the pool's keep-alive test uses: a
    connection idle for ``backend_keepalive_s`` by that reading is closed, not taken."""
    kept = KeptServers("http://127.0.0.1:9")
    try:
        backend = kept.park(0, timed_poller)
        request, route = kept.request(0)
        keepalive = kept.config.limits.backend_keepalive_s
        late = trio.current_time() + keepalive + 1
        start = start_on_kept_connection(
            kept.server, route, request, None, lambda: timed_poller, None, timed_poller, late
        )
        assert start is None
        assert kept.server.pool.idle_count == 0
        assert backend.recv(65536) == b""  # closed, never written to
        fresh = kept.park(0, timed_poller)
        start = start_on_kept_connection(
            kept.server,
            route,
            request,
            None,
            lambda: timed_poller,
            None,
            timed_poller,
            trio.current_time(),
        )
        assert start is not None
        assert fresh.recv(65536).startswith(b"GET /0 ")
        start[0].give_back(start[1])
    finally:
        kept.close()


async def test_a_known_poller_with_nothing_idle_takes_nothing(
    timed_poller: BackendPoller,
) -> None:
    """With the poller passed (no ``has_idle`` asked first), a route with no idle
    connection gets None, its server given back, and nothing else is done."""
    kept = KeptServers("http://127.0.0.1:9")

    def no_poller_asked() -> BackendPoller:
        raise AssertionError("the poller was given")

    try:
        request, route = kept.request(0)
        last = LastRequest()
        start = start_on_kept_connection(
            kept.server, route, request, None, no_poller_asked, last, timed_poller, 0.0
        )
        assert start is None
        balancer = kept.server.balancers.of(route.backend)
        assert [server.active for server in balancer.servers] == [0]
    finally:
        kept.close()
