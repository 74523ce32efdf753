"""Every error an HTTP/2 client can cause gets the answer RFC 9113 and RFC 7541 require.

Driven with raw frames in memory, on a virtual clock: a stream error is an RST_STREAM with
its code and leaves the connection's other streams working (a tunnel on the same connection
keeps echoing); a connection error is a GOAWAY with its code and then the connection's end;
nothing is ever left without an answer (the reads below are bounded on the virtual clock,
well inside every timer of the proxy's, so silence fails them).
"""

from __future__ import annotations

import struct

import hpack
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.helpers.frames import PREFACE, frame
from tests.helpers.memory import MemoryNet, echo_backend, open_memory_client
from tests.helpers.raw_h2 import GOOD, raw_client, read_frames_until
from tests.helpers.setup import make_config

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
PROTOCOL_ERROR, FRAME_SIZE_ERROR, COMPRESSION_ERROR = 0x1, 0x6, 0x9
#: Virtual seconds within which every answer must come: below the proxy's own timers.
ANSWER_WITHIN_S = 5.0


async def frames_until_end(stream: trio.abc.ReceiveStream) -> list[tuple[int, int, int, bytes]]:
    """Every frame until the proxy ends the connection (EOF)."""
    with trio.fail_after(ANSWER_WITHIN_S):
        return await read_frames_until(stream, set())


async def open_tunnel(client: trio.abc.SendStream, stream_id: int) -> None:
    await client.send_all(frame(HEADERS, END_HEADERS, stream_id, hpack.Encoder().encode(GOOD)))


async def echoes(client: trio.abc.HalfCloseableStream, stream_id: int, payload: bytes) -> None:
    """``payload`` sent on tunnel ``stream_id`` comes back from the echoing backend."""
    await client.send_all(frame(DATA, 0, stream_id, payload))
    received = b""
    with trio.fail_after(ANSWER_WITHIN_S):
        while received != payload:
            frames = await read_frames_until(client, {DATA})
            received += b"".join(
                p for kind, _, sid, p in frames if kind == DATA and sid == stream_id
            )


async def test_a_malformed_request_fails_only_its_stream_while_a_tunnel_echoes(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net = MemoryNet(nursery, echo_backend)
    client = await raw_client(nursery, net)
    await open_tunnel(client, 1)
    with trio.fail_after(ANSWER_WITHIN_S):
        await read_frames_until(client, {HEADERS})  # its 200
    await echoes(client, 1, b"before")
    malformed = hpack.Encoder().encode([*GOOD[:2], (b"X-Upper", b"1"), *GOOD[2:]])
    await client.send_all(frame(HEADERS, END_HEADERS | END_STREAM, 3, malformed))
    with trio.fail_after(ANSWER_WITHIN_S):
        frames = await read_frames_until(client, {RST_STREAM})
    on_3 = [(kind, flags, payload) for kind, flags, sid, payload in frames if sid == 3]
    assert [kind for kind, _, _ in on_3] == [HEADERS, DATA, RST_STREAM]  # 400, reason, reset
    assert not any(flags & END_STREAM for _, flags, _ in on_3)
    assert int.from_bytes(on_3[-1][2], "big") == PROTOCOL_ERROR
    await echoes(client, 1, b"after")  # the tunnel never noticed
    assert net.dials == 1


async def test_malformed_trailers_reset_their_stream_while_a_tunnel_echoes(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """RFC 9113 §8.1: trailers carry no pseudo-header; the stream is malformed (a stream
    error), the connection and its other tunnel carry on."""
    net = MemoryNet(nursery, echo_backend)
    client = await raw_client(nursery, net)
    for stream_id in (1, 3):
        await open_tunnel(client, stream_id)
        with trio.fail_after(ANSWER_WITHIN_S):
            await read_frames_until(client, {HEADERS})  # its 200
    trailers = hpack.Encoder().encode([(b":path", b"/late")])
    await client.send_all(frame(HEADERS, END_HEADERS | END_STREAM, 3, trailers))
    with trio.fail_after(ANSWER_WITHIN_S):
        frames = await read_frames_until(client, {RST_STREAM, GOAWAY})
    assert frames[-1][:3] == (RST_STREAM, 0, 3)
    assert int.from_bytes(frames[-1][3], "big") == PROTOCOL_ERROR
    await echoes(client, 1, b"still here")


#: RFC 7541 decoding errors, each a connection error COMPRESSION_ERROR (RFC 9113 §4.3).
BAD_BLOCKS = {
    "index-0": b"\x80",  # §6.1: index 0 is not used
    "index-past-the-table": b"\xff\x7f",  # 127 + 127: beyond static and (empty) dynamic
    "literal-with-an-invalid-name-index": b"\x7f\x7f" + b"\x01a",  # §6.2: name index 190
    "huffman-padding-not-all-ones": b"\x00\x81\x00\x81\x00",  # §5.2: '0' then 000 padding
    "huffman-padding-over-7-bits": b"\x00\x82\x1f\xff\x81\x1f",  # 8+ bits of ones
    "size-update-after-a-field": b"\x82\x20",  # §4.2: only at a block's start
    "size-update-above-our-setting": b"\x3f\xe2\x1f",  # 4097 > SETTINGS_HEADER_TABLE_SIZE
}


@pytest.mark.parametrize("block", BAD_BLOCKS.values(), ids=BAD_BLOCKS.keys())
async def test_an_hpack_error_is_a_compression_error_and_the_connection_ends(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, block: bytes
) -> None:
    net = MemoryNet(nursery, echo_backend)
    client = await raw_client(nursery, net)
    await client.send_all(frame(HEADERS, END_HEADERS | END_STREAM, 1, block))
    frames = await frames_until_end(client)
    goaways = [payload for kind, _, _, payload in frames if kind == GOAWAY]
    assert len(goaways) == 1, frames
    assert struct.unpack(">LL", goaways[0][:8])[1] == COMPRESSION_ERROR
    assert frames[-1][0] == GOAWAY  # and then the end
    assert net.dials == 0


async def test_a_settings_ack_with_a_payload_is_a_frame_size_error(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net = MemoryNet(nursery, echo_backend)
    client = await raw_client(nursery, net)
    await client.send_all(frame(SETTINGS, ACK, 0, struct.pack(">HL", 0x4, 1)))  # RFC 9113 §6.5
    frames = await frames_until_end(client)
    assert frames[-1][0] == GOAWAY
    assert struct.unpack(">LL", frames[-1][3][:8])[1] == FRAME_SIZE_ERROR


async def test_an_invalid_ping_length_is_a_connection_error_and_the_connection_ends(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    net = MemoryNet(nursery, echo_backend)
    client = await raw_client(nursery, net)
    await client.send_all(frame(PING, 0, 0, b"seven!!"))  # RFC 9113 §6.7: 8 bytes
    frames = await frames_until_end(client)
    assert frames[-1][0] == GOAWAY
    assert struct.unpack(">LL", frames[-1][3][:8])[1] == FRAME_SIZE_ERROR


async def test_after_a_clients_goaway_open_tunnels_finish_and_ping_is_answered(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """RFC 9113 §6.8: a GOAWAY's sender may still complete the streams it opened; until the
    last one ends the connection stays fully alive (PING answered, tunnel echoing)."""
    net = MemoryNet(nursery, echo_backend)
    client = await raw_client(nursery, net)
    await open_tunnel(client, 1)
    with trio.fail_after(ANSWER_WITHIN_S):
        await read_frames_until(client, {HEADERS})
    await client.send_all(frame(GOAWAY, 0, 0, struct.pack(">LL", 1, 0)))
    await client.send_all(frame(PING, 0, 0, b"still up"))
    with trio.fail_after(ANSWER_WITHIN_S):
        frames = await read_frames_until(client, {PING})
    assert frames[-1] == (PING, ACK, 0, b"still up")
    await echoes(client, 1, b"finishing")
    await client.send_all(frame(DATA, END_STREAM, 1, b""))  # the client ends its side ...
    frames = await frames_until_end(client)  # ... the backend's EOF ends ours, then the end
    assert any(kind == DATA and flags & END_STREAM and sid == 1 for kind, flags, sid, _ in frames)
    assert not any(kind in (RST_STREAM, GOAWAY) for kind, _, _, _ in frames)  # a clean end


def _mutated(block: bytes, position: int, value: int) -> bytes:
    position %= len(block)
    return block[:position] + bytes([value]) + block[position + 1 :]


VALID_BLOCK = hpack.Encoder().encode(GOOD)
hpack_blocks = st.one_of(
    st.binary(min_size=1, max_size=40),
    st.builds(_mutated, st.just(VALID_BLOCK), st.integers(0, 1000), st.integers(0, 255)),
    st.builds(bytes.__add__, st.just(VALID_BLOCK), st.binary(min_size=1, max_size=8)),
)


@settings(
    max_examples=60,
    deadline=None,
    # One virtual clock for all examples: each reads only within its own bound on it.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(block=hpack_blocks)
@example(block=b"\x80")
@example(block=VALID_BLOCK)
async def test_any_header_block_gets_an_answer_never_silence(
    autojump_clock: trio.testing.MockClock, block: bytes
) -> None:
    """A request decoded (answered with a head), a stream error (RST_STREAM) or a
    connection error (GOAWAY, then the connection ends): nothing else, and never nothing."""
    async with trio.open_nursery() as nursery:
        net = MemoryNet(nursery, echo_backend)
        client = await open_memory_client(nursery, make_config(("/", "http://127.0.0.1:9")), net)
        await client.send_all(PREFACE + frame(SETTINGS, 0, 0, b""))
        await client.send_all(frame(HEADERS, END_HEADERS, 1, block))
        with trio.fail_after(ANSWER_WITHIN_S):
            frames = await read_frames_until(client, {HEADERS, RST_STREAM, GOAWAY})
        last = frames[-1] if frames else None
        assert last is not None, "no answer at all"
        if last[0] == GOAWAY:
            code = struct.unpack(">LL", last[3][:8])[1]
            assert code in (PROTOCOL_ERROR, COMPRESSION_ERROR, FRAME_SIZE_ERROR, 0xB), code
            assert await frames_until_end(client) == []  # then the connection ends
        else:
            assert last[2] == 1  # an answer or a reset on the request's own stream
        nursery.cancel_scope.cancel()
