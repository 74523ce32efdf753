"""The session's header codec: a repeated block is answered from the codec's own memory,
and that answer is always what decoding the block would give."""

from __future__ import annotations

import hpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from h2ws_proxy.h2session.errors import ConnectionFault, ErrorCode
from h2ws_proxy.h2session.headers import HeaderCodec
from h2ws_proxy.h2session.library_internals import RepeatedBlockDecoder

POOL: list[tuple[bytes, bytes]] = [
    (b":method", b"GET"),
    (b":path", b"/"),
    (b":authority", b"proxy.test"),
    (b"cookie", b"a=1"),
    (b"cookie", b"b=2"),
    (b"user-agent", b"h2load nghttp2/1.59.0"),
    # Literals that are not indexed (as h2load and curl send ``:path``): the table stays.
    hpack.NeverIndexedHeaderTuple(b":path", b"/get/"),
]
#: A header list (indexes into POOL); a new table size for the client's encoder (announced
#: in its next block); ("limit", n): our HEADER_TABLE_SIZE limit becomes n; or ("again", i):
#: the bytes of an earlier block once more (which may mean something else by now).
STEP = st.one_of(
    st.lists(st.integers(0, len(POOL) - 1), min_size=0, max_size=5),
    st.sampled_from([0, 64, 4096]),
    st.tuples(st.just("limit"), st.sampled_from([0, 64, 4096])),
    st.tuples(st.just("again"), st.integers(0, 30)),
)


def reference(decoder: hpack.Decoder, block: bytes, limit: int) -> object:
    """What the codec must answer: hpack's decoding, cookies joined at the end, the size."""
    try:
        decoder.max_allowed_table_size = limit
        fields = decoder.decode(block, raw=True)
    except hpack.HPACKError:
        return "error"
    headers = [(name, value) for name, value in fields if name != b"cookie"]
    cookies = [value for name, value in fields if name == b"cookie"]
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))
    return headers, sum(len(name) + len(value) + 32 for name, value in fields)


def answer(codec: HeaderCodec, block: bytes) -> object:
    try:
        return codec.decode(block)
    except ConnectionFault:
        return "error"


@given(st.lists(STEP, max_size=30))
# Found by hypothesis: a kept block opening with table size updates, repeated after our
# limit went below them, must fail as hpack fails it (library_internals.py).
@example([64, 0, [], ("limit", 0), ("again", 0)])
@settings(max_examples=300, deadline=None)
def test_a_repeated_block_decodes_as_hpack_decodes_it(
    steps: list[list[int] | int | tuple[str, int]],
) -> None:
    encoder = hpack.Encoder()
    codec = HeaderCodec(max_header_list_size=65536, decoder_table_limit=4096)
    theirs = hpack.Decoder(max_header_list_size=65536 * 4)
    limit = 4096
    sent: list[bytes] = []
    for step in steps:
        if isinstance(step, tuple) and step[0] == "limit":
            limit = step[1]
            codec.set_decoder_table_limit(limit)
            continue
        if isinstance(step, int):
            encoder.header_table_size = step
            continue
        if isinstance(step, tuple):
            if not sent:
                continue
            block = sent[step[1] % len(sent)]
        else:
            block = encoder.encode([POOL[i] for i in step])
            sent.append(block)
        for _ in range(2):  # the second time, the same bytes again
            expected = reference(theirs, block, limit)
            assert answer(codec, block) == expected
            if expected == "error":
                return  # a connection error: the connection ends there


def test_each_answer_is_a_list_of_its_own() -> None:
    codec = HeaderCodec(max_header_list_size=65536, decoder_table_limit=4096)
    block = hpack.Encoder().encode([(b":method", b"GET")])
    first, _size = codec.decode(block)
    first.append((b"x-changed", b"by the caller"))
    assert codec.decode(block) == ([(b":method", b"GET")], len(b":methodGET") + 32)


def test_a_kept_block_fails_once_the_table_is_over_a_lowered_limit() -> None:
    encoder = hpack.Encoder()
    codec = HeaderCodec(max_header_list_size=65536, decoder_table_limit=4096)
    codec.decode(encoder.encode([(b"x-a", b"1")]))  # into the table
    block = encoder.encode([(b"x-a", b"1")])  # indexed: kept
    assert codec.decode(block) == codec.decode(block)
    codec.set_decoder_table_limit(0)  # the peer did not shrink its table
    with pytest.raises(ConnectionFault) as failed:
        codec.decode(block)
    assert failed.value.code is ErrorCode.COMPRESSION_ERROR


def test_a_kept_block_means_something_else_once_another_block_changed_the_table() -> None:
    encoder = hpack.Encoder()
    codec = HeaderCodec(max_header_list_size=65536, decoder_table_limit=4096)
    codec.decode(encoder.encode([(b"x-a", b"1")]))  # into the table: dynamic index 62
    block = encoder.encode([(b"x-a", b"1")])
    assert block == b"\xbe"  # index 62: kept
    assert codec.decode(block)[0] == [(b"x-a", b"1")]
    codec.decode(encoder.encode([(b"x-b", b"2")]))  # now index 62, x-a at 63: not kept
    assert codec.decode(block)[0] == [(b"x-b", b"2")]  # the same bytes, decoded again


def test_a_kept_block_stays_kept_while_our_table_limit_is_told_again_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every SETTINGS we send or see ACKed tells the codec our table limit again: only a
    changed limit drops the kept block (its answer skipped hpack's size check under the
    old one), so an unchanged one keeps a client's repeated request from being decoded."""
    encoder = hpack.Encoder()
    codec = HeaderCodec(max_header_list_size=65536, decoder_table_limit=4096)
    codec.decode(encoder.encode([(b"x-a", b"1")]))  # into the table
    block = encoder.encode([(b"x-a", b"1")])  # indexed: kept
    expected = codec.decode(block)
    decoded: list[bytes] = []
    original = RepeatedBlockDecoder.decode

    def noted(
        decoder: RepeatedBlockDecoder, data: bytes, raw: bool = False
    ) -> list[hpack.HeaderTuple]:
        decoded.append(data)
        return original(decoder, data, raw)

    monkeypatch.setattr(RepeatedBlockDecoder, "decode", noted)
    codec.set_decoder_table_limit(4096)
    assert codec.decode(block) == expected
    assert decoded == []
    codec.set_decoder_table_limit(8192)
    assert codec.decode(block) == expected
    assert decoded == [block]
