"""A lean request answered whole at once is counted and logged without a record
(``relay/record.py``'s ``log_answered``): the same counts and the same bytes as the record
``RelayRecord.of_facts`` would begin, answered and ended cleanly, gives through its ``log``.

Runs of requests of one facts, each ended one way or the other, with a status, a backend,
the process's fields and a duration changed between them: every line must be the old
rendering (``KeyValueFormatter`` / ``JsonFormatter`` of the record's values as a
``LogRecord``), a line that repeats must come from the facts' kept pieces with no record
begun, and the counters must be those of ``request_ended`` for the same requests.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
import trio
import trio.testing

from h2ws_proxy import log
from h2ws_proxy.counters import ProxyCounters
from h2ws_proxy.log import JsonFormatter, KeyValueFormatter
from h2ws_proxy.relay import record as record_module
from h2ws_proxy.relay import record_line
from h2ws_proxy.relay.outcome import RelayEnd
from h2ws_proxy.relay.record import RelayRecord, log_answered
from h2ws_proxy.relay.request_facts import RequestFacts

CREATED = 1_765_000_000.25
ROUTE: Any = SimpleNamespace(path="/api")
REQUEST: Any = SimpleNamespace(
    method=b"GET",
    target=b"/index.html?q=1",
    authority=b"Proxy.Test:8443",
    headers=((b"accept", b"*/*"), (b"user-agent", b"h2load nghttp2/1.59.0")),
)
LABEL_A, LABEL_B = "127.0.0.1:9001", "127.0.0.1:9002"
PEER = "127.0.0.1:50312"
BODY = 612


@pytest.fixture
def stamped(mock_clock: trio.testing.MockClock) -> Iterator[None]:
    """A fixed time stamp for every line."""
    with mock.patch("h2ws_proxy.log_lines.time", SimpleNamespace(time=lambda: CREATED)):
        yield


def _old_rendering(log_format: str, record: RelayRecord, duration_s: float) -> str:
    end = record.stats.end._value_ if record.opened else record.ending()
    values = record_line._line_values(
        record, record_line._AS_IS, "-", round(duration_s, 6), end, False
    )
    line = record_module._REQUEST_LINES[True]
    entry = logging.LogRecord(line.logger_name, line.level, __file__, 1, line.event, None, None)
    entry.created, entry.msecs = CREATED, 250.0
    entry.fields = dict(zip(line.keys, values, strict=True))
    formatter = JsonFormatter() if log_format == "json" else KeyValueFormatter()
    return formatter.format(entry) + "\n"


def _answered_record(facts: RequestFacts, stream_id: int, label: str, status: int) -> RelayRecord:
    """The record the task-free path began before, answered whole and ended cleanly."""
    record = RelayRecord.of_facts(facts, stream_id, label, 0.0)
    record.status, record.opened = status, True
    record.stats.bytes_down, record.stats.end = BODY, RelayEnd.CLEAN
    return record


#: Requests in turn: (answered whole at once, status, backend, duration, before it).
STEPS: list[tuple[bool, int, str, float, bool]] = [
    *[(True, 200, LABEL_A, 0.0123, False)] * 3,  # the third from the facts' kept pieces
    (False, 200, LABEL_A, 0.0123, False),  # a record's end in between (kept pieces too)
    (True, 200, LABEL_A, 0.0, False),  # ``duration_text``'s other cases
    (True, 200, LABEL_A, 0.00005, False),
    (True, 200, LABEL_A, 12.5, False),  # past the histogram's first bucket
    *[(True, 404, LABEL_A, 0.0123, False)] * 3,  # another status
    (True, 200, LABEL_A, 0.0123, False),
    *[(True, 200, LABEL_B, 0.0123, False)] * 3,  # another backend
    (True, 200, LABEL_B, 0.0123, True),  # other process fields
    *[(True, 200, LABEL_B, 0.0123, False)] * 2,
]


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_lines_and_counters_are_the_records(
    logging_restored: None, stamped: None, log_format: str
) -> None:
    log.configure_logging("info", log_format)
    log.set_process_fields(worker=1, pid=42)
    facts = RequestFacts("h2", 7, PEER, REQUEST, ROUTE)
    counters, expected_counters = ProxyCounters(), ProxyCounters()
    written: list[str] = []
    expected: list[str] = []
    begun: list[int] = []
    of_facts = RelayRecord.of_facts

    def counting_of_facts(*args: Any) -> RelayRecord:
        begun.append(args[1])
        return of_facts(*args)

    sink = log._sink
    assert sink is not None
    with mock.patch.object(RelayRecord, "of_facts", side_effect=counting_of_facts):
        for stream_id, (whole, status, label, duration_s, new_fields) in enumerate(STEPS, 1):
            if new_fields:
                log.set_process_fields(worker=2, pid=7)
            sink._stream = out = io.StringIO()
            if whole:
                log_answered(counters, facts, stream_id, label, status, BODY, 3.0, 3.0 + duration_s)
            else:
                _answered_record(facts, stream_id, label, status).log(counters, duration_s)
            sink.flush()
            written.append(out.getvalue())
            record = of_facts(facts, stream_id, label, 0.0)
            record.status, record.opened = status, True
            record.stats.bytes_down, record.stats.end = BODY, RelayEnd.CLEAN
            expected.append(_old_rendering(log_format, record, duration_s))
            expected_counters.request_ended("/api", "h2", status, duration_s)
    assert written == expected
    assert counters.requests == expected_counters.requests
    assert counters.request_seconds.counts == expected_counters.request_seconds.counts
    assert counters.request_seconds.sum == pytest.approx(expected_counters.request_seconds.sum)
    # A record begun only where the line did not come from the facts' kept pieces: the
    # first three of each run (the sink notes a line's key at the first, keeps its pieces
    # at the second, and the facts take them from the third's), the 200 after the 404s
    # (the facts kept the 404's), and the one ended by its own record.
    whole_with_record = [n for n in begun if STEPS[n - 1][0]]
    assert whole_with_record == [1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]
    assert 4 in begun


async def test_without_access_lines_it_only_counts(logging_restored: None, stamped: None) -> None:
    log.configure_logging("warning", "text")
    facts = RequestFacts("h2", 7, PEER, REQUEST, ROUTE)
    sink = log._sink
    assert sink is not None
    sink._stream = out = io.StringIO()
    counters = ProxyCounters()
    with mock.patch.object(RelayRecord, "of_facts") as begin:
        for stream_id in range(1, 4):
            log_answered(counters, facts, stream_id, LABEL_A, 200, BODY, 1.0, 1.5)
    sink.flush()
    assert out.getvalue() == ""
    assert begin.call_count == 0
    assert counters.requests == {("/api", "h2", "200"): 3}
    assert counters.request_seconds.sum == 1.5
