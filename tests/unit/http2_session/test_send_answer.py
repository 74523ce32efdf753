"""``send_answer``: a final head and a whole body with END_STREAM in one call, exactly what
``send_headers`` and then ``send_data(end_stream=True)`` send, return and raise, whichever
way it takes (its one-look-up way for the usual answer, the two calls for any other)."""

from __future__ import annotations

from typing import cast

import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h2ws_proxy.h2session import H2Session, SessionUsageError
from h2ws_proxy.h2session.errors import ErrorCode
from h2ws_proxy.h2session.events import ConnectionFailed
from h2ws_proxy.h2session.streams import CLOSED_MEMORY, ClosedBy
from tests.unit.http2_session import wire as w

Header = tuple[bytes, bytes]
HEADER_TABLE_SIZE, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE = 0x1, 0x4, 0x5

#: About 24 KB of fields (a block past one frame, not past 64 KiB) that each fit a large
#: HPACK table (400 of them do not fit the default 4 KiB one): its encoding changes the table.
_LETTERS = b"abcdefghijklmnopqrstuvwxyz0123456789"
MANY_FIELDS = [
    (b"x-f%03d" % i, bytes(_LETTERS[(i * 7 + j * j) % 36] for j in range(80))) for i in range(400)
]
SECRET = cast(Header, hpack.NeverIndexedHeaderTuple(b"authorization", b"s" * 17000))
SHORT_SECRET = cast(Header, hpack.NeverIndexedHeaderTuple(b"authorization", b"short"))


def session_with(
    *,
    window: int | None,
    frame_size: int | None,
    table: int | None,
    primed: list[Header] | None,
    resize: int | None,
    request_ended: bool,
    reset: bool,
    sent: str,
) -> tuple[H2Session, bytes, list[int | None]]:
    """A server session with stream 1 opened by a GET, in the given state: the client's
    SETTINGS (``table``: its HEADER_TABLE_SIZE), stream 3 answered first with ``primed``
    (our encoder's table then holds its fields), the client's table then changed to
    ``resize`` (a size update owed by our next block). Also what it sent since its
    handshake, and the table size each client SETTINGS frame announced, in order."""
    pairs = []
    if window is not None:
        pairs.append((INITIAL_WINDOW_SIZE, window))
    if frame_size is not None:
        pairs.append((MAX_FRAME_SIZE, frame_size))
    if table is not None:
        pairs.append((HEADER_TABLE_SIZE, table))
    client = hpack.Encoder()
    session = w.server()
    session.receive_data(w.settings(*pairs))
    tables = [table]
    session.receive_data(w.headers(1, w.block(w.REQUEST, client), end_stream=request_ended))
    if primed is not None:
        session.receive_data(w.headers(3, w.block(w.REQUEST, client), end_stream=True))
        session.send_headers(3, [(b":status", b"200"), *primed], end_stream=True)
    if resize is not None:
        session.receive_data(w.settings((HEADER_TABLE_SIZE, resize)))
        tables.append(resize)
    if sent == "head":
        session.send_headers(1, [(b":status", b"200")])
    elif sent == "informational":
        session.send_headers(1, [(b":status", b"103")])
    if reset:
        session.receive_data(w.rst_stream(1, 0x8))
    return session, bytes(session.take_outbound()), tables


def decoded_blocks(wire: bytes, tables: list[int | None]) -> list[object]:
    """Each header block in ``wire`` as a client's decoder reads it (its fields, with
    whether each came never-indexed), then that decoder's table; an error, as text. The
    client applies a table size it announced when we ACK it, as h2 does."""
    decoder = hpack.Decoder()
    pending = list(tables)
    blocks: list[object] = []
    block = b""
    for sent in w.parse(wire):
        if sent.kind == w.SETTINGS and sent.flags & w.ACK:
            size = pending.pop(0)
            if size is not None:
                decoder.max_allowed_table_size = size
        elif sent.kind in (w.HEADERS, w.CONTINUATION):
            block += sent.payload
            if sent.flags & w.END_HEADERS:
                try:
                    fields = decoder.decode(block, raw=True)
                except hpack.HPACKError as error:
                    return [*blocks, f"undecodable: {error!r}"]
                blocks.append([(*f, isinstance(f, hpack.NeverIndexedHeaderTuple)) for f in fields])
                block = b""
    table = decoder.header_table
    return [*blocks, (list(table.dynamic_entries), decoder.header_table_size)]


def outcome(
    session: H2Session, setup: bytes, tables: list[int | None], call: object
) -> tuple[object, ...]:
    """What ``call`` returned or raised, sent and left: the streams, the windows, our
    HPACK encoder's state (its table, a size change it has to announce, updates owed) and
    what a client's decoder makes of everything the session sent."""
    assert callable(call)
    try:
        result: object = call()
    except SessionUsageError as error:
        result = (type(error), str(error))
    streams = {
        sid: (s.state, s.send_window, s.final_head_sent) for sid, s in session._streams.items()
    }
    wire = bytes(session.take_outbound())
    codec = session._codec
    table = codec._encoder.header_table
    encoder = (list(table.dynamic_entries), table.maxsize, table.resized, codec._pending_sizes)
    decoded = decoded_blocks(setup + wire, tables)
    return result, wire, streams, session._send_window, encoder, decoded


HEADS = st.sampled_from(
    [
        [(b":status", b"200"), (b"content-length", b"5")],
        [(b":status", b"204")],
        [(b":status", b"103")],  # not a final head: the two calls' error
        [(b"x-no-status", b"1")],
        [(b":status", b"200"), (b"x-big", b"v" * 20000)],  # a block past one frame
        [(b":status", b"200"), *MANY_FIELDS],  # past one frame, the table changed
        [(b":status", b"200"), (b"x-small", b"1"), SECRET],  # past one frame, never indexed
        [(b":status", b"200"), SHORT_SECRET, (b"x-small", b"1")],  # one frame
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    head=HEADS,
    size=st.sampled_from([0, 1, 5, 100, 16384, 16385, 70000]),
    window=st.sampled_from([None, 0, 4, 16384, 1 << 20]),
    frame_size=st.sampled_from([None, 16384, 65536]),
    table=st.sampled_from([None, 0, 65536]),  # Chrome announces 64 KiB
    primed=st.sampled_from([None, MANY_FIELDS[:40], MANY_FIELDS]),
    resize=st.sampled_from([None, 0, 256, 4096, 65536]),
    request_ended=st.booleans(),
    reset=st.booleans(),
    sent=st.sampled_from(["nothing", "head", "informational"]),
)
def test_send_answer_is_send_headers_then_send_data(
    head: list[Header],
    size: int,
    window: int | None,
    frame_size: int | None,
    table: int | None,
    primed: list[Header] | None,
    resize: int | None,
    request_ended: bool,
    reset: bool,
    sent: str,
) -> None:
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    state = {
        "window": window,
        "frame_size": frame_size,
        "table": table,
        "primed": primed,
        "resize": resize,
        "request_ended": request_ended,
        "reset": reset,
        "sent": sent,
    }
    one, setup, tables = session_with(**state)  # type: ignore[arg-type]
    two, _, _ = session_with(**state)  # type: ignore[arg-type]

    def separately() -> int:
        two.send_headers(1, head)
        return two.send_data(1, body, True)

    got = outcome(one, setup, tables, lambda: one.send_answer(1, head, body))
    assert got == outcome(two, setup, tables, separately)
    decoded = got[-1]
    assert isinstance(decoded, list)
    if not isinstance(got[0], tuple):  # the head went: the client reads it as given
        fields = [(*f, isinstance(f, hpack.NeverIndexedHeaderTuple)) for f in head]
        assert decoded[-2] == fields  # (the last: the decoder's table)


USUAL = {
    "window": None,
    "frame_size": None,
    "table": None,
    "primed": None,
    "resize": None,
    "request_ended": True,
    "reset": False,
}


def test_the_usual_answer_is_its_two_frames() -> None:
    session, _, _ = session_with(**USUAL, sent="")  # type: ignore[arg-type]
    assert session.send_answer(1, [(b":status", b"200")], b"hello") == 5
    assert w.summary(session.take_outbound()) == [
        (w.HEADERS, w.END_HEADERS, 1),
        (w.DATA, w.END_STREAM, 1),
    ]
    assert session.stream_state(1) is None  # ended both ways: closed


@pytest.mark.parametrize("closed", [True, False])
def test_a_stream_that_cannot_send_writes_nothing(closed: bool) -> None:
    session, _, _ = session_with(**{**USUAL, "reset": closed}, sent="head")  # type: ignore[arg-type]
    with pytest.raises(SessionUsageError):
        session.send_answer(1, [(b":status", b"200")], b"x")
    assert not session.take_outbound()


# ---- the closed streams' memory, added to in place ----


def test_answered_streams_are_remembered_as_ended_within_the_bound() -> None:
    """``send_answer`` adds a stream it closes to the closed memory itself: as closed by
    END_STREAM (a late DATA on it is then a connection STREAM_CLOSED, as after ``_close``),
    the oldest forgotten first past CLOSED_MEMORY, exactly as ``ClosedStreams.add``."""
    client = hpack.Encoder()
    session = w.server(max_concurrent_streams=CLOSED_MEMORY + 100)
    session.receive_data(w.settings())
    ids = list(range(1, 2 * (CLOSED_MEMORY + 10), 2))
    for stream_id in ids:
        session.receive_data(w.headers(stream_id, w.block(w.REQUEST, client), end_stream=True))
        assert session.send_answer(stream_id, [(b":status", b"200")], b"ok") == 2
    closed = session._closed_streams
    assert len(closed.closed) == CLOSED_MEMORY
    assert list(closed.closed) == ids[-CLOSED_MEMORY:]  # the oldest went first
    assert closed.how(ids[-1]) is ClosedBy.END_STREAM
    assert closed.how(ids[0]) is None
    events = session.receive_data(w.data(ids[-1], b"late"))
    assert [type(event) for event in events] == [ConnectionFailed]
    assert events[0].error_code == ErrorCode.STREAM_CLOSED
