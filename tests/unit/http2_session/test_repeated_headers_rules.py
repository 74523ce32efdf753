"""A client's repeated HEADERS: the codec answers a kept block from its memory, and the
frame dispatch sends a whole plain HEADERS frame straight to the block's end. Neither may
skip a rule: RFC 7541 §4.2's table size update owed after our limit went down, and the
stream id rules of RFC 9113 §5.1.1 and §5.1.
"""

from __future__ import annotations

from collections.abc import Callable

import hpack
import pytest

from h2ws_proxy.h2session import H2Session
from h2ws_proxy.h2session.errors import ErrorCode
from h2ws_proxy.h2session.events import ConnectionFailed, RequestReceived
from h2ws_proxy.h2session.settings import SettingCode
from tests.unit.http2_session import wire as w


def session_with_a_kept_block(encoder: hpack.Encoder) -> tuple[H2Session, bytes]:
    """A server session whose codec keeps ``w.REQUEST``'s all-indexed block (returned),
    after streams 1, 3 and 5; our first SETTINGS ACKed."""
    session = w.server()
    session.receive_data(w.settings(ack=True))
    events = session.receive_data(w.headers(1, w.block(w.REQUEST, encoder), end_stream=True))
    assert isinstance(events[-1], RequestReceived)
    repeated = w.block(w.REQUEST, encoder)
    for stream_id in (3, 5):  # the second one comes from the codec's memory
        events = session.receive_data(w.headers(stream_id, repeated, end_stream=True))
        assert isinstance(events[-1], RequestReceived), events
    return session, repeated


def test_a_kept_block_after_our_lowered_table_size_is_acked_fails() -> None:
    """RFC 7541 §4.2: the kept block repeated once our lowered SETTINGS_HEADER_TABLE_SIZE is
    ACKed, without the size update it now owes, is a connection COMPRESSION_ERROR."""
    session, repeated = session_with_a_kept_block(hpack.Encoder())
    session.update_settings({SettingCode.HEADER_TABLE_SIZE: 0})
    session.take_outbound()
    events = session.receive_data(w.headers(7, repeated, end_stream=True))
    assert isinstance(events[-1], RequestReceived)  # not ACKed yet: the old limit holds
    events = session.receive_data(w.settings(ack=True) + w.headers(9, repeated, end_stream=True))
    assert isinstance(events[-1], ConnectionFailed), events
    assert events[-1].error_code == ErrorCode.COMPRESSION_ERROR


def test_a_block_with_the_size_update_owed_passes_after_our_lowered_limit() -> None:
    """The same request from an encoder that announced the new size (001xxxxx first)."""
    session, _repeated = session_with_a_kept_block(hpack.Encoder())
    session.update_settings({SettingCode.HEADER_TABLE_SIZE: 0})
    session.take_outbound()
    fresh = hpack.Encoder()
    fresh.header_table_size = 0
    block = fresh.encode(w.REQUEST)
    assert block[0] & 0xE0 == 0x20  # (a dynamic table size update)
    events = session.receive_data(w.settings(ack=True) + w.headers(7, block, end_stream=True))
    assert isinstance(events[-1], RequestReceived), events


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        pytest.param(
            lambda block: w.headers(2, block, end_stream=True),
            ErrorCode.PROTOCOL_ERROR,
            id="an even stream id",
        ),
        pytest.param(
            lambda block: w.headers(0, block, end_stream=True),
            ErrorCode.PROTOCOL_ERROR,
            id="stream 0",
        ),
        pytest.param(
            lambda block: (
                w.headers(5, block, end_stream=True) + w.headers(3, block, end_stream=True)
            ),
            ErrorCode.PROTOCOL_ERROR,
            id="a stream id not increasing",
        ),
    ],
)
def test_fast_headers_dispatch_keeps_the_stream_id_rules(
    frames: Callable[[bytes], bytes], code: ErrorCode
) -> None:
    """RFC 9113 §5.1.1: a client's stream ids are odd, nonzero and increasing."""
    session = w.server()
    events = session.receive_data(frames(w.block(w.REQUEST)))
    assert isinstance(events[-1], ConnectionFailed), events
    assert events[-1].error_code == code


def test_fast_headers_on_a_closed_stream_is_a_connection_error() -> None:
    """RFC 9113 §5.1: HEADERS on a stream closed both ways is a STREAM_CLOSED connection
    error."""
    session = w.server()
    block = w.block(w.REQUEST)
    session.receive_data(w.headers(1, block, end_stream=True))
    session.send_headers(1, [(b":status", b"200")], end_stream=True)
    session.take_outbound()
    events = session.receive_data(w.headers(1, block, end_stream=True))
    assert isinstance(events[-1], ConnectionFailed), events
    assert events[-1].error_code == ErrorCode.STREAM_CLOSED


def test_fast_headers_on_a_half_closed_remote_stream_is_a_stream_error() -> None:
    """RFC 9113 §5.1: HEADERS on a stream the client ended (our answer not sent yet) resets
    that stream with STREAM_CLOSED; the connection goes on."""
    session = w.server()
    session.receive_data(w.headers(1, w.block(w.REQUEST), end_stream=True))
    session.take_outbound()
    events = session.receive_data(w.headers(1, w.block(w.REQUEST), end_stream=True))
    assert not any(isinstance(event, ConnectionFailed) for event in events), events
    sent = w.parse(session.take_outbound())
    assert [(f.kind, f.code) for f in sent] == [(w.RST_STREAM, ErrorCode.STREAM_CLOSED)]
