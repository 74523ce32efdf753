"""``RelayRecord.begin`` fills its stats without ``RelayStats()``'s call: the same fields."""

from __future__ import annotations

import dataclasses

import trio

from h2ws_proxy.relay.outcome import RelayStats
from h2ws_proxy.relay.record import RelayRecord


async def test_a_new_records_stats_are_relay_stats_defaults() -> None:
    record = RelayRecord.begin("h2", 1, b"/", method=b"GET")
    fresh = RelayStats()
    # Every field compared by name: a field added to RelayStats and not set by begin fails
    # here (its slot is empty), as does a default changed on one side only.
    for field in dataclasses.fields(RelayStats):
        assert getattr(record.stats, field.name) == getattr(fresh, field.name), field.name
    assert record.stats == fresh
    assert type(record.stats) is RelayStats
    assert RelayRecord.begin("h1", 2, b"/").stats is not record.stats


async def test_begin_reads_the_loops_clock() -> None:
    before = trio.current_time()
    record = RelayRecord.begin("h2", 1, b"/")
    assert before <= record.started <= trio.current_time()
