"""http_message.py: the backend request's own checks must agree with h11's, and the fields
forwarded must be those the general hop-by-hop filter keeps. Pure."""

from __future__ import annotations

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from h2ws_proxy.config import BackendGroup, RouteConfig, parse_backend
from h2ws_proxy.errors import ClientProtocolError
from h2ws_proxy.http.fields import end_to_end_request_headers, end_to_end_response_headers
from h2ws_proxy.http.message import (
    BackendRequest,
    BodyFraming,
    HttpRequest,
    _forwarded_fields,
    _valid_for_h11,
    build_backend_request,
    response_fields,
)

Header = tuple[bytes, bytes]

NAMES = [b"host", b"accept", b"x-a", b"X-Up", b"a b", b"a:b", b"", b"a\nb", b"a\r\nb", b"\xff"]
VALUES = [b"", b"v", b"a b", b" a", b"a ", b"a\tb", b"a\nb", b"\n", b"a\x00", b"\x0b", b"\x7f\x80"]
FIELD_VALUES = st.one_of(st.binary(max_size=6), st.sampled_from(VALUES))


def h11_accepts(method: bytes, target: bytes, headers: list[Header]) -> bool:
    try:
        h11.Request(method=method, target=target, headers=headers)
    except h11.LocalProtocolError:
        return False
    return True


@given(
    method=st.one_of(st.sampled_from([b"GET", b"M-SEARCH", b"GE T", b"", b"G\nET"]), st.binary()),
    target=st.one_of(st.sampled_from([b"/", b"/a?b", b"*", b"/a b", b"/\x7f"]), st.binary()),
    headers=st.lists(st.tuples(st.sampled_from(NAMES), FIELD_VALUES), max_size=5),
    host=FIELD_VALUES,
)
def test_backend_request_check_agrees_with_h11(
    method: bytes, target: bytes, headers: list[Header], host: bytes
) -> None:
    fields = [(b"host", host), *[(name, value) for name, value in headers if name != b"host"]]
    request = BackendRequest(method, target, fields, BodyFraming.NONE)
    assert _valid_for_h11(request) == h11_accepts(method, target, fields)


@pytest.mark.parametrize(
    "headers",
    [
        [(b"accept", b"*/*"), (b"te", b"trailers"), (b"host", b"h"), (b"content-length", b"3")],
        [(b"x-a", b"1"), (b"proxy-authorization", b"p"), (b"trailer", b"x"), (b"upgrade", b"u")],
        [(b"connection", b"x-a, Keep-Alive"), (b"x-a", b"1"), (b"x-b", b"2")],
        [(b"x-b", b"2"), (b"connection", b"close"), (b"connection", b"x-b")],
        [],
    ],
)
def test_forwarded_fields_are_the_end_to_end_ones(headers: list[Header]) -> None:
    expected = end_to_end_request_headers(
        tuple(headers), replaced=frozenset({b"host", b"content-length"})
    )
    assert _forwarded_fields(tuple(headers)) == expected


def test_a_request_h11_refuses_is_refused_with_h11s_words() -> None:
    request = HttpRequest(
        method=b"GET",
        target=b"/",
        authority=b"example",
        scheme=b"http",
        headers=((b"x-a", b"a\x0bb"),),
        framing=BodyFraming.NONE,
    )
    route = RouteConfig(path="/", backend=BackendGroup.of(parse_backend("http://127.0.0.1:9")))
    with pytest.raises(ClientProtocolError, match=r"cannot be expressed in HTTP/1\.1"):
        build_backend_request(request, route, None)


@pytest.mark.parametrize("status", [200, 204])
@pytest.mark.parametrize("for_h2", [True, False])
@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-type", b"text/plain"), (b"content-length", b"0"), (b"date", b"d")],
        [(b"connection", b"keep-alive"), (b"keep-alive", b"timeout=5"), (b"x-a", b"1")],
        [(b"connection", b" X-A ,, close"), (b"x-a", b"1"), (b"x-b", b"2"), (b"close", b"c")],
        [(b"transfer-encoding", b"chunked"), (b"trailer", b"x"), (b"upgrade", b"u")],
        [(b"connection", b""), (b"content-length", b"3")],
        [],
    ],
)
def test_response_fields_are_the_end_to_end_ones(
    status: int, for_h2: bool, headers: list[Header]
) -> None:
    drop = frozenset({b"content-length"}) if for_h2 and status == 204 else frozenset()
    expected = list(end_to_end_response_headers(headers, drop=drop))
    assert response_fields(status, headers, for_h2=for_h2) == expected
