"""The fence around hpack's internals: checked at import, one clear line when one is gone."""

from __future__ import annotations

import hpack
import pytest
from hpack.table import HeaderTable
from hypothesis import example, given, settings
from hypothesis import strategies as st

from h2ws_proxy.h2session import library_internals
from h2ws_proxy.h2session.library_internals import RepeatedBlockDecoder, RepeatedBlockEncoder


def test_the_installed_hpack_has_every_internal_the_proxy_uses() -> None:
    assert library_internals.problems() == []
    library_internals.require()


def test_a_missing_table_attribute_stops_the_proxy_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original_init = HeaderTable.__init__

    def init_without_entries(table: HeaderTable) -> None:
        original_init(table)
        del table.dynamic_entries

    monkeypatch.setattr(HeaderTable, "__init__", init_without_entries)
    with pytest.raises(SystemExit) as stopped:
        library_internals.require()
    message = str(stopped.value)
    assert "\n" not in message
    assert "hpack.table.HeaderTable().dynamic_entries" in message
    assert f"tested with hpack {library_internals.TESTED_HPACK}.x" in message
    assert "hpack 4." in message  # the installed version, named


def test_a_missing_setter_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        hpack.Encoder, "header_table_size", property(lambda encoder: 4096), raising=True
    )
    assert library_internals.problems() == [
        "a setter of the hpack.Encoder.header_table_size property"
    ]


# ---- the HPACK decoder that keeps the last block that left its table alone ----

POOL: list[tuple[bytes, bytes]] = [
    (b":method", b"CONNECT"),
    (b":protocol", b"websocket"),
    (b":path", b"/"),
    (b":authority", b"proxy.test"),
    (b"sec-websocket-version", b"13"),
    (b"origin", b"https://proxy.test"),
    (b"cookie", b"a=" + b"x" * 40),
    # Literals that are not indexed (as h2load and curl send ``:path``): the table stays.
    hpack.NeverIndexedHeaderTuple(b":path", b"/get"),
    hpack.NeverIndexedHeaderTuple(b"authorization", b"Bearer " + b"t" * 30),
]
#: A header list (indexes into POOL), or a new table size for the client's encoder.
STEP = st.one_of(
    st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=5),
    st.sampled_from([0, 64, 256, 4096]),
)
#: STEP, or bytes that may not be a block at all.
DECODER_STEP = st.one_of(STEP, st.binary(min_size=1, max_size=6))


def decoded(decoder: hpack.Decoder, block: bytes) -> object:
    try:
        return [tuple(header) for header in decoder.decode(block, raw=True)]
    except hpack.HPACKError as error:
        return type(error)


@given(st.lists(DECODER_STEP, max_size=40))
@settings(max_examples=300, deadline=None)
def test_kept_blocks_decode_as_hpack_decodes_them(steps: list[list[int] | int | bytes]) -> None:
    encoder = hpack.Encoder()
    ours = RepeatedBlockDecoder(max_header_list_size=300)
    theirs = hpack.Decoder(max_header_list_size=300)
    for step in steps:
        if isinstance(step, int):
            encoder.header_table_size = step  # announced in the next block
            continue
        block = step if isinstance(step, bytes) else encoder.encode([POOL[i] for i in step])
        for _ in range(2):  # the second time, the same bytes again
            assert decoded(ours, block) == decoded(theirs, block)
            assert list(ours.header_table.dynamic_entries) == list(
                theirs.header_table.dynamic_entries
            )


def test_a_kept_block_is_decoded_again_under_a_lower_limit() -> None:
    encoder = hpack.Encoder()
    decoder = RepeatedBlockDecoder(max_header_list_size=65536)
    fields = [(b":authority", b"proxy.test"), (b"origin", b"https://proxy.test")]
    decoder.decode(encoder.encode(fields), raw=True)  # as literals, into the table
    block = encoder.encode(fields)
    assert min(block) >= 0x80  # indexed fields only: this one is kept
    first = decoder.decode(block, raw=True)
    assert decoder.decode(block, raw=True) == first
    decoder.max_header_list_size = 10
    with pytest.raises(hpack.OversizedHeaderListError):
        decoder.decode(block, raw=True)


def test_a_block_with_literals_kept_out_of_the_table_is_kept() -> None:
    encoder = hpack.Encoder()
    decoder = RepeatedBlockDecoder(max_header_list_size=65536)
    fields = [(b":method", b"GET"), hpack.NeverIndexedHeaderTuple(b":path", b"/get")]
    block = encoder.encode(fields)
    assert block == encoder.encode(fields)  # nothing was indexed: the same bytes again
    first = decoder.decode(block, raw=True)
    assert decoder._kept_block == block
    assert decoder.decode(block, raw=True) == first


def test_a_block_that_adds_to_the_table_is_not_kept() -> None:
    decoder = RepeatedBlockDecoder(max_header_list_size=65536)
    decoder.decode(hpack.Encoder().encode([(b"x-new", b"1")]), raw=True)
    assert decoder._kept_block == b""


@given(st.lists(STEP, max_size=40), st.booleans())
@example([256, [0, 0, 0, 0, 2], 0, 256, 256, [0, 0, 0, 0, 2]], False)  # found by hypothesis
@settings(max_examples=300, deadline=None)
def test_kept_lists_encode_as_hpack_encodes_them(
    steps: list[list[int] | int], sensitive: bool
) -> None:
    ours, theirs = RepeatedBlockEncoder(), hpack.Encoder()
    for step in steps:
        if isinstance(step, int):
            ours.header_table_size = step
            # hpack told its own size again forgets a change still to announce (see
            # test_the_same_table_size_again_keeps_a_change_to_announce): ours ignores it.
            if step != theirs.header_table_size:
                theirs.header_table_size = step
            continue
        fields = [POOL[index] for index in step]
        if sensitive:  # as h2 marks authorization and short cookies
            fields = [hpack.NeverIndexedHeaderTuple(*fields[0]), *fields[1:]]
        for headers in (iter(fields), fields, fields):  # the same list again, as a list too
            assert ours.encode(headers) == theirs.encode(iter(fields))
            assert list(ours.header_table.dynamic_entries) == list(
                theirs.header_table.dynamic_entries
            )


def test_a_list_changed_after_its_block_was_kept_is_encoded_again() -> None:
    """A list is compared, not kept by identity: the caller may change it in place."""
    encoder = RepeatedBlockEncoder()
    fields = [(b":status", b"200")]
    assert encoder.encode(fields) == b"\x88"  # static index 8: kept
    fields[0] = (b":status", b"204")
    assert encoder.encode(fields) == b"\x89"  # static index 9, not the kept block


#: An answer's fields: the statuses are static entries (kept lists); the others are added to
#: the dynamic table, then indexed (kept too, until the table changes).
ANSWER_FIELDS: list[tuple[bytes, bytes]] = [
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"404"),
    (b"content-type", b"text/plain"),
    (b"x-a", b"1"),
    (b"x-a", b"2"),
    (b"server", b"s"),
]
_FIELD = st.integers(0, len(ANSWER_FIELDS) - 1)
#: What a caller does between blocks with the one list it keeps handing in.
LIST_STEP = st.one_of(
    st.tuples(st.just("set"), _FIELD, _FIELD),  # a field replaced in place
    st.tuples(st.just("append"), _FIELD, st.just(0)),
    st.tuples(st.just("pop"), st.just(0), st.just(0)),
    st.tuples(st.just("encode"), st.booleans(), st.just(0)),  # the list itself, or an iterator
    st.tuples(st.just("other"), _FIELD, st.just(0)),  # a block from another, new list
    st.tuples(st.just("size"), st.sampled_from([0, 40, 64, 4096]), st.just(0)),
)


@given(st.lists(LIST_STEP, max_size=30))
@settings(max_examples=500, deadline=None)
def test_a_list_reused_and_changed_in_place_encodes_as_hpack_encodes_it(
    steps: list[tuple[str, int | bool, int]],
) -> None:
    """The encoder compares a given list without copying it: the same list object, changed
    in place between blocks (with other lists and table size changes between), must give
    hpack's bytes for what it holds then, and decode to it."""
    ours, theirs, peer = RepeatedBlockEncoder(), hpack.Encoder(), hpack.Decoder()
    fields = [ANSWER_FIELDS[0]]
    for name, a, b in steps:
        if name == "set":
            fields[int(a) % len(fields)] = ANSWER_FIELDS[b]
        elif name == "append":
            fields.append(ANSWER_FIELDS[a])
        elif name == "pop" and len(fields) > 1:
            fields.pop()
        elif name == "size":
            ours.header_table_size = int(a)
            if a != theirs.header_table_size:  # (see test_kept_lists_encode_as_hpack_...)
                theirs.header_table_size = int(a)
        elif name in ("encode", "other"):
            given = fields if name == "encode" else [ANSWER_FIELDS[a]]
            expected = list(given)  # what it holds now
            block = ours.encode(iter(given) if name == "encode" and not a else given)
            assert block == theirs.encode(expected)
            assert [tuple(header) for header in peer.decode(block, raw=True)] == expected


def test_the_same_table_size_again_keeps_a_change_to_announce() -> None:
    """RFC 7541 §4.2: the next block starts with the smallest size since the last block,
    then the final one. A client's SETTINGS repeating the size must not lose them: the
    peer's table would keep entries ours dropped, and every later index would be misread."""
    encoder, peer = RepeatedBlockEncoder(), hpack.Decoder()
    fields = [(b"x-kept", b"1")]
    peer.decode(encoder.encode(fields))  # a literal, into both tables
    kept = encoder.encode(fields)
    assert kept == b"\xbe"  # then indexed (dynamic entry 62): kept
    peer.decode(kept)
    encoder.header_table_size = 0  # evicts it
    encoder.header_table_size = 256
    encoder.header_table_size = 256  # the same again
    block = encoder.encode(fields)
    assert block[:1] == b"\x20"  # size 0 first, then 256
    assert peer.decode(block) == [("x-kept", "1")]
    assert list(peer.header_table.dynamic_entries) == list(encoder.header_table.dynamic_entries)


def test_a_kept_list_is_encoded_again_after_a_table_size_change() -> None:
    encoder = RepeatedBlockEncoder()
    status = [(b":status", b"200")]
    assert encoder.encode(status) == b"\x88"  # static index 8: kept
    assert encoder.encode(status) == b"\x88"
    encoder.header_table_size = 0  # to be announced in the next block
    assert encoder.encode(status) == b"\x20\x88"
    assert encoder.encode(status) == b"\x88"


def test_an_empty_block_never_repeats_an_earlier_one() -> None:
    """Found by the client-role differential test: a block kept, then one that changed the
    table (nothing kept), then an empty block decoded to the first block's fields."""
    encoder = hpack.Encoder()
    decoder = RepeatedBlockDecoder(max_header_list_size=65536)
    assert decoder.decode(encoder.encode([(b":status", b"200")]), raw=True) == [
        (b":status", b"200")
    ]
    assert decoder.decode(encoder.encode([(b":status", b"100")]), raw=True) == [
        (b":status", b"100")
    ]
    assert decoder.decode(b"", raw=True) == []
