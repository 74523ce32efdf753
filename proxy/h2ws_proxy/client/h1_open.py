"""Open a WebSocket with an HTTP/1.1 upgrade for ``h2ws-proxy connect`` (RFC 6455 §4).

wsproto's ``WSConnection`` writes the ``GET`` with ``Upgrade: websocket`` and a fresh
``Sec-WebSocket-Key``, checks the 101's ``Sec-WebSocket-Accept``, and keeps the bytes that
followed the 101 for the frames: the same object then runs the WebSocket. A non-101 answer
is a refusal (exit 4) with its status and the start of its body; an answer that is not an
upgrade at all, or none within ``--connect-timeout-s``, a connection failure (exit 3).
"""

from __future__ import annotations

from collections.abc import Callable

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.utilities import RemoteProtocolError

from h2ws_proxy.client.h2_open import BODY_LIMIT, refusal_line
from h2ws_proxy.client.options import ClientFailure, ConnectOptions, Exit
from h2ws_proxy.transport.errors import STREAM_GONE

READ_SIZE = 65536


async def upgrade(
    stream: trio.abc.Stream, options: ConnectOptions, log: Callable[[str], None]
) -> WSConnection:
    """The upgraded connection (wsproto, open) over ``stream``; raises ClientFailure."""
    ws = WSConnection(ConnectionType.CLIENT)
    extra = [(name.encode(), value.encode()) for name, value in options.headers]
    if options.origin:
        extra.append((b"origin", options.origin.encode()))
    request = Request(
        host=options.target.authority,
        target=options.target.path,
        subprotocols=list(options.subprotocols),
        extra_headers=extra,
    )
    log(f"* HTTP/1.1: GET {options.target.path} with Upgrade: websocket")
    with trio.move_on_after(options.connect_timeout_s):
        try:
            await stream.send_all(ws.send(request))
            return await _answer(stream, ws, log)
        except STREAM_GONE as error:
            raise ClientFailure(
                Exit.CONNECTION, f"the connection broke during the HTTP/1.1 upgrade: {error}"
            ) from None
    raise ClientFailure(
        Exit.CONNECTION,
        f"no answer to the HTTP/1.1 upgrade within {options.connect_timeout_s:g} s",
    )


async def _answer(
    stream: trio.abc.Stream, ws: WSConnection, log: Callable[[str], None]
) -> WSConnection:
    rejected: RejectConnection | None = None
    body = b""
    while True:
        data = await stream.receive_some(READ_SIZE)
        if not data and rejected is None:
            raise ClientFailure(
                Exit.CONNECTION,
                "the server closed the connection without answering the HTTP/1.1 upgrade; "
                "does it speak HTTP/1.1 on this port?",
            )
        try:
            ws.receive_data(bytes(data) if data else None)
            # Lazily: the frames that came with the 101 stay queued in wsproto for the
            # message loop, which takes them before it reads again.
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    log("< 101 Switching Protocols")
                    _log_fields(event.extra_headers, log)
                    return ws
                if isinstance(event, RejectConnection):
                    rejected = event
                    log(f"< {event.status_code}")
                    _log_fields(event.headers, log)
                    if not event.has_body:
                        raise ClientFailure(Exit.REFUSED, refusal_line(event.status_code, b""))
                elif isinstance(event, RejectData):
                    body = (body + event.data)[:BODY_LIMIT]
                    if event.body_finished and rejected is not None:
                        status = rejected.status_code
                        raise ClientFailure(Exit.REFUSED, refusal_line(status, body))
        except RemoteProtocolError as error:
            raise ClientFailure(
                Exit.CONNECTION, f"the server's answer is not a WebSocket upgrade: {error}"
            ) from None
        if not data and rejected is not None:
            raise ClientFailure(Exit.REFUSED, refusal_line(rejected.status_code, body))


def _log_fields(headers: list[tuple[bytes, bytes]], log: Callable[[str], None]) -> None:
    for name, value in headers:
        log(f"< {name.decode('latin-1')}: {value.decode('latin-1')}")
