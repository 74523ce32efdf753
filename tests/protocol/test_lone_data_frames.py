"""A read that is one DATA frame takes a path of its own (``StreamRegistry.on_lone_data``):
a tunnel's message goes straight to the tunnel, and every other stream's DATA gets the same
checks as DATA that came with other frames. Raw frames in memory, on a virtual clock; each
frame below is read alone (the reader has taken everything before it is sent)."""

from __future__ import annotations

import hpack
import trio
import trio.testing

from tests.helpers.frames import frame
from tests.helpers.memory import MemoryNet, echo_backend
from tests.helpers.raw_h2 import GOOD, raw_client, read_frames_until

DATA, HEADERS, RST_STREAM, WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x8
END_STREAM, END_HEADERS = 0x1, 0x4
PROTOCOL_ERROR = 0x1
ANSWER_WITHIN_S = 5.0


async def send_alone(client: trio.abc.SendStream, data: bytes) -> None:
    """``data`` as one read of the proxy's: sent once everything sent before was taken."""
    await trio.testing.wait_all_tasks_blocked()
    await client.send_all(data)


async def reset_code_of(client: trio.abc.ReceiveStream, stream_id: int) -> int:
    with trio.fail_after(ANSWER_WITHIN_S):
        while True:
            frames = await read_frames_until(client, {RST_STREAM})
            resets = [p for kind, _, sid, p in frames if kind == RST_STREAM and sid == stream_id]
            if resets:
                return int.from_bytes(resets[-1], "big")


async def test_a_tunnels_lone_frames_are_echoed_in_order(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    client = await raw_client(nursery, MemoryNet(nursery, echo_backend))
    await client.send_all(frame(HEADERS, END_HEADERS, 1, hpack.Encoder().encode(GOOD)))
    with trio.fail_after(ANSWER_WITHIN_S):
        await read_frames_until(client, {HEADERS})  # its 200
    sent = [bytes([n]) * (n + 1) for n in range(20)]
    for payload in sent:
        await send_alone(client, frame(DATA, 0, 1, payload))
    assert await data_on(client, 1, sum(map(len, sent))) == b"".join(sent)


async def data_on(client: trio.abc.ReceiveStream, stream_id: int, size: int) -> bytes:
    """The payload of the DATA frames on ``stream_id``, until ``size`` bytes came."""
    buffer, received = b"", b""
    with trio.fail_after(ANSWER_WITHIN_S):
        while len(received) < size:
            buffer += await client.receive_some()
            while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
                end = 9 + int.from_bytes(buffer[:3], "big")
                if buffer[3] == DATA and int.from_bytes(buffer[5:9], "big") == stream_id:
                    received += buffer[9:end]
                buffer = buffer[end:]
    return received


async def test_lone_data_on_a_tunnel_before_its_200_is_a_stream_error(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def never_answers(stream: trio.abc.HalfCloseableStream) -> None:
        await trio.sleep_forever()

    client = await raw_client(nursery, MemoryNet(nursery, never_answers))
    await client.send_all(frame(HEADERS, END_HEADERS, 1, hpack.Encoder().encode(GOOD)))
    await send_alone(client, frame(DATA, 0, 1, b"too early"))
    assert await reset_code_of(client, 1) == PROTOCOL_ERROR


async def test_a_lone_body_frame_over_its_content_length_is_a_stream_error(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def never_answers(stream: trio.abc.HalfCloseableStream) -> None:
        await trio.sleep_forever()

    client = await raw_client(nursery, MemoryNet(nursery, never_answers))
    post = [
        (b":method", b"POST"),
        (b":scheme", b"https"),
        (b":path", b"/upload"),
        (b":authority", b"proxy.test"),
        (b"content-length", b"4"),
    ]
    await client.send_all(frame(HEADERS, END_HEADERS, 1, hpack.Encoder().encode(post)))
    await send_alone(client, frame(DATA, 0, 1, b"more than four"))
    assert await reset_code_of(client, 1) == PROTOCOL_ERROR
