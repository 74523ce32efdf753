"""``receive_lone_data``: a read that is one DATA frame, taken without an event object, exactly
as ``receive_data`` takes it; anything else left to ``receive_data`` untouched."""

from __future__ import annotations

import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h2ws_proxy.h2session import (
    ConnectionFailed,
    ErrorCode,
    Event,
    H2Session,
    LocalSettings,
    Role,
)
from h2ws_proxy.h2session.events import data_received
from tests.unit.http2_session import wire as w
from tests.unit.http2_session.diff_specs import Spec, build
from tests.unit.http2_session.test_differential import SEQUENCES

OPEN_1 = w.headers(1, w.block(w.REQUEST))


def lone_first(session: H2Session, read: bytes) -> list[Event]:
    """One read as the front end feeds it: the lone-DATA path first, else ``receive_data``."""
    stream_id = session.receive_lone_data(read)
    if stream_id:
        return [data_received(stream_id, read[9:], len(read) - 9, False)]
    return session.receive_data(read)


def state(session: H2Session) -> tuple[object, ...]:
    windows = {sid: (s.recv_window, s.state) for sid, s in session._streams.items()}
    return session._recv_window, windows, bytes(session.take_outbound()), session.closed


def fresh() -> H2Session:
    session = H2Session(Role.SERVER, LocalSettings())
    session.initiate()
    session.take_outbound()
    return session


@settings(max_examples=150, deadline=None)
@given(SEQUENCES, st.booleans())
def test_frame_by_frame_reads_give_what_receive_data_gives(
    sequence: list[Spec], split_preface: bool
) -> None:
    encoder = hpack.Encoder()
    frames = [build(spec, encoder) for spec in sequence]
    preface = [w.PREFACE, w.settings()] if split_preface else [w.PREFACE + w.settings()]
    reads = [*preface, *frames]
    plain, lone = fresh(), fresh()
    plain_events = [event for read in reads for event in plain.receive_data(read)]
    lone_events = [event for read in reads for event in lone_first(lone, read)]
    assert lone_events == plain_events
    assert state(lone) == state(plain)


def test_a_lone_data_frame_on_an_open_stream_is_taken() -> None:
    session = w.server()
    session.receive_data(OPEN_1)
    window, stream_window = session._recv_window, session._streams[1].recv_window
    assert session.receive_lone_data(w.data(1, b"hello")) == 1
    assert session._recv_window == window - 5
    assert session._streams[1].recv_window == stream_window - 5
    assert not session.take_outbound()


@pytest.mark.parametrize(
    "read",
    [
        w.data(1, b"hi", end_stream=True),  # the end: the stream's state moves
        w.data(1, b"hi", pad=3),  # padding: credited at once
        w.data(1, b""),  # empty: the front end counts it
        w.data(1, b"a") + w.data(1, b"b"),  # two frames
        w.data(1, b"hello")[:-1],  # not all of it
        w.data(3, b"hi"),  # an idle stream: a connection error
        w.frame(w.DATA, 0, 0, b"hi"),  # stream 0
        w.window_update(1, 10),  # not DATA
    ],
)
def test_anything_else_is_left_to_receive_data(read: bytes) -> None:
    session, plain = w.server(), w.server()
    session.receive_data(OPEN_1)
    plain.receive_data(OPEN_1)
    assert session.receive_lone_data(read) == 0
    assert state(session) == state(plain)  # nothing was done
    assert session.receive_data(read) == plain.receive_data(read)


def test_not_while_a_frame_is_buffered_or_a_header_block_is_open() -> None:
    session = w.server()
    session.receive_data(OPEN_1)
    session.receive_data(w.data(1, b"abc")[:5])
    assert session.receive_lone_data(w.data(1, b"x")) == 0
    blocked = w.server()
    blocked.receive_data(w.headers(3, w.block(w.REQUEST), end_headers=False))
    assert blocked.receive_lone_data(w.data(1, b"x")) == 0


def test_not_before_the_peers_settings_nor_after_a_failure() -> None:
    session = H2Session(Role.SERVER, LocalSettings())
    session.initiate()
    assert session.receive_lone_data(w.PREFACE) == 0
    session.receive_data(w.PREFACE)
    assert session.receive_lone_data(w.data(1, b"x")) == 0
    failed = w.server()
    failed.receive_data(OPEN_1)
    failed.receive_data(w.frame(w.PUSH_PROMISE, 4, 1, bytes(4)))
    assert failed.closed
    assert failed.receive_lone_data(w.data(1, b"x")) == 0


def test_data_over_a_window_is_left_to_receive_data() -> None:
    session = w.server(initial_window_size=10)
    session.receive_data(w.settings(ack=True) + OPEN_1)
    over = w.data(1, bytes(11))
    assert session.receive_lone_data(over) == 0
    events = session.receive_data(over)
    assert not any(isinstance(event, ConnectionFailed) for event in events)
    assert events[-1].error_code == ErrorCode.FLOW_CONTROL_ERROR  # type: ignore[attr-defined]


def test_not_before_a_responses_final_head_in_the_client_role() -> None:
    session = H2Session(Role.CLIENT, LocalSettings())
    session.initiate()
    session.receive_data(w.settings())
    session.send_headers(1, w.REQUEST)
    assert session.receive_lone_data(w.data(1, b"x")) == 0
    session.receive_data(w.headers(1, hpack.Encoder().encode([(b":status", b"200")])))
    assert session.receive_lone_data(w.data(1, b"x")) == 1
