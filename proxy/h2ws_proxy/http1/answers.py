"""Whole short answers on an HTTP/1.1 client connection, each the connection's last.

Rules: every answer carries ``content-length`` and ``connection: close``, goes out in one
write, and is followed by a lingering close (so that the client still reads it); an answer
h11 refuses to express, or a client already gone, ends it silently.
"""

from __future__ import annotations

import h11
import trio

from h2ws_proxy.errors import ClientProtocolError, ProxyError
from h2ws_proxy.transport.errors import STREAM_GONE
from h2ws_proxy.transport.lingering import linger_before_close

Header = tuple[bytes, bytes]


async def send_proxy_error(
    client: trio.abc.Stream, conn: h11.Connection, error: ProxyError
) -> None:
    """Answer ``error``'s status and message (with a malformed request's extra fields)."""
    extra = error.extra_headers if isinstance(error, ClientProtocolError) else ()
    await send_error(client, conn, error.status_hint, error.message, extra)


async def send_error(
    client: trio.abc.Stream,
    conn: h11.Connection,
    status: int,
    reason: str,
    extra: tuple[Header, ...] = (),
) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8"), *extra]
    body = (reason + "\n").encode("utf-8", "replace")
    await send_response(client, conn, status, headers, body)


async def send_response(
    client: trio.abc.Stream,
    conn: h11.Connection,
    status: int,
    headers: list[Header] | tuple[Header, ...],
    body: bytes,
) -> None:
    """Send a complete answer and close: after a refused upgrade the connection ends."""
    all_headers = [
        *headers,
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    try:
        data = conn.send(h11.Response(status_code=status, headers=all_headers))
        if body:
            data += conn.send(h11.Data(data=body))
        data += conn.send(h11.EndOfMessage())
    except h11.LocalProtocolError:
        # The backend's answer cannot be expressed to this client (h11 refuses it).
        return
    try:
        await client.send_all(data)
        await linger_before_close(client, half_close=True)
    except STREAM_GONE:
        return
