"""WebSocket over HTTP/2 through the proxy to real HTTP/1.1 WebSocket backends, on loopback."""

from __future__ import annotations

import json
import os
import struct

import hpack
import pytest
import trio

from h2ws_proxy.config import SocketAddress
from tests.conftest import StartProxy, WebSocketsBackend
from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.frames import PREFACE, frame
from tests.helpers.h2_client import H2TestClient, open_h2_client
from tests.helpers.setup import backend_url, make_config

pytestmark = pytest.mark.socket

PROTOCOL_ERROR, CANCEL, CONNECT_ERROR, NO_ERROR = 0x1, 0x8, 0xA, 0x0


async def h2_connect(address: SocketAddress, **kwargs: object) -> trio.SocketStream:
    return await trio.open_tcp_stream(address.host, address.port)


async def test_echo_small_and_1mib_messages_both_ways(
    start_proxy: StartProxy, ws_backend: WebSocketsBackend
) -> None:
    port = ws_backend()
    address = await start_proxy(make_config(("/", backend_url(port))))
    async with open_h2_client(await h2_connect(address)) as client:
        ws = await client.websocket("/echo")
        assert ws.status == 200
        await ws.send("hello")
        assert await ws.receive() == "hello"
        big = os.urandom(1024 * 1024)
        await ws.send(big)
        assert await ws.receive() == big
        assert await ws.close() == (1000, None)


async def test_connect_protocol_is_advertised_and_clean_close_has_no_reset(
    start_proxy: StartProxy, ws_backend: WebSocketsBackend
) -> None:
    port = ws_backend()
    address = await start_proxy(make_config(("/", backend_url(port))))
    async with open_h2_client(await h2_connect(address)) as client:
        assert client.conn.remote_settings.enable_connect_protocol == 1
        ws = await client.websocket("/")
        await ws.send(b"x")
        await ws.receive()
        server_code, reset_code = await ws.close()
        assert server_code == 1000
        assert reset_code is None  # END_STREAM both ways, no RST_STREAM after
        assert ws.state.ended


async def test_100_tunnels_on_one_connection(
    start_proxy: StartProxy, ws_backend: WebSocketsBackend
) -> None:
    port = ws_backend()
    address = await start_proxy(make_config(("/", backend_url(port)), max_concurrent_streams=128))
    async with open_h2_client(await h2_connect(address)) as client:

        async def one(index: int) -> None:
            ws = await client.websocket(f"/t/{index}")
            assert ws.status == 200
            payload = os.urandom(10_000) + index.to_bytes(4, "big")
            for _ in range(3):
                await ws.send(payload)
                assert await ws.receive() == payload
            assert (await ws.close())[0] == 1000

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for index in range(100):
                    nursery.start_soon(one, index)


async def test_subprotocol_negotiated(
    start_proxy: StartProxy, ws_backend: WebSocketsBackend
) -> None:
    port = ws_backend(subprotocols=["chat.v2", "chat.v1"])
    address = await start_proxy(make_config(("/", backend_url(port))))
    async with open_h2_client(await h2_connect(address)) as client:
        ws = await client.websocket("/", subprotocols=["chat.v1", "other"])
        assert ws.status == 200
        assert ws.state.header(b"sec-websocket-protocol") == b"chat.v1"
        assert ws.state.header(b"sec-websocket-accept") is None
        assert ws.state.header(b"upgrade") is None


async def test_forwarded_request_headers(
    start_proxy: StartProxy, ws_backend: WebSocketsBackend
) -> None:
    port = ws_backend()
    address = await start_proxy(make_config(("/", backend_url(port))))
    async with open_h2_client(await h2_connect(address)) as client:
        ws = await client.websocket(
            "/room?id=7",
            authority="chat.example.test:8443",
            extra=[
                (b"origin", b"https://chat.example.test"),
                (b"cookie", b"a=1"),
                (b"cookie", b"b=2"),
                (b"x-forwarded-for", b"127.9.9.9"),
                (b"user-agent", b"test-agent"),
            ],
        )
        await ws.send("__headers__")
        seen = json.loads(str(await ws.receive()))
    headers = seen["headers"]
    names = [name for name, _ in headers]
    values = dict(headers)
    assert seen["path"] == "/room?id=7"
    assert values["host"] == "chat.example.test:8443"
    assert values["origin"] == "https://chat.example.test"
    assert values["cookie"] == "a=1; b=2"  # RFC 9113 §8.2.3: crumbs joined for HTTP/1.1
    assert values["user-agent"] == "test-agent"
    assert values["x-forwarded-for"] == "127.0.0.1"  # the client's claimed chain is dropped
    assert values["x-forwarded-proto"] == "http"
    assert values["x-forwarded-host"] == "chat.example.test:8443"
    assert values["sec-websocket-version"] == "13"
    assert len(values["sec-websocket-key"]) == 24
    assert names.count("host") == 1
    assert "te" not in names
    assert "keep-alive" not in names


async def test_refused_backend_gives_502_at_once(
    start_proxy: StartProxy, ws_backend: WebSocketsBackend
) -> None:
    # A port that was just free: nothing listens there.
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    address = await start_proxy(make_config(("/", backend_url(port))))
    async with open_h2_client(await h2_connect(address)) as client:
        started = trio.current_time()
        state = await client.response(await client.request(_connect_headers("/")))
        assert state.status == 502
        assert trio.current_time() - started < 2  # no retry loop
        await client.finished(state)
        assert b"cannot connect" in bytes(state.data)


async def test_backend_403_with_body_goes_back_as_it_came(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    async def reject(conn: BackendConnection) -> None:
        await conn.read_upgrade()
        body = b"go away: no ticket"
        await conn.stream.send_all(
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nX-Reason: ticket\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )

    backend = ScriptedBackend(reject)
    await nursery.start(backend.run)
    address = await start_proxy(make_config(("/", backend.url)))
    async with open_h2_client(await h2_connect(address)) as client:
        state = await client.finished(await client.request(_connect_headers("/")))
        assert state.status == 403
        assert state.header(b"x-reason") == b"ticket"
        assert state.header(b"content-type") == b"text/plain"
        assert bytes(state.data) == b"go away: no ticket"


async def test_wrong_accept_gives_502_and_no_tunnel(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    async def bad_accept(conn: BackendConnection) -> None:
        request = await conn.read_upgrade()
        await conn.accept(request, accept=b"AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        await conn.echo_until_eof()

    backend = ScriptedBackend(bad_accept)
    await nursery.start(backend.run)
    address = await start_proxy(make_config(("/", backend.url)))
    async with open_h2_client(await h2_connect(address)) as client:
        state = await client.finished(await client.request(_connect_headers("/")))
        assert state.status == 502
        assert b"sec-websocket-accept" in bytes(state.data)
    with trio.fail_after(5):
        await backend.connections[0].closed.wait()


async def test_unoffered_subprotocol_from_backend_gives_502(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    async def picks_unoffered(conn: BackendConnection) -> None:
        request = await conn.read_upgrade()
        await conn.accept(request, headers=b"Sec-WebSocket-Protocol: admin\r\n")

    backend = ScriptedBackend(picks_unoffered)
    await nursery.start(backend.run)
    address = await start_proxy(make_config(("/", backend.url)))
    async with open_h2_client(await h2_connect(address)) as client:
        headers = [*_connect_headers("/"), (b"sec-websocket-protocol", b"chat")]
        state = await client.finished(await client.request(headers))
        assert state.status == 502
        assert b"subprotocol" in bytes(state.data)


async def test_frames_right_behind_the_101_reach_the_client_first(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    greeting = b"\x81\x05hello"  # an unmasked text frame "hello"

    async def greets(conn: BackendConnection) -> None:
        request = await conn.read_upgrade()
        await conn.accept(request, extra=greeting)  # same write, same packet
        await conn.echo_until_eof()

    backend = ScriptedBackend(greets)
    await nursery.start(backend.run)
    address = await start_proxy(make_config(("/", backend.url)))
    async with open_h2_client(await h2_connect(address)) as client:
        ws = await client.websocket("/")
        assert ws.status == 200
        assert await ws.receive() == "hello"


async def test_half_close_client_end_stream_then_backend_still_sends(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    async def answers_after_eof(conn: BackendConnection) -> None:
        request = await conn.read_upgrade()
        await conn.accept(request)
        received = b""
        while data := await conn.receive():
            received += data
        # The client's side is done (FIN); ours is still open.
        await conn.stream.send_all(b"after-eof:" + received)
        await conn.stream.send_eof()

    backend = ScriptedBackend(answers_after_eof)
    await nursery.start(backend.run)
    address = await start_proxy(make_config(("/", backend.url)))
    async with open_h2_client(await h2_connect(address)) as client:
        ws = await client.websocket("/")
        await client.send_data(ws.state, b"raw-bytes", end_stream=True)
        await client.finished(ws.state)
        assert bytes(ws.state.data) == b"after-eof:raw-bytes"
        assert ws.state.reset_code is None


async def test_half_close_backend_eof_then_client_still_sends(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    got_late_bytes = trio.Event()

    async def ends_first(conn: BackendConnection) -> None:
        request = await conn.read_upgrade()
        await conn.accept(request)
        await conn.stream.send_all(b"bye")
        await conn.stream.send_eof()
        late = b""
        while data := await conn.receive():
            late += data
        assert late == b"late-bytes"
        got_late_bytes.set()

    backend = ScriptedBackend(ends_first)
    await nursery.start(backend.run)
    address = await start_proxy(make_config(("/", backend.url)))
    async with open_h2_client(await h2_connect(address)) as client:
        ws = await client.websocket("/")
        await client.wait_for(lambda: ws.state.ended)
        assert bytes(ws.state.data) == b"bye"
        await client.send_data(ws.state, b"late-bytes", end_stream=True)
        with trio.fail_after(5):
            await got_late_bytes.wait()
        assert ws.state.reset_code is None


async def test_client_reset_closes_backend_socket(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    async def waits(conn: BackendConnection) -> None:
        request = await conn.read_upgrade()
        await conn.accept(request)
        assert await conn.receive() == b""  # EOF or reset: the proxy closed us

    backend = ScriptedBackend(waits)
    await nursery.start(backend.run)
    address = await start_proxy(make_config(("/", backend.url)))
    async with open_h2_client(await h2_connect(address)) as client:
        ws = await client.websocket("/")
        assert ws.status == 200
        await client.reset(ws.state, CANCEL)
        with trio.fail_after(5):
            await backend.connections[0].closed.wait()


async def test_backend_reset_mid_tunnel_resets_only_that_stream(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    async def resets_on_boom(conn: BackendConnection) -> None:
        request = await conn.read_upgrade()
        await conn.accept(request)
        while data := await conn.receive():
            if data == b"boom":
                conn.stream.socket.setsockopt(
                    __import__("socket").SOL_SOCKET,
                    __import__("socket").SO_LINGER,
                    b"\x01\x00\x00\x00\x00\x00\x00\x00",
                )
                await conn.stream.aclose()
                return
            await conn.stream.send_all(data)

    backend = ScriptedBackend(resets_on_boom)
    await nursery.start(backend.run)
    address = await start_proxy(make_config(("/", backend.url)))
    async with open_h2_client(await h2_connect(address)) as client:
        doomed = await client.websocket("/a")
        neighbour = await client.websocket("/b")
        await client.send_data(doomed.state, b"boom")
        await client.wait_for(lambda: doomed.state.reset_code is not None)
        assert doomed.state.reset_code == CONNECT_ERROR
        await client.send_data(neighbour.state, b"still here")
        await client.wait_for(lambda: bytes(neighbour.state.data) == b"still here")


async def test_slow_backend_does_not_slow_its_neighbours(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    stalled = trio.Event()

    async def never_reads_on_slow(conn: BackendConnection) -> None:
        request = await conn.read_upgrade()
        await conn.accept(request)
        if request.target == b"/slow":
            await stalled.wait()
            return
        await conn.echo_until_eof()

    backend = ScriptedBackend(never_reads_on_slow)
    await nursery.start(backend.run)
    address = await start_proxy(make_config(("/", backend.url), stream_window_bytes=65535))
    async with open_h2_client(await h2_connect(address)) as client:
        slow = await client.websocket("/slow")
        fast = await client.websocket("/fast")

        async with trio.open_nursery() as flooding:
            # Far more than the stream window plus socket buffers: it must stall.
            flooding.start_soon(client.send_data, slow.state, b"x" * (16 * 1024 * 1024))
            await client.wait_for(
                lambda: client.conn.local_flow_control_window(slow.state.stream_id) == 0
            )
            for index in range(20):
                payload = f"ping {index}".encode() * 100
                await client.send_data(fast.state, payload)
                await client.wait_for(lambda p=payload: bytes(fast.state.data).endswith(p))
            # Still stalled: the proxy holds at most the stream window for it.
            assert client.conn.local_flow_control_window(slow.state.stream_id) == 0
            flooding.cancel_scope.cancel()
        stalled.set()


async def test_client_that_stops_reading_holds_back_only_its_backend(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    pushed = 0

    async def pusher_or_echo(conn: BackendConnection) -> None:
        nonlocal pushed
        request = await conn.read_upgrade()
        await conn.accept(request)
        if request.target == b"/push":
            chunk = b"y" * 65536
            with trio.move_on_after(3):
                while True:
                    await conn.stream.send_all(chunk)
                    pushed += len(chunk)
            return
        await conn.echo_until_eof()

    backend = ScriptedBackend(pusher_or_echo)
    await nursery.start(backend.run)
    window = 65535
    address = await start_proxy(make_config(("/", backend.url), stream_window_bytes=window))
    async with open_h2_client(await h2_connect(address)) as client:
        pusher = await client.websocket("/push", auto_ack=False)
        echo = await client.websocket("/echo")
        await client.wait_for(lambda: len(pusher.state.data) >= window)
        for index in range(10):
            payload = f"hello {index}".encode()
            await client.send_data(echo.state, payload)
            await client.wait_for(lambda p=payload: bytes(echo.state.data).endswith(p))
        # The backend was held back: it pushed no more than what the client took plus
        # what sockets and one proxy read can hold, not an unbounded amount.
        assert len(pusher.state.data) <= window
        assert pushed < 16 * 1024 * 1024


async def test_client_that_stops_reading_its_socket_holds_back_only_its_backend(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    """Windows wide open, but the client stops reading its TCP socket: the proxy's output
    for it piles up to its bound, and then the backend is no longer read (the backend
    poller pauses it) instead of our memory growing; a neighbour connection is unaffected."""
    pushed = 0
    push_over = trio.Event()

    async def pusher_or_echo(conn: BackendConnection) -> None:
        nonlocal pushed
        request = await conn.read_upgrade()
        await conn.accept(request)
        if request.target == b"/push":
            chunk = b"y" * 65536
            with trio.move_on_after(3):  # the backend pushes for 3 s, as fast as it may
                while True:
                    await conn.stream.send_all(chunk)
                    pushed += len(chunk)
            push_over.set()
            return
        await conn.echo_until_eof()

    backend = ScriptedBackend(pusher_or_echo)
    await nursery.start(backend.run)
    address = await start_proxy(make_config(("/", backend.url)))
    stalled = await h2_connect(address)
    wide_open = 2**31 - 1
    settings = struct.pack(">HI", 0x4, wide_open)  # SETTINGS_INITIAL_WINDOW_SIZE
    connect = hpack.Encoder().encode(
        [
            (b":method", b"CONNECT"),
            (b":protocol", b"websocket"),
            (b":scheme", b"http"),
            (b":path", b"/push"),
            (b":authority", b"proxy.test"),
            (b"sec-websocket-version", b"13"),
        ]
    )
    await stalled.send_all(
        PREFACE
        + frame(0x4, 0, 0, settings)
        + frame(0x8, 0, 0, struct.pack(">I", wide_open - 65535))  # connection window
        + frame(0x1, 0x4, 1, connect)  # HEADERS, END_HEADERS
    )
    received = b""
    with trio.fail_after(10):
        while b"\x01\x04\x00\x00\x00\x01" not in received:  # our HEADERS on stream 1
            received += await stalled.receive_some(65536)
    # From here on the client reads nothing.
    with trio.fail_after(10):
        await push_over.wait()
    async with open_h2_client(await h2_connect(address)) as client:
        echo = await client.websocket("/echo")
        await client.send_data(echo.state, b"neighbour")
        await client.wait_for(lambda: bytes(echo.state.data) == b"neighbour")
    # Held back: what the proxy queues (256 KiB) plus one read, plus what the kernel's
    # socket buffers on both sides take, not everything the backend could push in 3 s.
    assert pushed < 16 * 1024 * 1024
    await stalled.aclose()


async def test_protocol_refused_on_listener_that_does_not_advertise_it(
    start_proxy: StartProxy, ws_backend: WebSocketsBackend
) -> None:
    port = ws_backend()
    address = await start_proxy(
        make_config(("/", backend_url(port)), enable_connect_protocol=False)
    )
    async with open_h2_client(await h2_connect(address)) as client:
        assert client.conn.remote_settings.enable_connect_protocol == 0
        # h2 (the client library) would refuse to send :protocol here; bypass it the
        # way a hostile client would.
        client.conn.remote_settings[0x8] = 1  # type: ignore[index]
        refused = await client.finished(await client.request(_connect_headers("/")))
        assert refused.status == 400
        assert refused.reset_code == PROTOCOL_ERROR
        assert b"ENABLE_CONNECT_PROTOCOL" in bytes(refused.data)


async def test_no_route_404_and_unsupported_protocol_501(
    start_proxy: StartProxy, ws_backend: WebSocketsBackend
) -> None:
    port = ws_backend()
    address = await start_proxy(make_config(("/chat", backend_url(port))))
    async with open_h2_client(await h2_connect(address)) as client:
        missing = await client.finished(await client.request(_connect_headers("/chatter")))
        assert missing.status == 404
        other = _connect_headers("/chat")
        other[1] = (b":protocol", b"webtransport")
        unsupported = await client.finished(await client.request(other))
        assert unsupported.status == 501
        plain = [(b":method", b"CONNECT"), (b":authority", b"example.test:443")]
        plain_connect = await client.finished(await client.request(plain))
        assert plain_connect.status == 501
        ws = await client.websocket("/chat/room")
        assert ws.status == 200


async def test_bad_version_and_malformed_requests_fail_only_their_stream(
    start_proxy: StartProxy, ws_backend: WebSocketsBackend
) -> None:
    port = ws_backend()
    address = await start_proxy(make_config(("/", backend_url(port))))
    async with open_h2_client(await h2_connect(address)) as client:
        ws = await client.websocket("/")
        old_version = _connect_headers("/")
        old_version[-1] = (b"sec-websocket-version", b"8")
        state = await client.finished(await client.request(old_version))
        assert state.status == 400
        assert state.header(b"sec-websocket-version") == b"13"
        with_length = [*_connect_headers("/"), (b"content-length", b"0")]
        state = await client.finished(await client.request(with_length))
        assert (state.status, state.reset_code) == (400, PROTOCOL_ERROR)
        no_slash = _connect_headers("/")
        no_slash[3] = (b":path", b"chat")
        state = await client.finished(await client.request(no_slash))
        assert (state.status, state.reset_code) == (400, PROTOCOL_ERROR)
        await ws.send("still alive")
        assert await ws.receive() == "still alive"


def _connect_headers(path: str) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"CONNECT"),
        (b":protocol", b"websocket"),
        (b":scheme", b"http"),
        (b":path", path.encode()),
        (b":authority", b"proxy.test"),
        (b"sec-websocket-version", b"13"),
    ]


__all__ = ["H2TestClient"]
