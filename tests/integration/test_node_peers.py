"""The proxy between independent peers: Node's http2 client and Node ``ws``/``websockets``.

The client is ``tests/node/h2ws_client.mjs`` (WebSocket over HTTP/2 on Node's own
``http2``), the backends ``tests/node/ws_echo_backend.mjs`` (Node ``ws``) or the Python
``websockets`` server. See ``tests/node/README.md`` for both programs. A clean close is
judged on the wire (``rst_received == []`` and ``ended_by_server``), never on Node's
``rstCode``, which reads 0 for RST_STREAM(NO_ERROR) too.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
import trio

from h2ws_proxy.config import SocketAddress, TLSConfig
from tests.conftest import StartProxy, WebSocketsBackend
from tests.helpers.node import require_node, run_h2ws_client, start_node_backend
from tests.helpers.setup import backend_url, make_config

pytestmark = [pytest.mark.node, pytest.mark.socket]

NO_ERROR, PROTOCOL_ERROR = 0x0, 0x1


@pytest.fixture(autouse=True)
def _node_available() -> None:
    require_node()


def h2c_url(address: SocketAddress) -> str:
    return f"http://{address.host}:{address.port}"


async def node_backend_port(nursery: trio.Nursery, *args: str) -> int:
    port = await start_node_backend(nursery, *args)
    assert isinstance(port, int)
    return port


async def run_clients(*arg_lists: list[str]) -> list[dict[str, Any]]:
    """Run several h2ws clients at the same time; their results in order."""
    results: list[dict[str, Any]] = [{} for _ in arg_lists]

    async def run_one(index: int, args: list[str]) -> None:
        results[index] = await run_h2ws_client(*args)

    async with trio.open_nursery() as clients:
        for index, args in enumerate(arg_lists):
            clients.start_soon(run_one, index, args)
    return results


def only_tunnel(result: dict[str, Any]) -> dict[str, Any]:
    assert len(result["tunnels"]) == 1, result
    tunnel: dict[str, Any] = result["tunnels"][0]
    return tunnel


def assert_ok(result: dict[str, Any]) -> None:
    assert result["exit_code"] == 0, result
    assert result["ok"] is True, result
    assert result.get("error") is None, result


def assert_clean_close(tunnel: dict[str, Any]) -> None:
    """Close(1000) both ways, END_STREAM both ways, no RST_STREAM in either direction."""
    assert tunnel["close_initiator"] == "client", tunnel
    assert tunnel["close_code"] == 1000, tunnel
    assert tunnel["rst_received"] == [], tunnel
    assert tunnel["rst_sent"] == [], tunnel
    assert tunnel["ended_by_server"] is True, tunnel
    assert tunnel["end_stream_sent"] is True, tunnel
    assert tunnel["stream_error"] is None, tunnel
    assert tunnel["aborted"] is False, tunnel
    assert tunnel["local_reset"] is False, tunnel


def assert_echoed(tunnel: dict[str, Any], messages: int, size: int) -> None:
    assert tunnel["ok"] is True, tunnel
    assert tunnel["status"] == 200, tunnel
    assert tunnel["echoed"] == messages, tunnel
    assert tunnel["mismatches"] == 0, tunnel
    assert tunnel["bytes_sent"] == messages * size, tunnel
    assert tunnel["bytes_echoed"] == messages * size, tunnel
    assert tunnel["error"] is None, tunnel


async def test_node_client_to_node_ws_backend_ping_pong(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    port = await node_backend_port(nursery)
    address = await start_proxy(make_config(("/", backend_url(port))))
    result = await run_h2ws_client(
        "--url", h2c_url(address), "--path", "/echo", "--messages", "20", "--size", "100"
    )
    assert_ok(result)
    assert result["alpn"] is None  # h2c, prior knowledge
    assert result["remote_settings"]["enableConnectProtocol"] is True
    tunnel = only_tunnel(result)
    assert tunnel["stream_id"] == 1
    assert_echoed(tunnel, messages=20, size=100)
    assert_clean_close(tunnel)
    assert result["goaway"] is None  # the proxy did not send GOAWAY while we were working


async def test_node_client_to_python_websockets_backend_ping_pong(
    start_proxy: StartProxy, ws_backend: WebSocketsBackend
) -> None:
    port = ws_backend()
    address = await start_proxy(make_config(("/", backend_url(port))))
    result = await run_h2ws_client(
        "--url", h2c_url(address), "--path", "/echo", "--messages", "20", "--size", "100"
    )
    assert_ok(result)
    tunnel = only_tunnel(result)
    assert_echoed(tunnel, messages=20, size=100)
    assert_clean_close(tunnel)


async def test_100_tunnels_of_two_1mib_messages_on_one_connection(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    port = await node_backend_port(nursery)
    address = await start_proxy(make_config(("/", backend_url(port))))
    size = 1024 * 1024
    # The client's own 25 s limit bounds the run (about 5 s on a quiet 2-core machine); how
    # fast it goes is bench/'s business, not an assertion here.
    result = await run_h2ws_client(
        "--url", h2c_url(address), "--tunnels", "100", "--messages", "2", "--size", str(size),
        "--timeout-ms", "25000",
        timeout_s=40,
    )  # fmt: skip
    assert_ok(result)
    assert result["remote_settings"]["maxConcurrentStreams"] == 128
    tunnels = result["tunnels"]
    assert len(tunnels) == 100
    assert sorted(t["stream_id"] for t in tunnels) == list(range(1, 201, 2))  # one connection
    for tunnel in tunnels:
        assert_echoed(tunnel, messages=2, size=size)
        assert_clean_close(tunnel)


async def test_subprotocol_negotiated_by_node_ws_backend(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    port = await node_backend_port(nursery, "--protocols", "chat.v2,chat.v1")
    address = await start_proxy(make_config(("/", backend_url(port))))
    result = await run_h2ws_client(
        "--url", h2c_url(address), "--subprotocol", "chat.v1,other", "--text", "__headers__"
    )
    assert_ok(result)
    tunnel = only_tunnel(result)
    assert tunnel["status"] == 200
    assert tunnel["headers"]["sec-websocket-protocol"] == "chat.v1"
    # RFC 8441 §5: the HTTP/1.1 handshake fields do not come back over HTTP/2.
    assert "sec-websocket-accept" not in tunnel["headers"]
    assert "upgrade" not in tunnel["headers"]
    assert "connection" not in tunnel["headers"]
    seen = json.loads(tunnel["text_reply"])
    assert seen["headers"]["sec-websocket-protocol"] == "chat.v1, other"  # as offered
    assert seen["protocol"] == "chat.v1"  # what ws selected on its side
    assert_clean_close(tunnel)


async def test_backend_sees_translated_upgrade_request(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    port = await node_backend_port(nursery)
    address = await start_proxy(make_config(("/chat", backend_url(port))))
    authority = "chat.example.test:8443"
    result = await run_h2ws_client(
        "--url", h2c_url(address), "--path", "/chat/room?id=7", "--authority", authority,
        "--origin", "https://chat.example.test", "--text", "__headers__",
        # The only connection-specific field Node lets through (RFC 9113 §8.2.2); it is
        # hop-by-hop in HTTP/1.1 and must not reach the backend.
        "--header", "te:trailers",
        "--header", "user-agent:node-peer-test",
    )  # fmt: skip
    assert_ok(result)
    tunnel = only_tunnel(result)
    seen = json.loads(tunnel["text_reply"])
    headers = seen["headers"]
    assert seen["method"] == "GET"
    assert seen["httpVersion"] == "1.1"
    assert seen["url"] == "/chat/room?id=7"
    assert headers["host"] == authority
    assert headers["origin"] == "https://chat.example.test"
    assert headers["user-agent"] == "node-peer-test"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-host"] == authority
    assert headers["sec-websocket-version"] == "13"
    assert headers["upgrade"].lower() == "websocket"
    assert "upgrade" in headers["connection"].lower()
    assert len(headers["sec-websocket-key"]) == 24
    for hop_by_hop in ("te", "keep-alive", "proxy-connection", "transfer-encoding"):
        assert hop_by_hop not in headers, (hop_by_hop, headers)
    assert "http2-settings" not in headers
    raw_names = [name.lower() for name in seen["rawHeaders"][::2]]
    assert raw_names.count("host") == 1, seen["rawHeaders"]
    assert not any(name.startswith(":") for name in raw_names), seen["rawHeaders"]
    assert_clean_close(tunnel)


async def test_backend_refusal_status_and_body_reach_the_client(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    port = await node_backend_port(nursery)
    address = await start_proxy(make_config(("/", backend_url(port))))
    result = await run_h2ws_client(
        "--url", h2c_url(address), "--path", "/__status/403", "--expect-status", "403"
    )
    assert_ok(result)
    tunnel = only_tunnel(result)
    assert tunnel["status"] == 403
    assert tunnel["body"] == "backend status 403"
    assert tunnel["headers"]["content-type"] == "text/html"  # ws's own rejection
    assert tunnel["headers"]["content-length"] == str(len("backend status 403"))
    assert "connection" not in tunnel["headers"]  # hop-by-hop, not relayed
    assert tunnel["echoed"] == 0
    assert tunnel["ended_by_server"] is True, tunnel
    # The answer is complete with END_STREAM; if our END_STREAM had not arrived yet the
    # proxy may add RST_STREAM(NO_ERROR) (RFC 9113 §8.1), never an error code.
    assert tunnel["rst_received"] in ([], [NO_ERROR]), tunnel


async def test_tls_listener_negotiates_h2_by_alpn(
    nursery: trio.Nursery, start_proxy: StartProxy, tls_config: TLSConfig, ca_file: Path
) -> None:
    port = await node_backend_port(nursery)
    address = await start_proxy(make_config(("/", backend_url(port)), tls=tls_config))
    url = f"https://localhost:{address.port}"
    probe, echo = await run_clients(
        ["--url", url, "--ca", str(ca_file), "--text", "__headers__"],
        ["--url", url, "--ca", str(ca_file), "--messages", "5", "--size", "70000"],
    )
    for result in (probe, echo):
        assert_ok(result)
        assert result["alpn"] == "h2"  # verified against the test CA, h2 chosen by ALPN
        assert_clean_close(only_tunnel(result))
    seen = json.loads(only_tunnel(probe)["text_reply"])
    assert seen["headers"]["x-forwarded-proto"] == "https"
    assert seen["headers"]["host"] == f"localhost:{address.port}"
    assert_echoed(only_tunnel(echo), messages=5, size=70000)


async def test_half_close_backend_data_after_client_end_stream_arrives(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    port = await node_backend_port(nursery)
    address = await start_proxy(make_config(("/", backend_url(port))))
    result = await run_h2ws_client(
        "--url", h2c_url(address), "--text", "__after_eof__:100", "--half-close"
    )
    assert_ok(result)
    tunnel = only_tunnel(result)
    assert tunnel["text_reply"] == "armed"
    assert tunnel["end_stream_sent"] is True
    # The backend got the FIN that our END_STREAM became, then wrote one 100-byte binary
    # message (2-byte header, unmasked): it came through after our END_STREAM.
    assert tunnel["messages_after_end"] == 1, tunnel
    assert tunnel["bytes_after_end"] == 102, tunnel
    # ws then ended its socket without a Close frame: END_STREAM, no reset.
    assert tunnel["close_code"] is None, tunnel
    assert tunnel["ended_by_server"] is True, tunnel
    assert tunnel["rst_received"] == [], tunnel
    assert tunnel["rst_sent"] == [], tunnel


async def test_unix_socket_backend(
    nursery: trio.Nursery, start_proxy: StartProxy, tmp_path: Path
) -> None:
    socket_path = tmp_path / "b.sock"
    announced = await start_node_backend(nursery, "--unix", str(socket_path))
    assert announced == str(socket_path)
    address = await start_proxy(make_config(("/", f"unix:{socket_path}")))
    result = await run_h2ws_client("--url", h2c_url(address), "--messages", "10", "--size", "5000")
    assert_ok(result)
    tunnel = only_tunnel(result)
    assert_echoed(tunnel, messages=10, size=5000)
    assert_clean_close(tunnel)


async def test_connect_protocol_not_advertised(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    port = await node_backend_port(nursery)
    address = await start_proxy(
        make_config(("/", backend_url(port)), enable_connect_protocol=False)
    )
    polite, forced = await run_clients(
        ["--url", h2c_url(address)],
        # A client that sends :protocol anyway (RFC 8441 §3 forbids it).
        ["--url", h2c_url(address), "--force-protocol", "--expect-status", "400",
         "--tunnels", "2"],
    )  # fmt: skip
    assert polite["exit_code"] == 3, polite
    assert polite["ok"] is False
    assert polite["error"] == "no-connect-protocol"
    assert polite["remote_settings"]["enableConnectProtocol"] is False
    assert polite["tunnels"] == []

    # The proxy answers 400 and resets the stream PROTOCOL_ERROR (RFC 9113 §8.1.1); only
    # the stream fails, not the connection (both streams got their own answer).
    assert_ok(forced)
    assert forced["remote_settings"]["enableConnectProtocol"] is False
    assert [t["stream_id"] for t in forced["tunnels"]] == [1, 3]
    for tunnel in forced["tunnels"]:
        assert tunnel["status"] == 400, tunnel
        assert "ENABLE_CONNECT_PROTOCOL" in tunnel["body"], tunnel
        assert tunnel["rst_received"] == [PROTOCOL_ERROR], tunnel
        assert tunnel["echoed"] == 0
    assert forced["goaway_frames"]["received"] == [], forced


async def test_graceful_client_close_ends_the_connection_promptly(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    """Node closes its session with GOAWAY then TCP FIN; the proxy should close at once.

    A relay between the client and the proxy timestamps each direction's EOF. With no
    stream left and the client's side finished, there is nothing more to wait for: the
    proxy's FIN must follow the client's within a second (Node itself gives up and
    destroys the socket after 2 s).
    """
    port = await node_backend_port(nursery)
    address = await start_proxy(make_config(("/", backend_url(port))))
    relay = EofRelay(address)
    relay_address = await nursery.start(relay.run)
    result = await run_h2ws_client("--url", h2c_url(relay_address), "--messages", "3")
    assert_ok(result)
    assert_clean_close(only_tunnel(result))
    assert result["goaway_frames"]["sent"] == [{"last_stream_id": 0, "error_code": 0}]
    with trio.move_on_after(8):
        await relay.done.wait()
    assert relay.client_eof_at is not None, "the client never finished its side"
    assert relay.proxy_eof_at is not None, "the proxy kept the connection open for 8 s"
    lag = relay.proxy_eof_at - relay.client_eof_at
    assert lag < 1.0, f"the proxy closed {lag:.2f} s after the client's GOAWAY and FIN"


class EofRelay:
    """A one-connection TCP relay that records when each side finished sending."""

    def __init__(self, target: SocketAddress) -> None:
        self.target = target
        self.client_eof_at: float | None = None
        self.proxy_eof_at: float | None = None
        self.done = trio.Event()

    async def run(self, task_status: trio.TaskStatus[SocketAddress]) -> None:
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        task_status.started(SocketAddress("127.0.0.1", listener.socket.getsockname()[1]))
        async with listener:
            client = await listener.accept()
        upstream = await trio.open_tcp_stream(self.target.host, self.target.port)
        try:
            async with trio.open_nursery() as pumps:
                pumps.start_soon(self._pump, client, upstream, "client_eof_at")
                pumps.start_soon(self._pump, upstream, client, "proxy_eof_at")
        finally:
            await trio.aclose_forcefully(client)
            await trio.aclose_forcefully(upstream)
            self.done.set()

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream, record: str) -> None:
        sink_open = True
        while True:
            try:
                data = await source.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                break
            if sink_open:
                try:
                    await sink.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    sink_open = False  # keep reading: we only watch for the EOF now
        setattr(self, record, trio.current_time())
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await sink.send_eof()
