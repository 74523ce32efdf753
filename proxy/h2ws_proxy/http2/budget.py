"""A sliding-window event budget: "at most N of these within W seconds".

Used against cheap-to-send, costly-to-handle abuse of HTTP/2 (rapid reset, floods of empty
frames): each event spends from the budget, and once more than ``limit`` fall within the
last ``window_s`` seconds the caller closes the connection. Time comes from the caller
(``trio.current_time()``), so tests drive it with a MockClock. Memory is bounded by
``limit + 1`` timestamps.
"""

from __future__ import annotations

from collections import deque


class SlidingWindowBudget:
    """Counts events in the last ``window_s`` seconds against ``limit``."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._times: deque[float] = deque(maxlen=limit + 1)

    def spend(self, now: float) -> bool:
        """Record one event at ``now``; True once the budget is exceeded."""
        self._times.append(now)
        while self._times[0] < now - self.window_s:
            self._times.popleft()
        return len(self._times) > self.limit

    def __len__(self) -> int:
        return len(self._times)
