"""What an HTTP/2 stream asks of its connection besides the session.

The frontend's writer (:class:`~h2ws_proxy.http2.client_writer.ClientWriter`) provides it:
output backpressure and wake-ups for credit. Streams never reach the frontend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from h2ws_proxy.http2.stream import H2Stream


class ConnectionPort(Protocol):
    """What a stream asks of its connection besides the session: output backpressure and
    wake-ups for credit (the frontend provides it; streams never reach the frontend)."""

    def backlogged(self) -> bool:
        """Producers should stop adding output until :meth:`call_when_drained` calls back."""

    def call_when_drained(self, callback: Callable[[], None]) -> None: ...

    async def wait_outbound_drained(self) -> None:
        """Wait until the client has taken enough of our output; always a checkpoint."""

    async def wait_outbound_drained_lean(self) -> None:
        """As :meth:`wait_outbound_drained`, but no yield when there is room."""

    def wait_for_window(self, stream: H2Stream) -> None:
        """``stream`` could not send all it had: wake it when credit arrives."""
