"""The lean path's per-client-read clock reading, the inlined exchange start and the pool's
kept quiet-poll set, end to end through the real frontend (real sockets, the real server in
the test's nursery).

tests/protocol/test_lean_start_clock.py drives ``LeanRequests`` directly and clears
``read_time`` by hand; these check the frontend's wiring: a later client read must take a
fresh reading for the pool's keep-alive test and for its requests' idle timers. Nothing
sleeps: the "age" of an idle connection is set through its ``idle_since`` between two reads.
"""

from __future__ import annotations

import h2.settings
import pytest
import trio

from h2ws_proxy.backend.pool import BackendPool
from h2ws_proxy.config import RouteConfig
from h2ws_proxy.http.message import HttpRequest
from h2ws_proxy.http2.lean_requests import LeanRequests
from h2ws_proxy.http2.stream import H2Stream
from tests.conftest import StartProxy
from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.h2_client import H2TestClient, StreamState, open_h2_client
from tests.helpers.scripted_http import get, scripted
from tests.helpers.setup import backend_url, make_config

pytestmark = pytest.mark.socket

KEEPALIVE_S = 120.0
IDLE_TIMEOUT_S = 50.0


def _answer_for(head: bytes) -> bytes:
    lines = head.split(b"\r\n")
    path = lines[0].split(b" ", 2)[1]
    extra = [line for line in lines[1:] if line.lower().startswith(b"x-differ:")]
    body = b"for " + path + (b" " + extra[0].split(b":", 1)[1].strip() if extra else b"")
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def _answer(connection: BackendConnection, head: bytes, _number: int) -> bool:
    await connection.stream.send_all(_answer_for(head))
    return True


async def _send_together(
    client: H2TestClient, heads: list[list[tuple[bytes, bytes]]]
) -> list[StreamState]:
    """GETs in one write (so, on loopback, one read of the proxy), all waited for."""
    states = []
    for head in heads:
        stream_id = client.conn.get_next_available_stream_id()
        state = StreamState(stream_id)
        client.streams[stream_id] = state
        client.conn.send_headers(stream_id, head, end_stream=True)
        states.append(state)
    await client.flush()
    with trio.fail_after(15):
        for state in states:
            await client.finished(state)
    return states


class Hooked:
    """``LeanRequests.try_start`` wrapped: the pool seen, the lean starts, their deadlines."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pools: list[BackendPool] = []
        self.started: list[bool] = []
        self.deadlines: list[float] = []
        original = LeanRequests.try_start

        def try_start(
            lean: LeanRequests,
            stream: H2Stream,
            request: HttpRequest,
            route: RouteConfig,
            *more: object,
        ) -> bool:
            self.pools.append(lean.server.pool)
            started = original(lean, stream, request, route, *more)  # type: ignore[arg-type]
            self.started.append(started)
            if started:
                self.deadlines.append(stream.on_writable.deadline)  # type: ignore[union-attr]
            return started

        monkeypatch.setattr(LeanRequests, "try_start", try_start)


async def _warm(client: H2TestClient, backend: ScriptedBackend, hooked: Hooked) -> None:
    """Two backend connections, then parked in this client connection's poller."""
    warm = await _send_together(client, [get(b"/w1"), get(b"/w2")])
    warm += await _send_together(client, [get(b"/w3"), get(b"/w4")])
    assert [s.status for s in warm] == [200] * 4
    assert len(backend.connections) == 2
    idle = hooked.pools[-1]._idle.everything()
    assert len(idle) == 2
    assert None not in [c.parked_in for c in idle], idle


async def test_a_later_read_reads_the_clock_anew_for_the_pools_keepalive_test(
    nursery: trio.Nursery, start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read A takes a reading (a lean start). Before read B, the idle connections are made
    exactly ``backend_keepalive_s`` old by the clock as it stands then: B's take must see
    them expired (a fresh reading), not young (A's reading kept), and dial anew."""
    backend = ScriptedBackend(scripted(_answer))
    port = await nursery.start(backend.run)
    address = await start_proxy(
        make_config(("/", backend_url(port)), backend_keepalive_s=KEEPALIVE_S)
    )
    hooked = Hooked(monkeypatch)
    async with open_h2_client(await trio.open_tcp_stream(address.host, address.port)) as client:
        await _warm(client, backend, hooked)
        (a,) = await _send_together(client, [get(b"/a")])  # read A: lean, a reading taken
        assert hooked.started[-1]
        assert (a.status, bytes(a.data)) == (200, b"for /a")
        pool = hooked.pools[-1]
        idle = pool._idle.everything()
        assert len(idle) == 2

        now = trio.current_time()
        for connection in idle:
            connection.idle_since = now - KEEPALIVE_S  # expired by any reading from now on
        (b,) = await _send_together(client, [get(b"/b")])  # read B
        assert (b.status, bytes(b.data)) == (200, b"for /b")
        assert hooked.started[-1] is False  # nothing young to take: the task path dialled
        assert len(backend.connections) == 3
        assert pool.idle_count <= 1  # the two expired ones were dropped (the new one kept)
        for connection in idle:
            assert connection.stream.fileno() == -1  # type: ignore[attr-defined]


async def test_a_later_reads_idle_timer_counts_from_that_read(
    nursery: trio.Nursery, start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lean request's idle deadline is never earlier than its timeout after the client
    read that brought it began to be acted on: read B's deadline is at least the clock
    before B was sent plus ``http_idle_timeout_s`` (read A's reading would be earlier)."""
    backend = ScriptedBackend(scripted(_answer))
    port = await nursery.start(backend.run)
    address = await start_proxy(
        make_config(
            ("/", backend_url(port)),
            backend_keepalive_s=KEEPALIVE_S,
            http_idle_timeout_s=IDLE_TIMEOUT_S,
        )
    )
    hooked = Hooked(monkeypatch)
    async with open_h2_client(await trio.open_tcp_stream(address.host, address.port)) as client:
        await _warm(client, backend, hooked)
        await _send_together(client, [get(b"/a")])  # read A
        assert hooked.started[-1]
        before_b = trio.current_time()
        assert before_b > hooked.deadlines[-1] - IDLE_TIMEOUT_S  # (time moved since A)
        (b,) = await _send_together(client, [get(b"/b")])  # read B
        assert hooked.started[-1]
        assert (b.status, bytes(b.data)) == (200, b"for /b")
        assert hooked.deadlines[-1] >= before_b + IDLE_TIMEOUT_S


async def test_one_read_of_repeated_and_differing_gets_sends_each_its_own_head(
    nursery: trio.Nursery, start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One client read: the same GET twice (the second taken as the last one), then one
    differing in its path, then one differing in an extra field only. Each backend request
    is its own (no reuse of the last one's values), lean or on a task."""
    backend = ScriptedBackend(scripted(_answer))
    port = await nursery.start(backend.run)
    address = await start_proxy(
        make_config(("/", backend_url(port)), backend_keepalive_s=KEEPALIVE_S)
    )
    hooked = Hooked(monkeypatch)
    async with open_h2_client(await trio.open_tcp_stream(address.host, address.port)) as client:
        await _warm(client, backend, hooked)
        heads = [
            get(b"/same"),
            get(b"/same"),
            get(b"/other"),
            [*get(b"/same"), (b"x-differ", b"yes")],
            get(b"/same"),
        ]
        states = await _send_together(client, heads)
        assert [(s.status, bytes(s.data)) for s in states] == [
            (200, b"for /same"),
            (200, b"for /same"),
            (200, b"for /other"),
            (200, b"for /same yes"),
            (200, b"for /same"),
        ]
        assert hooked.started[-5:][:2] == [True, True]  # two parked: two lean starts


async def test_over_the_limit_in_one_read_is_refused_and_the_rest_served(
    nursery: trio.Nursery, start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """max_concurrent_streams=2, three same GETs in one read with two parked connections:
    one is REFUSED_STREAM (7), the other two served on the lean path."""
    backend = ScriptedBackend(scripted(_answer))
    port = await nursery.start(backend.run)
    address = await start_proxy(
        make_config(
            ("/", backend_url(port)), backend_keepalive_s=KEEPALIVE_S, max_concurrent_streams=2
        )
    )
    hooked = Hooked(monkeypatch)
    # The test client (the h2 library) would hold to the limit itself: let it send past it.
    monkeypatch.setattr(h2.settings.Settings, "max_concurrent_streams", property(lambda _: 100))
    async with open_h2_client(await trio.open_tcp_stream(address.host, address.port)) as client:
        await _warm(client, backend, hooked)
        states = await _send_together(client, [get(b"/r"), get(b"/r"), get(b"/r")])
        # (The session registers a read's new streams before the front end judges them,
        # so the first of the read is the one over the limit.)
        outcomes = sorted((s.status or 0, bytes(s.data), s.reset_code or 0) for s in states)
        assert outcomes == [(0, b"", 7), (200, b"for /r", 0), (200, b"for /r", 0)]
        assert hooked.started[-2:] == [True, True]
