"""A client's HEADERS opening a stream make the session's ``Stream`` in place
(``HeaderBlocks._end_block``, without a call through the type): it must be the stream
``Stream(stream_id, False, send_window, recv_window)`` is, with its head received and its
remote side ended when HEADERS carried END_STREAM; and the event the one
``request_received`` makes."""

from __future__ import annotations

import hpack
import pytest

from h2ws_proxy.h2session.events import RequestReceived, request_received
from h2ws_proxy.h2session.streams import Stream
from tests.unit.http2_session import wire as w

INITIAL_WINDOW_SIZE = 0x4


@pytest.mark.parametrize("ended", [True, False])
@pytest.mark.parametrize("window", [None, 1000])
def test_a_stream_opened_by_headers_is_the_one_its_init_makes(
    ended: bool, window: int | None
) -> None:
    session = w.server(initial_window_size=70_000)
    session.receive_data(w.settings(*([(INITIAL_WINDOW_SIZE, window)] if window else [])))
    block = w.block(w.REQUEST, hpack.Encoder())
    events = session.receive_data(w.headers(5, block, end_stream=ended))
    made = session._streams[5]
    expected = Stream(5, False, session.peer_settings.initial_window_size, 70_000)
    expected.final_head_received = True
    expected.receiving = not ended
    assert type(made) is Stream
    assert {name: getattr(made, name) for name in Stream.__slots__} == {
        name: getattr(expected, name) for name in Stream.__slots__
    }
    size = sum(32 + len(name) + len(value) for name, value in w.REQUEST)
    assert events == [request_received(5, w.REQUEST, ended, size, False)]
    assert type(events[0]) is RequestReceived
