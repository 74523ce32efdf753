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
request and nothing per message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import trio

from h2ws_proxy.backend.balancer import GroupBalancer, ServerState
from h2ws_proxy.config import RouteConfig
from h2ws_proxy.config.hosts import authority_host
from h2ws_proxy.counters import ProxyCounters
from h2ws_proxy.errors import OriginRefused, ProxyError
from h2ws_proxy.log import access_sink, log_access_record, log_event
from h2ws_proxy.log_lines import AccessLine, LineSink
from h2ws_proxy.log_texts import duration_text
from h2ws_proxy.relay.outcome import RelayEnd, RelayStats, Side

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
_LINES = {
    event: tuple(
        tuple(
            AccessLine(logging.INFO, logger.name, event, _keys(method, codes))
            for codes in (False, True)
        )
        for method in (False, True)
    )
    for event in ("tunnel.closed", "tunnel.refused", "request.closed")
}
#: The positions of the values that change from line to line (the rest are kept in the
#: sink's templates: ``LineSink.keep_access_template``), in the keys' order.
_VARYING = {
    line: tuple(line.keys.index(key) for key in ("stream", "bytes_up", "bytes_down", "duration_s"))
    for by_method in _LINES.values()
    for by_codes in by_method
    for line in by_codes
}
#: A line with a longer path, host, user agent or error is not kept as a template.
_KEPT_TEXT_MAX = 512
#: Hosts and user agents as logged, by what the client sent (they repeat); each bounded.
_HOSTS: dict[bytes, str] = {}
_AGENTS: dict[bytes, str] = {}
_CACHED_MAX = 1024
#: How each end is written (``RelayEnd.value`` is a Python-level property: a lookup is less).
_END_TEXTS = {end: end.value for end in RelayEnd}
#: A record without ``__init__``: ``begin`` sets every slot.
_new_record = object.__new__


class _AsIs(dict[object, object]):
    """Every value as it is: the texts of a line handed to ``logging`` as a LogRecord."""

    def __missing__(self, value: object) -> object:
        return value


_AS_IS = _AsIs()


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
        record.opened, record.stats = False, RelayStats()
        record.kind = "tunnel" if method is None else "request"
        record.method, record.authority, record.client = method, authority, client
        record._held_by = record._held = None
        agent = None
        for name, value in headers:  # the first User-Agent
            if name == b"user-agent":
                agent = value
                break
        record.user_agent = agent
        return record

    def ending(self) -> str:
        if self.opened:
            return _END_TEXTS[self.stats.end]
        if self.status is None:
            return "client_aborted" if self.stats.end is RelayEnd.CLIENT_ABORTED else "cancelled"
        return "refused"

    def refused(self, error: ProxyError) -> None:
        """The client is answered ``error``'s status by the proxy or the backend."""
        self.status, self.error, self.outcome = error.status_hint, error.message, error.outcome
        if isinstance(error, OriginRefused):
            self.route = error.route  # refused before routing was noted in the record

    def hold_server(self, balancer: GroupBalancer, server: ServerState) -> None:
        """The tunnel holds ``server`` until the record ends (:meth:`log`)."""
        self._held_by, self._held = balancer, server

    def _host(self) -> str:
        authority = self.authority
        if authority is None:
            return "-"
        host = _HOSTS.get(authority)
        if host is None:
            host = authority_host(authority.decode("ascii", "backslashreplace"))
            _remember(_HOSTS, authority, host)
        return host

    def _user_agent(self) -> str:
        agent = self.user_agent
        if agent is None:
            return "-"
        printable = _AGENTS.get(agent)
        if printable is None:
            printable = _printable(agent)
            _remember(_AGENTS, agent, printable)
        return printable

    def log(self, counters: ProxyCounters) -> None:
        """The end of the tunnel or request: give back its server, count it, log its line."""
        balancer, server = self._held_by, self._held
        if balancer is not None and server is not None:
            self._held_by = self._held = None
            balancer.give_back(server)
        duration_s = trio.current_time() - self.started
        if self.kind == "request":
            counters.request_ended(self.route, self.front, self.status, duration_s)
            end = ""  # ending() only when a line is logged
        else:
            end = self.ending()
            self._count_tunnel(counters, duration_s, end)
        if not logger.isEnabledFor(logging.INFO):
            return  # at level warning: build none of the line's fields (one per tunnel or request)
        if self.kind == "request":
            event, end = "request.closed", self.ending()
        else:
            event = "tunnel.closed" if self.opened else "tunnel.refused"
        codes = self.opened and self.kind == "tunnel"
        line = _LINES[event][self.method is not None][codes]
        sink = access_sink(logger)
        if sink is None:  # another handler listens: it gets a LogRecord of the values
            values = self._line_values(_AS_IS, "-", round(duration_s, 6), end, codes)
            log_access_record(logger, line, values)
        else:
            self._sink_line(sink, line, duration_text(duration_s), end, codes)

    def _sink_line(
        self, sink: LineSink, line: AccessLine, duration: str, end: str, codes: bool
    ) -> None:
        """``line`` into ``sink``: from a template the sink keeps, where this line's values
        but the stream, bytes and duration were met before (a client repeats its requests)."""
        stats, error = self.stats, self.error
        if error is None:
            error = stats.broke
        # What the kept values are rendered from: texts, ints and None (equal, rendered alike).
        key = (
            line, self.connection_id, self.front, self.method, self.authority, self.client,
            self.user_agent, self.path, self.route, self.backend, self.status, end, error,
            stats.client_close, stats.backend_close,
        )  # fmt: skip
        stream = self.stream_id
        stream_text = stream if stream is not None else sink.dash
        pieces = sink.kept_access_templates.get(key)
        if pieces:
            sink.kept_access_line(pieces, stream_text, stats.bytes_up, stats.bytes_down, duration)
            return
        values = self._line_values(sink.texts, sink.dash, duration, end, codes)
        sink.access_line(line, values)
        authority, agent = self.authority, self.user_agent
        # A key of long texts is not kept: the sink keeps 256 keys and their templates. The
        # sink also measures every text of the key (the method...) against its budget.
        if (
            len(self.path) <= _KEPT_TEXT_MAX
            and (authority is None or len(authority) <= _KEPT_TEXT_MAX)
            and (agent is None or len(agent) <= _KEPT_TEXT_MAX)
            and (error is None or len(error) <= _KEPT_TEXT_MAX)
        ):
            sink.keep_access_template(key, line, values, _VARYING[line])

    def _line_values(
        self, texts: Mapping[object, object], dash: object, duration: object, end: str, codes: bool
    ) -> tuple[object, ...]:
        """The line's values in its keys' order: every text as ``texts`` has it, ``dash`` for
        a number that is missing (a sink's rendered values, or the values as they are)."""
        stats, stream, status, method = self.stats, self.stream_id, self.status, self.method
        authority, agent = self.authority, self.user_agent
        # The usual case inline: a host and a user agent met before.
        host = _HOSTS.get(authority) if authority is not None else "-"
        printable = _AGENTS.get(agent) if agent is not None else "-"
        values: tuple[object, ...] = (self.connection_id, texts[self.front])
        if method is not None:
            values += (texts[method],)
        values += (
            stream if stream is not None else dash,
            texts[host if host is not None else self._host()],
            texts[self.client],
            texts[printable if printable is not None else self._user_agent()],
            texts[self.path],
            texts[self.route],
            texts[self.backend],
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
        error = self.error
        return (*values, texts[error if error is not None else stats.broke])

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
