"""How a relayed stream (a tunnel or an ordinary request) ends, and what it counted.

The two ends of every relay are a :class:`Side`; how the relay ended is one
:class:`RelayEnd`, which the log record and the frontends' reset decisions read.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Side(enum.Enum):
    """One end of a relay."""

    CLIENT = "client"
    BACKEND = "backend"

    @property
    def aborted(self) -> RelayEnd:
        """How a relay ends when this side fails."""
        return RelayEnd.CLIENT_ABORTED if self is Side.CLIENT else RelayEnd.BACKEND_ABORTED


class RelayEnd(enum.Enum):
    """How a tunnel or request ended, for its log line and metrics."""

    #: Both sides ended their stream; nothing was reset.
    CLEAN = "clean"
    #: The client reset its stream or its connection went away, or ended its side of a
    #: WebSocket without a Close frame (its backend then sees 1006, abnormal closure).
    CLIENT_ABORTED = "client_aborted"
    #: The backend reset or failed mid-tunnel, or ended its side of a WebSocket without a
    #: Close frame (its client then sees 1006, abnormal closure).
    BACKEND_ABORTED = "backend_aborted"
    #: No bytes either way for the idle timeout.
    IDLE_TIMEOUT = "idle_timeout"
    #: One side had ended; the other sent nothing more and did not end within the
    #: half-closed timeout (Firefox leaves its CONNECT stream open after a WebSocket close).
    HALF_CLOSED_TIMEOUT = "half_closed_timeout"
    #: The proxy cancelled it (shutdown, connection error).
    CANCELLED = "cancelled"
    #: The drain closed it: our Close 1001 went to the side(s) that had sent none, and both
    #: sides' Close frames were seen before it ended (``close_wait_s``).
    DRAINED = "drained"


@dataclass(slots=True)
class RelayStats:
    """Counters a tunnel (or request) keeps while it runs."""

    bytes_up: int = 0  # client → backend
    bytes_down: int = 0  # backend → client
    end: RelayEnd = RelayEnd.CANCELLED
    last_activity: float = 0.0
    #: The status code of the Close frame each side sent (1005: one without a code), None
    #: if it sent none (or its bytes were not WebSocket frames). Tunnels only.
    client_close: int | None = None
    backend_close: int | None = None
    #: Why a side broke (its stream's error, e.g. a backend's reset), for the log's error=.
    broke: str | None = None
