"""The sending side of one HTTP/2 client connection: the only writer of the client socket.

Rules:

* Only the writer task (:meth:`ClientWriter.run`) awaits writes to the client, except that
  whoever ends an output batch may first send what the kernel takes at once while the
  writer is idle (:meth:`ClientWriter.end_batch`): a synchronous call, so nothing
  interleaves with it and no write lock is needed (STYLE R1).
* The session appends every frame to its ``outbound`` buffer and calls :meth:`wake` (its
  ``on_output``, set here); the
  writer takes the whole buffer per write. A write that must wait is timed per slice, so
  a slow but live client is never cut off for the size of a batch, only for taking none
  of our bytes for ``send_timeout_s``.
* Over TLS (``whole_writes``) a record written inline that had to wait must be repeated
  with at least the same bytes, so inline writes there go only when the writer's first
  slice would hold all of them.
* Memory: producers wait while more than ``PRODUCER_HIGH_WATER`` bytes are queued or in
  flight (:meth:`wait_outbound_drained`, :meth:`backlogged` with
  :meth:`call_when_drained`), and the reader stops reading above ``READER_HIGH_WATER``.
* Streams that found a flow-control window shut register here (:meth:`wait_for_window`)
  and are woken by the frontend when credit arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import trio

from h2ws_proxy.http2.proxy_session import ProxySession
from h2ws_proxy.transport.capabilities import ClientStream
from h2ws_proxy.transport.errors import STREAM_GONE
from h2ws_proxy.transport.wakeup import Wakeup

if TYPE_CHECKING:
    from h2ws_proxy.http2.stream import H2Stream

#: Small enough that a slow but live reader makes progress per slice; one TLS record.
SEND_SLICE = 16384
#: The session's ``on_output`` inside an output batch: a builtin that takes no argument and
#: does nothing that matters (``bool()`` is False), so no Python frame per call.
_NO_WAKE_IN_BATCH = cast(Callable[[], None], bool)
PRODUCER_HIGH_WATER = 256 * 1024
READER_HIGH_WATER = 1024 * 1024


class ClientWriter:
    """Sends a connection's output to the client; what producers wait on to send more."""

    def __init__(
        self,
        client: ClientStream,
        session: ProxySession,
        send_timeout_s: float,
        *,
        on_client_gone: Callable[[], None],
        count_abuse: Callable[[str], None],
        log: Callable[..., None],
    ) -> None:
        self._client = client
        self._session = session
        #: ``wake`` as the session's ``on_output`` outside batches (made once).
        self._wake: Callable[[], None] = self.wake
        session.on_output = self._wake
        self._send_timeout_s = send_timeout_s
        self._on_client_gone = on_client_gone
        #: Counts a kind of client misbehaviour (``h2ws_abuse_total{kind}``).
        self._count_abuse = count_abuse
        self._log = log
        #: Bytes the writer took from the session and is sending now (the reader reads it).
        self.in_flight = 0
        self._outbound_ready = Wakeup()  # only the writer waits on it
        #: Inside an output batch (see ``begin_batch``).
        self._batching = False
        self._drained = trio.Event()
        #: A task waits on ``_drained`` (see ``_signal_drained``).
        self._drain_waited = False
        #: The reader is done: the writer ends once the output is out.
        self.reader_done = False
        self.done = trio.Event()
        #: The writer found the client gone (broken, or no progress within the timeout).
        self.client_gone = False
        #: Producers without a task (tunnels driven by backend readiness) waiting for the
        #: client to take our output (see ``call_when_drained``).
        self._drain_callbacks: list[Callable[[], None]] = []
        #: Streams that found a flow-control window shut (see ``take_window_waiters``).
        self._window_waiters: set[H2Stream] = set()

    # ---- the writer task ----

    async def run(self) -> None:
        session = self._session
        try:
            while True:
                if not session.outbound:
                    if self.reader_done:
                        return
                    await self._outbound_ready.wait()
                    continue
                # Every wake-up so far announced output that goes out with this write: a
                # remembered one would only bring the writer back to find nothing (a
                # scheduler trip per answer when a request task queues head, data and end).
                self._outbound_ready.discard()
                data = session.take_outbound()
                self.in_flight = len(data)
                try:
                    sent = await self._send_with_progress(data)
                finally:
                    self.in_flight = 0
                if not sent:
                    # The client is gone or takes nothing: end the connection as if it had
                    # closed it (its tunnels end as aborted by the client).
                    self.client_gone = True
                    self._on_client_gone()
                    return
                self._signal_drained()
        finally:
            self.done.set()

    async def _send_with_progress(self, data: bytearray) -> bool:
        """Send ``data``; False if the client broke or took no slice within the timeout."""
        view = memoryview(data)
        client = self._client
        whole_writes = client.whole_writes
        try:
            if not whole_writes:
                # Usually the kernel takes it all at once: then no timer is needed.
                view = view[client.send_nowait(view) :]
            for start in range(0, len(view), SEND_SLICE):
                piece = view[start : start + SEND_SLICE]
                if whole_writes:
                    # One slice is one TLS record, written whole or not at all; most go at
                    # once without a timer (a cancel scope and a deadline in trio's heap per
                    # record: bench/README.md). One that must wait is repeated below with
                    # the same bytes, as OpenSSL requires.
                    piece = piece[client.send_nowait(piece) :]
                    if not piece:
                        continue
                with trio.move_on_after(self._send_timeout_s) as timeout:
                    await client.send_all(piece)
                if timeout.cancelled_caught:
                    self._log("client.send_timeout", send_timeout_s=self._send_timeout_s)
                    self._count_abuse("client_send_timeout")
                    return False
        except STREAM_GONE:
            return False
        return True

    # ---- output batches (R1) ----

    def wake(self) -> None:
        """The session queued output (its ``on_output`` callback outside batches)."""
        if not self._batching:  # (in a batch, its end sends what is queued: see end_batch)
            self._outbound_ready.set()

    def finish(self) -> None:
        """The reader is done: flush what is queued, then let the writer end."""
        self.reader_done = True
        self._outbound_ready.set()

    def begin_batch(self) -> None:
        """Output from here to :meth:`end_batch` is sent once, at the end.

        The reader (one read's frames) and the backend poller (one round of ready
        backends) bracket their work with these. At the end, if the writer is idle, the
        output goes straight to the client's socket without waking the writer (a trip
        through trio's scheduler per message saved): over plain TCP as far as the kernel
        takes it; over TLS only whole and only up to one of the writer's slices. The rest
        is the writer's.

        Inside a batch the session's ``on_output`` is a C callable that does nothing: the
        batch's end looks at the session's output itself, so a message costs no Python
        call to say it queued some.
        """
        self._batching = True
        self._session.on_output = _NO_WAKE_IN_BATCH

    def begin_own_batch(self) -> bool:
        """:meth:`begin_batch` unless a batch is open; True if this one is the caller's to
        end. For a task's stretch without a yield (an exchange relaying one backend read)."""
        if self._batching:
            return False
        self._batching = True
        self._session.on_output = _NO_WAKE_IN_BATCH
        return True

    def end_batch(self) -> None:
        self._batching = False
        session = self._session
        session.on_output = self._wake
        # Output queued in the batch (or before it, which the writer has not taken yet: the
        # same bytes go now rather than at its turn).
        if session.outbound and not self._send_inline():
            self._outbound_ready.set()

    def _send_inline(self) -> bool:
        """Send queued output now, without waiting; True if nothing is left for the writer."""
        client, outbound = self._client, self._session.outbound
        if self.in_flight or self.reader_done:
            return not outbound  # the writer is mid-send (or done)
        if client.whole_writes and len(outbound) > SEND_SLICE:
            # A TLS write that has to wait must be repeated with at least the same bytes:
            # the writer's first slice (``_send_with_progress``) must hold all of them.
            return False
        try:
            sent = client.send_nowait(outbound)
        except STREAM_GONE:
            return False  # the writer meets the error and ends the connection
        if sent:
            del outbound[:sent]
            if self._drain_waited or self._drain_callbacks:  # (its test first: no call)
                self._signal_drained()
        return not outbound

    def _signal_drained(self) -> None:
        """Output went to the client: wake whoever waits for it to drain.

        The event is replaced only when a task waited on it (usually nobody does, and a new
        ``trio.Event`` per message costs CPU).
        """
        if self._drain_waited:
            self._drain_waited = False
            self._drained.set()
            self._drained = trio.Event()
        if self._drain_callbacks:
            self._call_drain_callbacks()

    # ---- backpressure (the streams' ConnectionPort) ----

    def outbound_bytes(self) -> int:
        return len(self._session.outbound) + self.in_flight

    def backlogged(self) -> bool:
        """Producers should stop adding output until :meth:`call_when_drained` calls back."""
        # ``outbound_bytes`` inline: asked once per message by a polled tunnel.
        return len(self._session.outbound) + self.in_flight > PRODUCER_HIGH_WATER

    def call_when_drained(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` from the writer once output is below the producers' bound."""
        self._drain_callbacks.append(callback)

    def _call_drain_callbacks(self) -> None:
        if self._drain_callbacks and not self.backlogged():
            callbacks, self._drain_callbacks = self._drain_callbacks, []
            for callback in callbacks:
                callback()

    async def wait_outbound_below(self, limit: int) -> None:
        while self.outbound_bytes() > limit:
            self._drain_waited = True
            await self._drained.wait()

    async def wait_outbound_drained(self) -> None:
        """Wait until the client has taken enough of our output (producer backpressure)."""
        if self.outbound_bytes() > PRODUCER_HIGH_WATER:
            await self.wait_outbound_below(PRODUCER_HIGH_WATER)
        else:
            await trio.lowlevel.checkpoint()

    async def wait_outbound_drained_lean(self) -> None:
        """As :meth:`wait_outbound_drained`, but no yield when there is room.

        For ``H2Stream.send_all``: its callers receive next, which yields, so a
        second trip through the scheduler per message only costs CPU.
        """
        if self.outbound_bytes() > PRODUCER_HIGH_WATER:
            await self.wait_outbound_below(PRODUCER_HIGH_WATER)
        else:
            await trio.lowlevel.checkpoint_if_cancelled()

    def wait_for_window(self, stream: H2Stream) -> None:
        """``stream`` could not send all it had: wake it when credit arrives."""
        self._window_waiters.add(stream)

    def forget_window_waiter(self, stream: H2Stream) -> None:
        self._window_waiters.discard(stream)

    def take_window_waiters(self) -> set[H2Stream]:
        """The streams waiting for credit, handed over (the frontend wakes them)."""
        waiters, self._window_waiters = self._window_waiters, set()
        return waiters
