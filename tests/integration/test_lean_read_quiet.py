"""The pool's quiet check once per client read, end to end through the real frontend (real
sockets, the real server in the test's nursery): a backend that closes or speaks on its idle
kept-alive connections between two client reads.

What the backend does happens inside ``LeanRequests.try_start``, right before the read's
first lean start, so no poller round can run between it and the read's takes: the read's
check (or a take's own) must see it. The client must get its answer from a good connection:
a 200 with its own body, never a 502 nor the stray bytes.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import pytest
import trio

from h2ws_proxy.config import RouteConfig
from h2ws_proxy.http.message import HttpRequest
from h2ws_proxy.http2.lean_requests import LeanRequests
from h2ws_proxy.http2.stream import H2Stream
from tests.conftest import StartProxy
from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.h2_client import H2TestClient, open_h2_client
from tests.helpers.scripted_http import get, scripted
from tests.helpers.setup import backend_url, make_config
from tests.integration.test_lean_read_clock import _answer, _send_together

pytestmark = pytest.mark.socket

KEEPALIVE_S = 120.0
STRAY = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 5\r\n\r\nstray"


class BeforeTheRead:
    """``LeanRequests.try_start`` wrapped: ``act`` runs once, right before the next start
    (the first of its read); each start's result is noted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.act: Callable[[], None] | None = None
        self.started: list[bool] = []
        original = LeanRequests.try_start

        def try_start(
            lean: LeanRequests,
            stream: H2Stream,
            request: HttpRequest,
            route: RouteConfig,
            *more: object,
        ) -> bool:
            act, self.act = self.act, None
            if act is not None:
                act()
            started = original(lean, stream, request, route, *more)  # type: ignore[arg-type]
            self.started.append(started)
            return started

        monkeypatch.setattr(LeanRequests, "try_start", try_start)


async def _serve(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> tuple[ScriptedBackend, H2TestClient]:
    backend = ScriptedBackend(scripted(_answer))
    port = await nursery.start(backend.run)
    address = await start_proxy(
        make_config(("/", backend_url(port)), backend_keepalive_s=KEEPALIVE_S)
    )
    stream = await trio.open_tcp_stream(address.host, address.port)
    return backend, await nursery.start(_client, stream)


async def _client(stream: trio.SocketStream, *, task_status: trio.TaskStatus[H2TestClient]) -> None:
    async with open_h2_client(stream) as client:
        task_status.started(client)
        await trio.sleep_forever()


async def _warm(client: H2TestClient, backend: ScriptedBackend, count: int) -> None:
    """``count`` backend connections, then idle, parked in this client connection's poller
    (a second read of as many GETs goes lean on them)."""
    paths = [b"/w%d" % index for index in range(count)]
    for _ in range(2):
        states = await _send_together(client, [get(path) for path in paths])
        assert [s.status for s in states] == [200] * count
    assert len(backend.connections) == count


def _raw(connection: BackendConnection) -> socket.socket:
    stream = connection.stream
    assert isinstance(stream, trio.SocketStream)
    return stream.socket  # type: ignore[return-value]


async def test_a_backend_that_closed_its_idle_connections_between_two_reads(
    nursery: trio.Nursery, start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both idle connections closed by the backend before the next read: that read's GET
    goes to a fresh connection and gets its 200, and nothing is written to the closed ones."""
    hook = BeforeTheRead(monkeypatch)
    backend, client = await _serve(nursery, start_proxy)
    await _warm(client, backend, 2)
    idle = list(backend.connections)
    sent_before = [len(c.received) for c in idle]
    hook.act = lambda: [_raw(c).shutdown(socket.SHUT_WR) for c in idle] and None
    (state,) = await _send_together(client, [get(b"/b")])
    assert (state.status, bytes(state.data)) == (200, b"for /b")
    assert hook.started[-1] is False  # none to take: the task path dialled
    assert len(backend.connections) == 3
    assert [len(c.received) for c in idle] == sent_before


async def test_a_backend_that_spoke_on_its_idle_connections_between_two_reads(
    nursery: trio.Nursery, start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unsolicited bytes (a 408) on both idle connections before the next read: neither is
    reused (the client never sees the 408), the GET is answered on a fresh one."""
    hook = BeforeTheRead(monkeypatch)
    backend, client = await _serve(nursery, start_proxy)
    await _warm(client, backend, 2)
    idle = list(backend.connections)
    sent_before = [len(c.received) for c in idle]
    hook.act = lambda: [os.write(_raw(c).fileno(), STRAY) for c in idle] and None
    (state,) = await _send_together(client, [get(b"/b")])
    assert (state.status, bytes(state.data)) == (200, b"for /b")
    assert len(backend.connections) == 3
    assert [len(c.received) for c in idle] == sent_before


async def test_one_read_whose_first_take_meets_a_closed_connection_reuses_the_others(
    nursery: trio.Nursery, start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three idle, one closed by the backend before a read of three GETs: two go lean on the
    two good ones, the third on a fresh connection; every answer is its own 200."""
    hook = BeforeTheRead(monkeypatch)
    backend, client = await _serve(nursery, start_proxy)
    await _warm(client, backend, 3)
    idle = list(backend.connections)
    closed = idle[-1]
    sent_before = len(closed.received)
    hook.act = lambda: _raw(closed).shutdown(socket.SHUT_WR)
    states = await _send_together(client, [get(b"/a"), get(b"/b"), get(b"/c")])
    assert [(s.status, bytes(s.data)) for s in states] == [
        (200, b"for /a"),
        (200, b"for /b"),
        (200, b"for /c"),
    ]
    assert hook.started[-3:] == [True, True, False]
    assert len(backend.connections) == 4
    assert len(closed.received) == sent_before
