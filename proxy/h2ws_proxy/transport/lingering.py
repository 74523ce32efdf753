"""Lingering close: read and drop what a client still sends for a moment before closing.

Closing a socket with unread input makes the kernel send a reset, which can destroy the
last thing we wrote (an error answer, a GOAWAY) before the client reads it (nginx's
lingering_close). Bounded in bytes and time, so a client cannot keep us here.
"""

from __future__ import annotations

from typing import Protocol

import trio

from h2ws_proxy.transport.errors import STREAM_GONE
from h2ws_proxy.transport.tls_stream import LeanTLSStream

LINGER_S = 2.0
LINGER_MAX_BYTES = 256 * 1024
_READ_SIZE = 65536


class Drainable(Protocol):
    """What lingering needs of a stream: reads (trio's streams and ours all have them)."""

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray: ...


async def linger_before_close(stream: Drainable, *, half_close: bool) -> None:
    """Drain ``stream`` until EOF or the time/byte bound; with ``half_close``, end our side
    first where the stream can (a FIN; over TLS close_notify then a FIN), so the peer sees
    the close at once while we still read."""
    budget = LINGER_MAX_BYTES
    try:
        if half_close and isinstance(stream, trio.abc.HalfCloseableStream):
            await stream.send_eof()
        elif half_close and isinstance(stream, LeanTLSStream):
            stream.end_now()
        with trio.move_on_after(LINGER_S):
            while budget > 0:
                data = await stream.receive_some(_READ_SIZE)
                if not data:
                    return
                budget -= len(data)
    except STREAM_GONE:
        return
