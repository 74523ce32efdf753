"""A read's DATA frames are checked against the receive windows as they stood when the
read came, fed to tunnels or not, as the general path checks them (RFC 9113
§6.9.1): credit the proxy returns while feeding a tunnel (a WINDOW_UPDATE it has only
queued, the client cannot have seen it) must not make room for later frames of that same
read. Socketpair backends, so the tunnel's bytes go to the backend from the reader
(``forward_up``) and their credit comes back within the read."""

from __future__ import annotations

import hpack
import trio
import trio.testing

from tests.helpers.frames import frame
from tests.helpers.memory import MemoryNet, echo_backend
from tests.helpers.raw_h2 import GOOD, raw_client, read_frames_until

DATA, HEADERS, RST_STREAM, PING = 0x0, 0x1, 0x3, 0x6
END_HEADERS, ACK = 0x4, 0x1
FLOW_CONTROL_ERROR = 0x3
WINDOW = 65535  # the stream window (the smallest allowed); credit batches of WINDOW // 4


def ws_frame_header(length: int) -> bytes:
    """A masked binary WebSocket frame's head, for one frame carrying all the test's bytes."""
    return b"\x82\xff" + length.to_bytes(8, "big") + b"\x00\x00\x00\x00"


async def test_frames_over_the_stream_window_in_one_read_are_a_flow_control_error(
    nursery: trio.Nursery,
) -> None:
    net = MemoryNet(nursery, echo_backend, backend_sockets=True)
    client = await raw_client(nursery, net, stream_window_bytes=WINDOW)
    await client.send_all(frame(HEADERS, END_HEADERS, 1, hpack.Encoder().encode(GOOD)))
    with trio.fail_after(5):
        await read_frames_until(client, {HEADERS})  # its 200
    # Read A: 2 x 16000 bytes, consumed by the backend (credit acknowledged in the stream, but
    # under half a window: no WINDOW_UPDATE). The client has 65535 - 32000 = 33535 left.
    head = ws_frame_header(10**7)
    await trio.testing.wait_all_tasks_blocked()
    await client.send_all(
        frame(DATA, 0, 1, head + b"a" * (16000 - len(head))) + frame(DATA, 0, 1, b"a" * 16000)
    )
    # Read B: 16383 + 16383 + 16383 + 16000 bytes: the third frame is over the 769 bytes
    # the client has left (one read: 65185 bytes, under the proxy's read size).
    read = b"".join(
        frame(DATA, 0, 1, bytes([98 + i]) * n) for i, n in enumerate([16383, 16383, 16383, 16000])
    )
    await trio.testing.wait_all_tasks_blocked()
    await client.send_all(read)
    await trio.testing.wait_all_tasks_blocked()
    await client.send_all(frame(PING, 0, 0, b"12345678"))
    resets = []
    with trio.fail_after(5):
        while True:
            frames = await read_frames_until(client, {PING, RST_STREAM})
            resets += [
                (sid, int.from_bytes(p, "big")) for k, _, sid, p in frames if k == RST_STREAM
            ]
            if any(k == PING and flags & ACK for k, flags, _, _ in frames):
                break
            assert frames, ("connection closed", resets)
    assert resets == [(1, FLOW_CONTROL_ERROR)]
