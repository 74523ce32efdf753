"""The state a tunnel's two directions share: its ends, counters, timers and scope.

Rules:

* One cancel scope per tunnel holds both timers (idle, half-closed) as its deadline, and
  cancelling it ends the tunnel; the deadline moves lazily, never early and at most
  ``TIMER_SLACK_S`` late (see :class:`Relay`).
* A failure of one side ends the tunnel as that side's abort, unless it had ended already.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from h2ws_proxy.relay.outcome import RelayEnd, RelayStats, Side
from h2ws_proxy.transport.capabilities import PollableSocket

#: Largest read from either side. 64 KiB matches the common socket buffer and h2's window.
READ_SIZE = 65536
#: How late the idle and half-closed timeouts may fire (see ``Relay``): the price of not
#: moving a trio deadline on every message.
TIMER_SLACK_S = 0.5


class PushableClient(Protocol):
    """A client stream that takes bytes synchronously (see ``H2Stream.send_now``)."""

    def send_now(self, data: memoryview) -> int: ...
    def end_now(self) -> None: ...
    def wake_receiver(self) -> None: ...
    def set_on_writable(self, callback: Callable[[], None] | None) -> None: ...
    def backlogged(self) -> bool: ...
    def call_when_drained(self, callback: Callable[[], None]) -> None: ...
    def set_forwarder(
        self, forward: Callable[[bytes], int] | None, end: Callable[[], bool] | None = None
    ) -> None: ...


class SideBroke(Exception):
    """One side of the tunnel failed."""

    def __init__(self, side: Side) -> None:
        super().__init__(side)
        self.side = side


@dataclass(slots=True)
class Relay:
    """The state both pumps share: one cancel scope for the whole tunnel.

    The idle and half-closed timeouts are that scope's deadline, moved on as bytes flow,
    rather than watcher tasks: a task and its frames cost more memory per idle tunnel than
    anything else here. Moving a trio deadline is a heap operation, though, too costly per
    message (bench/README.md); so the deadline moves only once the last activity is
    ``slack`` past the last move, and is set ``slack`` late. A timer thus fires between
    its timeout and timeout + slack after the last byte moved: never early, at most
    ``TIMER_SLACK_S`` late.
    """

    client: trio.abc.HalfCloseableStream
    backend: trio.abc.HalfCloseableStream
    stats: RelayStats
    scope: trio.CancelScope
    #: The client stream as one that takes bytes synchronously, if it is one.
    pushable: PushableClient | None = None
    #: The backend stream as a socket that never waits, if it is one.
    backend_socket: PollableSocket | None = None
    idle_timeout_s: float = 0.0
    half_closed_timeout_s: float = 0.0
    #: The backend ended its side cleanly (EOF) and everything it sent was delivered.
    backend_done: bool = False
    #: Since when one direction has ended (None while both are open).
    half_closed_since: float | None = None
    #: How the tunnel ends if the scope's deadline is what stops it.
    timer_end: RelayEnd = RelayEnd.IDLE_TIMEOUT
    #: ``stats.last_activity`` when the deadline was last set.
    armed_at: float = -math.inf

    def activity(self) -> None:
        """Bytes moved: both timers start over (the deadline follows within the slack)."""
        now = self.stats.last_activity = trio.current_time()
        if now - self.armed_at >= TIMER_SLACK_S:
            self._arm()

    def half_closed(self) -> None:
        """One direction ended cleanly: from now on the other one is on a timer."""
        if self.half_closed_since is None:
            self.half_closed_since = trio.current_time()
            self._arm()

    def _arm(self) -> None:
        self.armed_at = self.stats.last_activity
        deadline, end = math.inf, RelayEnd.IDLE_TIMEOUT
        if self.idle_timeout_s > 0:
            deadline = self.stats.last_activity + self.idle_timeout_s
        if self.half_closed_since is not None and self.half_closed_timeout_s > 0:
            since = max(self.half_closed_since, self.stats.last_activity)
            if since + self.half_closed_timeout_s < deadline:
                deadline, end = since + self.half_closed_timeout_s, RelayEnd.HALF_CLOSED_TIMEOUT
        self.scope.deadline, self.timer_end = deadline + TIMER_SLACK_S, end

    def settle_end(self, *, cancelled: bool) -> None:
        """Once the tunnel has stopped (``cancelled``: by its scope's cancellation): how it
        ended, unless a failure said so.

        Not a failure: both directions finished (clean), a timer fired (its end), or the
        caller cancelled the scope (stays CANCELLED).
        """
        if self.stats.end is RelayEnd.CANCELLED:
            if not cancelled:
                self.stats.end = RelayEnd.CLEAN
            elif trio.current_time() >= self.scope.deadline:
                self.stats.end = self.timer_end

    def fail(self, side: Side) -> None:
        if self.stats.end is RelayEnd.CANCELLED:
            self.stats.end = side.aborted
        self.scope.cancel()
