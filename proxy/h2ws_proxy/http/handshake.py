"""The WebSocket opening handshake's client leg: the client's request in, our answer out. Pure.

Theory of operation:

* A frontend turns the client's request into a protocol-neutral :class:`WebSocketRequest`:
  :func:`parse_extended_connect` for an RFC 8441 extended CONNECT (HTTP/2),
  :func:`parse_h1_upgrade` for a classic ``GET`` + ``Upgrade: websocket`` (HTTP/1.1).
* :mod:`~h2ws_proxy.http.backend_handshake` makes the backend's upgrade from it and checks
  the backend's ``101``, which gives a :class:`BackendAccepted`.
* :func:`h2_success_headers` / :func:`h1_switching_headers` build the answer to the client
  from that.

Rules: header names are lowercase ``bytes``. Hop-by-hop fields never cross the proxy in
either direction (RFC 9110 §7.6.1; :mod:`~h2ws_proxy.http.fields`). A request that breaks
RFC 8441 §4 or RFC 6455 §4.2.1 raises :class:`ClientProtocolError` with the status to answer.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import h11
from wsproto.utilities import generate_accept_token

from h2ws_proxy.errors import ClientProtocolError
from h2ws_proxy.http.fields import end_to_end_request_headers, split_header_list
from h2ws_proxy.http.grammar import AUTHORITY_PATTERN
from h2ws_proxy.http.paths import split_target
from h2ws_proxy.http.request_head import H2RequestHead

__all__ = [
    "WEBSOCKET_VERSION",
    "BackendAccepted",
    "WebSocketRequest",
    "extension_names",
    "h1_switching_headers",
    "h2_success_headers",
    "parse_extended_connect",
    "parse_h1_upgrade",
]

Header = tuple[bytes, bytes]

WEBSOCKET_VERSION = b"13"  # RFC 6455 §4.1
_VERSION_HEADER: tuple[Header, ...] = ((b"sec-websocket-version", WEBSOCKET_VERSION),)


@dataclass(frozen=True, slots=True)
class WebSocketRequest:
    """A client's request to open a WebSocket, whatever protocol it came in on."""

    #: ``b"h2"`` or ``b"h1"``: which frontend took it (for logs and metrics).
    front: str
    #: ``b"https"`` when the client reached us over TLS, else ``b"http"``.
    scheme: bytes
    authority: bytes | None
    #: The target (path and query) as routed: normalised (``http/paths.py``), or the
    #: client's own when ``path_refusal`` says why it is not.
    path: bytes
    #: Subprotocols offered, in the client's order of preference.
    subprotocols: tuple[bytes, ...]
    #: Extension names offered (parameters are the backend's business).
    extension_names: tuple[bytes, ...]
    #: End-to-end fields to forward, hop-by-hop and proxy-owned ones already removed.
    headers: tuple[Header, ...]
    #: The client's target when it differs from ``path`` (sent to a route with
    #: ``normalize_path = false``); None when they are the same bytes.
    raw_path: bytes | None = None
    #: Why normalisation refused the target: only a route with ``normalize_path = false``
    #: takes the request then (``relay/routing.py``).
    path_refusal: str | None = None


@dataclass(frozen=True, slots=True)
class BackendAccepted:
    """What the backend agreed to in its ``101``."""

    subprotocol: bytes | None
    extensions: bytes | None
    #: End-to-end fields of the 101 to pass to the client (set-cookie, the sec-websocket-*
    #: choices); hop-by-hop ones and the accept token removed.
    headers: tuple[Header, ...]


def extension_names(values: list[bytes]) -> tuple[bytes, ...]:
    """The extension names in ``sec-websocket-extensions`` values, lowercase, in order."""
    return tuple(item.split(b";", 1)[0].strip().lower() for item in split_header_list(values))


#: Requests that passed lately, by head and flags (see ``request_head._PASSED``): small ones,
#: a few, the map emptied when full.
_PASSED: dict[tuple[H2RequestHead, bool, bool], WebSocketRequest] = {}
_PASSED_MAX_REQUESTS = 32
_PASSED_MAX_BYTES = 2048


def parse_extended_connect(
    head: H2RequestHead, *, connect_protocol_enabled: bool, tls: bool
) -> WebSocketRequest:
    """Check an HTTP/2 CONNECT request that carries ``:protocol`` (RFC 8441 §4).

    ``head`` already passed :func:`~h2ws_proxy.http.request_head.parse_h2_request_head`. Raises
    :class:`ClientProtocolError` with the status to answer (400, 501). The result depends
    on the arguments alone: a request that passed is remembered, as its head is.
    """
    key = (head, connect_protocol_enabled, tls)
    request = _PASSED.get(key)
    if request is None:
        request = _check_extended_connect(head, connect_protocol_enabled, tls)
        if sum([len(name) + len(value) for name, value in head.headers]) <= _PASSED_MAX_BYTES:
            if len(_PASSED) >= _PASSED_MAX_REQUESTS:
                _PASSED.clear()
            _PASSED[key] = request
    return request


def _check_extended_connect(
    head: H2RequestHead, connect_protocol_enabled: bool, tls: bool
) -> WebSocketRequest:
    """:func:`parse_extended_connect` without the memory."""
    if not connect_protocol_enabled:
        # RFC 8441 §3: a client MUST NOT send :protocol unless we advertised it; the session
        # passes the head through, so refusing it is our job.
        raise ClientProtocolError(
            "malformed request: :protocol sent but SETTINGS_ENABLE_CONNECT_PROTOCOL is off "
            "on this listener",
            stream_error=True,
        )
    if head.method != b"CONNECT":
        raise ClientProtocolError(
            "malformed request: :protocol on a non-CONNECT request", stream_error=True
        )
    # RFC 8441 §4: :authority itself, not a host field, names the target.
    if head.scheme is None or head.path is None or head.authority is None:
        raise ClientProtocolError(
            "malformed request: extended CONNECT needs :scheme, :path and :authority",
            stream_error=True,
        )
    # One pass over the fields, not one per name asked about (this runs per new tunnel).
    fields: dict[bytes, list[bytes]] = {}
    for name, value in head.headers:
        fields.setdefault(name, []).append(value)
    if b"content-length" in fields:
        raise ClientProtocolError(
            "malformed request: content-length on extended CONNECT", stream_error=True
        )
    assert head.protocol is not None
    if head.protocol.lower() != b"websocket":
        raise ClientProtocolError(
            f"unsupported :protocol {head.protocol.decode('ascii', 'replace')!r}; only "
            "'websocket' is proxied",
            status_hint=501,
        )
    if fields.get(b"sec-websocket-version") != [WEBSOCKET_VERSION]:
        raise ClientProtocolError(
            "sec-websocket-version must be 13", status_hint=400, extra_headers=_VERSION_HEADER
        )
    path, raw_path, path_refusal = split_target(head.path)
    return WebSocketRequest(
        front="h2",
        scheme=b"https" if tls else b"http",
        authority=head.authority,
        path=path,
        subprotocols=split_header_list(fields.get(b"sec-websocket-protocol", [])),
        extension_names=extension_names(fields.get(b"sec-websocket-extensions", [])),
        headers=end_to_end_request_headers(head.headers),
        raw_path=raw_path,
        path_refusal=path_refusal,
    )


def parse_h1_upgrade(request: h11.Request, *, tls: bool) -> tuple[WebSocketRequest, bytes]:
    """Check a classic HTTP/1.1 WebSocket upgrade (RFC 6455 §4.2.1).

    Returns the request and the client's ``Sec-WebSocket-Key`` (needed for our 101).
    Raises :class:`ClientProtocolError` (400, or 426 for a wrong version).
    """
    headers = [(name.lower(), value) for name, value in request.headers]

    def values(name: bytes) -> list[bytes]:
        return [value for field, value in headers if field == name]

    if request.method != b"GET":
        raise ClientProtocolError("a WebSocket upgrade must be a GET")
    if values(b"content-length") or values(b"transfer-encoding"):
        raise ClientProtocolError("a WebSocket upgrade request carries no body")
    if b"websocket" not in {item.lower() for item in split_header_list(values(b"upgrade"))}:
        raise ClientProtocolError("upgrade: websocket is missing")
    if b"upgrade" not in {item.lower() for item in split_header_list(values(b"connection"))}:
        raise ClientProtocolError("connection: upgrade is missing")
    if values(b"sec-websocket-version") != [WEBSOCKET_VERSION]:
        raise ClientProtocolError(
            "sec-websocket-version must be 13", status_hint=426, extra_headers=_VERSION_HEADER
        )
    key = _valid_client_key(values(b"sec-websocket-key"))
    hosts = values(b"host")
    # RFC 9112 §3.2: exactly one Host, and a valid one, or 400.
    if len(hosts) != 1 or not AUTHORITY_PATTERN.match(hosts[0]):
        raise ClientProtocolError("exactly one valid host field is required")
    path, raw_path, path_refusal = split_target(request.target)
    return (
        WebSocketRequest(
            front="h1",
            scheme=b"https" if tls else b"http",
            authority=hosts[0],
            path=path,
            subprotocols=split_header_list(values(b"sec-websocket-protocol")),
            extension_names=extension_names(values(b"sec-websocket-extensions")),
            headers=end_to_end_request_headers(headers),
            raw_path=raw_path,
            path_refusal=path_refusal,
        ),
        key,
    )


def _valid_client_key(keys: list[bytes]) -> bytes:
    if len(keys) != 1:
        raise ClientProtocolError("exactly one sec-websocket-key is required")
    try:
        decoded = base64.b64decode(keys[0], validate=True)
    except binascii.Error:
        decoded = b""
    if len(decoded) != 16:  # RFC 6455 §4.1: a base64-encoded 16-byte nonce
        raise ClientProtocolError("sec-websocket-key is not a base64-encoded 16-byte value")
    return keys[0]


def h2_success_headers(accepted: BackendAccepted) -> list[Header]:
    """The HTTP/2 ``:status 200`` that opens the tunnel (RFC 8441 §5)."""
    return [(b":status", b"200"), *accepted.headers]


def h1_switching_headers(accepted: BackendAccepted, client_key: bytes) -> list[Header]:
    """The fields of our own ``101`` to an HTTP/1.1 client, with the accept for its key."""
    return [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", generate_accept_token(client_key)),
        *accepted.headers,
    ]
