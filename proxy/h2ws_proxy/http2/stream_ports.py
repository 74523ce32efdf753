"""Around an :class:`~h2ws_proxy.http2.stream.H2Stream`: where its answer stands
(:class:`StreamPhase`), the relay's callbacks for a tunnel on it, and how its inbound
DATA is taken (:func:`take_chunk`).

The relay's callbacks are objects with methods rather than functions: a closure or a bound
method per tunnel is memory that every idle tunnel pays (bench/README.md, idle memory).
"""

from __future__ import annotations

import enum
from typing import Protocol


class Forwarder(Protocol):
    """Takes a tunnel's client bytes straight from the reader (see ``set_forwarder``)."""

    def forward_up(self, data: bytes) -> int: ...
    def pass_client_end(self) -> bool: ...
    def resume(self) -> None:
        """The receiver left (``detach_receiver``) and would have been woken now."""
        ...


class TunnelEnd(Protocol):
    """What ends a tunnel's stream (its reset, credit, access line) once the tunnel's run
    ended, where the run went on without the task that opened it (``H2Stream.tunnel_end``)."""

    def tunnel_ended(self) -> None: ...


class Cancellable(Protocol):
    """What cancels a stream's work (``H2Stream.scope``): a trio cancel scope, or a
    running tunnel that waits in no scope of its own while it idles (its relay)."""

    @property
    def cancel_called(self) -> bool: ...
    def cancel(self) -> None: ...


class WritableWatcher(Protocol):
    """Told when the window may have grown or the stream broke (``set_on_writable``)."""

    def client_writable(self) -> None: ...


class StreamPhase(enum.Enum):
    """Where a stream's answer stands, which decides what the client's DATA on it means."""

    #: A tunnel whose backend is being dialled and upgraded: DATA is a protocol error
    #: (RFC 8441 §5: the tunnel opens with our 2xx).
    OPENING = "opening"
    #: A tunnel whose 200 went out, or an ordinary request (its DATA is the body): the
    #: client's DATA is delivered.
    OPEN = "open"
    #: A final answer other than 200 started (a refusal, a relayed rejection): the
    #: client's late DATA is dropped, not an error.
    ANSWERED = "answered"


def take_chunk(inbound: list[bytes], limit: int) -> bytes:
    """Up to ``limit`` bytes from the front of a stream's ``inbound`` DATA, joining frames.

    A bulk sender's 16 KiB frames queue up while the tunnel writes; taking them together
    makes one write to the backend (one syscall) instead of one per frame.
    """
    chunk, taken = inbound[0], 1
    if len(chunk) < limit and len(inbound) > 1:
        size = len(chunk)
        while taken < len(inbound) and size < limit:
            size += len(inbound[taken])
            taken += 1
        chunk = b"".join(inbound[:taken])
    # One slice deletion per call: many tiny frames cost O(frames), not O(frames²).
    del inbound[:taken]
    if len(chunk) > limit:
        inbound.insert(0, chunk[limit:])
        chunk = chunk[:limit]
    return chunk
