"""The client's side of one HTTP/2 stream: its DATA buffered for the stream's reader, and
the credit for it returned as it moves on (the base of
:class:`~h2ws_proxy.http2.stream.H2Stream`, which adds the sending side and the stream's
life).

Rules:

* The frontend's reader only *appends* to the inbound buffer and sets events (it never
  awaits a stream, so a slow stream cannot hold up the others). The buffer is bounded by
  the stream window we advertise: the peer may not send more than that unacknowledged.
* Credit for received bytes goes back one call late: ``receive_some`` acknowledges the
  bytes it handed out *on the previous call*, that is after the caller (the tunnel) wrote
  them onward. So the window tracks bytes that really moved, not bytes we hold. Padding is
  acknowledged at once: it is not data anyone consumes.
* ``receive_some`` makes exactly one checkpoint (its wait, or one yield when data was
  there): a trip through trio's scheduler per message costs.
* An ordinary request's DATA is held to the length its head declared (:meth:`count_body`).
"""

from __future__ import annotations

from collections.abc import Awaitable

import trio

from h2ws_proxy.http2.proxy_session import ProxySession
from h2ws_proxy.http2.stream_ports import Forwarder, take_chunk
from h2ws_proxy.transport.wakeup import Wakeup

#: Largest request-body chunk handed to the exchange at once.
BODY_READ_SIZE = 65536

#: The ``_readable`` of every stream whose client side ended with its HEADERS (most
#: requests): nothing can arrive on such a stream any more (DATA after END_STREAM is the
#: session's stream error), so :meth:`StreamInbound.receive_nowait` always has an answer
#: (b"", or the break) and nobody ever waits here; what would wake a reader (a break) only
#: notes a set. One object for all of them, not one per request.
ENDED_READABLE = Wakeup()


class StreamInbound(trio.abc.HalfCloseableStream):
    """The receiving half of :class:`~h2ws_proxy.http2.stream.H2Stream` (whose
    ``__init__`` sets these slots with its own: one call per stream)."""

    # Slots: one per idle tunnel, so its attribute storage is memory every tunnel pays.
    __slots__ = (
        "_consumed_unacknowledged",
        "_detached",
        "_forwarder",
        "_inbound",
        "_inbound_bytes",
        "_readable",
        "_receiving",
        "_remote_ended",
        "broken_reason",
        "declared_length",
        "received_length",
        "session",
        "stream_id",
    )

    session: ProxySession
    stream_id: int
    _inbound: list[bytes]
    _inbound_bytes: int
    _consumed_unacknowledged: int
    _remote_ended: bool
    #: Set when the peer reset the stream or the connection went away.
    broken_reason: str | None
    #: Bytes, the end or a break arrived (for ``receive_some``).
    _readable: Wakeup
    #: Set by a tunnel while it copies this stream upward (see ``set_forwarder``).
    _forwarder: Forwarder | None
    _receiving: bool
    _detached: bool
    #: For an ordinary request: the body length the client declared (None: unknown), and
    #: what arrived.
    declared_length: int | None
    received_length: int

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

    @property
    def buffered_bytes(self) -> int:
        return self._inbound_bytes

    @property
    def remote_ended(self) -> bool:
        return self._remote_ended

    # ---- trio.abc.HalfCloseableStream's receiving half ----

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
