"""Reads split anywhere give the same events and the same output as one read."""

from __future__ import annotations

import hpack
from hypothesis import given, settings
from hypothesis import strategies as st

from h2ws_proxy.h2session import Event, H2Session, LocalSettings, Role
from tests.unit.http2_session import wire as w
from tests.unit.http2_session.diff_specs import Spec, build
from tests.unit.http2_session.test_differential import SEQUENCES


def fed(session: H2Session, pieces: list[bytes]) -> tuple[list[Event], bytes]:
    events: list[Event] = []
    for piece in pieces:
        events += session.receive_data(piece)
    return events, bytes(session.take_outbound())


def fresh() -> H2Session:
    session = H2Session(Role.SERVER, LocalSettings())
    session.initiate()
    session.take_outbound()
    return session


@settings(max_examples=100, deadline=None)
@given(SEQUENCES, st.lists(st.integers(0, 2000), max_size=12))
def test_split_reads_change_nothing(sequence: list[Spec], cuts: list[int]) -> None:
    encoder = hpack.Encoder()
    wire = w.PREFACE + w.settings() + b"".join(build(spec, encoder) for spec in sequence)
    points = sorted({cut % (len(wire) + 1) for cut in cuts})
    pieces = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]
    assert fed(fresh(), pieces) == fed(fresh(), [wire])
