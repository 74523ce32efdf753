"""The wire's memory of the last plain head (LAST_PLAIN_HEADS): sequences of answers read one
after another (the module global carries the last head from one wire to the next, across GET
and HEAD), their heads drawn from lines that are prefixes of one another (a head equal to
the last one's bytes, the last one's with a field more or less, a value extended, a bare LF,
an obs-fold, a ``connection: close``, a chunked one, 204/304, a 1xx first), each followed by
a body that may be short, exact or longer (stray bytes, a second answer), cut anywhere:
every answer is read as h11 reads it (events, error, and whether the connection is reused)."""

from __future__ import annotations

import h11
from hypothesis import given, settings
from hypothesis import strategies as st

from h2ws_proxy.backend.h1_wire import AnswerEnd, BackendClosed, BodyData, H1BackendWire, Need
from h2ws_proxy.http.message import BackendRequest
from tests.unit.test_h1_backend import GET, HEAD, MAX_HEAD, _coalesced, _cut, _reference

STATUS_LINES = [
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.1 204 No Content\r\n",
    b"HTTP/1.1 304 Not Modified\r\n",
    b"HTTP/1.1 404 Not Found\r\n",
    b"HTTP/1.0 200 OK\r\n",
]
FIELDS = [
    b"content-length: 5\r\n",
    b"content-length: 5\r\n",
    b"content-length: 50\r\n",
    b"content-length: 0\r\n",
    b"Content-Length: 5\r\n",
    b"connection: close\r\n",
    b"connection: keep-alive\r\n",
    b"transfer-encoding: chunked\r\n",
    b"x-a: 1\r\n",
    b"x-a: 12\r\n",
    b"x-a: 1\n",  # a bare LF
    b" folded\r\n",  # obs-fold
    b"date: Mon, 07 Dec 2026 17:00:00 GMT\r\n",
]
TAILS = [
    b"",
    b"hello",
    b"hel",
    b"helloSTRAY",
    b"hello" + b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
    b"5\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhello\r\n0\r\n\r\nX",
    b"\r\nhello",
]

head = st.builds(
    lambda status, fields, informational: (
        (b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" if informational else b"")
        + status
        + b"".join(fields)
        + b"\r\n"
    ),
    st.sampled_from(STATUS_LINES),
    st.lists(st.sampled_from(FIELDS), max_size=4),
    st.booleans(),
)
answer = st.tuples(
    st.sampled_from([GET, HEAD]),
    head,
    st.sampled_from(TAILS),
    st.lists(st.integers(min_value=0, max_value=120), max_size=3),
)


def _drive_lean(wire: H1BackendWire, chunks: list[bytes]) -> tuple[list[object], bool]:
    seen: list[object] = []
    for data in [*chunks, b""]:
        whole = None
        if data:
            whole = wire.receive_whole(data)
        elif wire.awaiting_head:
            seen.append("closed without answering")
            return seen, False
        else:
            wire.receive_data(b"")
        if whole is not None:
            event, body = whole[0], whole[1]
            seen.append(event)
            if body:
                seen.append(BodyData(body))
            assert wire.body_ends_here()
            keep = whole[2]  # the reuse comes with the answer
            assert wire.next_event() == AnswerEnd([])
            assert keep is wire.reusable()
            seen.append(AnswerEnd([]))
            return seen, keep
        while True:
            try:
                event = wire.next_event()
            except h11.RemoteProtocolError as error:
                seen.append(("error", str(error)))
                return seen, False
            if event is Need.DATA:
                break
            seen.append(event)
            if isinstance(event, AnswerEnd):
                return seen, wire.reusable()
            if event is Need.SWITCHED or isinstance(event, BackendClosed):
                return seen, False
    raise AssertionError("no end")


def _check(request_: BackendRequest, chunks: list[bytes]) -> None:
    wire = H1BackendWire(request_, max_head_bytes=MAX_HEAD)
    seen, keep = _drive_lean(wire, chunks)
    expected, expected_keep = _reference(request_, chunks)
    expected_keep = expected_keep if isinstance(expected[-1], AnswerEnd) else False
    assert (_coalesced(seen), keep) == (_coalesced(expected), expected_keep), chunks


@settings(max_examples=1000, deadline=None)
@given(st.lists(answer, min_size=1, max_size=6))
def test_answers_in_sequence_are_read_as_h11_reads_them(
    answers: list[tuple[BackendRequest, bytes, bytes, list[int]]],
) -> None:
    for request_, head_bytes, tail, splits in answers:
        _check(request_, _cut(head_bytes + tail, splits))


def test_each_head_after_each_head_uncut() -> None:
    """Every pair of heads from a smaller set, each with every tail, one after the other
    on the same (module-global) state, for GET and HEAD, uncut: the fast path's cases."""
    heads = [
        s + b"".join(f) + b"\r\n"
        for s in STATUS_LINES[:4]
        for f in ([], [FIELDS[0]], [FIELDS[0], FIELDS[5]], [FIELDS[0], FIELDS[8]], [FIELDS[2]])
    ]
    for first in heads:
        for second in heads:
            for tail in TAILS:
                for r1 in (GET, HEAD):
                    for r2 in (GET, HEAD):
                        _check(r1, [first + b"hello"])
                        _check(r2, [second + tail])
