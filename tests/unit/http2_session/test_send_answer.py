"""``send_answer``: a final head and a whole body with END_STREAM in one call, exactly what
``send_headers`` and then ``send_data(end_stream=True)`` send, return and raise, whichever
way it takes (its one-look-up way for the usual answer, the two calls for any other)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h2ws_proxy.h2session import H2Session, SessionUsageError
from tests.unit.http2_session import wire as w

Header = tuple[bytes, bytes]


def session_with(
    *, window: int | None, frame_size: int | None, request_ended: bool, reset: bool, sent: str
) -> H2Session:
    """A server session with stream 1 opened by a GET, in the given state."""
    pairs = []
    if window is not None:
        pairs.append((0x4, window))  # SETTINGS_INITIAL_WINDOW_SIZE
    if frame_size is not None:
        pairs.append((0x5, frame_size))  # SETTINGS_MAX_FRAME_SIZE
    session = w.server()
    session.receive_data(w.settings(*pairs))
    session.receive_data(w.headers(1, w.block(w.REQUEST), end_stream=request_ended))
    if sent == "head":
        session.send_headers(1, [(b":status", b"200")])
    elif sent == "informational":
        session.send_headers(1, [(b":status", b"103")])
    if reset:
        session.receive_data(w.rst_stream(1, 0x8))
    session.take_outbound()
    return session


def outcome(session: H2Session, call: object) -> tuple[object, ...]:
    assert callable(call)
    try:
        result: object = call()
    except SessionUsageError as error:
        result = (type(error), str(error))
    streams = {
        sid: (s.state, s.send_window, s.final_head_sent) for sid, s in session._streams.items()
    }
    return result, bytes(session.take_outbound()), streams, session._send_window


HEADS = st.sampled_from(
    [
        [(b":status", b"200"), (b"content-length", b"5")],
        [(b":status", b"204")],
        [(b":status", b"103")],  # not a final head: the two calls' error
        [(b"x-no-status", b"1")],
        [(b":status", b"200"), (b"x-big", b"v" * 20000)],  # a block past one frame
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    head=HEADS,
    size=st.sampled_from([0, 1, 5, 100, 16384, 16385, 70000]),
    window=st.sampled_from([None, 0, 4, 16384, 1 << 20]),
    frame_size=st.sampled_from([None, 16384, 65536]),
    request_ended=st.booleans(),
    reset=st.booleans(),
    sent=st.sampled_from(["nothing", "head", "informational"]),
)
def test_send_answer_is_send_headers_then_send_data(
    head: list[Header],
    size: int,
    window: int | None,
    frame_size: int | None,
    request_ended: bool,
    reset: bool,
    sent: str,
) -> None:
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    state = {
        "window": window,
        "frame_size": frame_size,
        "request_ended": request_ended,
        "reset": reset,
        "sent": sent,
    }
    one, two = session_with(**state), session_with(**state)  # type: ignore[arg-type]

    def separately() -> int:
        two.send_headers(1, head)
        return two.send_data(1, body, True)

    assert outcome(one, lambda: one.send_answer(1, head, body)) == outcome(two, separately)


def test_the_usual_answer_is_its_two_frames() -> None:
    session = session_with(window=None, frame_size=None, request_ended=True, reset=False, sent="")
    assert session.send_answer(1, [(b":status", b"200")], b"hello") == 5
    assert w.summary(session.take_outbound()) == [
        (w.HEADERS, w.END_HEADERS, 1),
        (w.DATA, w.END_STREAM, 1),
    ]
    assert session.stream_state(1) is None  # ended both ways: closed


@pytest.mark.parametrize("closed", [True, False])
def test_a_stream_that_cannot_send_writes_nothing(closed: bool) -> None:
    session = session_with(
        window=None, frame_size=None, request_ended=True, reset=closed, sent="head"
    )
    with pytest.raises(SessionUsageError):
        session.send_answer(1, [(b":status", b"200")], b"x")
    assert not session.take_outbound()
