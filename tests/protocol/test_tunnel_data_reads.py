"""The DATA frames that open a read take a path of their own (``receive_data_frames``
with ``StreamRegistry.fed_to_open_tunnel``): a tunnel's message goes straight to the
tunnel, and every other stream's DATA, and every frame from the first other one on, gets
the same checks as on the general path. Raw frames in memory, on a virtual clock; each
``send_alone`` below is one read of the proxy's (the reader has taken everything sent
before it)."""

from __future__ import annotations

import hpack
import trio
import trio.testing

from tests.helpers.frames import frame
from tests.helpers.memory import MemoryNet, echo_backend
from tests.helpers.raw_h2 import GOOD, raw_client, read_frames_until

DATA, HEADERS, RST_STREAM, PING, WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x6, 0x8
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
    return (await data_by_stream(client, {stream_id: size}))[stream_id]


async def data_by_stream(client: trio.abc.ReceiveStream, sizes: dict[int, int]) -> dict[int, bytes]:
    """The payload of the DATA frames on each stream of ``sizes``, until as many bytes as
    it says came on each."""
    buffer = b""
    received = {stream_id: b"" for stream_id in sizes}
    with trio.fail_after(ANSWER_WITHIN_S):
        while any(len(received[sid]) < size for sid, size in sizes.items()):
            buffer += await client.receive_some()
            while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
                end = 9 + int.from_bytes(buffer[:3], "big")
                stream_id = int.from_bytes(buffer[5:9], "big")
                if buffer[3] == DATA and stream_id in received:
                    received[stream_id] += buffer[9:end]
                buffer = buffer[end:]
    return received


async def open_tunnels(client: trio.abc.HalfCloseableStream, stream_ids: list[int]) -> None:
    encoder = hpack.Encoder()
    for stream_id in stream_ids:
        await client.send_all(frame(HEADERS, END_HEADERS, stream_id, encoder.encode(GOOD)))
        with trio.fail_after(ANSWER_WITHIN_S):
            await read_frames_until(client, {HEADERS})  # its 200


async def test_several_tunnels_frames_in_one_read_are_echoed_each_in_order(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    client = await raw_client(nursery, MemoryNet(nursery, echo_backend))
    tunnels = [1, 3, 5]
    await open_tunnels(client, tunnels)
    sent: dict[int, list[bytes]] = {sid: [] for sid in tunnels}
    for round_ in range(4):
        read = b""
        for index in range(12):
            stream_id = tunnels[(index * 7 + round_) % 3]
            payload = bytes([index, round_, stream_id]) * (index + 1)
            sent[stream_id].append(payload)
            read += frame(DATA, 0, stream_id, payload)
        await send_alone(client, read)
    expected = {sid: b"".join(payloads) for sid, payloads in sent.items()}
    got = await data_by_stream(client, {sid: len(data) for sid, data in expected.items()})
    assert got == expected


async def test_other_frames_inside_a_read_of_tunnels_frames_keep_their_place(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A WINDOW_UPDATE, a PING or an empty DATA frame among a tunnel's frames: the rest of
    the read takes the general path, and the tunnel's bytes still come back in order."""
    client = await raw_client(nursery, MemoryNet(nursery, echo_backend))
    await open_tunnels(client, [1, 3])
    others = [
        frame(WINDOW_UPDATE, 0, 0, (1000).to_bytes(4, "big")),
        frame(WINDOW_UPDATE, 0, 3, (1000).to_bytes(4, "big")),
        frame(PING, 0, 0, b"12345678"),
        frame(DATA, 0, 3, b""),
    ]
    sent = {1: b"", 3: b""}
    read = b""
    for index, other in enumerate(others * 2):
        for stream_id in (1, 3):
            payload = bytes([index + stream_id]) * 5
            sent[stream_id] += payload
            read += frame(DATA, 0, stream_id, payload)
        read += other
    await send_alone(client, read)
    assert await data_by_stream(client, {1: len(sent[1]), 3: len(sent[3])}) == sent


async def test_a_tunnel_before_its_200_among_open_tunnels_frames_is_a_stream_error(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """DATA on a tunnel still opening, between frames of an open one: that stream is reset
    as on the general path, and the open tunnel's bytes all go through."""
    opened: list[int] = []

    async def first_answers(stream: trio.abc.HalfCloseableStream) -> None:
        opened.append(1)
        if len(opened) > 1:
            await trio.sleep_forever()
        await echo_backend(stream)

    client = await raw_client(nursery, MemoryNet(nursery, first_answers))
    await open_tunnels(client, [1])
    await client.send_all(frame(HEADERS, END_HEADERS, 3, hpack.Encoder().encode(GOOD)))
    read = frame(DATA, 0, 1, b"one") + frame(DATA, 0, 3, b"too early") + frame(DATA, 0, 1, b"two")
    await send_alone(client, read)
    echoed, resets = b"", []
    with trio.fail_after(ANSWER_WITHIN_S):
        while len(echoed) < len(b"onetwo") or not resets:
            for kind, _, stream_id, payload in await read_frames_until(client, {DATA, RST_STREAM}):
                if kind == DATA and stream_id == 1:
                    echoed += payload
                elif kind == RST_STREAM:
                    resets.append((stream_id, int.from_bytes(payload, "big")))
    assert echoed == b"onetwo"
    assert resets == [(3, PROTOCOL_ERROR)]


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
