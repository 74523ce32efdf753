"""A tunnel's flow-control credit goes back to the client even when it is the only thing
the proxy has to write: a client uploading into a backend that never answers must see
WINDOW_UPDATE frames, or it stalls once its windows are spent (RFC 9113 §6.9).

Two ways the credit comes back, one per backend kind: a tunnel waiting for bytes gets
them inline during the read (socketpair backends), and their credit is held until the
read is parsed (``Receiver``); a pump task moves them later (memory backends) and
acknowledges them outside any read. Either way the WINDOW_UPDATEs leave only if the
writer is woken for them: no echo, no answer and no other frame is there to wake it
here. Each DATA frame is one read of the proxy's, and the client sends every byte its
windows allow before it waits for more."""

from __future__ import annotations

import hpack
import trio
import trio.testing

from tests.helpers.backends import BackendConnection
from tests.helpers.frames import frame
from tests.helpers.memory import MemoryNet
from tests.helpers.raw_h2 import GOOD, raw_client

DATA, HEADERS, SETTINGS, WINDOW_UPDATE = 0x0, 0x1, 0x4, 0x8
END_HEADERS, ACK = 0x4, 0x1
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
DEFAULT_WINDOW = 65_535
CHUNK = 16_384  # the default SETTINGS_MAX_FRAME_SIZE
CREDIT_WITHIN_S = 5.0


class SinkBackend:
    """Accepts the upgrade, then reads until EOF and never writes: counts what it took."""

    def __init__(self) -> None:
        self.received = 0
        self.expected = 0  # set once the client knows how much it uploads
        self.took_all = trio.Event()

    async def __call__(self, stream: trio.abc.HalfCloseableStream) -> None:
        conn = BackendConnection(stream)
        await conn.accept(await conn.read_upgrade())
        while data := await stream.receive_some():
            self.received += len(data)
            if self.received >= self.expected:
                self.took_all.set()


class ClientWindows:
    """What the proxy allows the client to send, read from the frames it writes."""

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id
        self.connection = DEFAULT_WINDOW
        self.stream = DEFAULT_WINDOW
        self._buffer = b""
        self.answered = False  # the tunnel's 200 came

    def take(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 9:
            end = 9 + int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < end:
                return
            kind, flags = self._buffer[3], self._buffer[4]
            stream_id = int.from_bytes(self._buffer[5:9], "big")
            payload = self._buffer[9:end]
            self._buffer = self._buffer[end:]
            if kind == HEADERS and stream_id == self.stream_id:
                self.answered = True
            elif kind == WINDOW_UPDATE:
                credit = int.from_bytes(payload, "big") & 0x7FFF_FFFF
                if stream_id == 0:
                    self.connection += credit
                elif stream_id == self.stream_id:
                    self.stream += credit
            elif kind == SETTINGS and not flags & ACK:
                for at in range(0, len(payload), 6):
                    if int.from_bytes(payload[at : at + 2], "big") == SETTINGS_INITIAL_WINDOW_SIZE:
                        self.stream = int.from_bytes(payload[at + 2 : at + 6], "big")

    def open(self) -> bool:
        return self.connection > 0 and self.stream > 0

    def spend(self, size: int) -> None:
        self.connection -= size
        self.stream -= size


async def test_an_upload_into_a_silent_backend_gets_its_credit_back(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, both_backend_kinds: None
) -> None:
    backend = SinkBackend()
    client = await raw_client(nursery, MemoryNet(nursery, backend))
    windows = ClientWindows(1)
    await client.send_all(frame(HEADERS, END_HEADERS, 1, hpack.Encoder().encode(GOOD)))
    with trio.fail_after(CREDIT_WITHIN_S):
        while not windows.answered:
            windows.take(await client.receive_some())
    # Past both windows the proxy gave at the start, twice over.
    upload = backend.expected = 2 * max(windows.connection, windows.stream)
    sent = 0
    with trio.fail_after(CREDIT_WITHIN_S):
        while sent < upload:
            while not windows.open():
                # Only the proxy's WINDOW_UPDATEs can let the client go on.
                windows.take(await client.receive_some())
            # Every byte the windows allow: the client then waits with nothing to send.
            size = min(CHUNK, upload - sent, windows.connection, windows.stream)
            await trio.testing.wait_all_tasks_blocked()  # one frame, one read
            await client.send_all(frame(DATA, 0, 1, bytes(size)))
            windows.spend(size)
            sent += size
        await backend.took_all.wait()
    assert backend.received == upload
