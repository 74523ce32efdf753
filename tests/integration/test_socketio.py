"""socket.io through the proxy: HTTP long-polling first, then the upgrade to WebSocket.

``tests/node/socketio_server.mjs`` (socket.io 4, HTTP/1.1) is the backend and
``tests/node/socketio_client.mjs`` (socket.io-client 4 in Node, default transports) the
client, over plain HTTP/1.1 to the proxy. A socket.io session starts as ordinary requests
(the handshake GET, POSTs and long-polling GETs on ``/socket.io/``) and then upgrades to a
WebSocket on the same path, so the proxy must carry both kinds of request for one session,
with the long-polling GET held open while the upgrade happens beside it.

Needs ordinary HTTP proxying: until the proxy has it, the handshake GET gets 501 and the
client reports ``connect_error``.
"""

from __future__ import annotations

import pytest
import trio

from h2ws_proxy.config import ProxyConfig, SocketAddress, parse_config
from tests.conftest import StartProxy
from tests.helpers.node import (
    SOCKETIO_CLIENT_SCRIPT,
    SOCKETIO_SERVER_SCRIPT,
    require_node,
    run_node_script,
    start_node_peer,
)
from tests.helpers.records import ProxyRecords, capture_proxy_records, is_request, is_tunnel
from tests.helpers.setup import backend_url, make_config

pytestmark = [pytest.mark.node, pytest.mark.socket]

PACKAGES = ("socket.io", "socket.io-client")
MESSAGES = 10
SIZE = 10_000


@pytest.fixture(autouse=True)
def _node_available() -> None:
    require_node(*PACKAGES)


async def test_socketio_long_polling_then_websocket_upgrade(
    nursery: trio.Nursery, start_proxy: StartProxy, proxy_records: ProxyRecords
) -> None:
    server = await start_node_peer(nursery, SOCKETIO_SERVER_SCRIPT, packages=PACKAGES)
    address = await start_proxy(make_config(("/", backend_url(server.port))))
    result = await run_node_script(
        SOCKETIO_CLIENT_SCRIPT,
        "--url", f"http://{address.host}:{address.port}",
        "--messages", str(MESSAGES), "--size", str(SIZE), "--timeout-ms", "15000",
        timeout_s=25, packages=PACKAGES,
    )  # fmt: skip
    assert result["exit_code"] == 0, result
    assert result["ok"] is True, result
    assert result["initial_transport"] == "polling", result  # the handshake was a GET
    assert result["upgraded"] is True, result
    assert result["upgrade_transport"] == "websocket", result
    assert result["final_transport"] == "websocket", result
    assert result["acked"] == MESSAGES, result
    assert result["mismatches"] == 0, result
    # The second half was sent after the upgrade; the first half may have raced it.
    assert result["by_transport"]["websocket"] >= MESSAGES // 2, result
    assert sum(result["by_transport"].values()) == MESSAGES, result

    # The server saw one session: connected over polling, upgraded, left on request.
    with trio.fail_after(10):
        while not any(e.get("event") == "disconnect" for e in server.events):
            await server.next_event()
    kinds = [(e["event"], e.get("transport")) for e in server.events if "event" in e]
    assert kinds == [
        ("connection", "polling"),
        ("upgrade", "websocket"),
        ("disconnect", "websocket"),
    ], server.events
    assert server.events[-1]["reason"] == "client namespace disconnect", server.events

    # The proxy carried ordinary requests and one WebSocket tunnel, all on /socket.io/.
    tunnel = await proxy_records.wait_for(
        lambda r: is_tunnel(r, "/socket.io/"), 5, "for the /socket.io/ WebSocket"
    )
    assert tunnel.get("front") == "h1", tunnel
    assert tunnel.get("status") == 101, tunnel
    assert "transport=websocket" in str(tunnel.get("path")), tunnel
    polling = proxy_records.matching(lambda r: is_request(r, "/socket.io/"))
    assert len(polling) >= 2, proxy_records.records  # at least the handshake GET and a POST
    assert all(r.get("front") == "h1" for r in polling), polling
    assert not proxy_records.matching(lambda r: r.event == "tunnel.refused"), proxy_records.records


async def _run_clients(address: SocketAddress, count: int) -> list[dict[str, object]]:
    """``count`` socket.io clients in a row, each keeping its cookies as a browser does."""
    results = []
    for _ in range(count):
        result = await run_node_script(
            SOCKETIO_CLIENT_SCRIPT,
            "--url", f"http://{address.host}:{address.port}",
            "--messages", "20", "--size", "100", "--timeout-ms", "10000",
            "--with-credentials",
            timeout_s=20, packages=PACKAGES,
        )  # fmt: skip
        results.append(result)
    return results


def _three_node_config(ports: list[int], **group: object) -> ProxyConfig:
    return parse_config(
        {
            "listener": [{"bind": "127.0.0.1:0"}],
            "backend": [
                {
                    "name": "socketio",
                    "servers": [f"http://127.0.0.1:{port}" for port in ports],
                    **group,
                }
            ],
            "route": [{"path": "/", "backend": "socketio"}],
        }
    )


async def test_socketio_on_three_nodes_needs_and_gets_sticky_cookies(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    servers = [
        await start_node_peer(nursery, SOCKETIO_SERVER_SCRIPT, packages=PACKAGES) for _ in range(3)
    ]
    ports = [server.port for server in servers]
    # Round robin sends a session's requests to nodes that do not know it: it fails.
    address = await start_proxy(_three_node_config(ports))
    unpinned = await _run_clients(address, 3)
    assert not any(result["ok"] for result in unpinned), unpinned
    # A sticky cookie keeps each session on one node: long-polling, the upgrade and 20
    # echoes, 20 clients in a row, no failure.
    address = await start_proxy(
        _three_node_config(ports, balance="cookie", sticky_cookie="h2ws_node")
    )
    with capture_proxy_records() as records:
        pinned = await _run_clients(address, 20)
        await records.wait_for(  # the last tunnel's line comes as its connection ends
            lambda _: len(records.matching(lambda r: is_tunnel(r, "/socket.io/"))) >= 20,
            10,
            "for the 20 tunnels",
        )
    failures = [result for result in pinned if not (result["ok"] and result["upgraded"])]
    assert not failures, failures
    assert all(result["acked"] == 20 for result in pinned), pinned
    # New sessions were spread over the nodes (each one whole on its node, or it failed).
    tunnels = records.matching(lambda r: is_tunnel(r, "/socket.io/"))
    assert len(tunnels) == 20, records.records
    assert {r.get("backend") for r in tunnels} == {f"http://127.0.0.1:{p}" for p in ports}
