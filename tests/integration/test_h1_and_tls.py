"""HTTP/1.1 WebSocket clients on the same port and routes, and TLS with ALPN for both."""

from __future__ import annotations

import functools
import ssl

import pytest
import trio
import trustme
from websockets.sync.client import connect as ws_connect

from h2ws_proxy.config import SocketAddress, TLSConfig
from tests.conftest import StartProxy, WebSocketsBackend
from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.h2_client import open_h2_client
from tests.helpers.setup import backend_url, client_ssl_context, make_config

pytestmark = pytest.mark.socket

UPGRADE = (
    b"GET /chat HTTP/1.1\r\nHost: proxy.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


def _websockets_roundtrip(
    url: str, ssl_context: ssl.SSLContext | None = None
) -> tuple[str, str | None]:
    """Run the ``websockets`` sync client (a real RFC 6455 peer) in a thread."""
    with ws_connect(
        url, subprotocols=["chat.v1"], ssl=ssl_context, open_timeout=10, compression=None
    ) as ws:  # type: ignore[list-item]
        ws.send("hello over http/1.1")
        reply = ws.recv(timeout=10)
        big = b"z" * (1024 * 1024)
        ws.send(big)
        assert ws.recv(timeout=10) == big
        return str(reply), ws.subprotocol


async def test_http11_websocket_client_echo_and_subprotocol(
    start_proxy: StartProxy, ws_backend: WebSocketsBackend
) -> None:
    port = ws_backend(subprotocols=["chat.v1"])
    address = await start_proxy(make_config(("/", backend_url(port))))
    reply, subprotocol = await trio.to_thread.run_sync(
        _websockets_roundtrip, f"ws://127.0.0.1:{address.port}/chat"
    )
    assert reply == "hello over http/1.1"
    assert subprotocol == "chat.v1"


async def _raw_exchange(address: SocketAddress, request: bytes) -> bytes:
    stream = await trio.open_tcp_stream(address.host, address.port)
    await stream.send_all(request)
    answer = b""
    with trio.fail_after(10):
        while data := await stream.receive_some(65536):
            answer += data
    await stream.aclose()
    return answer


async def test_client_bytes_behind_the_request_head_reach_the_backend_first(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    first_frame = b"\x81\x85\x00\x00\x00\x00hello"  # masked (zero key) text frame
    got = trio.Event()
    seen = b""

    async def records(conn: BackendConnection) -> None:
        nonlocal seen
        request = await conn.read_upgrade()
        await conn.accept(request)
        while len(seen) < len(first_frame):
            seen += await conn.receive()
        got.set()
        await conn.echo_until_eof()

    backend = ScriptedBackend(records)
    await nursery.start(backend.run)
    address = await start_proxy(make_config(("/", backend.url)))
    stream = await trio.open_tcp_stream(address.host, address.port)
    await stream.send_all(UPGRADE + b"\r\n" + first_frame)  # one write: head + frame
    with trio.fail_after(10):
        await got.wait()
    assert seen == first_frame
    head = await stream.receive_some(65536)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    await stream.aclose()


@pytest.mark.parametrize(
    ("request_bytes", "status", "needle"),
    [
        (
            b"GET / HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 5\r\n\r\nhello",
            400,
            b"with a body",
        ),
        (
            UPGRADE.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"short") + b"\r\n",
            400,
            b"sec-websocket-key",
        ),
        (
            UPGRADE.replace(b"Version: 13", b"Version: 8") + b"\r\n",
            426,
            b"sec-websocket-version: 13",
        ),
        (UPGRADE.replace(b"Host: proxy.test\r\n", b"") + b"\r\n", 400, b""),
        (b"\x16\x03\x01garbage that is not http\r\n\r\n", 400, b""),
        (UPGRADE + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400, b""),
    ],
    ids=["get-with-body", "bad-key", "old-version", "no-host", "garbage", "cl-and-te"],
)
async def test_http11_requests_that_are_refused(
    start_proxy: StartProxy,
    ws_backend: WebSocketsBackend,
    request_bytes: bytes,
    status: int,
    needle: bytes,
) -> None:
    address = await start_proxy(make_config(("/", backend_url(ws_backend()))))
    answer = await _raw_exchange(address, request_bytes)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    assert needle.lower() in answer.lower()


async def test_http11_backend_rejection_goes_back_as_it_came(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    async def reject(conn: BackendConnection) -> None:
        await conn.read_upgrade()
        await conn.stream.send_all(
            b"HTTP/1.1 403 Forbidden\r\nX-Why: nope\r\nContent-Length: 4\r\n\r\nnope"
        )

    backend = ScriptedBackend(reject)
    await nursery.start(backend.run)
    address = await start_proxy(make_config(("/", backend.url)))
    answer = await _raw_exchange(address, UPGRADE + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert b"x-why: nope" in answer.lower()
    assert answer.endswith(b"\r\n\r\nnope")


async def test_http11_backend_half_close_reaches_the_client(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    async def says_bye(conn: BackendConnection) -> None:
        request = await conn.read_upgrade()
        await conn.accept(request, extra=b"bye")
        await conn.stream.send_eof()
        assert await conn.receive() == b"late"
        assert await conn.receive() == b""

    backend = ScriptedBackend(says_bye)
    await nursery.start(backend.run)
    address = await start_proxy(make_config(("/", backend.url)))
    stream = await trio.open_tcp_stream(address.host, address.port)
    await stream.send_all(UPGRADE + b"\r\n")
    received = b""
    with trio.fail_after(10):
        while data := await stream.receive_some(65536):
            received += data
    assert received.endswith(b"\r\n\r\nbye")  # then EOF: the backend's FIN came through
    await stream.send_all(b"late")
    await stream.send_eof()
    with trio.fail_after(10):
        await backend.connections[0].closed.wait()


async def _tls_stream(
    address: SocketAddress, ca: trustme.CA, alpn: list[str]
) -> trio.SSLStream[trio.SocketStream]:
    tcp = await trio.open_tcp_stream(address.host, address.port)
    stream = trio.SSLStream(tcp, client_ssl_context(ca, alpn), server_hostname="localhost")
    await stream.do_handshake()
    return stream


async def test_tls_alpn_h2_carries_websocket_over_http2(
    start_proxy: StartProxy, ws_backend: WebSocketsBackend, tls_config: TLSConfig, ca: trustme.CA
) -> None:
    address = await start_proxy(make_config(("/", backend_url(ws_backend())), tls=tls_config))
    stream = await _tls_stream(address, ca, ["h2", "http/1.1"])
    assert stream.selected_alpn_protocol() == "h2"
    async with open_h2_client(stream) as client:
        ws = await client.websocket("/", scheme="https")
        assert ws.status == 200
        await ws.send("over tls")
        assert await ws.receive() == "over tls"
        await ws.send("__headers__")
        assert '"x-forwarded-proto", "https"' in str(await ws.receive())


async def test_tls_tunnels_carry_large_messages_both_ways_byte_for_byte(
    start_proxy: StartProxy, ws_backend: WebSocketsBackend, tls_config: TLSConfig, ca: trustme.CA
) -> None:
    """Four tunnels on one TLS connection echo 512 KiB messages at once: the proxy's reads
    go on past full records, and its output alternates between inline writes and the
    writer's. Every byte must come back once, in order, on its own tunnel. (OpenSSL's
    "repeat the write" rule itself is pinned in tests/protocol/test_tls_stream.py.)"""
    address = await start_proxy(make_config(("/", backend_url(ws_backend())), tls=tls_config))
    stream = await _tls_stream(address, ca, ["h2"])
    async with open_h2_client(stream) as client:
        tunnels = [await client.websocket("/", scheme="https") for _ in range(4)]

        async def echo_twice(index: int) -> None:
            ws = tunnels[index]
            for round_ in range(2):
                message = bytes([index * 16 + round_]) * 200 + bytes(range(256)) * 2048
                await ws.send(message)
                assert await ws.receive() == message

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for index in range(len(tunnels)):
                    nursery.start_soon(echo_twice, index)


async def test_tls_alpn_http11_carries_classic_websocket(
    start_proxy: StartProxy, ws_backend: WebSocketsBackend, tls_config: TLSConfig, ca: trustme.CA
) -> None:
    address = await start_proxy(
        make_config(("/", backend_url(ws_backend(subprotocols=["chat.v1"]))), tls=tls_config)
    )
    context = client_ssl_context(ca, ["http/1.1"])
    roundtrip = functools.partial(
        _websockets_roundtrip, f"wss://localhost:{address.port}/chat", context
    )
    reply, subprotocol = await trio.to_thread.run_sync(roundtrip)
    assert reply == "hello over http/1.1"
    assert subprotocol == "chat.v1"


async def test_tls_handshake_failure_does_not_hurt_the_server(
    start_proxy: StartProxy, ws_backend: WebSocketsBackend, tls_config: TLSConfig, ca: trustme.CA
) -> None:
    address = await start_proxy(make_config(("/", backend_url(ws_backend())), tls=tls_config))
    answer = await _raw_exchange(address, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # plaintext to TLS
    assert not answer.startswith(b"HTTP/1.1 2")
    stream = await _tls_stream(address, ca, ["h2"])
    async with open_h2_client(stream) as client:
        ws = await client.websocket("/", scheme="https")
        assert ws.status == 200


async def test_tls_slowloris_is_dropped_at_the_client_handshake_timeout(
    start_proxy: StartProxy, ws_backend: WebSocketsBackend, tls_config: TLSConfig
) -> None:
    config = make_config(
        ("/", backend_url(ws_backend())), tls=tls_config, client_handshake_timeout_s=0.5
    )
    address = await start_proxy(config)
    stream = await trio.open_tcp_stream(address.host, address.port)
    await stream.send_all(b"\x16\x03\x01")  # the start of a ClientHello, and then nothing
    started = trio.current_time()
    with trio.fail_after(10):
        assert await stream.receive_some(1024) == b""  # closed, not hanging
    assert 0.4 <= trio.current_time() - started < 5
    await stream.aclose()
