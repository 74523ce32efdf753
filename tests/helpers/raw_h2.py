"""A raw HTTP/2 client for tests that drive the proxy with hand-built frames, in memory.

No client library's own checks stand between what a test sends and the proxy: the header
blocks are HPACK-encoded by hand, the frames built byte by byte (:mod:`.frames`), and
what comes back is read frame by frame.
"""

from __future__ import annotations

import trio

from h2ws_proxy.relay.context import ServerStats
from tests.helpers.frames import PREFACE, frame
from tests.helpers.memory import MemoryNet, open_memory_client
from tests.helpers.setup import make_config

HEADERS, SETTINGS = 0x1, 0x4

Header = tuple[bytes, bytes]
GOOD: list[Header] = [
    (b":method", b"CONNECT"),
    (b":protocol", b"websocket"),
    (b":scheme", b"https"),
    (b":path", b"/chat"),
    (b":authority", b"proxy.test"),
    (b"sec-websocket-version", b"13"),
]


async def raw_client(
    nursery: trio.Nursery, net: MemoryNet, stats: ServerStats | None = None, **limits: float
) -> trio.abc.HalfCloseableStream:
    stream = await open_memory_client(
        nursery, make_config(("/", "http://127.0.0.1:9"), **limits), net, stats=stats
    )
    await stream.send_all(PREFACE + frame(SETTINGS, 0, 0, b""))
    return stream


async def read_frames_until(
    stream: trio.abc.ReceiveStream, wanted: set[int]
) -> list[tuple[int, int, int, bytes]]:
    """Read frames (type, flags, stream, payload) until one of type ``wanted`` or EOF."""
    buffer, frames = b"", []
    while True:
        while len(buffer) >= 9:
            length = int.from_bytes(buffer[:3], "big")
            if len(buffer) < 9 + length:
                break
            kind, flags, stream_id = buffer[3], buffer[4], int.from_bytes(buffer[5:9], "big")
            frames.append((kind, flags, stream_id, buffer[9 : 9 + length]))
            buffer = buffer[9 + length :]
            if kind in wanted:
                return frames
        data = await stream.receive_some()
        if not data:
            return frames
        buffer += data
