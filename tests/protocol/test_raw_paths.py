"""A route with ``normalize_path = false`` beside normalising ones, through both front ends,
for requests and WebSocket upgrades (http/paths.py, relay/routing.py).

The raw route's backend receives the client's target byte for byte; the normalising routes
beside it still receive normalised paths; a path that normalisation refuses reaches the raw
route only when its raw bytes route there, and never reaches a normalising route's backend.
"""

from __future__ import annotations

import dataclasses

import pytest
import trio
import trio.testing

from h2ws_proxy.config import ProxyConfig
from tests.helpers.records import capture_proxy_records, is_request
from tests.helpers.setup import make_config
from tests.protocol.test_path_routing import Recorder, send_h1, send_h2, serve

PUBLIC, ADMIN, RAW = 1001, 1002, 1003


def _config() -> ProxyConfig:
    config = make_config(
        ("/public", "http://127.0.0.1:1001"),
        ("/admin", "http://127.0.0.1:1002"),
        ("/raw", "http://127.0.0.1:1003"),
    )
    routes = tuple(
        dataclasses.replace(route, normalize_path=route.path != "/raw") for route in config.routes
    )
    return dataclasses.replace(config, routes=routes)


CONFIG = _config()
FRONTS = pytest.mark.parametrize("front", ["h1", "h2"])
KINDS = pytest.mark.parametrize("upgrade", [False, True], ids=["request", "websocket"])


async def _send(client: trio.abc.Stream, front: str, target: bytes, *, upgrade: bool) -> bytes:
    """The status the client got, as bytes (b"204", b"101", b"200", b"400"...)."""
    if front == "h2":
        return await send_h2(client, target, upgrade=upgrade)
    answer = await send_h1(client, target, upgrade=upgrade)
    return answer.split(b" ", 2)[1]


RAW_TARGETS = [
    b"/raw/a%2Fb",  # refused by normalisation: routed on the raw bytes
    b"/raw/a%2fb%5Cc",
    b"/raw/..%2Fadmin",  # refused: stays on /raw's backend, raw
    b"/raw/..;/admin",
    b"/raw/%zz",
    b"/raw//x",  # normalises to /raw/x: routed there, sent as it came
    b"/raw/%2e%2e/raw/y",
    b"/raw/%7Euser/./z?q=%2F&r=/../",
]


@FRONTS
@KINDS
@pytest.mark.parametrize("target", RAW_TARGETS)
async def test_a_raw_route_receives_the_target_as_sent(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    target: bytes,
    front: str,
    upgrade: bool,
) -> None:
    recorder = Recorder()
    _, client = await serve(nursery, recorder, CONFIG)
    status = await _send(client, front, target, upgrade=upgrade)
    assert status == (b"204" if not upgrade else b"101" if front == "h1" else b"200")
    assert recorder.ports == [RAW]
    assert recorder.targets == [target]


@FRONTS
@KINDS
@pytest.mark.parametrize(
    ("target", "port", "sent"),
    [
        # Routed on the normalised path, which is a normalising route's: it gets that path.
        (b"/raw/../admin", ADMIN, b"/admin"),
        (b"/raw/%2e%2e/admin/%61", ADMIN, b"/admin/a"),
        (b"/admin//x/../y", ADMIN, b"/admin/y"),
        (b"/public/%7e", PUBLIC, b"/public/~"),
        # Routed on the normalised path, which is the raw route's: it gets the bytes as
        # sent (the documented subtlety: its backend resolves them as it likes).
        (b"/public/../raw//x", RAW, b"/public/../raw//x"),
    ],
)
async def test_the_route_is_chosen_on_the_normalised_path(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    target: bytes,
    port: int,
    sent: bytes,
    front: str,
    upgrade: bool,
) -> None:
    recorder = Recorder()
    _, client = await serve(nursery, recorder, CONFIG)
    await _send(client, front, target, upgrade=upgrade)
    assert recorder.ports == [port]
    assert recorder.targets == [sent]


@FRONTS
@KINDS
@pytest.mark.parametrize(
    "target",
    [
        b"/admin/..%2Fraw",  # raw bytes route to /admin, which normalises: refused
        b"/admin/%2F",
        b"/public/..;/raw",
        b"/public/../../raw",  # climbs above /
        b"/%72aw/%2F",  # an escaped /raw prefix: the raw bytes route nowhere
        b"/nowhere/%2F",  # no route at all: still the refusal's 400, not 404
    ],
)
async def test_refused_paths_stay_refused_outside_raw_routes(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    target: bytes,
    front: str,
    upgrade: bool,
) -> None:
    recorder = Recorder()
    net, client = await serve(nursery, recorder, CONFIG)
    assert await _send(client, front, target, upgrade=upgrade) == b"400"
    assert net.dials == 0


@FRONTS
async def test_the_record_names_the_raw_route(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, front: str
) -> None:
    recorder = Recorder()
    with capture_proxy_records() as records:
        _, client = await serve(nursery, recorder, CONFIG)
        await _send(client, front, b"/raw/a%2Fb", upgrade=False)
        record = await records.wait_for(is_request, 10, "for the request")
    assert record.get("route") == "/raw"
    assert record.get("backend") == "http://127.0.0.1:1003"
    assert record.get("path") == "/raw/a%2Fb"
