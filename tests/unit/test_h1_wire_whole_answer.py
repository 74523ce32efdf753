"""H1BackendWire.whole_answer, the one-call read of an answer that came whole, must give what
next_event gives (and so what h11 gives: tests/unit/test_h1_backend.py), and leave the wire
exactly where next_event would."""

from __future__ import annotations

import h11
import pytest

from h2ws_proxy.backend.h1_wire import (
    AnswerEnd,
    BackendClosed,
    BodyData,
    H1BackendWire,
    Need,
    ResponseHead,
)
from h2ws_proxy.http.message import BackendRequest
from tests.unit.test_h1_backend import ANSWERS, GET, HEAD, MAX_HEAD, _chunks, _coalesced, _drive


def _drive_whole_first(
    wire: H1BackendWire, chunks: list[bytes], fused: bool = False
) -> tuple[list[object], int]:
    """As ``_drive``, but each time bytes arrive, ``whole_answer`` (and ``take_plain_end``)
    first, as the lean path reads; how many answers it took whole, too. ``fused``: bytes
    arrive by ``receive_whole`` (``receive_data`` and ``whole_answer`` in one call), and
    the end is taken by ``end_whole``, as the lean path does."""
    seen: list[object] = []
    pending = list(chunks)
    taken = 0
    whole: tuple[ResponseHead, bytes] | None = None
    for _ in range(100):
        if not fused:
            whole = wire.whole_answer()
        if whole is not None:
            taken += 1
            head, body = whole
            seen.append(head)
            if body:
                seen.append(BodyData(body))
            assert wire.body_ends_here()
            assert wire.whole_answer() is None  # taken once
            if fused:
                assert wire.end_whole() is wire.reusable()
            else:
                assert wire.take_plain_end()
            seen.append(AnswerEnd([]))
            return seen, taken
        try:
            event = wire.next_event()
        except h11.RemoteProtocolError as error:
            seen.append(("error", str(error)))
            return seen, taken
        if event is Need.DATA:
            data = pending.pop(0) if pending else b""
            if not data and wire.awaiting_head:
                seen.append("closed without answering")
                return seen, taken
            if fused and data:
                whole = wire.receive_whole(data)
            else:
                wire.receive_data(data)
            continue
        seen.append(event)
        if event is Need.SWITCHED or isinstance(event, AnswerEnd | BackendClosed):
            return seen, taken
    raise AssertionError("no end")


@pytest.mark.parametrize("fused", [False, True], ids=["whole_answer", "receive_whole"])
@pytest.mark.parametrize("request_", [GET, HEAD], ids=["GET", "HEAD"])
@pytest.mark.parametrize("answer", ANSWERS)
def test_an_answer_read_whole_is_the_answer_next_event_reads(
    request_: BackendRequest, answer: bytes, fused: bool
) -> None:
    for split in range(len(answer) + 1):
        chunks = _chunks(answer, split)
        wire = H1BackendWire(request_, max_head_bytes=MAX_HEAD)
        seen, _taken = _drive_whole_first(wire, chunks, fused)
        reusable = wire.reusable() if isinstance(seen[-1], AnswerEnd) else False
        reference = H1BackendWire(request_, max_head_bytes=MAX_HEAD)
        expected = _drive(reference, chunks)
        expected_reusable = reference.reusable() if isinstance(expected[-1], AnswerEnd) else False
        assert (_coalesced(seen), reusable) == (_coalesced(expected), expected_reusable), split


def test_the_common_answers_are_read_whole() -> None:
    """The fast path is taken where it should be: else the test above proves nothing."""
    cases = [
        (GET, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", True),
        (GET, b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloEXTRA", True),
        (GET, b"HTTP/1.1 204 No Content\r\n\r\n", True),
        (HEAD, b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", True),
        (GET, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", False),
        (GET, b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n", False),
        (GET, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", False),
    ]
    for request_, answer, whole in cases:
        wire = H1BackendWire(request_, max_head_bytes=MAX_HEAD)
        wire.receive_data(answer)
        assert (wire.whole_answer() is not None) is whole, answer
        wire = H1BackendWire(request_, max_head_bytes=MAX_HEAD)
        assert (wire.receive_whole(answer) is not None) is whole, answer
    wire = H1BackendWire(GET, max_head_bytes=MAX_HEAD)
    wire.receive_data(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloEXTRA")
    assert wire.whole_answer() is not None
    assert wire.take_plain_end()
    assert not wire.reusable()  # a byte beyond the answer: never kept


def test_the_plain_end_is_taken_only_where_the_body_ended() -> None:
    wire = H1BackendWire(GET, max_head_bytes=MAX_HEAD)
    assert not wire.take_plain_end()  # nothing read yet
    wire.receive_data(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhel")
    assert wire.whole_answer() is None
    assert not wire.take_plain_end()  # the body is not in
    assert isinstance(wire.next_event(), ResponseHead)
    assert wire.next_event() == BodyData(b"hel")
    assert not wire.take_plain_end()
    wire.receive_data(b"lo")
    assert wire.next_event() == BodyData(b"lo")
    assert wire.take_plain_end()
    assert wire.reusable()
