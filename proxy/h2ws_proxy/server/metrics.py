"""``GET /metrics``: the proxy's counters in the Prometheus text format, by prometheus-client.

Theory of operation:

* The hot path counts into plain dicts (:class:`~h2ws_proxy.counters.ProxyCounters`, one
  per server); nothing here runs until a scrape. A scrape copies them into
  :class:`Samples` (:func:`take_samples`), and :func:`exposition` hands those to
  prometheus-client as metric families from a custom collector, beside the library's own
  process, platform and GC collectors; the library writes the text format.
* With ``workers`` > 1 each worker sends its :class:`Samples` to the supervisor over its
  control channel (JSON), and the supervisor adds them up (:class:`WorkerSamples`).
  Counters and histograms must never go backwards, though a restarted worker starts at 0:
  the supervisor keeps, per slot, the sum of its dead workers' last samples and adds it to
  the live worker's. It refreshes each worker's samples every few seconds, so a worker
  that is killed loses at most those seconds of counts, never a count already reported.
  Gauges describe the living: a dead worker's are dropped. ``h2ws_backend_up`` is the
  minimum over the workers (each worker keeps its own health state: 1 means every
  worker would send work to the server).
* The ``process_*`` metrics are those of the process that answers: the supervisor's own
  with ``workers`` > 1.

Label values are bounded (``counters.py``); the metric names and their labels are listed
in the README's "Metrics" section.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from h2ws_proxy.counters import CONNECT_BUCKETS_S, REQUEST_BUCKETS_S, TUNNEL_BUCKETS_S
from h2ws_proxy.relay.context import ServerStats

#: What ``generate_latest`` writes: the classic text format, version 0.0.4.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4.encode()

Labels = tuple[str, ...]

#: Counters: sample key -> (metric name without ``_total``, help, label names).
_COUNTERS: dict[str, tuple[str, str, Labels]] = {
    "tunnels": (
        "h2ws_tunnels",
        "WebSocket tunnels and refused upgrades that ended, by how they ended (the log's end=).",
        ("route", "front", "end"),
    ),
    "handshakes": (
        "h2ws_handshakes",
        "WebSocket handshakes by outcome: ok, or why no tunnel opened.",
        ("route", "outcome"),
    ),
    "tunnel_bytes": (
        "h2ws_tunnel_bytes",
        "Bytes relayed by tunnels that ended: up is client to backend, down the reverse.",
        ("route", "direction"),
    ),
    "websocket_closes": (
        "h2ws_websocket_close",
        "Tunnels whose side sent a WebSocket Close frame, by its close code.",
        ("route", "side", "code"),
    ),
    "requests": (
        "h2ws_requests",
        "Ordinary HTTP requests that ended, by the status the client got (- for none).",
        ("route", "front", "code"),
    ),
    "abuse": (
        "h2ws_abuse",
        "Hostile or overloading client behaviour met, by kind.",
        ("kind",),
    ),
}
_GAUGES: dict[str, tuple[str, str, Labels]] = {
    "connections_active": (
        "h2ws_connections_active",
        "Client connections being served, by listener and protocol.",
        ("listener", "protocol"),
    ),
    "tunnels_active": (
        "h2ws_tunnels_active",
        "WebSocket tunnels open now.",
        ("route", "front"),
    ),
    "backend_up": (
        "h2ws_backend_up",
        "1 if the backend server is up (takes new work), else 0.",
        ("backend", "server"),
    ),
    "backend_h2_connections": (
        "h2ws_backend_h2_connections",
        "HTTP/2 connections open to a backend server (shared by its tunnels and requests).",
        ("server",),
    ),
    "backend_h2_streams": (
        "h2ws_backend_h2_streams",
        "Streams open on the HTTP/2 connections to a backend server.",
        ("server",),
    ),
}
_HISTOGRAMS: dict[str, tuple[str, str, tuple[float, ...]]] = {
    "tunnel_seconds": (
        "h2ws_tunnel_duration_seconds",
        "How long opened WebSocket tunnels lasted.",
        TUNNEL_BUCKETS_S,
    ),
    "request_seconds": (
        "h2ws_request_duration_seconds",
        "How long ordinary HTTP requests took, from the request head to the end.",
        REQUEST_BUCKETS_S,
    ),
    "backend_connect_seconds": (
        "h2ws_backend_connect_seconds",
        "How long connects to backends took (those that succeeded).",
        CONNECT_BUCKETS_S,
    ),
}
#: Kinds of ``h2ws_abuse_total`` always reported (0 until met), so rates work from the start.
ABUSE_KINDS = (
    "rapid_reset",
    "empty_frame_flood",
    "client_handshake_timeout",
    "client_send_timeout",
    "client_connection_limit",
    "client_tunnel_limit",
    "listener_full_eviction",
    "accept_failure",
)
#: How gauges of several workers combine (others are summed).
_GAUGE_MERGE: dict[str, Callable[[float, float], float]] = {"backend_up": min}


@dataclass(slots=True)
class Samples:
    """Every metric's values at one moment, keyed by label values (mergeable, JSON-able)."""

    counters: dict[str, dict[Labels, float]] = field(default_factory=dict)
    gauges: dict[str, dict[Labels, float]] = field(default_factory=dict)
    #: Per bucket counts (not cumulative, ``+Inf`` last) and the sum.
    histograms: dict[str, tuple[list[int], float]] = field(default_factory=dict)

    def add(self, other: Samples, *, gauges: bool = True) -> None:
        """Add ``other``'s counters and histograms (and gauges, unless told not to)."""
        for name, values in other.counters.items():
            mine = self.counters.setdefault(name, {})
            for labels, value in values.items():
                mine[labels] = mine.get(labels, 0) + value
        if gauges:
            for name, values in other.gauges.items():
                mine, merge = self.gauges.setdefault(name, {}), _GAUGE_MERGE.get(name)
                for labels, value in values.items():
                    old = mine.get(labels)
                    if old is None:
                        mine[labels] = value
                    else:
                        mine[labels] = merge(old, value) if merge else old + value
        for name, (counts, total) in other.histograms.items():
            if name in self.histograms:
                old_counts, old_total = self.histograms[name]
                counts = [a + b for a, b in zip(old_counts, counts, strict=True)]
                total += old_total
            self.histograms[name] = (list(counts), total)

    def to_json(self) -> dict[str, object]:
        def pairs(group: dict[str, dict[Labels, float]]) -> dict[str, object]:
            return {
                name: [[list(labels), value] for labels, value in values.items()]
                for name, values in group.items()
            }

        return {
            "counters": pairs(self.counters),
            "gauges": pairs(self.gauges),
            "histograms": {name: [c, s] for name, (c, s) in self.histograms.items()},
        }

    @staticmethod
    def from_json(data: object) -> Samples:
        """Samples a worker sent (our own process wrote them); ValueError if malformed."""
        if not isinstance(data, dict):
            raise ValueError("samples must be an object")  # noqa: TRY004

        def group(name: str) -> dict[str, dict[Labels, float]]:
            return {
                metric: {tuple(map(str, labels)): float(value) for labels, value in values}
                for metric, values in data.get(name, {}).items()
            }

        try:
            histograms = {
                name: ([int(c) for c in counts], float(total))
                for name, (counts, total) in data.get("histograms", {}).items()
            }
            return Samples(group("counters"), group("gauges"), histograms)
        except (TypeError, AttributeError) as error:
            raise ValueError(f"malformed samples: {error}") from error


_Key = TypeVar("_Key", bound=Labels)


def _copy(values: Mapping[_Key, int]) -> dict[Labels, float]:
    return {labels: value for labels, value in values.items()}


def take_samples(stats: ServerStats) -> Samples:
    """This server's metrics now; call it from inside its trio run."""
    counters = stats.counters
    abuse = dict.fromkeys(ABUSE_KINDS, 0)
    abuse.update(counters.abuse)
    abuse["client_connection_limit"] = stats.refused_per_client
    abuse["listener_full_eviction"] = stats.evicted_idle
    abuse["accept_failure"] = stats.accept_failures
    abuse["client_tunnel_limit"] = sum(
        value
        for (_, outcome), value in counters.handshakes.items()
        if outcome == "over_client_limit"
    )
    backend_up: dict[Labels, float] = {}
    if stats.backend_servers is not None:
        for server in stats.backend_servers():
            up = 1.0 if server["state"] == "up" else 0.0
            backend_up[str(server["backend"]), str(server["server"])] = up
    h2_connections: dict[Labels, float] = {}
    h2_streams: dict[Labels, float] = {}
    if stats.h2_backends is not None:
        for label, connections, streams in stats.h2_backends():
            h2_connections[(label,)] = connections
            h2_streams[(label,)] = streams
    return Samples(
        counters={
            "tunnels": _copy(counters.tunnels),
            "handshakes": _copy(counters.handshakes),
            "tunnel_bytes": _copy(counters.tunnel_bytes),
            "websocket_closes": _copy(counters.websocket_closes),
            "requests": _copy(counters.requests),
            "abuse": {(kind,): value for kind, value in abuse.items()},
        },
        gauges={
            "connections_active": _copy(counters.connections_active),
            "tunnels_active": _copy(counters.tunnels_active),
            "backend_up": backend_up,
            "backend_h2_connections": h2_connections,
            "backend_h2_streams": h2_streams,
        },
        histograms={
            "tunnel_seconds": (list(counters.tunnel_seconds.counts), counters.tunnel_seconds.sum),
            "request_seconds": (
                list(counters.request_seconds.counts),
                counters.request_seconds.sum,
            ),
            "backend_connect_seconds": (
                list(counters.backend_connect_seconds.counts),
                counters.backend_connect_seconds.sum,
            ),
        },
    )


def metric_families(samples: Samples) -> Iterator[Metric]:
    """``samples`` as prometheus-client metric families (every metric, even without data)."""
    for key, (name, documentation, labels) in _COUNTERS.items():
        counter = CounterMetricFamily(name, documentation, labels=labels)
        for values, value in sorted(samples.counters.get(key, {}).items()):
            counter.add_metric(values, value)
        yield counter
    for key, (name, documentation, labels) in _GAUGES.items():
        gauge = GaugeMetricFamily(name, documentation, labels=labels)
        for values, value in sorted(samples.gauges.get(key, {}).items()):
            gauge.add_metric(values, value)
        yield gauge
    for key, (name, documentation, bounds) in _HISTOGRAMS.items():
        counts, total = samples.histograms.get(key, ([0] * (len(bounds) + 1), 0.0))
        cumulative = list(itertools.accumulate(counts))
        buckets = [(str(bound), float(n)) for bound, n in zip(bounds, cumulative, strict=False)]
        buckets.append(("+Inf", float(cumulative[-1])))
        yield HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=total)


#: The library's collectors of this process (CPU, memory, descriptors, Python, GC).
_PROCESS = (
    ProcessCollector(registry=None),
    PlatformCollector(registry=None),
    GCCollector(registry=CollectorRegistry()),
)


class _Scrape:
    """One scrape: the process collectors and ``samples`` (a prometheus-client Collector)."""

    def __init__(self, samples: Samples) -> None:
        self._samples = samples

    def collect(self) -> Iterator[Metric]:
        for collector in _PROCESS:
            yield from collector.collect()
        yield from metric_families(self._samples)


def exposition(samples: Samples) -> bytes:
    """The ``/metrics`` body for ``samples`` (content type :data:`CONTENT_TYPE`)."""
    return generate_latest(_Scrape(samples))


class WorkerSamples:
    """The supervisor's view of its workers' samples: per slot, the live worker's latest
    and the sum of those its dead workers last reported."""

    def __init__(self, slots: int) -> None:
        self._live: list[Samples | None] = [None] * slots
        self._retired = [Samples() for _ in range(slots)]

    def update(self, slot: int, samples: Samples) -> None:
        """The live worker of ``slot`` reported ``samples``."""
        self._live[slot] = samples

    def worker_exited(self, slot: int) -> None:
        """``slot``'s worker is gone: its last counts stay, its gauges go."""
        live = self._live[slot]
        if live is not None:
            self._retired[slot].add(live, gauges=False)
        self._live[slot] = None

    def total(self) -> Samples:
        total = Samples()
        for retired, live in zip(self._retired, self._live, strict=True):
            total.add(retired)
            if live is not None:
                total.add(live)
        return total


def encode_samples(request_id: str, samples: Samples) -> bytes:
    """A worker's answer to ``metrics <id>`` on its control channel."""
    return json.dumps({"id": request_id, "samples": samples.to_json()}).encode()
