"""Virtual hosts through both front ends, for requests and WebSocket upgrades: the route is
chosen by ``:authority`` / ``Host`` first (exact, then the one wildcard, then the routes
without host; only that group), then by the longest path prefix (relay/routing.py). Which
backend was dialled, the status, and the host on the log line say what was chosen."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import hpack
import pytest
import trio
import trio.testing

from h2ws_proxy.config import ProxyConfig
from tests.helpers.frames import PREFACE, frame
from tests.helpers.raw_h2 import read_frames_until
from tests.helpers.records import ProxyRecord, capture_proxy_records
from tests.helpers.setup import make_config
from tests.protocol.test_path_routing import Recorder, serve

Header = tuple[bytes, bytes]
HEADERS, SETTINGS = 0x1, 0x4
END_STREAM, END_HEADERS = 0x1, 0x4
UPGRADE: list[Header] = [
    (b"upgrade", b"websocket"),
    (b"connection", b"upgrade"),
    (b"sec-websocket-version", b"13"),
    (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
]
FRONTS = pytest.mark.parametrize("front", ["h1", "h2"])
KINDS = pytest.mark.parametrize("upgrade", [False, True], ids=["request", "websocket"])

ANY_ROOT, ANY_API, CHAT, CHAT_WS, WILD, V6, DOCS = 1000, 1001, 1010, 1011, 1020, 1030, 1040


def _config() -> ProxyConfig:
    hosts = {
        CHAT: ("chat.example.com",),
        CHAT_WS: ("chat.example.com",),
        WILD: ("*.example.com",),
        V6: ("[::1]",),
        DOCS: ("docs.example.com",),
    }
    config = make_config(
        ("/", "http://127.0.0.1:1000"),
        ("/api", "http://127.0.0.1:1001"),
        ("/", "http://127.0.0.1:1010"),
        ("/ws", "http://127.0.0.1:1011"),
        ("/", "http://127.0.0.1:1020"),
        ("/", "http://127.0.0.1:1030"),
        ("/docs", "http://127.0.0.1:1040"),
    )
    routes = tuple(
        dataclasses.replace(route, host=hosts.get(route.backend.servers[0].port, ()))
        for route in config.routes
    )
    return dataclasses.replace(config, routes=routes)


CONFIG = _config()


async def send_h1(
    client: trio.abc.Stream,
    target: bytes,
    *,
    host: bytes | None,
    upgrade: bool,
    extra: Sequence[Header] = (),
) -> bytes:
    """An HTTP/1.1 request (``host``: its Host field, None for none); the whole answer head."""
    fields = [*([(b"host", host)] if host is not None else []), *(UPGRADE if upgrade else [])]
    lines = b"".join(name + b": " + value + b"\r\n" for name, value in [*fields, *extra])
    await client.send_all(b"GET " + target + b" HTTP/1.1\r\n" + lines + b"\r\n")
    answer = b""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in answer:
            answer += await client.receive_some(65536)
    return answer


async def send_h2(
    client: trio.abc.Stream,
    target: bytes,
    *,
    authority: bytes | None,
    upgrade: bool,
    extra: Sequence[Header] = (),
) -> bytes:
    """An HTTP/2 request on stream 1 (extended CONNECT with ``upgrade``); its ``:status``."""
    head = [
        (b":method", b"CONNECT" if upgrade else b"GET"),
        *([(b":protocol", b"websocket")] if upgrade else []),
        (b":scheme", b"https"),
        (b":path", target),
        *([(b":authority", authority)] if authority is not None else []),
        *([(b"sec-websocket-version", b"13")] if upgrade else []),
        *extra,
    ]
    flags = END_HEADERS if upgrade else END_HEADERS | END_STREAM
    block = hpack.Encoder().encode(head)
    await client.send_all(PREFACE + frame(SETTINGS, 0, 0, b"") + frame(HEADERS, flags, 1, block))
    with trio.fail_after(10):
        frames = await read_frames_until(client, {HEADERS})
    return bytes(hpack.Decoder().decode(frames[-1][3], raw=True)[0][1])


async def send(
    client: trio.abc.Stream,
    front: str,
    target: bytes,
    authority: bytes,
    *,
    upgrade: bool,
    extra: Sequence[Header] = (),
) -> bytes:
    """The status the client got, as bytes (b"204", b"101", b"200", b"404"...)."""
    if front == "h2":
        return await send_h2(client, target, authority=authority, upgrade=upgrade, extra=extra)
    answer = await send_h1(client, target, host=authority, upgrade=upgrade, extra=extra)
    return answer.split(b" ", 2)[1]


def opened(front: str, upgrade: bool) -> bytes:
    if not upgrade:
        return b"204"
    return b"200" if front == "h2" else b"101"


def ended(record: ProxyRecord) -> bool:
    return record.event in {"request.closed", "tunnel.closed", "tunnel.refused"}


CHOICES = [
    # (authority, target, the backend chosen, the host on the log line)
    (b"chat.example.com", b"/", CHAT, "chat.example.com"),
    (b"chat.example.com", b"/ws/room", CHAT_WS, "chat.example.com"),
    (b"chat.example.com", b"/api", CHAT, "chat.example.com"),  # not the hostless /api
    (b"Chat.EXAMPLE.com.:8443", b"/ws", CHAT_WS, "chat.example.com"),
    (b"www.example.com", b"/ws", WILD, "www.example.com"),  # chat's /ws is chat's
    (b"WWW.Example.Com:443", b"/api/x", WILD, "www.example.com"),
    (b"a.b.example.com", b"/api", ANY_API, "a.b.example.com"),  # one label, not two
    (b"example.com", b"/x", ANY_ROOT, "example.com"),
    (b"other.test:8080", b"/api", ANY_API, "other.test"),
    (b"[::1]:8443", b"/api", V6, "[::1]"),
    (b"[0:0::1]", b"/", V6, "[::1]"),
    (b"127.0.0.1:8080", b"/", ANY_ROOT, "127.0.0.1"),
]


@KINDS
@FRONTS
@pytest.mark.parametrize(("authority", "target", "port", "host"), CHOICES)
async def test_the_host_chooses_the_routes_then_the_path(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    front: str,
    upgrade: bool,
    authority: bytes,
    target: bytes,
    port: int,
    host: str,
) -> None:
    recorder = Recorder()
    with capture_proxy_records() as records:
        _, client = await serve(nursery, recorder, CONFIG)
        assert await send(client, front, target, authority, upgrade=upgrade) == opened(
            front, upgrade
        )
        record = await records.wait_for(ended, 60, "for the request or tunnel")
    assert recorder.ports == [port]
    assert record.get("host") == host
    assert record.get("backend") == f"http://127.0.0.1:{port}"
    # The backend gets the client's authority as Host, as before.
    fields = dict(recorder.heads[0].headers)
    assert fields[b"host"] == authority


@KINDS
@FRONTS
async def test_a_host_whose_routes_miss_the_path_is_404(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, front: str, upgrade: bool
) -> None:
    # docs.example.com has only /docs: "/" is a 404 there, with no fallback to the
    # wildcard's or the hostless "/".
    recorder = Recorder()
    net, client = await serve(nursery, recorder, CONFIG)
    assert await send(client, front, b"/", b"docs.example.com", upgrade=upgrade) == b"404"
    assert net.dials == 0


@FRONTS
async def test_the_404_names_the_host(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, front: str
) -> None:
    recorder = Recorder()
    with capture_proxy_records() as records:
        _, client = await serve(nursery, recorder, CONFIG)
        await send(client, front, b"/x", b"Docs.Example.com:8443", upgrade=False)
        # HTTP/2 refuses an ordinary request at admission with one line of its own.
        record = await records.wait_for(
            lambda record: ended(record) or record.event == "h2.request_refused",
            10,
            "for the request",
        )
    assert record.get("status") == 404
    reason = "no route for /x on host docs.example.com"
    if front == "h1":
        assert (record.get("error"), record.get("host")) == (reason, "docs.example.com")
    else:
        assert record.get("reason") == reason


async def test_h2_without_authority_routes_on_the_host_field(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # RFC 9113 §8.3.1: with no :authority, Host names the target.
    recorder = Recorder()
    _, client = await serve(nursery, recorder, CONFIG)
    status = await send_h2(
        client, b"/ws", authority=None, upgrade=False, extra=[(b"host", b"chat.example.com")]
    )
    assert status == b"204"
    assert recorder.ports == [CHAT_WS]


async def test_h2_extended_connect_needs_authority(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # RFC 8441 §4: :authority itself; a host field does not stand in for it.
    recorder = Recorder()
    net, client = await serve(nursery, recorder, CONFIG)
    status = await send_h2(
        client, b"/ws", authority=None, upgrade=True, extra=[(b"host", b"chat.example.com")]
    )
    assert status == b"400"
    assert net.dials == 0


async def test_h2_authority_and_host_must_agree(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    recorder = Recorder()
    net, client = await serve(nursery, recorder, CONFIG)
    status = await send_h2(
        client,
        b"/ws",
        authority=b"www.example.com",
        upgrade=False,
        extra=[(b"host", b"chat.example.com")],
    )
    assert status == b"400"
    assert net.dials == 0


@KINDS
async def test_h1_without_host_is_400(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, upgrade: bool
) -> None:
    recorder = Recorder()
    net, client = await serve(nursery, recorder, CONFIG)
    answer = await send_h1(client, b"/", host=None, upgrade=upgrade)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert net.dials == 0


@KINDS
async def test_h1_with_two_hosts_is_400(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, upgrade: bool
) -> None:
    recorder = Recorder()
    net, client = await serve(nursery, recorder, CONFIG)
    answer = await send_h1(
        client,
        b"/ws",
        host=b"www.example.com",
        upgrade=upgrade,
        extra=[(b"host", b"chat.example.com")],
    )
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert net.dials == 0


async def test_h1_absolute_form_routes_on_its_authority(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # RFC 9112 §3.2.2: the target's authority wins over Host, for routing as for the backend.
    recorder = Recorder()
    _, client = await serve(nursery, recorder, CONFIG)
    answer = await send_h1(client, b"http://chat.example.com/ws", host=b"other.test", upgrade=False)
    assert answer.startswith(b"HTTP/1.1 204 ")
    assert recorder.ports == [CHAT_WS]
    assert dict(recorder.heads[0].headers)[b"host"] == b"chat.example.com"


@KINDS
@FRONTS
async def test_without_host_routes_any_host_is_served(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, front: str, upgrade: bool
) -> None:
    config = make_config(("/", "http://127.0.0.1:1000"))
    recorder = Recorder()
    with capture_proxy_records() as records:
        _, client = await serve(nursery, recorder, config)
        status = await send(client, front, b"/x", b"Anything.Test:1", upgrade=upgrade)
        assert status == opened(front, upgrade)
        record = await records.wait_for(ended, 60, "for the request or tunnel")
    assert recorder.ports == [ANY_ROOT]
    assert record.get("host") == "anything.test"
