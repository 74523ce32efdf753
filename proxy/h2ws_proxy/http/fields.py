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
* With ``x_forwarded = "append"`` the proxy sits behind a trusted one that set these fields
  itself: they are kept, the peer's address is appended to ``X-Forwarded-For`` (and, when
  a ``Forwarded`` field came, as a ``for=`` element of it, so both chains count the same
  hops), ``X-Forwarded-Proto``/``-Host`` are ours only where none came. Their ``_``
  spellings still go: no proxy sets those, so they can only be a client's.
* A route's ``strip_fields`` go from the client's head and trailers whatever
  ``x_forwarded`` says, in either spelling (``_`` or ``-``), before the proxy adds its own.

Used by the WebSocket handshake (:mod:`~h2ws_proxy.http.handshake`,
:mod:`~h2ws_proxy.http.backend_handshake`) and by ordinary requests
(:mod:`~h2ws_proxy.http.message`).
"""

from __future__ import annotations

from collections.abc import Iterable

from h2ws_proxy.config import RouteConfig

__all__ = [
    "H2_CONNECTION_SPECIFIC",
    "HOP_BY_HOP",
    "dashed",
    "end_to_end_request_headers",
    "end_to_end_response_headers",
    "h2_fields",
    "is_forwarding_field",
    "relayable",
    "split_header_list",
    "with_forwarding_fields",
]

Header = tuple[bytes, bytes]

#: RFC 9113 §8.2.2: HTTP/1.1's connection management, malformed on HTTP/2 (and ``te``
#: other than ``trailers``).
H2_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


def h2_fields(fields: Iterable[Header], drop: frozenset[bytes]) -> list[Header]:
    """``fields`` fit to go out on HTTP/2: names lowercase, without the connection-specific
    ones, ``te`` only as ``trailers``, and without ``drop`` (lowercase names)."""
    kept = []
    for name, value in fields:
        name = name.lower()
        if name in H2_CONNECTION_SPECIFIC or name in drop:
            continue
        if name == b"te" and value.lower() != b"trailers":
            continue
        kept.append((name, value))
    return kept


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


def dashed(name: bytes) -> bytes:
    """``name`` as WSGI and CGI backends read it: ``_`` and ``-`` are the same variable."""
    return name.replace(b"_", b"-") if b"_" in name else name


def is_forwarding_field(name: bytes) -> bool:
    """A field that claims where the request came from, in any spelling a backend may
    read as one (``_`` for ``-``: WSGI and CGI map both to the same variable)."""
    name = dashed(name)
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
    """``headers`` less ``route.strip_fields``, with X-Forwarded-* applied as
    ``route.x_forwarded`` says (see the module rules).

    With True the proxy is the edge: the client's forwarding claims go and ours are added.
    With "append" they are kept and the peer appended. With False the client's fields pass
    unchanged and none are added.
    """
    strip = route.strip_fields
    if strip:
        headers = tuple([field for field in headers if dashed(field[0]) not in strip])
    if route.x_forwarded is False:
        return list(headers)
    if route.x_forwarded == "append":
        return _appended(headers, client_address, scheme, authority)
    result = [(name, value) for name, value in headers if not is_forwarding_field(name)]
    if client_address:
        result.append((b"x-forwarded-for", client_address.encode("ascii")))
    result.append((b"x-forwarded-proto", scheme))
    if authority is not None:
        result.append((b"x-forwarded-host", authority))
    return result


def _appended(
    headers: tuple[Header, ...],
    client_address: str | None,
    scheme: bytes,
    authority: bytes | None,
) -> list[Header]:
    """``x_forwarded = "append"``: the trusted proxy's fields kept, the peer appended."""
    result: list[Header] = []
    # The values of each field, in order, joined as one list (RFC 9110 §5.3); each kept
    # whole (a Forwarded quoted-string may hold a comma), empty ones dropped.
    chain: list[bytes] = []
    forwarded: list[bytes] = []
    has_proto = has_host = False
    for name, value in headers:
        if name == b"x-forwarded-for" or name == b"forwarded":
            if value := value.strip(b" \t"):
                (chain if name == b"x-forwarded-for" else forwarded).append(value)
        elif b"_" in name and is_forwarding_field(name):
            continue  # a client's spelling: see the module rules
        else:
            has_proto = has_proto or name == b"x-forwarded-proto"
            has_host = has_host or name == b"x-forwarded-host"
            result.append((name, value))
    if client_address:
        address = client_address.encode("ascii")
        chain.append(address)
        if forwarded:
            # RFC 7239 §6: an IPv6 node is bracketed, and then quoted (":" is not a token).
            forwarded.append(b'for="[%s]"' % address if b":" in address else b"for=" + address)
    if chain:
        result.append((b"x-forwarded-for", b", ".join(chain)))
    if forwarded:
        result.append((b"forwarded", b", ".join(forwarded)))
    if not has_proto:
        result.append((b"x-forwarded-proto", scheme))
    if not has_host and authority is not None:
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
