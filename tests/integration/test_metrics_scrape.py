"""``GET /metrics`` after real traffic, one process: tunnels over HTTP/2 and HTTP/1.1 that end
cleanly after a client Close 1000 or a backend Close 1011, refusals (404, 403, 502), an
ordinary request; the scrape is parsed by prometheus-client's own parser.

The backend is the ``websockets`` library's server (echoes; ``close-1011`` makes it close
with 1011; ``GET /ws/page`` without an upgrade gets 200).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosedError
from websockets.http11 import Request, Response
from websockets.sync.client import connect as ws_connect
from websockets.sync.server import ServerConnection
from websockets.sync.server import serve as ws_serve

from h2ws_proxy.config import AdminConfig, ProxyConfig, SocketAddress
from h2ws_proxy.server.serve import BoundAddresses, serve
from tests.helpers.h2_client import open_h2_client
from tests.helpers.process import free_port
from tests.helpers.records import ProxyRecords, capture_proxy_records
from tests.helpers.setup import backend_url, make_config

pytestmark = pytest.mark.socket

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def only(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (sample, labels), value in samples.items() if sample == name}


def labelled(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


@contextlib.contextmanager
def backend() -> Iterator[int]:
    def handler(connection: ServerConnection) -> None:
        for message in connection:
            if message == "close-1011":
                connection.close(1011, "backend failed")
                return
            connection.send(message)

    def page(connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/ws/page" and "upgrade" not in request.headers:
            return connection.respond(200, "page\n")
        return None

    server = ws_serve(handler, "127.0.0.1", 0, process_request=page, close_timeout=2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.socket.getsockname()[1]
    finally:
        server.shutdown()
        thread.join(timeout=10)


def config(backend_port: int) -> ProxyConfig:
    made = make_config(("/ws", backend_url(backend_port)), ("/down", backend_url(free_port())))
    ws_route = dataclasses.replace(made.routes[0], allowed_origins=("https://app.example",))
    return dataclasses.replace(
        made,
        routes=(ws_route, made.routes[1]),
        admin=AdminConfig(SocketAddress("127.0.0.1", 0)),
    )


async def scrape(admin: SocketAddress) -> tuple[bytes, Samples]:
    stream = await trio.open_tcp_stream(admin.host, admin.port)
    async with stream:
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n")
        answer = b""
        while data := await stream.receive_some(65536):
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split()[1] == b"200"
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }
    return head, samples


def h1_tunnels(port: int) -> int:
    """Two HTTP/1.1 tunnels: a client Close 1000, then a backend Close 1011."""
    with ws_connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
    with ws_connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
        ws.send("close-1011")
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1011
    return 2


async def h2_traffic(port: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with open_h2_client(stream) as client:
        ws = await client.websocket("/ws/room")
        assert ws.status == 200
        await ws.send("hi")
        assert await ws.receive() == "hi"
        assert await ws.close(1000) == (1000, None)
        assert (await client.websocket("/nothing")).status == 404
        evil = [(b"origin", b"https://evil.example")]
        assert (await client.websocket("/ws", extra=evil)).status == 403
        assert (await client.websocket("/down")).status == 502
        get = [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":path", b"/ws/page"),
            (b":authority", b"proxy.test"),
        ]
        page = await client.finished(await client.request(get, end_stream=True))
        assert page.status == 200


async def wait_for_records(records: ProxyRecords, count: int) -> None:
    def ended() -> int:
        return sum(
            r.event in ("tunnel.closed", "tunnel.refused", "request.closed")
            for r in records.records
        )

    await records.wait_for(lambda _: ended() >= count, 10, f"ending {count} tunnels and requests")


async def test_metrics_count_real_traffic(nursery: trio.Nursery) -> None:
    with backend() as backend_port, capture_proxy_records() as records, trio.fail_after(30):
        proxy_config = config(backend_port)
        bound: BoundAddresses = await nursery.start(serve, proxy_config)
        port, admin = bound.listeners[0].port, bound.admin
        assert admin is not None
        await h2_traffic(port)
        await trio.to_thread.run_sync(h1_tunnels, port)
        await wait_for_records(records, 7)
        head, samples = await scrape(admin)

    assert b"content-type: text/plain; version=0.0.4; charset=utf-8" in head.lower()
    assert only(samples, "h2ws_tunnels_total") == {
        labelled(route="/ws", front="h2", end="clean"): 1,
        labelled(route="/ws", front="h1", end="clean"): 2,
        labelled(route="-", front="h2", end="refused"): 1,
        labelled(route="/ws", front="h2", end="refused"): 1,
        labelled(route="/down", front="h2", end="refused"): 1,
    }
    assert only(samples, "h2ws_handshakes_total") == {
        labelled(route="/ws", outcome="ok"): 3,
        labelled(route="-", outcome="no_route"): 1,
        labelled(route="/ws", outcome="origin_refused"): 1,
        labelled(route="/down", outcome="refused"): 1,
    }
    assert only(samples, "h2ws_tunnels_active") == {
        labelled(route="/ws", front="h2"): 0,
        labelled(route="/ws", front="h1"): 0,
    }
    assert only(samples, "h2ws_requests_total") == {
        labelled(route="/ws", front="h2", code="200"): 1
    }
    assert samples[key("h2ws_request_duration_seconds_count")] == 1
    assert samples[key("h2ws_tunnel_duration_seconds_count")] == 3
    # Three tunnel dials and the request's pooled connection; /down's failed connect is not one.
    assert samples[key("h2ws_backend_connect_seconds_count")] == 4

    closed = [r for r in records.records if r.event == "tunnel.closed"]
    assert len(closed) == 3
    for direction, field in (("up", "bytes_up"), ("down", "bytes_down")):
        total = sum(r.get(field) for r in closed)
        assert total > 0
        assert samples[key("h2ws_tunnel_bytes_total", route="/ws", direction=direction)] == total

    # The close codes come from RelayStats.client_close/backend_close, which the tunnel's
    # frame tracker fills (issue 17, item 3). Until it does, no close is counted. With it:
    # the h2 client and the first h1 client closed with 1000, the backend with 1011 once;
    # the replies (the backend's 1000 twice, the h1 client's 1011 once) count too if the
    # tracker notes each side's first Close, not only the first of the tunnel.
    closes = only(samples, "h2ws_websocket_close_total")
    if closes:
        client_1000 = labelled(route="/ws", side="client", code="1000")
        backend_1011 = labelled(route="/ws", side="backend", code="1011")
        replies = {
            labelled(route="/ws", side="backend", code="1000"): 2,
            labelled(route="/ws", side="client", code="1011"): 1,
        }
        assert closes.pop(client_1000) == 2
        assert closes.pop(backend_1011) == 1
        assert closes in ({}, replies)

    # Every connection is over: each (listener, protocol) that served one reads 0. The
    # listener is named as configured.
    assert only(samples, "h2ws_connections_active") == {
        labelled(listener="127.0.0.1:0", protocol="h2"): 0,
        labelled(listener="127.0.0.1:0", protocol="h1"): 0,
    }
    # /down's one server is never taken out: a group of one has nowhere else to go.
    down = str(proxy_config.routes[1].backend)
    assert only(samples, "h2ws_backend_up") == {
        labelled(backend=backend_url(backend_port), server=backend_url(backend_port)): 1,
        labelled(backend=down, server=down): 1,
    }
    assert set(only(samples, "h2ws_abuse_total").values()) == {0}
    assert samples[key("process_open_fds")] > 0
