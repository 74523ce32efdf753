"""Differential tests of the send side: our server session and h2's, driven by the same peer
frames *and* the same application calls (respond, trailers, send data, reset, return credit).

Peer frames are compared as in :mod:`test_differential`. An application call is compared by
whether it was refused (our ``SessionUsageError``, h2's ``H2Error``; not for reset and credit,
which we make no-ops where h2 raises) and by the frames it wrote: DATA, RST_STREAM,
WINDOW_UPDATE byte for byte; HEADERS by flags, stream and the fields they decode to (each
side's blocks through its own HPACK decoder, so each encoder's table-size announcements are
checked for consistency rather than for identical bytes).

``send_data`` differs by design: ours sends what the windows allow and returns the count; for
h2 the test does the same by hand (``local_flow_control_window``, chunks of
``max_outbound_frame_size``), so the frames written must match.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h2.connection
import h2.exceptions
import hpack
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from h2ws_proxy.h2session import (
    DataReceived,
    ErrorCode,
    H2Session,
    SessionUsageError,
    StreamReset,
)
from tests.unit.http2_session import wire as w
from tests.unit.http2_session.diff_outcomes import (
    drop_local_resets,
    h2_after,
    justified_divergence,
    ours_after,
)
from tests.unit.http2_session.diff_specs import Spec, build, specs
from tests.unit.http2_session.test_differential import new_pair

RESPONSE = [(b":status", b"200"), (b"x-r", b"v")]
TRAILERS = [(b"x-t", b"1")]
APP_STREAMS = st.sampled_from([1, 1, 1, 3, 5])


@dataclass
class App:
    """One application call."""

    kind: str
    stream_id: int
    size: int = 0
    end_stream: bool = False


DATA_CALLS = st.builds(
    App,
    st.just("data"),
    APP_STREAMS,
    size=st.sampled_from([1, 100, 20000, 70000]),
    end_stream=st.booleans() | st.just(False),
)
APP_CALLS = st.one_of(
    st.builds(App, st.just("respond"), APP_STREAMS, end_stream=st.booleans() | st.just(False)),
    st.builds(App, st.just("trailers"), APP_STREAMS),
    DATA_CALLS,
    DATA_CALLS,
    st.builds(App, st.just("end"), APP_STREAMS),
    st.builds(App, st.just("reset"), APP_STREAMS),
    st.builds(App, st.just("credit"), APP_STREAMS, size=st.sampled_from([1, 2, 3])),
)


@dataclass
class Sides:
    """Both endpoints, the bytes each still owes credit for, and their HPACK decoders."""

    ours: H2Session
    theirs: h2.connection.H2Connection
    owed: dict[int, int] = field(default_factory=dict)
    decoders: tuple[hpack.Decoder, hpack.Decoder] = field(
        default_factory=lambda: (peer_decoder(), peer_decoder())
    )


def peer_decoder() -> hpack.Decoder:
    """A decoder for what a session sends: the test's SETTINGS may allow any table size."""
    decoder = hpack.Decoder()
    decoder.max_allowed_table_size = 2**32
    return decoder


def call_ours(session: H2Session, app: App, credit: int) -> bool:
    """Make ``app`` on our session; True if it was refused."""
    try:
        if app.kind == "respond":
            session.send_headers(app.stream_id, RESPONSE, end_stream=app.end_stream)
        elif app.kind == "trailers":
            session.send_headers(app.stream_id, TRAILERS, end_stream=True)
        elif app.kind == "data":
            session.send_data(app.stream_id, bytes(app.size), end_stream=app.end_stream)
        elif app.kind == "end":
            session.end_stream(app.stream_id)
        elif app.kind == "reset":
            session.reset_stream(app.stream_id, ErrorCode.CANCEL)
        else:
            session.acknowledge_received_data(app.stream_id, credit)
    except SessionUsageError:
        return True
    return False


def call_h2(conn: h2.connection.H2Connection, app: App, credit: int) -> bool:
    """Make ``app`` on h2's connection as our API defines it; True if h2 refused."""
    try:
        if app.kind == "respond":
            conn.send_headers(app.stream_id, RESPONSE, end_stream=app.end_stream)
        elif app.kind == "trailers":
            conn.send_headers(app.stream_id, TRAILERS, end_stream=True)
        elif app.kind in ("data", "end"):
            size = app.size if app.kind == "data" else 0
            end = app.end_stream or app.kind == "end"
            allowed = max(0, min(size, conn.local_flow_control_window(app.stream_id)))
            if size and not allowed:
                return False  # ours sends nothing and returns 0
            sent = 0
            while sent < allowed:
                chunk = min(conn.max_outbound_frame_size, allowed - sent)
                last = end and sent + chunk == size
                conn.send_data(app.stream_id, bytes(chunk), end_stream=last)
                sent += chunk
            if not size and end:
                conn.send_data(app.stream_id, b"", end_stream=True)
        elif app.kind == "reset":
            conn.reset_stream(app.stream_id, ErrorCode.CANCEL)
        else:
            conn.acknowledge_received_data(credit, app.stream_id)
    except h2.exceptions.H2Error:
        return True
    return False


def frames_of(wire: bytes | bytearray, decoder: hpack.Decoder) -> list[tuple[object, ...]]:
    """Frames as comparable tuples, header blocks decoded (see the module docstring)."""
    out: list[tuple[object, ...]] = []
    for sent in w.parse(wire):
        if sent.kind == w.HEADERS:
            assert sent.flags & w.END_HEADERS  # our test fields fit one frame
            fields = [tuple(h) for h in decoder.decode(sent.payload, raw=True)]
            out.append((sent.kind, sent.flags, sent.stream_id, fields))
        else:
            out.append((sent.kind, sent.flags, sent.stream_id, sent.payload))
    return out


def compare_call(sides: Sides, app: App) -> bool:
    """Compare one call; True if the comparison must stop there (a justified divergence)."""
    credit = min(app.size, sides.owed.get(app.stream_id, 0))
    if app.kind == "credit":
        credit = sides.owed.get(app.stream_id, 0) // app.size  # all, half or a third
        sides.owed[app.stream_id] = sides.owed.get(app.stream_id, 0) - credit
    refused = call_ours(sides.ours, app, credit), call_h2(sides.theirs, app, credit)
    ours = frames_of(sides.ours.take_outbound(), sides.decoders[0])
    theirs = frames_of(sides.theirs.data_to_send(), sides.decoders[1])
    if refused == (True, False) and app.kind in ("data", "end"):
        # RFC 9113 §8.1: a response opens with its HEADERS; we refuse DATA before the final
        # head (writing nothing), h2 sends it.
        assert ours == [], (app, ours)
        assert all(f[0] == w.DATA for f in theirs), (app, theirs)
        return True
    # h2 credits a stream the peer has finished sending on (half-closed remote), which
    # nothing can use (RFC 9113 §6.9); we do not.
    theirs = [f for f in theirs if f[0] != w.WINDOW_UPDATE or f[2] == 0 or f in ours]
    assert ours == theirs, (app, ours, theirs)
    if app.kind in ("reset", "credit"):
        return False  # no-ops where h2 raises (closed or unknown streams)
    assert refused[0] == refused[1], (app, refused)
    # h2 closes a stream's state machine when it refuses a local call, sending nothing; a
    # call we refuse changes nothing (errors.py). The states part there, unless the stream
    # is one h2 does not know (never opened).
    return refused[1] and app.stream_id in sides.theirs.streams


def run(sequence: list[Spec | App]) -> None:
    ours, theirs = new_pair()
    sides = Sides(ours, theirs)
    encoder = hpack.Encoder()
    we_reset: set[int] = set()
    for step in sequence:
        if isinstance(step, App):
            if compare_call(sides, step):
                return
            if step.kind == "reset":
                we_reset.add(step.stream_id)
            continue
        wire = build(step, encoder)
        mine, raw = ours_after(ours, wire)
        h2s, message = h2_after(theirs, wire)
        drop_local_resets(mine)
        drop_local_resets(h2s)
        if mine != h2s:
            assert justified_divergence(step, wire, mine, h2s, message, raw, we_reset), (
                step,
                mine,
                h2s,
                message,
            )
            return
        we_reset.update(e.stream_id for e in raw if isinstance(e, StreamReset) and not e.remote)
        if mine.error is not None or any(e[0] == "goaway" for e in h2s.events):
            return
        for event in raw:
            if isinstance(event, DataReceived):
                owed = sides.owed.get(event.stream_id, 0)
                sides.owed[event.stream_id] = owed + len(event.data)


OPEN = Spec("headers", 1, w.REQUEST)
STEPS = st.lists(st.one_of(specs(), APP_CALLS, APP_CALLS), min_size=1, max_size=10)


#: Most sequences open stream 1 and answer it first, so that DATA can follow.
SEQUENCES = st.builds(
    lambda respond, rest: [OPEN, *([App("respond", 1)] if respond else []), *rest],
    st.sampled_from([True, True, False]),
    STEPS,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SEQUENCES)
@example([OPEN, App("respond", 1), App("data", 1, 70000, end_stream=True)])
@example([OPEN, Spec("data", 1, raw=bytes(16384)), App("credit", 1, 1)])
@example([OPEN, App("respond", 1), App("trailers", 1), App("data", 1, 1)])
@example(
    [Spec("headers", 1, w.REQUEST, flags=w.END_STREAM), App("respond", 1, end_stream=True), OPEN]
)
def test_application_calls_match_h2(sequence: list[Spec | App]) -> None:
    run(sequence)
