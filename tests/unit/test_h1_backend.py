"""H1BackendWire reads plain answers itself and must give exactly what h11 gives.

Each answer is fed in pieces, split at every point, both to the wire and to a bare h11 client
connection (the reference); the events, the error (if any) and reusability must match.
"""

from __future__ import annotations

from typing import Protocol

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h2ws_proxy.backend.h1_wire import (
    AnswerEnd,
    BackendClosed,
    BodyData,
    Event,
    H1BackendWire,
    Need,
    _from_h11,
)
from h2ws_proxy.http.message import BackendRequest, BodyFraming

MAX_HEAD = 200
GET = BackendRequest(b"GET", b"/x", [(b"host", b"example"), (b"accept", b"*/*")], BodyFraming.NONE)
HEAD = BackendRequest(b"HEAD", b"/x", [(b"host", b"example")], BodyFraming.NONE)

ANSWERS = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloEXTRA",
    b"HTTP/1.1 200\r\ncontent-length: 0\r\n\r\n",
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nConnection: keep-alive, Close\r\n\r\nno!",
    b"HTTP/1.1 204 No Content\r\nX-A:  spaced  value \t\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 12\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\nbody-on-a-204",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabcd",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nContent-Length: 123456789012345678901\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1 \r\nhello\r\n000A\r\n0123456789"
    b"\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nConnection: close\r\n\r\n0\r\nX: 1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nEXTRA",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nZ\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3 ;x\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n123456789012345678901\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nX: a\r\n b\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nX: 1\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nBad Name: 1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;" + b"x" * 300 + b"\r\nhello\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\nclose-delimited",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
    b"HTTP/1.1 200 OK\nContent-Length: 2\n\nhi",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nX-Ctl: a\x01b\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nX-Nul: a\x00b\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nX-Cr: a\rb\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nX-Obs: caf\xc3\xa9\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\x7f\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1  200 OK\r\nContent-Length: 2\r\n\r\nhi",
    b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
    b" HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 300 + b"\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    b"HTTP/1.1 200 OK\r\nNoColon\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nX-Vt: a\x0bb\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 O\x0cK\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: closed\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: x, CLOSE \r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nContent-Length:  2 \r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\n: empty-name\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Tabs:\t\ta\tb\t\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 200\r\nContent-Length: 13\r\n\r\n\r\nX-In-Body: 1",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"garbage",
    b"",
]


def _chunks(answer: bytes, split: int) -> list[bytes]:
    return [piece for piece in (answer[:split], answer[split:]) if piece]


def _cut(answer: bytes, splits: list[int]) -> list[bytes]:
    """``answer`` cut at each of ``splits`` (past its end: at its end), no empty piece."""
    cuts = sorted({min(split, len(answer)) for split in splits})
    chunks = [answer[a:b] for a, b in zip([0, *cuts], [*cuts, len(answer)], strict=True)]
    return [chunk for chunk in chunks if chunk]


class Reader(Protocol):
    @property
    def awaiting_head(self) -> bool: ...

    def receive_data(self, data: bytes) -> None: ...

    def next_event(self) -> Event | Need: ...


def _drive(reader: Reader, chunks: list[bytes]) -> list[object]:
    """Feed ``chunks`` then EOF as the exchange does; the events, or where it stopped."""
    seen: list[object] = []
    pending = list(chunks)
    for _ in range(100):
        try:
            event = reader.next_event()
        except h11.RemoteProtocolError as error:
            seen.append(("error", str(error)))
            return seen
        if event is Need.DATA:
            data = pending.pop(0) if pending else b""
            if not data and reader.awaiting_head:
                seen.append("closed without answering")
                return seen
            reader.receive_data(data)
            continue
        seen.append(event)
        if event is Need.SWITCHED or isinstance(event, AnswerEnd | BackendClosed):
            return seen
    raise AssertionError("no end")


class BareH11:
    """The reference: h11 on its own, with the wire's interface."""

    def __init__(self, request: BackendRequest) -> None:
        self.conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self.conn.send(request.h11_event())
        self.conn.send(h11.EndOfMessage())

    @property
    def awaiting_head(self) -> bool:
        return self.conn.their_state is h11.SEND_RESPONSE

    def receive_data(self, data: bytes) -> None:
        self.conn.receive_data(data)

    def next_event(self) -> Event | Need:
        # The same mapping of h11's events the wire uses for what it leaves to h11.
        return _from_h11(self.conn.next_event())


def _reference(request: BackendRequest, chunks: list[bytes]) -> tuple[list[object], bool]:
    bare = BareH11(request)
    seen = _drive(bare, chunks)
    conn = bare.conn
    leftover, closed = conn.trailing_data
    reusable = (
        conn.our_state is h11.DONE and conn.their_state is h11.DONE and not leftover and not closed
    )
    return seen, reusable


@pytest.mark.parametrize("request_", [GET, HEAD], ids=["GET", "HEAD"])
@pytest.mark.parametrize("answer", ANSWERS)
def test_the_wire_reads_every_answer_as_h11_does(request_: BackendRequest, answer: bytes) -> None:
    for split in range(len(answer) + 1):
        chunks = _chunks(answer, split)
        wire = H1BackendWire(request_, max_head_bytes=MAX_HEAD)
        seen = _drive(wire, chunks)
        reusable = wire.reusable() if seen and isinstance(seen[-1], AnswerEnd) else False
        expected, expected_reusable = _reference(request_, chunks)
        expected_reusable = expected_reusable if isinstance(expected[-1], AnswerEnd) else False
        assert (_coalesced(seen), reusable) == (_coalesced(expected), expected_reusable), split


def _coalesced(events: list[object]) -> list[object]:
    """Body data joined: how the bytes are cut is not part of the answer."""
    out: list[object] = []
    for event in events:
        if isinstance(event, BodyData) and out and isinstance(out[-1], BodyData):
            out[-1] = BodyData(out[-1].data + event.data)
        else:
            out.append(event)
    return out


def test_a_bodiless_request_is_written_as_h11_writes_it() -> None:
    request = BackendRequest(
        b"GET",
        b"/a?b=c",
        [(b"host", b"example:8080"), (b"x-forwarded-for", b"10.0.0.1"), (b"accept", b"*/*")],
        BodyFraming.NONE,
    )
    conn = h11.Connection(h11.CLIENT)
    expected = (conn.send(request.h11_event()) or b"") + (conn.send(h11.EndOfMessage()) or b"")
    wire = H1BackendWire(request, max_head_bytes=MAX_HEAD)
    assert wire.request_head() + wire.end_request([]) == expected


def test_a_request_with_a_body_goes_through_h11() -> None:
    request = BackendRequest(
        b"POST", b"/", [(b"host", b"h"), (b"content-length", b"3")], BodyFraming.LENGTH
    )
    wire = H1BackendWire(request, max_head_bytes=MAX_HEAD)
    assert wire.request_head() == b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 3\r\n\r\n"
    assert wire.send_body(b"abc") == b"abc"
    with pytest.raises(h11.LocalProtocolError):
        wire.send_body(b"d")


_FIELD_NAMES = [
    b"Content-Length",
    b"content-length",
    b"Connection",
    b"X-A",
    b"Bad Name",
    b"",
    b"Transfer-Encoding",
]
_VALUE_BYTES = b"ab09 \t\x00\x0b\x0c\r\n\x7f\x80,:"


@settings(max_examples=300)
@given(
    status_line=st.sampled_from(
        [b"HTTP/1.1 200 OK", b"HTTP/1.1 204", b"HTTP/1.1 200 \tO\x80K", b"HTTP/1.0 200 OK"]
    ),
    fields=st.lists(
        st.tuples(
            st.sampled_from(_FIELD_NAMES),
            st.one_of(
                st.sampled_from([b"2", b" 2 ", b"close", b"x,Close", b"", b"chunked"]),
                st.lists(st.sampled_from(list(_VALUE_BYTES)), max_size=6).map(bytes),
            ),
        ),
        max_size=4,
    ),
    request_=st.sampled_from([GET, HEAD]),
)
def test_random_heads_are_read_as_h11_reads_them(
    status_line: bytes, fields: list[tuple[bytes, bytes]], request_: BackendRequest
) -> None:
    head = status_line + b"\r\n" + b"".join(b"%s:%s\r\n" % field for field in fields)
    chunks = [head + b"\r\nhi"]
    wire = H1BackendWire(request_, max_head_bytes=MAX_HEAD)
    seen = _drive(wire, chunks)
    reusable = wire.reusable() if seen and isinstance(seen[-1], AnswerEnd) else False
    expected, expected_reusable = _reference(request_, chunks)
    expected_reusable = expected_reusable if isinstance(expected[-1], AnswerEnd) else False
    assert (_coalesced(seen), reusable) == (_coalesced(expected), expected_reusable)


_CHUNKED_PIECES = [
    b"3\r\n",
    b"abc",
    b"\r\n",
    b"0\r\n",
    b"X: 1\r\n",
    b"\n",
    b"5;e\r\n",
    b"hello",
    b"Z",
    b"\r",
    b" ",
]


@settings(max_examples=300)
@given(
    pieces=st.lists(st.sampled_from(_CHUNKED_PIECES), max_size=8),
    splits=st.lists(st.integers(min_value=0, max_value=80), max_size=2),
    close=st.booleans(),
)
def test_random_chunked_bodies_are_read_as_h11_reads_them(
    pieces: list[bytes], splits: list[int], close: bool
) -> None:
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n"
    answer = head + (b"connection: close\r\n" if close else b"") + b"\r\n" + b"".join(pieces)
    chunks = _cut(answer, splits)
    wire = H1BackendWire(GET, max_head_bytes=MAX_HEAD)
    seen = _drive(wire, chunks)
    reusable = wire.reusable() if seen and isinstance(seen[-1], AnswerEnd) else False
    expected, expected_reusable = _reference(GET, chunks)
    expected_reusable = expected_reusable if isinstance(expected[-1], AnswerEnd) else False
    assert (_coalesced(seen), reusable) == (_coalesced(expected), expected_reusable)
