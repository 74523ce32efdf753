"""The proxy in front of real RFC 8441 servers: Node's ``http2`` and hypercorn, each reached
over one shared HTTP/2 connection (``h2c://``, or ``https://`` with ``protocol``).

Clients: our HTTP/2 test client (h2), Node's ``http2`` client (``h2ws_client.mjs``) and the
Python ``websockets`` package over HTTP/1.1. What the backend saw is read from its own
counters (Node's ``GET /stats``), never inferred from the proxy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from websockets.sync.client import connect as ws_connect

from h2ws_proxy.backend.h2.pool import H2Backends
from h2ws_proxy.backend.health import check_server
from h2ws_proxy.backend.upgrade import open_backend_stream
from h2ws_proxy.config import (
    BackendGroup,
    BackendProtocol,
    BackendTLS,
    HealthCheck,
    Limits,
    ProxyConfig,
    SocketAddress,
    TLSConfig,
    parse_backend,
)
from h2ws_proxy.relay.context import ServerStats
from h2ws_proxy.server.metrics import take_samples
from h2ws_proxy.server.serve import serve
from tests.conftest import StartProxy, WebSocketsBackend
from tests.helpers.h2_client import H2TestClient, open_h2_client
from tests.helpers.node import require_node, run_h2ws_client, start_node_backend
from tests.helpers.rfc8441_backends import (
    node_h2_stats,
    start_hypercorn_server,
    start_node_h2_server,
)
from tests.helpers.setup import make_config

pytestmark = [pytest.mark.node, pytest.mark.socket]


@pytest.fixture(autouse=True)
def _node_available() -> None:
    require_node()


def h2c(port: int) -> str:
    return f"h2c://127.0.0.1:{port}"


def unlimited(config: ProxyConfig) -> ProxyConfig:
    """No per-client caps: every test client comes from 127.0.0.1."""
    limits = dataclasses.replace(
        config.limits, max_connections_per_client=0, max_tunnels_per_client=0
    )
    return dataclasses.replace(config, limits=limits)


@contextlib.asynccontextmanager
async def h2_client(address: SocketAddress) -> AsyncIterator[H2TestClient]:
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with open_h2_client(stream) as client:
        yield client


def _echo_sync(
    uri: str, messages: list[str | bytes], subprotocols: list[str] | None
) -> tuple[list[str | bytes], str | None]:
    with ws_connect(
        uri,
        subprotocols=subprotocols,
        open_timeout=10,
        compression=None,  # type: ignore[arg-type]
    ) as ws:
        echoed = []
        for message in messages:
            ws.send(message)
            echoed.append(ws.recv(timeout=10))
        return echoed, ws.subprotocol


async def ws_echo_h1(
    address: SocketAddress,
    path: str,
    messages: list[str | bytes],
    subprotocols: list[str] | None = None,
) -> tuple[list[str | bytes], str | None]:
    """Over HTTP/1.1 with the ``websockets`` sync client in a thread (a real RFC 6455
    peer): each message's echo, and the subprotocol; a clean close."""
    uri = f"ws://{address.host}:{address.port}{path}"
    with trio.fail_after(30):
        return await trio.to_thread.run_sync(_echo_sync, uri, messages, subprotocols)


# ---- tunnels ----------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["node", "hypercorn"])
async def test_http2_client_echoes_through_an_h2c_backend(
    nursery: trio.Nursery, start_proxy: StartProxy, server: str
) -> None:
    start = start_node_h2_server if server == "node" else start_hypercorn_server
    backend = await start(nursery)
    address = await start_proxy(make_config(("/", h2c(backend.port))))
    payload = bytes(range(256)) * 300  # spans several DATA frames each way
    async with h2_client(address) as client:
        ws = await client.websocket("/chat")
        assert ws.status == 200
        assert ws.state.header(b"sec-websocket-accept") is None
        await ws.send("hello")
        assert await ws.receive() == "hello"
        await ws.send(payload)
        assert await ws.receive() == payload
        server_code, reset = await ws.close(1000)
    assert (server_code, reset) == (1000, None)


@pytest.mark.parametrize("server", ["node", "hypercorn"])
async def test_http11_client_echoes_through_an_h2c_backend(
    nursery: trio.Nursery, start_proxy: StartProxy, server: str
) -> None:
    start = start_node_h2_server if server == "node" else start_hypercorn_server
    backend = await start(nursery)
    address = await start_proxy(make_config(("/", h2c(backend.port))))
    messages: list[str | bytes] = ["text é", b"\x00\xffbinary", "x" * 70000]
    assert await ws_echo_h1(address, "/echo", messages) == (messages, None)


async def test_node_http2_client_through_a_node_backend_closes_cleanly(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    backend = await start_node_h2_server(nursery)
    address = await start_proxy(make_config(("/", h2c(backend.port))))
    result = await run_h2ws_client(
        "--url", f"http://{address.host}:{address.port}", "--path", "/echo",
        "--tunnels", "5", "--messages", "20", "--size", "1000",
    )  # fmt: skip
    assert result["exit_code"] == 0, result
    for tunnel in result["tunnels"]:
        assert tunnel["echoed"] == 20, tunnel
        assert tunnel["mismatches"] == 0, tunnel
        assert tunnel["close_code"] == 1000, tunnel
        assert tunnel["rst_received"] == [], tunnel
        assert tunnel["ended_by_server"] is True, tunnel


async def test_1000_tunnels_from_50_clients_share_one_backend_connection(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    backend = await start_node_h2_server(nursery)
    before = await node_h2_stats(backend.port)
    address = await start_proxy(unlimited(make_config(("/", h2c(backend.port)))))
    clients, per_client = 50, 20
    opened = trio.Semaphore(0)
    all_open = trio.Event()
    echoed: list[int] = []

    async def one_client(index: int) -> None:
        async with h2_client(address) as client:
            sockets = [await client.websocket(f"/c{index}/t{n}") for n in range(per_client)]
            for ws in sockets:
                assert ws.status == 200
                opened.release()
            await all_open.wait()
            for n, ws in enumerate(sockets):
                await ws.send(f"{index}:{n}")
                assert await ws.receive() == f"{index}:{n}"
                echoed.append(1)
            for ws in sockets:
                assert await ws.close(1000) == (1000, None)

    with trio.fail_after(120):
        async with trio.open_nursery() as group:
            for index in range(clients):
                group.start_soon(one_client, index)
            for _ in range(clients * per_client):
                await opened.acquire()
            during = await node_h2_stats(backend.port)
            all_open.set()
    assert len(echoed) == clients * per_client
    # The backend's own count: the proxy opened one connection for all 1,000 tunnels (the
    # other new sessions are our two /stats queries).
    assert during["sessions"] - before["sessions"] == 1 + 1
    assert during["tunnels"] - before["tunnels"] == clients * per_client


async def test_a_backend_without_extended_connect_is_a_502_with_the_reason(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    backend = await start_node_h2_server(nursery, connect_protocol=False)
    address = await start_proxy(make_config(("/", h2c(backend.port))))
    async with h2_client(address) as client:
        state = await client.finished(
            await client.request(_connect_headers("/x"), end_stream=False)
        )
    assert state.status == 502
    assert b"SETTINGS_ENABLE_CONNECT_PROTOCOL" in bytes(state.data)


async def test_backend_refusal_is_relayed_as_it_came(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    backend = await start_node_h2_server(nursery)
    address = await start_proxy(make_config(("/", h2c(backend.port))))
    async with h2_client(address) as client:
        state = await client.finished(
            await client.request(_connect_headers("/__status/403"), end_stream=False)
        )
    assert state.status == 403
    assert bytes(state.data) == b"backend status 403"


async def test_subprotocol_chosen_by_an_h2_backend_reaches_both_kinds_of_client(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    backend = await start_node_h2_server(nursery, protocols=("chat.v2", "chat.v1"))
    address = await start_proxy(make_config(("/", h2c(backend.port))))
    async with h2_client(address) as client:
        ws = await client.websocket("/", subprotocols=["chat.v1", "other"])
        assert ws.state.header(b"sec-websocket-protocol") == b"chat.v1"
        assert await ws.close() == (1000, None)
    assert await ws_echo_h1(address, "/", ["hi"], ["chat.v2"]) == (["hi"], "chat.v2")


# ---- over TLS ---------------------------------------------------------------------------


def tls_backend_config(port: int, ca_file: Path, protocol: BackendProtocol) -> ProxyConfig:
    """A proxy whose one route goes to the TLS server at ``port``, spoken to with
    ``protocol`` (the ``[[backend]]`` table's key) and verified against ``ca_file``."""
    server = dataclasses.replace(
        parse_backend(f"https://127.0.0.1:{port}"),
        tls=BackendTLS(ca=ca_file, server_name="localhost"),
        protocol=protocol,
    )
    config = make_config(("/", f"https://127.0.0.1:{port}"))
    route = dataclasses.replace(config.routes[0], backend=BackendGroup.of(server))
    return dataclasses.replace(config, routes=(route,))


@pytest.mark.parametrize("protocol", ["h2", "auto"])
async def test_https_backend_with_alpn_h2_carries_tunnels_and_requests(
    nursery: trio.Nursery,
    start_proxy: StartProxy,
    tls_config: TLSConfig,
    ca_file: Path,
    protocol: BackendProtocol,
) -> None:
    backend = await start_node_h2_server(nursery, tls=tls_config)
    address = await start_proxy(tls_backend_config(backend.port, ca_file, protocol))
    assert await ws_echo_h1(address, "/tls", ["over tls"]) == (["over tls"], None)
    async with h2_client(address) as client:
        state = await client.finished(await client.request(_get("/hello"), end_stream=True))
    assert (state.status, bytes(state.data)) == (200, b"hello")


async def test_auto_upgrades_over_http11_where_http2_lacks_extended_connect(
    nursery: trio.Nursery, start_proxy: StartProxy, tls_config: TLSConfig, ca_file: Path
) -> None:
    backend = await start_node_h2_server(
        nursery, tls=tls_config, connect_protocol=False, allow_http1=True
    )
    address = await start_proxy(tls_backend_config(backend.port, ca_file, "auto"))
    # ALPN picks h2, but the server lacks extended CONNECT: with "auto" the tunnel goes
    # over an HTTP/1.1 upgrade on a connection of its own (ALPN http/1.1).
    assert await ws_echo_h1(address, "/fallback", ["via http/1.1"]) == (["via http/1.1"], None)


# ---- ordinary requests ------------------------------------------------------------------


@pytest.mark.parametrize("server", ["node", "hypercorn"])
async def test_ordinary_requests_go_over_the_h2_backend(
    nursery: trio.Nursery, start_proxy: StartProxy, server: str
) -> None:
    start = start_node_h2_server if server == "node" else start_hypercorn_server
    backend = await start(nursery)
    address = await start_proxy(make_config(("/", h2c(backend.port))))
    body = b"posted " * 20000
    async with h2_client(address) as client:
        got = await client.finished(await client.request(_get("/hello"), end_stream=True))
        assert (got.status, bytes(got.data)) == (200, b"hello")
        post = await client.request(_post("/echo", len(body)))
        await client.send_data(post, body, end_stream=True)
        await client.finished(post)
        assert (post.status, bytes(post.data)) == (200, body)
    with trio.fail_after(15):
        stream = await trio.open_tcp_stream(address.host, address.port)
        await stream.send_all(b"GET /hello HTTP/1.1\r\nhost: h1.test\r\nconnection: close\r\n\r\n")
        answer = b""
        while chunk := await stream.receive_some(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    # Node sends no content-length: the HTTP/1.1 client gets the body chunked.
    assert body in (b"hello", b"5\r\nhello\r\n0\r\n\r\n")


def _connect_headers(path: str) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"CONNECT"),
        (b":protocol", b"websocket"),
        (b":scheme", b"http"),
        (b":path", path.encode()),
        (b":authority", b"proxy.test"),
        (b"sec-websocket-version", b"13"),
    ]


def _get(path: str) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", path.encode()),
        (b":authority", b"proxy.test"),
    ]


def _post(path: str, length: int) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path.encode()),
        (b":authority", b"proxy.test"),
        (b"content-length", str(length).encode()),
    ]


async def test_metrics_show_the_shared_connection_and_its_streams(
    nursery: trio.Nursery,
) -> None:
    backend = await start_node_h2_server(nursery)
    stats = ServerStats()
    config = make_config(("/", h2c(backend.port)))
    bound = await nursery.start(functools.partial(serve, config, stats=stats))
    address = bound.listeners[0]
    server = f"h2c://127.0.0.1:{backend.port}"

    def gauges() -> tuple[dict[Any, float], dict[Any, float]]:
        samples = take_samples(stats)
        return (
            samples.gauges["backend_h2_connections"],
            samples.gauges["backend_h2_streams"],
        )

    assert gauges() == ({}, {})
    async with h2_client(address) as client:
        first = await client.websocket("/a")
        second = await client.websocket("/b")
        assert gauges() == ({(server,): 1}, {(server,): 2})
        assert await first.close() == (1000, None)
        assert await second.close() == (1000, None)
    connections, streams = gauges()
    assert streams == {(server,): 0}
    assert connections == {(server,): 1}  # kept for backend_keepalive_s


async def test_health_checks_of_an_http2_server_go_over_its_shared_connection(
    nursery: trio.Nursery,
) -> None:
    backend = await start_node_h2_server(nursery)
    backends = H2Backends(Limits(), open_backend_stream)
    await nursery.start(backends.run)
    address = parse_backend(h2c(backend.port))
    with trio.fail_after(15):
        passed = await check_server(
            address, HealthCheck(path="/hello"), open_backend_stream, backends
        )
        failed = await check_server(
            address, HealthCheck(path="/nope"), open_backend_stream, backends
        )
    assert (passed, failed) == (None, "status 404")
    assert backends.describe() == [(str(address), 1, 0)]  # both on one connection, ended


async def test_an_http11_server_written_as_h2c_is_a_502_that_says_so(
    nursery: trio.Nursery, start_proxy: StartProxy, ws_backend: WebSocketsBackend
) -> None:
    # Node's HTTP/1.1 server answers the preface with a 400; Python's websockets closes.
    node_port = await start_node_backend(nursery)
    python_port = ws_backend()
    address = await start_proxy(
        make_config(("/node", h2c(node_port)), ("/python", h2c(python_port)))
    )
    async with h2_client(address) as client:
        node = await client.finished(await client.request(_connect_headers("/node")))
        python = await client.finished(await client.request(_connect_headers("/python")))
    assert (node.status, python.status) == (502, 502)
    assert b"answered in HTTP/1.x, not HTTP/2: write it as http://" in bytes(node.data)
    assert b"before its HTTP/2 SETTINGS" in bytes(python.data)
    assert b"An HTTP/1.1 server is written http://host:port" in bytes(python.data)
