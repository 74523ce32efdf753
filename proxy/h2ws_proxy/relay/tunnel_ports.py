"""What a tunnel's relay needs of the streams and directions around it, and offers them.

Rules:

* These are protocols only: the HTTP/2 front end's stream (``H2Stream``) and the polled
  downward direction (``PolledDownward``) implement them; the relay (``relay_state.py``)
  holds them.
* Their callbacks are objects, not functions: a bound method or a closure is memory that
  every idle tunnel pays (bench/README.md, idle memory).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol


class WritableWatcher(Protocol):
    """Told (synchronously) that the client may take bytes again (``PolledDownward``)."""

    def client_writable(self) -> None: ...


class UpwardForwarder(Protocol):
    """Takes the client's bytes and end straight from the task that receives them
    (:class:`Relay`; see ``tunnel._offer_forwarder``)."""

    def forward_up(self, data: bytes) -> int: ...
    def pass_client_end(self) -> bool: ...
    def resume(self) -> None: ...


class Backlog(Protocol):
    """Whether a client connection has more output queued than producers may add to."""

    def backlogged(self) -> bool: ...


class PushableClient(Protocol):
    """A client stream that takes bytes synchronously (see ``H2Stream.send_now``)."""

    @property
    def connection(self) -> Backlog:
        """What :meth:`backlogged` asks (a polled tunnel asks it directly, per chunk)."""
        ...

    def send_now(self, data: bytes | memoryview, end: bool = False) -> int:
        """How much of ``data`` went; ``end``: our side ends with it, if all of it went."""
        ...

    def receive_nowait(self, max_bytes: int | None) -> bytes | None: ...
    def park_receiver(self) -> Awaitable[object]: ...
    def end_now(self) -> None: ...
    def wake_receiver(self) -> None: ...
    def set_on_writable(self, watcher: WritableWatcher | None) -> None: ...
    def backlogged(self) -> bool: ...
    def call_when_drained(self, callback: Callable[[], None]) -> None: ...
    def set_forwarder(self, forwarder: UpwardForwarder | None) -> None: ...
    def adopt_scope(self, scope: Cancellable) -> None: ...
    def detach_receiver(self) -> None: ...

    #: Where a run that goes on without the task that opened it reports its end.
    tunnel_end: TunnelEnd | None


class TunnelEnd(Protocol):
    """The front end's part of a tunnel's end (its stream, its access line)."""

    def tunnel_ended(self) -> None: ...


class Cancellable(Protocol):
    """What cancels a stream's work: a trio cancel scope, or a running tunnel's
    :class:`Relay` (``PushableClient.adopt_scope``)."""

    @property
    def cancel_called(self) -> bool: ...
    def cancel(self) -> None: ...


class ClosingDownward(Protocol):
    """A downward direction that puts the drain's Close in itself (``PolledDownward``)."""

    #: The backend's end was delivered, or this direction failed.
    done: bool
    #: The client's end was passed on by the reader: the upward pump sleeps until this
    #: direction finishes.
    wake_client_receiver: bool

    def inject(self) -> None: ...
