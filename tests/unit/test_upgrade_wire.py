"""upgrade_wire.py: the upgrade request's bytes and the backend's 1xx heads, without h11. Pure.

h11 is the oracle: whatever this module writes or reads, h11 must write or read the same;
whatever it hands back (None, HAND_TO_H11), h11 must be the one to decide.
"""

from __future__ import annotations

import re

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from h2ws_proxy.http.upgrade_wire import (
    HAND_TO_H11,
    InterimHead,
    read_interim_head,
    upgrade_request,
)

Header = tuple[bytes, bytes]

LIMIT = 16384
HEAD_101 = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)
BASE_HEADERS: list[Header] = [
    (b"host", b"example.com"),
    (b"upgrade", b"websocket"),
    (b"connection", b"Upgrade"),
]


def h11_bytes(target: bytes, headers: list[Header]) -> bytes:
    data = h11.Connection(h11.CLIENT).send(
        h11.Request(method=b"GET", target=target, headers=headers)
    )
    assert data is not None
    return data


def h11_client() -> h11.Connection:
    """An h11 client that has sent an upgrade request: it expects the backend's answer."""
    connection = h11.Connection(h11.CLIENT, max_incomplete_event_size=LIMIT)
    connection.send(h11.Request(method=b"GET", target=b"/", headers=BASE_HEADERS))
    connection.send(h11.EndOfMessage())
    return connection


def h11_first_event(data: bytes) -> h11.Event | type[h11.NEED_DATA] | Exception:
    connection = h11_client()
    connection.receive_data(data)
    try:
        return connection.next_event()  # type: ignore[return-value]
    except h11.ProtocolError as error:
        return error


# ---- the request ---------------------------------------------------------------------------


def test_request_bytes_are_h11s() -> None:
    headers = [
        *BASE_HEADERS,
        (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        (b"x-a", b"value with spaces and\ttab"),
        (b"x-empty", b""),
        (b"x-obs-text", b"caf\xc3\xa9"),
    ]
    request = upgrade_request(b"/chat?room=1&x=%20", headers)
    assert request is not None
    assert request.data == h11_bytes(b"/chat?room=1&x=%20", headers)
    assert request.method == b"GET"
    assert request.http_version == b"1.1"
    assert request.target == b"/chat?room=1&x=%20"
    assert request.headers == tuple(headers)


def test_request_writes_host_first_as_h11_does() -> None:
    headers = [(b"upgrade", b"websocket"), (b"Host", b"example.com"), (b"x-a", b"1")]
    request = upgrade_request(b"/", headers)
    assert request is not None
    assert request.data == h11_bytes(b"/", headers)
    assert request.data.startswith(b"GET / HTTP/1.1\r\nHost: example.com\r\n")


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        (b"/a b", BASE_HEADERS),
        (b"/chat HTTP/1.1\r\nx-injected: 1\r\n", BASE_HEADERS),
        (b"", BASE_HEADERS),
        (b"/\x7f", BASE_HEADERS),
        (b"/", [*BASE_HEADERS, (b"x-evil", b"a\r\nx-injected: 1")]),
        (b"/", [*BASE_HEADERS, (b"x-evil", b"a\nb")]),
        (b"/", [*BASE_HEADERS, (b"x-evil", b"a\x00b")]),
        (b"/", [*BASE_HEADERS, (b"x-evil", b" leading")]),
        (b"/", [*BASE_HEADERS, (b"x-evil", b"trailing\t")]),
        (b"/", [*BASE_HEADERS, (b"bad name", b"1")]),
        (b"/", [*BASE_HEADERS, (b"", b"1")]),
        (b"/", [*BASE_HEADERS, (b"x:y", b"1")]),
        (b"/", [(b"upgrade", b"websocket")]),  # no Host
        (b"/", [*BASE_HEADERS, (b"HOST", b"other.example")]),  # two
        (b"/", [(b"host", b"example.com\r\nx-injected: 1")]),
    ],
)
def test_request_h11_would_refuse_is_left_to_h11(target: bytes, headers: list[Header]) -> None:
    assert upgrade_request(target, headers) is None
    with pytest.raises(h11.LocalProtocolError):
        h11_bytes(target, headers)


@pytest.mark.parametrize("name", [b"content-length", b"Transfer-Encoding"])
def test_request_with_framing_fields_is_left_to_h11(name: bytes) -> None:
    # h11 rewrites these (trimmed lengths, lowercased codings): it writes them, not us.
    assert upgrade_request(b"/", [*BASE_HEADERS, (name, b" 0")]) is None


FUZZ_NAMES = [b"host", b"Host", b"x-a", b"X-B", b"bad name", b"", b"x\x00", b"x:y", b"a: b"]
FUZZ_NAMES += [b"a\nb", b"a\r\nb", b"x\n", b"content-length"]


@given(
    target=st.one_of(st.binary(max_size=12), st.sampled_from([b"/", b"/chat?room=1"])),
    headers=st.lists(
        st.tuples(
            st.sampled_from(FUZZ_NAMES),
            st.one_of(st.binary(max_size=8), st.sampled_from([b"a\nb", b"\n", b"a b", b" "])),
        ),
        max_size=5,
    ),
)
def test_request_agrees_with_h11(target: bytes, headers: list[Header]) -> None:
    request = upgrade_request(target, headers)
    try:
        expected = h11_bytes(target, headers)
    except h11.LocalProtocolError:
        assert request is None
        return
    if any(name.lower() == b"content-length" for name, _ in headers):
        assert request is None  # h11 rewrites it: h11 writes it
    else:
        assert request is not None
        assert request.data == expected


# ---- the backend's 1xx heads --------------------------------------------------------------


def test_101_head_with_leftover_bytes() -> None:
    frames = b"\x81\x05hello\x81\x00"
    head = read_interim_head(HEAD_101 + frames, LIMIT)
    assert isinstance(head, InterimHead)
    assert head.status == 101
    assert head.size == len(HEAD_101)
    assert head.headers == [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
    ]
    event = h11_first_event(HEAD_101 + frames)
    assert isinstance(event, h11.InformationalResponse)
    assert list(event.headers) == head.headers


def test_leftover_that_holds_a_blank_line_stays_leftover() -> None:
    # The head ends at the first blank line, as h11 ends it: the rest is tunnel bytes.
    leftover = b"\r\n\r\n\n\nHTTP/1.1 101 x\r\n\r\n"
    head = read_interim_head(HEAD_101 + leftover, LIMIT)
    assert isinstance(head, InterimHead)
    assert head.size == len(HEAD_101)


@pytest.mark.parametrize("split", range(1, len(HEAD_101)))
def test_split_reads_wait_for_the_whole_head(split: int) -> None:
    first = HEAD_101[:split]
    assert read_interim_head(first, LIMIT) is None
    assert h11_first_event(first) is h11.NEED_DATA
    head = read_interim_head(HEAD_101, LIMIT, searched=max(0, len(first) - 2))
    assert isinstance(head, InterimHead)
    assert head.size == len(HEAD_101)


def test_100_then_101_in_one_read() -> None:
    data = b"HTTP/1.1 100 Continue\r\n\r\n" + HEAD_101 + b"tail"
    first = read_interim_head(data, LIMIT)
    assert isinstance(first, InterimHead)
    assert (first.status, first.headers) == (100, [])
    second = read_interim_head(data[first.size :], LIMIT)
    assert isinstance(second, InterimHead)
    assert second.status == 101
    assert data[first.size + second.size :] == b"tail"


@pytest.mark.parametrize(
    "status_line",
    [b"HTTP/1.1 101", b"HTTP/1.1 101 ", b"HTTP/1.0 101 OK", b"HTTP/1.1 103 Early Hints\xff"],
)
def test_status_lines_h11_accepts(status_line: bytes) -> None:
    data = status_line + b"\r\nUpgrade: websocket\r\n\r\n"
    head = read_interim_head(data, LIMIT)
    assert isinstance(head, InterimHead)
    event = h11_first_event(data)
    assert isinstance(event, h11.InformationalResponse)
    assert event.status_code == head.status


@pytest.mark.parametrize(
    "data",
    [
        # final answers: rejections are read (with their bodies) by h11
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 403 Forbidden\r\n\r\n",
        # malformed status lines
        b"HTTP/1.1 1010 Switching\r\n\r\n",
        b"HTTP/1.1 099 Low\r\n\r\n",
        b"HTTP/1.1  101\r\n\r\n",
        b"HTTP/11 101\r\n\r\n",
        b"http/1.1 101\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"\r\nHTTP/1.1 101\r\n\r\n",
        b"\nHTTP/1.1 101\r\n\r\n",
        b"HTTP/1.1 101 \x00\r\n\r\n",
        # malformed or unusual header lines
        b"HTTP/1.1 101\r\nUpgrade : websocket\r\n\r\n",
        b"HTTP/1.1 101\r\nbad name: 1\r\n\r\n",
        b"HTTP/1.1 101\r\nno-colon\r\n\r\n",
        b"HTTP/1.1 101\r\nX: a\x00b\r\n\r\n",
        b"HTTP/1.1 101\r\nX: a\rb\r\n\r\n",
        b"HTTP/1.1 101\r\nX: a\nb: c\r\n\r\n",
        b"HTTP/1.1 101\r\nX: a\r\n folded\r\n\r\n",  # obs-fold: h11 joins it
        b"HTTP/1.1 101\r\n folded\r\n\r\n",
        b"HTTP/1.1 101\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 101\r\ntransfer-encoding: chunked\r\n\r\n",
        # bare LF line ends: h11 reads them leniently
        b"HTTP/1.1 101\nUpgrade: websocket\n\n",
        b"HTTP/1.1 101\r\nUpgrade: websocket\n\r\n",
        b"HTTP/1.1 101\r\nUpgrade: websocket\r\n\n",
        # unfinished, but h11 already refuses them
        b"\x16\x03\x01\x02\x00",
        b" HTTP/1.1 101",
    ],
)
def test_anything_else_is_h11s_to_judge(data: bytes) -> None:
    assert read_interim_head(data, LIMIT) is HAND_TO_H11


def test_unfinished_head_over_the_limit_is_h11s_to_refuse() -> None:
    data = b"HTTP/1.1 101 Switching Protocols\r\nX-Filler: " + b"f" * LIMIT
    assert read_interim_head(data, LIMIT) is HAND_TO_H11
    event = h11_first_event(data)
    assert isinstance(event, h11.RemoteProtocolError)
    assert read_interim_head(data[:LIMIT], LIMIT) is None  # at the limit: still waiting


def test_complete_head_over_the_limit_is_read_as_h11_reads_it() -> None:
    # h11 bounds only what it must buffer before a head ends, not a head that came whole.
    data = b"HTTP/1.1 101 x\r\nX-Filler: " + b"f" * (2 * LIMIT) + b"\r\n\r\n"
    head = read_interim_head(data, LIMIT)
    assert isinstance(head, InterimHead)
    assert isinstance(h11_first_event(data), h11.InformationalResponse)


def test_searched_skips_what_was_already_searched() -> None:
    data = b"HTTP/1.1 100 x\r\n\r\n"
    assert read_interim_head(data, LIMIT, searched=len(data) - 3) is not None
    assert read_interim_head(data, LIMIT, searched=len(data) - 2) is None


header_line = st.tuples(
    st.sampled_from([b"Upgrade", b"connection", b"X-A", b"bad name", b"x\x80", b""]),
    st.sampled_from([b":", b": ", b":\t", b" :"]),
    st.binary(max_size=6),
    st.sampled_from([b"", b" ", b"\t"]),
).map(b"".join)


@given(
    status=st.sampled_from([b"HTTP/1.1 101 Switching", b"HTTP/1.1 100", b"HTTP/1.1 200 OK"]),
    lines=st.lists(header_line, max_size=4),
    ends=st.sampled_from([b"\r\n", b"\n"]),
    tail=st.binary(max_size=8),
)
def test_heads_agree_with_h11(status: bytes, lines: list[bytes], ends: bytes, tail: bytes) -> None:
    data = ends.join([status, *lines]) + ends + ends + tail
    head = read_interim_head(data, LIMIT)
    event = h11_first_event(data)
    if head is None:
        assert event is h11.NEED_DATA
    elif isinstance(head, InterimHead):
        assert isinstance(event, h11.InformationalResponse)
        assert (event.status_code, list(event.headers)) == (head.status, head.headers)
        if head.status == 101:
            connection = h11_client()
            connection.receive_data(data)
            connection.next_event()
            assert connection.trailing_data[0] == data[head.size :]


def test_spelled_out_classes_are_h11s() -> None:
    # upgrade_wire spells h11's character classes out (faster); every byte agrees.
    from h11 import _abnf

    from h2ws_proxy.http import upgrade_wire
    from h2ws_proxy.http.grammar import FIELD_VCHAR

    ours_vchar = re.compile(FIELD_VCHAR)
    h11_vchar = re.compile(_abnf.field_vchar.encode())
    h11_reason = re.compile(_abnf.reason_phrase.encode())
    ours_reason = re.compile(rb"[^\x00\n\x0b\x0c\r]*")
    for byte in range(256):
        one = bytes([byte])
        assert bool(ours_vchar.fullmatch(one)) == bool(h11_vchar.fullmatch(one)), one
        assert bool(ours_reason.fullmatch(one)) == bool(h11_reason.fullmatch(one)), one
        status = b"HTTP/1.1 101 a" + one + b"b"
        assert bool(upgrade_wire._STATUS_LINE_RE.fullmatch(status)) == bool(
            h11_reason.fullmatch(b"a" + one + b"b")
        ), one
