"""Access lines through the real sink, end to end: kept templates on a real pipe.

Tests that capture records (``capture_proxy_records``) attach a handler, and then the
record hands ``logging`` a LogRecord and skips the sink: they never reach a kept template.
Here the proxy runs with the sink ``configure_logging`` makes, writing to a real pipe
(``os.write`` of whole lines, as to a worker's stderr), and nothing else listens:

* a client repeating its request on one connection gets lines written from a kept
  template from its third request on, and every line's bytes are those the old rendering
  (``KeyValueFormatter`` / ``JsonFormatter`` of the record's fields, as the base wrote
  them) gives for the same request;
* clients whose method is 60 kB (h11 takes a method up to ``max_header_list_bytes``) leave
  nothing of it in the sink (found in review: ~30 MB per worker for 256 of them).
"""

from __future__ import annotations

import calendar
import io
import json
import logging
import os
import re
import time
from unittest import mock

import pytest
import trio
import trio.testing

from h2ws_proxy import log
from h2ws_proxy.log import JsonFormatter, KeyValueFormatter
from h2ws_proxy.log_lines import LineSink
from tests.conftest import StartProxy
from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.process import free_port
from tests.helpers.setup import backend_url, make_config

pytestmark = pytest.mark.socket

REQUESTS = 4
USER_AGENT = b"probe/1.0 (kept lines)"
#: A field whose value only the proxy knows: read from the line written.
PROXY_CHOSEN = object()


async def _answer_200(conn: BackendConnection) -> None:
    while True:
        await conn.read_upgrade()  # the head and the body
        await conn.stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello there")


async def _answer_head(stream: trio.SocketStream, end: bytes = b"\r\n\r\n") -> bytes:
    """What the proxy answers, up to ``end``."""
    answer = b""
    with trio.fail_after(10):
        while end not in answer:
            chunk = await stream.receive_some(65536)
            assert chunk, answer
            answer += chunk
    return answer


async def _read_lines(read_fd: int, event: str, count: int) -> list[bytes]:
    """The pipe's lines until ``count`` of them name ``event``; those lines."""
    data = b""
    with trio.fail_after(10):
        while data.count(event.encode()) < count:
            try:
                data += os.read(read_fd, 65536)
            except BlockingIOError:
                await trio.sleep(0.01)
    return [line for line in data.split(b"\n") if event.encode() in line]


def _old_rendering(log_format: str, written: bytes, fields: dict[str, object]) -> bytes:
    """The line the base wrote for the request: ``fields`` (what the test knows) with the
    values only the proxy knows (its connection id, the duration, the time) read from the
    ``written`` line, through the formatter of ``log_format``."""
    text = written.decode()
    entry = logging.LogRecord(
        "h2ws_proxy.tunnel", logging.INFO, __file__, 1, "request.closed", None, None
    )
    if log_format == "json":
        parsed = json.loads(text)
        created, proxy_chosen = parsed["ts"], parsed
    else:
        stamp, milliseconds = re.match(r"(\S{19})\.(\d{3})Z ", text).groups()  # type: ignore[union-attr]
        second = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))
        created = second + (int(milliseconds) + 0.5) / 1000
        proxy_chosen = dict(re.findall(r" (conn|duration_s)=(\S+)", text))
    entry.created = created
    entry.msecs = int((created - int(created)) * 1000) + 0.0  # as LogRecord computes it
    ordered: dict[str, object] = {}
    for key, value in fields.items():
        if value is PROXY_CHOSEN:
            raw = proxy_chosen[key]
            value = int(raw) if key != "duration_s" else float(raw)
        ordered[key] = value
    entry.fields = ordered
    formatter = JsonFormatter() if log_format == "json" else KeyValueFormatter()
    return formatter.format(entry).encode()


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_repeated_requests_are_written_from_kept_templates_as_before(
    logging_restored: None, start_proxy: StartProxy, nursery: trio.Nursery, log_format: str
) -> None:
    backend = ScriptedBackend(_answer_200)
    await nursery.start(backend.run)
    log.configure_logging("info", log_format)
    log.set_process_fields(worker=1, pid=42)
    sink = log._sink
    assert sink is not None
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    sink._stream = os.fdopen(write_fd, "w", encoding="utf-8")  # a pipe: opening never blocks
    kept_lines = mock.patch.object(sink, "kept_access_line", wraps=sink.kept_access_line)
    try:
        with kept_lines as from_template:
            address = await start_proxy(make_config(("/", backend.url)))
            stream = await trio.open_tcp_stream(address.host, address.port)
            async with stream:
                for _ in range(REQUESTS):
                    await stream.send_all(
                        b"POST /kept?q=1 HTTP/1.1\r\nHost: Proxy.Test:80\r\n"
                        b"User-Agent: " + USER_AGENT + b"\r\nContent-Length: 5\r\n\r\nhello"
                    )
                    answer = await _answer_head(stream, b"hello there")
                    assert answer.startswith(b"HTTP/1.1 200"), answer
                host, port = stream.socket.getsockname()[:2]
                lines = await _read_lines(read_fd, "request.closed", REQUESTS)
        # The first line notes the key, the second keeps the template, the rest use it.
        assert from_template.call_count == REQUESTS - 2
    finally:
        sink._stream.close()
        os.close(read_fd)
    fields: dict[str, object] = {
        "conn": PROXY_CHOSEN,
        "front": "h1",
        "method": b"POST",
        "stream": "-",  # HTTP/1.1: no stream
        "host": "proxy.test",
        "client": f"{host}:{port}",
        "user_agent": USER_AGENT.decode(),
        "path": b"/kept?q=1",
        "route": "/",
        "backend": backend.url,
        "status": 200,
        "bytes_up": 5,  # the request's body
        "bytes_down": 11,  # the answer's
        "duration_s": PROXY_CHOSEN,
        "end": "clean",
        "error": None,
    }
    assert len(lines) == REQUESTS
    for line in lines:
        assert line == _old_rendering(log_format, line, fields)


def _held_chars(sink: LineSink) -> int:
    return sum(
        len(part)
        for key, pieces in sink.kept_access_templates.items()
        for part in (*(k for k in key if isinstance(k, (bytes, str))), *pieces)
    )


async def test_h1_clients_with_long_methods_do_not_grow_the_sink(
    logging_restored: None, start_proxy: StartProxy
) -> None:
    """HTTP/1.1 connections whose method is 60 kB; nothing listens on the backend port, so
    each is answered 502. What the sink holds afterwards must not grow with the methods."""
    log.configure_logging("info", "text")
    sink = log._sink
    assert sink is not None
    out = sink._stream = io.StringIO()
    address = await start_proxy(make_config(("/", backend_url(free_port()))))
    connections = 64
    for index in range(connections):
        stream = await trio.open_tcp_stream(address.host, address.port)
        async with stream:
            method = b"M" * 60_000 + str(index).encode()
            for _ in range(3):  # a client repeating its request on one connection
                await stream.send_all(method + b" / HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
                answer = await _answer_head(stream)
                assert answer.startswith(b"HTTP/1.1 502"), answer[:40]
                if b"connection: close" in answer.lower():
                    break
    with trio.fail_after(10):
        while out.getvalue().count("request.closed") < connections:
            await trio.testing.wait_all_tasks_blocked(0.01)
    assert _held_chars(sink) < 1024 * 1024, f"the sink holds {_held_chars(sink) / 1e6:.1f} MB"
    assert "M" * 60_000 not in "".join(map(str, sink.kept_access_templates))
