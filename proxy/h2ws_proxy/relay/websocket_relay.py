"""A WebSocket tunnel's setup and run, once for every front end (each a :class:`TunnelFront`).

Rules:

* :func:`open_tunnel` dials and upgrades the backend with a fresh key (or, to a server
  that speaks HTTP/2, opens an extended CONNECT on a shared connection), then answers the
  client: the backend's 101 becomes the front end's own success answer, any other answer
  goes back as it came, and a proxy-side failure becomes a short status from
  :class:`~h2ws_proxy.errors.ProxyError`. It fills the record's status and error.
* :func:`opened_tunnel` is the opened tunnel's run (``run_tunnel`` with the front end's
  client stream, leftover bytes and capabilities); the record's stats say how it ended.
* The front end calls the two in turn, awaits the run inside ``count_tunnel()``, and keeps
  no handshake objects alive meanwhile: its frame lives as long as the tunnel. How the
  client's stream or connection ends, and the record's log line, stay the front end's.
* A front end that queues its answer for a writer task (HTTP/2) passes that writer's
  :class:`OutputBatch`: the success answer is queued inside a batch of the tunnel's own,
  so it goes to the client's socket from this task when the writer is idle, rather than
  waking the writer for it (a trip through trio's scheduler per new tunnel). The batch
  never stays open across a yield: ``answer_upgrade`` is synchronous.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

import trio

from h2ws_proxy.backend.balancer import GroupBalancer, ServerState
from h2ws_proxy.backend.h2.pool import SpeaksHttp11
from h2ws_proxy.backend.h2.tunnel import open_h2_tunnel
from h2ws_proxy.backend.head_start import HeadStart
from h2ws_proxy.backend.upgrade import BackendUpgraded, connect_and_upgrade
from h2ws_proxy.config import BackendAddress, RouteConfig
from h2ws_proxy.errors import (
    BackendConnectFailed,
    BackendConnectTimeout,
    BackendRejected,
    ProxyError,
)
from h2ws_proxy.http.backend_handshake import build_backend_upgrade, new_websocket_key
from h2ws_proxy.http.extended_connect import build_backend_connect
from h2ws_proxy.http.handshake import WebSocketRequest
from h2ws_proxy.http.upgrade_wire import UpgradeRequest
from h2ws_proxy.relay.client_limits import client_key
from h2ws_proxy.relay.context import ServerContext
from h2ws_proxy.relay.front_side import TunnelFront, refuse
from h2ws_proxy.relay.outcome import RelayStats
from h2ws_proxy.relay.record import RelayRecord, tunnel_opened
from h2ws_proxy.relay.sticky import sticky_cookie
from h2ws_proxy.relay.tunnel import run_tunnel
from h2ws_proxy.transport.errors import STREAM_GONE


class OutputBatch(Protocol):
    """A writer's output batch (the HTTP/2 ``ClientWriter``): output queued between the
    two calls is sent at the end, inline when the writer is idle."""

    def begin_own_batch(self) -> bool:
        """Open a batch unless one is open; True if this one is the caller's to end."""

    def end_batch(self) -> None: ...


async def open_tunnel(
    front: TunnelFront,
    request: WebSocketRequest,
    route: RouteConfig,
    record: RelayRecord,
    server: ServerContext,
    client_address: str | None,
    output: OutputBatch | None = None,
    head_start: HeadStart | None = None,
) -> BackendUpgraded | None:
    """Dial and upgrade the backend, answer the client; the upgraded backend, or None.

    None when the client got a refusal or the backend's own answer, or is gone (then the
    backend is closed already). With an upgraded backend, :func:`opened_tunnel` is next.
    ``output``: where the front end's queued answer goes out (see the module docstring).
    ``head_start``: the dial begun already, with its server taken (``head_start.py``).
    """
    balancer = server.balancers.of(route.backend)
    try:
        if head_start is None:
            key = new_websocket_key()
            upgrade = build_backend_upgrade(request, route, key, client_address)
            # The usual route of one server: no choice, no retry, no extra frame.
            only = balancer.take_at_once()
        else:
            key, upgrade, only = head_start.key, head_start.upgrade, head_start.server
        if only is None:
            upgraded = await _dial_a_server(
                balancer, front, request, route, upgrade, key, record, server, client_address
            )
        else:
            record.backend = only.label
            try:
                upgraded = await _upgrade_at(
                    only.address,
                    upgrade,
                    key,
                    request,
                    route,
                    server,
                    front.scope,
                    client_address,
                    head_start,
                )
            except BaseException:
                balancer.give_back(only)
                raise
            record.hold_server(balancer, only)
    except BackendRejected as rejection:
        record.status, record.outcome = rejection.status, rejection.outcome
        await front.relay_rejection(rejection)
        return None
    except ProxyError as error:
        await refuse(front, record, error)
        return None
    batch = output if output is not None and output.begin_own_batch() else None
    try:
        answer = front.answer_upgrade(upgraded.accepted, record)
    finally:
        if batch is not None:
            batch.end_batch()
    if answer:
        try:
            await front.answer_stream.send_all(answer)
        except STREAM_GONE:
            answer = None
    if answer is None:
        # The client left while the backend was answering.
        await trio.aclose_forcefully(upgraded.stream)
        return None
    record.status, record.opened = front.open_status, True
    tunnel_opened(record, server.stats.counters)
    return upgraded


async def _dial_a_server(
    balancer: GroupBalancer,
    front: TunnelFront,
    request: WebSocketRequest,
    route: RouteConfig,
    upgrade: UpgradeRequest,
    key: bytes,
    record: RelayRecord,
    server: ServerContext,
    client_address: str | None,
) -> BackendUpgraded:
    """Take a server of the route's group and upgrade it; a connect that failed (nothing
    was sent) is tried once more on another server. The server stays taken (on the
    record, given back when the record ends) only when the upgrade succeeded."""
    tried: list[ServerState] = []
    # Only client_ip hashes the client: the others skip parsing its address.
    ring_key = client_key(client_address) if balancer.group.balance == "client_ip" else None
    sticky = sticky_cookie(request.headers, balancer.group.sticky_cookie)
    while True:
        chosen = (not tried and balancer.take_at_once()) or await balancer.take(
            client_key=ring_key, sticky=sticky, exclude=tried
        )
        record.backend = chosen.label
        try:
            # With a choice of servers, each attempt gets its own scope: a connect timeout
            # cancels its scope for good, and the retry must not run in it.
            scope = front.scope if len(balancer.servers) == 1 else None
            upgraded = await _upgrade_at(
                chosen.address, upgrade, key, request, route, server, scope, client_address
            )
        except (BackendConnectFailed, BackendConnectTimeout) as error:
            balancer.give_back(chosen)
            balancer.connect_failed(chosen, error.message)
            tried.append(chosen)
            if len(tried) > 1 or not balancer.has_other(tried):
                raise
            continue
        except BaseException:
            balancer.give_back(chosen)
            raise
        balancer.connect_succeeded(chosen)
        record.hold_server(balancer, chosen)
        return upgraded


def _upgrade_at(
    address: BackendAddress,
    upgrade: UpgradeRequest,
    key: bytes,
    request: WebSocketRequest,
    route: RouteConfig,
    server: ServerContext,
    scope: trio.CancelScope | None,
    client_address: str | None,
    head_start: HeadStart | None = None,
) -> Awaitable[BackendUpgraded]:
    """Open the backend's leg at ``address``: an extended CONNECT on a shared HTTP/2
    connection to a server that speaks it, else (or when an ``auto`` server chose
    HTTP/1.1) an HTTP/1.1 upgrade on a connection of the tunnel's own (``head_start``:
    one begun already, to a server that speaks HTTP/1.1).

    Sync, returning the dial's own coroutine: no frame of its own per new tunnel."""
    if address.speaks_h2 and not server.h2_backends.speaks_http11(address):
        return _upgrade_over_h2(
            address, upgrade, key, request, route, server, scope, client_address
        )
    return _upgrade_over_http11(address, upgrade, key, request, server, scope, head_start)


async def _upgrade_over_h2(
    address: BackendAddress,
    upgrade: UpgradeRequest,
    key: bytes,
    request: WebSocketRequest,
    route: RouteConfig,
    server: ServerContext,
    scope: trio.CancelScope | None,
    client_address: str | None,
) -> BackendUpgraded:
    headers = build_backend_connect(request, route, address, client_address)
    try:
        return await open_h2_tunnel(
            server.h2_backends, address, headers, request, server.config.limits
        )
    except SpeaksHttp11:
        pass
    return await _upgrade_over_http11(address, upgrade, key, request, server, scope)


def _upgrade_over_http11(
    address: BackendAddress,
    upgrade: UpgradeRequest,
    key: bytes,
    request: WebSocketRequest,
    server: ServerContext,
    scope: trio.CancelScope | None,
    head_start: HeadStart | None = None,
) -> Awaitable[BackendUpgraded]:
    return connect_and_upgrade(
        address.over_http11() if address.speaks_h2 else address,
        upgrade,
        key,
        request,
        server.config.limits if head_start is None else head_start.limits,
        server.connect_backend,
        scope=scope,
        connect_times=server.stats.counters.backend_connect_seconds,
        head_start=head_start,
    )


def opened_tunnel(
    front: TunnelFront,
    upgraded: BackendUpgraded,
    record: RelayRecord,
    server: ServerContext,
) -> Awaitable[RelayStats]:
    """The run of the tunnel :func:`open_tunnel` opened: await it inside
    ``server.stats.count_tunnel()``. It always closes ``backend``; ``record.stats`` say how
    it ended, from which the front end ends the client's side.

    Sync, and it returns ``run_tunnel``'s own coroutine: no frame of its own stays alive
    for the tunnel's life (idle memory per tunnel, bench/README.md).
    """
    run = _run_tunnel(front, upgraded, record, server, begin_now=False)
    assert run is not None
    return run


def begin_opened_tunnel(
    front: TunnelFront,
    upgraded: BackendUpgraded,
    record: RelayRecord,
    server: ServerContext,
) -> None:
    """:func:`opened_tunnel`'s run begun in the caller's turn, without a task; only where
    it is polled (``run_tunnel``'s ``begin_now``): the client stream's ``tunnel_end``
    hears of its end."""
    _run_tunnel(front, upgraded, record, server, begin_now=True)


def _run_tunnel(
    front: TunnelFront,
    upgraded: BackendUpgraded,
    record: RelayRecord,
    server: ServerContext,
    *,
    begin_now: bool,
) -> Awaitable[RelayStats] | None:
    limits = server.config.limits
    return run_tunnel(
        front.tunnel_client,
        upgraded.stream,
        client_leftover=front.client_leftover(),
        backend_leftover=upgraded.leftover,
        idle_timeout_s=limits.idle_timeout_s,
        half_closed_timeout_s=limits.half_closed_timeout_s,
        stats=record.stats,
        scope=front.scope,
        poller=front.backend_poller(),
        pushable=front.pushable,
        open_tunnels=server.tunnels,
        untracked_reporter=record,
        on_close_handshake=upgraded.on_close_handshake,
        begin_now=begin_now,
    )
