"""Open a WebSocket over HTTP/2 for ``h2ws-proxy connect``: RFC 8441 extended CONNECT.

Rules:

* The connection is the proxy's own HTTP/2 backend client (:class:`H2BackendConnection`):
  it sends its preface and SETTINGS, and we open no stream before the server's SETTINGS
  arrived (RFC 8441 §3: ``:protocol`` only once the server said
  SETTINGS_ENABLE_CONNECT_PROTOCOL = 1). The wait is bounded by ``--connect-timeout-s``.
* A server whose SETTINGS lack that setting, or that ends the connection before sending any
  (an HTTP/1.1-only server reading our preface), does not take extended CONNECT:
  :func:`open_tunnel` returns None and the caller falls back or fails (``--http2-only``).
* The request: ``:method CONNECT``, ``:protocol websocket``, ``:scheme``, ``:path``,
  ``:authority``, ``sec-websocket-version: 13``, the offered subprotocols, the origin and
  ``-H`` fields with lowercase names (RFC 9113 §8.2.1); no ``Sec-WebSocket-Key`` (§5).
* ``:status 200`` opens the WebSocket; any other final status is a refusal (exit 4) whose
  line shows the status and the start of the body.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio

from h2ws_proxy.backend.h2.channel import H2Channel
from h2ws_proxy.backend.h2.connection import H2BackendConnection
from h2ws_proxy.client.options import ClientFailure, ConnectOptions, Exit
from h2ws_proxy.h2session import ResponseReceived, SessionUsageError
from h2ws_proxy.transport.errors import STREAM_GONE

Header = tuple[bytes, bytes]
#: How much of a refusal's body is read, and shown on its one line.
BODY_LIMIT = 64 * 1024
SHOWN_BODY = 200


@dataclass(frozen=True)
class Tunnel:
    channel: H2Channel
    headers: list[Header]


def new_connection(stream: trio.abc.Stream, label: str) -> H2BackendConnection:
    """An HTTP/2 client connection on ``stream``, for one WebSocket (run its ``run()``)."""
    return H2BackendConnection(
        stream,
        label,
        stream_window=1024 * 1024,
        max_header_list_size=64 * 1024,
        idle_timeout_s=24 * 3600.0,  # one stream for the whole session: never idle
        ping_interval_s=30.0,
        ping_timeout_s=15.0,
    )


def request_headers(options: ConnectOptions) -> list[Header]:
    target = options.target
    headers: list[Header] = [
        (b":method", b"CONNECT"),
        (b":protocol", b"websocket"),
        (b":scheme", target.scheme.encode()),
        (b":path", target.path.encode()),
        (b":authority", target.authority.encode()),
        (b"sec-websocket-version", b"13"),
    ]
    if options.subprotocols:
        headers.append((b"sec-websocket-protocol", ", ".join(options.subprotocols).encode()))
    if options.origin:
        headers.append((b"origin", options.origin.encode()))
    headers.extend((name.lower().encode(), value.encode()) for name, value in options.headers)
    return headers


async def wait_for_settings(connection: H2BackendConnection, timeout_s: float) -> bool:
    """True once the server's SETTINGS arrived; False if the connection ended first;
    ClientFailure (exit 3) if neither happened within ``timeout_s``."""
    with trio.move_on_after(timeout_s):
        async with trio.open_nursery() as nursery:

            async def first(event: trio.Event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(first, connection.settings_received)
            nursery.start_soon(first, connection.ended)
        return connection.settings_received.is_set()
    raise ClientFailure(
        Exit.CONNECTION,
        f"the server sent no HTTP/2 SETTINGS within {timeout_s:g} s; "
        "is it an HTTP/2 server (try --http1)?",
    )


async def open_tunnel(
    connection: H2BackendConnection, options: ConnectOptions, log: Callable[[str], None]
) -> Tunnel | None:
    """The extended CONNECT on ``connection`` (its ``run()`` already started); None when
    the server does not take extended CONNECT (module rules)."""
    if not await wait_for_settings(connection, options.connect_timeout_s):
        log(f"* no HTTP/2 SETTINGS from the server: {connection.failure}")
        return None
    enabled = connection.extended_connect
    log(f"* server SETTINGS: ENABLE_CONNECT_PROTOCOL = {int(enabled)}")
    if not enabled:
        return None
    try:
        channel = connection.open_channel(request_headers(options))
    except SessionUsageError as error:
        raise ClientFailure(Exit.CONNECTION, f"cannot open an HTTP/2 stream: {error}") from None
    log(f"* HTTP/2 stream {channel.stream_id}: CONNECT :protocol websocket {options.target.path}")
    with trio.move_on_after(options.connect_timeout_s):
        try:
            head = await channel.next_head()
            while not isinstance(head, ResponseReceived):
                log(f"< {_status(head.headers)} (informational)")
                head = await channel.next_head()
        except STREAM_GONE as error:
            raise ClientFailure(
                Exit.CONNECTION, f"the server gave no answer to the extended CONNECT: {error}"
            ) from None
        status = _status(head.headers)
        log(f"< :status {status}")
        for name, value in head.headers:
            if not name.startswith(b":"):
                log(f"< {name.decode('latin-1')}: {value.decode('latin-1')}")
        if status != 200:
            body = await _body(channel)
            raise ClientFailure(Exit.REFUSED, refusal_line(status, body))
        if head.end_stream:
            raise ClientFailure(
                Exit.CONNECTION, "the server's 200 ended the stream: no WebSocket to speak"
            )
        return Tunnel(channel, head.headers)
    raise ClientFailure(
        Exit.CONNECTION,
        f"no answer to the extended CONNECT within {options.connect_timeout_s:g} s",
    )


def refusal_line(status: int, body: bytes) -> str:
    """One line: the status and the start of the body (whitespace folded)."""
    text = " ".join(body.decode("utf-8", "replace").split())
    if len(text) > SHOWN_BODY:
        text = text[:SHOWN_BODY] + "…"
    shown = f"{status}: {text}" if text else str(status)
    return f"the server refused the WebSocket with {shown}; check the URL's path and headers"


def _status(headers: list[Header]) -> int:
    value = dict(headers).get(b":status", b"0")
    return int(value) if value.isdigit() else 0


async def _body(channel: H2Channel) -> bytes:
    """The response body, up to BODY_LIMIT bytes (what a broken stream left: as is)."""
    body = b""
    try:
        while len(body) < BODY_LIMIT and (chunk := await channel.receive_some()):
            body += chunk
    except STREAM_GONE:
        pass
    return body[:BODY_LIMIT]
