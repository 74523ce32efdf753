"""What of a backend's answer head is relayed, on every path: RFC 9112 §6.3 and RFC 9110
§7.6.1 for final and informational heads alike.

* An answer framed by ``Transfer-Encoding`` that also carries a ``Content-Length`` is
  relayed without the ``Content-Length`` (the coding overrides it, and a proxy removes it
  before forwarding): relayed, it would not match the body (a malformed HTTP/2 answer,
  RFC 9113 §8.1.1; a cut answer over HTTP/1.1).
* A 1xx loses its hop-by-hop fields and the ones its ``Connection`` names, as a final
  head does; a ``TE`` among them is dropped, not a reason to reset the stream.

Each test runs on the lean path (a first request leaves a kept connection in the pool)
and on the task path (nothing kept, ``backend_keepalive_s = 0``).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from tests.conftest import StartProxy
from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.h2_client import StreamState, open_h2_client
from tests.helpers.scripted_http import OK, fetch, get, scripted
from tests.helpers.setup import backend_url, make_config
from tests.integration.test_h1_lean_endings import request as h1_request
from tests.integration.test_h1_lean_endings import setup as setup_h1

pytestmark = pytest.mark.socket

PATHS = pytest.mark.parametrize("lean", [True, False], ids=["lean_path", "task_path"])

BOTH_FRAMINGS = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n0\r\n\r\n"
)
EARLY_HINTS_WITH_CONNECTION_FIELDS = (
    b"HTTP/1.1 103 Early Hints\r\nConnection: x-hop\r\nX-Hop: 1\r\nTE: gzip\r\n"
    b"Keep-Alive: timeout=5\r\nLink: </s.css>\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
)


async def fetch_over_h2(
    nursery: trio.Nursery, start_proxy: StartProxy, lean: bool, answer: bytes
) -> StreamState:
    """``answer`` (one write) to the request under test, fetched over HTTP/2 after a first
    request (on the lean path, that one leaves its connection kept)."""

    async def script(connection: BackendConnection, head: bytes, number: int) -> bool:
        await connection.stream.send_all(OK if number == 0 else answer)
        return True

    limits: dict[str, Any] = {} if lean else {"backend_keepalive_s": 0}
    backend = ScriptedBackend(scripted(script))
    port = await nursery.start(backend.run)
    address = await start_proxy(make_config(("/", backend_url(port)), **limits))
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with open_h2_client(stream) as client:
        assert (await fetch(client, b"/first")).status == 200
        state = await client.request(get(b"/under-test"), end_stream=True)
        with trio.fail_after(10):
            await client.finished(state)
        assert client.terminated is None, client.terminated
    return state


@PATHS
async def test_h2_an_answer_with_both_framings_goes_without_its_content_length(
    nursery: trio.Nursery, start_proxy: StartProxy, lean: bool
) -> None:
    state = await fetch_over_h2(nursery, start_proxy, lean, BOTH_FRAMINGS)
    assert (state.status, bytes(state.data), state.ended) == (200, b"abc", True)
    assert state.header(b"content-length") is None


@PATHS
async def test_h2_an_informational_head_loses_its_hop_by_hop_fields(
    nursery: trio.Nursery, start_proxy: StartProxy, lean: bool
) -> None:
    state = await fetch_over_h2(nursery, start_proxy, lean, EARLY_HINTS_WITH_CONNECTION_FIELDS)
    assert (state.status, bytes(state.data), state.reset_code) == (200, b"abc", None)
    (hints,) = state.informational
    assert dict(hints)[b":status"] == b"103"
    assert [name for name, _ in hints] == [b":status", b"link"]


@PATHS
async def test_h1_an_answer_with_both_framings_goes_without_its_content_length(
    nursery: trio.Nursery, start_proxy: StartProxy, lean: bool
) -> None:
    async def answer(connection: BackendConnection, head: bytes, number: int) -> bool:
        await connection.stream.send_all(BOTH_FRAMINGS)
        return True

    _, client = await setup_h1(nursery, start_proxy, lean, answer)
    await client.stream.send_all(h1_request(b"/under-test"))
    with trio.fail_after(10):
        while b"0\r\n\r\n" not in client.buffer:
            assert await client.more(), bytes(client.buffer)
    head, _, body = bytes(client.buffer).partition(b"\r\n\r\n")
    assert b"content-length" not in head.lower(), head
    assert b"transfer-encoding: chunked" in head.lower(), head
    assert body == b"3\r\nabc\r\n0\r\n\r\n"


@PATHS
async def test_h1_an_informational_head_loses_its_hop_by_hop_fields(
    nursery: trio.Nursery, start_proxy: StartProxy, lean: bool
) -> None:
    async def answer(connection: BackendConnection, head: bytes, number: int) -> bool:
        await connection.stream.send_all(EARLY_HINTS_WITH_CONNECTION_FIELDS)
        return True

    _, client = await setup_h1(nursery, start_proxy, lean, answer)
    await client.stream.send_all(h1_request(b"/under-test"))
    with trio.fail_after(10):
        while b"abc" not in client.buffer:
            assert await client.more(), bytes(client.buffer)
    hints, _, final = bytes(client.buffer).partition(b"\r\n\r\n")
    status_line, *fields = hints.lower().split(b"\r\n")
    assert status_line.startswith(b"http/1.1 103"), hints
    assert fields == [b"link: </s.css>"]
    assert final.startswith(b"HTTP/1.1 200 "), final
