"""A relay record's access line: its keys, its values as a sink renders them, kept templates.

The line of a tunnel or request (``relay/record.py`` says what it carries) is written by
:func:`write_line`: to the ``LineSink`` when it is the only listener (from a template the
sink keeps, where a client repeats its request), else as a ``LogRecord`` of the values as
they are. Client-chosen texts (the host, the ``User-Agent``) are rendered once and kept in
bounded caches here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from h2ws_proxy.config.hosts import authority_host
from h2ws_proxy.log import access_sink, log_access_record
from h2ws_proxy.log_lines import AccessLine
from h2ws_proxy.log_texts import duration_text
from h2ws_proxy.relay.outcome import RelayStats
from h2ws_proxy.relay.request_facts import RequestFacts

logger = logging.getLogger("h2ws_proxy.tunnel")

#: How much of a ``User-Agent`` a log line carries: browsers send about 120 characters; a
#: client's 64 KiB field should not become a 64 KiB line.
USER_AGENT_MAX_BYTES = 200
#: Bytes a log line carries as they are: printable ASCII but the backslash (the escape).
_PLAIN = bytes(byte for byte in range(0x20, 0x7F) if byte != 0x5C)


#: The access line's fields in order: with ``method`` (an ordinary request), with the close
#: codes (a tunnel that opened). Client-chosen texts are rendered (quoted when needed); the
#: rest are numbers or ``-``.
def _keys(method: bool, codes: bool) -> tuple[str, ...]:
    return (
        "conn",
        "front",
        *(("method",) if method else ()),
        "stream",
        "host",
        "client",
        "user_agent",
        "path",
        "route",
        "backend",
        "status",
        "bytes_up",
        "bytes_down",
        "duration_s",
        "end",
        *(("close_code_client", "close_code_backend") if codes else ()),
        "error",
    )


#: The lines by event, then by [with method][with codes] (tuples: no key to hash per line).
LINES = {
    event: tuple(
        tuple(
            AccessLine(logging.INFO, logger.name, event, _keys(method, codes))
            for codes in (False, True)
        )
        for method in (False, True)
    )
    for event in ("tunnel.closed", "tunnel.refused", "request.closed")
}
#: The line of a request begun from its facts (a method: always an ordinary request's).
_FACTS_LINE = LINES["request.closed"][True][False]
#: The positions of the values that change from line to line (the rest are kept in the
#: sink's templates: ``LineSink.keep_access_template``), in the keys' order.
_VARYING = {
    line: tuple(line.keys.index(key) for key in ("stream", "bytes_up", "bytes_down", "duration_s"))
    for by_method in LINES.values()
    for by_codes in by_method
    for line in by_codes
}
#: A line with a longer path, host, user agent or error is not kept as a template.
_KEPT_TEXT_MAX = 512
#: Hosts and user agents as logged, by what the client sent (they repeat); each bounded.
_HOSTS: dict[bytes, str] = {}
_AGENTS: dict[bytes, str] = {}
_CACHED_MAX = 1024


class _AsIs(dict[object, object]):
    """Every value as it is: the texts of a line handed to ``logging`` as a LogRecord."""

    def __missing__(self, value: object) -> object:
        return value


_AS_IS = _AsIs()


class RelayRecord(Protocol):
    """What a line is rendered from: ``relay.record.RelayRecord`` (which imports this)."""

    connection_id: int
    front: str
    method: bytes | None
    stream_id: int | None
    authority: bytes | None
    client: str
    user_agent: bytes | None
    path: bytes
    route: str
    backend: str
    status: int | None
    error: str | None
    stats: RelayStats
    opened: bool

    def ending(self) -> str: ...


def write_facts_line(record: RelayRecord, facts: RequestFacts, duration_s: float) -> None:
    """:func:`write_line` for a request begun from ``facts`` (the caller has checked the
    level): from the pieces the facts keep when every value of the line but the stream,
    bytes and duration is the one they were taken with; else as any request's line, and
    the sink's kept pieces it was written from, if any, are kept in the facts."""
    stats = record.stats
    sink = access_sink(logger)
    if sink is None:
        write_line(record, _FACTS_LINE, duration_s, record.ending(), False)
        return
    plain = (  # no error and no close code: the only lines whose pieces the facts keep
        record.error is None
        and stats.broke is None
        and stats.client_close is None
        and stats.backend_close is None
        and record.opened
    )
    if (
        plain
        and facts.kept_from is sink.kept_access_templates
        and stats.end is facts.kept_end
        and record.status == facts.kept_status
        and record.backend is facts.kept_backend
    ):
        stream = record.stream_id
        sink.kept_access_line(
            facts.kept_pieces,
            stream if stream is not None else sink.dash,
            stats.bytes_up,
            stats.bytes_down,
            duration_text(duration_s),
        )
        return
    pieces = write_line(record, _FACTS_LINE, duration_s, record.ending(), False)
    if pieces and plain:
        facts.kept_from, facts.kept_pieces = sink.kept_access_templates, pieces
        facts.kept_backend, facts.kept_status, facts.kept_end = (
            record.backend,
            record.status,
            stats.end,
        )


def write_line(
    record: RelayRecord, line: AccessLine, duration_s: float, end: str, codes: bool
) -> tuple[str, ...] | None:
    """``record``'s ``line`` (the caller has checked the level), ``duration_s`` long, with
    the close codes when ``codes``: into the sink, from a template it keeps where this
    line's values but the stream, bytes and duration were met before (a client repeats its
    requests); a LogRecord of the values when another handler listens. Returns the kept
    template's pieces it was written from (None: it was rendered whole)."""
    sink = access_sink(logger)
    if sink is None:
        values = _line_values(record, _AS_IS, "-", round(duration_s, 6), end, codes)
        log_access_record(logger, line, values)
        return None
    stats, error = record.stats, record.error
    if error is None:
        error = stats.broke
    # What the kept values are rendered from: texts, ints and None (equal, rendered alike).
    key = (
        line, record.connection_id, record.front, record.method, record.authority,
        record.client, record.user_agent, record.path, record.route, record.backend,
        record.status, end, error, stats.client_close, stats.backend_close,
    )  # fmt: skip
    stream = record.stream_id
    duration = duration_text(duration_s)
    pieces = sink.kept_access_templates.get(key)
    if pieces:
        sink.kept_access_line(
            pieces, stream if stream is not None else sink.dash, stats.bytes_up,
            stats.bytes_down, duration,
        )  # fmt: skip
        return pieces
    values = _line_values(record, sink.texts, sink.dash, duration, end, codes)
    sink.access_line(line, values)
    authority, agent = record.authority, record.user_agent
    # A key of long texts is not kept: the sink keeps 256 keys and their templates. The
    # sink also measures every text of the key (the method...) against its budget.
    if (
        len(record.path) <= _KEPT_TEXT_MAX
        and (authority is None or len(authority) <= _KEPT_TEXT_MAX)
        and (agent is None or len(agent) <= _KEPT_TEXT_MAX)
        and (error is None or len(error) <= _KEPT_TEXT_MAX)
    ):
        sink.keep_access_template(key, line, values, _VARYING[line])
    return None


def _line_values(
    record: RelayRecord,
    texts: Mapping[object, object],
    dash: object,
    duration: object,
    end: str,
    codes: bool,
) -> tuple[object, ...]:
    """The line's values in its keys' order: every text as ``texts`` has it, ``dash`` for
    a number that is missing (a sink's rendered values, or the values as they are)."""
    stats, stream, status, method = record.stats, record.stream_id, record.status, record.method
    values: tuple[object, ...] = (record.connection_id, texts[record.front])
    if method is not None:
        values += (texts[method],)
    values += (
        stream if stream is not None else dash,
        texts[host_text(record.authority)],
        texts[record.client],
        texts[user_agent_text(record.user_agent)],
        texts[record.path],
        texts[record.route],
        texts[record.backend],
        status if status is not None else dash,
        stats.bytes_up,
        stats.bytes_down,
        duration,
        texts[end],
    )
    if codes:
        client, backend = stats.client_close, stats.backend_close
        values += (
            client if client is not None else dash,
            backend if backend is not None else dash,
        )
    error = record.error
    return (*values, texts[error if error is not None else stats.broke])


def host_text(authority: bytes | None) -> str:
    """The host a line names: the ``:authority`` as routing compared it; "-" for none."""
    if authority is None:
        return "-"
    host = _HOSTS.get(authority)
    if host is None:
        host = authority_host(authority.decode("ascii", "backslashreplace"))
        _remember(_HOSTS, authority, host)
    return host


def user_agent_text(agent: bytes | None) -> str:
    """The ``User-Agent`` a line names (:func:`_printable`), through a bounded cache."""
    if agent is None:
        return "-"
    printable = _AGENTS.get(agent)
    if printable is None:
        printable = _printable(agent)
        _remember(_AGENTS, agent, printable)
    return printable


def _printable(value: bytes | None) -> str:
    """``value`` for a log line: its first USER_AGENT_MAX_BYTES bytes (a longer one ends
    with ``...``), every byte but printable ASCII (and the backslash) as ``\\xNN``, so no
    terminal escape or line break of a client's reaches the log; "-" when absent."""
    if value is None:
        return "-"
    cut = value[:USER_AGENT_MAX_BYTES]
    if not cut.translate(None, _PLAIN):  # the usual case, checked at C speed
        text = cut.decode("ascii")
    else:
        text = "".join(chr(byte) if byte in _PLAIN else f"\\x{byte:02x}" for byte in cut)
    return text + "..." if len(value) > USER_AGENT_MAX_BYTES else text


def _remember(cache: dict[bytes, str], key: bytes, value: str) -> None:
    if len(key) > _KEPT_TEXT_MAX:
        return  # 1,024 user agents of 64 KiB each would be 64 MiB
    if len(cache) >= _CACHED_MAX:
        cache.clear()  # a client sending new texts each time gets no cache, not more memory
    cache[key] = value
