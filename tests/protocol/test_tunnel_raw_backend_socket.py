"""A polled tunnel calls its backend socket's own ``send`` and ``recv`` once per message
(``PollableSocket.raw_socket``), without the stream's checks and error mapping around
them: the reader's forwarder (``Relay.forward_up``) must take a full socket
(``BlockingIOError``) and a broken one as "nothing sent", leaving the rest to the tunnel's
pump, and the connection's other tunnels must not notice. Socketpair backends, raw frames.
"""

from __future__ import annotations

import logging
import socket

import hpack
import pytest
import trio
import trio.testing

from tests.helpers.backends import BackendConnection
from tests.helpers.frames import frame
from tests.helpers.memory import MemoryNet
from tests.helpers.raw_h2 import GOOD, raw_client, read_frames_until

DATA, HEADERS, RST_STREAM, PING = 0x0, 0x1, 0x3, 0x6
END_HEADERS = 0x4
#: Far past what a socketpair's buffers hold, well within the windows below.
TOTAL = 64 * 16000
WINDOW = 1 << 22


def ws_frame_header(length: int) -> bytes:
    """A masked binary WebSocket frame's head (zero mask) for one frame of ``length`` bytes."""
    return b"\x82\xff" + length.to_bytes(8, "big") + b"\x00\x00\x00\x00"


def data_frames(stream_id: int, data: bytes, size: int = 16000) -> bytes:
    return b"".join(
        frame(DATA, 0, stream_id, data[i : i + size]) for i in range(0, len(data), size)
    )


async def open_tunnel(client: trio.abc.Stream, stream_id: int, encoder: hpack.Encoder) -> None:
    await client.send_all(frame(HEADERS, END_HEADERS, stream_id, encoder.encode(GOOD)))
    with trio.fail_after(5):
        await read_frames_until(client, {HEADERS})  # its 200


async def test_a_backend_that_stops_reading_gets_every_byte_later_in_order(
    nursery: trio.Nursery,
) -> None:
    """The client's bytes fill the backend's socket while it does not read: the forwarder's
    send finds it full, and the pump sends the rest once the backend reads again."""
    release = trio.Event()
    received = bytearray()
    done = trio.Event()
    body = bytes(i % 251 for i in range(TOTAL))
    wanted = ws_frame_header(TOTAL) + body

    async def backend(stream: trio.abc.HalfCloseableStream) -> None:
        conn = BackendConnection(stream)
        await conn.accept(await conn.read_upgrade())
        await release.wait()
        while len(received) < len(wanted):
            data = await stream.receive_some(65536)
            if not data:
                break
            received.extend(data)
        done.set()
        await trio.sleep_forever()

    net = MemoryNet(nursery, backend, backend_sockets=True)
    client = await raw_client(nursery, net, stream_window_bytes=WINDOW)
    await open_tunnel(client, 1, hpack.Encoder())
    await client.send_all(data_frames(1, wanted))
    await trio.testing.wait_all_tasks_blocked()
    release.set()
    with trio.fail_after(10):
        await done.wait()
    assert received == wanted


async def test_a_backend_that_stopped_taking_bytes_leaves_the_connection_serving(
    nursery: trio.Nursery,
) -> None:
    """A backend that shut its reading side: the forwarder's sends there fail with a broken
    pipe, which is the tunnel's matter (its pump meets it), not the connection reader's:
    the connection's other tunnel echoes on, read after read."""
    backends: list[trio.SocketStream] = []

    async def backend(stream: trio.abc.HalfCloseableStream) -> None:
        conn = BackendConnection(stream)
        await conn.accept(await conn.read_upgrade())
        assert isinstance(stream, trio.SocketStream)
        backends.append(stream)
        if len(backends) == 1:
            stream.socket.shutdown(socket.SHUT_RD)
            await trio.sleep_forever()
        while data := await stream.receive_some(65536):
            await stream.send_all(data)

    net = MemoryNet(nursery, backend, backend_sockets=True)
    client = await raw_client(nursery, net, stream_window_bytes=WINDOW)
    encoder = hpack.Encoder()
    await open_tunnel(client, 1, encoder)
    await trio.testing.wait_all_tasks_blocked()
    await open_tunnel(client, 3, encoder)
    await trio.testing.wait_all_tasks_blocked()
    message = b"\x82\x82\x00\x00\x00\x00hi"
    echoed = b""
    with trio.fail_after(10):
        for _ in range(5):
            # Stream 1's frame first in each read: its send fails before stream 3's.
            await client.send_all(frame(DATA, 0, 1, message) + frame(DATA, 0, 3, message))
            await client.send_all(frame(PING, 0, 0, b"12345678"))
            frames = await read_frames_until(client, {PING})
            assert not [f for f in frames if f[0] == DATA and f[2] == 1]
            echoed += b"".join(p for k, _, sid, p in frames if k == DATA and sid == 3)
            await trio.testing.wait_all_tasks_blocked()
    assert echoed == message * 5


async def test_a_backend_reset_fails_its_tunnel_without_a_handler_error(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """A backend that closes with the client's bytes unread: the proxy's next ``recv`` on
    it fails (ECONNRESET). That is the tunnel's backend failure (``on_readable``'s own
    ``except OSError``), not a bug the poller logs as ``poller.handler_failed``."""
    caplog.set_level(logging.DEBUG)
    closed = trio.Event()

    async def backend(stream: trio.abc.HalfCloseableStream) -> None:
        conn = BackendConnection(stream)
        await conn.accept(await conn.read_upgrade())
        assert isinstance(stream, trio.SocketStream)
        await trio.sleep(0.2)  # the client's message is queued here, unread
        stream.socket.close()
        closed.set()
        await trio.sleep_forever()

    net = MemoryNet(nursery, backend, backend_sockets=True)
    client = await raw_client(nursery, net, stream_window_bytes=WINDOW)
    await open_tunnel(client, 1, hpack.Encoder())
    await client.send_all(frame(DATA, 0, 1, b"\x82\x82\x00\x00\x00\x00hi"))
    with trio.fail_after(10):
        await closed.wait()
        frames = await read_frames_until(client, {RST_STREAM})
    assert frames[-1][2] == 1
    assert "poller.handler_failed" not in caplog.text
