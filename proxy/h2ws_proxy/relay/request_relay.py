"""An ordinary request's forwarding, once for every front end (each a :class:`RequestFront`).

Rules:

* The front end has parsed and routed the request and counts it in the server's stats;
  :func:`relay_request` forwards it (``forward_exchange``) with the front end as its client
  side and fills the record: a proxy-side failure before any answer is refused with its
  status, an answer cut short is recorded with how it ended (and the front end cuts it
  short at once if its protocol must), a finished exchange is clean unless its scope was
  cancelled.
* Whatever happens, the record's status and ``opened`` are final when it returns; how the
  stream or connection ends, and the log line, stay the front end's.
"""

from __future__ import annotations

from h2ws_proxy.backend.balancer import GroupBalancer, ServerState
from h2ws_proxy.backend.h2.pool import SpeaksHttp11
from h2ws_proxy.config import BackendAddress, RouteConfig
from h2ws_proxy.errors import BackendConnectFailed, BackendConnectTimeout, ProxyError
from h2ws_proxy.http.message import HttpRequest
from h2ws_proxy.relay.client_limits import client_key
from h2ws_proxy.relay.context import ServerContext
from h2ws_proxy.relay.exchange import forward_exchange
from h2ws_proxy.relay.exchange_contract import ExchangeAborted, ExchangeResult
from h2ws_proxy.relay.exchange_h2 import forward_h2_exchange
from h2ws_proxy.relay.front_side import RequestFront, refuse
from h2ws_proxy.relay.outcome import RelayEnd
from h2ws_proxy.relay.record import RelayRecord
from h2ws_proxy.relay.sticky import set_cookie_field, sticky_cookie


async def relay_request(
    front: RequestFront,
    request: HttpRequest,
    route: RouteConfig,
    record: RelayRecord,
    result: ExchangeResult,
    server: ServerContext,
    client_address: str | None,
    *,
    fresh: bool = False,
) -> bool:
    """Forward ``request`` and relay its answer; True if the exchange ran to its end.

    False after a refusal or an answer cut short; ``result`` and ``record`` say more.
    ``fresh``: on a new connection, not a kept one (a kept one just failed this request:
    that was the one retry a bodiless request gets).
    """
    balancer = server.balancers.of(route.backend)
    try:
        try:
            # The usual route of one server: no choice, no retry, no cookie, no extra frame.
            only = None if balancer.group.sticky_cookie else balancer.take_at_once()
            if only is None:
                await _forward_to_a_server(
                    balancer, front, request, route, record, result, server, client_address
                )
            else:
                record.backend = only.label
                try:
                    await _forward(
                        request,
                        route,
                        only.address,
                        front,
                        record,
                        result,
                        server,
                        client_address,
                        fresh,
                    )
                finally:
                    balancer.give_back(only)
        except ProxyError as error:
            # Nothing of the answer went out yet: answer the error ourselves.
            await refuse(front, record, error)
            return False
        except ExchangeAborted as abort:
            record.error = abort.reason
            record.stats.end = abort.end
            await front.cut_short()
            return False
        if not result.cancelled:
            record.stats.end = RelayEnd.CLEAN
        return True
    finally:
        record.status = record.status or result.status
        record.opened = result.head_sent


async def _forward_to_a_server(
    balancer: GroupBalancer,
    front: RequestFront,
    request: HttpRequest,
    route: RouteConfig,
    record: RelayRecord,
    result: ExchangeResult,
    server: ServerContext,
    client_address: str | None,
) -> None:
    """Take a server of the route's group for the exchange; a connect that failed (nothing
    was sent, nothing of the body read) is tried once more on another server."""
    group = balancer.group
    sticky = sticky_cookie(request.headers, group.sticky_cookie)
    tried: list[ServerState] = []
    # Only client_ip hashes the client: the others skip parsing its address.
    ring_key = client_key(client_address) if balancer.group.balance == "client_ip" else None
    while True:
        chosen = await balancer.take(client_key=ring_key, sticky=sticky, exclude=tried)
        record.backend = chosen.label
        if group.sticky_cookie and sticky != chosen.sticky:
            result.answer_field = set_cookie_field(
                group.sticky_cookie, chosen.sticky, secure=request.scheme == b"https"
            )
        try:
            await _forward(
                request, route, chosen.address, front, record, result, server, client_address
            )
        except (BackendConnectFailed, BackendConnectTimeout) as error:
            balancer.connect_failed(chosen, error.message)
            tried.append(chosen)
            if len(tried) > 1 or result.head_sent or not balancer.has_other(tried):
                raise
            continue
        finally:
            balancer.give_back(chosen)
        balancer.connect_succeeded(chosen)
        return


async def _forward(
    request: HttpRequest,
    route: RouteConfig,
    address: BackendAddress,
    front: RequestFront,
    record: RelayRecord,
    result: ExchangeResult,
    server: ServerContext,
    client_address: str | None,
    fresh: bool = False,
) -> None:
    """The exchange with ``address``: on a stream of a shared HTTP/2 connection to a
    server that speaks it, else (or when an ``auto`` server chose HTTP/1.1) on a kept-alive
    HTTP/1.1 connection."""
    limits, backends = server.config.limits, server.h2_backends
    if address.speaks_h2 and not backends.speaks_http11(address):
        try:
            await forward_h2_exchange(
                request,
                route,
                address,
                front,
                backends,
                limits,
                client_address,
                record.stats,
                result,
                on_start=front.on_start,
            )
            return
        except SpeaksHttp11:
            pass
    await forward_exchange(
        request,
        route,
        address.over_http11() if address.speaks_h2 else address,
        front,
        server.pool,
        limits,
        client_address,
        record.stats,
        result,
        on_start=front.on_start,
        fresh=fresh,
    )
