"""Translate WebSocket opening handshakes between the client's protocol and RFC 6455. Pure.

Theory of operation:

* A frontend turns the client's request into a protocol-neutral :class:`WebSocketRequest`:
  :func:`parse_extended_connect` for an RFC 8441 extended CONNECT (HTTP/2),
  :func:`parse_h1_upgrade` for a classic ``GET`` + ``Upgrade: websocket`` (HTTP/1.1).
* :func:`build_backend_upgrade` makes the HTTP/1.1 upgrade request toward the backend with
  a fresh ``Sec-WebSocket-Key`` of our own (RFC 8441 §5: HTTP/2 carries no nonce, so the
  proxy must make one), the client's end-to-end headers and X-Forwarded-*.
  Its bytes are written by :mod:`h2ws_proxy.http.upgrade_wire` (h11 judges what that cannot pass).
* :func:`check_backend_101` verifies the backend's ``101``: the accept token must match
  our key, and the subprotocol and extensions it picked must have been offered by the client
  (a browser fails the socket with no useful error otherwise). :func:`check_backend_accept`
  does the same for an h11 event.
* :func:`h2_success_headers` / :func:`h1_switching_headers` build the answer to the client.

Rules: header names are lowercase ``bytes``. Hop-by-hop fields never cross the proxy in
either direction (RFC 9110 §7.6.1), and the backend gets no field we did not mean to send.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass

import h11
from wsproto.utilities import generate_accept_token

from h2ws_proxy.config import RouteConfig
from h2ws_proxy.errors import BackendProtocolError, ClientProtocolError
from h2ws_proxy.http.grammar import AUTHORITY_PATTERN
from h2ws_proxy.http.request_head import H2RequestHead
from h2ws_proxy.http.upgrade_wire import UpgradeRequest, upgrade_request

Header = tuple[bytes, bytes]

WEBSOCKET_VERSION = b"13"  # RFC 6455 §4.1
_VERSION_HEADER: tuple[Header, ...] = ((b"sec-websocket-version", WEBSOCKET_VERSION),)

# RFC 9110 §7.6.1 plus the de-facto ones; also any field listed in Connection.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Fields the proxy owns on the backend leg: it sets them itself, so the client's copies go.
_REPLACED_TOWARD_BACKEND = frozenset(
    {
        b"host",
        b"content-length",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-accept",
    }
)
# With ``x_forwarded`` on, the proxy owns these: the client's claims are not trusted.
_FORWARDED_FIELDS = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"x-real-ip"}
)
# Fields of the backend's 101 that describe the handshake itself and stop at the proxy.
_HANDSHAKE_ONLY = frozenset({b"sec-websocket-accept", b"content-length"})


@dataclass(frozen=True, slots=True)
class WebSocketRequest:
    """A client's request to open a WebSocket, whatever protocol it came in on."""

    #: ``b"h2"`` or ``b"h1"``: which frontend took it (for logs and metrics).
    front: str
    #: ``b"https"`` when the client reached us over TLS, else ``b"http"``.
    scheme: bytes
    authority: bytes | None
    path: bytes
    #: Subprotocols offered, in the client's order of preference.
    subprotocols: tuple[bytes, ...]
    #: Extension names offered (parameters are the backend's business).
    extension_names: tuple[bytes, ...]
    #: End-to-end fields to forward, hop-by-hop and proxy-owned ones already removed.
    headers: tuple[Header, ...]


@dataclass(frozen=True, slots=True)
class BackendAccepted:
    """What the backend agreed to in its ``101``."""

    subprotocol: bytes | None
    extensions: bytes | None
    #: End-to-end fields of the 101 to pass to the client (set-cookie, the sec-websocket-*
    #: choices); hop-by-hop ones and the accept token removed.
    headers: tuple[Header, ...]


def split_header_list(values: list[bytes]) -> tuple[bytes, ...]:
    """Split comma-separated field values into trimmed, non-empty items."""
    items: list[bytes] = []
    for value in values:
        for item in value.split(b","):
            if item := item.strip():
                items.append(item)
    return tuple(items)


def _extension_names(values: list[bytes]) -> tuple[bytes, ...]:
    return tuple(item.split(b";", 1)[0].strip().lower() for item in split_header_list(values))


#: Requests that passed lately, by head and flags (see ``h2_request._PASSED``): small ones,
#: a few, the map emptied when full.
_PASSED: dict[tuple[H2RequestHead, bool, bool], WebSocketRequest] = {}
_PASSED_MAX_REQUESTS = 32
_PASSED_MAX_BYTES = 2048


def parse_extended_connect(
    head: H2RequestHead, *, connect_protocol_enabled: bool, tls: bool
) -> WebSocketRequest:
    """Check an HTTP/2 CONNECT request that carries ``:protocol`` (RFC 8441 §4).

    ``head`` already passed :func:`h2_request.parse_h2_request_head`. Raises
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
        # RFC 8441 §3: a client MUST NOT send :protocol unless we advertised it; h2 lets it
        # through, so refusing it is our job.
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
    return WebSocketRequest(
        front="h2",
        scheme=b"https" if tls else b"http",
        authority=head.authority,
        path=head.path,
        subprotocols=split_header_list(fields.get(b"sec-websocket-protocol", [])),
        extension_names=_extension_names(fields.get(b"sec-websocket-extensions", [])),
        headers=end_to_end_request_headers(head.headers),
    )


def end_to_end_request_headers(
    headers: tuple[Header, ...] | list[Header],
    *,
    replaced: frozenset[bytes] = _REPLACED_TOWARD_BACKEND,
) -> tuple[Header, ...]:
    """The client's fields worth forwarding: no hop-by-hop, none the proxy sets itself
    (``replaced``: by default those of a WebSocket upgrade)."""
    listed = _connection_listed(headers)
    return tuple(
        (name, value)
        for name, value in headers
        if name not in HOP_BY_HOP and name not in replaced and name not in listed
    )


def _connection_listed(headers: tuple[Header, ...] | list[Header]) -> frozenset[bytes]:
    values = [value for name, value in headers if name == b"connection"]
    return frozenset(item.lower() for item in split_header_list(values))


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
    return (
        WebSocketRequest(
            front="h1",
            scheme=b"https" if tls else b"http",
            authority=hosts[0],
            path=request.target,
            subprotocols=split_header_list(values(b"sec-websocket-protocol")),
            extension_names=_extension_names(values(b"sec-websocket-extensions")),
            headers=end_to_end_request_headers(headers),
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


def new_websocket_key() -> bytes:
    """A fresh random nonce for ``Sec-WebSocket-Key`` (RFC 6455 §4.1 item 7)."""
    return base64.b64encode(secrets.token_bytes(16))


def build_backend_upgrade(
    request: WebSocketRequest,
    route: RouteConfig,
    key: bytes,
    client_address: str | None,
) -> UpgradeRequest:
    """The HTTP/1.1 upgrade to send to ``route``'s backend, with our own ``key``.

    With ``route.x_forwarded`` the proxy is the edge: whatever forwarding fields the client
    sent (``X-Forwarded-*``, ``Forwarded``, ``X-Real-IP``) are dropped, since a backend that
    reads the left-most X-Forwarded-For entry would otherwise take a client's word for its
    address; ``X-Forwarded-For`` becomes the client's address, ``-Proto`` and ``-Host`` what
    the proxy saw. Without it, the client's own fields pass unchanged and none are added
    (for a proxy behind another one that sets them).

    The key is the only part that changes from one tunnel of a client to the next, so the
    request is written once around a stand-in key of the same shape (which passes every
    check exactly when a real key does) and remembered, small ones and a few, as the
    bytes before and after the key.
    """
    if not _KEY_SHAPE.fullmatch(key):
        return _backend_request(request.path, _upgrade_fields(request, route, key, client_address))
    template_key = (request, route, client_address)
    template = _TEMPLATES.get(template_key)
    if template is None:
        template = _upgrade_template(request, route, client_address)
        if template is None:
            return _backend_request(
                request.path, _upgrade_fields(request, route, key, client_address)
            )
        if len(_TEMPLATES) >= _TEMPLATES_MAX:
            _TEMPLATES.clear()
        _TEMPLATES[template_key] = template
    before, after, stand_in_fields = template
    headers = list(stand_in_fields)
    headers[_KEY_FIELD] = (b"sec-websocket-key", key)
    return UpgradeRequest(target=request.path, headers=tuple(headers), data=before + key + after)


#: Written upgrade requests by (request, route, client address): the bytes before the key,
#: after it, and the fields with the stand-in key (see ``build_backend_upgrade``).
_TEMPLATES: dict[
    tuple[WebSocketRequest, RouteConfig, str | None], tuple[bytes, bytes, tuple[Header, ...]]
] = {}
_TEMPLATES_MAX = 32
_TEMPLATE_MAX_BYTES = 4096
#: What ``new_websocket_key`` makes (base64 of 16 bytes), and a stand-in of that shape.
_KEY_SHAPE = re.compile(rb"[A-Za-z0-9+/]{22}==")
_STAND_IN_KEY = b"A" * 22 + b"=="
_KEY_FIELD = 3  # the key's place in ``_upgrade_fields``


def _upgrade_template(
    request: WebSocketRequest, route: RouteConfig, client_address: str | None
) -> tuple[bytes, bytes, tuple[Header, ...]] | None:
    """The request's bytes around the key, or None when it cannot be kept (h11 must write
    it, it is large, or the stand-in key's bytes also occur elsewhere in it)."""
    fields = _upgrade_fields(request, route, _STAND_IN_KEY, client_address)
    written = upgrade_request(request.path, fields)
    if (
        written is None
        or len(written.data) > _TEMPLATE_MAX_BYTES
        or written.data.count(_STAND_IN_KEY) != 1
    ):
        return None
    before, after = written.data.split(_STAND_IN_KEY)
    return before, after, written.headers


def _upgrade_fields(
    request: WebSocketRequest, route: RouteConfig, key: bytes, client_address: str | None
) -> list[Header]:
    host = request.authority or route.backend.host_header.encode("ascii")
    headers: list[Header] = [
        (b"host", host),
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-key", key),
        (b"sec-websocket-version", WEBSOCKET_VERSION),
    ]
    headers.extend(
        with_forwarding_fields(
            request.headers, route, client_address, request.scheme, request.authority
        )
    )
    return headers


def with_forwarding_fields(
    headers: tuple[Header, ...],
    route: RouteConfig,
    client_address: str | None,
    scheme: bytes,
    authority: bytes | None,
) -> list[Header]:
    """``headers`` with X-Forwarded-* applied as ``route.x_forwarded`` says.

    With it the proxy is the edge: the client's forwarding claims go and ours are added.
    Without it the client's fields pass unchanged and none are added.
    """
    if not route.x_forwarded:
        return list(headers)
    result = [(name, value) for name, value in headers if name not in _FORWARDED_FIELDS]
    if client_address:
        result.append((b"x-forwarded-for", client_address.encode("ascii")))
    result.append((b"x-forwarded-proto", scheme))
    if authority is not None:
        result.append((b"x-forwarded-host", authority))
    return result


def _backend_request(target: bytes, headers: list[Header]) -> UpgradeRequest:
    request = upgrade_request(target, headers)
    if request is not None:
        return request
    # The frontends' checks make this unreachable; h11 is the last line of defence
    # against anything that would split the HTTP/1.1 request, and its verdict stands.
    try:
        h11_request = h11.Request(method=b"GET", target=target, headers=headers)
    except h11.LocalProtocolError as error:
        raise ClientProtocolError(f"request cannot be expressed in HTTP/1.1: {error}") from error
    data = h11.Connection(h11.CLIENT).send(h11_request)
    return UpgradeRequest(target=target, headers=tuple(headers), data=data)


def check_backend_accept(
    response: h11.InformationalResponse, key: bytes, request: WebSocketRequest
) -> BackendAccepted:
    """:func:`check_backend_101` for the ``101`` as an h11 event."""
    return check_backend_101(
        [(name.lower(), value) for name, value in response.headers], key, request
    )


def check_backend_101(
    headers: list[Header], key: bytes, request: WebSocketRequest
) -> BackendAccepted:
    """Verify the backend's ``101`` (``headers``: lowercase names) against our ``key`` and
    the client's offers.

    Raises :class:`BackendProtocolError` (answered 502) with a message saying what was wrong.
    """
    # One pass over the fields, not one per name asked about (this runs per new tunnel).
    fields: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        fields.setdefault(name, []).append(value)

    def values(name: bytes) -> list[bytes]:
        return fields.get(name, [])

    upgrade = {item.lower() for item in split_header_list(values(b"upgrade"))}
    if b"websocket" not in upgrade:
        raise BackendProtocolError("backend's 101 lacks 'upgrade: websocket'")
    connection = frozenset(item.lower() for item in split_header_list(values(b"connection")))
    if b"upgrade" not in connection:  # RFC 6455 §4.1: the client MUST fail otherwise
        raise BackendProtocolError("backend's 101 lacks 'connection: upgrade'")
    accept = values(b"sec-websocket-accept")
    if accept != [generate_accept_token(key)]:
        raise BackendProtocolError("backend's sec-websocket-accept does not match our key")
    protocols = split_header_list(values(b"sec-websocket-protocol"))
    if len(protocols) > 1 or (protocols and protocols[0] not in request.subprotocols):
        raise BackendProtocolError(
            f"backend chose subprotocol {b', '.join(protocols).decode('ascii', 'replace')!r} "
            f"that the client did not offer"
        )
    chosen_extensions = _extension_names(values(b"sec-websocket-extensions"))
    unoffered = [name for name in chosen_extensions if name not in request.extension_names]
    if unoffered:
        raise BackendProtocolError(
            f"backend chose extension {unoffered[0].decode('ascii', 'replace')!r} "
            "that the client did not offer"
        )
    extensions = values(b"sec-websocket-extensions")
    return BackendAccepted(
        subprotocol=protocols[0] if protocols else None,
        extensions=b", ".join(extensions) if extensions else None,
        headers=_relayable(headers, connection, _HANDSHAKE_ONLY),
    )


def end_to_end_response_headers(
    headers: list[Header], *, drop: frozenset[bytes] = frozenset()
) -> tuple[Header, ...]:
    """A backend answer's fields fit to relay: hop-by-hop and ``drop`` removed."""
    return _relayable(headers, _connection_listed(headers), drop)


def _relayable(
    headers: list[Header], listed: frozenset[bytes], drop: frozenset[bytes]
) -> tuple[Header, ...]:
    """``headers`` without hop-by-hop fields, those ``listed`` in Connection, and ``drop``."""
    return tuple(
        (name, value)
        for name, value in headers
        if name not in HOP_BY_HOP and name not in listed and name not in drop
    )


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
