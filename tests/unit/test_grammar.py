"""grammar.py: our spelling of HTTP's grammar is h11's, byte for byte. Pure.

h11 (``h11/_abnf.py``) is the oracle: the fast paths that use these patterns are sound
only if they accept nothing h11 would refuse.
"""

from __future__ import annotations

import re

from h11 import _abnf
from hypothesis import given
from hypothesis import strategies as st

from h2ws_proxy.http import grammar

BYTES = [bytes([byte]) for byte in range(256)]


def h11_pattern(text: str) -> re.Pattern[bytes]:
    return re.compile(text.encode("ascii"))


def agree(ours: bytes, h11s: re.Pattern[bytes], data: bytes) -> bool:
    return bool(re.fullmatch(ours, data)) == bool(h11s.fullmatch(data))


def test_single_byte_classes_are_h11s() -> None:
    cases = [
        (grammar.TOKEN, _abnf.token),
        (grammar.FIELD_VCHAR, _abnf.field_vchar),
        (grammar.REQUEST_TARGET, _abnf.request_target),
        (grammar.REASON_PHRASE, _abnf.reason_phrase),
        (grammar.OWS, _abnf.OWS),
    ]
    for ours, theirs in cases:
        h11s = h11_pattern(theirs)
        for one in BYTES:
            assert agree(ours, h11s, one), (ours, one)
            assert agree(ours, h11s, one + one), (ours, one)


def test_lower_token_is_a_token_without_upper_case() -> None:
    lower, token = re.compile(grammar.LOWER_TOKEN), h11_pattern(_abnf.token)
    for one in BYTES:
        expected = bool(token.fullmatch(one)) and not one.isupper()
        assert bool(lower.fullmatch(one)) == expected, one


def test_line_forbidden_bytes_are_what_field_vchar_and_ows_leave_out() -> None:
    allowed = re.compile(rb"(?:" + grammar.FIELD_VCHAR + rb"|[ \t])")
    left_out = {one for one in BYTES if not allowed.fullmatch(one)} - {b"\r", b"\n"}
    assert left_out == set(grammar.LINE_FORBIDDEN_BYTES)


def test_h2_forbidden_in_value_is_nul_cr_lf() -> None:
    forbidden = re.compile(grammar.H2_FORBIDDEN_IN_VALUE)
    assert {one for one in BYTES if forbidden.fullmatch(one)} == {b"\x00", b"\r", b"\n"}


FIELD_BYTES = st.binary(max_size=12) | st.sampled_from([b"a", b"x-y", b"a b", b" a", b"a\t", b""])


@given(st.lists(st.tuples(FIELD_BYTES, FIELD_BYTES), min_size=1, max_size=5))
def test_fields_pass_is_each_field_by_h11s_patterns(headers: list[tuple[bytes, bytes]]) -> None:
    token, value = h11_pattern(_abnf.field_name), h11_pattern(_abnf.field_value)
    expected = all(token.fullmatch(n) and value.fullmatch(v) for n, v in headers)
    names = b"\n".join([name for name, _ in headers])
    values = b"\n".join([field_value for _, field_value in headers])
    assert grammar.fields_pass(names, values, len(headers)) == expected


@given(st.binary(max_size=30) | st.sampled_from([b"a: b", b"a:b ", b"a :b", b"a:\tb c\t"]))
def test_field_line_is_h11s_header_field(line: bytes) -> None:
    ours = re.compile(grammar.FIELD_LINE).fullmatch(line)
    theirs = h11_pattern(_abnf.header_field).fullmatch(line)
    assert bool(ours) == bool(theirs)
    if ours and theirs:
        assert (ours[1], ours[2]) == (theirs["field_name"], theirs["field_value"])


@given(st.binary(max_size=30) | st.sampled_from([b"1a;x=y \r\n", b"0\r\n", b"ff \t\r\n"]))
def test_chunk_header_is_h11s(line: bytes) -> None:
    ours = re.compile(grammar.CHUNK_HEADER).fullmatch(line)
    theirs = h11_pattern(_abnf.chunk_header).fullmatch(line)
    assert bool(ours) == bool(theirs)
    if ours and theirs:
        assert ours[1] == theirs["chunk_size"]
