"""HTTP/1.1 WebSocket clients on the same port and routes, and TLS with ALPN for both."""

from __future__ import annotations

import functools
import socket
import ssl

import h2.settings
import pytest
import trio
import trustme
from websockets.sync.client import connect as ws_connect

from h2ws_proxy.config import SocketAddress, TLSConfig
from h2ws_proxy.http2.client_writer import ClientWriter
from h2ws_proxy.transport.tls_stream import LeanTLSStream
from tests.conftest import StartProxy, WebSocketsBackend
from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.h2_client import WebSocketStream, open_h2_client
from tests.helpers.records import capture_proxy_records
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


class _StopStartStream(trio.abc.Stream):
    """A client stream that stops reading after each ``quota`` bytes until :meth:`resume`:
    a client that keeps granting HTTP/2 window but reads its socket in fits and starts."""

    def __init__(self, inner: trio.abc.Stream, quota: int) -> None:
        self.inner = inner
        self.quota = quota
        self.read_since_resume = 0
        self.reading = trio.Event()
        self.reading.set()

    def stop(self) -> None:
        if self.reading.is_set():
            self.reading = trio.Event()

    def resume(self) -> None:
        self.read_since_resume = 0
        self.reading.set()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        await self.reading.wait()
        data = await self.inner.receive_some(max_bytes)
        self.read_since_resume += len(data)
        if self.read_since_resume >= self.quota:
            self.stop()
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()


#: A window far above what the sockets hold: flow control never stops the proxy's writes.
_BIG_WINDOW = {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**26}


async def _stop_start_tls_client(address: SocketAddress, ca: trustme.CA) -> _StopStartStream:
    """A TLS connection (ALPN h2) with a 4 KiB receive buffer, so that the proxy's socket
    fills soon after the client stops reading; it stops after every 64 KiB read."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect((address.host, address.port))
    tls = trio.SSLStream(
        trio.SocketStream(sock), client_ssl_context(ca, ["h2"]), server_hostname="localhost"
    )
    await tls.do_handshake()
    return _StopStartStream(tls, quota=64 * 1024)


def _numbered_message(index: int) -> bytes:
    return index.to_bytes(4, "big") * 250


def _binary_frame(payload: bytes) -> bytes:
    """A backend's (unmasked) WebSocket binary frame of 126 to 65,535 bytes."""
    return b"\x82\x7e" + len(payload).to_bytes(2, "big") + payload


async def _messages_until_the_stream_stops(ws: WebSocketStream) -> tuple[list[bytes], str]:
    """Every message before the stream stops, and why it stopped (a Close frame, or not)."""
    messages: list[bytes] = []
    while True:
        try:
            message = await ws.receive()
        except ConnectionError as error:
            return messages, str(error)
        assert isinstance(message, bytes)
        messages.append(message)


async def test_tls_output_to_a_client_that_reads_in_fits_and_starts_arrives_whole(
    nursery: trio.Nursery,
    start_proxy: StartProxy,
    tls_config: TLSConfig,
    ca: trustme.CA,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A TLS client (small receive buffer) grants window but stops reading its socket,
    again and again, while the backend streams small messages. The proxy's inline writes,
    tried at the end of each small batch, meet a full socket: OpenSSL then wants the same
    bytes again, and they must stay at the head of the output for the writer (or the next
    inline write) to repeat, with more behind (the rule itself is pinned in
    tests/protocol/test_tls_stream.py). Every message must arrive once, in order, in
    well-formed frames."""
    inline_waits = 0
    in_inline_send = False
    client: _StopStartStream | None = None
    real_send_inline = ClientWriter._send_inline
    real_send_nowait = LeanTLSStream.send_nowait

    def spying_send_inline(self: ClientWriter) -> bool:
        nonlocal in_inline_send
        in_inline_send = True
        try:
            return real_send_inline(self)
        finally:
            in_inline_send = False

    def spying_send_nowait(self: LeanTLSStream, data: bytes | bytearray | memoryview) -> int:
        nonlocal inline_waits
        sent = real_send_nowait(self, data)
        if data and not sent:
            # The socket is full (the writer's own records try ``send_nowait`` first too:
            # only the inline writes are the case under test).
            inline_waits += in_inline_send
            assert client is not None
            client.resume()  # read again
        return sent

    monkeypatch.setattr(ClientWriter, "_send_inline", spying_send_inline)
    monkeypatch.setattr(LeanTLSStream, "send_nowait", spying_send_nowait)
    messages_sent = 0

    async def streams_small_messages(backend: BackendConnection) -> None:
        nonlocal messages_sent
        await backend.accept(await backend.read_upgrade())
        stopped_for = 0
        while inline_waits < 100 and messages_sent < 20_000:  # at most 20 MB
            # One small binary frame at a time, each read by the proxy (same trio loop) on
            # its own, so each batch is small enough to be written inline.
            await backend.stream.send_all(_binary_frame(_numbered_message(messages_sent)))
            messages_sent += 1
            await trio.lowlevel.checkpoint()
            # Should the writer rather than an inline write have met the full socket (it
            # then holds the output, and no inline write is tried), let the client go on.
            assert client is not None
            stopped_for = 0 if client.reading.is_set() else stopped_for + 1
            if stopped_for >= 50:  # 50 KB: far below what the sockets between us hold
                client.resume()
        await backend.stream.send_all(b"\x88\x02\x03\xe8")  # Close 1000
        await backend.stream.send_eof()
        await backend.receive()  # hold the connection open until the test ends

    backend = ScriptedBackend(streams_small_messages)
    await nursery.start(backend.run)
    address = await start_proxy(make_config(("/", backend.url), tls=tls_config))
    client = await _stop_start_tls_client(address, ca)
    async with open_h2_client(client, _BIG_WINDOW, connection_window=2**26) as h2_client:
        ws = await h2_client.websocket("/", scheme="https")
        assert ws.status == 200
        client.stop()  # from the next read on (one more may be under way)
        with trio.fail_after(30):
            received, stopped_by = await _messages_until_the_stream_stops(ws)
    assert stopped_by.startswith("close frame")
    assert len(received) == messages_sent > 0
    for index, message in enumerate(received):
        assert message == _numbered_message(index), (
            f"message {index} came as {len(message)} bytes starting {message[:8]!r}"
        )
    assert inline_waits >= 100  # the case under test did happen, again and again


async def test_tls_client_that_stops_reading_is_cut_off_at_the_send_timeout(
    nursery: trio.Nursery, start_proxy: StartProxy, tls_config: TLSConfig, ca: trustme.CA
) -> None:
    """Most TLS records go out without a timer; one that has to wait still gets
    ``send_timeout_s``: a client that grants window but never reads again is disconnected
    (its tunnel aborted, the backend's connection closed), not served forever."""
    backend_cut_off = trio.Event()

    async def streams_until_cut_off(backend: BackendConnection) -> None:
        await backend.accept(await backend.read_upgrade())
        frame = _binary_frame(b"x" * 1000)
        try:
            for _ in range(50_000):  # at most 50 MB
                await backend.stream.send_all(frame)
            while await backend.receive():
                pass
        finally:
            backend_cut_off.set()

    backend = ScriptedBackend(streams_until_cut_off)
    await nursery.start(backend.run)
    config = make_config(("/", backend.url), tls=tls_config, send_timeout_s=0.5)
    address = await start_proxy(config)
    client = await _stop_start_tls_client(address, ca)
    with capture_proxy_records() as records:
        async with open_h2_client(client, _BIG_WINDOW, connection_window=2**26) as h2_client:
            ws = await h2_client.websocket("/", scheme="https")
            assert ws.status == 200
            client.stop()  # and never resume
            with trio.fail_after(10):
                await backend_cut_off.wait()
            timeout = await records.wait_for(
                lambda record: record.event == "client.send_timeout", 5, "of the send timeout"
            )
            assert timeout.get("send_timeout_s") == 0.5
            tunnel = await records.wait_for(
                lambda record: record.event == "tunnel.closed", 5, "of the tunnel's end"
            )
            assert tunnel.get("end") == "client_aborted"
