"""One record per WebSocket tunnel or ordinary request, one structured log line when it ends.

Both frontends fill a :class:`RelayRecord` as the request goes (status, counters, how it
ended) and call :meth:`RelayRecord.log` exactly once, also when it is cancelled, so every
tunnel and request leaves a line naming its front protocol (``h2``/``h1``), stream, host (as
routing compared it: lowercase, no port), path, route, backend, status, bytes each way,
duration and ending, and who asked: the client's address and port (``client=``) and its
``User-Agent`` (``user_agent=``: its first :data:`USER_AGENT_MAX_BYTES` bytes, anything but
printable ASCII escaped). Tunnels log ``tunnel.closed`` (or
``tunnel.refused`` when no tunnel opened), ordinary requests ``request.closed``. A
``tunnel.closed`` line also carries the WebSocket close code each side sent
(``close_code_client``, ``close_code_backend``; ``-`` for none), and a tunnel whose bytes
one way turned out not to be WebSocket frames says so once (``tunnel.untracked``).

:meth:`RelayRecord.log` also counts the record into the server's
:class:`~h2ws_proxy.counters.ProxyCounters`, whatever the log level: it is the one place
every tunnel and request passes exactly once, so the metrics cost one update per tunnel or
request and nothing per message. The line itself is rendered by ``relay/record_line.py``.
A repeated request on the lean HTTP/2 path is begun from the connection's
``relay/request_facts.py`` (:meth:`RelayRecord.of_facts`), and counted and written from them;
one answered whole at once needs no record at all: :func:`log_answered` counts it and writes
the same line from its facts.

Such a record's duration (``duration_s``) starts at the clock's reading of the client read
that brought the request (taken by that read's first lean start and shared by its others for
their idle timers: ``http2/lean_requests.py``), not at the record's making; the request's
bytes were there by then. So it is still the request's time through the proxy, never
negative (the end is read later, on the same clock) and, as far as its start goes, never
shorter than a reading at the record's making would give: longer by at most that read's
processing from its first lean start to this request's (the requests before it in the same
read). Its end may be read early, as the next paragraph says.

Its end, for a request answered whole at once in a backend poller's round of handlers, is
that round's one reading (``BackendPoller.round_time``, taken at the first answer's end that
needed it and shared by the pool's release): so shorter than a reading of its own by at
most the processing of the answers before it in that round, and still never negative (the
round comes after the read that brought the request).
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Iterable

import trio

from h2ws_proxy.backend.balancer import GroupBalancer, ServerState
from h2ws_proxy.config import RouteConfig
from h2ws_proxy.counters import ProxyCounters
from h2ws_proxy.errors import OriginRefused, ProxyError
from h2ws_proxy.log import access_sink, log_event
from h2ws_proxy.log_texts import duration_text
from h2ws_proxy.relay.outcome import RelayEnd, RelayStats, Side
from h2ws_proxy.relay.record_line import (
    LINES,
    USER_AGENT_MAX_BYTES,
    write_facts_line,
    write_line,
)
from h2ws_proxy.relay.request_facts import RequestFacts, first_user_agent

__all__ = ["USER_AGENT_MAX_BYTES", "RelayRecord", "log_answered", "tunnel_opened"]

logger = logging.getLogger("h2ws_proxy.tunnel")
_INFO = logging.INFO
#: A request's lines, by [with method] (``begin`` gives a request one).
_REQUEST_LINES = tuple(by_codes[False] for by_codes in LINES["request.closed"])
#: A record without ``__init__``: ``begin`` sets every slot (and its stats' fields).
_new_record = _new_stats = object.__new__
_CANCELLED = RelayEnd.CANCELLED
_CLEAN = RelayEnd.CLEAN


class RelayRecord:
    """What one tunnel or ordinary request did, from its request head to its end.

    A plain class with slots, made by :meth:`begin` alone (one per tunnel or request: a
    dataclass's ``__init__`` with its default factories cost a call and a keyword per field
    more)."""

    __slots__ = (
        "_held",
        "_held_by",
        "authority",
        "backend",
        "client",
        "connection_id",
        "error",
        "facts",
        "front",
        "kind",
        "method",
        "opened",
        "outcome",
        "path",
        "route",
        "started",
        "stats",
        "status",
        "stream_id",
        "user_agent",
    )

    front: str
    connection_id: int
    stream_id: int | None
    path: bytes
    route: str
    backend: str
    started: float
    #: The status the client got (200 or 101 opens a tunnel); None if it got none.
    status: int | None
    error: str | None
    #: True once the tunnel opened; ``stats`` is then meaningful.
    opened: bool
    stats: RelayStats
    #: ``"tunnel"`` for a WebSocket, ``"request"`` for an ordinary HTTP request.
    kind: str
    method: bytes | None
    #: The server an open tunnel holds (its group's balancer counts it as active), given
    #: back when the record ends; two fields, not a tuple: one object fewer per tunnel.
    _held_by: GroupBalancer | None
    _held: ServerState | None
    #: The request's ``:authority`` or ``Host`` as sent (logged as routing saw its host).
    authority: bytes | None
    #: The client's address and port (``ClientInfo.peer``).
    client: str
    #: The client's ``User-Agent`` as sent (bounded and escaped when logged).
    user_agent: bytes | None
    #: Why a WebSocket handshake failed, as the metrics name it (``ProxyError.outcome``).
    outcome: str | None
    #: The repeated request's facts this record was begun from (:meth:`of_facts`), which
    #: its end counts and writes its line from; None: from its own fields.
    facts: RequestFacts | None

    @classmethod
    def begin(
        cls,
        front: str,
        connection_id: int,
        path: bytes,
        *,
        stream_id: int | None = None,
        route: RouteConfig | None = None,
        method: bytes | None = None,
        authority: bytes | None = None,
        client: str = "-",
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> RelayRecord:
        """The record of a tunnel, or of an ordinary request when ``method`` is given; its
        route reads ``-`` until routing decides it, its backend until a server is taken
        (the balancer names the server). ``headers``: the request's fields (lowercase names),
        for its ``User-Agent``."""
        record = _new_record(cls)
        record.front, record.connection_id, record.stream_id = front, connection_id, stream_id
        record.path, record.route = path, route.path if route is not None else "-"
        record.backend, record.started = "-", trio.current_time()
        record.status = record.error = record.outcome = None
        # RelayStats() without its __init__'s call and keywords: every field at its default
        # (a test holds the two equal, so a field added there fails it until added here).
        record.opened, record.stats = False, (stats := _new_stats(RelayStats))
        stats.bytes_up = stats.bytes_down = 0
        stats.end, stats.last_activity = _CANCELLED, 0.0
        stats.client_close = stats.backend_close = stats.broke = None
        record.kind = "tunnel" if method is None else "request"
        record.method, record.authority, record.client = method, authority, client
        record._held_by = record._held = record.facts = None
        record.user_agent = first_user_agent(headers)
        return record

    @classmethod
    def of_facts(
        cls, facts: RequestFacts, stream_id: int, backend: str, now: float | None = None
    ) -> RelayRecord:
        """The record of an ordinary request of ``facts`` on stream ``stream_id``, whose
        server (named ``backend``) is taken: :meth:`begin`'s record for the same values,
        made without its keywords, and ended (:meth:`log`) from ``facts``. ``now``: its
        start, the clock's reading of the client read that brought it, if the caller has
        one (``http2/lean_requests.py``: see the module for what the duration measures)."""
        record = _new_record(cls)
        record.facts, record.stream_id, record.backend = facts, stream_id, backend
        (
            record.front, record.connection_id, record.kind, record.method, record.path,
            record.authority, record.client, record.user_agent, record.route,
        ) = facts.fields  # fmt: skip
        record.started = facts.now() if now is None else now
        record.status = record.error = record.outcome = record._held_by = record._held = None
        # As in begin (a test holds both equal to RelayStats()).
        record.opened, record.stats = False, (stats := _new_stats(RelayStats))
        stats.bytes_up = stats.bytes_down = 0
        stats.end, stats.last_activity = _CANCELLED, 0.0
        stats.client_close = stats.backend_close = stats.broke = None
        return record

    def ending(self) -> str:
        if self.opened:
            return self.stats.end._value_  # a plain attribute: ``value`` is a property
        if self.status is None:
            return "client_aborted" if self.stats.end is RelayEnd.CLIENT_ABORTED else "cancelled"
        return "refused"

    def refused(self, error: ProxyError) -> None:
        """The client is answered ``error``'s status by the proxy or the backend."""
        self.status, self.error, self.outcome = error.status_hint, error.message, error.outcome
        if isinstance(error, OriginRefused):
            self.route = error.route  # refused before routing was noted in the record
            self.facts = None  # they name the route it had

    def hold_server(self, balancer: GroupBalancer, server: ServerState) -> None:
        """The tunnel holds ``server`` until the record ends (:meth:`log`)."""
        self._held_by, self._held = balancer, server

    def log(self, counters: ProxyCounters, now: float = -1.0) -> None:
        """The end of the tunnel or request: give back its server, count it, log its line.
        ``now``: the clock's reading at its end, if the caller has one (see the module for
        what the duration then measures); -1.0: read here."""
        balancer = self._held_by
        if balancer is not None:
            server, self._held_by, self._held = self._held, None, None
            if server is not None:
                balancer.give_back(server)
        facts = self.facts
        if facts is not None:  # a repeated request's (the lean path's, but for its usual end)
            duration_s = (facts.now() if now < 0.0 else now) - self.started
            status = self.status  # counted by the key the facts keep for its status
            key = facts.count_key if status == facts.count_status else facts.requests_key(status)
            counters.count_request(key, duration_s)
            if logger.isEnabledFor(_INFO):
                write_facts_line(self, facts, duration_s)
            return
        duration_s = (trio.current_time() if now < 0.0 else now) - self.started
        if self.kind == "request":  # the usual case first, in as few calls as it takes
            counters.request_ended(self.route, self.front, self.status, duration_s)
            if logger.isEnabledFor(_INFO):  # else build none of the line's fields
                end = self.stats.end._value_ if self.opened else self.ending()
                line = _REQUEST_LINES[self.method is not None]
                write_line(self, line, duration_s, end, False)
            return
        end = self.ending()
        self._count_tunnel(counters, duration_s, end)
        if logger.isEnabledFor(_INFO):
            codes = self.opened
            by_codes = LINES["tunnel.closed" if codes else "tunnel.refused"]
            write_line(self, by_codes[self.method is not None][codes], duration_s, end, codes)

    def log_untracked(self, side: Side, reason: str) -> None:
        """One side's bytes are not WebSocket frames: they pass on, untracked (no close
        code, no Close on drain that way)."""
        log_event(
            logger,
            logging.INFO,
            "tunnel.untracked",
            conn=self.connection_id,
            front=self.front,
            stream=self.stream_id if self.stream_id is not None else "-",
            side=side.value,
            reason=reason,
        )

    def _count_tunnel(self, counters: ProxyCounters, duration_s: float, end: str) -> None:
        if self.opened:
            stats = self.stats
            counters.tunnel_ended(
                self.route,
                self.front,
                end,
                duration_s,
                stats.bytes_up,
                stats.bytes_down,
                stats.client_close,
                stats.backend_close,
            )
        else:
            # Refused: why (the error's or the backend's answer's outcome). No answer at
            # all: how it ended (the client left, or the server stopped, during the dial).
            outcome = self.outcome or (end if self.status is None else "error")
            counters.tunnel_refused(self.route, self.front, end, outcome)


def tunnel_opened(record: RelayRecord, counters: ProxyCounters) -> None:
    """``record``'s tunnel is open: one more in ``h2ws_tunnels_active`` until it is logged."""
    active, key = counters.tunnels_active, (record.route, record.front)
    active[key] = active.get(key, 0) + 1


def log_answered(
    counters: ProxyCounters,
    facts: RequestFacts,
    stream_id: int,
    backend: str,
    status: int,
    bytes_down: int,
    started: float,
    now: float,
) -> None:
    """:meth:`RelayRecord.log` of the record ``RelayRecord.of_facts(facts, stream_id,
    backend, started)`` would begin, for a request answered ``status`` with ``bytes_down``
    body bytes, all of which went with its end at once: opened, ended cleanly at ``now``, no
    byte up, no error, no close code. The same counts and the same line, without the record
    where the line is one the facts keep (the usual lean GET: ``http2/polled_request.py``
    begins no record for it); any other line is written from that record, made here."""
    duration_s = now - started
    key = facts.count_key if status == facts.count_status else facts.requests_key(status)
    # ``counters.count_request(key, duration_s)`` in place (once per request).
    requests = counters.requests
    requests[key] = requests.get(key, 0) + 1
    histogram = counters.request_seconds
    bounds = histogram.bounds
    # Most requests end within the first bucket: one comparison, not bisect's call.
    histogram.counts[0 if duration_s <= bounds[0] else bisect_left(bounds, duration_s)] += 1
    histogram.sum += duration_s
    if not logger.isEnabledFor(_INFO):
        return
    sink = access_sink(logger)
    if (  # ``write_facts_line``'s kept case (the rest of its test holds by this call's terms)
        sink is not None
        and facts.kept_from is sink.kept_access_templates
        and backend is facts.kept_backend
        and status == facts.kept_status
        and facts.kept_end is _CLEAN
    ):
        if 0.0001 <= duration_s < 1e9:  # ``duration_text``'s usual case in place
            duration = f"{duration_s:.6f}".rstrip("0")
            if duration[-1] == ".":
                duration += "0"
        else:
            duration = duration_text(duration_s)
        sink.kept_access_line(facts.kept_pieces, stream_id, 0, bytes_down, duration)
        return
    record = RelayRecord.of_facts(facts, stream_id, backend, started)
    record.status, record.opened = status, True
    stats = record.stats
    stats.bytes_down, stats.end = bytes_down, _CLEAN
    write_facts_line(record, facts, duration_s)
