"""When a shared HTTP/2 backend connection PINGs or closes for idleness (pure rules)."""

from __future__ import annotations

import math

from h2ws_proxy.backend.h2.liveness import Due, Liveness


def fresh() -> Liveness:
    return Liveness(
        idle_timeout_s=4.0,
        ping_interval_s=30.0,
        ping_timeout_s=5.0,
        idle_since=100.0,
        last_read=100.0,
    )


def test_idle_connection_closes_after_the_idle_timeout() -> None:
    live = fresh()
    assert live.next_check(streams_open=False) == 104.0
    assert live.due(103.9, streams_open=False) is Due.NOTHING
    assert live.due(104.0, streams_open=False) is Due.IDLE


def test_quiet_connection_with_streams_is_pinged_then_dropped_without_an_answer() -> None:
    live = fresh()
    assert live.next_check(streams_open=True) == 130.0
    assert live.due(129.0, streams_open=True) is Due.NOTHING
    assert live.due(130.0, streams_open=True) is Due.PING
    assert live.next_check(streams_open=True) == 135.0
    assert live.due(134.0, streams_open=True) is Due.NOTHING  # one PING at a time
    assert live.due(135.0, streams_open=True) is Due.PING_TIMED_OUT


def test_an_answer_or_a_read_puts_the_ping_off() -> None:
    live = fresh()
    assert live.due(130.0, streams_open=True) is Due.PING
    live.ping_sent_at = None  # PING ACK
    live.last_read = 131.0
    assert live.next_check(streams_open=True) == 161.0
    assert live.due(150.0, streams_open=True) is Due.NOTHING


def test_no_ping_interval_means_no_pings() -> None:
    live = Liveness(4.0, 0.0, 5.0, idle_since=0.0, last_read=0.0)
    assert live.next_check(streams_open=True) == math.inf
    assert live.due(1e9, streams_open=True) is Due.NOTHING
