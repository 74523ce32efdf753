"""The Origin policy (route.allowed_origins, route.require_origin) through both front ends:
a WebSocket request from an origin its route does not list, or without one where the
route requires it, gets 403 and a ``tunnel.refused`` line naming the origin, and reaches
no backend; ordinary requests are never checked (relay/routing.py ``check_origin``)."""

from __future__ import annotations

import dataclasses

import pytest
import trio
import trio.testing

from h2ws_proxy.config import ProxyConfig
from tests.helpers.records import ProxyRecord, capture_proxy_records
from tests.helpers.setup import make_config
from tests.protocol.test_path_routing import Recorder, serve
from tests.protocol.test_virtual_hosts import Header, opened, send, send_h1

FRONTS = pytest.mark.parametrize("front", ["h1", "h2"])
OPEN, APP, STRICT, ANY_PAGE = 1000, 1001, 1002, 1003


def _config() -> ProxyConfig:
    config = make_config(
        ("/", "http://127.0.0.1:1000"),
        ("/app", "http://127.0.0.1:1001"),
        ("/strict", "http://127.0.0.1:1002"),
        ("/any-page", "http://127.0.0.1:1003"),
    )
    root, app, strict, any_page = config.routes
    routes = (
        root,
        dataclasses.replace(
            app, allowed_origins=("https://app.example.com", "https://*.example.org")
        ),
        dataclasses.replace(
            strict, allowed_origins=("https://app.example.com",), require_origin=True
        ),
        dataclasses.replace(any_page, require_origin=True),
    )
    return dataclasses.replace(config, routes=routes)


CONFIG = _config()


def origin(*values: bytes) -> list[Header]:
    return [(b"origin", value) for value in values]


def refused(record: ProxyRecord) -> bool:
    return record.event == "tunnel.refused"


ALLOWED = [
    (b"/app", origin(b"https://app.example.com"), APP),
    (b"/app/room?x=1", origin(b"https://app.example.com:443"), APP),  # the default port
    (b"/app", origin(b"HTTPS://App.Example.COM"), APP),  # case
    (b"/app", origin(b"https://a.example.org"), APP),  # the wildcard: one label
    (b"/app", [], APP),  # no Origin: not a browser, so no hijacking; allowed by default
    (b"/strict", origin(b"https://app.example.com"), STRICT),
    (b"/any-page", origin(b"https://anything.test"), ANY_PAGE),
    (b"/any-page", origin(b"null"), ANY_PAGE),  # require_origin alone: any Origin will do
    (b"/", origin(b"https://evil.test"), OPEN),  # no policy, no check
    (b"/", origin(b"null"), OPEN),
]


@FRONTS
@pytest.mark.parametrize(("target", "extra", "port"), ALLOWED)
async def test_allowed_origins_open_the_tunnel(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    front: str,
    target: bytes,
    extra: list[Header],
    port: int,
) -> None:
    recorder = Recorder()
    _, client = await serve(nursery, recorder, CONFIG)
    status = await send(client, front, target, b"proxy.test", upgrade=True, extra=extra)
    assert status == opened(front, upgrade=True)
    assert recorder.ports == [port]
    # The backend gets the client's Origin as it came (its own check, if any, still works).
    assert [value for name, value in recorder.heads[0].headers if name == b"origin"] == [
        value for _, value in extra
    ]


REFUSED = [
    (b"/app", origin(b"https://evil.test"), "origin https://evil.test is not allowed"),
    (b"/app", origin(b"http://app.example.com"), "origin http://app.example.com is not"),
    (b"/app", origin(b"https://app.example.com:8443"), "origin https://app.example.com:8443"),
    (b"/app", origin(b"https://example.org"), "origin https://example.org is not"),
    (b"/app", origin(b"https://a.b.example.org"), "origin https://a.b.example.org is not"),
    (b"/app", origin(b"https://app.example.com.evil.test"), "app.example.com.evil.test is"),
    (b"/app", origin(b"null"), "origin null is not allowed on route /app"),
    (b"/app", origin(b"https://app.example.com/"), "origin https://app.example.com/ is not"),
    (
        b"/app",
        origin(b"https://app.example.com", b"https://evil.test"),
        "origin https://app.example.com https://evil.test is not",
    ),
    (b"/app", origin(b"https://app.example.com https://evil.test"), "is not allowed"),
    (b"/strict", [], "route /strict requires an Origin on WebSocket requests (require_origin)"),
    (b"/strict", origin(b"https://a.example.org"), "origin https://a.example.org is not"),
    (b"/any-page", [], "route /any-page requires an Origin on WebSocket requests"),
]


@FRONTS
@pytest.mark.parametrize(("target", "extra", "reason"), REFUSED)
async def test_other_origins_get_403_and_a_tunnel_refused_line(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    front: str,
    target: bytes,
    extra: list[Header],
    reason: str,
) -> None:
    recorder = Recorder()
    with capture_proxy_records() as records:
        net, client = await serve(nursery, recorder, CONFIG)
        status = await send(client, front, target, b"proxy.test", upgrade=True, extra=extra)
        record = await records.wait_for(refused, 10, "refusing the tunnel")
    assert status == b"403"
    assert net.dials == 0
    assert record.get("status") == 403
    assert record.get("front") == front
    assert record.get("path") == target.decode()
    assert record.get("host") == "proxy.test"
    assert record.get("end") == "refused"
    assert reason in record.get("error")


async def test_the_403_says_why(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    recorder = Recorder()
    _, client = await serve(nursery, recorder, CONFIG)
    answer = await send_h1(
        client,
        b"/app",
        host=b"proxy.test",
        upgrade=True,
        extra=origin(b"https://evil.test"),
    )
    while not answer.endswith(b"\n"):  # the body, after the head
        answer += await client.receive_some(65536)
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert answer.endswith(
        b"\r\n\r\norigin https://evil.test is not allowed on route /app (allowed_origins)\n"
    )


@FRONTS
@pytest.mark.parametrize("target", [b"/app", b"/strict", b"/any-page"])
@pytest.mark.parametrize(
    "extra", [origin(b"https://evil.test"), origin(b"null"), []], ids=["evil", "null", "none"]
)
async def test_ordinary_requests_are_not_checked(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    front: str,
    target: bytes,
    extra: list[Header],
) -> None:
    recorder = Recorder()
    _, client = await serve(nursery, recorder, CONFIG)
    status = await send(client, front, target, b"proxy.test", upgrade=False, extra=extra)
    assert status == b"204"
    assert len(recorder.ports) == 1


@FRONTS
async def test_no_route_is_still_404_before_any_origin_check(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, front: str
) -> None:
    config = dataclasses.replace(CONFIG, routes=CONFIG.routes[1:])  # no "/"
    recorder = Recorder()
    with capture_proxy_records() as records:
        _, client = await serve(nursery, recorder, config)
        extra = origin(b"https://evil.test")
        status = await send(client, front, b"/x", b"proxy.test", upgrade=True, extra=extra)
        record = await records.wait_for(refused, 10, "refusing the tunnel")
    assert status == b"404"
    assert record.get("error") == "no route for /x"


@FRONTS
async def test_origins_and_hosts_together(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, front: str
) -> None:
    # The policy is the chosen route's: the same path on another host has its own.
    open_route, app = CONFIG.routes[0], CONFIG.routes[1]
    config = dataclasses.replace(
        CONFIG,
        routes=(
            open_route,
            dataclasses.replace(app, path="/", host=("chat.example.com",)),
        ),
    )
    extra = origin(b"https://evil.test")
    for authority, expected in [(b"chat.example.com", b"403"), (b"other.test", None)]:
        recorder = Recorder()
        _, client = await serve(nursery, recorder, config)
        status = await send(client, front, b"/x", authority, upgrade=True, extra=extra)
        assert status == (expected or opened(front, upgrade=True))
