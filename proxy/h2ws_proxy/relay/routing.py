"""Pick the route for a request path: the longest configured prefix wins.

A prefix matches on path-segment boundaries: ``/chat`` matches ``/chat``, ``/chat/room``
and ``/chat?x=1``, but not ``/chatter`` (nginx's plain prefix match would take it; that
surprises people who put two apps side by side). ``/`` matches everything. Pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from h2ws_proxy.config import RouteConfig
from h2ws_proxy.errors import ClientProtocolError, RouteNotFound


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


def websocket_route(router: Router, path: bytes) -> RouteConfig:
    """The route for a WebSocket request to ``path``.

    Raises RouteNotFound (404), or ClientProtocolError (501) when the route exists but its
    backend does not take WebSockets (``websocket = false``).
    """
    route = router.match(path)
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


def http_route(router: Router, target: bytes) -> RouteConfig:
    """The route for an ordinary request to ``target``; raises RouteNotFound (404)."""
    route = router.match(target)
    if route is None:
        raise RouteNotFound(f"no route for {target.decode('ascii', 'replace')}")
    return route
