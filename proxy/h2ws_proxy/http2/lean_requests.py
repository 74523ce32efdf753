"""Which ordinary HTTP/2 requests run without a task, and their start (the lean path).

:class:`LeanRequests` is one connection's side of :mod:`~h2ws_proxy.http2.polled_request`:
it decides per request whether nothing would have to wait (no body to upload, a route of
one server spoken to over HTTP/1.1 in cleartext, no sticky cookie, an idle kept-alive
connection in the pool whose socket the poller can drive, a request head the kernel takes
whole) and starts a :class:`~h2ws_proxy.http2.polled_request.PolledRequest` then. Anything
else runs on a task as before: the lean path is an optimisation of the common case, never a
different behaviour.

The clock is read once per client read, not per request (a read brings up to a window's
worth of HEADERS): the first lean start of a read takes the reading (``read_time``), which
the frontend clears as it acts on each read's events; that read's other starts use it for
the pool's keep-alive test and their idle timer. So a request's idle timeout counts from
the moment its read began to be acted on (its bytes had arrived by then), which is at most
that read's processing earlier than its own start: the deadline still fires only after the
timeout passed since the request's bytes moved. The pool's quiet check is shared too
(``backend/pool.py``): the read's first start checks the connection it takes alone (one
``poll``, what asking the whole set would cost: a read of one request pays no more than
before); its second start asks the poller once which descriptors of its set are ready
(``_read_ready``), the answer for its take and every later take of the read.
"""

from __future__ import annotations

from collections.abc import Callable

from h2ws_proxy.config import RouteConfig
from h2ws_proxy.errors import ProxyError
from h2ws_proxy.http.message import BodyFraming, HttpRequest
from h2ws_proxy.http2.polled_request import PolledRequest
from h2ws_proxy.http2.proxy_session import ProxySession
from h2ws_proxy.http2.stream import H2Stream
from h2ws_proxy.relay.context import ClientInfo, Generation, ServerContext
from h2ws_proxy.relay.exchange_contract import ExchangeResult
from h2ws_proxy.relay.kept_start import LastRequest, start_on_kept_connection
from h2ws_proxy.relay.record import RelayRecord
from h2ws_proxy.relay.request_facts import RequestFacts
from h2ws_proxy.transport.poller import BackendPoller
from h2ws_proxy.transport.timers import ConnectionTimers

_NO_BODY = BodyFraming.NONE
#: ``LeanRequests._read_ready`` before the read's second lean start asked (never read from).
_NOT_ASKED: set[int] = set()


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
        forget: Callable[[H2Stream], None],
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
        #: Drops a stream whose work is over (the registry's ``forget``): the end of a
        #: request answered whole at once, beyond what ``PolledRequest`` does itself.
        self.forget = forget
        #: Starts the task path for a request (``StreamTasks.serve_exchange`` in a task).
        self.run_on_task = run_on_task
        #: The last request written and what went to the backend for it.
        self._last = LastRequest()
        #: The connection's poller once it was made with its timers (it stays the same).
        self._timed: BackendPoller | None = None
        self._timers: ConnectionTimers | None = None
        #: The timers' clock as read by the current client read's first lean start; below
        #: zero: not read yet in this read (the frontend sets it so per read).
        self.read_time = -1.0
        #: The poller's ready descriptors as the read's second lean start found them (the
        #: pool's quiet check for that start's take and the later ones: ``backend/pool.py``);
        #: ``_NOT_ASKED`` before; None: not known (every take of the read checks alone).
        self._read_ready: set[int] | None = None
        #: ``_timed_poller`` bound once (not a new bound method per request).
        self._timed_poller_of = self._timed_poller

    def _timed_poller(self) -> BackendPoller | None:
        """The connection's poller, if it has the connection's timers too."""
        poller = self._timed
        if poller is None:
            poller = self._poller()
            if poller is None or poller.timers is None:
                return None
            self._timed, self._timers = poller, poller.timers
        return poller

    def try_start(
        self,
        stream: H2Stream,
        request: HttpRequest,
        route: RouteConfig,
        generation: Generation | None = None,
    ) -> bool:
        """Run ``request`` (already routed, its stream ended by the client) without a task
        if nothing would wait; False: the caller runs it on a task. ``generation``: the
        server's current one, if the caller read it already."""
        if request.framing is not _NO_BODY:
            return False
        server = self.server
        info = self.info
        if generation is None:
            generation = server.current
        timers = self._timers
        if timers is not None:
            now = self.read_time
            if now < 0.0:  # the read's first lean start: its take checks alone
                now = self.read_time = timers.now()
                ready = None
                self._read_ready = _NOT_ASKED
            else:
                ready = self._read_ready
                if ready is _NOT_ASKED:  # its second: asks for it and the rest of the read
                    poller = self._timed
                    ready = None if poller is None else poller.ready_descriptors()
                    self._read_ready = ready
            start = start_on_kept_connection(
                server,
                route,
                request,
                info.address,
                self._timed_poller_of,
                self._last,
                self._timed,
                now,
                generation.balancers,
                ready,
            )
        else:  # the connection's first: its poller and timers are made once there is work
            start = start_on_kept_connection(
                server, route, request, info.address, self._timed_poller_of, self._last
            )
            if start is None:
                return False
            timers = self._timers
            assert timers is not None  # (``_timed_poller`` gave the poller)
            now = self.read_time = timers.now()
            self._read_ready = _NOT_ASKED  # (the read's next start asks)
        if start is None:
            return False
        limits = generation.config.limits
        # The facts kept for the last request are this one's: a start comes back only for
        # the request and route ``self._last`` holds, and a new one there dropped them.
        facts = self._last.facts
        if facts is None:
            facts = RequestFacts("h2", info.connection_id, info.peer, request, route)
            self._last.facts = facts
        PolledRequest(
            self,
            stream,
            request,
            route,
            start,
            limits.max_header_list_bytes,
            facts,
            timers,
            limits.http_idle_timeout_s,
            now,
        )
        return True
