"""routing.py by host: exact host, then its one wildcard, then the routes without host; the
chosen group alone, then the longest prefix within it."""

from __future__ import annotations

import dataclasses

import pytest

from h2ws_proxy.config import BackendGroup, RouteConfig, parse_backend
from h2ws_proxy.errors import RouteNotFound
from h2ws_proxy.http.message import BodyFraming, HttpRequest
from h2ws_proxy.relay.routing import Router, http_route


def route(path: str, port: int, *hosts: str) -> RouteConfig:
    backend = BackendGroup.of(parse_backend(f"http://127.0.0.1:{port}"))
    return RouteConfig(path=path, backend=backend, host=hosts)


ANY_ROOT = route("/", 9000)
ANY_API = route("/api", 9001)
CHAT_ROOT = route("/", 9010, "chat.example.com")
CHAT_WS = route("/ws", 9011, "chat.example.com", "chat.example.org")
WILD_ROOT = route("/", 9020, "*.example.com")
WILD_API = route("/api", 9021, "*.example.com")
V6 = route("/", 9030, "[::1]")
DOC_ONLY = route("/docs", 9040, "docs.example.com")

ALL = [ANY_ROOT, ANY_API, CHAT_ROOT, CHAT_WS, WILD_ROOT, WILD_API, V6, DOC_ONLY]


@pytest.fixture(params=["given order", "reversed order"])
def router(request: pytest.FixtureRequest) -> Router:
    """The same routes in two orders: the result must not depend on config order."""
    return Router(ALL if request.param == "given order" else list(reversed(ALL)))


@pytest.mark.parametrize(
    ("authority", "path", "expected"),
    [
        # An exact host: its own routes, longest prefix among them.
        ("chat.example.com", "/", CHAT_ROOT),
        ("chat.example.com", "/ws/room", CHAT_WS),
        ("chat.example.org", "/ws", CHAT_WS),
        # ...and only them: /api of the wildcard and of no host are not considered.
        ("chat.example.com", "/api", CHAT_ROOT),
        # Case, port and a trailing dot do not matter.
        ("CHAT.Example.COM", "/ws", CHAT_WS),
        ("chat.example.com:8443", "/ws", CHAT_WS),
        ("chat.example.com.", "/ws", CHAT_WS),
        ("Chat.Example.Com.:443", "/ws", CHAT_WS),
        # Another name under example.com: the wildcard's group.
        ("www.example.com", "/", WILD_ROOT),
        ("www.example.com", "/api/v1", WILD_API),
        ("www.example.com", "/ws", WILD_ROOT),  # chat's /ws is chat's only
        ("WWW.example.com.:8080", "/api", WILD_API),
        # The wildcard is one label exactly: deeper names and the domain itself fall through.
        ("a.b.example.com", "/api", ANY_API),
        ("example.com", "/api", ANY_API),
        ("example.com", "/", ANY_ROOT),
        # Unknown hosts: the routes without host.
        ("other.test", "/api/x", ANY_API),
        ("other.test:8443", "/", ANY_ROOT),
        ("127.0.0.1:8080", "/", ANY_ROOT),
        # IPv6 literals: port stripped, compared compressed.
        ("[::1]:8443", "/x", V6),
        ("[::1]", "/", V6),
        ("[0:0::1]:1", "/", V6),
        ("[::2]", "/api", ANY_API),
        # Not a suffix match: "evilchat.example.com" is its own name (so the wildcard's).
        ("evilchat.example.com", "/ws", WILD_ROOT),
        ("chat.example.com.evil.test", "/ws", ANY_ROOT),
    ],
)
def test_host_then_prefix(router: Router, authority: str, path: str, expected: RouteConfig) -> None:
    assert router.match(path, authority) is expected
    assert router.match(path.encode(), authority.encode()) is expected


def test_a_host_group_without_the_path_is_a_404_not_a_fallback(router: Router) -> None:
    # As nginx's server block, Envoy's virtual host: the host chose docs.example.com's
    # routes, and none of them serves "/".
    assert router.match("/", "docs.example.com") is None
    assert router.match("/docs/x", "docs.example.com") is DOC_ONLY
    request = HttpRequest(
        method=b"GET",
        target=b"/",
        authority=b"Docs.Example.com:8443",
        scheme=b"https",
        headers=(),
        framing=BodyFraming.NONE,
    )
    with pytest.raises(RouteNotFound, match=r"^no route for / on host docs\.example\.com$"):
        http_route(router, request)


def test_without_an_authority_only_the_routes_without_host(router: Router) -> None:
    assert router.match("/ws") is ANY_ROOT
    assert router.match("/api") is ANY_API


def test_without_host_routes_the_host_is_never_looked_at() -> None:
    router = Router([ANY_ROOT, ANY_API])
    assert not router.by_host
    assert router.match("/api", "\u00e9\u00e9\u00e9 not even a host") is ANY_API
    request = HttpRequest(
        method=b"GET",
        target=b"/x",
        authority=b"a.test",
        scheme=b"http",
        headers=(),
        framing=BodyFraming.NONE,
    )
    with pytest.raises(RouteNotFound, match=r"^no route for /x$"):
        http_route(Router([ANY_API]), request)


def test_only_host_routes_unknown_host_is_404() -> None:
    router = Router([CHAT_ROOT, WILD_API])
    assert router.match("/", "other.test") is None
    assert router.match("/api", "x.example.com") is WILD_API
    assert router.match("/", "x.example.com") is None


def test_a_route_may_name_exact_and_wildcard_hosts() -> None:
    both = route("/", 9050, "example.com", "*.example.com")
    router = Router([both, ANY_ROOT])
    assert router.match("/", "example.com") is both
    assert router.match("/", "a.example.com") is both
    assert router.match("/", "a.b.example.com") is ANY_ROOT


def test_the_lookups_remembered_stay_bounded() -> None:
    router = Router(ALL)
    for index in range(2000):
        assert router.match("/", f"h{index}.example.com") is WILD_ROOT
        assert router.match(b"/", f"h{index}.other.test".encode()) is ANY_ROOT
    assert len(router._seen) <= 256
    # The longest DNS names are remembered; longer authorities are routed, not remembered.
    router._seen.clear()
    long_name = "a" * 60 + "." + "b" * 60 + "." + "c" * 60 + "." + "d" * 60 + ".example.com"
    assert router.match("/", long_name.encode()) is ANY_ROOT
    assert router.match("/", b"x" * 5000 + b".example.com") is WILD_ROOT
    assert list(router._seen) == [long_name.encode()]
    # A remembered authority still routes as before.
    assert router.match("/ws", "chat.example.com") is CHAT_WS
    assert router.match("/ws", "chat.example.com") is CHAT_WS


def test_raw_routes_are_chosen_within_the_host_group() -> None:
    raw = dataclasses.replace(route("/raw", 9060, "raw.example.com"), normalize_path=False)
    router = Router([raw, ANY_ROOT])
    assert router.match(b"/raw/a%2Fb", b"raw.example.com") is raw
    assert router.match(b"/raw/a%2Fb", b"other.example.com") is ANY_ROOT
