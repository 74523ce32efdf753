"""Per-stream state (RFC 9113 §5.1) and the memory of streams that closed.

Rules:

* A stream is idle until HEADERS opens it; it is then *open*, *half-closed (local)* after we
  sent END_STREAM, *half-closed (remote)* after the peer did, and *closed* after both, or
  after RST_STREAM either way (§5.1). Push is never enabled, so the reserved states never
  occur (a PUSH_PROMISE is a connection error, §8.4).
* :class:`Stream` keeps the two halves as booleans (``receiving``: the peer may still send;
  ``sending``: we may) and its windows as plain ints: the hot DATA path reads and writes
  nothing else.
* A closed stream leaves the table at once. :class:`ClosedStreams` remembers how the last
  :data:`CLOSED_MEMORY` of them closed, which decides what a late frame means (§5.1
  "closed"): after *our* RST_STREAM every frame is ignored (DATA still counts against the
  connection window); after the peer's RST_STREAM, DATA and HEADERS are a stream error
  STREAM_CLOSED, after END_STREAM both ways a connection error STREAM_CLOSED, and the rest
  is ignored. A stream forgotten
  from this memory is one never opened below the highest id (§5.1.1 closed it): DATA on
  it is a stream error STREAM_CLOSED, HEADERS a connection PROTOCOL_ERROR (ids must grow).
  The RFC lets an endpoint limit how long it ignores frames after a reset.
"""

from __future__ import annotations

from collections import OrderedDict
from enum import Enum


class StreamState(Enum):
    """RFC 9113 §5.1 states a stream in the table can be in."""

    #: Both sides may send.
    OPEN = "open"
    #: We sent END_STREAM; the peer may still send.
    HALF_CLOSED_LOCAL = "half-closed (local)"
    #: The peer sent END_STREAM; we may still send.
    HALF_CLOSED_REMOTE = "half-closed (remote)"


class ClosedBy(Enum):
    """How a stream closed: what a late frame on it means."""

    #: We sent RST_STREAM: ignore whatever still arrives.
    LOCAL_RESET = "local reset"
    #: The peer sent RST_STREAM.
    REMOTE_RESET = "remote reset"
    #: END_STREAM both ways (or forgotten).
    END_STREAM = "end stream"


#: How many closed streams are remembered (oldest forgotten first).
CLOSED_MEMORY = 1024


class Stream:
    """One stream in the table (not closed). Windows in bytes; see the module rules."""

    __slots__ = (
        "final_head_received",
        "final_head_sent",
        "local",
        "receiving",
        "recv_window",
        "send_window",
        "sending",
        "stream_id",
        "unacked",
    )

    def __init__(self, stream_id: int, local: bool, send_window: int, recv_window: int):
        # (Positional or keyword: a peer's HEADERS makes one positionally, which is about
        # half the cost of a keyword call.)
        self.stream_id = stream_id
        #: Opened by us (client role) rather than by the peer.
        self.local = local
        self.receiving = True
        self.sending = True
        #: What we may still send (the peer's credit), may go negative (RFC 9113 §6.9.2).
        self.send_window = send_window
        #: What the peer may still send us before it needs more credit.
        self.recv_window = recv_window
        #: Bytes consumed by the application and not yet credited back.
        self.unacked = 0
        #: A final (non-1xx) head went each way: the next HEADERS is a trailer section.
        self.final_head_received = False
        self.final_head_sent = False

    @property
    def state(self) -> StreamState:
        if self.receiving and self.sending:
            return StreamState.OPEN
        return StreamState.HALF_CLOSED_LOCAL if self.receiving else StreamState.HALF_CLOSED_REMOTE


class ClosedStreams:
    """How the most recently closed streams closed (bounded, see the module rules)."""

    __slots__ = ("closed",)

    def __init__(self) -> None:
        # An OrderedDict, not a dict: a dict used as a FIFO finds its oldest entry past
        # every deleted one still in its table (up to CLOSED_MEMORY of them per stream).
        #: By id, the oldest closed first (``H2Session.send_answer`` adds to it in place).
        self.closed: OrderedDict[int, ClosedBy] = OrderedDict()

    def add(self, stream_id: int, how: ClosedBy) -> None:
        closed = self.closed
        closed.pop(stream_id, None)
        closed[stream_id] = how
        if len(closed) > CLOSED_MEMORY:
            closed.popitem(last=False)

    def how(self, stream_id: int) -> ClosedBy | None:
        """How ``stream_id`` closed, or None if it is not remembered."""
        return self.closed.get(stream_id)
