"""handshake.py: WebSocket opening handshakes, RFC 8441 / RFC 6455 on both legs. Pure.

The accept-token oracle is wsproto's ``generate_accept_token``, checked against the sample
in RFC 6455 §1.3.
"""

from __future__ import annotations

import base64
import dataclasses
import os

import h11
import pytest
from wsproto.utilities import generate_accept_token

from h2ws_proxy.config import BackendGroup, RouteConfig, parse_backend
from h2ws_proxy.errors import BackendProtocolError, ClientProtocolError
from h2ws_proxy.http import backend_handshake, handshake
from h2ws_proxy.http.backend_handshake import (
    accept_token,
    build_backend_upgrade,
    check_backend_accept,
    new_websocket_key,
)
from h2ws_proxy.http.fields import (
    HOP_BY_HOP,
    end_to_end_request_headers,
    end_to_end_response_headers,
    split_header_list,
)
from h2ws_proxy.http.handshake import (
    BackendAccepted,
    WebSocketRequest,
    h1_switching_headers,
    h2_success_headers,
    parse_extended_connect,
    parse_h1_upgrade,
)
from h2ws_proxy.http.request_head import H2RequestHead, parse_h2_request_head
from h2ws_proxy.http.upgrade_wire import UpgradeRequest

Header = tuple[bytes, bytes]

# RFC 6455 §1.3
SAMPLE_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
SAMPLE_ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
CLIENT_KEY = base64.b64encode(bytes(range(16)))
OUR_KEY = base64.b64encode(bytes(range(100, 116)))
CLIENT_ADDRESS = "203.0.113.7"
VERSION_HEADER = ((b"sec-websocket-version", b"13"),)


def route(*, x_forwarded: bool = True, backend: str = "http://127.0.0.1:9000") -> RouteConfig:
    return RouteConfig(
        path="/", backend=BackendGroup.of(parse_backend(backend)), x_forwarded=x_forwarded
    )


def h2_block(*regular: Header, **replace: bytes | None) -> list[Header]:
    """An RFC 8441 extended CONNECT header block, exactly the ``regular`` fields given."""
    pseudo: dict[bytes, bytes] = {
        b":method": b"CONNECT",
        b":protocol": b"websocket",
        b":scheme": b"https",
        b":authority": b"example.com",
        b":path": b"/chat?room=1",
    }
    for key, value in replace.items():
        name = b":" + key.encode()
        if value is None:
            pseudo.pop(name, None)
        else:
            pseudo[name] = value
    return [*pseudo.items(), *regular]


def h2_head(*regular: Header, **replace: bytes | None) -> H2RequestHead:
    """An RFC 8441 extended CONNECT, through the real header-block parser."""
    if not any(name == b"sec-websocket-version" for name, _ in regular):
        regular = ((b"sec-websocket-version", b"13"), *regular)
    return parse_h2_request_head(h2_block(*regular, **replace))


def connect(head: H2RequestHead, *, enabled: bool = True, tls: bool = True) -> WebSocketRequest:
    return parse_extended_connect(head, connect_protocol_enabled=enabled, tls=tls)


H1_BASE: list[Header] = [
    (b"Host", b"example.com"),
    (b"Upgrade", b"websocket"),
    (b"Connection", b"Upgrade"),
    (b"Sec-WebSocket-Key", CLIENT_KEY),
    (b"Sec-WebSocket-Version", b"13"),
]


def h1_request(
    *extra: Header,
    method: bytes = b"GET",
    target: bytes = b"/chat?room=1",
    drop: tuple[bytes, ...] = (),
    base: list[Header] | None = None,
) -> h11.Request:
    """A classic upgrade; ``drop`` removes base fields by lowercase name."""
    headers = [(n, v) for n, v in (H1_BASE if base is None else base) if n.lower() not in drop]
    return h11.Request(method=method, target=target, headers=[*headers, *extra])


def ws_request(
    *headers: Header,
    authority: bytes | None = b"example.com",
    scheme: bytes = b"https",
    path: bytes = b"/chat?room=1",
    subprotocols: tuple[bytes, ...] = (),
    extension_names: tuple[bytes, ...] = (),
) -> WebSocketRequest:
    return WebSocketRequest(
        front="h2",
        scheme=scheme,
        authority=authority,
        path=path,
        subprotocols=subprotocols,
        extension_names=extension_names,
        headers=tuple(headers),
    )


def serialize(request: UpgradeRequest) -> bytes:
    """The bytes the proxy puts on the wire, checked to be those h11 would write (h11
    validates the request on the way)."""
    as_h11 = h11.Request(
        method=request.method, target=request.target, headers=list(request.headers)
    )
    data = h11.Connection(h11.CLIENT).send(as_h11)
    assert data is not None
    assert request.data == data
    return data


def wire_headers(data: bytes) -> tuple[bytes, list[Header]]:
    """Split serialized request bytes into the request line and (lowercase name, value)."""
    assert data.endswith(b"\r\n\r\n")
    lines = data[:-4].split(b"\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.lower(), value.strip()))
    return lines[0], headers


def values(headers: list[Header] | tuple[Header, ...], name: bytes) -> list[bytes]:
    return [value for field, value in headers if field == name]


def backend_101(*extra: Header, key: bytes = OUR_KEY, accept: bool = True) -> list[Header]:
    headers: list[Header] = [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")]
    if accept:
        headers.append((b"Sec-WebSocket-Accept", generate_accept_token(key)))
    return [*headers, *extra]


def response(headers: list[Header]) -> h11.InformationalResponse:
    return h11.InformationalResponse(status_code=101, headers=headers)


def accept(
    headers: list[Header], request: WebSocketRequest | None = None, key: bytes = OUR_KEY
) -> BackendAccepted:
    return check_backend_accept(response(headers), key, request or ws_request())


# ---- the accept-token oracle -------------------------------------------------------------


def test_rfc6455_sample_accept_token() -> None:
    # RFC 6455 §1.3: the worked example.
    assert generate_accept_token(SAMPLE_KEY) == SAMPLE_ACCEPT


def test_our_accept_token_is_wsprotos() -> None:
    """``accept_token`` is wsproto's ``generate_accept_token`` without its frames: the same
    token for the RFC's sample and for our own keys (and the keys are 16 random bytes in
    base64, RFC 6455 §4.1 item 7, all different)."""
    assert accept_token(SAMPLE_KEY) == SAMPLE_ACCEPT
    keys = [new_websocket_key() for _ in range(600)]  # past one bulk draw of randomness
    assert len(set(keys)) == len(keys)
    for key in keys:
        assert len(base64.b64decode(key, validate=True)) == 16
        assert base64.b64encode(base64.b64decode(key)) == key
        assert accept_token(key) == generate_accept_token(key)


def test_backend_accept_with_rfc6455_sample() -> None:
    accepted = check_backend_accept(
        response(
            [
                (b"Upgrade", b"websocket"),
                (b"Connection", b"Upgrade"),
                (b"Sec-WebSocket-Accept", SAMPLE_ACCEPT),
            ]
        ),
        SAMPLE_KEY,
        ws_request(),
    )
    assert accepted.subprotocol is None


def test_h1_switching_headers_with_rfc6455_sample() -> None:
    accepted = BackendAccepted(subprotocol=None, extensions=None, headers=())
    headers = h1_switching_headers(accepted, SAMPLE_KEY)
    assert values(headers, b"sec-websocket-accept") == [SAMPLE_ACCEPT]


# ---- split_header_list -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ([], ()),
        ([b""], ()),
        ([b" , ,, "], ()),
        ([b"a"], (b"a",)),
        ([b"a,b"], (b"a", b"b")),
        ([b" a ,\tb\t, c "], (b"a", b"b", b"c")),
        ([b"a", b"b, c", b"", b" d "], (b"a", b"b", b"c", b"d")),
        ([b"chat, chat"], (b"chat", b"chat")),
        ([b"Upgrade"], (b"Upgrade",)),  # no case folding
    ],
)
def test_split_header_list(given: list[bytes], expected: tuple[bytes, ...]) -> None:
    assert split_header_list(given) == expected


# ---- extended CONNECT (RFC 8441) ---------------------------------------------------------


@pytest.mark.parametrize(("tls", "scheme"), [(True, b"https"), (False, b"http")])
def test_extended_connect_happy_path(tls: bool, scheme: bytes) -> None:
    head = h2_head(
        (b"origin", b"https://example.com"),
        (b"sec-websocket-protocol", b"chat, superchat"),
        (b"sec-websocket-protocol", b"v2.json ,,"),
        (b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits"),
        (b"sec-websocket-extensions", b"X-Custom-Ext; a=1, Foo"),
        (b"cookie", b"a=1; b=2"),
        (b"user-agent", b"test/1"),
        (b"te", b"trailers"),
        (b"trailer", b"x-checksum"),
        (b"proxy-authorization", b"Basic Zm9vOmJhcg=="),
        (b"proxy-authenticate", b"Basic"),
        (b"sec-websocket-key", CLIENT_KEY),
        (b"sec-websocket-accept", b"bogus"),
        (b"x-forwarded-proto", b"gopher"),
        (b"x-forwarded-host", b"evil.example"),
        (b"x-custom", b"1"),
        # The :scheme the client sends does not decide `scheme`; the listener does.
        scheme=b"https" if not tls else b"http",
    )
    assert head.authority == b"example.com"
    request = connect(head, tls=tls)
    assert request.front == "h2"
    assert request.scheme == scheme
    assert request.authority == b"example.com"
    assert request.path == b"/chat?room=1"
    assert request.subprotocols == (b"chat", b"superchat", b"v2.json")
    assert request.extension_names == (b"permessage-deflate", b"x-custom-ext", b"foo")
    assert request.headers == (
        (b"origin", b"https://example.com"),
        (b"sec-websocket-protocol", b"chat, superchat"),
        (b"sec-websocket-protocol", b"v2.json ,,"),
        (b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits"),
        (b"sec-websocket-extensions", b"X-Custom-Ext; a=1, Foo"),
        (b"cookie", b"a=1; b=2"),
        (b"user-agent", b"test/1"),
        # Kept here: build_backend_upgrade decides about X-Forwarded-* (route.x_forwarded).
        (b"x-forwarded-proto", b"gopher"),
        (b"x-forwarded-host", b"evil.example"),
        (b"x-custom", b"1"),
    )


def test_extended_connect_minimal() -> None:
    request = connect(h2_head())
    assert request.subprotocols == ()
    assert request.extension_names == ()
    # sec-websocket-version is ours to set toward the backend.
    assert request.headers == ()


@pytest.mark.parametrize(
    "name",
    # The hop-by-hop fields the HTTP/2 parser lets through (RFC 9113 §8.2.2 refuses the
    # others outright), and the fields the proxy sets itself.
    [
        b"te",
        b"trailer",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-accept",
    ],
)
def test_extended_connect_drops_hop_by_hop_and_proxy_owned(name: bytes) -> None:
    value = b"trailers" if name == b"te" else b"13"
    request = connect(h2_head((name, value), (b"x-keep", b"1")))
    assert request.headers == ((b"x-keep", b"1"),)


def test_extended_connect_keeps_client_x_forwarded() -> None:
    # The client's X-Forwarded-* reach build_backend_upgrade unchanged and in order: it
    # replaces them or passes them on depending on route.x_forwarded.
    client = (
        (b"x-forwarded-proto", b"gopher"),
        (b"x-forwarded-for", b"198.51.100.1"),
        (b"x-keep", b"1"),
        (b"x-forwarded-host", b"evil.example"),
        (b"x-forwarded-for", b"192.0.2.9"),
    )
    request = connect(h2_head(*client))
    assert request.headers == client


def test_extended_connect_advertisement_off() -> None:
    # RFC 8441 §3: :protocol MUST NOT be sent unless SETTINGS_ENABLE_CONNECT_PROTOCOL was
    # advertised; a request that does is malformed (RFC 9113 §8.1.1 stream error).
    with pytest.raises(ClientProtocolError) as info:
        connect(h2_head(), enabled=False)
    assert info.value.status_hint == 400
    assert info.value.stream_error is True


@pytest.mark.parametrize("method", [b"GET", b"POST", b"OPTIONS", b"connect"])
def test_protocol_on_non_connect(method: bytes) -> None:
    # RFC 8441 §4: :protocol is only for CONNECT; otherwise the request is malformed.
    # The header-block parser refuses it first ...
    with pytest.raises(ClientProtocolError) as info:
        connect(h2_head(method=method))
    assert info.value.status_hint == 400
    assert info.value.stream_error is True
    # ... and parse_extended_connect refuses it on its own too.
    with pytest.raises(ClientProtocolError) as info:
        connect(dataclasses.replace(h2_head(), method=method))
    assert info.value.status_hint == 400
    assert info.value.stream_error is True


@pytest.mark.parametrize("missing", ["scheme", "path", "authority"])
def test_extended_connect_missing_pseudo(missing: str) -> None:
    # RFC 8441 §4: :scheme and :path MUST be included; RFC 9113 §8.5: CONNECT's :authority.
    with pytest.raises(ClientProtocolError) as info:
        connect(h2_head(**{missing: None}))
    assert info.value.status_hint == 400
    assert info.value.stream_error is True


@pytest.mark.parametrize(
    "head",
    [
        dataclasses.replace(h2_head(), scheme=None),
        dataclasses.replace(h2_head(), path=None),
        dataclasses.replace(h2_head(), authority=None),
    ],
    ids=["scheme", "path", "authority"],
)
def test_extended_connect_missing_pseudo_checked_here_too(head: H2RequestHead) -> None:
    # The header-block parser refuses a missing :scheme or :path first; parse_extended_connect
    # must refuse a head without them (or without :authority) on its own too.
    with pytest.raises(ClientProtocolError) as info:
        connect(head)
    assert info.value.status_hint == 400
    assert info.value.stream_error is True


@pytest.mark.parametrize("host", [b"example.com", b"example.com:443"])
def test_extended_connect_host_field_is_not_authority(host: bytes) -> None:
    # RFC 8441 §4: the :authority pseudo-header names the target; a host field alone is not
    # enough.
    head = h2_head((b"host", host), authority=None)
    assert head.host == host
    assert head.target_authority == host
    with pytest.raises(ClientProtocolError) as info:
        connect(head)
    assert info.value.status_hint == 400
    assert info.value.stream_error is True


@pytest.mark.parametrize("length", [b"0", b"5"])
def test_extended_connect_content_length(length: bytes) -> None:
    with pytest.raises(ClientProtocolError) as info:
        connect(h2_head((b"content-length", length)))
    assert info.value.status_hint == 400
    assert info.value.stream_error is True


@pytest.mark.parametrize("protocol", [b"websocket2", b"webtransport", b"connect-udp", b"ws"])
def test_extended_connect_other_protocol(protocol: bytes) -> None:
    with pytest.raises(ClientProtocolError) as info:
        connect(h2_head(protocol=protocol))
    assert info.value.status_hint == 501
    assert info.value.stream_error is False


@pytest.mark.parametrize("protocol", [b"websocket", b"WebSocket", b"WEBSOCKET"])
def test_extended_connect_protocol_case_insensitive(protocol: bytes) -> None:
    request = connect(h2_head(protocol=protocol))
    assert request.path == b"/chat?room=1"


@pytest.mark.parametrize(
    "versions",
    [
        [],
        [b"8"],
        [b"12"],
        [b"14"],
        [b""],
        [b"13, 8"],
        [b"013"],
        # Exactly one sec-websocket-version, and it is 13.
        [b"13", b"8"],
        [b"8", b"13"],
        [b"13", b"13"],
    ],
)
def test_extended_connect_bad_version(versions: list[bytes]) -> None:
    # RFC 6455 §4.4 (RFC 8441 §5): answer with the version we speak.
    head = parse_h2_request_head(h2_block(*[(b"sec-websocket-version", v) for v in versions]))
    assert head.get_all(b"sec-websocket-version") == versions
    with pytest.raises(ClientProtocolError) as info:
        connect(head)
    assert info.value.status_hint == 400
    assert info.value.extra_headers == VERSION_HEADER
    assert info.value.stream_error is False


# ---- HTTP/1.1 upgrade (RFC 6455 §4.2.1) --------------------------------------------------


@pytest.mark.parametrize(("tls", "scheme"), [(True, b"https"), (False, b"http")])
def test_h1_upgrade_happy_path(tls: bool, scheme: bytes) -> None:
    request, key = parse_h1_upgrade(
        h1_request(
            (b"Origin", b"https://example.com"),
            (b"Sec-WebSocket-Protocol", b"chat, superchat"),
            (b"Sec-WebSocket-Protocol", b"v2.json"),
            (b"Sec-WebSocket-Extensions", b"permessage-deflate; client_max_window_bits"),
            (b"Cookie", b"a=1"),
        ),
        tls=tls,
    )
    assert key == CLIENT_KEY
    assert request.front == "h1"
    assert request.scheme == scheme
    assert request.authority == b"example.com"
    assert request.path == b"/chat?room=1"
    assert request.subprotocols == (b"chat", b"superchat", b"v2.json")
    assert request.extension_names == (b"permessage-deflate",)
    assert request.headers == (
        (b"origin", b"https://example.com"),
        (b"sec-websocket-protocol", b"chat, superchat"),
        (b"sec-websocket-protocol", b"v2.json"),
        (b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits"),
        (b"cookie", b"a=1"),
    )


def test_h1_upgrade_rfc6455_sample_key() -> None:
    base = [(n, SAMPLE_KEY if n == b"Sec-WebSocket-Key" else v) for n, v in H1_BASE]
    _, key = parse_h1_upgrade(h1_request(base=base), tls=False)
    assert key == SAMPLE_KEY


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"HEAD", b"OPTIONS", b"get"])
def test_h1_upgrade_not_get(method: bytes) -> None:
    # RFC 6455 §4.1 item 2 / §4.2.1 item 1: the handshake is a GET.
    with pytest.raises(ClientProtocolError) as info:
        parse_h1_upgrade(h1_request(method=method), tls=False)
    assert info.value.status_hint == 400


@pytest.mark.parametrize(
    "body_header",
    [(b"Content-Length", b"0"), (b"Content-Length", b"5"), (b"Transfer-Encoding", b"chunked")],
)
def test_h1_upgrade_with_body_headers(body_header: Header) -> None:
    with pytest.raises(ClientProtocolError) as info:
        parse_h1_upgrade(h1_request(body_header), tls=False)
    assert info.value.status_hint == 400


@pytest.mark.parametrize(
    ("drop", "extra"),
    [
        ((b"upgrade",), ()),
        ((b"upgrade",), ((b"Upgrade", b"h2c"),)),
        ((b"upgrade",), ((b"Upgrade", b"websocket2"),)),
        ((b"upgrade",), ((b"Upgrade", b"web socket"),)),
        ((b"connection",), ()),
        ((b"connection",), ((b"Connection", b"keep-alive"),)),
        ((b"connection",), ((b"Connection", b"close"),)),
        ((b"connection",), ((b"Connection", b"upgrades"),)),
    ],
)
def test_h1_upgrade_missing_tokens(drop: tuple[bytes, ...], extra: tuple[Header, ...]) -> None:
    # RFC 6455 §4.2.1 items 3 and 4.
    with pytest.raises(ClientProtocolError) as info:
        parse_h1_upgrade(h1_request(*extra, drop=drop), tls=False)
    assert info.value.status_hint == 400


@pytest.mark.parametrize(
    ("upgrade", "connection"),
    [
        ([b"websocket"], [b"Upgrade"]),
        ([b"WebSocket"], [b"upgrade"]),
        ([b"WEBSOCKET"], [b"UPGRADE"]),
        ([b"foo, websocket"], [b"keep-alive, Upgrade"]),
        ([b"websocket"], [b"keep-alive", b"Upgrade"]),
        ([b"h2c", b"websocket"], [b"Upgrade, keep-alive"]),
    ],
)
def test_h1_upgrade_token_variants(upgrade: list[bytes], connection: list[bytes]) -> None:
    extra = [(b"Upgrade", v) for v in upgrade] + [(b"Connection", v) for v in connection]
    request, key = parse_h1_upgrade(h1_request(*extra, drop=(b"upgrade", b"connection")), tls=False)
    assert key == CLIENT_KEY
    assert request.headers == ()


@pytest.mark.parametrize(
    "versions", [[], [b"8"], [b"12"], [b"14"], [b"13, 8"], [b"13", b"13"], [b"13", b"8"]]
)
def test_h1_upgrade_wrong_version(versions: list[bytes]) -> None:
    # RFC 6455 §4.2.2 item 4 / §4.4: 426 Upgrade Required with the version we speak.
    extra = [(b"Sec-WebSocket-Version", v) for v in versions]
    with pytest.raises(ClientProtocolError) as info:
        parse_h1_upgrade(h1_request(*extra, drop=(b"sec-websocket-version",)), tls=False)
    assert info.value.status_hint == 426
    assert info.value.extra_headers == VERSION_HEADER


@pytest.mark.parametrize(
    "keys",
    [
        [],
        [b""],
        [b"not base64 at all"],
        [b"dGhlIHNhbXBsZSBub25jZQ"],  # the sample without its padding
        [b"dGhlIHNhbXBsZSBub25jZQ=!"],
        [b"dGhlIHNhbXBsZSBub25jZQ==="],
        [base64.b64encode(bytes(15))],
        [base64.b64encode(bytes(17))],
        [base64.b64encode(bytes(32))],
        [base64.urlsafe_b64encode(b"\xff" * 16)],  # "-" and "_" are not base64
        [CLIENT_KEY, CLIENT_KEY],
        [CLIENT_KEY, SAMPLE_KEY],
    ],
)
def test_h1_upgrade_bad_key(keys: list[bytes]) -> None:
    # RFC 6455 §4.2.1 item 5: exactly one key, base64 of a 16-byte value.
    extra = [(b"Sec-WebSocket-Key", k) for k in keys]
    with pytest.raises(ClientProtocolError) as info:
        parse_h1_upgrade(h1_request(*extra, drop=(b"sec-websocket-key",)), tls=False)
    assert info.value.status_hint == 400


@pytest.mark.parametrize("raw", [bytes(16), b"\xff" * 16, bytes(range(16)), b"0123456789abcdef"])
def test_h1_upgrade_good_keys(raw: bytes) -> None:
    key = base64.b64encode(raw)
    _, got = parse_h1_upgrade(
        h1_request((b"Sec-WebSocket-Key", key), drop=(b"sec-websocket-key",)), tls=False
    )
    assert got == key


def test_h1_upgrade_drops_connection_listed_fields() -> None:
    # RFC 9110 §7.6.1: fields named in Connection are hop-by-hop.
    request, _ = parse_h1_upgrade(
        h1_request(
            (b"Connection", b"Keep-Alive, X-Hop-One"),
            (b"Keep-Alive", b"timeout=5"),
            (b"X-Hop-One", b"1"),
            (b"X-Hop-Two", b"2"),
            (b"X-End", b"3"),
            (b"TE", b"trailers"),
            (b"Proxy-Authorization", b"Basic eDp5"),
            (b"Connection", b"x-hop-two"),
        ),
        tls=False,
    )
    assert request.headers == ((b"x-end", b"3"),)


def test_h1_upgrade_drops_proxy_owned_fields_keeps_x_forwarded() -> None:
    request, _ = parse_h1_upgrade(
        h1_request(
            (b"X-Forwarded-Proto", b"gopher"),
            (b"X-Forwarded-Host", b"evil.example"),
            (b"Sec-WebSocket-Accept", b"bogus"),
            (b"X-Forwarded-For", b"198.51.100.1"),
        ),
        tls=True,
    )
    # X-Forwarded-* are kept here, in order: build_backend_upgrade replaces or passes them
    # depending on route.x_forwarded.
    assert request.headers == (
        (b"x-forwarded-proto", b"gopher"),
        (b"x-forwarded-host", b"evil.example"),
        (b"x-forwarded-for", b"198.51.100.1"),
    )


def test_h1_upgrade_without_host_is_refused_by_h11() -> None:
    # RFC 9112 §3.2: HTTP/1.1 requests carry Host; h11 enforces it before we see them.
    with pytest.raises(h11.LocalProtocolError):
        h1_request(drop=(b"host",))


def test_h1_upgrade_without_host_http10() -> None:
    # h11 lets an HTTP/1.0 request without Host through; parse_h1_upgrade still needs one.
    headers = [(n, v) for n, v in H1_BASE if n.lower() != b"host"]
    request = h11.Request(method=b"GET", target=b"/chat", headers=headers, http_version=b"1.0")
    with pytest.raises(ClientProtocolError) as info:
        parse_h1_upgrade(request, tls=False)
    assert info.value.status_hint == 400


def test_h1_upgrade_two_hosts() -> None:
    # RFC 9112 §3.2: more than one Host is a 400. h11 refuses it on construction, so the
    # second one is slipped in behind its back to test parse_h1_upgrade's own check.
    request = h1_request()
    object.__setattr__(request, "headers", [*request.headers, (b"host", b"example.com")])
    with pytest.raises(ClientProtocolError) as info:
        parse_h1_upgrade(request, tls=False)
    assert info.value.status_hint == 400


@pytest.mark.parametrize(
    "host",
    [
        b"",
        b"user@example.com",
        b"exa mple.com",
        b"example.com/chat",
        b"example.com:abc",
        b"example.com:443:1",
        b"[::1",
        b"a:b:c",
    ],
)
def test_h1_upgrade_invalid_host(host: bytes) -> None:
    # RFC 9112 §3.2: a Host with an invalid value is a 400.
    request = h1_request((b"Host", host), drop=(b"host",))
    with pytest.raises(ClientProtocolError) as info:
        parse_h1_upgrade(request, tls=False)
    assert info.value.status_hint == 400


@pytest.mark.parametrize(
    "host", [b"example.com:8443", b"EXAMPLE.com", b"127.0.0.1", b"[::1]:8443", b"localhost"]
)
def test_h1_upgrade_authority_is_the_host(host: bytes) -> None:
    request, _ = parse_h1_upgrade(h1_request((b"Host", host), drop=(b"host",)), tls=False)
    assert request.authority == host
    assert request.headers == ()


# ---- build_backend_upgrade ---------------------------------------------------------------


def test_backend_upgrade_request_line_and_fields() -> None:
    upgrade = build_backend_upgrade(
        ws_request((b"origin", b"https://example.com"), path=b"/chat/room?x=1&y=%20"),
        route(),
        OUR_KEY,
        CLIENT_ADDRESS,
    )
    assert upgrade.method == b"GET"
    assert upgrade.target == b"/chat/room?x=1&y=%20"
    assert upgrade.http_version == b"1.1"
    headers = list(upgrade.headers)
    assert values(headers, b"host") == [b"example.com"]
    assert values(headers, b"upgrade") == [b"websocket"]
    assert [v.lower() for v in values(headers, b"connection")] == [b"upgrade"]
    assert values(headers, b"sec-websocket-key") == [OUR_KEY]
    assert values(headers, b"sec-websocket-version") == [b"13"]
    assert values(headers, b"origin") == [b"https://example.com"]
    assert values(headers, b"x-forwarded-for") == [CLIENT_ADDRESS.encode()]
    assert values(headers, b"x-forwarded-proto") == [b"https"]
    assert values(headers, b"x-forwarded-host") == [b"example.com"]
    line, wire = wire_headers(serialize(upgrade))
    assert line == b"GET /chat/room?x=1&y=%20 HTTP/1.1"
    assert wire == headers


@pytest.mark.parametrize(
    ("backend", "host"),
    [
        ("http://127.0.0.1:9000", b"127.0.0.1:9000"),
        ("http://backend.internal", b"backend.internal"),
        ("http://backend.internal:80", b"backend.internal"),
        ("http://[::1]:9000", b"[::1]:9000"),
        ("http://[::1]", b"[::1]"),
        ("unix:/run/app.sock", b"localhost"),
    ],
)
def test_backend_host_when_no_authority(backend: str, host: bytes) -> None:
    upgrade = build_backend_upgrade(
        ws_request(authority=None), route(backend=backend), OUR_KEY, CLIENT_ADDRESS
    )
    assert values(list(upgrade.headers), b"host") == [host]
    # Nothing to say about the original host, so no x-forwarded-host.
    assert values(list(upgrade.headers), b"x-forwarded-host") == []
    serialize(upgrade)


def test_client_x_forwarded_host_dropped_when_no_authority() -> None:
    # With x_forwarded on the client's X-Forwarded-Host is replaced; with no authority known
    # there is nothing to replace it with, so none goes out.
    request = ws_request((b"x-forwarded-host", b"evil.example"), authority=None)
    upgrade = build_backend_upgrade(request, route(), OUR_KEY, CLIENT_ADDRESS)
    assert values(list(upgrade.headers), b"x-forwarded-host") == []
    assert values(list(upgrade.headers), b"x-forwarded-proto") == [b"https"]


@pytest.mark.parametrize("authority", [b"example.com", b"example.com:8443", b"[::1]:8443"])
def test_backend_host_from_authority(authority: bytes) -> None:
    upgrade = build_backend_upgrade(
        ws_request(authority=authority), route(backend="http://10.0.0.1:9000"), OUR_KEY, None
    )
    _, wire = wire_headers(serialize(upgrade))
    assert values(wire, b"host") == [authority]


def test_client_key_never_forwarded_h1() -> None:
    request, client_key = parse_h1_upgrade(h1_request(), tls=False)
    data = serialize(build_backend_upgrade(request, route(), OUR_KEY, CLIENT_ADDRESS))
    _, wire = wire_headers(data)
    assert client_key not in data
    assert values(wire, b"sec-websocket-key") == [OUR_KEY]
    assert values(wire, b"sec-websocket-version") == [b"13"]
    assert values(wire, b"host") == [b"example.com"]


def test_client_key_never_forwarded_h2() -> None:
    # RFC 8441 §5: no Sec-WebSocket-Key over HTTP/2; if a client sends one anyway, it stays.
    request = connect(h2_head((b"sec-websocket-key", CLIENT_KEY)))
    data = serialize(build_backend_upgrade(request, route(), OUR_KEY, CLIENT_ADDRESS))
    _, wire = wire_headers(data)
    assert CLIENT_KEY not in data
    assert values(wire, b"sec-websocket-key") == [OUR_KEY]


def test_host_appears_once_even_if_client_repeats_it_h1() -> None:
    # h11 refuses two Host fields on the way in, so only one can come from an HTTP/1.1
    # client; the proxy's own Host is the only one on the way out.
    request, _ = parse_h1_upgrade(h1_request(), tls=False)
    _, wire = wire_headers(serialize(build_backend_upgrade(request, route(), OUR_KEY, None)))
    assert values(wire, b"host") == [b"example.com"]


def test_host_from_h2_host_field() -> None:
    request = connect(h2_head((b"host", b"example.com")))
    _, wire = wire_headers(serialize(build_backend_upgrade(request, route(), OUR_KEY, None)))
    assert values(wire, b"host") == [b"example.com"]


@pytest.mark.parametrize(
    "chain",
    [[], [b"198.51.100.1"], [b"198.51.100.1, 192.0.2.9"], [b"198.51.100.1", b"192.0.2.9"]],
)
def test_x_forwarded_for_is_the_client_address_only(chain: list[bytes]) -> None:
    # The edge does not take a client's word for its address: a chain it brings is dropped.
    request = ws_request(
        *[(b"x-forwarded-for", link) for link in chain],
        (b"forwarded", b"for=198.51.100.9"),
        (b"x-real-ip", b"198.51.100.8"),
    )
    _, wire = wire_headers(
        serialize(build_backend_upgrade(request, route(), OUR_KEY, CLIENT_ADDRESS))
    )
    assert values(wire, b"x-forwarded-for") == [CLIENT_ADDRESS.encode()]
    assert values(wire, b"forwarded") == []
    assert values(wire, b"x-real-ip") == []


def test_x_forwarded_for_ipv6_client() -> None:
    upgrade = build_backend_upgrade(ws_request(), route(), OUR_KEY, "2001:db8::7")
    assert values(list(upgrade.headers), b"x-forwarded-for") == [b"2001:db8::7"]


def test_x_forwarded_for_without_client_address() -> None:
    upgrade = build_backend_upgrade(ws_request(), route(), OUR_KEY, None)
    assert values(list(upgrade.headers), b"x-forwarded-for") == []
    assert values(list(upgrade.headers), b"x-forwarded-proto") == [b"https"]


def test_x_forwarded_for_client_chain_without_client_address() -> None:
    # No address known (in-memory transports): the client's chain is still not passed on.
    request = ws_request((b"x-forwarded-for", b"198.51.100.1"), (b"x-forwarded-for", b"b"))
    upgrade = build_backend_upgrade(request, route(), OUR_KEY, None)
    assert values(list(upgrade.headers), b"x-forwarded-for") == []


@pytest.mark.parametrize(("tls", "proto"), [(True, b"https"), (False, b"http")])
def test_x_forwarded_proto_and_host_replace_client_values_h1(tls: bool, proto: bytes) -> None:
    request, _ = parse_h1_upgrade(
        h1_request(
            (b"X-Forwarded-Proto", b"gopher"),
            (b"X-Forwarded-Host", b"evil.example"),
            (b"X-Forwarded-Proto", b"ftp"),
        ),
        tls=tls,
    )
    _, wire = wire_headers(
        serialize(build_backend_upgrade(request, route(), OUR_KEY, CLIENT_ADDRESS))
    )
    assert values(wire, b"x-forwarded-proto") == [proto]
    assert values(wire, b"x-forwarded-host") == [b"example.com"]
    assert values(wire, b"x-forwarded-for") == [CLIENT_ADDRESS.encode()]


def test_x_forwarded_proto_and_host_replace_client_values_h2() -> None:
    request = connect(
        h2_head(
            (b"x-forwarded-proto", b"gopher"),
            (b"x-forwarded-host", b"evil.example"),
            (b"x-forwarded-for", b"198.51.100.1"),
        ),
        tls=False,
    )
    _, wire = wire_headers(
        serialize(build_backend_upgrade(request, route(), OUR_KEY, CLIENT_ADDRESS))
    )
    assert values(wire, b"x-forwarded-proto") == [b"http"]
    assert values(wire, b"x-forwarded-host") == [b"example.com"]
    assert values(wire, b"x-forwarded-for") == [CLIENT_ADDRESS.encode()]


def test_x_forwarded_off_sends_none_of_ours() -> None:
    request, _ = parse_h1_upgrade(h1_request(), tls=True)
    _, wire = wire_headers(
        serialize(build_backend_upgrade(request, route(x_forwarded=False), OUR_KEY, CLIENT_ADDRESS))
    )
    names = {name for name, _ in wire}
    assert not names & {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}


CLIENT_X_FORWARDED: tuple[Header, ...] = (
    (b"x-forwarded-for", b"198.51.100.1"),
    (b"x-forwarded-proto", b"gopher"),
    (b"x-forwarded-host", b"evil.example"),
    (b"x-forwarded-for", b"192.0.2.9"),
)


@pytest.mark.parametrize("front", ["h1", "h2"])
def test_x_forwarded_off_with_client_supplied_values(front: str) -> None:
    # With x_forwarded off, all the client's X-Forwarded-* pass through unchanged (separate
    # lines, same order, same values) and none of ours is added or appended.
    if front == "h1":
        request, _ = parse_h1_upgrade(h1_request(*CLIENT_X_FORWARDED), tls=True)
    else:
        request = connect(h2_head(*CLIENT_X_FORWARDED))
    data = serialize(
        build_backend_upgrade(request, route(x_forwarded=False), OUR_KEY, CLIENT_ADDRESS)
    )
    _, wire = wire_headers(data)
    assert CLIENT_ADDRESS.encode() not in data
    assert [(n, v) for n, v in wire if n.startswith(b"x-forwarded-")] == list(CLIENT_X_FORWARDED)
    assert wire[-len(CLIENT_X_FORWARDED) :] == list(CLIENT_X_FORWARDED)


def test_backend_upgrade_forwards_end_to_end_in_order() -> None:
    request = connect(
        h2_head(
            (b"origin", b"https://example.com"),
            (b"sec-websocket-protocol", b"chat"),
            (b"sec-websocket-extensions", b"permessage-deflate"),
            (b"cookie", b"a=1; b=2"),
            (b"authorization", b"Bearer t"),
        )
    )
    upgrade = build_backend_upgrade(request, route(), OUR_KEY, CLIENT_ADDRESS)
    _, wire = wire_headers(serialize(upgrade))
    assert wire == [
        (b"host", b"example.com"),
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-key", OUR_KEY),
        (b"sec-websocket-version", b"13"),
        (b"origin", b"https://example.com"),
        (b"sec-websocket-protocol", b"chat"),
        (b"sec-websocket-extensions", b"permessage-deflate"),
        (b"cookie", b"a=1; b=2"),
        (b"authorization", b"Bearer t"),
        (b"x-forwarded-for", b"203.0.113.7"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"example.com"),
    ]


@pytest.mark.parametrize(
    "value",
    [b"a\r\nx-injected: 1", b"a\nx-injected: 1", b"a\rb", b"a\x00b"],
)
def test_h2_injection_attempt_never_reaches_backend(value: bytes) -> None:
    # RFC 9113 §8.2.1: the header-block parser stops CR/LF/NUL first.
    with pytest.raises(ClientProtocolError):
        h2_head((b"x-custom", value))
    with pytest.raises(ClientProtocolError):
        h2_head(path=b"/chat" + value)


@pytest.mark.parametrize("x_forwarded", [True, False])
@pytest.mark.parametrize(
    "request_",
    [
        ws_request((b"x-evil", b"a\r\nx-injected: 1")),
        ws_request((b"x-evil", b"a\nb")),
        ws_request(path=b"/chat HTTP/1.1\r\nx-injected: 1\r\n"),
        ws_request(path=b"/a b"),
        ws_request(authority=b"example.com\r\nx-injected: 1"),
    ],
)
def test_h11_refuses_injection_as_a_last_line_of_defence(
    request_: WebSocketRequest, x_forwarded: bool
) -> None:
    # h11 refuses to build the request; build_backend_upgrade turns that into a client
    # error (400), never an h11 exception escaping to the caller.
    with pytest.raises(ClientProtocolError) as info:
        build_backend_upgrade(request_, route(x_forwarded=x_forwarded), OUR_KEY, CLIENT_ADDRESS)
    assert info.value.status_hint == 400
    assert isinstance(info.value.__cause__, h11.LocalProtocolError)


def test_serialized_upgrade_has_one_field_per_line() -> None:
    request = connect(
        h2_head(
            (b"x-a", b"value with spaces and\ttab"),
            (b"cookie", b"a=1"),
            (b"x-forwarded-for", b"198.51.100.1"),
        )
    )
    upgrade = build_backend_upgrade(request, route(), OUR_KEY, CLIENT_ADDRESS)
    data = serialize(upgrade)
    assert b"\r" not in data.replace(b"\r\n", b"")
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert data.count(b"\r\n") == len(list(upgrade.headers)) + 2
    _, wire = wire_headers(data)
    assert values(wire, b"host") == [b"example.com"]


# ---- check_backend_accept ----------------------------------------------------------------


def test_backend_accept_good() -> None:
    accepted = accept(backend_101((b"Date", b"Thu, 01 Jan 1970 00:00:00 GMT")))
    assert accepted == BackendAccepted(
        subprotocol=None,
        extensions=None,
        headers=((b"date", b"Thu, 01 Jan 1970 00:00:00 GMT"),),
    )


@pytest.mark.parametrize(
    "accept_values",
    [
        [],
        [b""],
        [SAMPLE_ACCEPT],  # valid token, but for another key
        [generate_accept_token(CLIENT_KEY)],  # the client's, not ours
        [generate_accept_token(OUR_KEY).lower()],
        [generate_accept_token(OUR_KEY) + b"="],
        [generate_accept_token(OUR_KEY)[:-1]],
        [base64.b64encode(OUR_KEY)],
        [generate_accept_token(OUR_KEY), generate_accept_token(OUR_KEY)],
        [generate_accept_token(OUR_KEY), SAMPLE_ACCEPT],
        [SAMPLE_ACCEPT, generate_accept_token(OUR_KEY)],
    ],
)
def test_backend_accept_wrong_missing_or_duplicated(accept_values: list[bytes]) -> None:
    # RFC 6455 §4.1: the client MUST fail the connection if the accept is not the token
    # for its own key.
    headers = backend_101(accept=False) + [(b"Sec-WebSocket-Accept", v) for v in accept_values]
    with pytest.raises(BackendProtocolError):
        accept(headers)


@pytest.mark.parametrize("upgrade_values", [[], [b"h2c"], [b"websocket2"], [b""], [b"web socket"]])
def test_backend_accept_without_upgrade_websocket(upgrade_values: list[bytes]) -> None:
    # RFC 6455 §4.1: no "Upgrade: websocket" in the 101 means the connection fails.
    headers = [(n, v) for n, v in backend_101() if n != b"Upgrade"]
    headers += [(b"Upgrade", v) for v in upgrade_values]
    with pytest.raises(BackendProtocolError):
        accept(headers)


@pytest.mark.parametrize("upgrade", [b"websocket", b"WebSocket", b"WEBSOCKET", b"x, websocket"])
def test_backend_accept_upgrade_case_insensitive(upgrade: bytes) -> None:
    headers = [(b"Upgrade", upgrade), *[(n, v) for n, v in backend_101() if n != b"Upgrade"]]
    assert accept(headers).headers == ()


@pytest.mark.parametrize(
    "connection_values",
    [[], [b"keep-alive"], [b"close"], [b"upgrades"], [b""], [b"keep-alive, upgrade2"]],
)
def test_backend_accept_without_connection_upgrade(connection_values: list[bytes]) -> None:
    # RFC 6455 §4.1 (client requirements on the server's response, item 3): "If the
    # response lacks a |Connection| header field or the |Connection| header field doesn't
    # contain a token that is an ASCII case-insensitive match for the value "Upgrade", the
    # client MUST _Fail the WebSocket Connection_."
    headers = [(n, v) for n, v in backend_101() if n != b"Connection"]
    headers += [(b"Connection", v) for v in connection_values]
    with pytest.raises(BackendProtocolError):
        accept(headers)


@pytest.mark.parametrize(
    "connection_values",
    [[b"Upgrade"], [b"upgrade"], [b"keep-alive, UPGRADE"], [b"keep-alive", b"Upgrade"]],
)
def test_backend_accept_connection_variants(connection_values: list[bytes]) -> None:
    headers = [(n, v) for n, v in backend_101() if n != b"Connection"]
    headers += [(b"Connection", v) for v in connection_values]
    assert accept(headers).subprotocol is None


OFFERED = ws_request(
    subprotocols=(b"chat", b"superchat"),
    extension_names=(b"permessage-deflate", b"x-other"),
)


@pytest.mark.parametrize("chosen", [b"chat", b"superchat"])
def test_backend_subprotocol_offered(chosen: bytes) -> None:
    accepted = accept(backend_101((b"Sec-WebSocket-Protocol", chosen)), OFFERED)
    assert accepted.subprotocol == chosen
    assert values(accepted.headers, b"sec-websocket-protocol") == [chosen]


def test_backend_no_subprotocol_chosen_is_fine() -> None:
    accepted = accept(backend_101(), OFFERED)
    assert accepted.subprotocol is None
    assert accepted.extensions is None


@pytest.mark.parametrize(
    ("protocols", "request_"),
    [
        ([b"mqtt"], OFFERED),
        ([b"chat"], ws_request()),  # nothing offered at all
        ([b"chat, superchat"], OFFERED),  # two chosen in one field
        ([b"chat", b"superchat"], OFFERED),  # two chosen in two fields
        ([b"chat", b"chat"], OFFERED),
        ([b"chat, mqtt"], OFFERED),
    ],
)
def test_backend_subprotocol_not_offered_or_several(
    protocols: list[bytes], request_: WebSocketRequest
) -> None:
    # RFC 6455 §4.1: a subprotocol the client did not request fails the connection; the
    # server selects one value (§4.2.2 /subprotocol/).
    headers = backend_101(*[(b"Sec-WebSocket-Protocol", p) for p in protocols])
    with pytest.raises(BackendProtocolError):
        accept(headers, request_)


@pytest.mark.parametrize(
    ("chosen", "request_"),
    [
        ([b"permessage-deflate"], ws_request()),
        ([b"permessage-deflate; server_no_context_takeover"], ws_request()),
        ([b"x-unknown"], OFFERED),
        ([b"permessage-deflate, x-unknown"], OFFERED),
        ([b"permessage-deflate", b"x-unknown; a=1"], OFFERED),
    ],
)
def test_backend_extension_not_offered(chosen: list[bytes], request_: WebSocketRequest) -> None:
    # RFC 6455 §4.1: an extension the client did not request fails the connection.
    headers = backend_101(*[(b"Sec-WebSocket-Extensions", e) for e in chosen])
    with pytest.raises(BackendProtocolError):
        accept(headers, request_)


@pytest.mark.parametrize(
    ("chosen", "joined"),
    [
        (
            [b"permessage-deflate; server_no_context_takeover; client_max_window_bits=10"],
            b"permessage-deflate; server_no_context_takeover; client_max_window_bits=10",
        ),
        ([b"PerMessage-Deflate"], b"PerMessage-Deflate"),
        (
            [b"permessage-deflate; a=1", b"x-other"],
            b"permessage-deflate; a=1, x-other",
        ),
        ([b"permessage-deflate, x-other; b"], b"permessage-deflate, x-other; b"),
    ],
)
def test_backend_extension_offered_keeps_params(chosen: list[bytes], joined: bytes) -> None:
    headers = backend_101(*[(b"Sec-WebSocket-Extensions", e) for e in chosen])
    accepted = accept(headers, OFFERED)
    assert accepted.extensions == joined
    assert values(accepted.headers, b"sec-websocket-extensions") == chosen


def test_backend_accept_relayed_headers() -> None:
    accepted = accept(
        [
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade, X-Backend-Hop"),
            (b"Sec-WebSocket-Accept", generate_accept_token(OUR_KEY)),
            (b"Sec-WebSocket-Protocol", b"chat"),
            (b"Sec-WebSocket-Extensions", b"permessage-deflate; client_max_window_bits=15"),
            (b"Set-Cookie", b"a=1; Path=/; HttpOnly"),
            (b"Set-Cookie", b"b=2; Secure"),
            (b"Content-Length", b"0"),
            (b"Keep-Alive", b"timeout=5"),
            (b"X-Backend-Hop", b"secret"),
            (b"Proxy-Authenticate", b"Basic"),
            (b"Trailer", b"x"),
            (b"Server", b"backend/1"),
        ],
        OFFERED,
    )
    assert accepted.subprotocol == b"chat"
    assert accepted.headers == (
        (b"sec-websocket-protocol", b"chat"),
        (b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits=15"),
        (b"set-cookie", b"a=1; Path=/; HttpOnly"),
        (b"set-cookie", b"b=2; Secure"),
        (b"server", b"backend/1"),
    )


# ---- end_to_end_*_headers ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(HOP_BY_HOP))
def test_end_to_end_request_headers_drop_hop_by_hop(name: bytes) -> None:
    assert end_to_end_request_headers([(name, b"x"), (b"x-end", b"1")]) == ((b"x-end", b"1"),)


@pytest.mark.parametrize(
    "name",
    [
        b"host",
        b"content-length",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-accept",
    ],
)
def test_end_to_end_request_headers_drop_proxy_owned(name: bytes) -> None:
    assert end_to_end_request_headers(((name, b"x"), (b"x-end", b"1"))) == ((b"x-end", b"1"),)


def test_end_to_end_request_headers_keep_x_forwarded() -> None:
    # X-Forwarded-* are build_backend_upgrade's business (it depends on route.x_forwarded).
    headers = ((b"x-forwarded-proto", b"x"), (b"x-end", b"1"), *CLIENT_X_FORWARDED)
    assert end_to_end_request_headers(headers) == headers


def test_end_to_end_request_headers_drop_connection_listed() -> None:
    headers = [
        (b"connection", b"X-A , x-b"),
        (b"connection", b"X-C"),
        (b"x-a", b"1"),
        (b"x-b", b"2"),
        (b"x-c", b"3"),
        (b"x-d", b"4"),
    ]
    assert end_to_end_request_headers(headers) == ((b"x-d", b"4"),)


@pytest.mark.parametrize("name", sorted(HOP_BY_HOP))
def test_end_to_end_response_headers_drop_hop_by_hop(name: bytes) -> None:
    assert end_to_end_response_headers([(name, b"x"), (b"x-end", b"1")]) == ((b"x-end", b"1"),)


def test_end_to_end_response_headers_keep_proxy_owned_unless_dropped() -> None:
    headers = [(b"content-length", b"5"), (b"sec-websocket-accept", b"x"), (b"set-cookie", b"a")]
    assert end_to_end_response_headers(headers) == tuple(headers)
    assert end_to_end_response_headers(
        headers, drop=frozenset({b"content-length", b"sec-websocket-accept"})
    ) == ((b"set-cookie", b"a"),)


def test_end_to_end_response_headers_drop_connection_listed() -> None:
    headers = [(b"connection", b"close, X-Internal"), (b"x-internal", b"1"), (b"x-end", b"2")]
    assert end_to_end_response_headers(headers) == ((b"x-end", b"2"),)


# ---- answers to the client ---------------------------------------------------------------


def full_accept() -> BackendAccepted:
    return accept(
        backend_101(
            (b"Connection", b"X-Hop"),
            (b"X-Hop", b"1"),
            (b"Sec-WebSocket-Protocol", b"chat"),
            (b"Sec-WebSocket-Extensions", b"permessage-deflate"),
            (b"Set-Cookie", b"a=1"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Content-Length", b"0"),
        ),
        OFFERED,
    )


def test_h2_success_headers() -> None:
    # RFC 8441 §5: a 2xx (200) opens the tunnel; RFC 9113 §8.2.2: no connection-specific
    # fields in HTTP/2.
    headers = h2_success_headers(full_accept())
    assert headers[0] == (b":status", b"200")
    assert [name for name, _ in headers if name.startswith(b":")] == [b":status"]
    names = {name for name, _ in headers}
    assert not names & HOP_BY_HOP
    assert not names & {b"x-hop", b"sec-websocket-accept", b"content-length"}
    assert all(name == name.lower() for name in names)
    assert headers[1:] == [
        (b"sec-websocket-protocol", b"chat"),
        (b"sec-websocket-extensions", b"permessage-deflate"),
        (b"set-cookie", b"a=1"),
    ]


def test_h2_success_headers_minimal() -> None:
    assert h2_success_headers(accept(backend_101())) == [(b":status", b"200")]


def test_h1_switching_headers() -> None:
    headers = h1_switching_headers(full_accept(), CLIENT_KEY)
    assert values(headers, b"upgrade") == [b"websocket"]
    assert [v.lower() for v in values(headers, b"connection")] == [b"upgrade"]
    # The accept is for the client's key, never the backend's (which was for ours).
    assert values(headers, b"sec-websocket-accept") == [generate_accept_token(CLIENT_KEY)]
    assert values(headers, b"sec-websocket-protocol") == [b"chat"]
    assert values(headers, b"sec-websocket-extensions") == [b"permessage-deflate"]
    assert values(headers, b"set-cookie") == [b"a=1"]
    names = {name for name, _ in headers}
    assert not names & {b"x-hop", b"keep-alive", b"transfer-encoding", b"content-length"}


def test_h1_switching_headers_serialize_as_a_101() -> None:
    server = h11.Connection(h11.SERVER)
    raw_request = (
        b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + SAMPLE_KEY + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    server.receive_data(raw_request)
    assert isinstance(server.next_event(), h11.Request)
    headers = h1_switching_headers(accept(backend_101()), SAMPLE_KEY)
    data = server.send(h11.InformationalResponse(status_code=101, headers=headers))
    assert data is not None
    assert data.startswith(b"HTTP/1.1 101 ")
    assert b"\r\nsec-websocket-accept: " + SAMPLE_ACCEPT + b"\r\n" in data


# ---- new_websocket_key -------------------------------------------------------------------


def test_new_websocket_key_shape() -> None:
    key = new_websocket_key()
    assert isinstance(key, bytes)
    assert len(key) == 24
    assert len(base64.b64decode(key, validate=True)) == 16


def test_new_websocket_key_is_valid_for_parse_h1_upgrade() -> None:
    key = new_websocket_key()
    _, got = parse_h1_upgrade(
        h1_request((b"Sec-WebSocket-Key", key), drop=(b"sec-websocket-key",)), tls=False
    )
    assert got == key


def test_new_websocket_key_differs_each_call() -> None:
    keys = {new_websocket_key() for _ in range(200)}
    assert len(keys) == 200


def test_new_websocket_key_uses_each_random_byte_once_across_refills() -> None:
    # Keys come from random bytes drawn in bulk: past several refills, every key is the
    # base64 of 16 bytes, and none repeats.
    count = 3 * backend_handshake._RANDOM_BULK_BYTES // 16 + 5
    keys = [new_websocket_key() for _ in range(count)]
    assert len(set(keys)) == count
    assert all(len(base64.b64decode(key, validate=True)) == 16 for key in keys)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_makes_keys_of_its_own() -> None:
    new_websocket_key()  # the parent holds drawn bytes now
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next key, to the parent
        os.write(write_end, new_websocket_key())
        os._exit(0)
    os.close(write_end)
    child_key = os.read(read_end, 64)
    os.close(read_end)
    os.waitpid(pid, 0)
    assert child_key != new_websocket_key()


def test_new_websocket_key_round_trip_through_accept() -> None:
    key = new_websocket_key()
    accepted = check_backend_accept(response(backend_101(key=key)), key, ws_request())
    assert accepted.headers == ()


def test_an_extended_connect_that_passed_is_remembered_per_listener_kind() -> None:
    head = h2_head((b"x-memo", b"1"))
    first = connect(head, tls=True)
    assert connect(head, tls=True) is first
    assert connect(head, tls=False).scheme == b"http"  # the flags are part of the key
    assert connect(head, tls=True) == handshake._check_extended_connect(head, True, True)
    for _ in range(2):  # a refusal is decided again every time
        with pytest.raises(ClientProtocolError):
            connect(head, enabled=False)
    for index in range(3 * handshake._PASSED_MAX_REQUESTS):
        connect(h2_head((b"x-memo", str(index).encode())))
        assert len(handshake._PASSED) <= handshake._PASSED_MAX_REQUESTS


@pytest.mark.parametrize("x_forwarded", [True, False])
@pytest.mark.parametrize(
    "extra",
    [
        (),
        ((b"origin", b"https://example.com"),),
        # The stand-in key's bytes elsewhere in the request: that one is never kept.
        ((b"x-token", b"A" * 22 + b"=="),),
        # A value h11 must judge: never kept either.
        ((b"x-odd", b"a\x00b"),),
    ],
)
def test_kept_upgrade_requests_are_written_as_without_keeping(
    x_forwarded: bool, extra: tuple[Header, ...]
) -> None:
    request = ws_request(*extra)
    backend = route(x_forwarded=x_forwarded)
    for key in (new_websocket_key(), new_websocket_key(), OUR_KEY, b"not a key"):
        for address in ("192.0.2.7", None):
            made = _reference_upgrade(request, backend, key, address)
            for _ in range(2):
                try:
                    built: object = build_backend_upgrade(request, backend, key, address)
                except ClientProtocolError:
                    built = ClientProtocolError
                assert built == made
    assert len(backend_handshake._TEMPLATES) <= backend_handshake._TEMPLATES_MAX


def _reference_upgrade(
    request: WebSocketRequest, backend: RouteConfig, key: bytes, address: str | None
) -> UpgradeRequest | type[ClientProtocolError]:
    fields = backend_handshake._upgrade_fields(request, backend, key, address)
    try:
        return backend_handshake._backend_request(request.path, fields)
    except ClientProtocolError:
        return ClientProtocolError
