"""Through both front ends, tunnels and requests: the route is chosen on the normalised path,
and the backend receives that same path (so it cannot resolve it elsewhere)."""

from __future__ import annotations

import hpack
import pytest
import trio
import trio.testing

from h2ws_proxy.config import BackendAddress, ProxyConfig
from tests.helpers.backends import HeadRecorder
from tests.helpers.frames import PREFACE, frame
from tests.helpers.memory import MemoryNet, open_memory_client
from tests.helpers.raw_h2 import read_frames_until
from tests.helpers.setup import make_config

HEADERS, SETTINGS = 0x1, 0x4
END_STREAM, END_HEADERS = 0x1, 0x4
#: Two routes on two backends, told apart by port.
CONFIG = make_config(("/public", "http://127.0.0.1:1001"), ("/admin", "http://127.0.0.1:1002"))
UPGRADE = (
    b"upgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-version: 13\r\n"
    b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


class Recorder(HeadRecorder):
    """The backends: which was dialled (by port), and the request head each received."""

    def __init__(self) -> None:
        super().__init__()
        self.ports: list[int] = []

    @property
    def targets(self) -> list[bytes]:
        return [head.target for head in self.heads]


async def serve(
    nursery: trio.Nursery, recorder: Recorder, config: ProxyConfig = CONFIG
) -> tuple[MemoryNet, trio.abc.Stream]:
    net = MemoryNet(nursery, recorder)
    dial = net.connect

    async def recording_dial(address: BackendAddress) -> trio.abc.HalfCloseableStream:
        recorder.ports.append(address.port)
        return await dial(address)

    net.connect = recording_dial
    return net, await open_memory_client(nursery, config, net)


async def send_h1(client: trio.abc.Stream, target: bytes, *, upgrade: bool) -> bytes:
    head = b"GET " + target + b" HTTP/1.1\r\nhost: proxy.test\r\n" + (UPGRADE if upgrade else b"")
    await client.send_all(head + b"\r\n")
    answer = b""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in answer:
            answer += await client.receive_some(65536)
    return answer


async def send_h2(client: trio.abc.Stream, target: bytes, *, upgrade: bool) -> bytes:
    head = [
        (b":method", b"CONNECT" if upgrade else b"GET"),
        *([(b":protocol", b"websocket")] if upgrade else []),
        (b":scheme", b"http"),
        (b":path", target),
        (b":authority", b"proxy.test"),
        *([(b"sec-websocket-version", b"13")] if upgrade else []),
    ]
    flags = END_HEADERS if upgrade else END_HEADERS | END_STREAM
    block = hpack.Encoder().encode(head)
    await client.send_all(PREFACE + frame(SETTINGS, 0, 0, b"") + frame(HEADERS, flags, 1, block))
    with trio.fail_after(10):
        frames = await read_frames_until(client, {HEADERS})
    return bytes(hpack.Decoder().decode(frames[-1][3], raw=True)[0][1])


BYPASSES = [b"/public/../admin", b"/public/%2e%2e/admin", b"//admin", b"/%61dmin"]


@pytest.mark.parametrize("upgrade", [False, True], ids=["request", "websocket"])
@pytest.mark.parametrize("front", ["h1", "h2"])
@pytest.mark.parametrize("target", BYPASSES)
async def test_the_route_and_the_backend_see_the_same_normalised_path(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    target: bytes,
    front: str,
    upgrade: bool,
) -> None:
    recorder = Recorder()
    _, client = await serve(nursery, recorder)
    send = send_h1 if front == "h1" else send_h2
    await send(client, target, upgrade=upgrade)
    assert recorder.ports == [1002]  # the /admin route: the path resolves there
    assert recorder.targets == [b"/admin"]


@pytest.mark.parametrize("front", ["h1", "h2"])
@pytest.mark.parametrize("target", [b"/public/..;/admin", b"/public/%2Fadmin", b"/public/../../x"])
async def test_a_path_that_cannot_be_routed_safely_is_refused(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, target: bytes, front: str
) -> None:
    recorder = Recorder()
    net, client = await serve(nursery, recorder)
    if front == "h1":
        assert (await send_h1(client, target, upgrade=False)).startswith(b"HTTP/1.1 400")
    else:
        assert await send_h2(client, target, upgrade=False) == b"400"
    assert net.dials == 0
