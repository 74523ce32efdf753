"""Pick the route for a request: by its host first, then the longest path prefix. Pure, no I/O.

Hosts (``route.host``; the forms are ``config/hosts.py``'s). The request's host is its
``:authority`` (HTTP/2; ``host`` when there is none, RFC 9113 §8.3.1) or ``Host`` (HTTP/1.1;
an absolute-form target's authority for ordinary requests, RFC 9112 §3.2.2), compared
lowercase, without its port or a trailing dot. It selects one group of routes, and only
that group's routes are considered then (as nginx picks a server block, and Envoy a virtual
host, before any path):

1. the routes listing the host exactly, if any do;
2. else the routes listing the one wildcard that covers it (``*.example.com`` for
   ``a.example.com``: exactly one label more), if any do;
3. else the routes without ``host``, which serve any host.

So ``chat.example.com/api`` goes to no ``/api`` route without ``host`` when some route
names ``chat.example.com``: it is that host's group or a 404. With no route naming a host,
the group is always the third, and no host is looked at.

Paths: a prefix matches on path-segment boundaries: ``/chat`` matches ``/chat``,
``/chat/room`` and ``/chat?x=1``, but not ``/chatter`` (nginx's plain prefix match would
take it; that surprises people who put two apps side by side). ``/`` matches everything.

Requests are routed on their normalised path (``http/paths.py``). One whose path
normalisation refused is routed on its raw form and taken only by a route with
``normalize_path = false`` (which gets the raw bytes, and nothing else does); any other
outcome is the refusal's 400, as before the route knob existed. So a refused path can never
reach a normalising route's backend, whatever prefix its raw bytes start with.

Origins: a WebSocket request to a route with ``allowed_origins`` or ``require_origin`` is
checked right after routing (:func:`websocket_route`), with 403 for an ``Origin`` not listed
(``null`` never is) or, with ``require_origin``, for none. Browsers apply no CORS to
WebSockets: a page on any site may open one to us with the user's cookies, and ``Origin``
is the only thing that tells (cross-site WebSocket hijacking). Ordinary requests are not
checked: their answers are the browser's CORS business.
"""

from __future__ import annotations

from collections.abc import Iterable

from h2ws_proxy.config import RouteConfig
from h2ws_proxy.config.hosts import authority_host, canonical_origin, origin_allowed, parent_domain
from h2ws_proxy.errors import ClientProtocolError, OriginRefused, RouteNotFound
from h2ws_proxy.http.handshake import WebSocketRequest
from h2ws_proxy.http.message import HttpRequest

Routes = tuple[RouteConfig, ...]
#: How many authorities :attr:`Router._seen` remembers before it starts over, and the
#: longest it keeps (a DNS name's 253 bytes and a port): a client sending huge ones would
#: otherwise park up to 256 of them, each as large as a header list may be.
_SEEN_MAX_AUTHORITIES = 256
_SEEN_MAX_AUTHORITY_BYTES = 260


class Router:
    """Route lookup by host group, then longest prefix, over a fixed set of routes."""

    def __init__(self, routes: Iterable[RouteConfig]) -> None:
        # Longest first in every group, so the first match is the most specific one.
        ordered = sorted(routes, key=lambda route: len(route.path), reverse=True)
        self._any: Routes = tuple(route for route in ordered if not route.host)
        exact: dict[str, list[RouteConfig]] = {}
        wildcard: dict[str, list[RouteConfig]] = {}  # by the domain "*." stands before
        for route in ordered:
            for host in route.host:
                if host.startswith("*."):
                    wildcard.setdefault(host[2:], []).append(route)
                else:
                    exact.setdefault(host, []).append(route)
        self._exact = {host: tuple(group) for host, group in exact.items()}
        self._wildcard = {domain: tuple(group) for domain, group in wildcard.items()}
        #: Whether some route names a host (else the host is never looked at).
        self.by_host = bool(exact or wildcard)
        #: Groups by the authorities seen lately, as sent: clients name the same few hosts
        #: again and again. Emptied when full, so a client naming random hosts bounds it.
        self._seen: dict[bytes | str, Routes] = {}

    def routes_for(self, authority: bytes | str | None) -> Routes:
        """The group of routes a request for ``authority`` (``host[:port]``) chooses among,
        longest path first (see the module rules); None: the routes without ``host``."""
        if not self.by_host or authority is None:
            return self._any  # no route names a host: the common case costs nothing
        group = self._seen.get(authority)
        if group is None:
            group = self._group_of(authority)
            if len(authority) <= _SEEN_MAX_AUTHORITY_BYTES:
                if len(self._seen) >= _SEEN_MAX_AUTHORITIES:
                    self._seen.clear()
                self._seen[authority] = group
        return group

    def _group_of(self, authority: bytes | str) -> Routes:
        text = authority.decode("ascii", "replace") if isinstance(authority, bytes) else authority
        host = authority_host(text)
        group = self._exact.get(host)
        if group is None:
            domain = parent_domain(host)
            if domain is not None:
                group = self._wildcard.get(domain)
        return self._any if group is None else group

    def match(self, path: bytes | str, authority: bytes | str | None = None) -> RouteConfig | None:
        """The route serving ``path`` (query string allowed) on ``authority``'s host, or
        None when no route of that host's group does."""
        text = path.decode("ascii", "replace") if isinstance(path, bytes) else path
        routes = self._any if not self.by_host else self.routes_for(authority)
        for route in routes:
            if _prefix_matches(route.path, text):
                return route
        return None


def _prefix_matches(prefix: str, path: str) -> bool:
    if not path.startswith(prefix):
        return False
    if prefix.endswith("/") or len(path) == len(prefix):
        return True
    return path[len(prefix)] in "/?#"


def _matched(
    router: Router, target: bytes, authority: bytes | None, path_refusal: str | None
) -> RouteConfig | None:
    """``router.match(target, authority)``; for a target normalisation refused, raises its
    ClientProtocolError (400) unless the route matched has ``normalize_path = false``."""
    route = router.match(target, authority)
    if path_refusal is not None and (route is None or route.normalize_path):
        raise ClientProtocolError(path_refusal)
    return route


def _not_found(router: Router, target: bytes, authority: bytes | None) -> RouteNotFound:
    shown = target.decode("ascii", "replace")
    if authority is None or not router.by_host:
        return RouteNotFound(f"no route for {shown}")
    host = authority_host(authority.decode("ascii", "replace"))
    return RouteNotFound(f"no route for {shown} on host {host}")


def websocket_route(router: Router, request: WebSocketRequest) -> RouteConfig:
    """The route for a WebSocket request, its ``Origin`` checked (:func:`check_origin`).

    Raises ClientProtocolError (400) for a path refused by normalisation (see the module
    rules), RouteNotFound (404), ClientProtocolError (501) when the route exists but its
    backend does not take WebSockets (``websocket = false``), or OriginRefused (403) when
    the request's ``Origin`` may not use the route.
    """
    path = request.path
    route = _matched(router, path, request.authority, request.path_refusal)
    if route is None:
        raise _not_found(router, path, request.authority)
    if not route.websocket:
        raise ClientProtocolError(
            f"route {route.path} does not take WebSockets (websocket = false); "
            f"{path.decode('ascii', 'replace')} cannot be opened as one",
            status_hint=501,
        )
    if route.allowed_origins or route.require_origin:
        check_origin(route, request.headers)
    return route


def check_origin(route: RouteConfig, headers: Iterable[tuple[bytes, bytes]]) -> None:
    """Raise OriginRefused (403) unless a WebSocket request with ``headers`` may use
    ``route``: its ``Origin`` is in ``allowed_origins`` (when the route lists any; ``null``,
    several values and anything not an origin never are), or it has none and the route
    does not ``require_origin``."""
    values = [value for name, value in headers if name == b"origin"]
    if not values:
        if route.require_origin:
            raise OriginRefused(
                f"route {route.path} requires an Origin on WebSocket requests "
                "(require_origin); the request has none",
                route=route.path,
            )
        return
    if not route.allowed_origins:
        return  # require_origin alone: any Origin will do
    text = b" ".join(values).decode("ascii", "backslashreplace")
    origin = canonical_origin(text) if len(values) == 1 else None
    if origin is None or not origin_allowed(origin, route.allowed_origins):
        shown = text if len(text) <= 200 else text[:200] + "..."
        raise OriginRefused(
            f"origin {shown} is not allowed on route {route.path} (allowed_origins)",
            route=route.path,
        )


def http_route(router: Router, request: HttpRequest) -> RouteConfig:
    """The route for an ordinary request; raises ClientProtocolError (400) for a path
    refused by normalisation (see the module rules), or RouteNotFound (404)."""
    target = request.target
    route = _matched(router, target, request.authority, request.path_refusal)
    if route is None:
        raise _not_found(router, target, request.authority)
    return route
