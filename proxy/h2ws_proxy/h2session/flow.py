"""Flow-control arithmetic (RFC 9113 §5.2, §6.9) and our credit-return policy.

Rules:

* A window never exceeds 2^31-1: a WINDOW_UPDATE or a SETTINGS_INITIAL_WINDOW_SIZE change
  that would push a send window past it is a FLOW_CONTROL_ERROR, a stream error for a
  stream's window and a connection error for the connection's (§6.9.1, §6.9.2). A send
  window may go negative after INITIAL_WINDOW_SIZE shrinks (§6.9.2).
* DATA longer than what is left of either receive window is a FLOW_CONTROL_ERROR: a
  connection error for the connection window, a stream error for the stream's (§6.9.1). Its
  whole length (padding included) counts, even when the frame is then refused, unless the
  connection fails (§6.9).
* Credit policy (:func:`credit_due`): consumed bytes are returned with one WINDOW_UPDATE once
  they reach half of the window's target (the connection's and each stream's separately),
  so a steady reader costs one WINDOW_UPDATE per half window, never one per DATA frame,
  and a sender never waits on a window below half its size. A window the peer has used up
  entirely gets its credit sooner, once min(1024, target / 4) bytes are owed, so a sender
  stalled at zero restarts early (h2's policy too, which keeps the two comparable).
"""

from __future__ import annotations

from h2ws_proxy.h2session.frames import MAX_WINDOW


def credit_due(unacked: int, target: int, window: int) -> bool:
    """True when ``unacked`` consumed bytes should be credited back now, the peer having
    ``window`` bytes of credit left (see module rules)."""
    if unacked <= 0:
        return False
    return unacked >= target // 2 or (window <= 0 and unacked > min(1024, target // 4))


def window_overflows(window: int, delta: int) -> bool:
    """True if adding ``delta`` to ``window`` passes 2^31-1 (RFC 9113 §6.9.1)."""
    return window + delta > MAX_WINDOW
