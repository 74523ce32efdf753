"""``PolledDownward.on_readable`` sends a backend chunk itself (``_flush`` inline). A chunk
that does not go whole into a small client window waits, and goes on only with the
client's credit: never more than the window, no byte lost, doubled or reordered, and the
tunnel ends cleanly. (From the review of the branch: the partial-send path on the polled
tunnel, socketpair backends.)"""

from __future__ import annotations

import hpack
import pytest
import trio
import trio.testing

import tests.helpers.memory
from tests.helpers.backends import BackendConnection
from tests.helpers.frames import PREFACE, frame
from tests.helpers.memory import MemoryNet, open_memory_client
from tests.helpers.raw_h2 import GOOD
from tests.helpers.setup import make_config

DATA, HEADERS, SETTINGS, WINDOW_UPDATE = 0x0, 0x1, 0x4, 0x8
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
WINDOW = 7


def ws_frame(payload: bytes) -> bytes:
    assert len(payload) < 126
    return b"\x82" + bytes([len(payload)]) + payload


async def test_a_chunk_that_does_not_go_whole_waits_for_credit(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tests.helpers.memory, "SOCKET_BACKENDS", True)
    sent_down = b"".join(ws_frame(bytes([n]) * 100) for n in range(1, 4))
    backend_done = trio.Event()

    async def backend(stream: trio.abc.HalfCloseableStream) -> None:
        conn = BackendConnection(stream)
        await conn.accept(await conn.read_upgrade())
        await stream.send_all(sent_down)  # one chunk, far past the client's window
        await stream.send_eof()
        backend_done.set()
        while await stream.receive_some():
            pass

    net = MemoryNet(nursery, backend)
    client = await open_memory_client(nursery, make_config(("/", "http://127.0.0.1:9")), net)
    settings = (0x4).to_bytes(2, "big") + WINDOW.to_bytes(4, "big")
    await client.send_all(PREFACE + frame(SETTINGS, 0, 0, settings))
    await client.send_all(frame(HEADERS, END_HEADERS, 1, hpack.Encoder().encode(GOOD)))

    got = bytearray()
    ended = []
    buffer = bytearray()

    async def reader() -> None:
        while data := await client.receive_some():
            buffer.extend(data)
            while len(buffer) >= 9:
                end = 9 + int.from_bytes(buffer[:3], "big")
                if len(buffer) < end:
                    break
                kind, flags = buffer[3], buffer[4]
                stream_id = int.from_bytes(buffer[5:9], "big")
                if kind == DATA and stream_id == 1:
                    got.extend(buffer[9:end])
                    if flags & END_STREAM:
                        ended.append(True)
                elif kind == SETTINGS and not flags & ACK:
                    await client.send_all(frame(SETTINGS, ACK, 0, b""))
                del buffer[:end]

    nursery.start_soon(reader)
    with trio.fail_after(5):
        await backend_done.wait()
    allowed = WINDOW
    while len(got) < len(sent_down):
        await trio.testing.wait_all_tasks_blocked()
        assert len(got) == min(allowed, len(sent_down)), (len(got), allowed)
        assert bytes(got) == sent_down[: len(got)]
        credit = 50
        allowed += credit
        await client.send_all(frame(WINDOW_UPDATE, 0, 1, credit.to_bytes(4, "big")))
    await trio.testing.wait_all_tasks_blocked()
    assert bytes(got) == sent_down
    assert ended == [True]
