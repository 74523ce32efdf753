"""A parked backend connection is peeked by each take, right before its request's write,
even when several requests of one client read take connections (backend/pool.py).

Bytes a backend sends on a parked connection while the proxy works through a client read
(its keep-alive timeout's 408, the tail of an earlier answer, ...) must not be read as the
answer of a later request of the same read: response-queue poisoning. A check made once
per read and trusted by its later takes would leave that window open (a review finding on
issue 19's branch, where the check was taken back out).

The backend's bytes are made to arrive at exactly that moment by a hook on the lean start
(``LeanRequests.try_start``): after the read's first request went out, the test writes an
unsolicited answer on the backend's side of the other parked connection and waits (on the
proxy's socket, not on time) until it is readable there. Nothing sleeps.
"""

from __future__ import annotations

import os
import select
import socket

import pytest
import trio

from h2ws_proxy.backend.pool import BackendPool
from h2ws_proxy.config import RouteConfig
from h2ws_proxy.http.message import HttpRequest
from h2ws_proxy.http2.lean_requests import LeanRequests
from h2ws_proxy.http2.stream import H2Stream
from h2ws_proxy.relay.context import Generation
from tests.conftest import StartProxy
from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.h2_client import H2TestClient, StreamState, open_h2_client
from tests.helpers.scripted_http import get, scripted
from tests.helpers.setup import backend_url, make_config

pytestmark = pytest.mark.socket

STRAY = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON"


def _answer_for(head: bytes) -> bytes:
    path = head.split(b" ", 2)[1]
    body = b"for " + path
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def _pair(client: H2TestClient, first: bytes, second: bytes) -> list[StreamState]:
    """Two GETs in one write (so one read of the proxy), both waited for."""
    states = []
    for path in (first, second):
        stream_id = client.conn.get_next_available_stream_id()
        state = StreamState(stream_id)
        client.streams[stream_id] = state
        client.conn.send_headers(stream_id, get(path), end_stream=True)
        states.append(state)
    await client.flush()
    with trio.fail_after(15):
        for state in states:
            await client.finished(state)
    return states


def _local_port(fd: int) -> int:
    dup = socket.socket(fileno=os.dup(fd))
    try:
        return int(dup.getsockname()[1])
    finally:
        dup.close()


async def test_bytes_arriving_within_a_read_are_not_read_as_a_later_takes_answer(
    nursery: trio.Nursery, start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def answer(connection: BackendConnection, head: bytes, _number: int) -> bool:
        await connection.stream.send_all(_answer_for(head))
        return True

    backend = ScriptedBackend(scripted(answer))
    port = await nursery.start(backend.run)
    address = await start_proxy(make_config(("/", backend_url(port)), backend_keepalive_s=120.0))

    pools: list[BackendPool] = []
    armed = [False]
    injected: list[int] = []
    original = LeanRequests.try_start

    def try_start(
        self: LeanRequests,
        stream: H2Stream,
        request: HttpRequest,
        route: RouteConfig,
        generation: Generation | None = None,
    ) -> bool:
        started = original(self, stream, request, route, generation)
        pools.append(self.server.pool)
        if started and armed[0] and not injected:
            # The read's first request went out: the backend now speaks on the other
            # parked connection (what it might do any time, e.g. a 408 on its way out).
            idle = self.server.pool._idle.everything()
            assert len(idle) == 1, idle
            proxy_fd = idle[0].stream.fileno()  # type: ignore[attr-defined]
            ours = _local_port(proxy_fd)
            for connection in backend.connections:
                sock = connection.stream.socket  # type: ignore[attr-defined]
                if sock.getpeername()[1] == ours:
                    os.write(sock.fileno(), STRAY)
                    injected.append(ours)
            assert injected, "the idle connection's backend end was not found"
            readable, _, _ = select.select([proxy_fd], [], [], 5.0)
            assert readable, "the stray bytes never reached the proxy's socket"
        return started

    monkeypatch.setattr(LeanRequests, "try_start", try_start)

    async with open_h2_client(await trio.open_tcp_stream(address.host, address.port)) as client:
        # Two connections, on tasks (nothing idle yet), given back unparked; then two
        # lean requests take them and park both in this client connection's poller.
        warm = await _pair(client, b"/w1", b"/w2")
        warm += await _pair(client, b"/w3", b"/w4")
        assert [s.status for s in warm] == [200] * 4
        assert len(backend.connections) == 2
        parked = [c.parked_in for c in pools[-1]._idle.everything()]
        assert len(parked) == 2, parked
        assert None not in parked, parked

        armed[0] = True
        c, d = await _pair(client, b"/c", b"/d")

    assert injected
    assert (c.status, bytes(c.data)) == (200, b"for /c")
    assert (d.status, bytes(d.data)) == (200, b"for /d")  # not the stray b"POISON"
