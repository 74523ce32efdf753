"""The first step both lean request paths share: a request head written whole to a kept-alive
connection, or nothing done.

A bodiless request runs without a task (``http2/lean_requests.py``, ``http1/lean_exchange.py``)
only when nothing would wait: a route of one plain HTTP/1.1 server (no TLS, no HTTP/2, no
sticky cookie), a server the balancer gives at once, a connection idle in the pool whose
socket the caller's poller can watch, a request that translates, and a head the kernel
takes whole. :func:`start_on_kept_connection` checks them in that order (the translation
right after the sticky test: it depends on the request alone and takes nothing) and, at the
first that fails, gives back what it took and returns None: the caller runs the task path,
which meets the same conditions (and errors) itself.
"""

from __future__ import annotations

from collections.abc import Callable

from h2ws_proxy.backend.balancer import Balancers, GroupBalancer, ServerState
from h2ws_proxy.backend.kept_connection import BackendConnection
from h2ws_proxy.config import RouteConfig
from h2ws_proxy.errors import ProxyError
from h2ws_proxy.http.message import BackendRequest, HttpRequest, build_backend_request
from h2ws_proxy.relay.context import ServerContext
from h2ws_proxy.relay.request_facts import RequestFacts
from h2ws_proxy.transport.capabilities import PollableSocket
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
    """What the last request of one client connection made that depends on nothing but
    that request, its route and the server's generation (a client repeats its requests;
    the client's address is the connection's): its balancer, the request for the backend
    and its head's bytes, and the last server found to be a plain HTTP/1.1 one. Kept by
    the identities of the request, the route and the balancers (a reload makes new ones),
    which it holds, so they cannot be reused while it is kept; one entry: bounded."""

    __slots__ = (
        "backend_request", "balancer", "balancers", "facts", "head", "request", "route", "single",
    )  # fmt: skip

    def __init__(self) -> None:
        self.request: HttpRequest | None = None
        self.route: RouteConfig | None = None
        self.balancers: Balancers | None = None
        #: The route's balancer; None: its group is sticky (no lean start).
        self.balancer: GroupBalancer | None = None
        self.backend_request: BackendRequest | None = None
        self.head = b""
        #: ``balancer``'s one server (:attr:`GroupBalancer.single`) if its address is plain
        #: HTTP/1.1 in cleartext; None: no lean start (several servers, a cap, a sticky
        #: group, TLS or HTTP/2: ``take_at_once`` would give none, or the task path must).
        self.single: ServerState | None = None
        #: The last request's record facts (``relay/request_facts.py``), made by a caller
        #: that keeps them here for ``request`` and ``route``: :meth:`prepare` drops them.
        self.facts: RequestFacts | None = None

    def prepare(
        self,
        balancers: Balancers,
        request: HttpRequest,
        route: RouteConfig,
        client_address: str | None,
    ) -> bool:
        """Make what is kept for ``request``; False: nothing kept (``build_backend_request``
        raised its ProxyError, which the task path meets and answers itself)."""
        self.request = self.facts = None
        balancer = balancers.of(route.backend)
        sticky = bool(balancer.group.sticky_cookie)
        if not sticky:
            try:
                self.backend_request = build_backend_request(request, route, client_address)
            except ProxyError:
                return False
            self.head = self.backend_request.head_bytes()
        self.request, self.route, self.balancers = request, route, balancers
        self.balancer = None if sticky else balancer
        single = None if sticky else balancer.single
        if single is not None and (single.address.speaks_h2 or single.address.scheme == "https"):
            single = None
        self.single = single
        return True


def start_on_kept_connection(
    server: ServerContext,
    route: RouteConfig,
    request: HttpRequest,
    client_address: str | None,
    poller_of: Callable[[], BackendPoller | None],
    last: LastRequest | None = None,
    poller: BackendPoller | None = None,
    now: float | None = None,
    balancers: Balancers | None = None,
    ready: set[int] | None = None,
) -> KeptStart | None:
    """Write bodiless ``request``'s head to a kept connection if nothing would wait (see the
    module); None: nothing was done. ``poller_of`` gives the client connection's poller
    (made at its first call, once an idle connection is there to take; None or OSError:
    none to be had), unless the caller has it already: ``poller``. ``last``: the client
    connection's memory of its last request. ``now``: the clock's reading for the pool's
    keep-alive test (see :meth:`BackendPool.take_idle_now`), if the caller has one.
    ``balancers``: the server's current ones, if the caller read them already. ``ready``:
    ``poller``'s ready descriptors as of the caller's client read, asked after ``now`` was
    read (the pool's quiet check: :meth:`BackendPool.take_idle_now`), if it asked."""
    if balancers is None:
        balancers = server.balancers
    if last is None:
        last = LastRequest()
    if (
        last.request is not request or last.route is not route or last.balancers is not balancers
    ) and not last.prepare(balancers, request, route, client_address):
        return None
    # ``balancer.take_at_once()`` in place, for a plain server (``prepare`` found it so).
    chosen = last.single
    if chosen is None or not chosen.checked_up:
        return None
    chosen.active += 1
    balancer = last.balancer
    assert balancer is not None  # (``single`` is one of its servers)
    pool = server.pool
    address = chosen.address
    if poller is None:
        # The poller is made only once an idle connection is there to take.
        if not pool.has_idle(address):
            balancer.give_back(chosen)
            return None
        try:
            poller = poller_of()
        except OSError:
            poller = None  # no descriptor for an epoll (at the limit)
        if poller is None:
            balancer.give_back(chosen)
            return None
    connection = None
    if ready is not None:  # (then ``now`` is the reading it was asked after)
        assert now is not None
        connection = pool.take_parked_quiet(address, poller, now, ready)
    if connection is None:
        connection = pool.take_idle_now(address, poller, now, ready)
    if connection is None:
        balancer.give_back(chosen)
        return None
    socket = connection.socket
    assert socket is not None  # take_idle_now gives only such connections
    head = last.head
    send_head = connection.send_head
    assert send_head is not None  # (set with ``socket``)
    try:
        # The socket's own send: a taken connection is open and not ended (only such are
        # kept), and any OSError, ``BlockingIOError`` too, is "not sent whole" here.
        sent = send_head(head)
    except OSError:
        sent = -1
    if sent != len(head):
        # Broken, or the kernel did not take it whole: this connection is done with, and
        # the task path (with its waits and retries) takes the request.
        balancer.give_back(chosen)
        poller.unregister(connection.fd)  # (kept since its making: fileno() is -1 once closed)
        socket.close_now()
        return None
    backend_request = last.backend_request
    assert backend_request is not None  # (``prepare``)
    return balancer, chosen, connection, socket, backend_request, poller
