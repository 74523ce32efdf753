"""H2Session's own rules around h2: the stream table's bounds, the count of open streams, and
the HPACK decoder and encoder that keep a repeated block."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from h2ws_proxy.config import Limits
from h2ws_proxy.http2.h2lib_session import H2Session, StreamUnusable
from h2ws_proxy.http2.library_internals import RepeatedBlockDecoder, RepeatedBlockEncoder

LIMIT = 4
REQUEST = [
    (":method", "CONNECT"),
    (":protocol", "websocket"),
    (":scheme", "http"),
    (":path", "/"),
    (":authority", "proxy.test"),
    ("sec-websocket-version", "13"),
]


def connected_pair() -> tuple[h2.connection.H2Connection, H2Session]:
    session = H2Session(
        Limits(max_concurrent_streams=LIMIT), connect_protocol_enabled=True, on_output=lambda: None
    )
    session.start()
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    session.receive(client.data_to_send())
    client.receive_data(bytes(session.take_outbound()))
    session.receive(client.data_to_send())
    # The client would stop at our limit; these tests go past it on purpose.
    client.remote_settings = h2.settings.Settings(
        client=False,
        initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000,
            h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1,
        },
    )
    return client, session


def open_stream(client: h2.connection.H2Connection, session: H2Session) -> int:
    stream_id = client.get_next_available_stream_id()
    client.send_headers(stream_id, REQUEST)
    session.receive(client.data_to_send())
    return stream_id


def test_closed_streams_leave_the_table_once_it_outgrows_the_limit() -> None:
    client, session = connected_pair()
    for _ in range(10 * LIMIT):
        stream_id = open_stream(client, session)
        # Both sides end the stream: h2 keeps it in its table as closed.
        session.send_headers(stream_id, [(b":status", b"200")], end_stream=True)
        client.end_stream(stream_id)
        session.receive(client.data_to_send())
        assert len(session.conn.streams) <= LIMIT + 1
    assert session.conn.open_inbound_streams == 0


def test_open_streams_are_counted_exactly_past_the_limit() -> None:
    client, session = connected_pair()
    for expected in range(1, LIMIT + 3):
        open_stream(client, session)
        count = session.conn.open_inbound_streams
        # Within the limit the table's size stands in; past it the count is exact.
        assert count == expected


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


def test_connections_use_the_keeping_decoder_with_h2s_limits() -> None:
    _client, session = connected_pair()
    decoder = session.conn.decoder
    assert isinstance(decoder, RepeatedBlockDecoder)
    # Our SETTINGS were acknowledged: h2 gave the decoder our header list limit.
    assert decoder.max_header_list_size == Limits().max_header_list_bytes
    assert isinstance(session.conn.encoder, RepeatedBlockEncoder)


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
        for _ in range(2):  # the second time, the same list again
            assert ours.encode(iter(fields)) == theirs.encode(iter(fields))
            assert list(ours.header_table.dynamic_entries) == list(
                theirs.header_table.dynamic_entries
            )


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


# ---- outbound headers: h2's checks skipped only where they change nothing ----


def answered(headers: list[tuple[bytes, bytes]], *, twice: bool = False) -> object:
    """What the client receives for ``headers`` on a new stream (an exception's type if
    sending fails), and whether h2's outbound checks are on again afterwards."""
    client, session = connected_pair()
    stream_id = open_stream(client, session)
    session.take_outbound()
    try:
        session.send_headers(stream_id, headers)
        if twice:
            session.send_headers(stream_id, headers, end_stream=True)
    except StreamUnusable:
        return StreamUnusable
    finally:
        config = session.conn.config
        assert config.validate_outbound_headers
        assert config.normalize_outbound_headers
    events = client.receive_data(bytes(session.take_outbound()))
    return [
        [tuple(field) for field in event.headers]
        for event in events
        if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived)
    ]


def test_a_plain_200_goes_out_as_it_is() -> None:
    assert answered([(b":status", b"200")]) == [[(b":status", b"200")]]


def test_a_200_sent_again_as_trailers_is_still_refused() -> None:
    assert answered([(b":status", b"200")], twice=True) is StreamUnusable


def test_fields_http2_forbids_never_go_out() -> None:
    # Relayed from a backend's answer, had a filter before h2 missed them: h2 strips the
    # connection-specific ones and refuses a TE other than trailers.
    stripped = [(b"connection", b"close"), (b"keep-alive", b"5"), (b"upgrade", b"websocket")]
    stripped += [(b"transfer-encoding", b"chunked"), (b"proxy-connection", b"close")]
    for field in stripped:
        assert answered([(b":status", b"200"), field, (b"x-kept", b"1")]) == [
            [(b":status", b"200"), (b"x-kept", b"1")]
        ]
    assert answered([(b":status", b"200"), (b"te", b"gzip")]) is StreamUnusable
    assert answered([(b":status", b"200"), (b"X-Upper", b" padded ")]) == [
        [(b":status", b"200"), (b"x-upper", b"padded")]
    ]
