"""The proxy's traffic counters: plain ints in dicts, updated on the hot path, read at scrape.

Rules:

* Updates are dict and list operations on this process's objects, with no lock and no
  library call: one update per tunnel or request when its record ends
  (``relay/record.py``), one per connection, dial or refusal elsewhere. prometheus-client's
  own metric objects take a lock per update; ``server/metrics.py`` turns these dicts into
  metric families only when ``/metrics`` is scraped.
* Every label value is bounded by the configuration or the RFCs, never a string a client
  sent: routes are route paths from the config (``-`` for none), HTTP status codes are
  the registered ones or their class (:func:`status_label`), WebSocket close codes the
  RFC 6455 ones or their range (:func:`close_code_label`).
* Time comes from the caller (``trio.current_time()``), so a MockClock drives it in tests.
"""

from __future__ import annotations

import http
from bisect import bisect_left

#: Upper bounds (seconds) of the request duration buckets: prometheus-client's defaults.
REQUEST_BUCKETS_S = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
#: Tunnels live from a moment (a refused or failed one) to hours (a chat tab left open).
TUNNEL_BUCKETS_S = (0.1, 1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 4 * 3600.0, 24 * 3600.0)
#: A loopback or LAN connect takes well under a millisecond; past the default
#: ``connect_timeout_s`` (5 s) the dial failed.
CONNECT_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    """Observations counted per bucket (not cumulative: the exposition sums them)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        #: One count per bound, then the count above the last (``+Inf``).
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # ``le`` is inclusive: a value equal to a bound belongs to that bound's bucket.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class ProxyCounters:
    """Everything ``/metrics`` reports about traffic, for one server (worker process).

    The dict keys are label value tuples, in the order the metric's labels are listed.
    """

    __slots__ = (
        "abuse",
        "backend_connect_seconds",
        "connections_active",
        "handshakes",
        "request_seconds",
        "requests",
        "tunnel_bytes",
        "tunnel_seconds",
        "tunnels",
        "tunnels_active",
        "websocket_closes",
    )

    def __init__(self) -> None:
        #: (listener, protocol) → connections open now (gauge).
        self.connections_active: dict[tuple[str, str], int] = {}
        #: (route, front) → tunnels open now (gauge).
        self.tunnels_active: dict[tuple[str, str], int] = {}
        #: (route, front, end) → tunnels and refused upgrades that ended.
        self.tunnels: dict[tuple[str, str, str], int] = {}
        #: (route, outcome) → WebSocket handshakes, opened or not.
        self.handshakes: dict[tuple[str, str], int] = {}
        #: (route, direction) → tunnel bytes; direction is ``up`` (to the backend) or ``down``.
        self.tunnel_bytes: dict[tuple[str, str], int] = {}
        #: (route, side, code) → Close frames seen, per side that sent the first.
        self.websocket_closes: dict[tuple[str, str, str], int] = {}
        #: (route, front, code) → ordinary requests that ended.
        self.requests: dict[tuple[str, str, str], int] = {}
        #: kind → hostile or overloading client behaviour met (see server/metrics.py).
        self.abuse: dict[str, int] = {}
        self.tunnel_seconds = Histogram(TUNNEL_BUCKETS_S)
        self.request_seconds = Histogram(REQUEST_BUCKETS_S)
        self.backend_connect_seconds = Histogram(CONNECT_BUCKETS_S)

    def count_abuse(self, kind: str) -> None:
        self.abuse[kind] = self.abuse.get(kind, 0) + 1

    def connection_opened(self, key: tuple[str, str]) -> None:
        """A connection of ``(listener, protocol)`` is served; :meth:`connection_closed` next."""
        active = self.connections_active
        active[key] = active.get(key, 0) + 1

    def connection_closed(self, key: tuple[str, str]) -> None:
        self.connections_active[key] -= 1

    def request_ended(self, route: str, front: str, status: int | None, seconds: float) -> None:
        """An ordinary request ended, answered ``status`` (None: none) after ``seconds``."""
        self.count_request((route, front, _STATUS_LABELS.get(status, "other")), seconds)

    def count_request(self, key: tuple[str, str, str], seconds: float) -> None:
        """:meth:`request_ended` by the ``requests`` key (route, front, :func:`status_label`),
        for a caller that keeps it (``relay/request_facts.py``: a repeated request's)."""
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        histogram = self.request_seconds  # Histogram.observe, without its call
        bounds = histogram.bounds
        # Most requests end within the first bucket: one comparison, not bisect's call.
        histogram.counts[0 if seconds <= bounds[0] else bisect_left(bounds, seconds)] += 1
        histogram.sum += seconds

    def tunnel_ended(
        self,
        route: str,
        front: str,
        end: str,
        seconds: float,
        bytes_up: int,
        bytes_down: int,
        client_close: int | None,
        backend_close: int | None,
    ) -> None:
        """A tunnel that opened (counted in ``tunnels_active``) ended ``end``; the close
        codes each side sent, if any."""
        tunnels, key = self.tunnels, (route, front, end)
        tunnels[key] = tunnels.get(key, 0) + 1
        self.tunnels_active[route, front] -= 1
        handshakes, ok = self.handshakes, (route, "ok")
        handshakes[ok] = handshakes.get(ok, 0) + 1
        tunnel_bytes, up, down = self.tunnel_bytes, (route, "up"), (route, "down")
        tunnel_bytes[up] = tunnel_bytes.get(up, 0) + bytes_up
        tunnel_bytes[down] = tunnel_bytes.get(down, 0) + bytes_down
        histogram = self.tunnel_seconds  # Histogram.observe, without its call
        histogram.counts[bisect_left(histogram.bounds, seconds)] += 1
        histogram.sum += seconds
        # Each side's code, written out: no pairs built and looped over per tunnel.
        if client_close is not None:
            closes = self.websocket_closes
            label = _CLOSE_LABELS.get(client_close) or close_code_label(client_close)
            close = (route, "client", label)
            closes[close] = closes.get(close, 0) + 1
        if backend_close is not None:
            closes = self.websocket_closes
            label = _CLOSE_LABELS.get(backend_close) or close_code_label(backend_close)
            close = (route, "backend", label)
            closes[close] = closes.get(close, 0) + 1

    def tunnel_refused(self, route: str, front: str, end: str, outcome: str) -> None:
        """A WebSocket handshake ended ``end`` without a tunnel, for ``outcome``."""
        tunnels, key = self.tunnels, (route, front, end)
        tunnels[key] = tunnels.get(key, 0) + 1
        handshakes, refused = self.handshakes, (route, outcome)
        handshakes[refused] = handshakes.get(refused, 0) + 1


def _status_labels() -> dict[int | None, str]:
    labels: dict[int | None, str] = {code: f"{code // 100}xx" for code in range(100, 600)}
    labels.update({int(status): str(int(status)) for status in http.HTTPStatus})
    labels[None] = "-"
    return labels


#: Registered codes (RFC 9110 and the IANA registry, as Python knows them) as themselves,
#: any other in 100-599 as its class (``4xx``), none as ``-``.
_STATUS_LABELS = _status_labels()


def status_label(status: int | None) -> str:
    """The ``code`` label of an HTTP status: ``-`` for none, ``other`` outside 100-599."""
    return _STATUS_LABELS.get(status, "other")


def close_code_label(code: int) -> str:
    """The ``code`` label of a WebSocket close code (RFC 6455 §7.4).

    1000-1015 (the RFC's and the IANA registry's) as themselves, ``3xxx`` (registered
    for libraries and frameworks), ``4xxx`` (private use), anything else ``other``.
    """
    if 1000 <= code <= 1015:
        return str(code)
    if 3000 <= code <= 4999:
        return f"{code // 1000}xxx"
    return "other"


#: The close codes met most (the RFC's), labelled once.
_CLOSE_LABELS = {code: close_code_label(code) for code in range(1000, 1016)}
