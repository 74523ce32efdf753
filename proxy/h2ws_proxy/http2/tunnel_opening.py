"""A new tunnel's opening without a task, while nothing goes wrong.

An extended CONNECT used to start a task that dialled the backend, sent the upgrade and
waited for the 101 in a cancel scope holding the answer's deadline: a task, a scope, a
deadline move and an ``epoll_ctl`` registration per new tunnel, before the tunnel's own
run (which holds no task while it idles: ``relay/tunnel_polled.py``). Here the reader's
turn dials and sends (``backend/head_start.py``), the connection's
:class:`~h2ws_proxy.transport.poller.BackendPoller` says when the answer is readable, and
the connection's timers hold its deadline; a backend that answers with the plain 101 it
sent before (``backend/known_101.py``) has its tunnel answered and begun right there.

Rules:

* Only where nothing else differs from the task's opening (:func:`_open_polled`): a route
  of one plain TCP server at an IP address, spoken to in HTTP/1.1 through the default
  dial, on a connection with a poller; else the task opens the tunnel as before.
* Everything but that success goes to the task, which goes on from where this got
  (``HeadStart``) with the same code as before: a connect that did not complete at once,
  an upgrade not sent whole, an answer that is anything else or came in part, the
  backend's end or error, the answer's deadline (the task meets it at once, as its
  scope's deadline passed), a cancel (a client reset, the connection's end: the task
  starts in a cancelled scope). So every ending of an opening is the task's, as it was.
* Until then the stream's scope only notes a cancel (``CancelNoted``, from the intake):
  the task's path adopts a trio scope for its dial, the polled opening adopts itself.
* While it waits, the opening is the stream's scope (``H2Stream.adopt_scope``), the
  poller's watcher of the backend socket and a timer on the connection's timers; the
  hand-off drops all three first, so only one of them acts. An opened tunnel takes the
  poller's watch over instead (its socket stays in the epoll set: no ``epoll_ctl``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import trio

from h2ws_proxy.backend.balancer import GroupBalancer
from h2ws_proxy.backend.head_start import HeadStart, may_start_dial, start_dial
from h2ws_proxy.backend.known_101 import known_101
from h2ws_proxy.backend.upgrade import READ_SIZE, BackendUpgraded, open_backend_stream
from h2ws_proxy.config import RouteConfig
from h2ws_proxy.errors import ProxyError
from h2ws_proxy.http.backend_handshake import build_backend_upgrade, new_websocket_key
from h2ws_proxy.http.handshake import BackendAccepted, WebSocketRequest
from h2ws_proxy.http2.stream import H2Stream
from h2ws_proxy.relay.record import RelayRecord
from h2ws_proxy.transport.errors import STREAM_GONE
from h2ws_proxy.transport.poller import BackendPoller
from h2ws_proxy.transport.socket_stream import LeanSocketStream

if TYPE_CHECKING:
    from h2ws_proxy.http2.stream_tasks import StreamTasks


#: A constant task name: trio would otherwise format one from the bound method per stream.
_TUNNEL_TASK_NAME = "h2ws_proxy.http2.frontend.tunnel"


def start_tunnel(
    tasks: StreamTasks,
    nursery: trio.Nursery,
    stream: H2Stream,
    request: WebSocketRequest,
    route: RouteConfig,
) -> None:
    """Open and run ``stream``'s tunnel: from the caller's turn where it can be (see the
    module), else in a task of ``nursery`` (the connection's)."""
    if not _open_polled(tasks, stream, request, route):
        stream.adopt_scope(trio.CancelScope())  # (the task's dial runs in it)
        nursery.start_soon(tasks.serve_tunnel, stream, request, route, name=_TUNNEL_TASK_NAME)


def _continue_in_task(
    tasks: StreamTasks,
    nursery: trio.Nursery,
    stream: H2Stream,
    request: WebSocketRequest,
    route: RouteConfig,
    record: RelayRecord,
    head: HeadStart,
) -> None:
    """The task goes on with the opening from where ``head`` got, in a trio scope of its
    own that the stream adopts (a cancel noted or made before carries over)."""
    stream.adopt_scope(trio.CancelScope())
    serve = tasks.serve_tunnel
    nursery.start_soon(serve, stream, request, route, record, head, name=_TUNNEL_TASK_NAME)


def _open_polled(
    tasks: StreamTasks, stream: H2Stream, request: WebSocketRequest, route: RouteConfig
) -> bool:
    """Open ``stream``'s tunnel from here, going on in a task if it must (see the module);
    False if it is not one to open here (nothing was done)."""
    poller = tasks.backend_poller()
    server = tasks.server
    if (
        poller is None
        or poller.timers is None
        or poller.nursery is None
        or server.connect_backend is not open_backend_stream
    ):
        return False
    balancer = server.balancers.of(route.backend)
    only = balancer.take_at_once()
    if only is None:
        return False
    if not may_start_dial(only.address):
        balancer.give_back(only)
        return False
    key = new_websocket_key()
    try:
        upgrade = build_backend_upgrade(request, route, key, tasks.client_address)
    except ProxyError:
        balancer.give_back(only)
        return False  # the task refuses it, as it would have
    record = tasks.tunnel_record(stream, request, route)
    record.backend = only.label
    limits = server.config.limits
    head = start_dial(only, key, upgrade, limits, server.stats.counters.backend_connect_seconds)
    backend = head.stream
    if backend is None or head.unsent or head.error is not None:
        _continue_in_task(tasks, poller.nursery, stream, request, route, record, head)
        return True
    opening = _Opening(tasks, stream, request, route, record, head, backend, poller, balancer)
    poller.register(backend.fileno(), opening)
    if not opening.over:  # (the poller may have refused to watch it: handed off)
        poller.timers.arm(opening, limits.handshake_timeout_s, head.connected)
        # Last: a cancel already asked for is carried over, and hands off at once.
        stream.adopt_scope(opening)
    return True


class _Opening:
    """One tunnel waiting for its backend's first answer, without a task: the poller's
    watcher of the backend, a timer on the connection's timers, and the stream's scope."""

    __slots__ = (
        "_backend",
        "_balancer",
        "_cancel_called",
        "_head",
        "_poller",
        "_record",
        "_request",
        "_route",
        "_stream",
        "_tasks",
        "deadline",
        "over",
        "watched",
    )

    def __init__(
        self,
        tasks: StreamTasks,
        stream: H2Stream,
        request: WebSocketRequest,
        route: RouteConfig,
        record: RelayRecord,
        head: HeadStart,
        backend: LeanSocketStream,
        poller: BackendPoller,
        balancer: GroupBalancer,
    ) -> None:
        self._tasks, self._stream, self._request, self._route = tasks, stream, request, route
        self._record, self._head, self._backend, self._poller = record, head, backend, poller
        self._balancer = balancer
        self._cancel_called = False
        #: Handed off, or opened: nothing of this object acts any more.
        self.over = False
        self.deadline = math.inf  # (``Timer``: set by the timers)
        self.watched = False  # (``Watcher``: set by the poller)

    # ---- the stream's scope (``Cancellable``) ----

    @property
    def cancel_called(self) -> bool:
        return self._cancel_called

    def cancel(self) -> None:
        """A client reset or the connection's end: the task ends it, cancelled."""
        self._cancel_called = True
        self._hand_off()

    # ---- the connection's timers (``Timer``) ----

    def on_timer(self) -> None:
        """The answer's deadline passed: the task meets it at once (its scope's deadline
        is the same, and past)."""
        self._hand_off()

    # ---- the poller (``Watcher``) ----

    def on_readable(self) -> None:
        if self.over:
            return
        head = self._head
        try:
            data = self._backend.receive_nowait(READ_SIZE)
        except STREAM_GONE as error:
            head.error = error
            self._hand_off()
            return
        if data is None:
            return  # woken for nothing
        head.received += data
        known = known_101(head.server.address)
        answer = known.match(head.received, head.key, self._request) if known else None
        if answer is None:
            self._hand_off()  # anything else, or only part of it: the task reads on
        else:
            self._open(*answer)

    def on_error(self) -> None:
        """The poller cannot watch the backend: the task waits for it instead."""
        self._hand_off()

    def on_closed(self) -> None:
        """The poller ended with the connection: the opening ends, cancelled."""
        self.cancel()

    # ----

    def _stop(self, *, keep_watch: bool = False) -> None:
        self.over = True
        if not keep_watch:
            self._poller.unregister(self._backend.fileno())
        timers = self._poller.timers
        assert timers is not None
        timers.disarm(self, self._head.limits.handshake_timeout_s)  # (as armed: a reload)

    def _hand_off(self) -> None:
        """The task goes on from here (see the module), in a scope of its own, cancelled
        if this was."""
        if self.over:
            return
        self._stop()
        nursery = self._poller.nursery
        assert nursery is not None
        _continue_in_task(
            self._tasks, nursery, self._stream, self._request, self._route, self._record, self._head
        )

    def _open(self, accepted: BackendAccepted, leftover: bytes) -> None:
        """The backend switched: answer the client, begin the tunnel (``open_tunnel``'s
        and ``serve_tunnel``'s steps after a successful dial). The poller's watch of the
        backend goes on to the tunnel (``BackendPoller.register``), or is dropped where the
        client left meanwhile (``begin_opened``)."""
        self._stop(keep_watch=True)
        upgraded = BackendUpgraded(stream=self._backend, accepted=accepted, leftover=leftover)
        self._record.hold_server(self._balancer, self._head.server)
        self._tasks.begin_opened(self._stream, self._record, upgraded)
