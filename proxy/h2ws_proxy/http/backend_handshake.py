"""The WebSocket opening handshake's backend leg: our HTTP/1.1 upgrade out, its 101 in. Pure.

Theory of operation:

* :func:`build_backend_upgrade` makes the HTTP/1.1 upgrade request toward the backend from
  a :class:`~h2ws_proxy.http.handshake.WebSocketRequest`, with a fresh
  ``Sec-WebSocket-Key`` of our own (:func:`new_websocket_key`; RFC 8441 §5: HTTP/2 carries
  no nonce, so the proxy must make one), the client's end-to-end headers and
  X-Forwarded-*. Its bytes are written by :mod:`~h2ws_proxy.http.upgrade_wire` (h11
  judges what that cannot pass).
* :func:`check_backend_101` verifies the backend's ``101``: the accept token must match
  our key, and the subprotocol and extensions it picked must have been offered by the client
  (a browser fails the socket with no useful error otherwise). :func:`check_backend_accept`
  does the same for an h11 event.

Rules: header names are lowercase ``bytes``; the backend gets no field we did not mean to
send, and the client none of the backend's hop-by-hop or handshake-only fields
(:mod:`~h2ws_proxy.http.fields`). A bad ``101`` raises :class:`BackendProtocolError`.
"""

from __future__ import annotations

import binascii
import hashlib
import os
import re

import h11
from wsproto.utilities import ACCEPT_GUID

from h2ws_proxy.config import RouteConfig
from h2ws_proxy.errors import BackendProtocolError, ClientProtocolError
from h2ws_proxy.http.fields import relayable, split_header_list, with_forwarding_fields
from h2ws_proxy.http.handshake import (
    WEBSOCKET_VERSION,
    BackendAccepted,
    WebSocketRequest,
    extension_names,
)
from h2ws_proxy.http.paths import target_for_route
from h2ws_proxy.http.upgrade_wire import UpgradeRequest, upgrade_request

__all__ = [
    "accept_token",
    "build_backend_upgrade",
    "check_backend_101",
    "check_backend_accept",
    "new_websocket_key",
]

Header = tuple[bytes, bytes]

# Fields of the backend's 101 that describe the handshake itself and stop at the proxy.
_HANDSHAKE_ONLY = frozenset({b"sec-websocket-accept", b"content-length"})


def new_websocket_key() -> bytes:
    """A fresh random nonce for ``Sec-WebSocket-Key`` (RFC 6455 §4.1 item 7): 16 bytes of
    the OS's randomness, drawn in bulk (one ``getrandom`` per new tunnel was one of its
    few system calls); each byte is used for one key only."""
    global _random, _random_at
    at = _random_at
    if at + 16 > len(_random):
        _random, at = os.urandom(_RANDOM_BULK_BYTES), 0
    _random_at = at + 16
    return binascii.b2a_base64(_random[at : at + 16], newline=False)  # (``b64encode``'s work)


def accept_token(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` for ``key`` (RFC 6455 §4.2.2 item 5.4): wsproto's
    ``generate_accept_token``, without its and ``base64.b64encode``'s Python frames (one
    per new tunnel each)."""
    return binascii.b2a_base64(hashlib.sha1(key + ACCEPT_GUID).digest(), newline=False)


#: Random bytes for the keys, drawn _RANDOM_BULK_BYTES at a time, and how far they are used.
_RANDOM_BULK_BYTES = 4096
_random = b""
_random_at = 0


def _forget_random() -> None:
    """A forked child draws its own: two processes must not make the same keys."""
    global _random, _random_at
    _random, _random_at = b"", 0


os.register_at_fork(after_in_child=_forget_random)


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
    the proxy saw. With "append" they are kept and the peer appended; with False they
    pass unchanged and none are added. ``route.strip_fields`` go in every case
    (:func:`~h2ws_proxy.http.fields.with_forwarding_fields`).

    The key is the only part that changes from one tunnel of a client to the next, so the
    request is written once around a stand-in key of the same shape (which passes every
    check exactly when a real key does) and remembered, small ones and a few, as the
    bytes before and after the key.
    """
    # The target: normalised, or the client's raw one for a normalize_path = false route.
    target = target_for_route(
        request.path, request.raw_path, request.path_refusal, normalize_path=route.normalize_path
    )
    if not _KEY_SHAPE.fullmatch(key):
        return _backend_request(target, _upgrade_fields(request, route, key, client_address))
    global _last_template
    last = _last_template
    if last is not None and last[0] is request and last[1] is route and last[2] == client_address:
        template = last[3]
    else:
        template_key = (request, route, client_address)
        found = _TEMPLATES.get(template_key)
        if found is None:
            found = _upgrade_template(target, request, route, client_address)
            if found is None:
                fields = _upgrade_fields(request, route, key, client_address)
                return _backend_request(target, fields)
            if len(_TEMPLATES) >= _TEMPLATES_MAX:
                _TEMPLATES.clear()
            _TEMPLATES[template_key] = found
        template = found
        _last_template = (request, route, client_address, template)
    before, after, stand_in_fields = template
    headers = list(stand_in_fields)
    headers[_KEY_FIELD] = (b"sec-websocket-key", key)
    return UpgradeRequest(target=target, headers=tuple(headers), data=before + key + after)


#: Written upgrade requests by (request, route, client address): the bytes before the key,
#: after it, and the fields with the stand-in key (see ``build_backend_upgrade``).
_TEMPLATES: dict[
    tuple[WebSocketRequest, RouteConfig, str | None], tuple[bytes, bytes, tuple[Header, ...]]
] = {}
_TEMPLATES_MAX = 32
#: The last template used, with its request and route themselves: the front ends hand
#: over the same request object for a repeated head (``parse_extended_connect`` keeps
#: them) and routes are the configuration's, so a client's next tunnel finds it by
#: identity, without hashing both (a route's hash walks all its fields, its backend's too).
_last_template: (
    tuple[WebSocketRequest, RouteConfig, str | None, tuple[bytes, bytes, tuple[Header, ...]]] | None
) = None
_TEMPLATE_MAX_BYTES = 4096
#: What ``new_websocket_key`` makes (base64 of 16 bytes), and a stand-in of that shape.
_KEY_SHAPE = re.compile(rb"[A-Za-z0-9+/]{22}==")
_STAND_IN_KEY = b"A" * 22 + b"=="
_KEY_FIELD = 3  # the key's place in ``_upgrade_fields``


def _upgrade_template(
    target: bytes, request: WebSocketRequest, route: RouteConfig, client_address: str | None
) -> tuple[bytes, bytes, tuple[Header, ...]] | None:
    """The request's bytes around the key, or None when it cannot be kept (h11 must write
    it, it is large, or the stand-in key's bytes also occur elsewhere in it)."""
    fields = _upgrade_fields(request, route, _STAND_IN_KEY, client_address)
    written = upgrade_request(target, fields)
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
    host = request.authority or route.backend.servers[0].host_header.encode("ascii")
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
        raise BackendProtocolError(
            "backend's 101 lacks 'upgrade: websocket'", outcome="bad_upgrade"
        )
    connection = frozenset(item.lower() for item in split_header_list(values(b"connection")))
    if b"upgrade" not in connection:  # RFC 6455 §4.1: the client MUST fail otherwise
        raise BackendProtocolError(
            "backend's 101 lacks 'connection: upgrade'", outcome="bad_upgrade"
        )
    accept = values(b"sec-websocket-accept")
    if accept != [accept_token(key)]:
        raise BackendProtocolError(
            "backend's sec-websocket-accept does not match our key", outcome="bad_accept"
        )
    protocols = split_header_list(values(b"sec-websocket-protocol"))
    if len(protocols) > 1 or (protocols and protocols[0] not in request.subprotocols):
        raise BackendProtocolError(
            f"backend chose subprotocol {b', '.join(protocols).decode('ascii', 'replace')!r} "
            f"that the client did not offer",
            outcome="bad_subprotocol",
        )
    chosen_extensions = extension_names(values(b"sec-websocket-extensions"))
    unoffered = [name for name in chosen_extensions if name not in request.extension_names]
    if unoffered:
        raise BackendProtocolError(
            f"backend chose extension {unoffered[0].decode('ascii', 'replace')!r} "
            "that the client did not offer",
            outcome="bad_extension",
        )
    extensions = values(b"sec-websocket-extensions")
    return BackendAccepted(
        subprotocol=protocols[0] if protocols else None,
        extensions=b", ".join(extensions) if extensions else None,
        headers=relayable(headers, connection, _HANDSHAKE_ONLY),
    )
