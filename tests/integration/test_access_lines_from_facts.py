"""Access lines from a request's facts (relay/request_facts.py): lean HTTP/2 GETs on one
connection through the real sink, every value of the line changed one at a time between runs
of repeats (user agent, authority, target, backend status, a backend error, process fields,
a reload renaming the route and moving its backend): each line must be the old rendering,
and the metrics exposition the counts of the traffic. The facts path end to end
(tests/unit/test_request_facts.py drives RequestFacts with stand-ins, never a real lean
connection)."""

from __future__ import annotations

import calendar
import io
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from h2ws_proxy import log
from h2ws_proxy.counters import status_label
from h2ws_proxy.log import JsonFormatter, KeyValueFormatter
from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.h2_client import open_h2_client
from tests.helpers.reload import post_reload, serve_between
from tests.helpers.scripted_http import scripted

pytestmark = pytest.mark.socket


def _backend(name: bytes) -> ScriptedBackend:
    """Answers ``GET /status/NNN`` with NNN, ``/broken`` with a bad head, else 200."""

    async def answer(connection: BackendConnection, head: bytes, _number: int) -> bool:
        target = head.split(b" ", 2)[1]
        if target.startswith(b"/broken"):
            await connection.stream.send_all(b"HTTP/1.1 2xx nonsense\r\n\r\n")
            return False
        status = int(target.rsplit(b"/", 1)[1]) if target.startswith(b"/status/") else 200
        body = name * 3
        await connection.stream.send_all(
            b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body)
        )
        return True

    return ScriptedBackend(scripted(answer))


def _old_rendering(log_format: str, written: str, fields: dict[str, object]) -> str:
    entry = logging.LogRecord(
        "h2ws_proxy.tunnel", logging.INFO, __file__, 1, "request.closed", None, None
    )
    if log_format == "json":
        parsed = json.loads(written)
        created, chosen = parsed["ts"], parsed
        process = {key: parsed[key] for key in ("worker", "pid")}
    else:
        stamp, ms = re.match(r"(\S{19})\.(\d{3})Z ", written).groups()  # type: ignore[union-attr]
        second = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))
        created = second + (int(ms) + 0.5) / 1000
        chosen = dict(re.findall(r" (conn|duration_s)=(\S+)", written))
        process = {key: int(value) for key, value in re.findall(r" (worker|pid)=(\d+)", written)}
    entry.created = created
    entry.msecs = int((created - int(created)) * 1000) + 0.0
    ordered: dict[str, object] = {**process}
    for key, value in fields.items():
        if value is None and key in ("conn", "duration_s"):
            raw = chosen[key]
            value = int(raw) if key == "conn" else float(raw)
        ordered[key] = value
    entry.fields = ordered
    formatter = JsonFormatter() if log_format == "json" else KeyValueFormatter()
    saved = dict(log._process_fields)
    log._process_fields.clear()  # the process fields are read from the line, in its place
    try:
        return formatter.format(entry)
    finally:
        log._process_fields.update(saved)


async def _metrics(admin: Any) -> str:
    stream = await trio.open_tcp_stream(admin.host, admin.port)
    async with stream:
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
        answer = b""
        with trio.fail_after(30):
            while data := await stream.receive_some(65536):
                answer += data
    return answer.partition(b"\r\n\r\n")[2].decode()


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_lean_get_lines_and_counters_as_before(
    logging_restored: None, tmp_path: Path, log_format: str
) -> None:
    log.configure_logging("info", log_format)
    log.set_process_fields(worker=1, pid=42)
    sink = log._sink
    assert sink is not None
    out = sink._stream = io.StringIO()
    from unittest import mock

    from h2ws_proxy.relay.record import RelayRecord

    of_facts = getattr(RelayRecord, "of_facts", None)
    if of_facts is not None:  # the lean path begins records from facts
        patch = mock.patch.object(RelayRecord, "of_facts", side_effect=of_facts)
        facts_calls = patch.start()
    expected: list[dict[str, object]] = []
    counts: dict[tuple[str, str], int] = {}
    async with trio.open_nursery() as nursery:
        a, b = _backend(b"A"), _backend(b"B")
        file, bound, stream = await serve_between(nursery, tmp_path, a, b)
        host, port = stream.socket.getsockname()[:2]
        route, backend, body = "/", a.url, 3

        async def run(
            path: bytes = b"/same?q=1",
            authority: bytes = b"Proxy.Test:8080",
            agent: bytes | None = b"agent/1.0",
            times: int = 3,
            status: int = 200,
            error: str | None = None,
        ) -> None:
            for _ in range(times):
                headers = [
                    (b":method", b"GET"),
                    (b":scheme", b"http"),
                    (b":path", path),
                    (b":authority", authority),
                ]
                if agent is not None:
                    headers.append((b"user-agent", agent))
                state = await client.request(headers, end_stream=True)
                with trio.fail_after(15):
                    await client.finished(state)
                assert state.status == status, (path, state.status)
                expected.append(
                    {
                        "conn": None,
                        "front": "h2",
                        "method": b"GET",
                        "stream": state.stream_id,
                        "host": authority.decode().split(":")[0].lower(),
                        "client": f"{host}:{port}",
                        "user_agent": agent.decode() if agent is not None else "-",
                        "path": path,
                        "route": route,
                        "backend": backend,
                        "status": status,
                        "bytes_up": 0,
                        "bytes_down": body if error is None else 0,
                        "duration_s": None,
                        "end": "clean" if error is None else "refused",
                        "error": error,
                    }
                )
                label = status_label(status)
                counts[(route, label)] = counts.get((route, label), 0) + 1

        async with open_h2_client(stream) as client:
            await run(times=4)
            await run(agent=b"other-agent/2.0")
            await run(agent=None)
            await run()
            await run(authority=b"other.test")
            await run(path=b"/elsewhere")
            await run(path=b"/status/404", status=404)
            await run(path=b"/status/299", status=299)  # another label: 2xx
            await run()
            await run(
                path=b"/broken",
                status=502,
                error="backend sent an invalid answer: Invalid status line"
                " (bad status code b'2xx')",
                times=1,
            )
            await run()
            log.set_process_fields(worker=2, pid=7)
            await run()
            file.routes = [("/same", b.url), ("/", a.url)]  # a new route, another backend
            file.write()
            assert bound.admin is not None
            status, text = await post_reload(bound.admin)
            assert status == 200, text
            route, backend = "/same", b.url
            await run(times=4)
            route, backend = "/", a.url
            await run(path=b"/elsewhere")
        sink.flush()
        metrics = await _metrics(bound.admin)
        nursery.cancel_scope.cancel()
    if of_facts is not None:
        patch.stop()
        assert facts_calls.call_count >= 20, facts_calls.call_count
    lines = [line for line in out.getvalue().split("\n") if "request.closed" in line]
    assert len(lines) == len(expected)
    broken = next(i for i, fields in enumerate(expected) if fields["status"] == 502)
    for index, (line, fields) in enumerate(zip(lines, expected, strict=True)):
        if index == broken:  # the error text is the wire's: read it from the line
            fields["error"] = (
                json.loads(line)["error"]
                if log_format == "json"
                else line.split(" error=", 1)[1].strip('"')
            )
            if log_format != "json":
                fields["error"] = fields["error"].replace('\\"', '"')
        assert line == _old_rendering(log_format, line, fields), index
    for (route_name, label), count in counts.items():
        sample = f'h2ws_requests_total{{code="{label}",front="h2",route="{route_name}"}} {count}.0'
        assert sample in metrics, (sample, [m for m in metrics.split("\n") if "requests_t" in m])
    total = sum(counts.values())
    assert f"h2ws_request_duration_seconds_count {total}.0" in metrics
