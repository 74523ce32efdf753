"""A polled tunnel's backend is read only as fast as the client's connection takes the
output, whatever the windows allow (``PolledDownward`` asks the connection itself whether
it is backlogged, once per chunk). Socketpair backend, a client in lockstep (its end holds
no buffer: the proxy's writes wait until it reads), a virtual clock.
"""

from __future__ import annotations

import struct

import hpack
import trio
import trio.testing

from tests.helpers.backends import BackendConnection
from tests.helpers.frames import PREFACE, frame
from tests.helpers.memory import MemoryNet, open_memory_client
from tests.helpers.raw_h2 import GOOD
from tests.helpers.setup import make_config

DATA, HEADERS, SETTINGS, WINDOW_UPDATE = 0x0, 0x1, 0x4, 0x8
END_HEADERS = 0x4
INITIAL_WINDOW_SIZE = 0x4


async def test_a_client_that_stops_reading_stops_the_backends_reads(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A polled tunnel reads its backend only as fast as the client's connection takes the
    output (``PolledDownward`` asks the connection itself whether it is backlogged): with
    windows far larger than the backend's bytes, a client that stops reading stops the
    backend's reads within the producers' bound, and once it reads again every byte comes,
    in order."""
    total, chunk = 8 * 1024 * 1024, 65536
    written: list[int] = [0]

    async def flood(stream: trio.abc.HalfCloseableStream) -> None:
        conn = BackendConnection(stream)
        await conn.accept(await conn.read_upgrade())
        for index in range(total // chunk):
            await stream.send_all(bytes([index % 251]) * chunk)
            written[0] += chunk
        while await conn.receive():
            pass

    net = MemoryNet(nursery, flood, backend_sockets=True)
    config = make_config(("/", "http://127.0.0.1:9"))
    client = await open_memory_client(nursery, config, net, lockstep=True)
    big = 1 << 30
    settings = frame(SETTINGS, 0, 0, struct.pack(">HL", INITIAL_WINDOW_SIZE, big))
    await client.send_all(PREFACE + settings + frame(WINDOW_UPDATE, 0, 0, struct.pack(">L", big)))
    await client.send_all(frame(HEADERS, END_HEADERS, 1, hpack.Encoder().encode(GOOD)))
    buffer, payload = b"", b""
    while not payload:  # up to the 200 and the first DATA, then no more reading
        buffer += await client.receive_some(9)
        while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
            end = 9 + int.from_bytes(buffer[:3], "big")
            if buffer[3] == DATA:
                payload += buffer[9:end]
            buffer = buffer[end:]
    await trio.testing.wait_all_tasks_blocked()
    # The connection's output bound and a chunk, the writer's send in flight, and what
    # the socketpair's buffers hold: far below what the windows allowed.
    assert written[0] <= 4 * 1024 * 1024
    while len(payload) < total:
        buffer += await client.receive_some()
        while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
            end = 9 + int.from_bytes(buffer[:3], "big")
            if buffer[3] == DATA:
                payload += buffer[9:end]
            buffer = buffer[end:]
    assert payload == b"".join(bytes([index % 251]) * chunk for index in range(total // chunk))
