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

from collections.abc import Iterator

import pytest
import trio

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


@pytest.fixture
def proxy_records() -> Iterator[ProxyRecords]:
    with capture_proxy_records() as records:
        yield records


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
