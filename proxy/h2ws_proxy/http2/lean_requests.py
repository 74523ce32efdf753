"""Which ordinary HTTP/2 requests run without a task, and their start (the lean path).

:class:`LeanRequests` is one connection's side of :mod:`~h2ws_proxy.http2.polled_request`:
it decides per request whether nothing would have to wait (no body to upload, a route of
one server spoken to over HTTP/1.1 in cleartext, no sticky cookie, an idle kept-alive
connection in the pool whose socket the poller can drive, a request head the kernel takes
whole) and starts a :class:`~h2ws_proxy.http2.polled_request.PolledRequest` then. Anything
else runs on a task as before: the lean path is an optimisation of the common case, never a
different behaviour.
"""

from __future__ import annotations

from collections.abc import Callable

from h2ws_proxy.backend.h1_wire import H1BackendWire
from h2ws_proxy.config import RouteConfig
from h2ws_proxy.errors import ProxyError
from h2ws_proxy.http.message import (
    BackendRequest,
    BodyFraming,
    HttpRequest,
    build_backend_request,
)
from h2ws_proxy.http2.polled_request import PolledRequest
from h2ws_proxy.http2.proxy_session import ProxySession
from h2ws_proxy.http2.stream import H2Stream
from h2ws_proxy.relay.context import ClientInfo, ServerContext
from h2ws_proxy.relay.exchange_contract import ExchangeResult
from h2ws_proxy.relay.record import RelayRecord
from h2ws_proxy.transport.capabilities import as_pollable
from h2ws_proxy.transport.errors import STREAM_GONE
from h2ws_proxy.transport.poller import BackendPoller


class LeanRequests:
    """One HTTP/2 connection's side of the lean path: what its requests share."""

    def __init__(
        self,
        session: ProxySession,
        server: ServerContext,
        info: ClientInfo,
        *,
        poller: Callable[[], BackendPoller | None],
        refuse: Callable[[int, ProxyError], None],
        finish: Callable[[H2Stream, RelayRecord, ExchangeResult], None],
        run_on_task: Callable[[H2Stream, HttpRequest, RouteConfig, bool], None],
    ) -> None:
        self.session = session
        self.server = server
        self.info = info
        self._poller = poller
        #: Answers a proxy error on a stream (the registry's ``refuse``).
        self.refuse = refuse
        #: Ends a stream's exchange as a task's end would (``StreamTasks.finish_exchange``).
        self.finish = finish
        #: Starts the task path for a request (``StreamTasks.serve_exchange`` in a task).
        self.run_on_task = run_on_task
        #: The last request written, its route, and what went to the backend for it (a
        #: client repeats requests; the client's address is the connection's).
        self._last: tuple[HttpRequest, RouteConfig, BackendRequest, bytes] | None = None

    def try_start(self, stream: H2Stream, request: HttpRequest, route: RouteConfig) -> bool:
        """Run ``request`` (already routed, its stream ended by the client) without a task
        if nothing would wait; False: the caller runs it on a task."""
        if request.framing is not BodyFraming.NONE:
            return False
        server = self.server
        balancer = server.balancers.of(route.backend)
        if balancer.group.sticky_cookie:
            return False
        chosen = balancer.take_at_once()
        if chosen is None:
            return False
        address = chosen.address
        pool = server.pool
        if address.speaks_h2 or address.scheme == "https" or not pool.has_idle(address):
            balancer.give_back(chosen)
            return False
        poller = self._poller()
        timers = poller.timers if poller is not None else None  # the connection's
        if poller is None or timers is None:
            balancer.give_back(chosen)
            return False
        connection = pool.take_idle_now(address, poller)
        if connection is None:
            balancer.give_back(chosen)
            return False
        # From here, the connection's socket may be in ``poller``'s set (parked there):
        # it is registered over, given back with the poller, or unregistered before closing.
        socket = as_pollable(connection.stream)
        assert socket is not None  # take_idle_now gives only such connections
        last = self._last
        if last is not None and last[0] is request and last[1] is route:
            # A repeated request (see ``accept_http``): the same bytes for the backend.
            backend_request, head = last[2], last[3]
        else:
            try:
                backend_request = build_backend_request(request, route, self.info.address)
            except ProxyError:
                # The task path meets the same error and answers it.
                balancer.give_back(chosen)
                pool.release_now(connection, poller)
                return False
            head = backend_request.head_bytes()
            self._last = (request, route, backend_request, head)
        limits = server.config.limits
        wire = H1BackendWire(backend_request, max_head_bytes=limits.max_header_list_bytes)
        try:
            sent = socket.send_nowait(head)
        except STREAM_GONE:
            sent = -1
        if sent != len(head):
            # Broken, or the kernel did not take it whole: this connection is done with,
            # and the task path (with its waits and retries) takes the request.
            balancer.give_back(chosen)
            poller.unregister(socket.fileno())
            socket.close_now()
            return False
        info = self.info
        record = RelayRecord.begin(
            "h2",
            info.connection_id,
            request.target,
            stream_id=stream.stream_id,
            route=route,
            method=request.method,
            authority=request.authority,
            client=info.peer,
            headers=request.headers,
        )
        record.backend = chosen.label
        PolledRequest(
            self, stream, request, route, balancer, chosen, connection, socket, wire, record
        ).begin(poller, timers, limits.http_idle_timeout_s)
        return True
