"""The metrics' pure parts: counting a record, bounded labels, samples, merging, exposition."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from h2ws_proxy.config import BackendGroup, RouteConfig, parse_backend
from h2ws_proxy.counters import Histogram, ProxyCounters, close_code_label, status_label
from h2ws_proxy.errors import (
    BackendConnectFailed,
    BackendConnectTimeout,
    BackendProtocolError,
    BackendRejected,
    ClientProtocolError,
    OriginRefused,
    ProxyError,
    RouteNotFound,
    TooManyRequests,
)
from h2ws_proxy.relay.context import ServerStats
from h2ws_proxy.relay.outcome import RelayEnd
from h2ws_proxy.relay.record import RelayRecord, tunnel_opened
from h2ws_proxy.server.metrics import (
    Samples,
    WorkerSamples,
    exposition,
    take_samples,
)

ROUTE = RouteConfig(path="/chat", backend=BackendGroup.of(parse_backend("http://127.0.0.1:9")))


def samples_of(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, parsed by prometheus-client's own parser."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


@pytest.mark.parametrize(
    ("status", "label"),
    [(200, "200"), (101, "101"), (418, "418"), (299, "2xx"), (599, "5xx"), (99, "other"),
     (1000, "other"), (None, "-")],
)  # fmt: skip
def test_status_labels_are_registered_codes_or_their_class(status: int | None, label: str) -> None:
    assert status_label(status) == label


@pytest.mark.parametrize(
    ("code", "label"),
    [(1000, "1000"), (1011, "1011"), (1015, "1015"), (1016, "other"), (999, "other"),
     (2999, "other"), (3000, "3xxx"), (3999, "3xxx"), (4000, "4xxx"), (4999, "4xxx"),
     (5000, "other"), (65535, "other")],
)  # fmt: skip
def test_close_code_labels_follow_rfc_6455_ranges(code: int, label: str) -> None:
    assert close_code_label(code) == label


def test_histogram_buckets_include_their_bound() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        histogram.observe(value)
    assert histogram.counts == [2, 2, 1]
    assert histogram.sum == pytest.approx(8.65)


async def test_an_opened_tunnel_is_counted_once_when_its_record_ends() -> None:
    counters = ProxyCounters()
    record = RelayRecord.begin("h2", 1, b"/chat/x?y", stream_id=1, route=ROUTE)
    record.status, record.opened = 200, True
    tunnel_opened(record, counters)
    assert counters.tunnels_active == {("/chat", "h2"): 1}
    record.stats.bytes_up, record.stats.bytes_down = 31, 13
    record.stats.end = RelayEnd.CLEAN
    record.stats.client_close, record.stats.backend_close = 1000, 4001
    record.log(counters)
    assert counters.tunnels_active == {("/chat", "h2"): 0}
    assert counters.tunnels == {("/chat", "h2", "clean"): 1}
    assert counters.handshakes == {("/chat", "ok"): 1}
    assert counters.tunnel_bytes == {("/chat", "up"): 31, ("/chat", "down"): 13}
    assert counters.websocket_closes == {
        ("/chat", "client", "1000"): 1,
        ("/chat", "backend", "4xxx"): 1,
    }
    assert sum(counters.tunnel_seconds.counts) == 1
    assert counters.requests == {}


async def test_a_tunnel_without_close_frames_counts_no_close_code() -> None:
    counters = ProxyCounters()
    record = RelayRecord.begin("h1", 1, b"/chat", route=ROUTE)
    record.status, record.opened = 101, True
    tunnel_opened(record, counters)
    record.stats.end = RelayEnd.BACKEND_ABORTED
    record.log(counters)
    assert counters.tunnels == {("/chat", "h1", "backend_aborted"): 1}
    assert counters.websocket_closes == {}


@pytest.mark.parametrize(
    ("error", "route", "outcome"),
    [
        (RouteNotFound("no route for /x"), "-", "no_route"),
        (OriginRefused("origin https://evil", route="/chat"), "/chat", "origin_refused"),
        (TooManyRequests("over max_tunnels_per_client"), "-", "over_client_limit"),
        (ClientProtocolError("bad"), "-", "bad_request"),
        (ClientProtocolError("no", status_hint=501), "-", "not_implemented"),
        (BackendConnectFailed("refused"), "-", "refused"),
        (BackendConnectTimeout("slow"), "-", "connect_timeout"),
        (BackendProtocolError("accept", outcome="bad_accept"), "-", "bad_accept"),
        (BackendRejected(403, [], b""), "-", "backend_status_4xx"),
        (BackendRejected(503, [], b""), "-", "backend_status_5xx"),
    ],
)  # fmt: skip
async def test_a_refused_handshake_is_counted_by_its_outcome(
    error: ProxyError, route: str, outcome: str
) -> None:
    counters = ProxyCounters()
    record = RelayRecord.begin("h2", 1, b"/x", stream_id=3)
    record.refused(error)
    record.log(counters)
    assert counters.handshakes == {(route, outcome): 1}
    assert counters.tunnels == {(route, "h2", "refused"): 1}
    assert counters.tunnels_active == {}


async def test_a_client_that_left_before_any_answer_is_its_own_outcome() -> None:
    counters = ProxyCounters()
    record = RelayRecord.begin("h2", 1, b"/chat", stream_id=3, route=ROUTE)
    record.stats.end = RelayEnd.CLIENT_ABORTED
    record.log(counters)
    assert counters.handshakes == {("/chat", "client_aborted"): 1}


async def test_an_ordinary_request_is_counted_by_route_front_and_status() -> None:
    counters = ProxyCounters()
    for status in (200, 200, 299, None):
        record = RelayRecord.begin("h1", 1, b"/chat", route=ROUTE, method=b"GET")
        record.status = status
        record.log(counters)
    assert counters.requests == {
        ("/chat", "h1", "200"): 2,
        ("/chat", "h1", "2xx"): 1,
        ("/chat", "h1", "-"): 1,
    }
    assert sum(counters.request_seconds.counts) == 4
    assert counters.tunnels == counters.handshakes == {}


async def test_the_exposition_parses_and_reports_every_metric() -> None:
    stats = ServerStats(refused_per_client=2, accept_failures=1)
    counters = stats.counters
    counters.tunnels[("/chat", "h2", "clean")] = 3
    counters.handshakes[("-", "over_client_limit")] = 4
    counters.connection_opened(("127.0.0.1:8080", "h2"))
    counters.count_abuse("rapid_reset")
    counters.backend_connect_seconds.observe(0.0007)
    counters.backend_connect_seconds.observe(9.0)
    stats.backend_servers = lambda: [
        {"backend": "pool", "server": "http://10.0.0.1:80", "state": "up", "active": 0},
        {"backend": "pool", "server": "http://10.0.0.2:80", "state": "down (health check)"},
    ]
    body = exposition(take_samples(stats)).decode()
    samples = samples_of(body)
    assert samples[key("h2ws_tunnels_total", route="/chat", front="h2", end="clean")] == 3
    assert samples[key("h2ws_connections_active", listener="127.0.0.1:8080", protocol="h2")] == 1
    assert samples[key("h2ws_abuse_total", kind="rapid_reset")] == 1
    assert samples[key("h2ws_abuse_total", kind="client_connection_limit")] == 2
    assert samples[key("h2ws_abuse_total", kind="accept_failure")] == 1
    assert samples[key("h2ws_abuse_total", kind="client_tunnel_limit")] == 4
    assert samples[key("h2ws_abuse_total", kind="empty_frame_flood")] == 0
    assert samples[key("h2ws_backend_up", backend="pool", server="http://10.0.0.1:80")] == 1
    assert samples[key("h2ws_backend_up", backend="pool", server="http://10.0.0.2:80")] == 0
    assert samples[key("h2ws_backend_connect_seconds_bucket", le="0.0005")] == 0
    assert samples[key("h2ws_backend_connect_seconds_bucket", le="0.001")] == 1
    assert samples[key("h2ws_backend_connect_seconds_bucket", le="5.0")] == 1
    assert samples[key("h2ws_backend_connect_seconds_bucket", le="+Inf")] == 2
    assert samples[key("h2ws_backend_connect_seconds_count")] == 2
    assert samples[key("h2ws_backend_connect_seconds_sum")] == pytest.approx(9.0007)
    assert samples[key("h2ws_request_duration_seconds_count")] == 0
    assert not any(name == "h2ws_tunnels_active" for name, _ in samples)  # none opened yet
    assert "# TYPE h2ws_websocket_close_total counter" in body
    assert any(name == "process_cpu_seconds_total" for name, _ in samples)


def test_samples_survive_json_and_merge_by_kind() -> None:
    one, two = Samples(), Samples()
    one.counters["tunnels"] = {("/", "h2", "clean"): 2}
    two.counters["tunnels"] = {("/", "h2", "clean"): 3, ("/", "h1", "clean"): 1}
    one.gauges["tunnels_active"] = {("/", "h2"): 1}
    two.gauges["tunnels_active"] = {("/", "h2"): 4}
    one.gauges["backend_up"] = {("b", "s"): 1}
    two.gauges["backend_up"] = {("b", "s"): 0}
    one.histograms["tunnel_seconds"] = ([1, 0, 2], 5.0)
    two.histograms["tunnel_seconds"] = ([0, 1, 0], 0.5)
    total = Samples.from_json(one.to_json())
    total.add(Samples.from_json(two.to_json()))
    assert total.counters["tunnels"] == {("/", "h2", "clean"): 5, ("/", "h1", "clean"): 1}
    assert total.gauges["tunnels_active"] == {("/", "h2"): 5}
    assert total.gauges["backend_up"] == {("b", "s"): 0}  # up only if every worker says so
    assert total.histograms["tunnel_seconds"] == ([1, 1, 2], 5.5)
    with pytest.raises(ValueError, match="samples"):
        Samples.from_json(["not", "samples"])


def test_a_restarted_workers_counts_add_to_its_predecessors() -> None:
    def worker(clean: int, active: int) -> Samples:
        return Samples(
            counters={"tunnels": {("/", "h1", "clean"): clean}},
            gauges={"tunnels_active": {("/", "h1"): active}},
        )

    workers = WorkerSamples(2)
    workers.update(0, worker(5, 2))
    workers.update(1, worker(1, 0))
    assert workers.total().counters["tunnels"] == {("/", "h1", "clean"): 6}
    workers.worker_exited(0)  # killed: its last counts stay, its open tunnels are gone
    total = workers.total()
    assert total.counters["tunnels"] == {("/", "h1", "clean"): 6}
    assert total.gauges["tunnels_active"] == {("/", "h1"): 0}
    workers.update(0, worker(0, 1))  # the restarted worker starts at 0
    assert workers.total().counters["tunnels"] == {("/", "h1", "clean"): 6}
    workers.update(0, worker(2, 0))
    workers.worker_exited(0)
    workers.worker_exited(0)  # a slot with no live worker adds nothing twice
    assert workers.total().counters["tunnels"] == {("/", "h1", "clean"): 8}
