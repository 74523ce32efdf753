"""One HTTP/2 stream seen as a ``trio.abc.HalfCloseableStream``, with HTTP/2 flow control
as its backpressure.

The receiving side (the client's DATA, its credit) is :class:`.stream_inbound.StreamInbound`.

Rules:

* ``send_all`` sends only what the peer's windows allow and waits for WINDOW_UPDATE
  otherwise, then waits until the connection's outbound buffer is below its bound: a client
  that does not read holds its backend back through us instead of filling our memory.
* Checkpoints cost a trip through trio's scheduler per message, so ``send_all`` yields only
  when it has to wait (window, outbound bound); otherwise it only checks for cancellation.
  Every caller receives between sends (the tunnel pumps, the exchange), like with
  ``socket_stream.LeanSocketStream``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import trio

from h2ws_proxy.h2session import ErrorCode, H2Session, StreamUnusable
from h2ws_proxy.http2.proxy_session import ProxySession
from h2ws_proxy.http2.request_scope import CancelNoted
from h2ws_proxy.http2.stream_inbound import BODY_READ_SIZE as BODY_READ_SIZE
from h2ws_proxy.http2.stream_inbound import ENDED_READABLE, StreamInbound
from h2ws_proxy.http2.stream_ports import Cancellable, Forwarder, TunnelEnd, WritableWatcher
from h2ws_proxy.http2.stream_ports import StreamPhase as StreamPhase  # (its old home)
from h2ws_proxy.transport.wakeup import Wakeup

#: The session's DATA frames for a send (``ProxySession.send_data`` is this and its
#: ``on_output``, which :meth:`H2Stream.send_now` calls itself).
_queue_data = H2Session.send_data

_new_stream = _new_noted = object.__new__
_OPEN = StreamPhase.OPEN  # (a module global: an enum member read from its class costs more)


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


class H2Stream(StreamInbound):
    """The client end of a tunnel on HTTP/2 stream ``stream_id`` of ``session``."""

    # Slots: one per idle tunnel, so its attribute storage is memory every tunnel pays.
    # (The receiving side's are :class:`StreamInbound`'s.)
    __slots__ = (
        "_local_ended",
        "_writable",
        "connection",
        "exchange",
        "on_writable",
        "phase",
        "reset_by_peer",
        "scope",
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
        #: grown or the stream broke (for ``send_all``). A stream whose client side ended
        #: with its HEADERS never waits to read: it shares ``ENDED_READABLE``.
        self._readable = ENDED_READABLE if ended else Wakeup()
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

    @classmethod
    def for_request(
        cls,
        session: ProxySession,
        connection: ConnectionPort,
        stream_id: int,
        ended: bool,
        declared_length: int | None,
    ) -> H2Stream:
        """The stream of an ordinary request (``exchange``, its phase OPEN: its DATA is the
        body, up to ``declared_length``), its work cancelled by a :class:`CancelNoted`
        until a task adopts a scope: ``__init__``'s stream with those set, made without its
        call through the type (once per request; a test holds the two equal)."""
        stream = _new_stream(cls)
        stream.session, stream.connection, stream.stream_id = session, connection, stream_id
        scope = stream.scope = _new_noted(CancelNoted)
        scope.cancel_called = False  # (``CancelNoted()``, without its call either)
        stream._inbound = []
        stream._inbound_bytes = stream._consumed_unacknowledged = stream.received_length = 0
        stream._remote_ended, stream._local_ended = ended, False
        stream.broken_reason = stream._writable = stream._forwarder = None
        stream.on_writable = stream.tunnel_end = stream.trailers = None
        stream.reset_by_peer = stream._receiving = stream._detached = False
        stream.phase = _OPEN
        stream._readable = ENDED_READABLE if ended else Wakeup()
        stream.exchange = True
        stream.declared_length = declared_length
        return stream

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
    def local_ended(self) -> bool:
        return self._local_ended

    # ---- trio.abc.HalfCloseableStream ----

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
        session = self.session
        try:
            # ``ProxySession.send_data`` without its frame (a relayed chunk's every send
            # comes here): the session's frames, then the writer told if any were queued.
            sent = _queue_data(session, self.stream_id, data, end)
        except StreamUnusable as error:
            raise trio.BrokenResourceError(str(error)) from error
        if sent or end:
            session.on_output()
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
