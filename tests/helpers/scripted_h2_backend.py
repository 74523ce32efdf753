"""A scripted HTTP/2 backend on loopback, for the proxy's tunnels to misbehaving servers.

:class:`ScriptedH2Backend` is a trio TCP server on 127.0.0.1 port 0 that speaks HTTP/2 as
a server with the ``h2`` library (a peer we did not write). Each accepted connection is an
:class:`H2Peer`; what it does is chosen per test:

* ``on_connect(peer)`` runs first: by default it sends SETTINGS with
  ENABLE_CONNECT_PROTOCOL = 1 at once; a test may delay them, never send them, or leave
  the setting out. Until SETTINGS are sent the peer still reads and records, but feeds
  nothing to ``h2`` (a server's first frame must be its SETTINGS, RFC 9113 §3.4).
* Each request runs the handler its ``:path`` names in ``handlers`` (default
  :func:`echo`: a 200, then a WebSocket echo with wsproto's server-side frames).

Everything a peer receives is recorded: each frame (type, flags, stream id, payload) with
the ``trio.current_time()`` at which it was read, and every ``h2`` event likewise, so tests
assert ordering against :attr:`H2Peer.settings_sent_at`. Frames ``h2`` would refuse to
write (DATA before a response, malformed heads, a SETTINGS change, GOAWAY while streams
go on) are written raw with :meth:`H2Peer.send_frame`; ``h2`` does not know of them.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio
from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode

from tests.helpers.frames import PREFACE, frame

Header = tuple[bytes, bytes]
EventT = TypeVar("EventT", bound=h2.events.Event)
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
ENABLE_CONNECT_PROTOCOL = 0x8


@dataclass(frozen=True)
class Frame:
    """One frame the peer read, and when (``trio.current_time()``)."""

    at: float
    kind: int
    flags: int
    stream_id: int
    payload: bytes


@dataclass
class PeerStream:
    """One request the peer received."""

    stream_id: int
    headers: list[Header]
    data: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset_code: int | None = None
    frames: FrameProtocol = field(default_factory=lambda: FrameProtocol(False, []))
    #: Bytes sent on the stream (DATA payloads).
    sent: int = 0

    @property
    def path(self) -> str:
        return dict(self.headers)[b":path"].decode()


class H2Peer:
    """One connection of a :class:`ScriptedH2Backend`; see the module's docstring."""

    def __init__(self, backend: ScriptedH2Backend, stream: trio.abc.Stream) -> None:
        self.backend = backend
        self.stream = stream
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.opened_at = trio.current_time()
        self.settings_sent_at: float | None = None
        self.frames: list[Frame] = []
        self.events: list[tuple[float, h2.events.Event]] = []
        self.streams: dict[int, PeerStream] = {}
        #: True: nothing more is written (PINGs go unanswered), reading goes on.
        self.mute = False
        #: True: DATA is not acknowledged (the proxy's window toward us fills up).
        self.auto_ack = True
        self.closed = trio.Event()
        self._held = bytearray()
        self._raw = bytearray()
        self._preface_seen = False
        self._nursery: trio.Nursery | None = None
        self._send_lock = trio.Lock()

    # ---- writing ----

    async def send_settings(self, *, enable_connect: bool = True, **values: int) -> None:
        """Our first SETTINGS (ENABLE_CONNECT_PROTOCOL = 1 unless told), then what the
        proxy sent meanwhile goes to ``h2``."""
        codes = h2.settings.SettingCodes
        initial = {getattr(codes, k): v for k, v in values.items()}
        if enable_connect:
            initial[codes.ENABLE_CONNECT_PROTOCOL] = 1
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values=initial)
        self.conn.initiate_connection()
        # Noted before the write: the proxy cannot have seen them any earlier.
        self.settings_sent_at = trio.current_time()
        await self.flush()
        held, self._held = bytes(self._held), bytearray()
        if held:
            self._feed(held)
            await self.flush()

    async def flush(self) -> None:
        async with self._send_lock:
            data = self.conn.data_to_send()
            if data and not self.mute:
                await self.stream.send_all(data)
        self.backend.changed()  # our own windows and states changed too

    async def send_frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        """One raw frame, behind whatever ``h2`` queued."""
        async with self._send_lock:
            data = self.conn.data_to_send() + frame(kind, flags, stream_id, payload)
            await self.stream.send_all(data)
        self.backend.changed()

    async def send_raw_head(
        self, stream_id: int, headers: list[Header], *, end_stream: bool = False
    ) -> None:
        """A HEADERS frame encoded with ``h2``'s own HPACK encoder (its table stays in
        step) but none of its checks: for malformed heads."""
        block = self.conn.encoder.encode(headers)
        flags = END_HEADERS | (END_STREAM if end_stream else 0)
        await self.send_frame(HEADERS, flags, stream_id, block)

    async def respond(
        self, stream_id: int, headers: list[Header], *, end_stream: bool = False
    ) -> None:
        self.conn.send_headers(stream_id, headers, end_stream=end_stream)
        await self.flush()

    async def send_data(
        self, stream_id: int, data: bytes | bytearray, *, end_stream: bool = False
    ) -> None:
        """``data`` on the stream as the windows allow, waiting for credit."""
        view = memoryview(data)
        while view:
            window = await self.wait_for_window(stream_id)
            size = min(window, self.conn.max_outbound_frame_size, len(view))
            self.conn.send_data(stream_id, bytes(view[:size]))
            self.streams[stream_id].sent += size
            view = view[size:]
            await self.flush()
        if end_stream:
            self.conn.end_stream(stream_id)
            await self.flush()

    async def wait_for_window(self, stream_id: int) -> int:
        """Our send window on the stream once it is open; raises if the stream ends."""
        state = self.streams[stream_id]

        def ready() -> bool:
            open_window = self.conn.local_flow_control_window(stream_id) > 0
            return open_window or state.reset_code is not None

        await self.wait_until(ready)
        if state.reset_code is not None:
            raise trio.BrokenResourceError(f"stream {stream_id} reset ({state.reset_code})")
        return self.conn.local_flow_control_window(stream_id)

    async def abort(self) -> None:
        """Close the socket at once (no GOAWAY)."""
        await trio.aclose_forcefully(self.stream)

    # ---- reading ----

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds (re-checked on everything any peer reads or
        writes)."""
        await self.backend.wait_until(predicate)

    def frames_of(self, kind: int, stream_id: int | None = None) -> list[Frame]:
        return [f for f in self.frames if f.kind == kind and stream_id in (None, f.stream_id)]

    def events_of(self, kind: type[EventT]) -> list[EventT]:
        return [event for _, event in self.events if isinstance(event, kind)]

    async def run(self, on_connect: ConnectScript) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(on_connect, self)
            try:
                await self._read()
            finally:
                self.closed.set()
                self.backend.changed()
                nursery.cancel_scope.cancel()

    async def _read(self) -> None:
        while True:
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            self._record(data)
            if self.settings_sent_at is None:
                self._held += data
            else:
                self._feed(data)
                try:
                    await self.flush()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
            self.backend.changed()

    def _record(self, data: bytes | bytearray) -> None:
        now = trio.current_time()
        self._raw += data
        if not self._preface_seen:
            if len(self._raw) < len(PREFACE):
                return
            assert self._raw[: len(PREFACE)] == PREFACE, "the proxy's preface"
            del self._raw[: len(PREFACE)]
            self._preface_seen = True
        while len(self._raw) >= 9:
            length = int.from_bytes(self._raw[:3], "big")
            if len(self._raw) < 9 + length:
                return
            kind, flags = self._raw[3], self._raw[4]
            stream_id = struct.unpack(">I", self._raw[5:9])[0] & 0x7FFFFFFF
            self.frames.append(Frame(now, kind, flags, stream_id, bytes(self._raw[9 : 9 + length])))
            del self._raw[: 9 + length]

    def _feed(self, data: bytes | bytearray) -> None:
        now = trio.current_time()
        for event in self.conn.receive_data(data):
            self.events.append((now, event))
            self._on_event(event)

    async def _handle_stream(self, state: PeerStream) -> None:
        # The proxy may reset the stream, or the connection go, while we answer.
        with contextlib.suppress(
            trio.BrokenResourceError, trio.ClosedResourceError, h2.exceptions.StreamClosedError
        ):
            await self.backend.handler_for(state.path)(self, state)

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            assert event.stream_id is not None
            headers = [(bytes(name), bytes(value)) for name, value in event.headers or []]
            self.streams[event.stream_id] = PeerStream(event.stream_id, headers)
            assert self._nursery is not None
            self._nursery.start_soon(self._handle_stream, self.streams[event.stream_id])
            return
        state = self.streams.get(getattr(event, "stream_id", None) or 0)
        if state is None:
            return
        if isinstance(event, h2.events.DataReceived):
            state.data += event.data or b""
            if self.auto_ack and event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length, state.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            state.ended = True
        elif isinstance(event, h2.events.StreamReset):
            state.reset_code = int(event.error_code or 0)


Handler = Callable[[H2Peer, PeerStream], Awaitable[None]]
ConnectScript = Callable[[H2Peer], Awaitable[None]]


async def send_settings_now(peer: H2Peer) -> None:
    await peer.send_settings()


async def echo(peer: H2Peer, state: PeerStream) -> None:
    """Answer 200, then echo WebSocket messages (server frames: unmasked) until a Close,
    which it answers; PINGs get PONGs."""
    await peer.respond(state.stream_id, [(b":status", b"200")])
    taken = 0
    while True:
        await peer.wait_until(
            lambda taken=taken: (  # type: ignore[misc]
                len(state.data) > taken or state.ended or state.reset_code is not None
            )
        )
        if len(state.data) == taken:
            return  # ended or reset with nothing new
        state.frames.receive_bytes(bytes(state.data[taken:]))
        taken = len(state.data)
        for ws_frame in state.frames.received_frames():
            if ws_frame.opcode is Opcode.CLOSE:
                code = ws_frame.payload[0] if ws_frame.payload else 1000
                reply = state.frames.close(CloseReason(int(code)))
                await peer.send_data(state.stream_id, reply)
                return
            if ws_frame.opcode is Opcode.PING:
                await peer.send_data(state.stream_id, state.frames.pong(ws_frame.payload))  # type: ignore[arg-type]
            elif ws_frame.opcode is not Opcode.PONG:
                out = state.frames.send_data(ws_frame.payload, ws_frame.frame_finished)  # type: ignore[arg-type]
                await peer.send_data(state.stream_id, out)


class ScriptedH2Backend:
    """A loopback HTTP/2 server; ``handlers`` by request ``:path`` (see the module)."""

    def __init__(
        self,
        handlers: dict[str, Handler] | None = None,
        on_connect: ConnectScript = send_settings_now,
    ) -> None:
        self.handlers = dict(handlers or {})
        self.on_connect = on_connect
        self.peers: list[H2Peer] = []
        self.port = 0
        self._changed = trio.Event()

    @property
    def url(self) -> str:
        return f"h2c://127.0.0.1:{self.port}"

    def handler_for(self, path: str) -> Handler:
        return self.handlers.get(path.split("?")[0], echo)

    def changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    async def wait_for_peers(self, count: int) -> H2Peer:
        """The ``count``-th connection, once it came."""
        await self.wait_until(lambda: len(self.peers) >= count)
        return self.peers[count - 1]

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self.serve_connection, listeners)

    async def serve_connection(self, stream: trio.abc.Stream) -> None:
        """Serve one connection (a socket's, or one half of an in-memory pair)."""
        peer = H2Peer(self, stream)
        self.peers.append(peer)
        self.changed()
        try:
            await peer.run(self.on_connect)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)
