"""The RFC 8441 test servers themselves (Node ``http2`` and hypercorn), checked with the
``h2`` library as the client: they advertise SETTINGS_ENABLE_CONNECT_PROTOCOL (or not, when
told), answer extended CONNECT with 200 and echo WebSocket messages byte for byte, and serve
small HTTP requests. Other tests rely on these servers as independent peers."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest
import trio
import trustme
from wsproto.frame_protocol import CloseReason, Opcode

from h2ws_proxy.config import TLSConfig
from tests.helpers.h2_client import H2TestClient, WebSocketStream, open_h2_client
from tests.helpers.node import NodePeer
from tests.helpers.rfc8441_backends import (
    hypercorn_server,
    node_h2_server,
    node_h2_stats,
    open_h2_stream,
)

pytestmark = [pytest.mark.socket, pytest.mark.timeout(60)]

ServerFactory = Callable[..., AbstractAsyncContextManager[NodePeer]]
SERVERS: dict[str, ServerFactory] = {"node": node_h2_server, "hypercorn": hypercorn_server}


def _client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def _client(
    peer: NodePeer, context: ssl.SSLContext | None
) -> AbstractAsyncContextManager[H2TestClient]:
    return open_h2_client(await open_h2_stream(peer.port, context))


def _get(path: str, port: int, method: bytes = b"GET") -> list[tuple[bytes, bytes]]:
    return [
        (b":method", method),
        (b":scheme", b"http"),
        (b":path", path.encode()),
        (b":authority", f"127.0.0.1:{port}".encode()),
    ]


@pytest.fixture(params=["h2c", "tls"])
def tls(request: pytest.FixtureRequest, tls_config: TLSConfig) -> TLSConfig | None:
    return tls_config if request.param == "tls" else None


@pytest.mark.parametrize("server", SERVERS)
async def test_websocket_echo_over_extended_connect(
    server: str, tls: TLSConfig | None, ca: trustme.CA
) -> None:
    context = _client_context(ca) if tls else None
    async with SERVERS[server](tls=tls) as peer, await _client(peer, context) as client:
        assert client.conn.remote_settings.enable_connect_protocol == 1
        ws = await client.websocket("/echo", authority=f"localhost:{peer.port}")
        assert ws.status == 200
        with trio.fail_after(10):
            await ws.send("héllo")
            assert await ws.receive() == "héllo"
            payload = bytes(range(256)) * 300  # several DATA frames, every byte value
            await ws.send(payload)
            assert await ws.receive() == payload
            assert await _close_code(ws) == 1000


async def _close_code(ws: WebSocketStream) -> int:
    """Send Close 1000; the code of the server's Close. Not the helper's ``close()``: that
    also waits for END_STREAM, and hypercorn (0.18) ends the stream without one after its
    Close reply (it drops the stream from its table; the connection then closes)."""
    await ws.client.send_data(ws.state, ws.frames.close(CloseReason(1000)))
    while True:
        ws.frames.receive_bytes(ws._take_new_bytes())
        for frame in ws.frames.received_frames():
            if frame.opcode is Opcode.CLOSE:
                code, _reason = frame.payload
                return int(code)
        before = len(ws.state.data)
        await ws.client.wait_for(lambda before=before: len(ws.state.data) > before)


@pytest.mark.parametrize("server", SERVERS)
async def test_subprotocol_and_refusal(server: str) -> None:
    async with SERVERS[server](protocols=("chat.v2",)) as peer, await _client(peer, None) as c:
        ws = await c.websocket("/", subprotocols=["chat.v1", "chat.v2"])
        assert ws.status == 200
        assert ws.state.header(b"sec-websocket-protocol") == b"chat.v2"
        refused = await c.websocket("/__status/403")
        assert refused.status == 403
        with trio.fail_after(10):
            await c.finished(refused.state)
        assert bytes(refused.state.data) == b"backend status 403"


@pytest.mark.parametrize("server", SERVERS)
async def test_ordinary_requests(server: str) -> None:
    async with SERVERS[server]() as peer, await _client(peer, None) as client:
        with trio.fail_after(10):
            hello = await client.finished(
                await client.request(_get("/hello", peer.port), end_stream=True)
            )
            posted = await client.request(_get("/any", peer.port, b"POST"))
            await client.send_data(posted, b"x" * 70000, end_stream=True)
            await client.finished(posted)
        assert (hello.status, bytes(hello.data)) == (200, b"hello")
        assert (posted.status, bytes(posted.data)) == (200, b"x" * 70000)


async def test_node_without_connect_protocol() -> None:
    async with node_h2_server(connect_protocol=False) as peer, await _client(peer, None) as c:
        assert not c.conn.remote_settings.enable_connect_protocol
        ws = await c.websocket("/")
        assert ws.status is None  # nghttp2 refuses :protocol it did not advertise
        assert ws.state.reset_code is not None


async def test_node_counts_sessions_and_streams() -> None:
    async with node_h2_server() as peer:
        async with await _client(peer, None) as client:
            sockets = [await client.websocket("/") for _ in range(5)]
            assert [ws.status for ws in sockets] == [200] * 5
            stats = await node_h2_stats(peer.port)
            assert stats["open_sessions"] == 2  # this client and the stats request's
        stats = await node_h2_stats(peer.port)
        assert (stats["sessions"], stats["streams"], stats["tunnels"]) == (3, 7, 5)


async def test_node_upgrades_http1_when_allowed(tls_config: TLSConfig, ca: trustme.CA) -> None:
    context = _client_context(ca)
    context.set_alpn_protocols(["http/1.1"])
    async with node_h2_server(tls=tls_config, allow_http1=True) as peer:
        tcp = await trio.open_tcp_stream("127.0.0.1", peer.port)
        stream = trio.SSLStream(tcp, context, server_hostname="localhost")
        await stream.do_handshake()
        assert stream.selected_alpn_protocol() == "http/1.1"
        await stream.send_all(
            b"GET / HTTP/1.1\r\nhost: localhost\r\nupgrade: websocket\r\n"
            b"connection: upgrade\r\nsec-websocket-version: 13\r\n"
            b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        answer = b""
        with trio.fail_after(10):
            while b"\r\n\r\n" not in answer:
                answer += await stream.receive_some()
        assert answer.startswith(b"HTTP/1.1 101")
        # RFC 6455 section 1.3's example key and its accept value.
        assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in answer
