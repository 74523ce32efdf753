"""One HTTP/2 stream seen as a ``trio.abc.HalfCloseableStream``, with HTTP/2 flow control
as its backpressure.

Rules:

* The frontend's reader only *appends* to the inbound buffer and sets events (it never
  awaits a stream, so a slow stream cannot hold up the others). The buffer is bounded by
  the stream window we advertise: the peer may not send more than that unacknowledged.
* Credit for received bytes goes back one call late: ``receive_some`` acknowledges the
  bytes it handed out *on the previous call*, that is after the caller (the tunnel) wrote
  them onward. So the window tracks bytes that really moved, not bytes we hold. Padding is
  acknowledged at once: it is not data anyone consumes.
* ``send_all`` sends only what the peer's windows allow and waits for WINDOW_UPDATE
  otherwise, then waits until the connection's outbound buffer is below its bound: a client
  that does not read holds its backend back through us instead of filling our memory.
* Checkpoints cost a trip through trio's scheduler per message, so ``receive_some`` makes
  exactly one (its wait, or one yield when data was there) and ``send_all`` yields only
  when it has to wait (window, outbound bound); otherwise it only checks for cancellation.
  Every caller receives between sends (the tunnel pumps, the exchange), like with
  ``socket_stream.LeanSocketStream``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from h2ws_proxy.h2session import ErrorCode, StreamUnusable
from h2ws_proxy.http2.proxy_session import ProxySession
from h2ws_proxy.http2.stream_ports import (
    Cancellable,
    Forwarder,
    TunnelEnd,
    WritableWatcher,
    take_chunk,
)
from h2ws_proxy.http2.stream_ports import StreamPhase as StreamPhase  # (its old home)
from h2ws_proxy.transport.wakeup import Wakeup

#: Largest request-body chunk handed to the exchange at once.
BODY_READ_SIZE = 65536


class ConnectionPort(Protocol):
    """What a stream asks of its connection besides the session: output backpressure and
    wake-ups for credit (the frontend provides it; streams never reach the frontend)."""

    def backlogged(self) -> bool:
        """Producers should stop adding output until :meth:`call_when_drained` calls back."""

    def call_when_drained(self, callback: Callable[[], None]) -> None: ...

    async def wait_outbound_drained(self) -> None:
        """Wait until the client has taken enough of our output; always a checkpoint."""

    async def wait_outbound_drained_lean(self) -> None:
        """As :meth:`wait_outbound_drained`, but no yield when there is room."""

    def wait_for_window(self, stream: H2Stream) -> None:
        """``stream`` could not send all it had: wake it when credit arrives."""


class H2Stream(trio.abc.HalfCloseableStream):
    """The client end of a tunnel on HTTP/2 stream ``stream_id`` of ``session``."""

    # Slots: one per idle tunnel, so its attribute storage is memory every tunnel pays.
    __slots__ = (
        "_consumed_unacknowledged",
        "_detached",
        "_forwarder",
        "_inbound",
        "_inbound_bytes",
        "_local_ended",
        "_readable",
        "_receiving",
        "_remote_ended",
        "_writable",
        "broken_reason",
        "connection",
        "declared_length",
        "exchange",
        "on_writable",
        "phase",
        "received_length",
        "reset_by_peer",
        "scope",
        "session",
        "stream_id",
        "trailers",
        "tunnel_end",
    )

    def __init__(
        self,
        session: ProxySession,
        connection: ConnectionPort,
        stream_id: int,
        scope: Cancellable | None = None,
        ended: bool = False,
    ) -> None:
        self.session, self.connection, self.stream_id = session, connection, stream_id
        #: Cancels everything done for this stream at once: a trio scope for the backend
        #: dial, then the running tunnel itself (``adopt_scope``); or ``scope``, a request's.
        self.scope: Cancellable = trio.CancelScope() if scope is None else scope
        # A list, not a deque: an empty deque is 760 B, a cost every idle tunnel pays.
        self._inbound: list[bytes] = []
        self._inbound_bytes = self._consumed_unacknowledged = 0
        self._remote_ended, self._local_ended = ended, False  # (ended: as after ``feed_eof``)
        #: Set when the peer reset the stream or the connection went away.
        self.broken_reason: str | None = None
        self.reset_by_peer = False
        self.phase = StreamPhase.OPENING
        #: Bytes, the end or a break arrived (for ``receive_some``); the window may have
        #: grown or the stream broke (for ``send_all``).
        self._readable = Wakeup()
        self._writable: Wakeup | None = None  # made by a first wait for credit (none if polled)
        #: Set by a tunnel while it copies this stream upward (see ``set_forwarder``).
        self._forwarder: Forwarder | None = None
        #: Told of new credit and of the stream's break (``set_on_writable``; a request run
        #: without a task sets it directly).
        self.on_writable: WritableWatcher | None = None
        self._receiving = self._detached = False  # (``detach_receiver``: the second)
        #: Set by the task that runs a tunnel here, for a run that goes on without it.
        self.tunnel_end: TunnelEnd | None = None
        #: An ordinary request, not a tunnel (set before the stream is used); for one, the
        #: body length the client declared (None: unknown), what arrived, trailers if any.
        self.exchange = False
        self.declared_length: int | None = None
        self.received_length = 0
        self.trailers: list[tuple[bytes, bytes]] | None = None  # no list per tunnel

    # ---- called by the frontend's reader (synchronous, never blocks) ----

    def feed_data(self, data: bytes) -> None:
        """Buffer ``data`` from a DATA frame (the session credited its padding already)."""
        if not data:
            return
        forwarder = self._forwarder
        if forwarder and not self._inbound and (self._detached or self._readable.parked()):
            # The tunnel waits for exactly these bytes and has nothing else to send: hand
            # them on now, as far as the backend takes them without waiting. Their credit
            # goes back as for bytes the tunnel moved itself. A cancelled wait (a timer
            # fired, a side failed) is no longer parked: the bytes wait for the pump then.
            sent = forwarder.forward_up(data)
            if sent:
                self._consumed_unacknowledged += sent
                if self._consumed_unacknowledged >= self.session.ack_batch_bytes:
                    self._acknowledge_consumed()  # (its test first: no call per message)
                if sent == len(data):
                    return
                data = data[sent:]
        self._inbound.append(data)
        self._inbound_bytes += len(data)
        self._wake()

    def set_forwarder(self, forwarder: Forwarder | None) -> None:
        """Let the frontend's reader pass DATA straight to ``forwarder`` (None: stop).

        ``forwarder.forward_up(data)`` sends what it can without waiting and returns how
        much; the rest is buffered for ``receive_some`` as usual. Only used while the
        caller's receive is blocked with nothing buffered (bytes keep their order), never
        once that wait was cancelled (trio aborts it as the cancel happens). It saves the
        receiving task a wake-up per message (bench/cpu_per_message.py).

        ``forwarder.pass_client_end()``, under the same conditions, is told of the client's
        END_STREAM: True if it passed the end on itself, and the receiver then stays asleep
        until :meth:`wake_receiver` (it sees the end then); False wakes the receiver as
        usual.

        ``forwarder.resume()``: see :meth:`detach_receiver`.
        """
        self._forwarder = forwarder

    def detach_receiver(self) -> None:
        """The receiving task leaves, its wait re-checked and found empty (a tunnel that
        idles without a task): what would have woken it calls ``forwarder.resume()``
        instead, once; meanwhile DATA and the end are forwarded as to a parked receiver."""
        self._readable.discard()  # a wake-up from before: its conditions were re-checked
        self._detached = True

    def _wake(self) -> None:
        if self._detached:
            self._detached = False
            assert self._forwarder is not None
            self._forwarder.resume()
        else:
            self._readable.set()

    def count_body(self, size: int, *, ended: bool = False) -> str | None:
        """Hold an ordinary request's DATA to its declared length (RFC 9113 §8.1.1).

        Returns what is wrong, or None. With no declared length anything goes (h11 frames it
        as chunked toward the backend).
        """
        self.received_length += size
        declared = self.declared_length
        if declared is None:
            return None
        if self.received_length > declared:
            return f"more DATA than its content-length {declared}"
        if ended and self.received_length != declared:
            return f"DATA ended at {self.received_length} bytes, content-length said {declared}"
        return None

    def feed_eof(self) -> None:
        self._remote_ended = True
        forwarder = self._forwarder
        if (
            forwarder is not None
            and not self._inbound
            and (self._detached or self._readable.parked())
            and forwarder.pass_client_end()
        ):
            return  # the tunnel ended its other side itself (see ``set_forwarder``)
        self._wake()

    def wake_receiver(self) -> None:
        """Wake the receiver after a forwarder's ``pass_client_end()`` took the end (EOF)."""
        self._wake()

    def break_stream(self, reason: str, *, by_peer: bool) -> None:
        """The stream is unusable (peer reset, connection lost): wake every waiter."""
        if self.broken_reason is None:
            self.broken_reason = reason
            self.reset_by_peer = by_peer
        self._wake()
        self.wake_writer()

    def wake_writer(self) -> None:
        """The peer's window may have grown (WINDOW_UPDATE, SETTINGS), or the stream broke."""
        if self._writable is not None:
            self._writable.set()
        if self.on_writable is not None:
            self.on_writable.client_writable()

    @property
    def buffered_bytes(self) -> int:
        return self._inbound_bytes

    @property
    def remote_ended(self) -> bool:
        return self._remote_ended

    @property
    def local_ended(self) -> bool:
        return self._local_ended

    # ---- trio.abc.HalfCloseableStream ----

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            chunk = self.receive_nowait(max_bytes)
            if chunk is None:
                while chunk is None:  # having blocked is this call's checkpoint
                    await self._readable.park()
                    chunk = self.receive_nowait(max_bytes)
            else:
                await trio.lowlevel.checkpoint()  # one per call, no more (module docstring)
            return chunk
        finally:
            self._receiving = False

    def receive_nowait(self, max_bytes: int | None) -> bytes | None:
        """``receive_some`` without its wait and its checkpoint: a chunk, b"" once the
        client ended its side, or None: nothing yet (await :meth:`park_receiver`, then ask
        again). Raises ``BrokenResourceError`` as ``receive_some`` does."""
        self._acknowledge_consumed()
        if not self._inbound:
            # The client's END_STREAM came first: its side is complete, whatever happened
            # to the stream after (a closed connection is not an abort then).
            if self._remote_ended:
                return b""
            if self.broken_reason is not None:
                raise trio.BrokenResourceError(self.broken_reason)
            return None
        chunk = take_chunk(self._inbound, BODY_READ_SIZE if max_bytes is None else max_bytes)
        self._inbound_bytes -= len(chunk)
        self._consumed_unacknowledged += len(chunk)
        return chunk

    def park_receiver(self) -> Awaitable[object]:
        """Wait until :meth:`receive_nowait` may have more to say; await it at once (a
        tunnel's pump parks here without a ``receive_some`` frame: idle memory)."""
        return self._readable.park()

    def _acknowledge_consumed(self) -> None:
        # In batches of a quarter window: one session call per batch instead of per message
        # (the session itself only sends WINDOW_UPDATE past half a window). The peer never
        # stalls on it: at most a quarter (ours) plus a half (the session's) is withheld.
        if self._consumed_unacknowledged >= self.session.ack_batch_bytes:
            self.session.acknowledge(self.stream_id, self._consumed_unacknowledged)
            self._consumed_unacknowledged = 0

    def release_unconsumed(self) -> int:
        """Drop what the tunnel never took; returns the bytes whose credit is still owed."""
        owed = self._inbound_bytes + self._consumed_unacknowledged
        self._inbound.clear()
        self._inbound_bytes = self._consumed_unacknowledged = 0
        return owed

    def adopt_scope(self, scope: Cancellable) -> None:
        """From now on ``scope`` (the exchange's, the tunnel's) cancels this stream's work.

        A cancel already requested on the old scope carries over to the new one.
        """
        if self.scope.cancel_called:
            scope.cancel()
        self.scope = scope

    def mark_ended_locally(self) -> None:
        """Our side was ended by a complete answer sent around this object (a refusal)."""
        self._local_ended = True

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while True:
            sent = self.send_now(view)
            view = view[sent:]
            if not view:
                break
            if not sent:
                if self._writable is None:
                    self._writable = Wakeup()  # nothing to remember from before: sync
                await self._writable.wait()  # send_now asked to be woken by new credit
        # Not a schedule point when the client keeps up (see the module docstring).
        await self.connection.wait_outbound_drained_lean()

    # ---- synchronous sending, for a tunnel driven by backend readiness ----

    def send_now(self, data: bytes | memoryview, end: bool = False) -> int:
        """Queue what the client's windows allow of ``data`` (``end``: ending our side if all
        of it went); how much went, without waiting. Raises like ``send_all``. The caller
        waits for ``set_on_writable``'s callback when it got less than it gave, and for
        :meth:`call_when_drained` when :meth:`backlogged` says the client is behind."""
        if self.broken_reason is not None:
            raise trio.BrokenResourceError(self.broken_reason)
        if self._local_ended:
            raise trio.ClosedResourceError("the stream was ended")
        try:
            sent = self.session.send_data(self.stream_id, data, end)
        except StreamUnusable as error:
            raise trio.BrokenResourceError(str(error)) from error
        if sent < len(data):
            self.connection.wait_for_window(self)
        elif end:
            self._local_ended = True
        return sent

    def end_now(self) -> None:
        """``send_eof`` without the checkpoint."""
        if self.broken_reason is not None:
            raise trio.BrokenResourceError(self.broken_reason)
        if not self._local_ended:
            self._local_ended = True
            try:
                self.session.end_stream(self.stream_id)
            except StreamUnusable as error:
                raise trio.BrokenResourceError(str(error)) from error

    def set_on_writable(self, watcher: WritableWatcher | None) -> None:
        """Call ``watcher.client_writable()`` (synchronously) when the window may have
        grown or the stream broke; None stops it."""
        self.on_writable = watcher

    def backlogged(self) -> bool:
        """The connection has more output queued for the client than producers may add to."""
        return self.connection.backlogged()

    def call_when_drained(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the connection's output is below its bound again."""
        self.connection.call_when_drained(callback)

    async def wait_send_all_might_not_block(self) -> None:
        await self.connection.wait_outbound_drained()

    async def send_eof(self) -> None:
        self.end_now()
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        """Reset the stream (CANCEL) unless both sides already ended it cleanly."""
        self.reset(cancel=True)
        await trio.lowlevel.checkpoint()

    def reset(self, *, cancel: bool = False) -> None:
        """Reset with CANCEL (we gave up) or CONNECT_ERROR (the backend failed), if still open.

        A stream that both sides ended is left alone: a reset after END_STREAM in both
        directions makes browsers stop using WebSocket over HTTP/2 (aspnetcore#42328).
        """
        if self.broken_reason is None and not (self._local_ended and self._remote_ended):
            code = ErrorCode.CANCEL if cancel else ErrorCode.CONNECT_ERROR
            self.session.reset(self.stream_id, code)
        self.break_stream("reset by the proxy", by_peer=False)
