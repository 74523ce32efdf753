"""An ordinary request for an HTTP/2 backend: its header list. Pure.

Rules (RFC 9113 §8.3.1, §8.2.2): pseudo-fields first (``:method``, ``:scheme`` of our own
connection to the server, ``:authority`` the client's, ``:path`` as the route asks for:
normalised, or the client's raw target); then the client's end-to-end fields with the
route's forwarding rules, names lowercase, without the fields of HTTP/1.1's connection
management (``te`` only as ``trailers``); ``content-length`` when the client gave one
(HTTP/2 frames the body itself otherwise).
"""

from __future__ import annotations

from h2ws_proxy.config import BackendAddress, RouteConfig
from h2ws_proxy.http.extended_connect import backend_scheme
from h2ws_proxy.http.fields import h2_fields, with_forwarding_fields
from h2ws_proxy.http.message import BodyFraming, HttpRequest
from h2ws_proxy.http.paths import target_for_route

__all__ = ["build_h2_backend_request"]

Header = tuple[bytes, bytes]

#: ``host`` is ``:authority`` here; the length is ours (below).
_NOT_FORWARDED = frozenset({b"host", b"content-length"})


def build_h2_backend_request(
    request: HttpRequest, route: RouteConfig, address: BackendAddress, client_address: str | None
) -> list[Header]:
    """The header list of ``request`` toward ``address`` (see the module's rules)."""
    target = target_for_route(
        request.target,
        request.raw_target,
        request.path_refusal,
        normalize_path=route.normalize_path,
    )
    headers: list[Header] = [
        (b":method", request.method),
        (b":scheme", backend_scheme(address)),
        (b":authority", request.authority or address.host_header.encode("ascii")),
        (b":path", target),
    ]
    forwarded = with_forwarding_fields(
        request.headers, route, client_address, request.scheme, request.authority
    )
    headers.extend(h2_fields(forwarded, drop=_NOT_FORWARDED))
    if request.framing is BodyFraming.LENGTH:
        headers.append((b"content-length", str(request.content_length).encode("ascii")))
    return headers
