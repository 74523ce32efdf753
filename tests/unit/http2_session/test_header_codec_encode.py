"""The session's header codec, encoding: a list sent again while its last block holds is
answered from the codec's own memory (no call to the encoder), and every block, answered so
or not, decodes to its list at the peer, across table size changes."""

from __future__ import annotations

import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h2ws_proxy.h2session.headers import HeaderCodec
from tests.unit.http2_session import wire as w

Header = tuple[bytes, bytes]
HEADER_TABLE_SIZE = 0x1

POOL: list[Header] = [
    (b":status", b"200"),
    (b":status", b"404"),
    (b"content-type", b"text/plain"),
    (b"date", b"Tue, 08 Dec 2026 04:30:00 GMT"),
    (b"date", b"Tue, 08 Dec 2026 04:30:01 GMT"),
    (b"content-length", b"12"),
    (b"x-served-by", b"backend-1"),
]
#: A header list (indexes into POOL), or the peer's new SETTINGS_HEADER_TABLE_SIZE.
STEP = st.one_of(
    st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=5),
    st.sampled_from([0, 64, 4096]),
)


def head() -> list[Header]:
    return [POOL[0], POOL[2], POOL[3], POOL[5]]


class CountedCodec:
    """A codec whose encoder's calls are counted."""

    def __init__(self) -> None:
        self.codec = HeaderCodec(65536, 4096)
        self.encoder_calls = 0
        encoder = self.codec._encoder
        encode = encoder.encode

        def counted(headers: list[Header], huffman: bool = True) -> bytes:
            self.encoder_calls += 1
            return encode(headers, huffman)

        encoder.encode = counted  # type: ignore[method-assign]


def test_a_repeated_list_takes_its_block_without_the_encoder() -> None:
    counted = CountedCodec()
    first = counted.codec.encode(head())  # literals, added to the table
    second = counted.codec.encode(head())  # now indexed fields only: kept
    assert counted.encoder_calls == 2
    assert first != second
    assert min(second) >= 0x80
    for _ in range(3):
        assert counted.codec.encode(head()) == second
    assert counted.encoder_calls == 2


@pytest.mark.parametrize("size", [0, 64, 256])
def test_a_table_size_owed_goes_first_and_is_not_answered_from_memory(size: int) -> None:
    codec = HeaderCodec(65536, 4096)
    decoder = hpack.Decoder()
    for _ in range(2):
        assert decoder.decode(codec.encode(head()), raw=True) == head()
    codec.peer_table_size(size)
    block = codec.encode(head())
    assert block[0] & 0xE0 == 0x20  # a dynamic table size update opens it
    assert decoder.decode(block, raw=True) == head()
    assert decoder.header_table.maxsize == size


def test_a_list_changed_in_place_is_not_answered_with_its_old_block() -> None:
    codec = HeaderCodec(65536, 4096)
    decoder = hpack.Decoder()
    fields = head()
    for _ in range(2):
        assert decoder.decode(codec.encode(fields), raw=True) == head()
    fields[2] = POOL[4]  # another date, in the same list object
    assert decoder.decode(codec.encode(fields), raw=True) == fields


@settings(max_examples=200, deadline=None)
@given(st.lists(STEP, min_size=1, max_size=30))
def test_every_block_decodes_to_its_list(steps: list[list[int] | int]) -> None:
    codec = HeaderCodec(65536, 4096)
    decoder = hpack.Decoder()
    for step in steps:
        if isinstance(step, int):
            codec.peer_table_size(step)
            continue
        fields = [POOL[i] for i in step]
        assert decoder.decode(codec.encode(fields), raw=True) == fields


def test_send_answer_takes_a_repeated_head_without_the_codecs_call() -> None:
    """``H2Session.send_answer`` reads ``repeat_block`` itself; the client decodes every
    answer's head as sent, also after its table size changed between two answers."""
    client, decoder = hpack.Encoder(), hpack.Decoder()
    session = w.server()
    codec = session._codec
    calls = []
    encode = codec.encode

    def counted(headers: list[Header]) -> bytes:
        calls.append(len(headers))
        return encode(headers)

    codec.encode = counted  # type: ignore[method-assign]
    for stream_id in (1, 3, 5, 7):
        if stream_id == 7:
            session.receive_data(w.settings((HEADER_TABLE_SIZE, 256)))
        session.receive_data(w.headers(stream_id, w.block(w.REQUEST, client), end_stream=True))
        assert session.send_answer(stream_id, head(), b"hello world!") == 12
        blocks = [sent for sent in w.parse(session.take_outbound()) if sent.kind == w.HEADERS]
        assert decoder.decode(blocks[-1].payload, raw=True) == head()
    assert len(calls) == 3  # stream 1 (literals), 3 (indexed: kept), 7 (a size owed)


def test_send_answer_sends_a_new_head_after_a_repeated_one() -> None:
    """A head other than the repeated one is encoded for itself: ``send_answer`` compares
    the list with ``repeat_fields`` before it takes ``repeat_block``."""
    client, decoder = hpack.Encoder(), hpack.Decoder()
    session = w.server()
    other = [POOL[1], POOL[2], POOL[6]]
    for stream_id, fields in ((1, head()), (3, head()), (5, other), (7, head())):
        session.receive_data(w.headers(stream_id, w.block(w.REQUEST, client), end_stream=True))
        assert session.send_answer(stream_id, fields, b"hello world!") == 12
        blocks = [sent for sent in w.parse(session.take_outbound()) if sent.kind == w.HEADERS]
        assert decoder.decode(blocks[-1].payload, raw=True) == fields
