"""The WebSocket opening handshake toward an HTTP/2 backend (RFC 8441 as a client). Pure.

Theory of operation:

* :func:`build_backend_connect` makes the extended CONNECT for a
  :class:`~h2ws_proxy.http.handshake.WebSocketRequest`: ``:method CONNECT``, ``:protocol
  websocket``, ``:scheme``, ``:path``, ``:authority`` (RFC 8441 §4), then
  ``sec-websocket-version: 13`` and the client's end-to-end fields with the route's
  forwarding rules, exactly as the HTTP/1.1 upgrade carries them. No ``Sec-WebSocket-Key``:
  HTTP/2 has no nonce (RFC 8441 §5), so neither side computes an accept token.
* :func:`check_backend_200` judges the backend's final answer. ``200`` opens the tunnel
  (RFC 8441 §5, RFC 9113 §8.5) unless it breaks the rules: END_STREAM on it (a tunnel
  with no bytes can never carry a WebSocket), a ``sec-websocket-accept`` (an HTTP/1.1
  answer pasted onto HTTP/2: the peer did not understand the request), a subprotocol or
  extension the client did not offer. Any other 2xx is not a tunnel either (RFC 8441 §5
  allows only 200 here; RFC 9110 §9.3.6 lets a plain CONNECT take any 2xx). Those are
  :class:`BackendProtocolError` (502). Every other status is the backend's own answer,
  relayed as it came.

Rules: names are lowercase ``bytes``; the fields of HTTP/1.1's connection management
(``connection``, ``upgrade``, ``keep-alive``, ``transfer-encoding``, ``te``, ``host``)
never go out on HTTP/2 (RFC 9113 §8.2.2); the authority is the client's, or the server's
own host and port when the client sent none.
"""

from __future__ import annotations

from h2ws_proxy.config import BackendAddress, RouteConfig
from h2ws_proxy.errors import BackendProtocolError
from h2ws_proxy.http.fields import (
    h2_fields,
    relayable,
    split_header_list,
    with_forwarding_fields,
)
from h2ws_proxy.http.handshake import (
    WEBSOCKET_VERSION,
    BackendAccepted,
    WebSocketRequest,
    extension_names,
)
from h2ws_proxy.http.paths import target_for_route

__all__ = ["backend_scheme", "build_backend_connect", "check_backend_200"]

Header = tuple[bytes, bytes]

#: The client's ``host`` is ``:authority`` here.
_NOT_FORWARDED = frozenset({b"host"})
#: Fields of the backend's 200 that describe the handshake itself and stop at the proxy.
_HANDSHAKE_ONLY = frozenset({b"content-length", b"sec-websocket-accept"})


def backend_scheme(address: BackendAddress) -> bytes:
    """``:scheme`` toward ``address``: what the proxy's own connection to it is."""
    return b"https" if address.scheme == "https" else b"http"


def build_backend_connect(
    request: WebSocketRequest,
    route: RouteConfig,
    address: BackendAddress,
    client_address: str | None,
) -> list[Header]:
    """The extended CONNECT's header list toward ``address`` (pseudo-fields first)."""
    target = target_for_route(
        request.path, request.raw_path, request.path_refusal, normalize_path=route.normalize_path
    )
    authority = request.authority or address.host_header.encode("ascii")
    headers: list[Header] = [
        (b":method", b"CONNECT"),
        (b":protocol", b"websocket"),
        (b":scheme", backend_scheme(address)),
        (b":path", target),
        (b":authority", authority),
        (b"sec-websocket-version", WEBSOCKET_VERSION),
    ]
    forwarded = with_forwarding_fields(
        request.headers, route, client_address, request.scheme, request.authority
    )
    headers.extend(h2_fields(forwarded, drop=_NOT_FORWARDED))
    return headers


def check_backend_200(
    status: int, headers: list[Header], end_stream: bool, request: WebSocketRequest
) -> BackendAccepted:
    """Verify the backend's 200 to our extended CONNECT (``headers`` without pseudo-fields,
    names lowercase) against the client's offers; raises :class:`BackendProtocolError`."""
    if status != 200:
        raise BackendProtocolError(
            f"backend answered the extended CONNECT with {status}; only 200 opens a "
            "WebSocket over HTTP/2 (RFC 8441 §5)",
            outcome="bad_upgrade",
        )
    if end_stream:
        raise BackendProtocolError(
            "backend's 200 to the extended CONNECT ended its stream: no tunnel to carry "
            "the WebSocket",
            outcome="bad_upgrade",
        )
    fields: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        fields.setdefault(name, []).append(value)
    if b"sec-websocket-accept" in fields:
        raise BackendProtocolError(
            "backend's 200 carries sec-websocket-accept, which HTTP/2 does not use "
            "(RFC 8441 §5): it answered as if to an HTTP/1.1 upgrade",
            outcome="bad_accept",
        )
    protocols = split_header_list(fields.get(b"sec-websocket-protocol", []))
    if len(protocols) > 1 or (protocols and protocols[0] not in request.subprotocols):
        chosen = b", ".join(protocols).decode("ascii", "replace")
        raise BackendProtocolError(
            f"backend chose subprotocol {chosen!r} that the client did not offer",
            outcome="bad_subprotocol",
        )
    extensions = fields.get(b"sec-websocket-extensions", [])
    unoffered = [
        name for name in extension_names(extensions) if name not in request.extension_names
    ]
    if unoffered:
        raise BackendProtocolError(
            f"backend chose extension {unoffered[0].decode('ascii', 'replace')!r} "
            "that the client did not offer",
            outcome="bad_extension",
        )
    return BackendAccepted(
        subprotocol=protocols[0] if protocols else None,
        extensions=b", ".join(extensions) if extensions else None,
        headers=relayable(headers, frozenset(), _HANDSHAKE_ONLY),
    )
