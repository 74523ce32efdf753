"""The first step both lean request paths share: a request head written whole to a kept-alive
connection, or nothing done.

A bodiless request runs without a task (``http2/lean_requests.py``, ``http1/lean_exchange.py``)
only when nothing would wait: a route of one plain HTTP/1.1 server (no TLS, no HTTP/2, no
sticky cookie), a server the balancer gives at once, a connection idle in the pool whose
socket the caller's poller can watch, a request that translates, and a head the kernel
takes whole. :func:`start_on_kept_connection` checks them in that order and, at the first
that fails, gives back what it took and returns None: the caller runs the task path, which
meets the same conditions (and errors) itself.
"""

from __future__ import annotations

from collections.abc import Callable

from h2ws_proxy.backend.balancer import GroupBalancer, ServerState
from h2ws_proxy.backend.pool import BackendConnection
from h2ws_proxy.config import RouteConfig
from h2ws_proxy.errors import ProxyError
from h2ws_proxy.http.message import BackendRequest, HttpRequest, build_backend_request
from h2ws_proxy.relay.context import ServerContext
from h2ws_proxy.transport.capabilities import PollableSocket, as_pollable
from h2ws_proxy.transport.errors import STREAM_GONE
from h2ws_proxy.transport.poller import BackendPoller

#: A request whose head went to a kept connection: what its run goes on with, in this order:
#: the balancer and the server it gave, the connection, its socket, the request as sent,
#: and the caller's poller (the socket may be in its set already, parked there: the caller
#: registers itself for it, or unregisters it before closing). A tuple, not an object with
#: names: one is made per lean request, and its callers take it apart at once.
KeptStart = tuple[
    GroupBalancer, ServerState, BackendConnection, PollableSocket, BackendRequest, BackendPoller
]


class LastRequest:
    """The last request translated for one client connection and its bytes (a client
    repeats its requests; the client's address is the connection's)."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: tuple[HttpRequest, RouteConfig, BackendRequest, bytes] | None = None

    def translated(
        self, request: HttpRequest, route: RouteConfig, client_address: str | None
    ) -> tuple[BackendRequest, bytes]:
        """``request`` for the backend, and its head; raises ProxyError as
        ``build_backend_request``."""
        last = self._last
        if last is not None and last[0] is request and last[1] is route:
            return last[2], last[3]
        backend_request = build_backend_request(request, route, client_address)
        head = backend_request.head_bytes()
        self._last = (request, route, backend_request, head)
        return backend_request, head


def start_on_kept_connection(
    server: ServerContext,
    route: RouteConfig,
    request: HttpRequest,
    client_address: str | None,
    poller_of: Callable[[], BackendPoller | None],
    last: LastRequest | None = None,
) -> KeptStart | None:
    """Write bodiless ``request``'s head to a kept connection if nothing would wait (see the
    module); None: nothing was done. ``poller_of`` gives the client connection's poller
    (made at its first call, once an idle connection is there to take; None or OSError:
    none to be had)."""
    balancer = server.balancers.of(route.backend)
    if balancer.group.sticky_cookie:
        return None
    chosen = balancer.take_at_once()
    if chosen is None:
        return None
    address, pool = chosen.address, server.pool
    if address.speaks_h2 or address.scheme == "https" or not pool.has_idle(address):
        balancer.give_back(chosen)
        return None
    try:
        poller = poller_of()
    except OSError:
        poller = None  # no descriptor for an epoll (at the limit)
    connection = pool.take_idle_now(address, poller) if poller is not None else None
    if poller is None or connection is None:
        balancer.give_back(chosen)
        return None
    socket = as_pollable(connection.stream)
    assert socket is not None  # take_idle_now gives only such connections
    try:
        if last is not None:
            backend_request, head = last.translated(request, route, client_address)
        else:
            backend_request = build_backend_request(request, route, client_address)
            head = backend_request.head_bytes()
    except ProxyError:
        balancer.give_back(chosen)
        pool.release_now(connection, poller)  # (parked back where it was)
        return None
    try:
        sent = socket.send_nowait(head)
    except STREAM_GONE:
        sent = -1
    if sent != len(head):
        # Broken, or the kernel did not take it whole: this connection is done with, and
        # the task path (with its waits and retries) takes the request.
        balancer.give_back(chosen)
        poller.unregister(socket.fileno())
        socket.close_now()
        return None
    return balancer, chosen, connection, socket, backend_request, poller
