"""backend.connect_and_upgrade against scripted backends in memory: the 101 read directly,
everything else read by h11, the same outcome either way, however the bytes are split."""

from __future__ import annotations

import outcome
import pytest
import trio
import trio.testing
from wsproto.utilities import generate_accept_token

from h2ws_proxy.backend.upgrade import BackendUpgraded, connect_and_upgrade
from h2ws_proxy.config import BackendAddress, Limits, parse_backend
from h2ws_proxy.errors import (
    BackendProtocolError,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
)
from h2ws_proxy.http.backend_handshake import build_backend_upgrade
from h2ws_proxy.http.handshake import WebSocketRequest
from tests.helpers.listeners import full_accept_queue
from tests.helpers.setup import make_config

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = generate_accept_token(KEY)
LIMITS = Limits(max_header_list_bytes=4096, handshake_timeout_s=10.0, connect_timeout_s=3.0)
REQUEST = WebSocketRequest(
    front="h2",
    scheme=b"http",
    authority=b"example.com",
    path=b"/chat",
    subprotocols=(b"chat",),
    extension_names=(),
    headers=(),
)
HEAD_101 = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: " + ACCEPT + b"\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
)


async def upgrade_against(chunks: list[bytes], *, close: bool = False) -> BackendUpgraded:
    """Upgrade against a backend that reads the request, then sends ``chunks`` one by one."""
    proxy_side, backend_side = trio.testing.memory_stream_pair()
    received = bytearray()

    async def backend() -> None:
        while b"\r\n\r\n" not in received:
            received.extend(await backend_side.receive_some(65536))
        for chunk in chunks:
            await backend_side.send_all(chunk)
            await trio.testing.wait_all_tasks_blocked()  # one read per chunk
        if close:
            await backend_side.send_eof()

    async def connect(_address: BackendAddress) -> trio.abc.HalfCloseableStream:
        return proxy_side

    route = make_config(("/", "http://127.0.0.1:9")).routes[0]
    upgrade = build_backend_upgrade(REQUEST, route, KEY, "127.0.0.1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(backend)
        # Captured, so that an error comes out as itself, not in the nursery's group.
        result = await outcome.acapture(
            connect_and_upgrade,
            parse_backend("http://127.0.0.1:9"),
            upgrade,
            KEY,
            REQUEST,
            LIMITS,
            connect,
        )
    assert bytes(received) == upgrade.data
    return result.unwrap()


def every_split(data: bytes) -> list[list[bytes]]:
    return [[data[:i], data[i:]] for i in range(1, len(data))] + [[bytes([b]) for b in data]]


@pytest.mark.parametrize("chunks", every_split(HEAD_101 + b"\x81\x02hi"))
async def test_101_in_any_split_and_its_leftover(chunks: list[bytes]) -> None:
    upgraded = await upgrade_against(chunks)
    assert upgraded.accepted.subprotocol == b"chat"
    # What came with the 101's last read is the leftover; the rest is still in the stream.
    arrived = 0
    for chunk in chunks:
        arrived += len(chunk)
        if arrived >= len(HEAD_101):
            break
    assert upgraded.leftover == (HEAD_101 + b"\x81\x02hi")[len(HEAD_101) : arrived]
    rest = upgraded.leftover
    while len(rest) < 4:
        rest += await upgraded.stream.receive_some(65536)
    assert rest == b"\x81\x02hi"


async def test_interim_heads_before_the_101() -> None:
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    upgraded = await upgrade_against([data + HEAD_101 + b"tail"])
    assert upgraded.accepted.subprotocol == b"chat"
    assert upgraded.leftover == b"tail"


@pytest.mark.parametrize(
    "head",
    [
        HEAD_101.replace(b"Upgrade: websocket\r\n", b"Upgrade:\r\n websocket\r\n"),  # obs-fold
        HEAD_101.replace(b"\r\n", b"\n"),  # bare LF
        b"HTTP/1.1 100 Continue\n\n" + HEAD_101,
    ],
)
async def test_a_101_only_h11_reads_is_still_a_101(head: bytes) -> None:
    for chunks in ([head + b"tail"], [head[:20], head[20:] + b"tail"]):
        upgraded = await upgrade_against(chunks)
        assert upgraded.accepted.subprotocol == b"chat"
        assert upgraded.leftover == b"tail"


@pytest.mark.parametrize("split", [1, 30])
async def test_rejection_with_body_after_a_100(split: int) -> None:
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\nSet-Cookie: a=1\r\n\r\nnope"
    )
    with pytest.raises(BackendRejected) as info:
        await upgrade_against([data[:split], data[split:]])
    assert info.value.status == 403
    assert info.value.body == b"nope"
    assert (b"set-cookie", b"a=1") in info.value.headers


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (HEAD_101.replace(ACCEPT, b"x" * len(ACCEPT)), "sec-websocket-accept does not match"),
        (HEAD_101.replace(b"Upgrade: websocket\r\n", b""), "lacks 'upgrade: websocket'"),
        (HEAD_101.replace(b"Connection: Upgrade\r\n", b""), "lacks 'connection: upgrade'"),
        (HEAD_101.replace(b"chat", b"other"), "subprotocol 'other'"),
        (b"HTTP/1.1 101 x\r\nbad name: 1\r\n\r\n", "illegal header line"),
        (b"HTTP/1.1 1010 x\r\n\r\n", "illegal status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "200 without switching"),
    ],
)
async def test_bad_answers_are_protocol_errors(data: bytes, message: str) -> None:
    with pytest.raises(BackendProtocolError, match=message):
        await upgrade_against([data])


async def test_unfinished_head_over_the_limit_is_refused() -> None:
    filler = b"X-Filler: " + b"f" * 1000 + b"\r\n"
    with pytest.raises(BackendProtocolError, match="Receive buffer too long"):
        await upgrade_against([b"HTTP/1.1 101 Switching Protocols\r\n"] + [filler] * 5)


@pytest.mark.parametrize("sent", [b"", b"HTTP/1.1 101 Swi", b"HTTP/1.1 100 Continue\r\n\r\n"])
async def test_close_before_a_whole_answer_is_unavailable(sent: bytes) -> None:
    with pytest.raises(BackendUnavailable, match="closed the connection without answering"):
        await upgrade_against([sent] if sent else [], close=True)


async def test_silence_after_the_request_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started = trio.current_time()
    with pytest.raises(BackendTimeout, match=r"did not answer the upgrade within 10\.0s"):
        await upgrade_against([b"HTTP/1.1 101 Swi"])
    assert trio.current_time() - started == 10.0


async def test_no_connection_times_out(autojump_clock: trio.testing.MockClock) -> None:
    async def never(_address: BackendAddress) -> trio.abc.HalfCloseableStream:
        await trio.sleep_forever()

    route = make_config(("/", "http://127.0.0.1:9")).routes[0]
    upgrade = build_backend_upgrade(REQUEST, route, KEY, None)
    started = trio.current_time()
    with pytest.raises(BackendTimeout, match=r"did not accept within 3\.0s"):
        await connect_and_upgrade(route.backend.servers[0], upgrade, KEY, REQUEST, LIMITS, never)
    assert trio.current_time() - started == 3.0


async def test_a_real_connect_that_waits_times_out_at_the_connect_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The default connector puts the connect timeout on only when the connect waits (a
    loopback connect never does, unless the backend's accept queue is full)."""
    listener, fillers = full_accept_queue()
    try:
        address = parse_backend(f"http://127.0.0.1:{listener.getsockname()[1]}")
        route = make_config(("/", str(address))).routes[0]
        upgrade = build_backend_upgrade(REQUEST, route, KEY, "127.0.0.1")
        with trio.fail_after(60), pytest.raises(BackendTimeout, match=r"within 3\.0s"):
            await connect_and_upgrade(address, upgrade, KEY, REQUEST, LIMITS)
        assert trio.current_time() == pytest.approx(LIMITS.connect_timeout_s)
    finally:
        for sock in [listener, *fillers]:
            sock.close()
