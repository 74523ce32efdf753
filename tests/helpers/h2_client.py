"""An HTTP/2 client for tests, built on the real ``h2`` library over any trio stream.

It opens WebSockets with RFC 8441 extended CONNECT and frames messages with wsproto's
frame protocol (client side: masked), so the proxy is driven by real protocol objects
rather than canned bytes. One background task reads; tests await per-stream conditions.
``auto_ack=False`` on a stream withholds WINDOW_UPDATEs, for flow-control tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings
import trio
from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode

Header = tuple[bytes, bytes]


@dataclass
class StreamState:
    stream_id: int
    headers: list[Header] | None = None
    data: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset_code: int | None = None
    auto_ack: bool = True
    unacked: int = 0
    informational: list[list[Header]] = field(default_factory=list)
    trailers: list[Header] | None = None
    changed: trio.Event = field(default_factory=trio.Event)

    @property
    def status(self) -> int | None:
        if self.headers is None:
            return None
        return int(dict(self.headers)[b":status"])

    def header(self, name: bytes) -> bytes | None:
        return dict(self.headers or []).get(name)


class H2TestClient:
    """A client connection; create with :func:`open_h2_client`."""

    def __init__(self, stream: trio.abc.Stream, settings: dict[int, int] | None = None) -> None:
        self.stream = stream
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values=settings or {})
        self.streams: dict[int, StreamState] = {}
        self.remote_settings_received = trio.Event()
        self.terminated: h2.events.ConnectionTerminated | None = None
        self.closed = trio.Event()
        self.ping_acks = 0
        self._changed = trio.Event()
        self._send_lock = trio.Lock()

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            async with self._send_lock:
                await self.stream.send_all(data)
        self._notify_all()  # local changes (windows, states) may satisfy a waiter

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self.stream.receive_some(65536)
                if not data:
                    break
                for event in self.conn.receive_data(bytes(data)):
                    self._on_event(event)
                await self.flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.closed.set()
            self._notify_all()

    def _notify_all(self) -> None:
        for state in self.streams.values():
            state.changed.set()
            state.changed = trio.Event()
        self._changed.set()
        self._changed = trio.Event()

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self.remote_settings_received.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.terminated = event
        elif isinstance(event, h2.events.PingAckReceived):
            self.ping_acks += 1
        stream_id = getattr(event, "stream_id", None)
        state = self.streams.get(stream_id) if stream_id else None
        if state is not None:
            if isinstance(
                event, h2.events.ResponseReceived | h2.events.InformationalResponseReceived
            ):
                if isinstance(event, h2.events.ResponseReceived):
                    state.headers = list(event.headers)  # type: ignore[arg-type]
                else:
                    state.informational.append(list(event.headers))  # type: ignore[arg-type]
            elif isinstance(event, h2.events.TrailersReceived):
                state.trailers = list(event.headers)  # type: ignore[arg-type]
            elif isinstance(event, h2.events.DataReceived):
                state.data += event.data or b""
                if state.auto_ack:
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length or 0, state.stream_id
                    )
                else:
                    state.unacked += event.flow_controlled_length or 0
            elif isinstance(event, h2.events.StreamEnded):
                state.ended = True
            elif isinstance(event, h2.events.StreamReset):
                state.reset_code = int(event.error_code or 0)
        self._notify_all()

    async def wait_for(self, predicate: object, state: StreamState | None = None) -> None:
        """Wait until ``predicate()`` is true (re-checked on every event)."""
        assert callable(predicate)
        while not predicate():
            if self.closed.is_set():
                raise AssertionError("connection closed while waiting")
            await self._changed.wait()

    async def request(
        self, headers: list[Header], *, end_stream: bool = False, auto_ack: bool = True
    ) -> StreamState:
        stream_id = self.conn.get_next_available_stream_id()
        state = StreamState(stream_id, auto_ack=auto_ack)
        self.streams[stream_id] = state
        self.conn.send_headers(stream_id, headers, end_stream=end_stream)
        await self.flush()
        return state

    async def response(self, state: StreamState) -> StreamState:
        await self.wait_for(lambda: state.headers is not None or state.reset_code is not None)
        return state

    async def finished(self, state: StreamState) -> StreamState:
        await self.wait_for(lambda: state.ended or state.reset_code is not None)
        return state

    async def send_data(self, state: StreamState, data: bytes, *, end_stream: bool = False) -> None:
        view = memoryview(data)
        while view:
            await self.wait_for(lambda: self.conn.local_flow_control_window(state.stream_id) > 0)
            size = min(
                self.conn.local_flow_control_window(state.stream_id),
                self.conn.max_outbound_frame_size,
                len(view),
            )
            self.conn.send_data(state.stream_id, bytes(view[:size]))
            view = view[size:]
            await self.flush()
        if end_stream:
            self.conn.end_stream(state.stream_id)
            await self.flush()

    async def ping(self) -> None:
        """A PING round trip: everything sent before it has been processed by the peer."""
        expected = self.ping_acks + 1
        self.conn.ping(b"h2wstest")
        await self.flush()
        await self.wait_for(lambda: self.ping_acks >= expected)

    async def end_stream(self, state: StreamState) -> None:
        self.conn.end_stream(state.stream_id)
        await self.flush()

    async def reset(self, state: StreamState, code: int = 8) -> None:
        self.conn.reset_stream(state.stream_id, code)
        await self.flush()

    async def ack(self, state: StreamState) -> None:
        """Return the credit withheld on an ``auto_ack=False`` stream."""
        if state.unacked:
            self.conn.acknowledge_received_data(state.unacked, state.stream_id)
            state.unacked = 0
            await self.flush()

    async def websocket(
        self,
        path: str = "/",
        *,
        authority: str = "proxy.test",
        scheme: str = "http",
        subprotocols: list[str] | None = None,
        extra: list[Header] | None = None,
        auto_ack: bool = True,
    ) -> WebSocketStream:
        headers: list[Header] = [
            (b":method", b"CONNECT"),
            (b":protocol", b"websocket"),
            (b":scheme", scheme.encode()),
            (b":path", path.encode()),
            (b":authority", authority.encode()),
            (b"sec-websocket-version", b"13"),
        ]
        if subprotocols:
            headers.append((b"sec-websocket-protocol", ", ".join(subprotocols).encode()))
        headers.extend(extra or [])
        state = await self.request(headers, auto_ack=auto_ack)
        await self.response(state)
        return WebSocketStream(self, state)


class WebSocketStream:
    """WebSocket messages over one extended CONNECT stream."""

    def __init__(self, client: H2TestClient, state: StreamState) -> None:
        self.client = client
        self.state = state
        self.frames = FrameProtocol(client=True, extensions=[])
        self._consumed = 0

    @property
    def status(self) -> int | None:
        return self.state.status

    async def send(self, message: bytes | str) -> None:
        # wsproto picks the opcode: TEXT for str, BINARY for bytes; client frames are masked.
        await self.client.send_data(self.state, self.frames.send_data(message, fin=True))

    async def receive(self) -> bytes | str:
        """The next complete message (text as str)."""
        parts: list[bytes | str] = []
        while True:
            self.frames.receive_bytes(self._take_new_bytes())
            for frame in self.frames.received_frames():
                if frame.opcode is Opcode.CLOSE:
                    raise ConnectionError(f"close frame {frame.payload!r}")
                if frame.opcode in (Opcode.PING, Opcode.PONG):
                    continue
                parts.append(frame.payload)  # type: ignore[arg-type]
                if frame.message_finished:
                    if isinstance(parts[0], str):
                        return "".join(str(part) for part in parts)
                    return b"".join(bytes(part) for part in parts)  # type: ignore[arg-type]
            if self.state.ended or self.state.reset_code is not None:
                raise ConnectionError(f"stream ended (reset={self.state.reset_code})")
            before = len(self.state.data)
            await self.client.wait_for(
                lambda before=before: (
                    len(self.state.data) > before
                    or self.state.ended
                    or self.state.reset_code is not None
                )
            )

    def _take_new_bytes(self) -> bytes:
        new = bytes(self.state.data[self._consumed :])
        self._consumed = len(self.state.data)
        return new

    async def close(self, code: int = 1000) -> tuple[int | None, int | None]:
        """Close handshake, then END_STREAM; returns (server close code, reset code)."""
        await self.client.send_data(self.state, self.frames.close(CloseReason(code)))
        server_code: int | None = None
        with trio.fail_after(10):
            while server_code is None:
                self.frames.receive_bytes(self._take_new_bytes())
                for frame in self.frames.received_frames():
                    if frame.opcode is Opcode.CLOSE:
                        server_code = int(frame.payload[0])  # type: ignore[index]
                if server_code is None:
                    before = len(self.state.data)
                    await self.client.wait_for(
                        lambda before=before: (
                            len(self.state.data) > before
                            or self.state.ended
                            or self.state.reset_code is not None
                        )
                    )
                    if self.state.reset_code is not None:
                        break
        await self.client.end_stream(self.state)
        await self.client.finished(self.state)
        return server_code, self.state.reset_code


@contextlib.asynccontextmanager
async def open_h2_client(
    stream: trio.abc.Stream,
    settings: dict[int, int] | None = None,
    connection_window: int = 16 * 1024 * 1024,
) -> AsyncIterator[H2TestClient]:
    """Start an HTTP/2 connection on ``stream`` and wait for the server's SETTINGS."""
    client = H2TestClient(stream, settings)
    client.conn.initiate_connection()
    # Like browsers (Chrome opens 15 MiB), keep the connection window out of the way so
    # that per-stream windows are what the tests exercise.
    client.conn.increment_flow_control_window(connection_window)
    await client.flush()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client._read_loop)
        with trio.fail_after(10):
            await client.remote_settings_received.wait()
        yield client
        nursery.cancel_scope.cancel()
    await trio.aclose_forcefully(stream)
