"""One stream on a shared HTTP/2 backend connection, as a byte stream: :class:`H2Channel`.

A tunnel or a request to an HTTP/2 backend holds a channel; the connection's reader task
(:mod:`.connection`) feeds it the stream's events, and the channel's owner reads and writes
through it as through a socket (``trio.abc.HalfCloseableStream``), so ``run_tunnel`` and
the exchange need no HTTP/2 of their own.

Rules:

* **Credit follows the bytes.** DATA is queued here, bounded by the stream window we
  advertised (the session refuses a peer that overruns it). The credit for a chunk goes
  back to the backend only when the owner comes back for more (:meth:`receive_some`), that
  is after it wrote the previous chunk on: one slow client holds at most one stream window
  of the shared connection, never the connection's window (which is the maximum). On
  close, the connection gets back the credit of whatever was still queued.
* **Sending waits for windows.** :meth:`send_all` sends what the stream and connection
  windows allow and waits for credit for the rest; and while the connection's output is
  above its high-water mark, for the writer (the socket is the backpressure).
* A peer's RST_STREAM or a connection failure breaks the channel: reads and writes raise
  ``trio.BrokenResourceError`` with the reason. ``refused`` says the backend never
  processed the stream (REFUSED_STREAM, or above its GOAWAY's last stream id: RFC 9113
  §8.7), so its opener may try again elsewhere.
* :meth:`aclose` before both sides ended resets the stream (CANCEL): the backend stops.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

import trio

from h2ws_proxy.h2session import (
    DataReceived,
    ErrorCode,
    H2Session,
    InformationalResponseReceived,
    ResponseReceived,
    StreamUnusable,
    TrailersReceived,
)
from h2ws_proxy.transport.wakeup import Wakeup

Header = tuple[bytes, bytes]
Head = ResponseReceived | InformationalResponseReceived


class ChannelHost(Protocol):
    """What a channel needs of its connection (:class:`~.connection.H2BackendConnection`)."""

    session: H2Session

    def flush(self) -> None:
        """Output was queued: have it written."""

    def backlogged(self) -> bool:
        """Producers should wait (:meth:`wait_drained`) before queueing more."""

    async def wait_drained(self) -> None: ...

    def wait_for_window(self, channel: H2Channel) -> None:
        """Call ``channel.window_opened()`` once the connection's window grows."""

    def credit(self, stream_id: int, size: int) -> None:
        """Give the backend ``size`` bytes of credit back on the stream."""

    def stream_ended(self, channel: H2Channel) -> None:
        """Our side of ``channel`` ended (END_STREAM sent)."""

    def channel_closed(self, channel: H2Channel, unused: int) -> None:
        """The owner closed ``channel``; ``unused`` bytes it held were never taken on."""

    def stream_over(self, channel: H2Channel) -> None:
        """Reset ``channel``'s stream with NO_ERROR and forget it: the exchange is done."""


class H2Channel(trio.abc.HalfCloseableStream):
    """One stream of a backend connection (see the module's rules)."""

    def __init__(self, connection: ChannelHost, stream_id: int) -> None:
        self.connection = connection
        self.stream_id = stream_id
        #: Response heads not yet taken by :meth:`next_head` (1xx, then the final one).
        self._heads: deque[Head] = deque()
        self._data: deque[bytes] = deque()
        self._queued = 0  # bytes in ``_data``
        self._handed_out = 0  # bytes returned by receive_some whose credit is still ours
        #: The backend's side ended (END_STREAM); ``trailers`` holds its trailer fields.
        self.remote_ended = False
        self.trailers: list[Header] = []
        self.local_ended = False
        #: Why the channel broke (a reset, the connection's end), or None.
        self.broken: str | None = None
        #: The backend never processed the stream: it may be sent again (RFC 9113 §8.7).
        self.refused = False
        self.reset_code: ErrorCode | int | None = None
        self._closed = False
        #: The code a close resets the stream with.
        self._reset_code = ErrorCode.CANCEL
        self._readable = Wakeup()
        self._writable = Wakeup()

    # ---- the connection's side ----

    def on_event(
        self,
        event: DataReceived | ResponseReceived | InformationalResponseReceived | TrailersReceived,
    ) -> None:
        """An event of this stream from the connection's reader."""
        if isinstance(event, DataReceived):
            if event.data:
                self._data.append(event.data)
                self._queued += len(event.data)
            self.remote_ended = event.end_stream
        elif isinstance(event, ResponseReceived):
            self._heads.append(event)
            self.remote_ended = event.end_stream
        elif isinstance(event, InformationalResponseReceived):
            self._heads.append(event)
        elif isinstance(event, TrailersReceived):
            self.trailers = event.headers
            self.remote_ended = True
        self._readable.set()

    def break_off(
        self, reason: str, *, refused: bool = False, code: ErrorCode | int | None = None
    ) -> None:
        """The stream is over without a clean end: wake both sides to raise ``reason``."""
        if self.broken is None:
            self.broken = reason
            self.refused = refused
            self.reset_code = code
        self._readable.set()
        self._writable.set()

    def window_opened(self) -> None:
        self._writable.set()

    # ---- the owner's side ----

    async def next_head(self) -> Head:
        """The next response head (1xx ones first); raises BrokenResourceError if the
        stream broke or ended without one."""
        while not self._heads:
            if self.broken is not None:
                raise trio.BrokenResourceError(self.broken)
            if self.remote_ended:
                raise trio.BrokenResourceError("the backend ended the stream without a response")
            await self._readable.wait()
        return self._heads.popleft()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._handed_out:
            # The previous chunk was written on: its credit goes back now (module rules).
            self.connection.credit(self.stream_id, self._handed_out)
            self._handed_out = 0
        while not self._data:
            if self.broken is not None:
                raise trio.BrokenResourceError(self.broken)
            if self.remote_ended or self._closed:
                await trio.lowlevel.checkpoint()
                return b""
            await self._readable.wait()
        chunk = self._data.popleft()
        if max_bytes is not None and len(chunk) > max_bytes:
            self._data.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        self._queued -= len(chunk)
        self._handed_out += len(chunk)
        await trio.lowlevel.checkpoint_if_cancelled()
        return chunk

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        connection = self.connection
        view = memoryview(data)
        while True:
            self._check_sendable()
            try:
                sent = connection.session.send_data(self.stream_id, view)
            except StreamUnusable as error:
                raise trio.BrokenResourceError(self.broken or str(error)) from error
            connection.flush()
            view = view[sent:]
            if connection.backlogged():
                await connection.wait_drained()
            if not view:
                await trio.lowlevel.checkpoint_if_cancelled()
                return
            if not sent:
                connection.wait_for_window(self)
                await self._writable.wait()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        """END_STREAM: our side of the stream is done."""
        if self.local_ended:
            await trio.lowlevel.checkpoint()
            return
        await self.send_trailers([])

    async def send_trailers(self, trailers: list[Header]) -> None:
        """A trailer section (END_STREAM on an empty DATA frame if none): our side of the
        stream is done."""
        self._check_sendable()
        session = self.connection.session
        try:
            if trailers:
                session.send_headers(self.stream_id, trailers, end_stream=True)
            else:
                session.end_stream(self.stream_id)
        except StreamUnusable as error:
            raise trio.BrokenResourceError(self.broken or str(error)) from error
        self.local_ended = True
        self.connection.flush()
        self.connection.stream_ended(self)
        await trio.lowlevel.checkpoint()

    def _check_sendable(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the channel was closed")
        if self.broken is not None:
            raise trio.BrokenResourceError(self.broken)
        if self.local_ended:
            raise trio.ClosedResourceError("send_eof was called on this channel")

    async def aclose(self) -> None:
        self.close_now()
        await trio.lowlevel.checkpoint()

    def close_handshake_done(self) -> None:
        """Both WebSocket Close frames have passed: the WebSocket is over. Unless both sides
        ended already, the stream is reset with NO_ERROR and our side counts as ended (no
        END_STREAM follows), and the backend's as ended once its queued bytes are read.

        Why: RFC 6455 §7.1.1 lets the server end the connection after the close
        handshake, and backends differ in how they end an HTTP/2 stream then. Some neither
        end nor reset it (the stream would count against MAX_CONCURRENT_STREAMS for the
        connection's life); some drop it silently and fail the whole connection when DATA
        or END_STREAM still arrives on it. A reset reaches both safely.
        """
        if self.finished or self.broken is not None or self._closed:
            return
        self.local_ended = self.remote_ended = True
        self.connection.stream_over(self)
        self._readable.set()
        self._writable.set()

    def reset(self, code: ErrorCode) -> None:
        """Close, resetting the stream with ``code`` if it is still open."""
        self._reset_code = code
        self.close_now()

    def close_now(self) -> None:
        """Close without waiting: reset the stream if it is still open (CANCEL unless
        :meth:`reset` said otherwise), and give the connection back the credit of every
        byte not taken on."""
        if self._closed:
            return
        self._closed = True
        unused = self._handed_out + self._queued
        self._data.clear()
        self._handed_out = self._queued = 0
        self.connection.channel_closed(self, unused)
        self._readable.set()
        self._writable.set()

    @property
    def reset_code_on_close(self) -> ErrorCode:
        return self._reset_code

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def finished(self) -> bool:
        """Both sides ended cleanly: nothing to reset."""
        return self.remote_ended and self.local_ended and self.broken is None
