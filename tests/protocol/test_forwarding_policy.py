"""Through both front ends: ``x_forwarded = "append"`` (behind a trusted proxy) and a route's
``strip_fields``, in request heads, WebSocket upgrades and request trailers.

The backend records what it received; the tests compare the exact fields.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import h11
import hpack
import pytest
import trio
import trio.testing

from h2ws_proxy.config import ProxyConfig
from tests.helpers.backends import HeadRecorder
from tests.helpers.frames import PREFACE, frame
from tests.helpers.memory import MemoryNet, open_memory_client
from tests.helpers.raw_h2 import GOOD, read_frames_until
from tests.helpers.setup import make_config

Header = tuple[bytes, bytes]
XForwarded = bool | Literal["append"]
DATA, HEADERS, SETTINGS = 0x0, 0x1, 0x4
END_STREAM, END_HEADERS = 0x1, 0x4
UPGRADE = [
    (b"upgrade", b"websocket"),
    (b"connection", b"upgrade"),
    (b"sec-websocket-version", b"13"),
    (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
]
KINDS = pytest.mark.parametrize("websocket", [False, True], ids=["request", "upgrade"])
FRONTS = pytest.mark.parametrize("front", ["h1", "h2"])


def config(
    *, x_forwarded: XForwarded = True, strip_fields: frozenset[bytes] = frozenset()
) -> ProxyConfig:
    """One route, ``/``, with these settings."""
    base = make_config(("/", "http://127.0.0.1:9"))
    (route,) = base.routes
    route = dataclasses.replace(route, x_forwarded=x_forwarded, strip_fields=strip_fields)
    return dataclasses.replace(base, routes=(route,))


async def send_head(
    client: trio.abc.Stream, front: str, fields: list[Header], *, websocket: bool
) -> None:
    """A GET (or a WebSocket opening) to ``/`` carrying ``fields``; waits for the answer."""
    if front == "h1":
        extra = UPGRADE if websocket else []
        lines = b"".join(name + b": " + value + b"\r\n" for name, value in [*extra, *fields])
        await client.send_all(b"GET / HTTP/1.1\r\nhost: proxy.test\r\n" + lines + b"\r\n")
        answer = b""
        with trio.fail_after(10):
            while b"\r\n\r\n" not in answer:
                answer += await client.receive_some(65536)
        return
    pseudo = (
        [*GOOD[:3], (b":path", b"/"), *GOOD[4:]]
        if websocket
        else [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/")]
    )
    head = [*pseudo, *([] if websocket else [(b":authority", b"proxy.test")])]
    block = hpack.Encoder().encode([*head, *[(name.lower(), value) for name, value in fields]])
    flags = END_HEADERS if websocket else END_HEADERS | END_STREAM
    await client.send_all(PREFACE + frame(SETTINGS, 0, 0, b"") + frame(HEADERS, flags, 1, block))
    with trio.fail_after(10):
        await read_frames_until(client, {HEADERS})


def received(backend: HeadRecorder, names: set[bytes]) -> list[Header]:
    """The fields of the one head ``backend`` received whose names (lowercased) are in
    ``names``, sorted."""
    (request,) = backend.heads
    return sorted((name.lower(), value) for name, value in request.headers if name.lower() in names)


# --- x_forwarded = "append" ------------------------------------------------------------------

#: What the trusted proxy in front set (and one spelling no proxy sets, a client's spoof).
TRUSTED = [
    (b"x-forwarded-for", b"203.0.113.7"),
    (b"x-forwarded-for", b"10.0.0.2"),
    (b"x-forwarded-proto", b"https"),
    (b"forwarded", b"for=203.0.113.7;proto=https"),
    (b"x-real-ip", b"203.0.113.7"),
    (b"cf-connecting-ip", b"203.0.113.7"),
    (b"x_forwarded_for", b"10.6.6.6"),
]
FORWARDING = {
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"forwarded",
    b"x-real-ip",
    b"cf-connecting-ip",
    b"x_forwarded_for",
}


@FRONTS
@KINDS
async def test_append_keeps_the_trusted_fields_and_appends_the_peer(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, front: str, websocket: bool
) -> None:
    backend = HeadRecorder()
    client = await open_memory_client(
        nursery, config(x_forwarded="append"), MemoryNet(nursery, backend)
    )
    await send_head(client, front, TRUSTED, websocket=websocket)
    assert received(backend, FORWARDING) == [
        (b"cf-connecting-ip", b"203.0.113.7"),
        (b"forwarded", b"for=203.0.113.7;proto=https, for=127.0.0.1"),
        (b"x-forwarded-for", b"203.0.113.7, 10.0.0.2, 127.0.0.1"),
        (b"x-forwarded-host", b"proxy.test"),  # none came: ours
        (b"x-forwarded-proto", b"https"),  # the trusted proxy's, not our "http"
        (b"x-real-ip", b"203.0.113.7"),
    ]


@FRONTS
async def test_append_with_nothing_forwarded_sets_ours(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, front: str
) -> None:
    backend = HeadRecorder()
    client = await open_memory_client(
        nursery, config(x_forwarded="append"), MemoryNet(nursery, backend)
    )
    await send_head(client, front, [], websocket=False)
    assert received(backend, FORWARDING) == [
        (b"x-forwarded-for", b"127.0.0.1"),
        (b"x-forwarded-host", b"proxy.test"),
        (b"x-forwarded-proto", b"http"),
    ]


# --- strip_fields ------------------------------------------------------------------------------

INTERNAL = [
    (b"X-Internal-Auth", b"forged"),
    (b"x_internal_auth", b"forged"),  # WSGI/CGI read it as the same variable
    (b"x-other", b"kept"),
]


@FRONTS
@KINDS
@pytest.mark.parametrize("x_forwarded", [True, False, "append"])
async def test_strip_fields_leave_the_head(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    front: str,
    websocket: bool,
    x_forwarded: XForwarded,
) -> None:
    backend = HeadRecorder()
    route = config(x_forwarded=x_forwarded, strip_fields=frozenset({b"x-internal-auth"}))
    client = await open_memory_client(nursery, route, MemoryNet(nursery, backend))
    await send_head(client, front, INTERNAL, websocket=websocket)
    names = {b"x-internal-auth", b"x_internal_auth", b"x-other"}
    assert received(backend, names) == [(b"x-other", b"kept")]


@FRONTS
async def test_strip_fields_never_drop_the_proxys_own(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, front: str
) -> None:
    # Stripped from the client; the proxy's own X-Forwarded-For is then added as usual.
    backend = HeadRecorder()
    route = config(strip_fields=frozenset({b"x-forwarded-for"}), x_forwarded="append")
    client = await open_memory_client(nursery, route, MemoryNet(nursery, backend))
    await send_head(client, front, [(b"x-forwarded-for", b"10.6.6.6")], websocket=False)
    assert received(backend, {b"x-forwarded-for"}) == [(b"x-forwarded-for", b"127.0.0.1")]


class BodyRecorder:
    """A backend that reads each whole request, trailers included, then answers 204."""

    def __init__(self) -> None:
        self.trailers: list[list[Header]] = []

    async def __call__(self, stream: trio.abc.HalfCloseableStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(65536)))
            elif isinstance(event, h11.EndOfMessage):
                self.trailers.append(list(event.headers))
                break
        await stream.send_all(b"HTTP/1.1 204 No Content\r\n\r\n")


TRAILERS = [(b"x-internal-auth", b"forged"), (b"x_internal_auth", b"forged"), (b"x-sum", b"1")]


@FRONTS
async def test_strip_fields_leave_the_trailers(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, front: str
) -> None:
    backend = BodyRecorder()
    route = config(strip_fields=frozenset({b"x-internal-auth"}))
    client = await open_memory_client(nursery, route, MemoryNet(nursery, backend))
    if front == "h1":
        trailers = b"".join(name + b": " + value + b"\r\n" for name, value in TRAILERS)
        await client.send_all(
            b"POST / HTTP/1.1\r\nhost: proxy.test\r\ntransfer-encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n" + trailers + b"\r\n"
        )
        with trio.fail_after(10):
            assert (await client.receive_some(65536)).startswith(b"HTTP/1.1 204")
    else:
        encoder = hpack.Encoder()
        head = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/")]
        head.append((b":authority", b"proxy.test"))
        await client.send_all(
            PREFACE
            + frame(SETTINGS, 0, 0, b"")
            + frame(HEADERS, END_HEADERS, 1, encoder.encode(head))
            + frame(DATA, 0, 1, b"hello")
            + frame(HEADERS, END_HEADERS | END_STREAM, 1, encoder.encode(TRAILERS))
        )
        with trio.fail_after(10):
            await read_frames_until(client, {HEADERS})
    assert backend.trailers == [[(b"x-sum", b"1")]]
