"""The fast log lines (``log_lines.py``) against the formatters they replace on the hot path.

Differential: the same fields, the same time and the same process fields give the same text
through ``log_lines`` as through ``KeyValueFormatter`` / ``JsonFormatter`` on a LogRecord,
odd values included (spaces, quotes, ``=``, newlines, tabs, control characters, non-ASCII,
bytes that are not ASCII, empty strings, None, floats). Then the sink's rules: access lines
wait for the flusher, any other line goes out at once with them before it, nothing is left
when the flusher stops, writes hold whole lines of at most PIPE_BUF bytes, and a level
filter or another handler still works as with ``logging``.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from unittest import mock

import pytest
import trio
import trio.testing
from hypothesis import example, given, settings
from hypothesis import strategies as st

from h2ws_proxy import log, log_lines, log_texts
from h2ws_proxy.counters import ProxyCounters
from h2ws_proxy.log import JsonFormatter, KeyValueFormatter
from h2ws_proxy.log_lines import AccessLine, LineSink
from h2ws_proxy.log_texts import duration_text, json_line, json_value, key_value_line
from h2ws_proxy.relay.outcome import RelayEnd
from h2ws_proxy.relay.record import RelayRecord, tunnel_opened
from tests.helpers.records import capture_proxy_records

ODD_TEXTS = [
    "",
    "plain",
    "two words",
    'a "quoted" word',
    "k=v",
    "line\nbreak",
    "tab\there",
    "bell\x07 and \x1b[31m escape",
    "caf\u00e9 \u2603 \U0001f600",
    "back\\slash",
    "-",
]
ODD_BYTES = [b"", b"/path?q=1", b"/a b", b'/"x"', b"\xff\xfe raw", b"/\x00nul"]
VALUES = st.one_of(
    st.text(),
    st.binary(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.none(),
    st.booleans(),
    st.sampled_from(ODD_TEXTS),
    st.sampled_from(ODD_BYTES),
)
KEYS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
FIELDS = st.dictionaries(KEYS, VALUES, max_size=8)
CREATED = st.floats(min_value=0, max_value=4e9, allow_nan=False)


def _record(created: float, event: str, fields: dict[str, object]) -> logging.LogRecord:
    record = logging.LogRecord("h2ws_proxy.tunnel", logging.INFO, __file__, 1, event, None, None)
    record.created = created
    record.msecs = int((created - int(created)) * 1000) + 0.0  # as LogRecord computes it
    record.fields = fields
    return record


@pytest.fixture
def process_fields() -> Iterator[None]:
    saved = dict(log._process_fields)
    yield
    log._process_fields.clear()
    log._process_fields.update(saved)


@settings(deadline=None)  # a cold first example (imports, caches) is no failure
@given(created=CREATED, fields=FIELDS, process=st.sampled_from([{}, {"worker": 1, "pid": 42}]))
def test_key_value_lines_equal_the_formatters(
    created: float, fields: dict[str, object], process: dict[str, object]
) -> None:
    saved = dict(log._process_fields)
    try:
        log.set_process_fields(**process)
        expected = KeyValueFormatter().format(_record(created, "tunnel.closed", fields))
        sink = LineSink(io.StringIO())
        sink.set_process_fields(process)
        prefix, merged = sink._prefix, fields
        if any(key in fields for key in process):
            prefix, merged = "", {**process, **fields}
        assert key_value_line(created, "INFO", "tunnel.closed", prefix, merged) == expected
    finally:
        log._process_fields.clear()
        log._process_fields.update(saved)


@settings(deadline=None)  # a cold first example (imports, caches) is no failure
@given(created=CREATED, fields=FIELDS, process=st.sampled_from([{}, {"worker": 1, "pid": 42}]))
def test_json_lines_equal_the_formatter(
    created: float, fields: dict[str, object], process: dict[str, object]
) -> None:
    saved = dict(log._process_fields)
    try:
        log.set_process_fields(**process)
        expected = JsonFormatter().format(_record(created, "tunnel.closed", fields))
        line = json_line(created, "INFO", "h2ws_proxy.tunnel", "tunnel.closed", process, fields)
        assert line == expected
    finally:
        log._process_fields.clear()
        log._process_fields.update(saved)


@settings(deadline=None)  # a cold first example (imports, caches) is no failure
@given(
    created=CREATED,
    texts=st.lists(st.one_of(st.text(), st.binary(), st.none(), st.sampled_from(ODD_TEXTS)),
                   min_size=3, max_size=3),
    numbers=st.lists(st.one_of(st.integers(), st.floats(allow_nan=False), st.just("-")),
                     min_size=2, max_size=2),
    process=st.sampled_from([{}, {"worker": 1, "pid": 42}, {"pid": 42, "status": "x y"}]),
    event=st.sampled_from(["tunnel.closed", "request.closed", 'odd "100%" event']),
    log_format=st.sampled_from(["text", "json"]),
)  # fmt: skip
def test_an_access_line_is_what_the_formatter_writes(
    created: float,
    texts: list[object],
    numbers: list[object],
    process: dict[str, object],
    event: str,
    log_format: str,
) -> None:
    """Texts rendered through the sink's cache, numbers (and ``-``) as the caller renders
    them; a process field among the line's keys takes its place, as in a merged dict."""
    line = AccessLine(
        logging.INFO, "h2ws_proxy.tunnel", event, ("conn", "host", "status", "path", "error")
    )
    values = (numbers[0], texts[0], numbers[1], texts[1], texts[2])
    fields = dict(zip(line.keys, values, strict=True))
    saved = dict(log._process_fields)
    try:
        log.set_process_fields(**process)
        formatter = JsonFormatter() if log_format == "json" else KeyValueFormatter()
        expected = formatter.format(_record(created, event, fields))
    finally:
        log._process_fields.clear()
        log._process_fields.update(saved)
    stream = io.StringIO()
    sink = LineSink(stream, log_format)
    sink.set_process_fields(process)
    number = json_value if log_format == "json" else (lambda value: value)
    rendered = (
        number(values[0]), sink.texts[values[1]], number(values[2]),
        sink.texts[values[3]], sink.texts[values[4]],
    )  # fmt: skip
    with mock.patch.object(log_lines.time, "time", return_value=created):
        sink.access_line(line, rendered)
        sink.access_line(line, rendered)  # its format kept
    assert stream.getvalue() == (expected + "\n") * 2


@given(seconds=st.floats(min_value=0, max_value=1e10))
@example(seconds=0.0)
@example(seconds=0.0001)
@example(seconds=0.0000995)
@example(seconds=0.00009949)
@example(seconds=0.0000005)
@example(seconds=1.0)
@example(seconds=0.1234565)
@example(seconds=999999999.9999996)
@example(seconds=1e9)
def test_a_duration_reads_as_rounded_to_microseconds(seconds: float) -> None:
    assert duration_text(seconds) == repr(round(seconds, 6))


def test_rendered_texts_are_kept_bounded_and_only_for_texts() -> None:
    texts = log_texts.RenderedTexts(log_texts.render_value)
    assert texts["two words"] == '"two words"'
    assert texts[b"/p"] == "/p"
    assert texts[None] == "None"
    assert texts[1] == "1"
    assert texts[True] == "True"  # not the 1 before it: numbers are not kept
    assert set(texts) == {"two words", b"/p", None}
    long = "/" + "x" * log_texts._KEPT_TEXT_MAX
    assert texts[long] == long
    assert long not in set(texts)  # rendered, not kept
    for i in range(log_texts._RENDERED_TEXTS_MAX + 1):
        assert texts[f"/{i}"] == f"/{i}"
    assert len(texts) <= log_texts._RENDERED_TEXTS_MAX


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch, process_fields: None) -> Iterator[None]:
    """``configure_logging`` as the CLI calls it, undone afterwards."""
    root = logging.getLogger("h2ws_proxy")
    saved = (root.handlers[:], root.level, root.propagate, log._sink, log._sink_handler)
    yield
    root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]
    log._sink, log._sink_handler = saved[3], saved[4]


def _install(log_format: str, level: str = "info") -> io.StringIO:
    """Configure logging, and point its sink at a StringIO."""
    log.configure_logging(level, log_format)
    stream = io.StringIO()
    assert log._sink is not None
    log._sink._stream = stream
    return stream


def _finished_tunnel(method: bytes | None = None) -> RelayRecord:
    done = RelayRecord.begin(
        "h2", 7, b'/echo?q="a b"\n', stream_id=3, authority=b"Proxy.Test:8443",
        client="127.0.0.1:50312", method=method,
        headers=[(b"user-agent", b"Mozilla/5.0 (\x1b[31m) caf\xc3\xa9")],
    )  # fmt: skip
    done.route, done.backend, done.status = "/echo", "127.0.0.1:9001", 200
    done.opened = method is None
    done.stats.end, done.stats.client_close = RelayEnd.CLEAN, 1000
    done.error = 'odd "error"\tvalue'
    return done


def _ended(case: str) -> RelayRecord:
    """A record of each kind of line: every field filled, or the ones that can be missing
    left so (no stream, host, user agent, status, close codes or error)."""
    if case in ("tunnel", "request"):
        return _finished_tunnel(b"GET" if case == "request" else None)
    done = RelayRecord.begin("h1", 8, b"/", client="[::1]:4242", method=None)
    if case == "refused":
        done.status, done.stats.broke = 502, "backend reset"
    elif case == "unanswered request":
        done.kind, done.method, done.stats.end = "request", b"POST", RelayEnd.CLIENT_ABORTED
    return done


def _log(done: RelayRecord) -> None:
    counters = ProxyCounters()
    if done.opened:
        tunnel_opened(done, counters)
    done.log(counters)


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize(
    "case", ["tunnel", "request", "refused", "cancelled", "unanswered request"]
)
async def test_an_access_line_is_the_text_the_formatter_gives(
    configured: None,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
    log_format: str,
    case: str,
) -> None:
    monkeypatch.setattr(log_lines.time, "time", lambda: 1764258691.042)  # LogRecords too
    log.set_process_fields(worker=1, pid=42)
    fast = _install(log_format)
    done = _ended(case)
    done.started = trio.current_time()
    autojump_clock.jump(0.0123456789)  # the same duration for both lines, to be rounded
    _log(done)
    # The same record through logging: another handler makes the record hand out LogRecords.
    formatter = JsonFormatter() if log_format == "json" else KeyValueFormatter()
    slow = io.StringIO()
    handler = logging.StreamHandler(slow)
    handler.setFormatter(formatter)
    root = logging.getLogger("h2ws_proxy")
    root.handlers[:] = [handler]
    again = _ended(case)
    again.started = done.started
    _log(again)
    assert fast.getvalue() == slow.getvalue()
    assert "worker=1 pid=42 conn=" in fast.getvalue() or '"worker": 1' in fast.getvalue()
    assert "0.012346" in fast.getvalue()


async def test_access_lines_wait_and_other_lines_take_them_along(
    configured: None, autojump_clock: trio.testing.MockClock
) -> None:
    stream = _install("text")
    tunnel = logging.getLogger("h2ws_proxy.tunnel")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(log.flush_log_lines)
        await trio.testing.wait_all_tasks_blocked()
        _log(_finished_tunnel())
        assert stream.getvalue() == ""  # batched
        log.log_event(tunnel, logging.INFO, "server.listening", listeners="127.0.0.1:1")
        lines = stream.getvalue().splitlines()
        assert [line.split()[2] for line in lines] == ["tunnel.closed", "server.listening"]
        _log(_finished_tunnel())
        await trio.sleep(log_lines.FLUSH_INTERVAL_S)
        await trio.testing.wait_all_tasks_blocked()
        assert len(stream.getvalue().splitlines()) == 3  # the flusher's timer
        _log(_finished_tunnel())
        nursery.cancel_scope.cancel()
    assert len(stream.getvalue().splitlines()) == 4  # flushed when the flusher stopped
    _log(_finished_tunnel())
    assert len(stream.getvalue().splitlines()) == 5  # no flusher: at once


async def test_the_buffer_is_bounded(configured: None) -> None:
    stream = _install("text")
    assert log._sink is not None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(log.flush_log_lines)
        await trio.testing.wait_all_tasks_blocked()
        line = "x" * 1000
        for _ in range(log_lines.MAX_PENDING_CHARS // 1001 + 1):
            log._sink.write(line)
        assert stream.getvalue().count("\n") == log_lines.MAX_PENDING_CHARS // 1001 + 1
        nursery.cancel_scope.cancel()


async def test_kept_access_lines_keep_the_buffering_rules(
    configured: None, autojump_clock: trio.testing.MockClock
) -> None:
    """A client's repeated request is written from a kept template (its own queueing, not
    ``write``'s call): it waits for the flusher, wakes it when the buffer was empty, is
    written at once when the buffer is full or when no flusher runs."""
    stream = _install("text")
    sink = log._sink
    assert sink is not None

    def repeated() -> None:
        _log(_finished_tunnel(b"GET"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(log.flush_log_lines)
        await trio.testing.wait_all_tasks_blocked()
        repeated()
        repeated()  # the second time its key comes, the template is kept
        assert sink.kept_access_templates
        assert all(sink.kept_access_templates.values())
        await trio.sleep(log_lines.FLUSH_INTERVAL_S)
        await trio.testing.wait_all_tasks_blocked()  # the flusher parks: the buffer is empty
        assert stream.getvalue().count("\n") == 2
        assert sink._wake is not None
        repeated()
        assert stream.getvalue().count("\n") == 2  # waits
        await trio.sleep(log_lines.FLUSH_INTERVAL_S)  # the line woke the parked flusher
        await trio.testing.wait_all_tasks_blocked()
        assert stream.getvalue().count("\n") == 3
        per_line = len(stream.getvalue().splitlines()[-1]) + 1
        written = 3
        while sink._pending_chars + per_line < log_lines.MAX_PENDING_CHARS:
            repeated()
            written += 1
        assert stream.getvalue().count("\n") == 3
        repeated()  # the buffer is full: out at once
        assert stream.getvalue().count("\n") == written + 1
        nursery.cancel_scope.cancel()
    repeated()  # no flusher: at once
    assert stream.getvalue().count("\n") == written + 2
    assert len(set(line.split(" ", 1)[1] for line in stream.getvalue().splitlines())) == 1


def test_writes_hold_whole_lines_of_at_most_pipe_buf(monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[bytes] = []
    monkeypatch.setattr(
        log_lines.os, "write", lambda fd, data: writes.append(bytes(data)) or len(data)
    )
    lines = [f"line {i} " + "y" * (i * 37 % 700) for i in range(60)] + ["z" * 9000]
    data = "".join(line + "\n" for line in lines).encode()
    log_lines._write_whole_lines(2, data)
    assert b"".join(writes) == data
    for chunk in writes:
        assert chunk.endswith(b"\n")
        assert len(chunk) <= log_lines._PIPE_BUF or chunk.count(b"\n") == 1


def test_lines_reach_a_real_descriptor_in_order() -> None:
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w", encoding="utf-8", errors="backslashreplace") as stream:
        sink = LineSink(stream)
        for i in range(40):
            sink.write(f"{i} caf\u00e9 " + "w" * 300)
        sink.flush()
    with os.fdopen(read_end, "rb") as reader:
        got = reader.read().decode().splitlines()
    assert got == [f"{i} caf\u00e9 " + "w" * 300 for i in range(40)]


async def test_level_warning_writes_no_access_line(configured: None) -> None:
    stream = _install("text", level="warning")
    _log(_finished_tunnel())
    assert log._sink is not None
    log._sink.flush()
    assert stream.getvalue() == ""


async def test_another_handler_still_gets_records(configured: None) -> None:
    stream = _install("text")
    with capture_proxy_records() as records:
        _log(_finished_tunnel())
    assert [record.event for record in records.records] == ["tunnel.closed"]
    assert "tunnel.closed" in stream.getvalue()  # and the sink's handler wrote it too


@pytest.mark.parametrize("text", ["\x1b[31mred", "a\x00b", "bell\x07", "del\x7f", "cr\r", "x\x1e"])
def test_a_control_character_is_escaped_in_a_text_line(text: str) -> None:
    """A value with a control character (a backend's or client's words in ``error``, say)
    is written as a JSON string: no raw escape sequence reaches a terminal that shows the
    log, and both ways of writing a line agree."""
    rendered = log_texts.render_value(text)
    assert rendered.startswith('"')
    assert rendered.endswith('"')
    assert not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in rendered)
    line = key_value_line(0.0, "INFO", "request.closed", "", {"error": text})
    assert line.endswith(f" error={rendered}")
    record = logging.LogRecord("h2ws_proxy.test", logging.INFO, "", 0, "request.closed", None, None)
    record.fields = {"error": text}
    assert KeyValueFormatter().format(record).endswith(f" error={rendered}")
