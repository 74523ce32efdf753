"""routing.py: longest prefix wins, prefixes match on path-segment boundaries only."""

from __future__ import annotations

import dataclasses

import pytest

from h2ws_proxy.config import BackendGroup, RouteConfig, parse_backend
from h2ws_proxy.errors import ClientProtocolError, RouteNotFound
from h2ws_proxy.http.handshake import WebSocketRequest
from h2ws_proxy.http.message import BodyFraming, HttpRequest
from h2ws_proxy.http.paths import split_target
from h2ws_proxy.relay.routing import Router, http_route, websocket_route


def route(path: str, port: int = 9000) -> RouteConfig:
    return RouteConfig(
        path=path, backend=BackendGroup.of(parse_backend(f"http://127.0.0.1:{port}"))
    )


ROOT = route("/", 9000)
CHAT = route("/chat", 9001)
CHAT_ROOM = route("/chat/room", 9002)
API_SLASH = route("/api/", 9003)
DEEP = route("/a/b/c", 9004)

ALL = [ROOT, CHAT, CHAT_ROOM, API_SLASH, DEEP]


@pytest.fixture(params=["given order", "reversed order"])
def router(request: pytest.FixtureRequest) -> Router:
    """The same routes in two orders: the result must not depend on config order."""
    routes = ALL if request.param == "given order" else list(reversed(ALL))
    return Router(routes)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # "/" is the catch-all.
        ("/", ROOT),
        ("/other", ROOT),
        ("/index.html?x=1", ROOT),
        # Segment boundary: /chat is not a prefix of /chatter.
        ("/chat", CHAT),
        ("/chat/", CHAT),
        ("/chat/x", CHAT),
        ("/chat?x=1", CHAT),
        ("/chat#frag", CHAT),
        ("/chatter", ROOT),
        ("/chat-room", ROOT),
        ("/chat.json", ROOT),
        # Longest prefix wins.
        ("/chat/room", CHAT_ROOM),
        ("/chat/room/42", CHAT_ROOM),
        ("/chat/room?x=1", CHAT_ROOM),
        ("/chat/rooms", CHAT),
        ("/chat/roo", CHAT),
        # A prefix ending in "/" matches below it, not the bare name.
        ("/api/", API_SLASH),
        ("/api/x", API_SLASH),
        ("/api/x/y?z=1", API_SLASH),
        ("/api", ROOT),
        ("/api?x=1", ROOT),
        ("/apix", ROOT),
        # Deeper prefixes.
        ("/a/b/c", DEEP),
        ("/a/b/c/d", DEEP),
        ("/a/b/cd", ROOT),
        ("/a/b", ROOT),
    ],
)
def test_match_str_and_bytes(router: Router, path: str, expected: RouteConfig) -> None:
    assert router.match(path) is expected
    assert router.match(path.encode("ascii")) is expected


@pytest.mark.parametrize(
    "path",
    ["/", "/x", "/chatter", "/chat-x", "/api", "/ap", ""],
)
def test_no_match_returns_none(path: str) -> None:
    router = Router([CHAT, CHAT_ROOM, API_SLASH])
    assert router.match(path) is None
    assert router.match(path.encode("ascii")) is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/chat", CHAT),
        ("/chat/room", CHAT_ROOM),
        ("/chat/room/1", CHAT_ROOM),
        ("/chat/x", CHAT),
        ("/chatroom", None),
        ("/api/v1", API_SLASH),
        ("/api", None),
    ],
)
def test_without_catch_all(path: str, expected: RouteConfig | None) -> None:
    router = Router([CHAT, CHAT_ROOM, API_SLASH])
    assert router.match(path) is expected
    assert router.match(path.encode()) is expected


def test_empty_router_matches_nothing() -> None:
    router = Router([])
    assert router.match("/") is None
    assert router.match(b"/chat") is None


def test_router_accepts_any_iterable() -> None:
    router = Router(iter([ROOT, CHAT]))
    assert router.match("/chat/x") is CHAT
    assert router.match("/y") is ROOT


@pytest.mark.parametrize(
    "path",
    [b"/chat/\xff\xfe", b"/chat?q=\x80", b"/chat/caf\xc3\xa9"],
)
def test_non_ascii_bytes_do_not_raise(path: bytes) -> None:
    # The path bytes after the prefix are decoded with replacement; the prefix still matches.
    assert Router(ALL).match(path) is CHAT


def test_non_ascii_bytes_before_boundary_do_not_match_prefix() -> None:
    assert Router([CHAT]).match(b"/chat\xff") is None
    assert Router(ALL).match(b"/chat\xff") is ROOT


def test_match_is_case_sensitive() -> None:
    # RFC 3986 §6.2.2.1: the path component is case-sensitive.
    assert Router(ALL).match("/CHAT") is ROOT
    assert Router(ALL).match(b"/Chat/room") is ROOT


# --- paths normalisation refused: only a normalize_path = false route takes them -----------

RAW = dataclasses.replace(route("/raw", 9005), normalize_path=False)
RAW_ROUTER = Router([ROOT, CHAT, RAW])


def _http(target: bytes) -> HttpRequest:
    routed, raw, refusal = split_target(target)
    return HttpRequest(
        method=b"GET",
        target=routed,
        authority=b"a.test",
        scheme=b"http",
        headers=(),
        framing=BodyFraming.NONE,
        raw_target=raw,
        path_refusal=refusal,
    )


def _websocket(target: bytes) -> WebSocketRequest:
    routed, raw, refusal = split_target(target)
    return WebSocketRequest(
        front="h1",
        scheme=b"http",
        authority=b"a.test",
        path=routed,
        subprotocols=(),
        extension_names=(),
        headers=(),
        raw_path=raw,
        path_refusal=refusal,
    )


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"/raw/a%2Fb", RAW),  # refused, raw bytes route to the raw route
        (b"/raw//x", RAW),  # normalised /raw/x
        (b"/raw/../chat", CHAT),  # normalised /chat
        (b"/x/../raw/%7e", RAW),
    ],
)
def test_raw_routes(target: bytes, expected: RouteConfig) -> None:
    assert http_route(RAW_ROUTER, _http(target)) is expected
    assert websocket_route(RAW_ROUTER, _websocket(target)) is expected


@pytest.mark.parametrize(
    "target", [b"/chat/%2F", b"/%2F", b"/raw%2Fx", b"/x/..;/raw", b"/%72aw/%2F"]
)
def test_refused_paths_outside_raw_routes_get_400(target: bytes) -> None:
    for call in (
        lambda: http_route(RAW_ROUTER, _http(target)),
        lambda: websocket_route(RAW_ROUTER, _websocket(target)),
    ):
        with pytest.raises(ClientProtocolError) as refused:
            call()
        assert refused.value.status_hint == 400


def test_refused_path_without_any_route_is_400_not_404() -> None:
    with pytest.raises(ClientProtocolError):
        http_route(Router([CHAT]), _http(b"/x/%2F"))
    with pytest.raises(RouteNotFound):
        http_route(Router([CHAT]), _http(b"/x/ok"))
