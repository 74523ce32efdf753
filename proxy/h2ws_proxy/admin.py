"""The admin endpoint: a tiny HTTP/1.1 server for health checks.

``GET /healthz`` answers 200 while the proxy serves and 503 once it drains (so a load
balancer stops sending new clients before the process goes). ``GET /stats`` answers live
counters as JSON (connections, tunnels, trio tasks, unexpected errors), for soak runs and
debugging. ``/metrics`` and ``/readyz`` come later. One request per connection, bounded in
size and time.
"""

from __future__ import annotations

import json

import h11
import trio

from h2ws_proxy.context import ServerContext

_MAX_HEAD_BYTES = 8192
_TIMEOUT_S = 5.0


async def handle_admin(stream: trio.abc.Stream, server: ServerContext) -> None:
    """Answer one admin request and close."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD_BYTES)
    try:
        with trio.move_on_after(_TIMEOUT_S):
            request = await _read_request(conn, stream)
            if request is not None:
                status, body = _answer(request, server)
                headers = [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ]
                data = conn.send(h11.Response(status_code=status, headers=headers))
                if request.method != b"HEAD":
                    data += conn.send(h11.Data(data=body))
                data += conn.send(h11.EndOfMessage())
                await stream.send_all(data)
    except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
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


def _answer(request: h11.Request, server: ServerContext) -> tuple[int, bytes]:
    path = request.target.split(b"?", 1)[0]
    if request.method not in (b"GET", b"HEAD"):
        return 405, b"only GET and HEAD\n"
    if path == b"/healthz":
        if server.shutdown.is_set():
            return 503, b"draining\n"
        return 200, b"ok\n"
    if path == b"/stats":
        stats = server.stats
        body = {
            "connections": stats.connections,
            "tunnels": stats.tunnels,
            "tasks": _count_tasks(),
            "unexpected_errors": stats.unexpected_errors,
        }
        return 200, json.dumps(body).encode() + b"\n"
    return 404, b"not found; try /healthz or /stats\n"


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
