"""One direction of a tunnel as WebSocket frames: a :class:`Leg` (a frame tracker and the
drain's Close for its sink).

Rules (RFC 6455 §5.5.1, §7.1; the drain's side of them is in ``going_away.py``):

* Every byte of a direction is fed to its leg, in order, when the tunnel takes it from the
  source; the bytes still pass unchanged. The leg knows each side's close code (the first
  Close frame its source sent) and whether the bytes handed on end at a frame boundary.
* A Close of ours goes into a sink only at a boundary (between two frames; between the
  fragments of a message is one, §5.4), never into a frame.
* Once our Close went into a sink, no byte of the source goes there any more (an endpoint
  sends nothing after its Close, and one Close only): the source's bytes are fed (to learn
  its own close code) and dropped.
* A leg whose source sent a Close already, or whose bytes are not frames, gets none of ours.
"""

from __future__ import annotations

from typing import Protocol

import trio

from h2ws_proxy.relay.outcome import Side
from h2ws_proxy.websocket.frames import FrameTracker

Bytes = bytes | bytearray | memoryview


class UntrackedReporter(Protocol):
    """Who logs that a side's bytes are not WebSocket frames (a tunnel's record)."""

    def log_untracked(self, side: Side, reason: str) -> None: ...


class Leg(FrameTracker):
    """Source → sink of one tunnel: client → backend (masked frames) or backend → client."""

    __slots__ = ("_reporter", "busy", "close", "draining", "injected", "sending")

    #: The Close frame to put into the sink (set by :meth:`start_draining`).
    close: bytes

    def __init__(self, upward: bool, reporter: UntrackedReporter | None = None) -> None:
        """``upward``: client → backend (masked frames); ``reporter`` is told when the
        bytes turn out not to be frames (an object, not a bound method: one object fewer
        per idle tunnel)."""
        self._start(0x80 if upward else 0)  # one call, no enum: built twice per tunnel
        self._reporter = reporter
        #: A pump holds bytes of this direction that it has not yet written to the sink
        #: (the drain's closer leaves the sink to it then).
        self.busy = False
        #: The drain asked for a Close into the sink: its bytes go through :meth:`take`
        #: (also once the Close went: from then on they are dropped).
        self.draining = False
        #: Our Close went, or is going, into the sink: the source's bytes are dropped.
        self.injected = False
        #: Set once the closer task's send of our Close is over (None: it sends none).
        self.sending: trio.Event | None = None

    @property
    def source(self) -> Side:
        return Side.CLIENT if self._mask_bit else Side.BACKEND

    def tracking_lost(self, reason: str) -> None:
        if not self.injected:
            self.draining = False  # no boundary to wait for: the bytes just pass
        if self._reporter is not None:
            self._reporter.log_untracked(self.source, reason)

    def start_draining(self, frame: bytes) -> None:
        """The drain wants ``frame`` (a Close) in the sink, unless the source sent its own
        Close already (the sink has one: a second is not allowed) or the bytes are not
        frames."""
        if self.close_code is None and self.lost is None and not self.injected:
            self.draining, self.close = True, frame

    def take(self, data: Bytes) -> tuple[Bytes, bool]:
        """A draining leg's next chunk from the source: the part of it that still goes to
        the sink, and whether our Close goes right after that part (once only)."""
        if self.injected or not self.draining:
            self.feed(data)
            return (b"" if self.injected else data), False
        cut = self.pass_to_boundary(data)
        if cut is None:
            return data, False  # the frame goes on past this chunk (or tracking was lost)
        if cut < len(data):
            self.feed(memoryview(data)[cut:])
        self.injected = True
        return memoryview(data)[:cut], True

    def may_inject_now(self) -> bool:
        """Whether the closer may send our Close now: wanted, not yet gone, nothing of the
        source's in flight to the sink, and the sink has whole frames."""
        return self.draining and not self.injected and not self.busy and self.at_boundary
