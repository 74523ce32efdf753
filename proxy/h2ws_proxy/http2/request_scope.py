"""What cancels an ordinary request's work before its exchange has a scope of its own.

A tunnel's stream adopts what cancels its opening when the opening starts (a trio scope
for a task's dial, the polled opening itself: ``http2/tunnel_opening.py``). An ordinary
request's never enters it: the exchange on a task makes
its own scope and adopts it (``H2Stream.adopt_scope``), and a request run without a task
(``http2/polled_request.py``) hears of the stream's break through the stream itself. Until
then a cancel (the client's reset, the connection's end) only has to be noted, to carry
over to the scope adopted later: :class:`CancelNoted` does that and nothing more, for much
less than a trio scope per request.
"""

from __future__ import annotations


class CancelNoted:
    """A stream's :class:`~h2ws_proxy.http2.stream_ports.Cancellable` that only notes a
    cancel (see the module)."""

    __slots__ = ("cancel_called",)

    def __init__(self) -> None:
        self.cancel_called = False

    def cancel(self) -> None:
        self.cancel_called = True
