"""When a shared backend connection must PING, or close for idleness: :class:`Liveness`.
Pure: the connection feeds it the times things happened and asks what is due.

Rules:

* With streams open and nothing read for ``ping_interval_s``, a PING is due (never with
  ``ping_interval_s`` <= 0); its answer clears it; none within ``ping_timeout_s`` ends the
  connection.
* With no stream open for ``idle_timeout_s``, closing (GOAWAY) is due.
* :meth:`next_check` is when to ask again (``math.inf``: never, until something changes).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class Due(enum.Enum):
    NOTHING = "nothing"
    PING = "ping"
    PING_TIMED_OUT = "ping_timed_out"
    IDLE = "idle"


@dataclass(slots=True)
class Liveness:
    """See the module's rules. Times are trio's clock."""

    idle_timeout_s: float
    ping_interval_s: float
    ping_timeout_s: float
    #: Since when no stream is open (meaningless while some are).
    idle_since: float
    last_read: float
    #: When our unanswered PING went out, or None.
    ping_sent_at: float | None = None

    def next_check(self, streams_open: bool) -> float:
        if self.ping_sent_at is not None:
            return self.ping_sent_at + self.ping_timeout_s
        if not streams_open:
            return self.idle_since + self.idle_timeout_s
        if self.ping_interval_s <= 0:
            return math.inf
        return self.last_read + self.ping_interval_s

    def due(self, now: float, streams_open: bool) -> Due:
        """What is due at ``now``; a PING counts as sent once this says so."""
        if self.ping_sent_at is not None:
            if now >= self.ping_sent_at + self.ping_timeout_s:
                return Due.PING_TIMED_OUT
            return Due.NOTHING
        if not streams_open:
            return Due.IDLE if now >= self.idle_since + self.idle_timeout_s else Due.NOTHING
        if self.ping_interval_s > 0 and now >= self.last_read + self.ping_interval_s:
            self.ping_sent_at = now
            return Due.PING
        return Due.NOTHING
