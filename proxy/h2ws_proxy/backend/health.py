"""Active health checks of the servers of groups with a ``[backend.health_check]``.

Rules:

* Every ``interval_s`` (the first at once), each server gets ``GET <path>`` over a new
  HTTP/1.1 connection (TLS for ``https://`` servers, as requests go), with
  ``Connection: close`` and the server's own Host; a server spoken to with HTTP/2 gets it
  as a stream on the shared connection requests use (dialled if need be: a server that
  does not answer SETTINGS fails). A 2xx or 3xx status within ``timeout_s`` passes,
  anything else (refused, timed out, another status, garbage) fails.
* ``unhealthy`` failures in a row take a server out; ``healthy`` passes in a row bring it
  back. Servers start up: a proxy that starts while a backend is down sends it work only
  until its checks say so. Transitions are logged; the current state is in ``/stats``.
* Every worker process checks for itself (its state is its own).
* A reload (:meth:`HealthChecks.update`) stops the checks of servers no longer checked
  and starts those of new ones; a server that stays in an unchanged group keeps its
  check running (a changed group's checks start over, on the state it carries).
"""

from __future__ import annotations

import logging

import h11
import trio

from h2ws_proxy.backend.balancer import Balancers, GroupBalancer, ServerState
from h2ws_proxy.backend.h2.pool import H2Backends, SpeaksHttp11
from h2ws_proxy.backend.upgrade import ConnectBackend
from h2ws_proxy.config import BackendAddress, HealthCheck
from h2ws_proxy.errors import ProxyError
from h2ws_proxy.h2session import ResponseReceived, SessionUsageError
from h2ws_proxy.http.extended_connect import backend_scheme
from h2ws_proxy.http.h2_response import parse_h2_response_head
from h2ws_proxy.log import log_event
from h2ws_proxy.transport.errors import STREAM_GONE

logger = logging.getLogger(__name__)

_MAX_ANSWER_HEAD = 16384
_USER_AGENT = b"h2ws-proxy-health-check"


async def run_health_checks(balancers: Balancers, connect: ConnectBackend) -> None:
    """Check every server of every group that asks for it, until cancelled."""
    checks = HealthChecks(connect)
    async with trio.open_nursery() as nursery:
        checks.start(nursery, balancers)


class HealthChecks:
    """The running checks of one server, one task per checked server of each balancer,
    replaced as reloads change the groups."""

    def __init__(self, connect: ConnectBackend, h2: H2Backends | None = None) -> None:
        self._connect = connect
        self._h2 = h2
        self._running: dict[tuple[int, int], tuple[trio.CancelScope, GroupBalancer]] = {}
        self._nursery: trio.Nursery | None = None

    def start(self, nursery: trio.Nursery, balancers: Balancers) -> None:
        """Run the checks of ``balancers`` in ``nursery`` (until it is cancelled)."""
        self._nursery = nursery
        self.update(balancers)

    def update(self, balancers: Balancers) -> None:
        """Check the servers of ``balancers`` from now on: stop the others' checks."""
        assert self._nursery is not None, "start() first"
        wanted: dict[tuple[int, int], tuple[GroupBalancer, ServerState, HealthCheck]] = {}
        for balancer in balancers.groups:
            check = balancer.group.health_check
            if check is None:
                continue
            for server in balancer.servers:
                wanted[(id(balancer), id(server))] = (balancer, server, check)
        for key in [key for key in self._running if key not in wanted]:
            self._running.pop(key)[0].cancel()
        for key, (balancer, server, check) in wanted.items():
            if key not in self._running:
                scope = trio.CancelScope()
                # The balancer is kept with the scope: its id stays its own while it runs.
                self._running[key] = (scope, balancer)
                self._nursery.start_soon(
                    self._check_in, scope, balancer, server, check, name="health_check"
                )

    async def _check_in(
        self,
        scope: trio.CancelScope,
        balancer: GroupBalancer,
        server: ServerState,
        check: HealthCheck,
    ) -> None:
        with scope:
            await _check_forever(balancer, server, check, self._connect, self._h2)


async def _check_forever(
    balancer: GroupBalancer,
    server: ServerState,
    check: HealthCheck,
    connect: ConnectBackend,
    h2: H2Backends | None,
) -> None:
    while True:
        failure = await check_server(server.address, check, connect, h2)
        record_check(balancer, server, check, failure)
        await trio.sleep(check.interval_s)


async def check_server(
    address: BackendAddress,
    check: HealthCheck,
    connect: ConnectBackend,
    h2: H2Backends | None = None,
) -> str | None:
    """One check of ``address``: None if it passed, else why it failed."""
    with trio.move_on_after(check.timeout_s):
        if address.speaks_h2 and h2 is not None and not h2.speaks_http11(address):
            try:
                return await _check_over_h2(h2, address, check.path)
            except SpeaksHttp11:
                pass
        if address.speaks_h2:
            address = address.over_http11()
        try:
            stream = await connect(address)
        except ProxyError as error:
            return error.message
        try:
            status = await _status_of_get(stream, address, check.path)
        except (h11.ProtocolError, *STREAM_GONE) as error:
            return f"bad answer: {error}"
        finally:
            await trio.aclose_forcefully(stream)
        if status is None:
            return "closed without an answer"
        if 200 <= status < 400:
            return None
        return f"status {status}"
    return f"no answer within {check.timeout_s:g}s"


async def _check_over_h2(h2: H2Backends, address: BackendAddress, path: str) -> str | None:
    """The check as a stream of the shared HTTP/2 connection to ``address``."""
    try:
        connection = await h2.connection(address)
    except ProxyError as error:
        return error.message
    headers = [
        (b":method", b"GET"),
        (b":scheme", backend_scheme(address)),
        (b":authority", address.host_header.encode("ascii")),
        (b":path", path.encode("ascii")),
        (b"user-agent", _USER_AGENT),
    ]
    try:
        channel = connection.open_channel(headers, end_stream=True)
    except SessionUsageError as error:
        return f"cannot open a stream: {error}"
    try:
        while True:
            head = await channel.next_head()
            status, _ = parse_h2_response_head(head.headers)
            if isinstance(head, ResponseReceived):
                break
    except trio.BrokenResourceError as error:
        return f"bad answer: {error}"
    except ProxyError as error:
        return error.message
    finally:
        channel.close_now()
    return None if 200 <= status < 400 else f"status {status}"


async def _status_of_get(
    stream: trio.abc.HalfCloseableStream, address: BackendAddress, path: str
) -> int | None:
    client = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_ANSWER_HEAD)
    request = h11.Request(
        method="GET",
        target=path,
        headers=[
            (b"host", address.host_header.encode("ascii")),
            (b"user-agent", _USER_AGENT),
            (b"connection", b"close"),
        ],
    )
    await stream.send_all(client.send(request) + (client.send(h11.EndOfMessage()) or b""))
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(bytes(await stream.receive_some(_MAX_ANSWER_HEAD)))
            continue
        if isinstance(event, h11.Response):
            return event.status_code
        if isinstance(event, h11.ConnectionClosed):
            return None


def record_check(
    balancer: GroupBalancer, server: ServerState, check: HealthCheck, failure: str | None
) -> None:
    """Count a check's result; take the server out or bring it back at the thresholds."""
    fields = {"backend": balancer.name, "server": str(server.address), "check": "active"}
    if failure is None:
        server.check_fails = 0
        server.check_passes += 1
        if not server.checked_up and server.check_passes >= check.healthy:
            server.checked_up = True
            log_event(logger, logging.WARNING, "backend.server_up", **fields)
            balancer.server_came_back()
        return
    server.check_passes = 0
    server.check_fails += 1
    if server.checked_up and server.check_fails >= check.unhealthy:
        server.checked_up = False
        log_event(logger, logging.WARNING, "backend.server_down", **fields, reason=failure)
