"""A repeated request's record begun from its facts (``RelayRecord.of_facts``, the lean GET
path's) is ``begin``'s record, counts the same and writes the same bytes.

Its end counts by the key its facts keep and writes its line from the sink's pieces its
facts keep: each case below changes one value those were taken with (status, backend, end,
error, the process's fields, the sink) between requests of the same facts, and every line
must still be the old rendering (``KeyValueFormatter`` / ``JsonFormatter`` of the record's
values as a ``LogRecord``), the pieces kept in the facts must be used once a line repeats,
and the counters must be those of ``request_ended`` for the same requests.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
import trio
import trio.testing

from h2ws_proxy import log
from h2ws_proxy.counters import ProxyCounters
from h2ws_proxy.errors import OriginRefused
from h2ws_proxy.log import JsonFormatter, KeyValueFormatter
from h2ws_proxy.relay import record as record_module
from h2ws_proxy.relay import record_line
from h2ws_proxy.relay.outcome import RelayEnd, RelayStats
from h2ws_proxy.relay.record import RelayRecord
from h2ws_proxy.relay.request_facts import RequestFacts

#: The time stamp every line gets, and how long (by the run's clock) each request takes.
CREATED = 1_765_000_000.25
DURATION = 0.0123
ROUTE: Any = SimpleNamespace(path="/api")
REQUEST: Any = SimpleNamespace(
    method=b"GET",
    target=b"/index.html?q=1",
    authority=b"Proxy.Test:8443",
    headers=((b"accept", b"*/*"), (b"user-agent", b"h2load nghttp2/1.59.0")),
)
LABEL_A, LABEL_B = "127.0.0.1:9001", "127.0.0.1:9002"
PEER = "127.0.0.1:50312"


@pytest.fixture
def clocks(mock_clock: trio.testing.MockClock) -> Iterator[trio.testing.MockClock]:
    """A fixed time stamp; the run's clock stands still but where the test jumps it."""
    with mock.patch("h2ws_proxy.log_lines.time", SimpleNamespace(time=lambda: CREATED)):
        yield mock_clock


def _old_rendering(log_format: str, record: RelayRecord) -> str:
    """The line ``logging`` writes for ``record``'s values (what the sink must write)."""
    end = record.stats.end._value_ if record.opened else record.ending()
    values = record_line._line_values(
        record, record_line._AS_IS, "-", round(DURATION, 6), end, False
    )
    line = record_module._REQUEST_LINES[True]
    entry = logging.LogRecord(line.logger_name, line.level, __file__, 1, line.event, None, None)
    entry.created, entry.msecs = CREATED, 250.0
    entry.fields = dict(zip(line.keys, values, strict=True))
    formatter = JsonFormatter() if log_format == "json" else KeyValueFormatter()
    return formatter.format(entry)


def _answered(
    record: RelayRecord, status: int, end: RelayEnd, broke: str | None, error: str | None = None
) -> None:
    """What the lean path sets on a record it answered."""
    record.status, record.opened, record.error = status, True, error
    record.stats.bytes_down += 612
    record.stats.end, record.stats.broke = end, broke


#: Requests in turn: (status, backend, end, broken, error, before it). Each repeats at
#: least three times where a line is to come from kept pieces.
Step = tuple[int, str, RelayEnd, str | None, str | None, Callable[[], None] | None]


def _steps() -> list[Step]:
    clean, aborted = RelayEnd.CLEAN, RelayEnd.BACKEND_ABORTED
    other_fields = lambda: log.set_process_fields(worker=2, pid=7)  # noqa: E731
    return [
        *[(200, LABEL_A, clean, None, None, None)] * 3,  # pieces kept in the facts for these
        (200, LABEL_A, aborted, None, None, None),  # another end
        (200, LABEL_A, clean, "reset by the backend", None, None),  # a side broke
        (200, LABEL_A, clean, None, "the backend timed out", None),  # an error
        *[(404, LABEL_A, clean, None, None, None)] * 3,  # another status
        (200, LABEL_A, clean, None, None, None),
        *[(200, LABEL_B, clean, None, None, None)] * 3,  # another backend
        (200, LABEL_B, clean, None, None, other_fields),  # other process fields
        *[(200, LABEL_B, clean, None, None, None)] * 2,
    ]


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_lines_and_counters_are_begins(
    logging_restored: None, clocks: trio.testing.MockClock, log_format: str
) -> None:
    log.configure_logging("info", log_format)
    log.set_process_fields(worker=1, pid=42)
    facts = RequestFacts("h2", 7, PEER, REQUEST, ROUTE)
    counters, expected_counters = ProxyCounters(), ProxyCounters()
    written: list[str] = []
    expected: list[str] = []
    sink = log._sink
    assert sink is not None
    from_pieces = mock.patch.object(sink, "kept_access_line", wraps=sink.kept_access_line)
    with from_pieces as kept_lines:
        for stream_id, (status, label, end, broke, error, before) in enumerate(_steps(), 1):
            if before is not None:
                before()
            sink._stream = out = io.StringIO()
            record = RelayRecord.of_facts(facts, stream_id, label)
            clocks.jump(DURATION)
            _answered(record, status, end, broke, error)
            record.log(counters)
            written.append(out.getvalue())
            expected.append(_old_rendering(log_format, record) + "\n")
            expected_counters.request_ended("/api", "h2", status, DURATION)
    assert written == expected
    assert counters.requests == expected_counters.requests
    assert counters.request_seconds.counts == expected_counters.request_seconds.counts
    assert counters.request_seconds.sum == pytest.approx(expected_counters.request_seconds.sum)
    # From kept pieces: the third of each run of three (the sink notes a line's key the
    # first time, keeps its pieces the second), and the 200 after the 404s (kept before).
    assert kept_lines.call_count == 5


async def test_repeats_are_written_from_the_facts_pieces(
    logging_restored: None, clocks: trio.testing.MockClock
) -> None:
    """Once a line repeats, the record writes it from its facts' pieces: no key of its
    values looked up (``write_line`` is not called)."""
    log.configure_logging("info", "text")
    facts = RequestFacts("h2", 7, PEER, REQUEST, ROUTE)
    counters = ProxyCounters()
    sink = log._sink
    assert sink is not None
    sink._stream = io.StringIO()
    with mock.patch.object(record_line, "write_line", wraps=record_line.write_line) as lines:
        for stream_id in range(1, 12, 2):
            record = RelayRecord.of_facts(facts, stream_id, LABEL_A)
            _answered(record, 200, RelayEnd.CLEAN, None)
            record.log(counters)
    assert lines.call_count == 3  # noted, kept, and written from the sink's kept pieces
    assert sink._stream.getvalue().count("request.closed") == 6


async def test_a_record_of_facts_is_begins(clocks: trio.testing.MockClock) -> None:
    clocks.jump(42.5)  # the run's clock, not another
    facts = RequestFacts("h2", 7, PEER, REQUEST, ROUTE)
    record = RelayRecord.of_facts(facts, 5, LABEL_A)
    begun = RelayRecord.begin(
        "h2", 7, REQUEST.target, stream_id=5, route=ROUTE, method=REQUEST.method,
        authority=REQUEST.authority, client=PEER, headers=REQUEST.headers,
    )  # fmt: skip
    begun.backend = LABEL_A
    for name in RelayRecord.__slots__:
        if name not in ("facts", "stats", "started"):
            assert getattr(record, name) == getattr(begun, name), name
    assert record.user_agent == b"h2load nghttp2/1.59.0"
    assert record.started == trio.current_time()
    clocks.jump(2.5)
    counters = ProxyCounters()
    record.status = 200
    record.log(counters)
    assert counters.request_seconds.sum == 2.5
    assert record.stats == RelayStats()
    assert type(record.stats) is RelayStats
    assert record.facts is facts
    assert begun.facts is None


async def test_facts_are_made_for_one_request_on_one_route() -> None:
    facts = RequestFacts("h2", 7, PEER, REQUEST, ROUTE)
    assert facts.made_for(REQUEST, ROUTE)
    same_values: Any = SimpleNamespace(**vars(REQUEST))
    assert not facts.made_for(same_values, ROUTE)  # identities: a new request is new facts
    assert not facts.made_for(REQUEST, SimpleNamespace(path="/api"))


async def test_a_refusal_naming_another_route_drops_the_facts() -> None:
    record = RelayRecord.of_facts(RequestFacts("h2", 7, PEER, REQUEST, ROUTE), 1, LABEL_A)
    record.refused(OriginRefused("no", route="/other"))
    assert record.facts is None
    assert record.route == "/other"
    counters = ProxyCounters()
    record.log(counters)
    assert counters.requests == {("/other", "h2", "403"): 1}
