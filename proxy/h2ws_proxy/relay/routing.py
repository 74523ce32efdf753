"""Pick the route for a request path: the longest configured prefix wins.

A prefix matches on path-segment boundaries: ``/chat`` matches ``/chat``, ``/chat/room``
and ``/chat?x=1``, but not ``/chatter`` (nginx's plain prefix match would take it; that
surprises people who put two apps side by side). ``/`` matches everything. Pure, no I/O.

Requests are routed on their normalised path (``http/paths.py``). One whose path
normalisation refused is routed on its raw form and taken only by a route with
``normalize_path = false`` (which gets the raw bytes, and nothing else does); any other
outcome is the refusal's 400, as before the route knob existed. So a refused path can never
reach a normalising route's backend, whatever prefix its raw bytes start with.
"""

from __future__ import annotations

from collections.abc import Iterable

from h2ws_proxy.config import RouteConfig
from h2ws_proxy.errors import ClientProtocolError, RouteNotFound
from h2ws_proxy.http.handshake import WebSocketRequest
from h2ws_proxy.http.message import HttpRequest


class Router:
    """Longest-prefix route lookup over a fixed set of routes."""

    def __init__(self, routes: Iterable[RouteConfig]) -> None:
        # Longest first, so the first match is the most specific one.
        self._routes = sorted(routes, key=lambda route: len(route.path), reverse=True)

    def match(self, path: bytes | str) -> RouteConfig | None:
        """The route serving ``path`` (query string allowed), or None when no route does."""
        text = path.decode("ascii", "replace") if isinstance(path, bytes) else path
        for route in self._routes:
            if _prefix_matches(route.path, text):
                return route
        return None


def _prefix_matches(prefix: str, path: str) -> bool:
    if not path.startswith(prefix):
        return False
    if prefix.endswith("/") or len(path) == len(prefix):
        return True
    return path[len(prefix)] in "/?#"


def _matched(router: Router, target: bytes, path_refusal: str | None) -> RouteConfig | None:
    """``router.match(target)``; for a target normalisation refused, raises its
    ClientProtocolError (400) unless the route matched has ``normalize_path = false``."""
    route = router.match(target)
    if path_refusal is not None and (route is None or route.normalize_path):
        raise ClientProtocolError(path_refusal)
    return route


def websocket_route(router: Router, request: WebSocketRequest) -> RouteConfig:
    """The route for a WebSocket request.

    Raises ClientProtocolError (400) for a path refused by normalisation (see the module
    rules), RouteNotFound (404), or ClientProtocolError (501) when the route exists but its
    backend does not take WebSockets (``websocket = false``).
    """
    path = request.path
    route = _matched(router, path, request.path_refusal)
    if route is not None and route.websocket:
        return route
    shown = path.decode("ascii", "replace")
    if route is None:
        raise RouteNotFound(f"no route for {shown}")
    raise ClientProtocolError(
        f"route {route.path} does not take WebSockets (websocket = false); {shown} "
        "cannot be opened as one",
        status_hint=501,
    )


def http_route(router: Router, request: HttpRequest) -> RouteConfig:
    """The route for an ordinary request; raises ClientProtocolError (400) for a path
    refused by normalisation (see the module rules), or RouteNotFound (404)."""
    target = request.target
    route = _matched(router, target, request.path_refusal)
    if route is None:
        raise RouteNotFound(f"no route for {target.decode('ascii', 'replace')}")
    return route
