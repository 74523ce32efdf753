"""Backend groups with real servers: two Node ``ws`` processes and one Python
``websockets`` process behind one route, balanced, killed, brought back.

Each backend says which it is (``GET /whoami`` and the WebSocket text ``__whoami__`` answer
its port), so the tests see where every request and tunnel went.
"""

from __future__ import annotations

import collections
import contextlib
import json
import sys
from collections.abc import AsyncIterator

import pytest
import trio

from h2ws_proxy.config import SocketAddress, parse_config
from tests.conftest import StartProxy
from tests.helpers.h2_client import H2TestClient, WebSocketStream, open_h2_client
from tests.helpers.node import BACKEND_SCRIPT, NodePeer, require_node, start_peer
from tests.helpers.records import capture_proxy_records

pytestmark = [pytest.mark.node, pytest.mark.socket]

GET_WHOAMI = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":path", b"/whoami"),
    (b":authority", b"proxy.test"),
]


async def _start_backend(nursery: trio.Nursery, kind: str, port: int = 0) -> NodePeer:
    if kind == "node":
        command = [require_node(), str(BACKEND_SCRIPT), "--port", str(port)]
    else:
        command = [sys.executable, "-m", "tests.helpers.ws_echo_process", "--port", str(port)]
    return await start_peer(nursery, command)


async def _three_backends(nursery: trio.Nursery) -> list[NodePeer]:
    return [await _start_backend(nursery, kind) for kind in ("node", "python", "node")]


def _config(ports: list[int], **group: object) -> dict[str, object]:
    return {
        "listener": [{"bind": "127.0.0.1:0"}],
        "backend": [
            {
                "name": "app",
                "servers": [f"http://127.0.0.1:{port}" for port in ports],
                **group,
            }
        ],
        "route": [{"path": "/", "backend": "app"}],
        "limits": {"max_connections_per_client": 0, "max_tunnels_per_client": 0},
    }


@contextlib.asynccontextmanager
async def _client(address: SocketAddress) -> AsyncIterator[H2TestClient]:
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with open_h2_client(stream) as client:
        yield client


async def _whoami_get(client: H2TestClient) -> tuple[int | None, int | None]:
    """(status, backend port) of one ``GET /whoami``."""
    state = await client.finished(await client.request(GET_WHOAMI, end_stream=True))
    if state.status != 200:
        return state.status, None
    return 200, int(json.loads(bytes(state.data))["port"])


async def _whoami_tunnel(client: H2TestClient) -> tuple[WebSocketStream, int]:
    ws = await client.websocket("/")
    assert ws.status == 200, ws.status
    await ws.send("__whoami__")
    return ws, int(json.loads(await ws.receive())["port"])


async def test_requests_and_tunnels_go_round_robin_and_least_connections(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    backends = await _three_backends(nursery)
    ports = [backend.port for backend in backends]
    address = await start_proxy(parse_config(_config(ports)))
    async with _client(address) as client:
        answers = [await _whoami_get(client) for _ in range(6)]
        assert collections.Counter(port for _, port in answers) == dict.fromkeys(ports, 2)
        tunnels = [await _whoami_tunnel(client) for _ in range(6)]
        assert collections.Counter(port for _, port in tunnels) == dict.fromkeys(ports, 2)

    config = parse_config(_config(ports, balance="least_connections"))
    address = await start_proxy(config)
    async with _client(address) as client:
        held = [await _whoami_tunnel(client) for _ in range(3)]
        assert {port for _, port in held} == set(ports)  # one each: all had none
        freed = held[1]
        with capture_proxy_records() as records:
            await freed[0].close()
            await records.wait_for(lambda r: r.event == "tunnel.closed", 5, "the closed tunnel")
        # The server with fewest tunnels now is the one whose tunnel closed.
        _, port = await _whoami_tunnel(client)
        assert port == freed[1]


async def test_a_killed_server_costs_no_new_tunnel_and_comes_back_after_its_checks(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    backends = await _three_backends(nursery)
    ports = [backend.port for backend in backends]
    config = _config(ports, health_check={"path": "/healthz", "interval_s": 0.2, "timeout_s": 0.1})
    address = await start_proxy(parse_config(config))
    victim = backends[1]  # the Python one
    with capture_proxy_records() as records:
        async with _client(address) as client:
            held = {port: ws for ws, port in [await _whoami_tunnel(client) for _ in range(3)]}
            assert set(held) == set(ports)
            # Load of new tunnels, one after another; the victim dies in the middle.
            for index in range(30):
                if index == 10:
                    victim.process.kill()
                    await victim.process.wait()
                ws, port = await _whoami_tunnel(client)  # asserts 200: every one opens
                assert index < 10 or port != victim.port
                await ws.close()
            # The tunnels held on the live servers are untouched.
            for port, ws in held.items():
                if port != victim.port:
                    await ws.send(f"still here {port}")
                    assert await ws.receive() == f"still here {port}"
            down = await records.wait_for(
                lambda r: r.event == "backend.server_down", 10, "the server taken out"
            )
            assert down.get("server") == f"http://127.0.0.1:{victim.port}"

            # Back on its port: its checks pass and it gets work again.
            backends[1] = await _start_backend(nursery, "python", victim.port)
            await records.wait_for(
                lambda r: r.event == "backend.server_up", 10, "the server brought back"
            )
            seen = {(await _whoami_get(client))[1] for _ in range(6)}
            assert victim.port in seen

            # Every server killed: 503 for tunnels and requests alike.
            records.records.clear()
            for backend in backends:
                backend.process.kill()
            for port in ports:
                await records.wait_for(
                    lambda r, port=port: (
                        r.event == "backend.server_down"
                        and r.get("server") == f"http://127.0.0.1:{port}"
                    ),
                    10,
                    f"server {port} taken out",
                )
            ws = await client.websocket("/")
            assert ws.status == 503
            assert (await _whoami_get(client))[0] == 503
