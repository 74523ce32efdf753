"""Hostile HTTP/2 clients, byte for byte: what reaches the backend, what the client gets.

Header blocks are HPACK-encoded by hand, so no client library's own checks stand between
the attack and the proxy. A backend that records every byte proves that nothing malformed
(and no smuggled second request) ever reached it.
"""

from __future__ import annotations

import struct

import hpack
import pytest
import trio
import trio.testing

from h2ws_proxy.relay.context import ServerStats
from tests.helpers.backends import BackendConnection
from tests.helpers.frames import frame
from tests.helpers.h2_client import open_h2_client
from tests.helpers.memory import MemoryNet, echo_backend, open_memory_client
from tests.helpers.raw_h2 import GOOD, Header, raw_client, read_frames_until
from tests.helpers.setup import make_config

pytestmark = pytest.mark.usefixtures("both_backend_kinds")

HEADERS, CONTINUATION, SETTINGS, GOAWAY, RST_STREAM = 0x1, 0x9, 0x4, 0x7, 0x3
END_STREAM, END_HEADERS = 0x1, 0x4
PROTOCOL_ERROR = 0x1


def replace(name: bytes, value: bytes | None) -> list[Header]:
    """GOOD with ``name`` set to ``value`` (None removes it)."""
    headers = [(n, v) for n, v in GOOD if n != name]
    if value is not None:
        index = next((i for i, (n, _) in enumerate(GOOD) if n == name), len(GOOD))
        headers.insert(index, (name, value))
    return headers


MALFORMED: dict[str, list[Header]] = {
    "cr-in-value": [*GOOD, (b"x-a", b"a\rb")],
    "lf-in-value": [*GOOD, (b"x-a", b"a\nGET /smuggled HTTP/1.1")],
    "nul-in-value": [*GOOD, (b"x-a", b"a\x00b")],
    "space-in-name": [*GOOD, (b"x a", b"1")],
    "colon-in-name": [*GOOD, (b"x:a", b"1")],
    "upper-case-name": [*GOOD, (b"X-Upper", b"1")],
    "empty-name": [*GOOD, (b"", b"1")],
    "path-with-space": replace(b":path", b"/chat HTTP/1.1\r\nX: y"),
    "path-with-crlf": replace(b":path", b"/chat\r\nHost: evil"),
    "path-without-slash": replace(b":path", b"chat"),
    "no-authority-no-host": replace(b":authority", None),
    "host-disagrees": [*GOOD, (b"host", b"evil.test")],
    "protocol-on-get": replace(b":method", b"GET"),
    "content-length": [*GOOD, (b"content-length", b"5")],
    "connection": [*GOOD, (b"connection", b"keep-alive")],
    "upgrade": [*GOOD, (b"upgrade", b"websocket")],
    "keep-alive": [*GOOD, (b"keep-alive", b"timeout=5")],
    "transfer-encoding": [*GOOD, (b"transfer-encoding", b"chunked")],
    "te-gzip": [*GOOD, (b"te", b"gzip")],
    "duplicate-path": [*GOOD[:4], (b":path", b"/other"), *GOOD[4:]],
    "pseudo-after-regular": [*GOOD[:2], (b"x-a", b"1"), *GOOD[2:]],
    "status-in-request": [*GOOD, (b":status", b"200")],
    "unknown-pseudo": [*GOOD, (b":test", b"1")],
    "empty-path": replace(b":path", b""),
    "no-method": replace(b":method", None),
    "no-scheme": replace(b":scheme", None),
    "no-path": replace(b":path", None),
    "duplicate-method": [GOOD[0], *GOOD],
    "duplicate-scheme": [*GOOD[:3], (b":scheme", b"http"), *GOOD[3:]],
}


@pytest.mark.parametrize("ends", [False, True], ids=["open", "end_stream"])
@pytest.mark.parametrize("headers", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_request_reaches_no_backend_and_fails_its_stream(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    headers: list[Header],
    ends: bool,
) -> None:
    """RFC 9113 §8.1.1: a malformed request is a stream error, RST_STREAM(PROTOCOL_ERROR);
    the 400 that may go first must not end the stream, or no reset could follow (a GET's
    HEADERS carry END_STREAM: its client has nothing more to send)."""
    net = MemoryNet(nursery, echo_backend)
    client = await raw_client(nursery, net)
    block = hpack.Encoder().encode(headers)
    await client.send_all(frame(HEADERS, END_HEADERS | (END_STREAM if ends else 0), 1, block))
    frames = await read_frames_until(client, {RST_STREAM, GOAWAY})
    kinds = [(kind, stream_id) for kind, _, stream_id, _ in frames]
    assert (RST_STREAM, 1) in kinds, kinds  # a stream error, not a connection error
    answer = [flags for kind, flags, sid, _ in frames if sid == 1 and kind != RST_STREAM]
    assert answer  # the 400 went first
    assert not any(flags & END_STREAM for flags in answer)  # and left the stream open
    reset = next(payload for kind, _, sid, payload in frames if kind == RST_STREAM and sid == 1)
    assert int.from_bytes(reset, "big") == PROTOCOL_ERROR
    assert (GOAWAY, 0) not in kinds
    assert net.dials == 0  # nothing at all reached a backend
    # The same connection still serves a good request.
    await client.send_all(frame(HEADERS, END_HEADERS, 3, hpack.Encoder().encode(GOOD)))
    frames = await read_frames_until(client, {HEADERS})
    assert frames[-1][0] == HEADERS
    assert frames[-1][2] == 3


async def test_oversized_header_list_closes_only_that_connection(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net = MemoryNet(nursery, echo_backend)
    config = make_config(("/", "http://127.0.0.1:9"), max_header_list_bytes=4096)
    async with open_h2_client(await open_memory_client(nursery, config, net)) as neighbour:
        ws = await neighbour.websocket("/")
        attacker = await raw_client(nursery, net, max_header_list_bytes=4096)
        block = hpack.Encoder().encode([*GOOD, (b"cookie", b"c" * 70_000)])
        await attacker.send_all(frame(HEADERS, END_HEADERS, 1, block))
        frames = await read_frames_until(attacker, {GOAWAY, RST_STREAM})
        assert frames[-1][0] in (GOAWAY, RST_STREAM)
        assert net.dials == 1  # only the neighbour's tunnel
        await neighbour.send_data(ws.state, b"fine")
        await neighbour.wait_for(lambda: bytes(ws.state.data) == b"fine")


async def test_a_header_list_over_the_limit_gets_431_and_a_stream_error(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Over SETTINGS_MAX_HEADER_LIST_SIZE but within what the decoder takes: the request is
    answered 431 (RFC 9113 §10.5.1) and reset PROTOCOL_ERROR; the connection lives on."""
    net = MemoryNet(nursery, echo_backend)
    attacker = await raw_client(nursery, net, max_header_list_bytes=4096)
    # Our limit binds once the client has acknowledged our SETTINGS (RFC 9113 §6.5.3).
    await attacker.send_all(frame(SETTINGS, 0x1, 0, b""))
    block = hpack.Encoder().encode([*GOOD, (b"cookie", b"c" * 6000)])
    await attacker.send_all(frame(HEADERS, END_HEADERS, 1, block))
    frames = await read_frames_until(attacker, {RST_STREAM, GOAWAY})
    heads = [f for f in frames if f[0] == HEADERS and f[2] == 1]
    assert hpack.Decoder().decode(heads[0][3], raw=True)[0] == (b":status", b"431")
    assert frames[-1][:3] == (RST_STREAM, 0, 1)
    assert int.from_bytes(frames[-1][3], "big") == PROTOCOL_ERROR
    assert net.dials == 0
    # The same connection still serves: the next stream is judged on its own.
    await attacker.send_all(frame(HEADERS, END_HEADERS, 3, hpack.Encoder().encode(GOOD)))
    frames = await read_frames_until(attacker, {HEADERS})
    assert frames[-1][2] == 3


async def test_hpack_bomb_is_refused_without_decoding_it_all(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net = MemoryNet(nursery, echo_backend)
    attacker = await raw_client(nursery, net)
    encoder = hpack.Encoder()
    # One 4 KiB entry into the dynamic table, then thousands of one-byte references to it:
    # a small block that decodes to megabytes.
    first = encoder.encode([*GOOD, (b"x-bomb", b"b" * 4000)])
    reference = encoder.encode([(b"x-bomb", b"b" * 4000)])
    assert len(reference) <= 2
    await attacker.send_all(frame(HEADERS, END_HEADERS | END_STREAM, 1, first))
    await attacker.send_all(frame(HEADERS, END_HEADERS, 3, encoder.encode(GOOD) + reference * 5000))
    frames = await read_frames_until(attacker, {GOAWAY})
    assert frames[-1][0] == GOAWAY
    assert net.dials <= 1


async def test_continuation_flood_is_a_connection_error(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net = MemoryNet(nursery, echo_backend)
    attacker = await raw_client(nursery, net)
    block = hpack.Encoder().encode(GOOD)
    await attacker.send_all(frame(HEADERS, 0, 1, block[:3]))  # no END_HEADERS
    flood = frame(CONTINUATION, 0, 1, b"") * 10_000  # empty CONTINUATIONs, forever
    with trio.move_on_after(10):
        await attacker.send_all(flood)
    frames = await read_frames_until(attacker, {GOAWAY})
    assert frames[-1][0] == GOAWAY
    assert net.dials == 0


async def test_data_dribble_with_one_byte_windows_stays_bounded(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    pushed = 0

    async def pusher(stream: trio.abc.HalfCloseableStream) -> None:
        nonlocal pushed
        conn = BackendConnection(stream)
        request = await conn.read_upgrade()
        await conn.accept(request)
        if request.target == b"/echo":
            await conn.echo_until_eof()
            return
        while pushed < 64 * 1024 * 1024:  # bounded; the proxy must hold it back long before
            await stream.send_all(b"p" * 65536)
            pushed += 65536

    net = MemoryNet(nursery, pusher, lockstep=True)
    config = make_config(("/", "http://127.0.0.1:9"))
    # The client's windows are one byte, and it returns credit one byte at a time.
    async with open_h2_client(
        await open_memory_client(nursery, config, net), settings={0x4: 1}
    ) as client:
        dribble = await client.websocket("/push", auto_ack=False)
        for _ in range(200):
            await client.wait_for(lambda: dribble.state.unacked > 0)
            await client.ack(dribble.state)
        assert len(dribble.state.data) >= 200
        echo = await client.websocket("/echo")
        await client.send_data(echo.state, b"x")
        await client.wait_for(lambda: bytes(echo.state.data) == b"x")
    # What the backend got to push: what the client took plus one read held by the proxy.
    assert pushed <= 3 * 65536


async def test_rapid_reset_in_one_write_stops_at_the_budget(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net = MemoryNet(nursery, echo_backend, connect_delay_s=1.0)
    stats = ServerStats()
    attacker = await raw_client(nursery, net, stats, max_stream_resets=20)
    encoder = hpack.Encoder()
    burst = b"".join(
        frame(HEADERS, END_HEADERS, stream_id, encoder.encode(GOOD))
        + frame(RST_STREAM, 0, stream_id, (0x8).to_bytes(4, "big"))
        for stream_id in range(1, 1001, 2)
    )
    await attacker.send_all(burst)  # 500 streams opened and cancelled, in one read
    frames = await read_frames_until(attacker, {GOAWAY})
    assert frames[-1][0] == GOAWAY
    assert int.from_bytes(frames[-1][3][4:8], "big") == 0xB  # ENHANCE_YOUR_CALM
    # Nothing past the budget was acted on: no more dials than streams within it.
    assert net.dials <= 21
    assert stats.counters.abuse == {"rapid_reset": 1}  # h2ws_abuse_total{kind="rapid_reset"}


async def test_flood_of_empty_header_blocks_spends_the_reset_budget(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net = MemoryNet(nursery, echo_backend)
    attacker = await raw_client(nursery, net, max_stream_resets=20)
    # HEADERS with an empty block: each is malformed (no pseudo-headers) and cheap to send.
    flood = b"".join(frame(HEADERS, END_HEADERS, sid, b"") for sid in range(1, 601, 2))
    await attacker.send_all(flood)
    frames = await read_frames_until(attacker, {GOAWAY})
    assert frames[-1][0] == GOAWAY
    assert int.from_bytes(frames[-1][3][4:8], "big") == 0xB  # ENHANCE_YOUR_CALM
    resets = [f for f in frames if f[0] == RST_STREAM]
    assert len(resets) <= 21  # nothing past the budget was answered
    assert net.dials == 0


async def test_a_body_over_its_length_is_one_stream_error_however_many_frames_follow(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Later DATA frames of the same read find the stream already reset: their credit goes
    back, but they are not each a new violation spending the connection's reset budget."""
    caplog.set_level("INFO", logger="h2ws_proxy")
    net = MemoryNet(nursery, echo_backend)
    client = await raw_client(nursery, net, max_stream_resets=3)
    post = [
        (b":method", b"POST"),
        (b":scheme", b"https"),
        (b":path", b"/upload"),
        (b":authority", b"proxy.test"),
        (b"content-length", b"1"),
    ]
    data_frames = b"".join(frame(0x0, 0, 1, b"xx") for _ in range(8))
    await client.send_all(
        frame(HEADERS, END_HEADERS, 1, hpack.Encoder().encode(post)) + data_frames
    )
    frames = await read_frames_until(client, {RST_STREAM, GOAWAY})
    assert (RST_STREAM, 0, 1, struct.pack(">I", PROTOCOL_ERROR)) in frames
    await trio.testing.wait_all_tasks_blocked()
    assert caplog.text.count("h2.stream_error") == 1
    assert "h2.rapid_reset" not in caplog.text  # 8 frames did not spend a budget of 3
