"""Which header fields cross the proxy, in either direction, and which the proxy adds. Pure.

Rules:

* Header names are lowercase ``bytes``.
* Hop-by-hop fields never cross the proxy (RFC 9110 §7.6.1), nor any field the
  ``Connection`` field lists.
* Toward the backend, the fields the proxy sets itself (``replaced``) are dropped from the
  client's; the backend gets no field we did not mean to send.
* With a route's ``x_forwarded`` on, the proxy is the edge: the client's forwarding claims
  go (:func:`is_forwarding_field`: every ``X-Forwarded-*``, ``Forwarded``, and the client
  IP fields CDNs and other proxies use, also spelled with ``_`` for ``-``, which WSGI and
  CGI backends read as the same variable) and the proxy's own are added; with it off, the
  client's pass unchanged and none are added. In trailers they never pass.

Used by the WebSocket handshake (:mod:`~h2ws_proxy.http.handshake`,
:mod:`~h2ws_proxy.http.backend_handshake`) and by ordinary requests
(:mod:`~h2ws_proxy.http.message`).
"""

from __future__ import annotations

from h2ws_proxy.config import RouteConfig

__all__ = [
    "HOP_BY_HOP",
    "end_to_end_request_headers",
    "end_to_end_response_headers",
    "is_forwarding_field",
    "relayable",
    "split_header_list",
    "with_forwarding_fields",
]

Header = tuple[bytes, bytes]

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
# Fields the proxy owns on a WebSocket upgrade's backend leg: it sets them itself, so the
# client's copies go (the default of ``end_to_end_request_headers``).
_REPLACED_TOWARD_BACKEND = frozenset(
    {
        b"host",
        b"content-length",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-accept",
    }
)
# With ``x_forwarded`` on, the proxy owns these, and every ``x-forwarded-*``: the client's
# claims are not trusted. Client-IP fields of CDNs and proxies that backends read too.
_FORWARDING_NAMES = frozenset(
    {
        b"forwarded",  # RFC 7239
        b"x-real-ip",
        b"true-client-ip",
        b"x-client-ip",
        b"client-ip",
        b"cf-connecting-ip",
        b"fastly-client-ip",
        b"x-cluster-client-ip",
        b"x-original-forwarded-for",
    }
)


def is_forwarding_field(name: bytes) -> bool:
    """A field that claims where the request came from, in any spelling a backend may
    read as one (``_`` for ``-``: WSGI and CGI map both to the same variable)."""
    if b"_" in name:
        name = name.replace(b"_", b"-")
    return name.startswith(b"x-forwarded-") or name in _FORWARDING_NAMES


def split_header_list(values: list[bytes]) -> tuple[bytes, ...]:
    """Split comma-separated field values into trimmed, non-empty items."""
    items: list[bytes] = []
    for value in values:
        for item in value.split(b","):
            if item := item.strip():
                items.append(item)
    return tuple(items)


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
    result = [(name, value) for name, value in headers if not is_forwarding_field(name)]
    if client_address:
        result.append((b"x-forwarded-for", client_address.encode("ascii")))
    result.append((b"x-forwarded-proto", scheme))
    if authority is not None:
        result.append((b"x-forwarded-host", authority))
    return result


def end_to_end_response_headers(
    headers: list[Header], *, drop: frozenset[bytes] = frozenset()
) -> tuple[Header, ...]:
    """A backend answer's fields fit to relay: hop-by-hop and ``drop`` removed."""
    return relayable(headers, _connection_listed(headers), drop)


def relayable(
    headers: list[Header], listed: frozenset[bytes], drop: frozenset[bytes]
) -> tuple[Header, ...]:
    """``headers`` without hop-by-hop fields, those ``listed`` in Connection, and ``drop``."""
    return tuple(
        (name, value)
        for name, value in headers
        if name not in HOP_BY_HOP and name not in listed and name not in drop
    )
