"""Through both front ends: a client's forwarding claims never reach the backend.

The backend records the request head it received; with the route's ``x_forwarded`` on (the
default) it must hold the proxy's X-Forwarded-For/-Proto/-Host only, whatever the client
sent, in whatever spelling, for an ordinary request and for a WebSocket upgrade.
"""

from __future__ import annotations

import hpack
import pytest
import trio
import trio.testing

from tests.helpers.backends import HeadRecorder
from tests.helpers.frames import PREFACE, frame
from tests.helpers.memory import MemoryNet, open_memory_client
from tests.helpers.raw_h2 import GOOD, read_frames_until
from tests.helpers.setup import make_config
from tests.unit.test_forwarding_fields import SPOOFED

HEADERS, SETTINGS = 0x1, 0x4
END_STREAM, END_HEADERS = 0x1, 0x4
#: What the client claims, in field names h11 and HPACK both carry (WSGI-style underscores
#: included): each must be gone at the backend.
CLAIMS = [(name, b"10.6.6.6") for name in SPOOFED]


class RecordingBackend(HeadRecorder):
    def forwarding(self) -> list[tuple[bytes, bytes]]:
        (request,) = self.heads
        names = {name for name, _ in CLAIMS} | {b"x-forwarded-for", b"x-forwarded-proto"}
        return sorted(
            (name.lower(), value)
            for name, value in request.headers
            if name.lower() in names or name.lower().replace(b"_", b"-") in names
        )


EXPECTED = [
    (b"x-forwarded-for", b"127.0.0.1"),
    (b"x-forwarded-host", b"proxy.test"),
    (b"x-forwarded-proto", b"http"),
]


@pytest.mark.parametrize("websocket", [False, True], ids=["request", "upgrade"])
async def test_h1_claims_are_replaced(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, websocket: bool
) -> None:
    backend = RecordingBackend()
    net = MemoryNet(nursery, backend)
    client = await open_memory_client(nursery, make_config(("/", "http://127.0.0.1:9")), net)
    upgrade = (
        b"upgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-version: 13\r\n"
        b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        if websocket
        else b""
    )
    claims = b"".join(name + b": " + value + b"\r\n" for name, value in CLAIMS)
    await client.send_all(b"GET / HTTP/1.1\r\nhost: proxy.test\r\n" + upgrade + claims + b"\r\n")
    with trio.fail_after(10):
        while not backend.heads:
            await client.receive_some(65536)
    assert backend.forwarding() == EXPECTED


@pytest.mark.parametrize("websocket", [False, True], ids=["request", "extended-connect"])
async def test_h2_claims_are_replaced(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, websocket: bool
) -> None:
    backend = RecordingBackend()
    net = MemoryNet(nursery, backend)
    client = await open_memory_client(nursery, make_config(("/", "http://127.0.0.1:9")), net)
    head = (
        GOOD
        if websocket
        else [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":path", b"/"),
            (b":authority", b"proxy.test"),
        ]
    )
    block = hpack.Encoder().encode([*head, *CLAIMS])
    flags = END_HEADERS if websocket else END_HEADERS | END_STREAM
    await client.send_all(PREFACE + frame(SETTINGS, 0, 0, b"") + frame(HEADERS, flags, 1, block))
    with trio.fail_after(10):
        await read_frames_until(client, {HEADERS})
    # The proxy speaks for its own listener (cleartext here), whatever :scheme said.
    assert backend.forwarding() == EXPECTED
