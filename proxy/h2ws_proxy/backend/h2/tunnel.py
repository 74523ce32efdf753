"""A WebSocket tunnel's backend leg over HTTP/2: an extended CONNECT on a shared connection.

:func:`open_h2_tunnel` is :func:`~h2ws_proxy.backend.upgrade.connect_and_upgrade` for a
server that speaks RFC 8441: the same result (a :class:`BackendUpgraded` whose stream is
the tunnel's :class:`~.channel.H2Channel`), the same errors, so the relay treats both
alike.

Rules:

* The CONNECT goes only on a connection whose server said SETTINGS_ENABLE_CONNECT_PROTOCOL
  = 1; a server that did not is a :class:`BackendProtocolError` (502) with the reason, or,
  for ``protocol = "auto"``, :class:`~.pool.SpeaksHttp11` (the caller upgrades over
  HTTP/1.1 on a connection of its own).
* ``connect_timeout_s`` covers getting a connection (the pool's), ``handshake_timeout_s``
  the answer; either running out is a timeout (504).
* A stream the server refused unprocessed (REFUSED_STREAM, above its GOAWAY, a connection
  lost before its SETTINGS) is sent again on another connection, up to ``ATTEMPTS`` in all:
  nothing of the client's reached the server yet.
* The 200 is judged by :func:`~h2ws_proxy.http.extended_connect.check_backend_200`; any
  other final status is :class:`BackendRejected` with its end-to-end fields and its body
  (up to ``max_rejection_body_bytes``), relayed as it came. 1xx heads are skipped.
"""

from __future__ import annotations

import trio

from h2ws_proxy.backend.h2.channel import H2Channel
from h2ws_proxy.backend.h2.pool import H2Backends, SpeaksHttp11
from h2ws_proxy.backend.upgrade import BackendUpgraded
from h2ws_proxy.config import BackendAddress, Limits
from h2ws_proxy.errors import (
    BackendProtocolError,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
)
from h2ws_proxy.h2session import ErrorCode, ResponseReceived, SessionUsageError
from h2ws_proxy.http.extended_connect import check_backend_200
from h2ws_proxy.http.fields import end_to_end_response_headers
from h2ws_proxy.http.h2_response import parse_h2_response_head
from h2ws_proxy.http.handshake import WebSocketRequest

Header = tuple[bytes, bytes]
ATTEMPTS = 3


async def open_h2_tunnel(
    backends: H2Backends,
    address: BackendAddress,
    headers: list[Header],
    request: WebSocketRequest,
    limits: Limits,
) -> BackendUpgraded:
    """Open a tunnel to ``address`` with the extended CONNECT ``headers``; the caller owns
    the returned channel. Raises what ``connect_and_upgrade`` raises, or SpeaksHttp11."""
    for _ in range(ATTEMPTS):
        connection = await backends.connection(address)
        if not connection.extended_connect:
            if address.protocol == "auto":
                raise SpeaksHttp11()
            raise BackendProtocolError(
                f"backend {address} does not take WebSocket over HTTP/2: its SETTINGS lack "
                "SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 (RFC 8441); enable it there, or "
                "speak HTTP/1.1 to it",
                outcome="no_extended_connect",
            )
        try:
            channel = connection.open_channel(headers)
        except SessionUsageError:
            continue  # full or going away since the pool picked it: pick again
        try:
            head = await _final_head(channel, address, limits)
        except BaseException:
            channel.close_now()
            raise
        if head is not None:
            return await _judged(channel, head, address, request, limits)
    raise BackendUnavailable(f"backend {address} refused the stream {ATTEMPTS} times")


async def _final_head(
    channel: H2Channel, address: BackendAddress, limits: Limits
) -> ResponseReceived | None:
    """The final response head; None if the server refused the stream unprocessed."""
    with trio.move_on_after(limits.handshake_timeout_s):
        try:
            while True:
                head = await channel.next_head()
                if isinstance(head, ResponseReceived):
                    return head
        except trio.BrokenResourceError as error:
            if channel.refused:
                channel.close_now()
                return None
            raise BackendUnavailable(
                f"backend {address} broke off the WebSocket's stream: {error}"
            ) from error
    raise BackendTimeout(
        f"backend {address} did not answer the extended CONNECT within "
        f"{limits.handshake_timeout_s:g}s"
    )


async def _judged(
    channel: H2Channel,
    head: ResponseReceived,
    address: BackendAddress,
    request: WebSocketRequest,
    limits: Limits,
) -> BackendUpgraded:
    try:
        status, fields = parse_h2_response_head(head.headers)
        if 200 <= status < 300:
            accepted = check_backend_200(status, fields, head.end_stream, request)
    except BaseException:
        channel.reset(ErrorCode.PROTOCOL_ERROR)
        raise
    if 200 <= status < 300:
        return BackendUpgraded(
            stream=channel,
            accepted=accepted,
            leftover=b"",
            on_close_handshake=channel.close_handshake_done,
        )
    try:
        body = await _rejection_body(channel, status, limits)
    finally:
        channel.close_now()
    raise BackendRejected(
        status,
        list(end_to_end_response_headers(fields, drop=frozenset({b"content-length"}))),
        body,
    )


async def _rejection_body(channel: H2Channel, status: int, limits: Limits) -> bytes:
    body = bytearray()
    with trio.move_on_after(limits.handshake_timeout_s):
        try:
            while chunk := await channel.receive_some():
                body += chunk
                if len(body) > limits.max_rejection_body_bytes:
                    raise BackendProtocolError(
                        f"backend's {status} answer has a body over "
                        f"max_rejection_body_bytes={limits.max_rejection_body_bytes}"
                    )
        except trio.BrokenResourceError:
            pass  # what came is relayed; the stream's end is the backend's business
    return bytes(body)
