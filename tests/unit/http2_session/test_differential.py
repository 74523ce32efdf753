"""Differential tests: our server-role session against ``h2.H2Connection``, fed the same bytes.

Hypothesis writes sequences of frames a client might send, valid and not. After both
endpoints have initiated and read the client preface, each frame goes to both; after each,
the events (normalised to comparable tuples), any connection error's code, and the frames
each sent back (type, flags, stream, key field) must match.

Where we differ from h2 on purpose, :func:`justified_divergence` recognises the case, checks
that we did the right thing, and ends the comparison there (h2's state has parted from ours).
Each names its RFC section; nothing else is allowed to differ.
"""

from __future__ import annotations

import struct

import h2.config
import h2.connection
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from h2ws_proxy.h2session import H2Session, LocalSettings, Role
from tests.unit.http2_session import wire as w
from tests.unit.http2_session.diff_outcomes import run_sequence
from tests.unit.http2_session.diff_specs import Spec, build, specs


def new_pair() -> tuple[H2Session, h2.connection.H2Connection]:
    ours = H2Session(Role.SERVER, LocalSettings())
    ours.initiate()
    theirs = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=False
        )
    )
    theirs.initiate_connection()
    start = w.PREFACE + w.settings() + w.settings(ack=True)
    ours.receive_data(start)
    theirs.receive_data(start)
    ours.take_outbound()
    theirs.data_to_send()
    return ours, theirs


def run_differential(sequence: list[Spec]) -> None:
    ours, theirs = new_pair()
    run_sequence(ours, theirs, sequence, build)


#: Most sequences first open stream 1, so that later frames meet an open stream.
SEQUENCES = st.builds(
    lambda opened, rest: ([Spec("headers", 1, w.REQUEST)] if opened else []) + rest,
    st.booleans() | st.just(True),
    st.lists(specs(), min_size=1, max_size=8),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SEQUENCES)
@example([Spec("headers", 1, w.REQUEST, depends_on=1)])
@example([Spec("priority", 1, depends_on=1)])
@example([Spec("headers", 1, w.REQUEST), Spec("headers", 1, [(b"x", b"y")])])
@example([Spec("headers", 1, w.REQUEST), Spec("goaway", raw=bytes(8)), Spec("data", 1, raw=b"x")])
@example([Spec("bad_hpack", 1, raw=b"\x80")])
@example([Spec("settings", raw=struct.pack(">HLHL", 4, 2**31, 2, 2))])
@example(
    [Spec("data", 1, raw=b"x", flags=1), Spec("data", 1), Spec("window_update", 1, raw=bytes(4))]
)
@example([Spec("headers", 1, w.REQUEST), Spec("headers", 1, w.REQUEST, flags=w.END_STREAM)])
@example([Spec("headers", 1, w.REQUEST, flags=1), Spec("data", 1), Spec("continuation", 1)])
@example(
    [Spec("headers", 1, w.REQUEST), Spec("rst", 1, raw=bytes(4))]
    + [Spec("data", 1, raw=bytes(16384))] * 2
)
@example([Spec("headers", 3, w.REQUEST), Spec("data", 1, raw=b"x"), Spec("headers", 1, w.REQUEST)])
@example([Spec("settings", raw=struct.pack(">HLHL", 2, 2, 2, 0))])
@example([Spec("data", 0, raw=bytes(16384), pad=0)])
@example(
    [
        Spec("headers", 1, w.REQUEST),
        Spec("rst", 1, raw=bytes(4)),
        Spec("window_update", 1, raw=bytes(4)),
    ]
)
@example([Spec("headers", 1, w.REQUEST, flags=w.END_STREAM)] + [Spec("headers", 1, w.REQUEST)] * 2)
@example([Spec("headers", 1, w.REQUEST), Spec("window_update", 1, raw=bytes(4))])
@example([Spec("headers", 1, w.REQUEST), Spec("rst", 3, raw=bytes(4))])
@example([Spec("headers", 3, w.REQUEST), Spec("continuation", 1, flags=w.END_HEADERS)])
@example([Spec("headers", 1, [*w.REQUEST, (b"content-length", b"1")], flags=w.END_STREAM)])
@example([Spec("headers", 1, [*w.REQUEST, (b"content-length", b"v=2")])])
def test_server_session_matches_h2(sequence: list[Spec]) -> None:
    run_differential(sequence)
