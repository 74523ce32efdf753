"""The admin endpoint: a tiny HTTP/1.1 server for health checks.

``GET /healthz`` (liveness) answers 200 while the proxy serves and 503 once it drains.
``GET /readyz`` (readiness) answers 200 once every listener accepts and every route has a
server that is up, else 503 with the reason (starting, draining, a route with no server
up), so a load balancer sends new clients only where they will be served, and stops
before the process goes. The admin port stays up through the drain. ``GET /stats``
answers live counters as JSON (connections, tunnels, ordinary requests in progress, trio
tasks, unexpected errors), for soak runs and debugging. ``GET /metrics`` answers the
Prometheus text format (``metrics.py``). One request per connection, bounded in size and
time.

With ``workers > 1`` the supervisor serves the admin port with its own answers (health of
the worker set, stats summed over the workers): :func:`answer_admin_request` takes the
function that answers a path.

``POST /reload`` (empty body) reloads the config (``reload.py``): 200 and what changed,
500 and the error (the old config keeps serving), 409 while a reload runs; a body is 400,
another method 405.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable

import h11
import trio

from h2ws_proxy.relay.context import ServerContext, ServerStats
from h2ws_proxy.server.metrics import CONTENT_TYPE, exposition, take_samples
from h2ws_proxy.transport.errors import STREAM_GONE

_MAX_HEAD_BYTES = 8192
_TIMEOUT_S = 5.0


#: Answers a GET for a path (the target without its query): status and body.
AdminAnswer = Callable[[bytes], Awaitable[tuple[int, bytes]]]
#: Runs a reload for ``POST /reload``: status and body.
ReloadAnswer = Callable[[], Awaitable[tuple[int, bytes]]]


async def handle_admin(
    stream: trio.abc.Stream, server: ServerContext, reload: ReloadAnswer | None = None
) -> None:
    """Answer one admin request about ``server`` and close."""
    await answer_admin_request(stream, functools.partial(_answer, server), reload)


async def answer_admin_request(
    stream: trio.abc.Stream, answer: AdminAnswer, reload: ReloadAnswer | None = None
) -> None:
    """Read one request from ``stream``, answer GET/HEAD with ``answer`` (and ``POST
    /reload`` with ``reload``), and close."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD_BYTES)
    try:
        with trio.move_on_after(_TIMEOUT_S):
            request = await _read_request(conn, stream)
            if request is not None:
                path = request.target.split(b"?", 1)[0]
                if reload is not None and path == b"/reload":
                    status, body = await _answer_reload(conn, stream, request, reload)
                elif request.method in (b"GET", b"HEAD"):
                    status, body = await answer(path)
                else:
                    status, body = 405, b"only GET and HEAD\n"
                plain = path != b"/metrics" or status != 200
                headers = [
                    (b"content-type", b"text/plain; charset=utf-8" if plain else CONTENT_TYPE),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ]
                data = conn.send(h11.Response(status_code=status, headers=headers))
                if request.method != b"HEAD":
                    data += conn.send(h11.Data(data=body))
                data += conn.send(h11.EndOfMessage())
                await stream.send_all(data)
    except (h11.ProtocolError, *STREAM_GONE):
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def _read_request(conn: h11.Connection, stream: trio.abc.Stream) -> h11.Request | None:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(4096)))
            continue
        if isinstance(event, h11.Request):
            return event
        return None


async def _answer_reload(
    conn: h11.Connection, stream: trio.abc.Stream, request: h11.Request, reload: ReloadAnswer
) -> tuple[int, bytes]:
    if request.method != b"POST":
        return 405, b"only POST (with an empty body) reloads\n"
    while True:  # the body must be empty
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(4096)))
        elif isinstance(event, h11.Data) and not event.data:
            continue
        elif isinstance(event, h11.EndOfMessage):
            with trio.CancelScope(shield=True):  # a reload, once begun, runs to its end
                return await reload()
        else:
            return 400, b"POST /reload takes an empty body\n"


NOT_FOUND = (404, b"not found; try /healthz, /readyz, /stats or /metrics\n")


async def _answer(server: ServerContext, path: bytes) -> tuple[int, bytes]:
    if path == b"/healthz":
        if server.shutdown.is_set():
            return 503, b"draining\n"
        return 200, b"ok\n"
    if path == b"/readyz":
        reason = not_ready(server)
        return (200, b"ready\n") if reason is None else (503, reason.encode() + b"\n")
    if path == b"/stats":
        return 200, json.dumps(server_stats(server.stats)).encode() + b"\n"
    if path == b"/metrics":
        return 200, exposition(take_samples(server.stats))
    return NOT_FOUND


def not_ready(server: ServerContext) -> str | None:
    """Why ``server`` should get no new clients (``/readyz``), or None when it should."""
    if server.shutdown.is_set():
        return "draining"
    if not server.accepting.is_set():
        return "starting"
    now = trio.current_time()
    for route in server.config.routes:
        balancer = server.balancers.of(route.backend)
        if not any(backend_server.up(now) for backend_server in balancer.servers):
            hosts = f" (host {', '.join(route.host)})" if route.host else ""
            return f"route {route.path}{hosts}: no server of backend {balancer.name} is up"
    return None


def server_stats(stats: ServerStats) -> dict[str, object]:
    """The ``/stats`` counters of a server; call it from inside its trio run."""
    counters: dict[str, object] = {
        "connections": stats.connections,
        "tunnels": stats.tunnels,
        "requests": stats.requests,
        "tasks": _count_tasks(),
        "unexpected_errors": stats.unexpected_errors,
        "refused_per_client": stats.refused_per_client,
        "evicted_idle": stats.evicted_idle,
        "accept_failures": stats.accept_failures,
    }
    if stats.backend_servers is not None:
        counters["servers"] = stats.backend_servers()
    return counters


def _count_tasks() -> int:
    """Every task alive in this trio run (a leak check for soak runs)."""
    pending = [trio.lowlevel.current_root_task()]
    count = 0
    while pending:
        task = pending.pop()
        if task is None:
            continue
        count += 1
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return count
