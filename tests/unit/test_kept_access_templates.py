"""The sink's kept access templates hold a bounded number of characters, whatever a key holds.

``RelayRecord`` keys a kept template by every text its line was rendered from: the method,
path, host and user agent a client chose (up to ``max_header_list_bytes``: 64 KiB by
default) among them. ``LineSink.keep_access_template`` measures every text of the key
itself, and the template's pieces, against ``_KEPT_TEMPLATE_CHARS_MAX``: a longer line is
rendered each time and held by nothing (found in review: 256 kept templates of 60 kB methods
held ~30 MB per worker, where the base kept no text over 512 bytes).
"""

from __future__ import annotations

import gc
import io
import logging
import tracemalloc

import pytest

from h2ws_proxy import log, log_lines
from h2ws_proxy.counters import ProxyCounters
from h2ws_proxy.log_lines import AccessLine, LineSink
from h2ws_proxy.relay.record import RelayRecord

BUDGET = log_lines._KEPT_TEMPLATE_CHARS_MAX
LINE = AccessLine(logging.INFO, "h2ws_proxy.tunnel", "test.closed", ("a", "stream", "b", "c", "d"))
VARYING = (1, 2, 3, 4)


class _Text(str):
    __slots__ = ()


def _held_chars(sink: LineSink) -> int:
    """The characters of every text the sink's kept templates hold, keys and pieces."""
    return sum(
        len(part)
        for key, pieces in sink.kept_access_templates.items()
        for part in (*(k for k in key if isinstance(k, (bytes, str))), *pieces)
    )


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_long_methods_are_not_kept(logging_restored: None, log_format: str) -> None:
    log.configure_logging("info", log_format)
    sink = log._sink
    assert sink is not None
    counters = ProxyCounters()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for connection in range(256):
            sink._stream = io.StringIO()  # the lines themselves are not what is measured
            method = b"M" * 60_000 + str(connection).encode()  # a fresh object each time
            for stream in (1, 3, 5):  # a client repeating its request on one connection
                record = RelayRecord.begin("h1", connection, b"/", method=method, stream_id=stream)
                record.log(counters)
            del record, method
        sink._stream = io.StringIO()
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # 256 requests of 60 kB methods: the base keeps none of them (~0 bytes retained); the
    # branch before the fix kept ~30 MB.
    assert retained < 4 * 1024 * 1024, f"{retained / 1e6:.1f} MB retained by the log sink"
    assert not sink.kept_access_templates


def test_every_text_of_a_key_counts_whichever_field() -> None:
    sink = LineSink(io.StringIO())
    values = ("v", 1, 2, 3, "0.1")
    short = (LINE, 7, "h1", b"GET", None, True)
    for position in range(len(short) + 1):  # a long text anywhere, or in a new last field
        for long in ("x" * (BUDGET + 1), b"x" * (BUDGET + 1)):
            key = (*short[:position], long, *short[position:])
            for _ in range(3):
                sink.keep_access_template(key, LINE, values, VARYING)
            assert not sink.kept_access_templates, key[position]
    # Texts under the budget one by one, over it together.
    split = (LINE, "x" * (BUDGET // 2), b"y" * (BUDGET // 2), "z")
    sink.keep_access_template(split, LINE, values, VARYING)
    assert not sink.kept_access_templates
    # A text of a subclass (a StrEnum's value...) counts as well.
    sink.keep_access_template((LINE, _Text("x" * (BUDGET + 1))), LINE, values, VARYING)
    assert not sink.kept_access_templates
    # A text inside another object is not measured: such a key is not kept either.
    for hidden in ((b"x",), frozenset({"x"})):
        sink.keep_access_template((LINE, hidden), LINE, values, VARYING)
        assert not sink.kept_access_templates, hidden


def test_a_short_key_is_kept_on_its_second_line_and_writes_the_same_line() -> None:
    stream = io.StringIO()
    sink = LineSink(stream)
    values = ("v", 1, 2, 3, "0.1")
    key = (LINE, 7, "h1", b"GET", "x" * (BUDGET - 100), None)
    sink.keep_access_template(key, LINE, values, VARYING)
    assert sink.kept_access_templates == {key: ()}  # noted only
    sink.keep_access_template(key, LINE, values, VARYING)
    pieces = sink.kept_access_templates[key]
    assert len(pieces) == 5
    sink.access_line(LINE, values)
    sink.kept_access_line(pieces, 1, 2, 3, "0.1")
    first, second = stream.getvalue().splitlines()
    assert first.split(" ", 1)[1] == second.split(" ", 1)[1]  # but the time stamp


def test_a_template_over_the_budget_is_not_kept() -> None:
    """The pieces are measured too: escapes lengthen a text, process fields are written in."""
    sink = LineSink(io.StringIO(), "json")
    sink.set_process_fields({"note": "\x01" * (BUDGET // 4)})  # six characters each in JSON
    values = ('"v"', 1, 2, 3, "0.1")
    key = (LINE, "v")
    for _ in range(3):
        sink.keep_access_template(key, LINE, values, VARYING)
    assert not any(sink.kept_access_templates.values())
    assert _held_chars(sink) <= BUDGET


async def test_kept_templates_hold_at_most_their_budget_in_all(logging_restored: None) -> None:
    """Keys just under the budget, as many as the sink keeps: at most 256 x 2 x the budget."""
    log.configure_logging("info", "text")
    sink = log._sink
    assert sink is not None
    sink._stream = io.StringIO()
    counters = ProxyCounters()
    path = b"/" + b"p" * 500
    agent = [(b"user-agent", b"a" * 500)]
    for connection in range(2 * log_lines._KEPT_TEMPLATES_MAX):
        method = b"M" * 500 + str(connection).encode()
        for stream in (1, 3, 5):
            RelayRecord.begin(
                "h1", connection, path, method=method, stream_id=stream, headers=agent
            ).log(counters)
        assert len(sink.kept_access_templates) <= log_lines._KEPT_TEMPLATES_MAX
    assert any(sink.kept_access_templates.values())  # under the budget: still kept
    assert _held_chars(sink) <= log_lines._KEPT_TEMPLATES_MAX * 2 * BUDGET
