"""The lean path reads an answer as ``PolledRequest.on_readable`` does: each read goes to
H1BackendWire.receive_whole, which hands out an answer that came whole in one call (with
whether the connection is reusable after it); anything else is read with next_event. Read
that way, every answer must give what h11 gives (the reference of
tests/unit/test_h1_backend.py): the same events, the same error, and the connection reusable
exactly when h11 would reuse it, however the bytes are cut."""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h2ws_proxy.backend.h1_wire import (
    AnswerEnd,
    BackendClosed,
    BodyData,
    H1BackendWire,
    Need,
    ResponseHead,
)
from h2ws_proxy.backend.h1_wire_head import whole_answer
from h2ws_proxy.http.message import BackendRequest
from tests.unit.test_h1_backend import (
    ANSWERS,
    GET,
    HEAD,
    MAX_HEAD,
    _chunks,
    _coalesced,
    _cut,
    _reference,
)

#: More answers a kept connection meets: a second answer or stray bytes in the same read,
#: ``connection: close``, a bodiless status with a length, a body longer than the head
#: limit, a 1xx before the final head.
MORE_ANSWERS = [
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
    b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
    b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-length: 3000\r\n\r\n" + b"z" * 3000,
    b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
]


def _drive_lean(
    wire: H1BackendWire, chunks: list[bytes], *, unwired: bool = False
) -> tuple[list[object], bool, int]:
    """Feed ``chunks`` then EOF as the lean path does: the events (or where it stopped),
    whether the connection is kept (only after an answer's end), and how many answers were
    taken whole (0 or 1). ``unwired``: ``wire`` is new and the first read goes as
    ``PolledRequest.on_readable`` takes an answer's first bytes, by ``whole_answer``
    without a wire (one made then, for the rest of a whole answer, reads the same bytes
    alike); not whole, the wire takes them with ``receive_data``."""
    seen: list[object] = []
    for index, data in enumerate([*chunks, b""]):
        whole: tuple[ResponseHead, bytes, bool] | None = None
        if data and unwired and index == 0:
            whole = whole_answer(data, is_head=wire._is_head)
            if whole is None:
                wire.receive_data(data)
            else:
                assert wire.receive_whole(data) == whole  # (``_wire_after_whole``)
        elif data:
            whole = wire.receive_whole(data)
        elif wire.awaiting_head:
            seen.append("closed without answering")
            return seen, False, 0
        else:
            wire.receive_data(b"")
        if whole is not None:
            head, body, keep = whole
            seen.append(head)
            if body:
                seen.append(BodyData(body))
            assert wire.body_ends_here()  # where next_event leaves a body's last bytes
            assert wire.next_event() == AnswerEnd([])
            assert keep is wire.reusable()
            seen.append(AnswerEnd([]))
            return seen, keep, 1
        while True:
            try:
                event = wire.next_event()
            except h11.RemoteProtocolError as error:
                seen.append(("error", str(error)))
                return seen, False, 0
            if event is Need.DATA:
                break
            seen.append(event)
            if isinstance(event, AnswerEnd):
                return seen, wire.reusable(), 0
            if event is Need.SWITCHED or isinstance(event, BackendClosed):
                return seen, False, 0
    raise AssertionError("no end")


def _assert_read_as_h11_reads(request_: BackendRequest, chunks: list[bytes]) -> None:
    expected, expected_keep = _reference(request_, chunks)
    expected_keep = expected_keep if isinstance(expected[-1], AnswerEnd) else False
    for unwired in (False, True):
        wire = H1BackendWire(request_, max_head_bytes=MAX_HEAD)
        seen, keep, _taken = _drive_lean(wire, chunks, unwired=unwired)
        assert (_coalesced(seen), keep) == (_coalesced(expected), expected_keep), unwired


@pytest.mark.parametrize("request_", [GET, HEAD], ids=["GET", "HEAD"])
@pytest.mark.parametrize("answer", ANSWERS + MORE_ANSWERS)
def test_an_answer_cut_once_is_read_as_h11_reads_it(
    request_: BackendRequest, answer: bytes
) -> None:
    for split in range(len(answer) + 1):
        _assert_read_as_h11_reads(request_, _chunks(answer, split))


@settings(max_examples=600, deadline=None)
@given(
    answer=st.sampled_from(ANSWERS + MORE_ANSWERS),
    request_=st.sampled_from([GET, HEAD]),
    splits=st.lists(st.integers(min_value=0, max_value=3100), max_size=4),
)
def test_an_answer_cut_anywhere_is_read_as_h11_reads_it(
    answer: bytes, request_: BackendRequest, splits: list[int]
) -> None:
    _assert_read_as_h11_reads(request_, _cut(answer, splits))


def test_the_common_answers_are_read_whole() -> None:
    """The fast path is taken where it should be: else the tests above prove nothing."""
    cases = [
        (GET, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", True),
        (GET, b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloEXTRA", True),
        (GET, b"HTTP/1.1 204 No Content\r\n\r\n", True),
        (HEAD, b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", True),
        (GET, MORE_ANSWERS[0], True),
        (GET, MORE_ANSWERS[4], True),
        (GET, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", False),
        (GET, b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n", False),
        (GET, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", False),
    ]
    for request_, answer, whole in cases:
        wire = H1BackendWire(request_, max_head_bytes=MAX_HEAD)
        assert (wire.receive_whole(answer) is not None) is whole, answer
    wire = H1BackendWire(GET, max_head_bytes=MAX_HEAD)
    whole = wire.receive_whole(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloEXTRA")
    assert whole is not None
    assert not whole[2]  # a byte beyond the answer: never kept
    wire = H1BackendWire(GET, max_head_bytes=MAX_HEAD)
    assert wire.receive_whole(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n") is None
    whole = wire.receive_whole(b"\r\nabc")  # the head's bytes held back, joined
    assert whole is not None
    assert whole[2]


def test_the_body_ends_only_where_its_last_byte_was_handed_out() -> None:
    """``body_ends_here`` (the relay's END_STREAM with the last bytes) holds only once the
    whole length went out, not while a body arrives in pieces."""
    wire = H1BackendWire(GET, max_head_bytes=MAX_HEAD)
    assert not wire.body_ends_here()  # nothing read yet
    assert wire.receive_whole(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhel") is None
    assert not wire.body_ends_here()  # the body is not in
    assert isinstance(wire.next_event(), ResponseHead)
    assert wire.next_event() == BodyData(b"hel")
    assert not wire.body_ends_here()
    assert wire.receive_whole(b"lo") is None  # past the head: never whole
    assert wire.next_event() == BodyData(b"lo")
    assert wire.body_ends_here()
    assert wire.next_event() == AnswerEnd([])
    assert wire.reusable()


# ---- the last plain head (``LAST_PLAIN_HEADS``): a repeated head skips its parse ----

#: Answers whose heads share a beginning with others', or are others' with more after them.
_LOOKALIKES = [
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
    b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-more: 1\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\nhello",
    b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\nstray",
]


def _prime(request_: BackendRequest, answer: bytes) -> None:
    """Read ``answer`` whole on a wire of its own: its head becomes the last plain head."""
    H1BackendWire(request_, max_head_bytes=MAX_HEAD).receive_whole(answer)


@pytest.mark.parametrize("request_", [GET, HEAD], ids=["GET", "HEAD"])
@pytest.mark.parametrize("first", _LOOKALIKES + ANSWERS + MORE_ANSWERS)
def test_an_answer_after_another_head_is_read_as_h11_reads_it(
    request_: BackendRequest, first: bytes
) -> None:
    """Whatever head was read last (by a GET or a HEAD), every answer, cut anywhere, is
    still read as h11 reads it: a head equal to the last one only where it really is."""
    for second in _LOOKALIKES:
        for primer in (GET, HEAD):
            for split in range(len(second) + 1):
                _prime(primer, first)
                _assert_read_as_h11_reads(request_, _chunks(second, split))


def test_a_repeated_head_is_taken_from_the_last_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path is taken where it should be: the same head again is not parsed again
    (else the test above proves nothing), with its own body and what follows it."""
    from h2ws_proxy.backend import h1_wire

    answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
    _prime(GET, answer)

    def no_parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed again")

    monkeypatch.setattr(h1_wire, "parse_plain_head", no_parse)
    monkeypatch.setattr(h1_wire, "HEAD_END", None)  # not even its end looked for
    wire = H1BackendWire(GET, max_head_bytes=MAX_HEAD)
    whole = wire.receive_whole(answer + b"EXTRA")
    assert whole is not None
    assert whole[:3] == (whole[0], b"hello", False)  # the stray bytes after it: never kept
    assert whole[0].status == 200
    wire = H1BackendWire(GET, max_head_bytes=MAX_HEAD)
    assert wire.receive_whole(answer) == (whole[0], b"hello", True)


def test_a_head_request_does_not_take_a_get_answers_head() -> None:
    """The same head bytes answer a HEAD without a body: a GET's last head (whose body
    length is 5) must not be taken for it."""
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"
    _prime(GET, head + b"hello")
    wire = H1BackendWire(HEAD, max_head_bytes=MAX_HEAD)
    whole = wire.receive_whole(head)
    assert whole is not None
    assert whole[1:] == (b"", True)
    _prime(HEAD, head)
    wire = H1BackendWire(GET, max_head_bytes=MAX_HEAD)
    assert wire.receive_whole(head) is None  # the body is still to come


@pytest.mark.parametrize("request_", [GET, HEAD], ids=["GET", "HEAD"])
@pytest.mark.parametrize("answer", ANSWERS + MORE_ANSWERS)
def test_a_first_read_is_taken_whole_as_a_new_wire_takes_it(
    request_: BackendRequest, answer: bytes
) -> None:
    """``whole_answer`` (the lean path's first read, no wire made) gives what a new wire's
    ``receive_whole`` gives for every first read of every answer: the same head object,
    body and reuse, or None."""
    for end in range(1, len(answer) + 1):
        first = answer[:end]
        wire = H1BackendWire(request_, max_head_bytes=MAX_HEAD)
        by_wire = wire.receive_whole(first)
        unwired = whole_answer(first, is_head=request_.method == b"HEAD")
        assert unwired == by_wire, first
        if unwired is not None and by_wire is not None:
            assert unwired[0] is by_wire[0]  # the remembered head object (answer_heads.py)
    assert whole_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", is_head=False)
