"""An ordinary request's stream as the intake makes it (``H2Stream.for_request``): the
stream ``__init__`` makes, with the request's settings; and the one wake-up every stream
whose client side ended with its HEADERS shares (``ENDED_READABLE``): nothing ever waits
there, so a break noted on it reaches no other stream."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from h2ws_proxy.config import Limits
from h2ws_proxy.http2.proxy_session import ProxySession
from h2ws_proxy.http2.request_scope import CancelNoted
from h2ws_proxy.http2.stream import H2Stream, StreamPhase
from h2ws_proxy.http2.stream_inbound import ENDED_READABLE, StreamInbound
from h2ws_proxy.transport.wakeup import Wakeup


class _NoConnection:
    """The stream's connection port: never used by these tests."""


def _slots() -> list[str]:
    return [name for cls in (StreamInbound, H2Stream) for name in cls.__slots__]


def _state(stream: H2Stream) -> dict[str, object]:
    """Every slot's value, the wake-ups and the scope by their kind and state."""
    state: dict[str, object] = {}
    for name in _slots():
        value = getattr(stream, name)
        if isinstance(value, Wakeup):
            value = ("Wakeup", value is ENDED_READABLE, value._task, value._pending)
        elif isinstance(value, CancelNoted):
            value = ("CancelNoted", value.cancel_called)
        elif isinstance(value, list):
            value = ("list", list(value))
        state[name] = value
    return state


@pytest.mark.parametrize("ended", [True, False])
@pytest.mark.parametrize("declared", [0, 5, None])
def test_a_request_stream_is_the_one_init_makes_with_the_requests_settings(
    ended: bool, declared: int | None
) -> None:
    session = ProxySession(Limits(), connect_protocol_enabled=False)
    connection = _NoConnection()
    made = H2Stream.for_request(session, connection, 7, ended, declared)  # type: ignore[arg-type]
    expected = H2Stream(session, connection, 7, CancelNoted(), ended)  # type: ignore[arg-type]
    expected.exchange = True
    expected.phase = StreamPhase.OPEN
    expected.declared_length = declared
    assert type(made) is H2Stream
    assert _state(made) == _state(expected)
    assert made._inbound is not expected._inbound  # a list of its own
    assert (made._readable is ENDED_READABLE) is ended  # shared only by ended streams


async def test_a_break_noted_on_the_shared_wake_up_wakes_no_other_stream() -> None:
    """An ended stream's break sets the shared wake-up; its own reads still answer at once,
    and a stream with a body to come still waits for its own bytes."""
    session = ProxySession(Limits(), connect_protocol_enabled=False)
    ended = [
        H2Stream.for_request(session, _NoConnection(), i, True, 0)  # type: ignore[arg-type]
        for i in (1, 3)
    ]
    open_ = H2Stream.for_request(session, _NoConnection(), 5, False, 4)  # type: ignore[arg-type]
    ended[0].break_stream("client reset the stream", by_peer=True)
    ended[0].scope.cancel()
    assert not ended[1].scope.cancel_called  # scopes are the stream's own
    for stream in ended:
        with trio.testing.assert_no_checkpoints():
            assert stream.receive_nowait(None) == b""  # ended first: complete
        assert await stream.receive_some() == b""
    got: list[bytes] = []

    async def read() -> None:
        got.append(await open_.receive_some())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        ended[1].break_stream("client connection closed", by_peer=False)
        await trio.testing.wait_all_tasks_blocked()
        assert not got  # still waiting for its own bytes
        open_.feed_data(b"body")
    assert got == [b"body"]
    assert ENDED_READABLE._task is None  # nobody ever waited there
