"""h2_request.py: strict RFC 9113 §8.2-8.3 validation of an HTTP/2 request header block.

Every violation must be a ClientProtocolError with status 400 and ``stream_error`` set
(RFC 9113 §8.1.1: a malformed request is a stream error, not a connection error).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from h2ws_proxy.errors import ClientProtocolError
from h2ws_proxy.http import request_head as h2_request
from h2ws_proxy.http.request_head import H2RequestHead, parse_h2_request_head

Header = tuple[bytes, bytes]

PSEUDO: dict[bytes, bytes] = {
    b":method": b"CONNECT",
    b":protocol": b"websocket",
    b":scheme": b"https",
    b":authority": b"example.com",
    b":path": b"/chat?room=1",
}
PSEUDO_NAMES = list(PSEUDO)


def block(*regular: Header, **replace: bytes | None) -> list[Header]:
    """An extended CONNECT header block; ``replace`` maps pseudo names (no colon) to a new
    value, or to None to leave the pseudo-header out. Regular fields follow the pseudo ones."""
    pseudo = dict(PSEUDO)
    for key, value in replace.items():
        name = b":" + key.encode()
        if value is None:
            pseudo.pop(name, None)
        else:
            pseudo[name] = value
    return [*pseudo.items(), *regular]


def assert_malformed(headers: list[Header], reason: str | None = None) -> ClientProtocolError:
    """``headers`` must be refused as malformed; ``reason``, if given, must be in the message
    (for the tests where another rule could otherwise refuse the block for the wrong reason)."""
    with pytest.raises(ClientProtocolError) as info:
        parse_h2_request_head(headers)
    error = info.value
    assert error.status_hint == 400
    assert error.stream_error is True
    assert error.extra_headers == ()
    assert error.message.startswith("malformed request")
    if reason is not None:
        assert reason in error.message
    return error


# ---- happy path --------------------------------------------------------------------------


def test_extended_connect_head_fields() -> None:
    head = parse_h2_request_head(
        block(
            (b"sec-websocket-version", b"13"),
            (b"origin", b"https://example.com"),
            (b"sec-websocket-protocol", b"chat"),
            (b"sec-websocket-protocol", b"superchat"),
        )
    )
    assert isinstance(head, H2RequestHead)
    assert head.method == b"CONNECT"
    assert head.protocol == b"websocket"
    assert head.scheme == b"https"
    assert head.authority == b"example.com"
    assert head.host is None
    assert head.target_authority == b"example.com"
    assert head.path == b"/chat?room=1"
    assert head.headers == (
        (b"sec-websocket-version", b"13"),
        (b"origin", b"https://example.com"),
        (b"sec-websocket-protocol", b"chat"),
        (b"sec-websocket-protocol", b"superchat"),
    )


def test_plain_get_head_fields() -> None:
    head = parse_h2_request_head(
        [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":authority", b"example.com:8080"),
            (b":path", b"/"),
            (b"accept", b"*/*"),
        ]
    )
    assert head.method == b"GET"
    assert head.protocol is None
    assert head.scheme == b"http"
    assert head.authority == b"example.com:8080"
    assert head.host is None
    assert head.target_authority == b"example.com:8080"
    assert head.path == b"/"
    assert head.headers == ((b"accept", b"*/*"),)


def test_head_is_frozen() -> None:
    head = parse_h2_request_head(block())
    with pytest.raises(AttributeError):
        head.method = b"GET"  # type: ignore[misc]


def test_get_and_get_all() -> None:
    head = parse_h2_request_head(
        block(
            (b"x-a", b"1"),
            (b"x-b", b"2"),
            (b"x-a", b"3"),
            (b"x-empty", b""),
        )
    )
    assert head.get(b"x-a") == b"1"
    assert head.get_all(b"x-a") == [b"1", b"3"]
    assert head.get(b"x-b") == b"2"
    assert head.get_all(b"x-b") == [b"2"]
    assert head.get(b"x-empty") == b""
    assert head.get_all(b"x-empty") == [b""]
    assert head.get(b"x-missing") is None
    assert head.get_all(b"x-missing") == []
    # Pseudo-headers are not regular fields.
    assert head.get(b":method") is None
    assert head.get_all(b":path") == []


def test_get_does_not_fold_case() -> None:
    head = parse_h2_request_head(block((b"x-a", b"1")))
    assert head.get(b"X-A") is None


@pytest.mark.parametrize(
    "cookies",
    [
        [b"a=1"],
        [b'a=1; b=2; c="quoted value"'],
        [b"session=abc==; Path=/"],
        [b"a=1", b"b=2", b"c=3"],  # RFC 9113 §8.2.3: crumbs may arrive as separate fields
        [b"empty="],
    ],
)
def test_cookie_values_pass_through(cookies: list[bytes]) -> None:
    head = parse_h2_request_head(block(*[(b"cookie", value) for value in cookies]))
    assert head.get_all(b"cookie") == cookies
    assert head.headers == tuple((b"cookie", value) for value in cookies)


def test_regular_field_order_is_kept() -> None:
    regular = [(b"z", b"1"), (b"a", b"2"), (b"m", b"3"), (b"a", b"4")]
    head = parse_h2_request_head(block(*regular))
    assert list(head.headers) == regular


# ---- rule 1: field values ----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b"a\x00b",
        b"a\rb",
        b"a\nb",
        b"a\r\nx-injected: 1",
        b"\x00",
        b"\r",
        b"\n",
        b"abc\n",
        b"\rabc",
    ],
)
def test_nul_cr_lf_in_regular_value(value: bytes) -> None:
    # RFC 9113 §8.2.1: a field value MUST NOT contain NUL, LF or CR.
    assert_malformed(block((b"x-custom", value)))


@pytest.mark.parametrize("pseudo", ["method", "scheme", "authority", "path", "protocol"])
@pytest.mark.parametrize("bad", [b"\x00", b"\r", b"\n"])
def test_nul_cr_lf_in_pseudo_value(pseudo: str, bad: bytes) -> None:
    # RFC 9113 §8.2.1 applies to pseudo-header values too.
    original = PSEUDO[b":" + pseudo.encode()]
    value = original[:2] + bad + original[2:]
    assert_malformed(block(**{pseudo: value}))


@pytest.mark.parametrize(
    "value",
    [b" a", b"a ", b"\ta", b"a\t", b" ", b"\t", b"  a  ", b" \ta", b"a\t "],
)
def test_leading_or_trailing_whitespace_in_value(value: bytes) -> None:
    # RFC 9113 §8.2.1: a field value MUST NOT start or end with SP or HTAB.
    assert_malformed(block((b"x-custom", value)))


@pytest.mark.parametrize("pseudo", ["method", "scheme", "authority", "path", "protocol"])
@pytest.mark.parametrize("where", ["leading", "trailing"])
def test_leading_or_trailing_whitespace_in_pseudo_value(pseudo: str, where: str) -> None:
    original = PSEUDO[b":" + pseudo.encode()]
    value = b" " + original if where == "leading" else original + b"\t"
    assert_malformed(block(**{pseudo: value}))


@pytest.mark.parametrize(
    "value",
    [b"", b"a", b"a b", b"a\tb", b"a  \t  b", b"\x21\x7e", b"caf\xc3\xa9", b"x" * 8192],
)
def test_acceptable_values(value: bytes) -> None:
    head = parse_h2_request_head(block((b"x-custom", value)))
    assert head.get(b"x-custom") == value


# ---- rule 1: field names -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        b"X-Custom",
        b"x-Custom",
        b"COOKIE",
        b"Sec-WebSocket-Version",
        b"Host",
        b"A",
    ],
)
def test_uppercase_names(name: bytes) -> None:
    # RFC 9113 §8.2: a field name with upper case characters is malformed.
    assert_malformed(block((name, b"v")))


@pytest.mark.parametrize(
    "name",
    [
        b"",
        b" ",
        b"x custom",
        b" x-custom",
        b"x-custom ",
        b"x\tcustom",
        b"x:custom",
        b"x-custom:",
        b"x(y)",
        b"x<y>",
        b'x"y',
        b"x,y",
        b"x;y",
        b"x/y",
        b"x@y",
        b"x=y",
        b"x?y",
        b"x[y]",
        b"x{y}",
        b"x\\y",
        b"x\x00y",
        b"x\x01y",
        b"x\x7fy",
        b"x\x80y",
        b"caf\xc3\xa9",
        b"x\ry",
        b"x\ny",
    ],
)
def test_bad_names(name: bytes) -> None:
    # RFC 9113 §8.2.1 (no controls, SP, colon or 0x7f-0xff) and RFC 9110 §5.1 (token).
    assert_malformed(block((name, b"v")))


@pytest.mark.parametrize(
    "name",
    [
        b"x",
        b"x-custom",
        b"x_custom",
        b"x.custom",
        b"0",
        b"sec-websocket-extensions",
        b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz",
    ],
)
def test_good_names(name: bytes) -> None:
    head = parse_h2_request_head(block((name, b"v")))
    assert head.headers == ((name, b"v"),)


# ---- rule 2: pseudo-headers --------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [b":status", b":foo", b":", b"::path", b":Method", b":PATH", b":host", b":path "],
)
def test_unknown_pseudo_headers(name: bytes) -> None:
    # RFC 9113 §8.3: only the defined request pseudo-headers; :status is a response one.
    assert_malformed([*block()[:2], (name, b"200"), *block()[2:]])


@pytest.mark.parametrize("name", PSEUDO_NAMES)
def test_repeated_pseudo_header(name: bytes) -> None:
    # RFC 9113 §8.3.1: exactly one value for each pseudo-header.
    assert_malformed([*block(), (name, PSEUDO[name])])


@pytest.mark.parametrize("name", PSEUDO_NAMES)
def test_repeated_pseudo_header_identical_adjacent(name: bytes) -> None:
    headers = block()
    index = headers.index((name, PSEUDO[name]))
    headers.insert(index, (name, PSEUDO[name]))
    assert_malformed(headers)


@pytest.mark.parametrize("name", PSEUDO_NAMES)
def test_pseudo_after_regular(name: bytes) -> None:
    # RFC 9113 §8.3: all pseudo-header fields MUST appear before all regular field lines.
    without = block(**{name.decode()[1:]: None})
    assert_malformed([*without, (b"x-custom", b"1"), (name, PSEUDO[name])], "after a regular")


@pytest.mark.parametrize("name", PSEUDO_NAMES)
def test_pseudo_after_host(name: bytes) -> None:
    # RFC 9113 §8.3: `host` is a regular field like any other; a pseudo-header after it makes
    # the request malformed. (The parser keeps host out of its list of regular fields, so
    # it must still count it as one here.)
    without = block(**{name.decode()[1:]: None})
    assert_malformed(
        [*without, (b"host", b"example.com"), (name, PSEUDO[name])], "after a regular field"
    )


def test_pseudo_after_host_first_in_block() -> None:
    # RFC 9113 §8.3: host as the very first field line, pseudo-headers after it.
    assert_malformed([(b"host", b"example.com"), *block()], "after a regular field")


@pytest.mark.parametrize("order", [PSEUDO_NAMES, list(reversed(PSEUDO_NAMES))])
def test_pseudo_header_order_among_themselves_is_free(order: list[bytes]) -> None:
    head = parse_h2_request_head([(name, PSEUDO[name]) for name in order] + [(b"x", b"1")])
    assert head.method == b"CONNECT"
    assert head.path == b"/chat?room=1"


@pytest.mark.parametrize("method", [b"GET", b"POST", b"OPTIONS", b"connect"])
@pytest.mark.parametrize("missing", [("scheme",), ("path",), ("scheme", "path")])
def test_non_connect_request_missing_mandatory_pseudo(
    method: bytes, missing: tuple[str, ...]
) -> None:
    # RFC 9113 §8.3.1: every request other than CONNECT MUST include exactly one :method,
    # :scheme and :path; "An HTTP request that omits mandatory pseudo-header fields is
    # malformed." (Methods are case-sensitive, RFC 9110 §9.1: "connect" is not CONNECT.)
    drop: dict[str, bytes | None] = dict.fromkeys(missing)
    assert_malformed(block(method=method, protocol=None, **drop), ":scheme and :path are required")


@pytest.mark.parametrize("missing", [("scheme",), ("path",), ("scheme", "path")])
def test_extended_connect_missing_scheme_or_path(missing: tuple[str, ...]) -> None:
    # RFC 8441 §4: on an extended CONNECT, ":scheme and :path pseudo-header fields MUST be
    # included"; RFC 9113 §8.1.1: omitting mandatory pseudo-headers is malformed.
    drop: dict[str, bytes | None] = dict.fromkeys(missing)
    assert_malformed(block(**drop), ":scheme and :path are required")


def test_extended_connect_without_authority_is_left_to_handshake() -> None:
    # The header-block parser lets an extended CONNECT without :authority through (RFC 8441
    # §4 defers to the ordinary §8.3.1 rules here); handshake.py refuses it.
    head = parse_h2_request_head(block(authority=None))
    assert head.method == b"CONNECT"
    assert head.protocol == b"websocket"
    assert head.authority is None
    assert head.host is None
    assert head.target_authority is None


@pytest.mark.parametrize("authority", [b"example.com:443", b"[::1]:8443", b"127.0.0.1:80"])
def test_plain_connect_head_fields(authority: bytes) -> None:
    # RFC 9113 §8.5: plain CONNECT is :method and :authority only.
    head = parse_h2_request_head(
        [(b":method", b"CONNECT"), (b":authority", authority), (b"x-a", b"1")]
    )
    assert head.method == b"CONNECT"
    assert head.authority == authority
    assert head.target_authority == authority
    assert head.scheme is None
    assert head.path is None
    assert head.protocol is None
    assert head.host is None
    assert head.headers == ((b"x-a", b"1"),)


@pytest.mark.parametrize("present", [("scheme", "path"), ("scheme",), ("path",)])
def test_plain_connect_with_scheme_or_path(present: tuple[str, ...]) -> None:
    # RFC 9113 §8.5: "The :scheme and :path pseudo-header fields MUST be omitted"; "A
    # CONNECT request that does not conform to these restrictions is malformed".
    drop: dict[str, bytes | None] = {
        name: None for name in ("scheme", "path") if name not in present
    }
    assert_malformed(
        block(protocol=None, authority=b"example.com:443", **drop),
        "plain CONNECT must not carry :scheme or :path",
    )


@pytest.mark.parametrize("regular", [(), ((b"host", b"example.com:443"),)])
def test_plain_connect_without_authority(regular: tuple[Header, ...]) -> None:
    # RFC 9113 §8.5: the :authority pseudo-header names the tunnel target; a host field
    # does not stand in for it.
    assert_malformed(
        block(*regular, protocol=None, scheme=None, path=None, authority=None),
        "CONNECT without :authority",
    )


@pytest.mark.parametrize("authority", [b"example.com", b"[::1]", b"127.0.0.1"])
def test_plain_connect_authority_without_port(authority: bytes) -> None:
    # RFC 9113 §8.5: a plain CONNECT's :authority "contains the host and port to connect
    # to" (authority-form, RFC 9112 §3.2.3); RFC 9110 §9.3.6: "There is no default port; a
    # client MUST send the port number". A CONNECT that does not conform is malformed.
    assert_malformed(block(protocol=None, scheme=None, path=None, authority=authority))


@pytest.mark.parametrize("method", [b"GET", b"POST", b"OPTIONS", b"connect", b"Connect"])
def test_protocol_on_non_connect(method: bytes) -> None:
    # RFC 8441 §4: :protocol is only for CONNECT; a request that carries it otherwise is
    # malformed (methods are case-sensitive, RFC 9110 §9.1).
    assert_malformed(block(method=method), ":protocol on a non-CONNECT request")


# ---- rule 3: connection-specific fields --------------------------------------------------


@pytest.mark.parametrize(
    "name", [b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"]
)
@pytest.mark.parametrize("value", [b"close", b"websocket", b"chunked", b"timeout=5", b""])
def test_connection_specific_fields(name: bytes, value: bytes) -> None:
    # RFC 9113 §8.2.2: connection-specific fields make the request malformed.
    assert_malformed(block((name, value)))


@pytest.mark.parametrize("value", [b"trailers", b"Trailers", b"TRAILERS"])
def test_te_trailers_is_allowed(value: bytes) -> None:
    # RFC 9113 §8.2.2: TE MAY be present with the value "trailers".
    head = parse_h2_request_head(block((b"te", value)))
    assert head.get(b"te") == value


@pytest.mark.parametrize(
    "value", [b"gzip", b"trailers, gzip", b"gzip, trailers", b"trailers;q=0.5", b"", b"chunked"]
)
def test_te_other_than_trailers(value: bytes) -> None:
    # RFC 9113 §8.2.2: TE MUST NOT contain any value other than "trailers".
    assert_malformed(block((b"te", value)))


@pytest.mark.parametrize(
    "name", [b"connectionx", b"x-upgrade", b"keep-alive-x", b"tee", b"transfer-encodings"]
)
def test_similar_names_are_not_connection_specific(name: bytes) -> None:
    head = parse_h2_request_head(block((name, b"gzip")))
    assert head.get(name) == b"gzip"


# ---- rule 4: :authority and host ---------------------------------------------------------


@pytest.mark.parametrize(
    "authority",
    [
        b"user@example.com",
        b"user:pass@example.com",
        b"user:pass@example.com:443",
        b"@example.com",
        b"exa mple.com",
        b"example.com :443",
        b"example.com\t:443",
        b"example.com/chat",
        b"example.com?x",
        b"example.com#x",
        b"",
        b"example.com:443:1",
        b"example.com:abc",
        b"[::1",
        b"::1",
        b"ex\x7fample.com",
        b"ex\x80ample.com",
        b"example.com\\evil.com",
    ],
)
def test_bad_authority(authority: bytes) -> None:
    # RFC 9113 §8.3.1: :authority MUST NOT include the deprecated userinfo subcomponent;
    # RFC 3986 §3.2: authority is host[:port], no whitespace.
    assert_malformed(block(authority=authority))


@pytest.mark.parametrize(
    "authority",
    [
        b"example.com",
        b"EXAMPLE.com",
        b"example.com:8443",
        b"example.com:",
        b"localhost",
        b"127.0.0.1",
        b"127.0.0.1:80",
        b"[::1]",
        b"[::1]:8443",
        b"[2001:db8::1]:443",
        b"[::ffff:192.0.2.1]",
        b"xn--bcher-kva.example",
        b"my_host.internal",
        b"%65xample.com",
    ],
)
def test_good_authority(authority: bytes) -> None:
    head = parse_h2_request_head(block(authority=authority))
    assert head.authority == authority


@pytest.mark.parametrize(
    ("authority", "host"),
    [
        (b"example.com", b"example.com"),
        (b"example.com", b"EXAMPLE.COM"),
        (b"Example.Com:8443", b"example.com:8443"),
        (b"[::1]:8443", b"[::1]:8443"),
        (b"[::A]", b"[::a]"),
    ],
)
def test_host_equal_to_authority(authority: bytes, host: bytes) -> None:
    head = parse_h2_request_head(block((b"x-a", b"1"), (b"host", host), authority=authority))
    # :authority is authoritative; host is kept apart and removed from the regular fields.
    assert head.authority == authority
    assert head.host == host
    assert head.target_authority == authority
    assert head.get(b"host") is None
    assert head.headers == ((b"x-a", b"1"),)


@pytest.mark.parametrize(
    ("authority", "host"),
    [
        (b"example.com", b"evil.com"),
        (b"example.com", b"example.com:8443"),
        (b"example.com:8443", b"example.com"),
        (b"example.com", b"example.co"),
        (b"example.com", b"example.com."),
        (b"example.com", b"user@example.com"),
        (b"[::1]:8443", b"[::2]:8443"),
    ],
)
def test_host_different_from_authority(authority: bytes, host: bytes) -> None:
    # RFC 9113 §8.3.1: a Host that identifies a different entity than :authority is
    # treated as malformed (we treat every textual difference but case as different).
    assert_malformed(block((b"host", host), authority=authority))


@pytest.mark.parametrize("host", [b"example.com", b"example.com:8443", b"[::1]:8443"])
def test_host_is_target_authority_when_authority_absent(host: bytes) -> None:
    # :authority stays None (it is only the pseudo-header); host is kept apart and is the
    # target authority (RFC 9113 §8.3.1).
    head = parse_h2_request_head(block((b"origin", b"x"), (b"host", host), authority=None))
    assert head.authority is None
    assert head.host == host
    assert head.target_authority == host
    assert head.get(b"host") is None
    assert head.headers == ((b"origin", b"x"),)


def test_host_without_authority_on_get() -> None:
    head = parse_h2_request_head(
        [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":path", b"/"),
            (b"host", b"Example.com:8443"),
            (b"accept", b"*/*"),
        ]
    )
    assert head.authority is None
    assert head.host == b"Example.com:8443"
    assert head.target_authority == b"Example.com:8443"
    assert head.headers == ((b"accept", b"*/*"),)


@pytest.mark.parametrize(
    "host", [b"user@example.com", b"exa mple.com", b"example.com/x", b"", b"a:b:c"]
)
def test_bad_host_without_authority(host: bytes) -> None:
    # RFC 9113 §8.3.1 / RFC 3986 §3.2: the same rules when host stands in for :authority.
    assert_malformed(block((b"host", host), authority=None))


def test_host_repeated() -> None:
    # RFC 9110 §7.2: Host is a singleton field.
    assert_malformed(block((b"host", b"example.com"), (b"host", b"example.com"), authority=None))


def test_no_authority_and_no_host() -> None:
    head = parse_h2_request_head(block(authority=None))
    assert head.authority is None
    assert head.host is None
    assert head.target_authority is None


# ---- rule 5: :path -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        b"/a b",
        b"/chat HTTP/1.1",
        b"/a\rb",
        b"/a\nb",
        b"/a\x00",
        b"/a\tb",
        b"/a\x01b",
        b"/a\x1f",
        b"/a\x7f",
        b"/\x80",
        b"/caf\xc3\xa9",
        b"/\xff",
        b"",
        b"chat",
        b"chat/room",
        b"?x=1",
        b"http://example.com/chat",
    ],
)
def test_bad_path(path: bytes) -> None:
    # :path must be visible ASCII (no SP/controls/0x80+, they would split or corrupt the
    # HTTP/1.1 request line, RFC 9112 §3) and start with "/" (RFC 9113 §8.3.1).
    assert_malformed(block(path=path))


@pytest.mark.parametrize(
    "path",
    [
        b"/",
        b"//",
        b"/chat",
        b"/chat?room=1&x=%20y",
        b"/a/b;c=d",
        b"/~user/!$&'()*+,;=:@",
        b"/%E2%82%AC",
        b"/" + b"a" * 4096,
        b"/#frag",
    ],
)
def test_good_path(path: bytes) -> None:
    head = parse_h2_request_head(block(path=path))
    assert head.path == path


def test_asterisk_path_with_options() -> None:
    # RFC 9113 §8.3.1: "*" is the :path of a server-wide OPTIONS request.
    head = parse_h2_request_head(block(method=b"OPTIONS", protocol=None, path=b"*"))
    assert head.path == b"*"
    assert head.method == b"OPTIONS"


@pytest.mark.parametrize("method", [b"GET", b"CONNECT", b"POST", b"options", b"HEAD"])
def test_asterisk_path_only_with_options(method: bytes) -> None:
    # RFC 9113 §8.3.1: "*" only for OPTIONS; anything else must start with "/".
    # (:protocol only on CONNECT, so that the :path rule is the one that refuses.)
    protocol = PSEUDO[b":protocol"] if method == b"CONNECT" else None
    assert_malformed(
        block(method=method, path=b"*", protocol=protocol), ":path does not start with '/'"
    )


@pytest.mark.parametrize("path", [b"**", b"*/", b"*x"])
def test_asterisk_forms_with_options(path: bytes) -> None:
    assert_malformed(block(method=b"OPTIONS", protocol=None, path=path))


# ---- :method -----------------------------------------------------------------------------


def test_method_missing() -> None:
    # RFC 9113 §8.3.1: every request MUST include :method.
    assert_malformed(block(method=None))


def test_method_missing_without_any_pseudo() -> None:
    assert_malformed([(b"x-a", b"1")])


def test_empty_block() -> None:
    assert_malformed([])


@pytest.mark.parametrize(
    "method",
    [b"", b"GE T", b"GET/", b"G(ET)", b"GET,POST", b"G\x7fET", b"G\x80ET", b"GET:", b'G"ET'],
)
def test_method_not_a_token(method: bytes) -> None:
    # RFC 9110 §9.1: method = token.
    assert_malformed(block(method=method))


@pytest.mark.parametrize(
    "method", [b"GET", b"CONNECT", b"OPTIONS", b"PATCH", b"get", b"M-SEARCH", b"X!#$%&'*+.^_`|~"]
)
def test_method_token(method: bytes) -> None:
    # :protocol is only for CONNECT (RFC 8441 §4), so the other methods go without it.
    protocol = PSEUDO[b":protocol"] if method == b"CONNECT" else None
    head = parse_h2_request_head(block(method=method, protocol=protocol))
    assert head.method == method
    assert head.protocol == protocol


# ---- first violation wins, but every violation is a 400 stream error ---------------------


@pytest.mark.parametrize(
    "headers",
    [
        [(b":method", b"GET"), (b"X", b"1")],
        [(b":method", b"GET"), (b":path", b"/a\x00")],
        [(b":status", b"200")],
        [(b"connection", b"close"), (b":method", b"GET")],
    ],
)
def test_every_violation_is_a_stream_error(headers: list[Header]) -> None:
    assert_malformed(headers)


@given(st.binary(max_size=6), st.sampled_from([b"", b" ", b"\t", b"\r", b"\n", b"\x00", b"a"]))
def test_suspect_value_screen_catches_every_bad_value(middle: bytes, edge: bytes) -> None:
    # parse_h2_request_head runs the detailed value checks only on values the screen flags.
    from h2ws_proxy.http import request_head as h2_request

    for value in (middle, edge + middle, middle + edge, edge + middle + edge):
        try:
            h2_request._check_value(b"x", value)
            broken = False
        except ClientProtocolError:
            broken = True
        assert broken == bool(h2_request._SUSPECT_VALUE.search(value)), value


# ---- heads that passed are remembered, within bounds ----


def test_a_head_that_passed_is_remembered_and_a_bad_one_is_checked_every_time() -> None:
    first = parse_h2_request_head(block((b"x-memo", b"1")))
    again = parse_h2_request_head(block((b"x-memo", b"1")))
    assert again is first
    assert again == h2_request._check_head(block((b"x-memo", b"1")))
    for _ in range(2):
        with pytest.raises(ClientProtocolError):
            parse_h2_request_head(block((b"x-memo", b"1"), (b"connection", b"close")))


def test_the_memory_of_heads_stays_bounded() -> None:
    for index in range(3 * h2_request._PASSED_MAX_HEADS):
        parse_h2_request_head(block((b"x-memo", str(index).encode())))
        assert len(h2_request._PASSED) <= h2_request._PASSED_MAX_HEADS
    big = block((b"x-big", b"b" * h2_request._PASSED_MAX_BYTES))
    parse_h2_request_head(big)
    assert tuple(big) not in h2_request._PASSED
