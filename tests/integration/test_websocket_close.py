"""The WebSocket Close as the proxy sees it, with real peers on loopback.

* Each ``tunnel.closed`` line carries the close code each side sent: a client's Close 1000
  (HTTP/2 and HTTP/1.1), a backend's Close 1011, none from a side that ended without one
  (then the tunnel is not ``end=clean``: that side's abort, client or backend alike).
* Bytes that are not WebSocket frames pass unchanged and are reported once per side.
* The drain: 200 open tunnels (100 from Python ``websockets`` over HTTP/1.1, 100 from the
  Node HTTP/2 client) each get Close 1001 toward the client and a masked Close 1001 toward
  the backend (``websockets`` refuses unmasked client frames), both peers answer, every
  line says 1001 both ways, and nobody sees 1006.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from websockets.asyncio.client import connect as ws_async_connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect
from wsproto.frame_protocol import CloseReason, Frame, FrameProtocol, Opcode

from h2ws_proxy.config import ProxyConfig, SocketAddress
from h2ws_proxy.relay.context import ServerStats
from h2ws_proxy.server.serve import BoundAddresses, serve
from tests.conftest import StartProxy, WebSocketsBackend
from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.h2_client import open_h2_client
from tests.helpers.node import require_node, run_h2ws_client
from tests.helpers.records import ProxyRecords, capture_proxy_records
from tests.helpers.setup import backend_url, make_config

pytestmark = pytest.mark.socket


async def _tunnel_line(records: ProxyRecords) -> dict[str, Any]:
    found = await records.wait_for(lambda r: r.event == "tunnel.closed", 10, "tunnel.closed")
    return found.fields


async def _h2(address: SocketAddress) -> trio.SocketStream:
    return await trio.open_tcp_stream(address.host, address.port)


async def test_client_close_1000_over_h2_is_logged_both_ways(
    start_proxy: StartProxy, ws_backend: WebSocketsBackend
) -> None:
    port = ws_backend()
    with capture_proxy_records() as records:
        address = await start_proxy(make_config(("/", backend_url(port))))
        async with open_h2_client(await _h2(address)) as client:
            ws = await client.websocket("/")
            await ws.send("hi")
            assert await ws.receive() == "hi"
            assert await ws.close(1000) == (1000, None)
        line = await _tunnel_line(records)
    assert (line["close_code_client"], line["close_code_backend"]) == (1000, 1000)
    assert line["end"] == "clean"


def _h1_close_1000(url: str) -> None:
    with ws_connect(url, compression=None, open_timeout=10) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "hi"
        ws.close(1000)


async def test_client_close_1000_over_h1_is_logged_both_ways(
    start_proxy: StartProxy, ws_backend: WebSocketsBackend
) -> None:
    port = ws_backend()
    with capture_proxy_records() as records:
        address = await start_proxy(make_config(("/", backend_url(port))))
        await trio.to_thread.run_sync(_h1_close_1000, f"ws://127.0.0.1:{address.port}/")
        line = await _tunnel_line(records)
    assert (line["close_code_client"], line["close_code_backend"]) == (1000, 1000)
    assert (line["front"], line["end"]) == ("h1", "clean")


async def test_backend_close_1011_is_logged(nursery: trio.Nursery, start_proxy: StartProxy) -> None:
    async def closes_with_1011(conn: BackendConnection) -> None:
        await conn.accept(await conn.read_upgrade())
        await conn.receive()  # the client's message
        frames = FrameProtocol(client=False, extensions=[])
        await conn.stream.send_all(frames.close(CloseReason.INTERNAL_ERROR, "oops"))
        while await conn.receive():  # the client's Close, then its end
            pass

    backend = ScriptedBackend(closes_with_1011)
    await nursery.start(backend.run)
    with capture_proxy_records() as records:
        address = await start_proxy(make_config(("/", backend.url)))
        async with open_h2_client(await _h2(address)) as client:
            ws = await client.websocket("/")
            await ws.send("hi")
            with pytest.raises(ConnectionError, match="close frame"):
                await ws.receive()
            await client.send_data(ws.state, ws.frames.close(CloseReason.INTERNAL_ERROR))
            await client.end_stream(ws.state)
            await client.finished(ws.state)
        line = await _tunnel_line(records)
    assert (line["close_code_client"], line["close_code_backend"]) == (1011, 1011)
    assert line["end"] == "clean"


async def test_backend_gone_without_close_is_not_clean(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    async def vanishes(conn: BackendConnection) -> None:
        await conn.accept(await conn.read_upgrade())
        await conn.receive()  # then the TCP connection closes, no Close frame

    backend = ScriptedBackend(vanishes)
    await nursery.start(backend.run)
    with capture_proxy_records() as records:
        address = await start_proxy(make_config(("/", backend.url)))
        async with open_h2_client(await _h2(address)) as client:
            ws = await client.websocket("/")
            await ws.send("hi")
            with pytest.raises(ConnectionError, match="stream ended"):
                await ws.receive()
            await client.end_stream(ws.state)
            await client.finished(ws.state)
        line = await _tunnel_line(records)
    assert (line["close_code_client"], line["close_code_backend"]) == ("-", "-")
    assert line["end"] == "backend_aborted"


async def test_h2_client_ending_without_close_is_not_clean(
    start_proxy: StartProxy, ws_backend: WebSocketsBackend
) -> None:
    """END_STREAM with no Close frame before it: the backend's endpoint sees 1006, so the
    tunnel is the client's abort, as a backend's end without Close is the backend's."""
    port = ws_backend()
    with capture_proxy_records() as records:
        address = await start_proxy(make_config(("/", backend_url(port))))
        async with open_h2_client(await _h2(address)) as client:
            ws = await client.websocket("/")
            await ws.send("hi")
            assert await ws.receive() == "hi"
            await client.end_stream(ws.state)  # no Close frame first
            await client.finished(ws.state)
        line = await _tunnel_line(records)
    assert (line["close_code_client"], line["close_code_backend"]) == ("-", "-")
    assert line["end"] == "client_aborted"


def _h1_drop_without_close(url: str) -> None:
    with ws_connect(url, compression=None, open_timeout=10) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "hi"
        ws.socket.shutdown(socket.SHUT_WR)  # a FIN, no Close frame
        with contextlib.suppress(ConnectionClosed):
            ws.recv(timeout=10)


async def test_h1_client_ending_without_close_is_not_clean(
    start_proxy: StartProxy, ws_backend: WebSocketsBackend
) -> None:
    port = ws_backend()
    with capture_proxy_records() as records:
        address = await start_proxy(make_config(("/", backend_url(port))))
        await trio.to_thread.run_sync(_h1_drop_without_close, f"ws://127.0.0.1:{address.port}/")
        line = await _tunnel_line(records)
    assert (line["close_code_client"], line["close_code_backend"]) == ("-", "-")
    assert (line["front"], line["end"]) == ("h1", "client_aborted")


async def test_bytes_that_are_not_frames_pass_and_are_reported_once(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    garbage_down = b"HTTP/1.1 200 OK\r\n\r\nnot a frame at all"
    garbage_up = b"GET /nope HTTP/1.1\r\n\r\n" * 3

    async def garbage(conn: BackendConnection) -> None:
        await conn.accept(await conn.read_upgrade(), extra=garbage_down)
        got = b""
        while len(got) < len(garbage_up):
            got += await conn.receive()
        assert got == garbage_up
        await conn.stream.send_all(garbage_down)

    backend = ScriptedBackend(garbage)
    await nursery.start(backend.run)
    with capture_proxy_records() as records:
        address = await start_proxy(make_config(("/", backend.url)))
        async with open_h2_client(await _h2(address)) as client:
            ws = await client.websocket("/")
            for _ in range(3):
                await client.send_data(ws.state, garbage_up[: len(garbage_up) // 3])
            await client.wait_for(lambda: len(ws.state.data) >= 2 * len(garbage_down))
            assert bytes(ws.state.data) == garbage_down * 2
            await client.end_stream(ws.state)
            await client.finished(ws.state)
        line = await _tunnel_line(records)
    untracked = records.named("tunnel.untracked")
    assert sorted(item["side"] for item in untracked) == ["backend", "client"]
    assert line["end"] == "clean"
    assert (line["close_code_client"], line["close_code_backend"]) == ("-", "-")


# ---- the drain ----


async def _backend_closes(closes: list[int | None], count: int) -> list[int | None]:
    """The codes the ``websockets`` backend received, once its ``count`` connection
    threads noted theirs (they finish a moment after the proxy's side ended)."""
    with trio.fail_after(10):
        while len(closes) < count:  # noqa: ASYNC110 (filled by the backend's threads)
            await trio.sleep(0.01)
    return sorted(closes, key=str)


H1_TUNNELS = 100
H2_TUNNELS = 100


def _hold_h1_clients(url: str, count: int, opened: threading.Event) -> list[int | None]:
    """``count`` ``websockets`` clients: open, echo once, then wait for the server's Close;
    the code each received (None: the connection ended without one, a 1006)."""

    async def main() -> list[int | None]:
        clients = [
            await ws_async_connect(url, compression=None, open_timeout=10, close_timeout=5)
            for _ in range(count)
        ]
        for ws in clients:
            await ws.send("hello")
            assert await ws.recv() == "hello"
        opened.set()
        await asyncio.gather(*(ws.wait_closed() for ws in clients))
        return [
            ws.protocol.close_rcvd.code if ws.protocol.close_rcvd is not None else None
            for ws in clients
        ]

    return asyncio.run(asyncio.wait_for(main(), 30))


#: Long beside how fast the peers answer (a fraction of a second), so the drain's time says
#: whether anyone waited for it even on a machine busy with other runs (3 s was once too
#: short there for 200 close handshakes through the threaded ``websockets`` backend).
CLOSE_WAIT_S = 10.0


@pytest.mark.parametrize(
    "limits",
    [
        {"drain_close_websockets": True, "close_wait_s": CLOSE_WAIT_S},
        {"graceful_timeout_s": 0.5, "close_wait_s": CLOSE_WAIT_S},
    ],
    ids=["at_once", "after_graceful_timeout"],
)
async def test_drain_closes_every_websocket_with_1001(
    ws_backend: WebSocketsBackend, limits: dict[str, Any]
) -> None:
    require_node()
    backend_closes: list[int | None] = []
    port = ws_backend(closes=backend_closes)
    config = make_config(("/", backend_url(port)), **limits)
    shutdown, stats = trio.Event(), ServerStats()
    results: dict[str, Any] = {}
    opened = threading.Event()

    async def h2_clients(url: str) -> None:
        results["h2"] = await run_h2ws_client(
            "--url", url, "--tunnels", str(H2_TUNNELS), "--hold", "--timeout-ms", "30000"
        )

    async def h1_clients(url: str) -> None:
        results["h1"] = await trio.to_thread.run_sync(_hold_h1_clients, url, H1_TUNNELS, opened)

    with capture_proxy_records() as records:
        async with trio.open_nursery() as clients:
            async with trio.open_nursery() as proxy:
                bound: BoundAddresses = await proxy.start(
                    functools.partial(serve, config, shutdown=shutdown, stats=stats)
                )
                address = bound.listeners[0]
                clients.start_soon(h2_clients, f"http://127.0.0.1:{address.port}")
                clients.start_soon(h1_clients, f"ws://127.0.0.1:{address.port}/")
                with trio.fail_after(30):
                    # The proxy's own count of open tunnels: no event to wait on.
                    while stats.tunnels < H1_TUNNELS + H2_TUNNELS or not opened.is_set():  # noqa: ASYNC110
                        await trio.sleep(0.05)
                started = trio.current_time()
                shutdown.set()
            drained_s = trio.current_time() - started  # serve returned: every connection ended
    lines = records.named("tunnel.closed")

    assert results["h1"] == [1001] * H1_TUNNELS
    tunnels = results["h2"]["tunnels"]
    assert [t["close_code"] for t in tunnels] == [1001] * H2_TUNNELS, results["h2"]
    assert all(t["ok"] and t["close_reason"] == "going away" for t in tunnels), results["h2"]
    assert results["h2"]["ok"], results["h2"]
    total = H1_TUNNELS + H2_TUNNELS
    assert await _backend_closes(backend_closes, total) == [1001] * total
    assert len(lines) == H1_TUNNELS + H2_TUNNELS
    for line in lines:
        assert (line["close_code_client"], line["close_code_backend"], line["end"]) == (
            1001,
            1001,
            "drained",
        ), line
    # The peers answered at once: nobody waited for close_wait_s, let alone was cut.
    assert drained_s < limits.get("graceful_timeout_s", 0) + limits["close_wait_s"]


@contextlib.asynccontextmanager
async def _draining_proxy(
    config: ProxyConfig,
) -> AsyncIterator[tuple[SocketAddress, trio.Event]]:
    """A proxy the test drains by setting the yielded event; the block's end waits for the
    drain to finish (``serve`` returned)."""
    shutdown = trio.Event()
    async with trio.open_nursery() as proxy:
        bound: BoundAddresses = await proxy.start(
            functools.partial(serve, config, shutdown=shutdown)
        )
        yield bound.listeners[0], shutdown


def _parse(data: bytes, *, client: bool) -> list[Frame]:
    """Frames as a ``client`` (unmasked expected) or a server (masked expected) reads them."""
    reader = FrameProtocol(client=client, extensions=[])
    reader.receive_bytes(data)
    return list(reader.received_frames())


async def _h1_upgrade(address: SocketAddress) -> tuple[trio.SocketStream, bytes]:
    """A raw HTTP/1.1 WebSocket client connection: the stream, and bytes behind the 101."""
    stream = await trio.open_tcp_stream(address.host, address.port)
    await stream.send_all(
        b"GET / HTTP/1.1\r\nHost: proxy.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive_some(65536)
    head, _, rest = head.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    return stream, rest


async def test_drain_finishes_the_frame_in_progress_first_both_ways(nursery: trio.Nursery) -> None:
    """The Close goes in only once the frame each way has passed whole; what the source
    sends after it never reaches the sink (HTTP/1.1: both directions are pumps)."""
    client_frames = FrameProtocol(client=True, extensions=[])
    server_frames = FrameProtocol(client=False, extensions=[])
    up_frame = client_frames.send_data(b"u" * 100_000, fin=True)
    down_frame = server_frames.send_data(b"d" * 100_000, fin=True)
    halfway = trio.Event()
    finish = trio.Event()
    received = bytearray()

    async def half_a_frame_then_the_rest(conn: BackendConnection) -> None:
        await conn.accept(await conn.read_upgrade())
        await conn.stream.send_all(down_frame[:50_000])
        while len(received) < 50_000:
            received.extend(await conn.receive())
        halfway.set()
        await finish.wait()
        await conn.stream.send_all(down_frame[50_000:] + server_frames.send_data(b"late"))
        while data := await conn.receive():  # the rest, our Close, never the late frame
            received.extend(data)
            frames = _parse(bytes(received), client=False)
            if frames and frames[-1].opcode is Opcode.CLOSE:
                await conn.stream.send_all(server_frames.close(CloseReason.GOING_AWAY))
                return

    backend = ScriptedBackend(half_a_frame_then_the_rest)
    await nursery.start(backend.run)
    config = make_config(("/", backend.url), drain_close_websockets=True, close_wait_s=5.0)
    with capture_proxy_records() as records:
        async with _draining_proxy(config) as (address, shutdown):
            stream, got = await _h1_upgrade(address)
            await stream.send_all(up_frame[:50_000])
            await halfway.wait()
            while len(got) < 50_000:
                got += await stream.receive_some(65536)
            shutdown.set()
            await trio.sleep(0.2)  # the drain began; both ways are mid-frame
            assert len(got) == 50_000
            finish.set()
            await stream.send_all(up_frame[50_000:] + client_frames.send_data(b"late"))
            while not (frames := _parse(got, client=True)) or frames[-1].opcode is not Opcode.CLOSE:
                got += await stream.receive_some(65536)
            assert [f.opcode for f in frames] == [Opcode.BINARY, Opcode.CLOSE]
            assert frames[1].payload == (CloseReason.GOING_AWAY, "going away")
            await stream.send_all(client_frames.close(CloseReason.GOING_AWAY))
            while await stream.receive_some(65536):  # the proxy ends the connection
                pass
            await stream.aclose()
        line = await _tunnel_line(records)
    to_backend = _parse(bytes(received), client=False)  # a server's reader: masked frames
    assert [f.opcode for f in to_backend] == [Opcode.BINARY, Opcode.CLOSE]
    assert to_backend[0].payload == b"u" * 100_000
    assert to_backend[1].payload == (CloseReason.GOING_AWAY, "going away")
    assert (line["close_code_client"], line["close_code_backend"]) == (1001, 1001)
    assert line["end"] == "drained"


async def test_drain_sends_no_second_close_after_a_side_closed(nursery: trio.Nursery) -> None:
    """The client sent Close 1000, the backend never answers: the backend gets no Close of
    ours (it has the client's), the client gets our 1001; close_wait_s then cuts it."""
    received = bytearray()
    client_closed = trio.Event()

    async def never_answers(conn: BackendConnection) -> None:
        await conn.accept(await conn.read_upgrade())
        while data := await conn.receive():
            received.extend(data)
            if _parse(bytes(received), client=False):
                client_closed.set()

    backend = ScriptedBackend(never_answers)
    await nursery.start(backend.run)
    config = make_config(("/", backend.url), drain_close_websockets=True, close_wait_s=0.5)
    client_frames = FrameProtocol(client=True, extensions=[])
    with capture_proxy_records() as records:
        async with _draining_proxy(config) as (address, shutdown):
            stream, got = await _h1_upgrade(address)
            await stream.send_all(client_frames.close(CloseReason.NORMAL_CLOSURE))
            await client_closed.wait()
            shutdown.set()
            while not _parse(got, client=True):
                got += await stream.receive_some(65536)
            to_client = _parse(got, client=True)
            assert to_client[0].payload == (CloseReason.GOING_AWAY, "going away")
            while await stream.receive_some(65536):  # cut once close_wait_s is over
                pass
        line = await _tunnel_line(records)
    frames = _parse(bytes(received), client=False)
    assert [f.payload for f in frames] == [(CloseReason.NORMAL_CLOSURE, "")]
    assert (line["close_code_client"], line["close_code_backend"]) == (1000, "-")
    assert line["end"] == "cancelled"


def _deflate_client(url: str, opened: trio.Event) -> tuple[int | None, str | None]:
    """A ``websockets`` client with permessage-deflate: echo once, wait for the Close."""
    with ws_connect(url, open_timeout=10, close_timeout=5) as ws:
        extensions = [type(e).__name__ for e in ws.protocol.extensions]
        ws.send("compressible " * 50)
        assert ws.recv(timeout=10) == "compressible " * 50
        trio.from_thread.run_sync(opened.set)
        with contextlib.suppress(ConnectionClosed):
            ws.recv(timeout=10)
        received = ws.protocol.close_rcvd
        return (received.code if received is not None else None), ",".join(extensions)


async def test_drain_close_with_permessage_deflate(ws_backend: WebSocketsBackend) -> None:
    """Peers that negotiated permessage-deflate (RSV1 on their messages) get an uncompressed
    Close: a compressed control frame would be a protocol error to them."""
    backend_closes: list[int | None] = []
    port = ws_backend(closes=backend_closes, deflate=True)
    config = make_config(("/", backend_url(port)), drain_close_websockets=True, close_wait_s=3.0)
    opened = trio.Event()
    with capture_proxy_records() as records:
        async with trio.open_nursery() as nursery, _draining_proxy(config) as (address, shutdown):
            result: list[tuple[int | None, str | None]] = []

            async def run_client() -> None:
                url = f"ws://127.0.0.1:{address.port}/"
                result.append(await trio.to_thread.run_sync(_deflate_client, url, opened))

            nursery.start_soon(run_client)
            with trio.fail_after(10):
                await opened.wait()
            shutdown.set()
        line = await _tunnel_line(records)
    assert result == [(1001, "PerMessageDeflate")]
    assert await _backend_closes(backend_closes, 1) == [1001]
    assert (line["close_code_client"], line["close_code_backend"], line["end"]) == (
        1001,
        1001,
        "drained",
    )
