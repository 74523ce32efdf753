"""A backend's plain 101, remembered around its accept token (backend.known_101.Known101): the same
answer for a new key is taken without reading it again, with the very outcome that reading
and checking it would have had; anything else is read and checked as before."""

from __future__ import annotations

import outcome
import pytest
import trio
import trio.testing
from wsproto.utilities import generate_accept_token

from h2ws_proxy.backend import known_101 as remembered
from h2ws_proxy.backend import upgrade as backend
from h2ws_proxy.backend.upgrade import connect_and_upgrade
from h2ws_proxy.config import BackendAddress, parse_backend
from h2ws_proxy.errors import BackendProtocolError
from h2ws_proxy.http.backend_handshake import build_backend_upgrade, new_websocket_key
from h2ws_proxy.http.handshake import WebSocketRequest
from tests.helpers.setup import make_config
from tests.protocol.test_backend_upgrade import LIMITS, REQUEST

ADDRESS = parse_backend("http://127.0.0.1:9")
ROUTE = make_config(("/", "http://127.0.0.1:9")).routes[0]


def head_101(token: bytes, *extra: bytes) -> bytes:
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + token + b"\r\n" + b"".join(extra) + b"\r\n"
    )


async def upgrade(answer: bytes, key: bytes, request: WebSocketRequest = REQUEST) -> object:
    """The outcome of an upgrade against a backend that answers ``answer`` at once."""
    proxy_side, backend_side = trio.testing.memory_stream_pair()

    async def answer_it() -> None:
        received = bytearray()
        while b"\r\n\r\n" not in received:
            received.extend(await backend_side.receive_some(65536))
        await backend_side.send_all(answer)

    async def connect(_address: BackendAddress) -> trio.abc.HalfCloseableStream:
        return proxy_side

    made = build_backend_upgrade(request, ROUTE, key, None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer_it)
        result = await outcome.acapture(
            connect_and_upgrade, ADDRESS, made, key, request, LIMITS, connect
        )
    if isinstance(result, outcome.Error):
        return type(result.error), str(result.error)
    upgraded = result.unwrap()
    return upgraded.accepted, upgraded.leftover


async def both_ways(answer_for: object, request: WebSocketRequest = REQUEST) -> None:
    """Two upgrades in a row with fresh keys: each as it comes out when read afresh."""
    for _ in range(2):
        key = new_websocket_key()
        answer = answer_for(generate_accept_token(key))  # type: ignore[operator]
        known = dict(remembered._known_101s)
        remembered._known_101s.clear()
        fresh = await upgrade(answer, key, request)
        remembered._known_101s.clear()
        remembered._known_101s.update(known)
        assert await upgrade(answer, key, request) == fresh


@pytest.fixture(autouse=True)
def forget_101s() -> None:
    remembered._known_101s.clear()


async def test_the_same_101_for_a_new_key_is_taken_as_known(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def answer(token: bytes) -> bytes:
        return head_101(token, b"Sec-WebSocket-Protocol: chat\r\n") + b"tail"

    await both_ways(answer)
    assert ADDRESS in remembered._known_101s

    read = backend.read_interim_head

    def unread(buffer: bytearray, *args: int) -> object:
        if buffer:
            raise AssertionError("a known 101 was read again")
        return read(buffer, *args)

    monkeypatch.setattr(backend, "read_interim_head", unread)
    key = new_websocket_key()
    accepted, leftover = await upgrade(answer(generate_accept_token(key)), key)  # type: ignore[misc]
    assert leftover == b"tail"
    assert accepted.subprotocol == b"chat"


async def test_another_head_is_read_and_checked_again() -> None:
    await both_ways(lambda token: head_101(token, b"Sec-WebSocket-Protocol: chat\r\n"))
    await both_ways(lambda token: head_101(token, b"Set-Cookie: a=1\r\n"))
    await both_ways(lambda token: head_101(token, b"Sec-WebSocket-Protocol: other\r\n"))


async def test_other_offers_are_checked_again() -> None:
    await both_ways(lambda token: head_101(token, b"Sec-WebSocket-Protocol: chat\r\n"))
    refused = WebSocketRequest(**{**_fields(REQUEST), "subprotocols": ()})
    key = new_websocket_key()
    result = await upgrade(
        head_101(generate_accept_token(key), b"Sec-WebSocket-Protocol: chat\r\n"), key, refused
    )
    assert isinstance(result, tuple)
    assert result[0] is BackendProtocolError


async def test_a_wrong_token_is_still_refused() -> None:
    await both_ways(lambda token: head_101(token))
    result = await upgrade(head_101(generate_accept_token(b"another key")), new_websocket_key())
    assert isinstance(result, tuple)
    assert result[0] is BackendProtocolError


async def test_a_head_that_repeats_the_token_is_not_kept() -> None:
    await both_ways(lambda token: head_101(token, b"X-Echo: " + token + b"\r\n"))
    assert ADDRESS not in remembered._known_101s


def _fields(request: WebSocketRequest) -> dict[str, object]:
    return {name: getattr(request, name) for name in request.__slots__}
