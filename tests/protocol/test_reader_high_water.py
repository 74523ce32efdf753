"""The frontend's read loop stops reading while its output (PING ACKs a client does not
read) is above READER_HIGH_WATER: a client that floods and never reads holds about that
much of the proxy's memory, not what it sends. (From the review of the branch.)"""

from __future__ import annotations

import trio
import trio.testing

from h2ws_proxy.http2.client_writer import READER_HIGH_WATER
from tests.helpers.frames import frame
from tests.helpers.memory import MemoryNet, echo_backend, open_memory_client
from tests.helpers.setup import make_config

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS, PING = 0x4, 0x6


async def test_a_ping_flood_that_is_never_read_stops_the_reader(nursery: trio.Nursery) -> None:
    net = MemoryNet(nursery, echo_backend)
    client = await open_memory_client(nursery, make_config(), net, lockstep=True)
    ping = frame(PING, 0, 0, b"12345678")
    chunk = ping * 2048  # 34 KiB per write
    cap = 4 * READER_HIGH_WATER  # more than the bound allows the reader to take
    sent = 0

    async def flood() -> None:
        nonlocal sent
        await client.send_all(PREFACE + frame(SETTINGS, 0, 0, b""))
        while sent < cap:
            await client.send_all(chunk)
            sent += len(chunk)

    nursery.start_soon(flood)
    await trio.testing.wait_all_tasks_blocked()
    # The proxy took about READER_HIGH_WATER of PINGs (their ACKs queued), then stopped.
    assert READER_HIGH_WATER // 2 < sent < READER_HIGH_WATER + 256 * 1024, sent
    nursery.cancel_scope.cancel()
