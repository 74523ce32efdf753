"""routing.check_origin: which WebSocket requests a route's Origin policy lets through."""

from __future__ import annotations

import pytest

from h2ws_proxy.config import BackendGroup, RouteConfig, parse_backend
from h2ws_proxy.errors import ClientProtocolError, OriginRefused, RouteNotFound
from h2ws_proxy.http.handshake import WebSocketRequest
from h2ws_proxy.relay.routing import Router, check_origin, websocket_route

BACKEND = BackendGroup.of(parse_backend("http://127.0.0.1:9000"))
NO_POLICY = RouteConfig("/", BACKEND)
LISTED = RouteConfig(
    "/app",
    BACKEND,
    allowed_origins=("https://app.example.com", "https://*.example.org", "http://[::1]:8080"),
)
STRICT = RouteConfig(
    "/strict", BACKEND, allowed_origins=("https://app.example.com",), require_origin=True
)
ANY_PAGE = RouteConfig("/page", BACKEND, require_origin=True)


def fields(*origins: bytes) -> tuple[tuple[bytes, bytes], ...]:
    return (
        (b"user-agent", b"test"),
        *((b"origin", value) for value in origins),
        (b"cookie", b"a=b"),
    )


@pytest.mark.parametrize(
    ("route", "origins"),
    [
        (NO_POLICY, ()),
        (NO_POLICY, (b"null",)),
        (NO_POLICY, (b"https://evil.test",)),
        (NO_POLICY, (b"junk", b"more junk")),
        (LISTED, ()),
        (LISTED, (b"https://app.example.com",)),
        (LISTED, (b"https://app.example.com:443",)),
        (LISTED, (b"HTTPS://APP.EXAMPLE.COM",)),
        (LISTED, (b"https://app.example.com.",)),
        (LISTED, (b"https://x.example.org",)),
        (LISTED, (b"https://x.example.org:443",)),
        (LISTED, (b"http://[::1]:8080",)),
        (LISTED, (b"http://[0:0::1]:8080",)),
        (STRICT, (b"https://app.example.com",)),
        (ANY_PAGE, (b"https://anything.test",)),
        (ANY_PAGE, (b"null",)),
    ],
)
def test_allowed(route: RouteConfig, origins: tuple[bytes, ...]) -> None:
    check_origin(route, fields(*origins))


@pytest.mark.parametrize(
    ("route", "origins"),
    [
        (LISTED, (b"null",)),
        (LISTED, (b"https://evil.test",)),
        (LISTED, (b"http://app.example.com",)),
        (LISTED, (b"https://app.example.com:8443",)),
        (LISTED, (b"https://example.org",)),
        (LISTED, (b"https://a.b.example.org",)),
        (LISTED, (b"https://x.example.org:8443",)),
        (LISTED, (b"https://app.example.com/",)),
        (LISTED, (b"https://app.example.com/path",)),
        (LISTED, (b"wss://app.example.com",)),
        (LISTED, (b"https://app.example.com", b"https://app.example.com")),
        (LISTED, (b"https://app.example.com https://x.example.org",)),
        (LISTED, (b"https://app.\xc3\xa9xample.com",)),
        (LISTED, (b"",)),
        (LISTED, (b"http://[::1]",)),
        (STRICT, ()),
        (STRICT, (b"https://x.example.org",)),
        (ANY_PAGE, ()),
    ],
)
def test_refused(route: RouteConfig, origins: tuple[bytes, ...]) -> None:
    with pytest.raises(OriginRefused) as refusal:
        check_origin(route, fields(*origins))
    assert refusal.value.status_hint == 403
    for value in origins:
        assert value.decode("ascii", "backslashreplace") in refusal.value.message


def test_the_messages() -> None:
    with pytest.raises(OriginRefused, match=r"^route /strict requires an Origin on WebSocket"):
        check_origin(STRICT, fields())
    with pytest.raises(OriginRefused) as refusal:
        check_origin(LISTED, fields(b"https://evil.test"))
    assert refusal.value.message == (
        "origin https://evil.test is not allowed on route /app (allowed_origins)"
    )
    with pytest.raises(OriginRefused) as refusal:
        check_origin(LISTED, fields(b"https://" + b"a" * 1000 + b".test"))
    assert len(refusal.value.message) < 300  # a client's long value is cut short


def _request(path: bytes, *origins: bytes) -> WebSocketRequest:
    return WebSocketRequest(
        front="h1",
        scheme=b"https",
        authority=b"proxy.test",
        path=path,
        subprotocols=(),
        extension_names=(),
        headers=fields(*origins),
    )


def test_websocket_route_checks_the_origin_of_the_route_it_chose() -> None:
    router = Router([NO_POLICY, LISTED, STRICT])
    assert websocket_route(router, _request(b"/app/x", b"https://app.example.com")) is LISTED
    assert websocket_route(router, _request(b"/other", b"https://evil.test")) is NO_POLICY
    with pytest.raises(OriginRefused):
        websocket_route(router, _request(b"/app/x", b"https://evil.test"))
    with pytest.raises(OriginRefused):
        websocket_route(router, _request(b"/strict"))


def test_no_route_and_websocket_false_come_first() -> None:
    off = RouteConfig("/off", BACKEND, websocket=False, require_origin=True)
    router = Router([LISTED, off])
    with pytest.raises(RouteNotFound):
        websocket_route(router, _request(b"/x", b"https://evil.test"))
    with pytest.raises(ClientProtocolError) as refusal:
        websocket_route(router, _request(b"/off"))
    assert refusal.value.status_hint == 501
