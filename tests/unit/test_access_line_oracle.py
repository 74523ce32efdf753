"""An access line as ``RelayRecord.log`` writes it, against the rendering it replaced.

The oracle is the old rendering, kept here: the record's fields as a dict in the line's
order (the values as they are: the host as routing saw it, the user agent bounded and
escaped, the duration rounded to microseconds) through ``KeyValueFormatter`` or
``JsonFormatter``. Each record is logged three times with other streams, bytes and
durations, with a second record that differs from it in one field logged between, so that
every line goes through the sink's first sighting, its second (the template kept) and its
kept template, and no line shows another record's value.
"""

from __future__ import annotations

import io
import logging
from unittest import mock

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from h2ws_proxy import log, log_lines
from h2ws_proxy.config.hosts import authority_host
from h2ws_proxy.counters import ProxyCounters
from h2ws_proxy.log import JsonFormatter, KeyValueFormatter
from h2ws_proxy.relay import record_line as record_module
from h2ws_proxy.relay.outcome import RelayEnd
from h2ws_proxy.relay.record import USER_AGENT_MAX_BYTES, RelayRecord, tunnel_opened

AWKWARD_TEXTS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "-", "two words", 'a "q"', "k=v", "a\nb", "t\tb", "\x1b[31m", "100%"]),
    st.sampled_from(["caf\u00e9 \u2603", "back\\slash", "%s %d %%", "x" * 700]),
)
AWKWARD_BYTES = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"", b"/a b", b'/"x"', b"\xff\xfe", b"/\x00", b"%s", b"y" * 300]),
)
FIELDS = {
    "front": st.sampled_from(["h2", "h1"]),
    "connection_id": st.integers(min_value=1, max_value=10**12),
    "path": AWKWARD_BYTES,
    "route": AWKWARD_TEXTS,
    "backend": AWKWARD_TEXTS,
    "client": AWKWARD_TEXTS,
    "method": st.one_of(st.none(), st.sampled_from([b"GET", b"POST"]), AWKWARD_BYTES),
    "authority": st.one_of(st.none(), st.sampled_from([b"Proxy.Test:8443", b"[::1]:80"])),
    "user_agent": st.one_of(st.none(), AWKWARD_BYTES, st.just(b"\x07" * 300)),
    "status": st.one_of(st.none(), st.integers(min_value=100, max_value=599)),
    "error": st.one_of(st.none(), AWKWARD_TEXTS),
    "opened": st.booleans(),
}
STATS = {
    "end": st.sampled_from(list(RelayEnd)),
    "broke": st.one_of(st.none(), AWKWARD_TEXTS),
    "client_close": st.one_of(st.none(), st.integers(min_value=0, max_value=65535)),
    "backend_close": st.one_of(st.none(), st.just(1000)),
}
VARYING = st.tuples(
    st.one_of(st.none(), st.integers(min_value=1, max_value=2**31 - 1)),  # stream
    st.integers(min_value=0, max_value=10**15),  # bytes up
    st.integers(min_value=0, max_value=10**15),  # bytes down
    st.floats(min_value=0, max_value=1e6, allow_nan=False),  # duration
    st.floats(min_value=0, max_value=4e9, allow_nan=False),  # time stamp
)
PROCESS = st.sampled_from([{}, {"worker": 1, "pid": 42}, {"pid": 7, "stream": "p s"}])


def _oracle_fields(record: RelayRecord, duration_s: float) -> dict[str, object]:
    """The line's fields as the record gave them before the sink kept templates."""
    stats, request = record.stats, record.kind == "request"
    fields: dict[str, object] = {"conn": record.connection_id, "front": record.front}
    if record.method is not None:
        fields["method"] = record.method
    authority, agent = record.authority, record.user_agent
    fields |= {
        "stream": record.stream_id if record.stream_id is not None else "-",
        "host": "-" if authority is None else authority_host(authority.decode("ascii")),
        "client": record.client,
        "user_agent": "-" if agent is None else _printable(agent),
        "path": record.path,
        "route": record.route,
        "backend": record.backend,
        "status": record.status if record.status is not None else "-",
        "bytes_up": stats.bytes_up,
        "bytes_down": stats.bytes_down,
        "duration_s": round(duration_s, 6),
        "end": record.ending(),
    }
    if record.opened and not request:
        fields["close_code_client"] = stats.client_close if stats.client_close is not None else "-"
        fields["close_code_backend"] = (
            stats.backend_close if stats.backend_close is not None else "-"
        )
    fields["error"] = record.error if record.error is not None else stats.broke
    return fields


def _printable(value: bytes) -> str:
    cut = value[:USER_AGENT_MAX_BYTES]
    text = "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else f"\\x{b:02x}" for b in cut)
    return text + "..." if len(value) > USER_AGENT_MAX_BYTES else text


def _oracle_line(
    log_format: str, record: RelayRecord, duration_s: float, created: float, event: str
) -> str:
    formatter = JsonFormatter() if log_format == "json" else KeyValueFormatter()
    entry = logging.LogRecord("h2ws_proxy.tunnel", logging.INFO, __file__, 1, event, None, None)
    entry.created = created
    entry.msecs = int((created - int(created)) * 1000) + 0.0  # as LogRecord computes it
    entry.fields = _oracle_fields(record, duration_s)
    return formatter.format(entry)


def _make(values: dict[str, object], stats: dict[str, object]) -> RelayRecord:
    record = RelayRecord.begin(
        str(values["front"]),
        int(values["connection_id"]),  # type: ignore[call-overload]
        values["path"],  # type: ignore[arg-type]
        method=values["method"],  # type: ignore[arg-type]
        authority=values["authority"],  # type: ignore[arg-type]
        client=str(values["client"]),
        headers=[] if values["user_agent"] is None else [(b"user-agent", values["user_agent"])],
    )
    record.route, record.backend = str(values["route"]), str(values["backend"])
    record.status, record.error = values["status"], values["error"]  # type: ignore[assignment]
    record.opened = bool(values["opened"])
    for name, value in stats.items():
        setattr(record.stats, name, value)
    return record


# The fixture only restores logging at the end; each example configures it afresh.
@settings(
    deadline=None, max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    values=st.fixed_dictionaries(FIELDS),
    stats=st.fixed_dictionaries(STATS),
    changed=st.sampled_from(sorted(FIELDS)),
    other=st.data(),
    varying=st.lists(VARYING, min_size=3, max_size=3),
    process=PROCESS,
    log_format=st.sampled_from(["text", "json"]),
)
def test_every_access_line_is_the_old_rendering(
    logging_restored: None,
    values: dict[str, object],
    stats: dict[str, object],
    changed: str,
    other: st.DataObject,
    varying: list[tuple[int | None, int, int, float, float]],
    process: dict[str, object],
    log_format: str,
) -> None:
    neighbour = {**values, changed: other.draw(FIELDS[changed])}
    log.configure_logging("info", log_format)
    log.set_process_fields(**process)
    sink = log._sink
    assert sink is not None
    stream = sink._stream = io.StringIO()
    expected: list[str] = []

    async def main() -> None:
        counters = ProxyCounters()
        for stream_id, up, down, duration_s, created in varying:
            for fields in (values, neighbour):
                record = _make(fields, stats)
                record.stream_id = stream_id
                record.stats.bytes_up, record.stats.bytes_down = up, down
                record.started = trio.current_time() - duration_s
                spent = trio.current_time() - record.started  # as log computes it
                if record.opened:
                    tunnel_opened(record, counters)
                if record.kind == "request":
                    event = "request.closed"
                else:
                    event = "tunnel.closed" if record.opened else "tunnel.refused"
                expected.append(_oracle_line(log_format, record, spent, created, event))
                with mock.patch.object(log_lines.time, "time", return_value=created):
                    record.log(counters)

    trio.run(main, clock=trio.testing.MockClock())
    assert stream.getvalue() == "".join(line + "\n" for line in expected)


async def test_kept_templates_are_bounded_and_skip_long_texts(logging_restored: None) -> None:
    log.configure_logging("info", "text")
    sink = log._sink
    assert sink is not None
    sink._stream = io.StringIO()
    counters = ProxyCounters()
    for connection in range(2 * log_lines._KEPT_TEMPLATES_MAX + 1):
        for _ in range(3):
            record = RelayRecord.begin("h2", connection, b"/", method=b"GET", stream_id=1)
            record.log(counters)
        assert len(sink.kept_access_templates) <= log_lines._KEPT_TEMPLATES_MAX
    sink.kept_access_templates.clear()
    for _ in range(3):
        RelayRecord.begin("h2", 1, b"/" + b"x" * 600, method=b"GET").log(counters)
    assert not sink.kept_access_templates
    log.set_process_fields(worker=2)
    assert not sink.kept_access_templates  # the process's fields are written in them


async def test_long_user_agents_and_hosts_are_rendered_not_kept(logging_restored: None) -> None:
    log.configure_logging("info", "text")
    sink = log._sink
    assert sink is not None
    stream = sink._stream = io.StringIO()
    agent, authority = b"a" * 5000, b"h" * 5000 + b":80"
    RelayRecord.begin("h1", 1, b"/", authority=authority, headers=[(b"user-agent", agent)]).log(
        ProxyCounters()
    )
    assert agent not in record_module._AGENTS
    assert authority not in record_module._HOSTS
    assert f"user_agent={'a' * USER_AGENT_MAX_BYTES}... " in stream.getvalue()
    assert f"host={'h' * 5000} " in stream.getvalue()
