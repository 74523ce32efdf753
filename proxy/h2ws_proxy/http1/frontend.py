"""The HTTP/1.1 frontend: ordinary requests (kept alive) and classic ``Upgrade: websocket``.

Browsers often open WebSockets over HTTP/1.1 even where HTTP/2 is on offer (Chromium does
unless an HTTP/2 connection to the origin is already open), so the same listener and routes
serve them too.

* Ordinary requests are forwarded by :mod:`h2ws_proxy.relay.exchange`, one after another on a
  kept-alive connection (pipelined requests wait in h11's buffer, bounded); the common one
  runs in this task instead, with the same behaviour (:mod:`~h2ws_proxy.http1.lean_exchange`,
  tried first by ``_try_lean``). Between requests
  the connection may idle for ``idle_connection_timeout_s``; a draining server closes idle
  connections and marks the last answer ``connection: close`` (a connection accepted while
  draining gets one answer so), and refuses new upgrades with 503. Framing that could smuggle
  a request (CL+TE, conflicting lengths, bodies on GET...) is refused before anything
  reaches a backend (see :mod:`h2ws_proxy.http.message`).
* A WebSocket upgrade: check the client's handshake, do our own fresh-nonce handshake with
  the backend (the same checks as for HTTP/2), answer ``101`` with the accept for the
  *client's* key, then hand both raw streams to the tunnel; the bytes the client sent
  behind its request head go first. The connection ends with the tunnel, or after any
  answer other than our 101.
"""

from __future__ import annotations

import logging
import math

import h11
import trio

from h2ws_proxy.backend.upgrade import READ_SIZE
from h2ws_proxy.config import RouteConfig
from h2ws_proxy.errors import ProxyError, ShuttingDown
from h2ws_proxy.http.fields import split_header_list
from h2ws_proxy.http.handshake import parse_h1_upgrade
from h2ws_proxy.http.message import BodyFraming, HttpRequest, request_from_h1
from h2ws_proxy.http1.answers import send_error
from h2ws_proxy.http1.client_side import H1ClientSide
from h2ws_proxy.http1.drain_watch import drain_scopes
from h2ws_proxy.http1.lean_exchange import ClientWatch, start_lean
from h2ws_proxy.http1.lean_run import run_lean
from h2ws_proxy.http1.request_memory import H1RequestMemory
from h2ws_proxy.http1.upgrade_front import H1UpgradeFront
from h2ws_proxy.relay.context import ClientInfo, ServerContext
from h2ws_proxy.relay.exchange_contract import ExchangeResult
from h2ws_proxy.relay.front_side import refuse
from h2ws_proxy.relay.record import RelayRecord
from h2ws_proxy.relay.request_relay import relay_request
from h2ws_proxy.relay.routing import http_route, websocket_route
from h2ws_proxy.relay.websocket_relay import open_tunnel, opened_tunnel
from h2ws_proxy.transport.capabilities import PollableSocket, as_pollable
from h2ws_proxy.transport.errors import STREAM_GONE
from h2ws_proxy.transport.lingering import linger_before_close
from h2ws_proxy.transport.poller import BackendPoller

logger = logging.getLogger(__name__)


def _is_websocket_upgrade(request: h11.Request) -> bool:
    upgrade = [value for name, value in request.headers if name == b"upgrade"]
    return b"websocket" in {item.lower() for item in split_header_list(upgrade)}


class H1Frontend:
    """Serve one HTTP/1.1 client connection: ordinary requests (kept alive), or one upgrade."""

    def __init__(
        self,
        client: trio.abc.Stream,
        server: ServerContext,
        info: ClientInfo,
        initial_data: bytes = b"",
    ) -> None:
        self._client = client
        self._server = server
        self._info = info
        self._limits = server.config.limits
        self._conn = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self._limits.max_header_list_bytes
        )
        if initial_data:  # h11 reads b"" as end of stream
            self._conn.receive_data(initial_data)
        #: The lean path's own epoll (made at its first use, closed with the connection),
        #: the client's socket as it watches it, and its watch there.
        self._poller: BackendPoller | None = None
        self._client_socket: PollableSocket | None = (
            as_pollable(client) if BackendPoller.available() else None
        )
        self._watch = ClientWatch()
        #: The lean path handed its request back after a kept connection failed it.
        self._retry_fresh = False
        #: The last routed request, for a client repeating it (and its lean start's memory).
        self._memory = H1RequestMemory()

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            if self._poller is not None:
                self._poller.close()  # parked backend connections stay idle, unwatched

    async def _run(self) -> None:
        first = True
        slot = self._info.slot  # idle until a request head is in: may be evicted at the cap
        while True:
            if not first:
                slot.idle()
                if not await self._wait_for_next_request():
                    return
            try:
                # Usually the whole head came with the first read: no timer needed then.
                event = self._conn.next_event()
                if event is h11.NEED_DATA:
                    with trio.fail_after(self._limits.client_handshake_timeout_s):
                        request = await self._read_request_head()
                else:
                    request = event if isinstance(event, h11.Request) else None
            except trio.TooSlowError:
                if first:
                    self._server.stats.counters.count_abuse("client_handshake_timeout")
                    await self._send_error(408, "the request head did not arrive in time")
                return
            except h11.RemoteProtocolError as error:
                await self._send_error(error.error_status_hint, f"bad request: {error}")
                return
            if request is None:
                return
            slot.busy()
            first = False
            if _is_websocket_upgrade(request):
                await self._serve(request)
                return  # a tunnel, or a refused upgrade: either way the connection ends
            if not await self._serve_http(request):
                return
            self._conn.start_next_cycle()
            # The answered request's objects go now, not when the next one comes: an idle
            # keep-alive connection may wait for minutes (a head may be 64 KiB of lines).
            del event, request

    async def _wait_for_next_request(self) -> bool:
        """Between requests: wait for the next one's first bytes, or the end.

        False when the client left, stayed idle past ``idle_connection_timeout_s``, or the
        server is draining (an idle keep-alive connection is simply closed then: the drain
        cancels the wait's scope, see :mod:`~h2ws_proxy.http1.drain_watch`).
        """
        if self._conn.trailing_data[0]:
            return not self._server.shutdown.is_set()  # a pipelined request is waiting
        idle_s = self._limits.idle_connection_timeout_s or math.inf
        shutdown = self._server.shutdown
        if shutdown.is_set():
            return False
        got_bytes = False
        scopes = drain_scopes(shutdown)
        with trio.CancelScope(deadline=trio.current_time() + idle_s) as scope:
            scopes.add(scope)
            try:
                got_bytes = await self._receive_into_h11()
            finally:
                scopes.discard(scope)
        return got_bytes

    async def _receive_into_h11(self) -> bool:
        """Read once from the client into h11; False if it closed or broke."""
        try:
            data = await self._client.receive_some(READ_SIZE)
        except STREAM_GONE:
            return False
        self._conn.receive_data(bytes(data))
        return bool(data)

    async def _read_request_head(self) -> h11.Request | None:
        """Read one request head; None if the client left first. The body stays unread."""
        while True:
            event = self._conn.next_event()
            if event is h11.NEED_DATA:
                if not await self._receive_into_h11():
                    self._conn.receive_data(b"")
                continue
            if isinstance(event, h11.Request):
                return event
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None

    async def _finish_upgrade_request(self) -> bool:
        """Read up to the end of an upgrade request (it has no body); False if the client left."""
        while True:
            event = self._conn.next_event()
            if event is h11.NEED_DATA:
                if not await self._receive_into_h11():
                    return False
                continue
            if event is h11.PAUSED or isinstance(event, h11.EndOfMessage):
                return True
            if isinstance(event, h11.ConnectionClosed):
                return False

    async def _serve(self, request: h11.Request) -> None:
        record = RelayRecord.begin(
            "h1",
            self._info.connection_id,
            request.target,
            client=self._info.peer,
            headers=request.headers,
        )
        slot = self._info.slot
        tunnels = slot.tunnels
        try:
            await self._upgrade_and_run(request, record)
        finally:
            if slot.tunnels > tunnels:
                slot.end_tunnel()
            record.log(self._server.stats.counters)

    async def _upgrade_and_run(self, request: h11.Request, record: RelayRecord) -> None:
        front = H1UpgradeFront(self._client, self._conn)
        try:
            ws_request, front.client_key = parse_h1_upgrade(request, tls=self._info.tls)
            record.authority = ws_request.authority
            if self._server.shutdown.is_set():
                # A tunnel opened now would be cut at graceful_timeout_s: send it elsewhere.
                raise ShuttingDown("the proxy is shutting down; open the WebSocket again")
            route = websocket_route(self._server.router, ws_request)
            self._info.slot.begin_tunnel()  # 429 past max_tunnels_per_client
        except ProxyError as error:
            await refuse(front, record, error)
            return
        if not await self._finish_upgrade_request():
            return
        record.route = route.path
        upgraded = await open_tunnel(
            front, ws_request, route, record, self._server, self._info.address
        )
        if upgraded is None:
            return
        tunnel = opened_tunnel(front, upgraded, record, self._server)
        with self._server.stats.count_tunnel():
            await tunnel

    async def _serve_http(self, request: h11.Request) -> bool:
        """Forward one ordinary request; True if the connection may carry another."""
        record = RelayRecord.begin(
            "h1",
            self._info.connection_id,
            request.target,
            method=request.method,
            client=self._info.peer,
            headers=request.headers,
        )
        front = H1ClientSide(self._client, self._conn, self._server)
        try:
            with self._server.stats.count_request():
                try:
                    http_request, route = self._route_request(request, record)
                except ProxyError as error:
                    await refuse(front, record, error)
                    return False
                ran = await self._try_lean(front, http_request, route, record)
                if ran is None:  # not taken, or a kept connection failed it: the task path
                    ran = await relay_request(
                        front,
                        http_request,
                        route,
                        record,
                        ExchangeResult(),
                        self._server,
                        self._info.address,
                        fresh=self._retry_fresh,
                    )
                if not ran:
                    return False  # refused, or cut short by a closed connection
        finally:
            record.log(self._server.stats.counters)
        if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            return True
        # The backend answered before the request body ended (or someone asked to close):
        # close politely, so that the client still reads the answer.
        await linger_before_close(self._client, half_close=True)
        return False

    async def _try_lean(
        self, front: H1ClientSide, request: HttpRequest, route: RouteConfig, record: RelayRecord
    ) -> bool | None:
        """The request on the lean path (:mod:`~h2ws_proxy.http1.lean_exchange`) if nothing
        would wait: True or False as :func:`relay_request`; None if not taken, or if the
        task path must retry it on a new connection (``_retry_fresh`` then)."""
        self._retry_fresh = False
        client = self._client_socket
        if client is None:
            return None  # not a socket of ours (TLS...), or no epoll here
        exchange = start_lean(
            front,
            client,
            request,
            route,
            self._server,
            self._own_poller,
            self._info.address,
            record,
            self._memory.lean_memory(),
        )
        if exchange is None:
            return None
        assert self._poller is not None
        ran = await run_lean(
            exchange, front, self._poller, self._watch, client.fileno(), record, self._server
        )
        self._retry_fresh = ran is None
        return ran

    def _own_poller(self) -> BackendPoller:
        """The connection's poller for the lean path, made at its first use (an ``epoll``
        descriptor, closed with the connection)."""
        if self._poller is None:
            self._poller = BackendPoller()
        return self._poller

    def _route_request(
        self, request: h11.Request, record: RelayRecord
    ) -> tuple[HttpRequest, RouteConfig]:
        """The request as the exchange takes it, and its route (both noted in ``record``).

        Raises ClientProtocolError (framing that could smuggle a request...) or RouteNotFound.
        A request equal to the last one takes what that one was given (``H1RequestMemory``).
        """
        router = self._server.router
        memory = self._memory
        routed = memory.recall(request, router)
        tls = self._info.tls
        http_request = request_from_h1(request, tls=tls) if routed is None else routed[0]
        if http_request.framing is BodyFraming.NONE:
            # h11 ends a bodiless request at once; take that end so the next cycle can start.
            end = self._conn.next_event()
            assert isinstance(end, h11.EndOfMessage), end
        record.authority = http_request.authority
        if routed is not None:
            route = routed[1]
        else:
            route = http_route(router, http_request)
            memory.remember(router, http_request, route)
        record.route = route.path
        return http_request, route

    async def _send_error(self, status: int, reason: str) -> None:
        await send_error(self._client, self._conn, status, reason)
