"""An ordinary request's stream notes a cancel until its exchange adopts a scope of its own."""

from __future__ import annotations

import trio

from h2ws_proxy.config import Limits
from h2ws_proxy.http2.proxy_session import ProxySession
from h2ws_proxy.http2.request_scope import CancelNoted
from h2ws_proxy.http2.stream import H2Stream


class _NoConnection:
    """The stream's connection port: never used by these tests."""


def _request_stream() -> H2Stream:
    session = ProxySession(Limits(), connect_protocol_enabled=False)
    return H2Stream(session, _NoConnection(), 1, CancelNoted(), True)  # type: ignore[arg-type]


async def test_a_cancel_before_the_exchange_has_its_scope_carries_over() -> None:
    stream = _request_stream()
    stream.scope.cancel()  # the client's reset, or the connection's end
    assert stream.scope.cancel_called
    scope = trio.CancelScope()
    stream.adopt_scope(scope)  # the exchange's own (relay/exchange.py's ``on_start``)
    assert scope.cancel_called


async def test_without_a_cancel_the_adopted_scope_runs() -> None:
    stream = _request_stream()
    scope = trio.CancelScope()
    stream.adopt_scope(scope)
    assert not scope.cancel_called
    assert stream.scope is scope


async def test_a_stream_made_ended_reads_as_ended() -> None:
    stream = _request_stream()
    assert stream.remote_ended
    assert stream.receive_nowait(None) == b""
