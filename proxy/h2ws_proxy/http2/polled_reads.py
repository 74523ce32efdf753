"""A plain HTTP/2 connection's client reads, made by its poller's rounds instead of a task.

Where the run loop has a data plane (transport/data_plane.py), a connection over plain TCP
registers its client socket with its own poller, beside its tunnels' and requests' backend
sockets: a round then reads the client as it reads a backend, and the data plane serves the
round without a trip through the run loop. The connection's task only waits for the
reading to end (:meth:`PolledClientReads.run`).

Rules (the task's read loop's, frontend.py, kept):

* One read per round, at most ``READ_SIZE`` bytes, acted on at once, in the round's output
  batch; the socket stays ready if more is queued, so the connection's backends take their
  turns between its client's reads.
* No read while the output waiting for the client is above ``READER_HIGH_WATER`` (a client
  that sends PINGs and never reads their ACKs): the socket leaves the poller's set, and a
  task waits for the output to drain before it comes back.
* No read once the reading was told to end (its scope cancelled: a connection error, a
  calmed client, the lifetime's end, a client gone; or the connection's nursery
  cancelled): what comes after that is not acted on.
* An EOF or a broken socket ends the reading; an error acting on a read ends it too, and
  the connection's task raises that error, as the task's read loop would have.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from h2ws_proxy.http2.client_writer import READER_HIGH_WATER, ClientWriter
from h2ws_proxy.transport.capabilities import PollableSocket
from h2ws_proxy.transport.errors import STREAM_GONE
from h2ws_proxy.transport.poller import BackendPoller

#: Bytes per client read (the task's read loop reads as much).
READ_SIZE = 65536


class PolledClientReads:
    """The client socket's watcher in its connection's poller (see the module rules)."""

    __slots__ = (
        "_act",
        "_client",
        "_fd",
        "_nursery",
        "_poller",
        "_scope",
        "_writer",
        "ended",
        "error",
        "watched",
    )

    def __init__(
        self,
        client: PollableSocket,
        act: Callable[[bytes], bool],
        *,
        poller: BackendPoller,
        writer: ClientWriter,
        scope: trio.CancelScope,
        nursery: trio.Nursery,
    ) -> None:
        self._client = client
        self._fd = client.fileno()
        #: One read's bytes acted on; False once the connection is over.
        self._act = act
        self._poller = poller
        self._writer = writer
        #: The reading's scope: cancelled, nothing more is read.
        self._scope = scope
        self._nursery = nursery
        self.ended = trio.Event()
        #: What acting on a read raised (the connection's task raises it).
        self.error: Exception | None = None
        #: In the poller's epoll set (the poller's own).
        self.watched = False

    async def run(self) -> None:
        """Serve the reads until the reading ends (an EOF, the connection over, or the
        reading's scope cancelled); the socket is out of the poller's set when it returns."""
        if self._poller.closed:
            return
        self._poller.register(self._fd, self)
        try:
            await self.ended.wait()
        finally:
            self._poller.unregister(self._fd)
        if self.error is not None:
            raise self.error

    # ---- the poller's Watcher ----

    def on_readable(self) -> None:
        if (
            self.ended.is_set()
            or self._scope.cancel_called
            or self._nursery.cancel_scope.cancel_called
        ):
            self._poller.pause(self._fd)
            return
        writer = self._writer
        if writer.outbound_bytes() > READER_HIGH_WATER:
            self._poller.pause(self._fd)
            self._nursery.start_soon(self._resume_when_drained)
            return
        try:
            data = self._client.receive_nowait(READ_SIZE)
        except STREAM_GONE:
            self._end()
            return
        if data is None:
            return  # nothing after all (as a spurious event)
        if not data:
            self._end()
            return
        try:
            going_on = self._act(data)
        except Exception as error:
            self.error = error
            going_on = False
        if not going_on:
            self._end()

    def on_error(self) -> None:
        """The poller dropped the socket (it could not watch it again)."""
        self._end()

    def on_closed(self) -> None:
        """The poller ended: nothing reads the client any more."""
        self._end()

    # ----

    def _told_to_end(self) -> bool:
        return self._scope.cancel_called or self._nursery.cancel_scope.cancel_called

    def _end(self) -> None:
        self._poller.pause(self._fd)
        self.ended.set()

    async def _resume_when_drained(self) -> None:
        await self._writer.wait_outbound_below(READER_HIGH_WATER)
        if not (self.ended.is_set() or self._told_to_end()):
            self._poller.resume(self._fd)
