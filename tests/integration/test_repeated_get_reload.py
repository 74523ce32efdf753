"""A repeated GET on the HTTP/2 lean path, over real loopback sockets: the connection's
remembered request, kept_start's LastRequest (its balancer and "plain" server) and a parked
backend connection must follow a reload that moves the route, and never take a parked
connection's stray bytes for an answer."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from h2ws_proxy.http2 import lean_requests
from h2ws_proxy.relay.kept_start import KeptStart
from h2ws_proxy.server.serve import serve
from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.h2_client import open_h2_client
from tests.helpers.reload import post_reload, serve_between
from tests.helpers.scripted_http import fetch, scripted
from tests.helpers.setup import make_config
from tests.integration.test_h1_repeated_requests import answering

pytestmark = pytest.mark.socket


async def test_a_repeated_lean_get_follows_a_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests after the reload go to the route's new backend, by the lean path too."""
    lean_ports: list[int] = []
    original = lean_requests.start_on_kept_connection

    def noted(*args: object, **kwargs: object) -> KeptStart | None:
        start = original(*args, **kwargs)  # type: ignore[arg-type]
        if start is not None:
            lean_ports.append(start[1].address.port)
        return start

    monkeypatch.setattr(lean_requests, "start_on_kept_connection", noted)
    async with trio.open_nursery() as nursery:
        a, b = answering(b"AAAAA"), answering(b"BBBBB")
        file, bound, stream = await serve_between(nursery, tmp_path, a, b)
        async with open_h2_client(stream) as client:
            for _ in range(4):  # the later ones: remembered request, lean start, kept wire
                state = await fetch(client, b"/same")
                assert (state.status, bytes(state.data)) == (200, b"AAAAA")
            file.routes = [("/", b.url)]
            file.write()
            assert bound.admin is not None
            status, body = await post_reload(bound.admin)
            assert status == 200, body
            for _ in range(3):
                state = await fetch(client, b"/same")
                assert (state.status, bytes(state.data)) == (200, b"BBBBB")
        assert a.port in lean_ports, lean_ports  # (the lean path ran, before and after)
        assert lean_ports[-1] == b.port, lean_ports
        assert a.all_received.count(b"GET /same ") == 4
        assert b.all_received.count(b"GET /same ") == 3
        nursery.cancel_scope.cancel()


async def test_stray_bytes_on_a_parked_connection_between_repeated_lean_gets(
    nursery: trio.Nursery,
) -> None:
    """The pool's quiet check runs on every take, behind the remembered request: bytes a
    backend wrote on a parked connection after its answer are never read as the next
    repeated GET's answer."""

    async def answer(connection: BackendConnection, _head: bytes, number: int) -> bool:
        body = b"R%d" % number
        await connection.stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        return True

    backend = ScriptedBackend(scripted(answer))
    await nursery.start(backend.run)
    bound = await nursery.start(serve, make_config(("/", backend.url)))
    address = bound.listeners[0]
    stream = await trio.open_tcp_stream(address.host, address.port)
    stray = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTRAY"
    bodies = []
    async with open_h2_client(stream) as client:
        for _ in range(3):
            bodies.append(bytes((await fetch(client, b"/same")).data))
        assert len(backend.connections) == 1
        await backend.connections[0].stream.send_all(stray)
        for _ in range(3):
            state = await fetch(client, b"/same")
            bodies.append(bytes(state.data))
            assert state.status == 200
    assert b"STRAY" not in bodies, bodies
    assert bodies[:3] == [b"R0", b"R1", b"R2"]
