"""Whatever the peer sends, ``receive_data`` returns events and never raises."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from h2ws_proxy.h2session import ConnectionFailed, H2Session, LocalSettings, Role
from tests.unit.http2_session import wire as w

FRAMES = st.builds(
    w.frame,
    st.integers(0, 12),
    st.integers(0, 255),
    st.sampled_from([0, 1, 2, 3, 5, 2**31 + 1]),
    st.binary(max_size=40),
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([Role.SERVER, Role.CLIENT]),
    st.lists(FRAMES | st.binary(max_size=30), max_size=12),
)
def test_any_input_gives_events_never_an_exception(role: Role, pieces: list[bytes]) -> None:
    session = H2Session(role, LocalSettings())
    session.initiate()
    if role is Role.CLIENT:
        session.send_headers(1, w.REQUEST)
    start = (w.PREFACE if role is Role.SERVER else b"") + w.settings()
    events = session.receive_data(start + w.headers(1, b"\x88"))  # a request, or a response
    for piece in pieces:
        events += session.receive_data(piece)
    failures = [i for i, e in enumerate(events) if isinstance(e, ConnectionFailed)]
    assert failures in ([], [len(events) - 1])
