"""Ordinary HTTP through the proxy, on loopback, to Node's own HTTP/1.1 server.

Both front ends: an HTTP/2 client (the h2 library) and raw HTTP/1.1 bytes (so that the
smuggling cases can be sent exactly as an attacker would). The backend is
``tests/node/http_backend.mjs`` (Node's ``http`` module: keep-alive, chunked, trailers,
100-continue as Node does them), or a scripted raw backend for misbehaviour.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Awaitable, Callable, Iterator

import pytest
import trio

from h2ws_proxy.config import SocketAddress
from tests.conftest import StartProxy
from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.h2_client import H2TestClient, StreamState, open_h2_client
from tests.helpers.node import HTTP_BACKEND_SCRIPT, start_node_backend
from tests.helpers.records import ProxyRecords, capture_proxy_records
from tests.helpers.setup import backend_url, make_config

pytestmark = pytest.mark.socket

PROTOCOL_ERROR, NO_ERROR, CANCEL = 0x1, 0x0, 0x8
Header = tuple[bytes, bytes]


@pytest.fixture
def records() -> Iterator[ProxyRecords]:
    with capture_proxy_records() as captured:
        yield captured


async def start(nursery: trio.Nursery, start_proxy: StartProxy, **limits: float) -> SocketAddress:
    port = await start_node_backend(nursery, script=HTTP_BACKEND_SCRIPT)
    return await start_proxy(make_config(("/", backend_url(int(port))), **limits))


def request_headers(method: bytes, path: bytes, *extra: Header) -> list[Header]:
    return [
        (b":method", method),
        (b":scheme", b"http"),
        (b":path", path),
        (b":authority", b"proxy.test"),
        *extra,
    ]


async def h2_get(client: H2TestClient, path: bytes, *extra: Header) -> StreamState:
    state = await client.request(request_headers(b"GET", path, *extra), end_stream=True)
    with trio.fail_after(30):
        return await client.finished(state)


async def open_h2(address: SocketAddress) -> trio.SocketStream:
    return await trio.open_tcp_stream(address.host, address.port)


def pattern(size: int) -> bytes:
    block = bytes(i % 251 for i in range(65536))
    return (block * (size // len(block) + 1))[:size]


# ---- HTTP/2 front end ----


async def test_h2_get_head_and_the_log_line(
    nursery: trio.Nursery, start_proxy: StartProxy, records: ProxyRecords
) -> None:
    address = await start(nursery, start_proxy)
    async with open_h2_client(await open_h2(address)) as client:
        hello = await h2_get(client, b"/hello")
        assert hello.status == 200
        assert bytes(hello.data) == b"hello\n"
        assert hello.header(b"content-length") == b"6"
        assert hello.reset_code is None
        head = await client.finished(
            await client.request(request_headers(b"HEAD", b"/hello"), end_stream=True)
        )
        assert head.status == 200
        assert head.header(b"content-length") == b"6"  # HEAD keeps the length, sends no body
        assert bytes(head.data) == b""
        assert head.ended
        assert head.reset_code is None
        missing = await h2_get(client, b"/nothing-here")
        assert missing.status == 404  # the backend's 404, relayed
    lines = records.named("request.closed")
    assert [(line["front"], line["method"], line["status"], line["end"]) for line in lines] == [
        ("h2", "GET", 200, "clean"),
        ("h2", "HEAD", 200, "clean"),
        ("h2", "GET", 404, "clean"),
    ]
    assert lines[0]["bytes_down"] == 6
    assert lines[0]["stream"] == 1


async def test_h2_request_fields_reach_the_backend_as_http11(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    address = await start(nursery, start_proxy)
    async with open_h2_client(await open_h2(address)) as client:
        seen_state = await h2_get(
            client,
            b"/headers?q=1",
            (b"te", b"trailers"),
            (b"cookie", b"a=1"),
            (b"cookie", b"b=2"),
            (b"x-forwarded-for", b"6.6.6.6"),
            (b"x-custom", b"kept"),
        )
    seen = json.loads(bytes(seen_state.data))
    assert seen["url"] == "/headers?q=1"
    assert seen["httpVersion"] == "1.1"
    headers = seen["headers"]
    assert headers["host"] == "proxy.test"  # Host from :authority
    assert headers["cookie"] == "a=1; b=2"  # crumbs joined (RFC 9113 §8.2.3)
    assert headers["x-forwarded-for"] == "127.0.0.1"  # the client's claim dropped
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-custom"] == "kept"
    assert "te" not in headers
    assert "content-length" not in headers
    assert "transfer-encoding" not in headers


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_h2_upload_streams_to_the_backend(
    nursery: trio.Nursery, start_proxy: StartProxy, declared: bool
) -> None:
    address = await start(nursery, start_proxy)
    body = os.urandom(3 * 1024 * 1024 + 17)
    extra = [(b"content-length", str(len(body)).encode())] if declared else []
    async with open_h2_client(await open_h2(address)) as client:
        state = await client.request(request_headers(b"POST", b"/digest", *extra))
        await client.send_data(state, body, end_stream=True)
        with trio.fail_after(30):
            await client.finished(state)
    assert state.status == 200
    assert json.loads(bytes(state.data)) == {
        "bytes": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    }


async def test_h2_the_same_head_with_and_without_a_body(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    """The same fields, ended by HEADERS and then not: each is framed for what it carries
    (a connection remembers its last accepted request: http2/request_intake.py)."""
    address = await start(nursery, start_proxy)
    head = request_headers(b"POST", b"/digest")
    async with open_h2_client(await open_h2(address)) as client:
        with trio.fail_after(30):
            empty = await client.finished(await client.request(head, end_stream=True))
            state = await client.request(head)
            await client.send_data(state, b"hello", end_stream=True)
            await client.finished(state)
    assert empty.status == 200
    assert json.loads(bytes(empty.data))["bytes"] == 0
    assert state.status == 200
    assert json.loads(bytes(state.data)) == {
        "bytes": 5,
        "sha256": hashlib.sha256(b"hello").hexdigest(),
    }


async def test_h2_a_repeated_head_and_heads_that_differ_from_it(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    """A connection takes a repeated head's request without checking it again
    (http2/request_intake.py): only equal fields are taken so; a head that differs in one
    value, or that adds a field a request may not carry, is judged as itself."""
    address = await start(nursery, start_proxy)
    seen: list[tuple[int | None, object]] = []
    async with open_h2_client(await open_h2(address)) as client:
        for extra in [
            (b"x-a", b"1"),
            (b"x-a", b"1"),
            (b"x-a", b"2"),
            (b"x-a", b"1"),
            (b"content-length", b"x"),  # not a number: a 400 on its stream
            (b"x-a", b"1"),
        ]:
            state = await h2_get(client, b"/headers", extra)
            data = json.loads(bytes(state.data)) if state.status == 200 else None
            seen.append((state.status, data and data["headers"].get(extra[0].decode())))
    assert seen == [(200, "1"), (200, "1"), (200, "2"), (200, "1"), (400, None), (200, "1")]


async def test_h2_download_and_trailers(nursery: trio.Nursery, start_proxy: StartProxy) -> None:
    address = await start(nursery, start_proxy)
    size = 5 * 1024 * 1024 + 3
    async with open_h2_client(await open_h2(address)) as client:
        chunked = await h2_get(client, f"/bytes/{size}".encode())
        sized = await h2_get(client, f"/bytes/{size}?length=1".encode())
        trailers = await h2_get(client, b"/trailers")
        state = await client.request(request_headers(b"POST", b"/trailers"))
        await client.send_data(state, b"12345")
        client.conn.send_headers(state.stream_id, [(b"x-sum", b"15")], end_stream=True)
        await client.flush()
        with trio.fail_after(30):
            await client.finished(state)
    assert bytes(chunked.data) == pattern(size)
    assert chunked.header(b"content-length") is None
    assert bytes(sized.data) == pattern(size)
    assert sized.header(b"content-length") == str(size).encode()
    assert bytes(trailers.data) == b"body"
    assert trailers.trailers == [(b"x-checksum", b"abc123")]
    assert json.loads(bytes(state.data)) == {"trailers": {"x-sum": "15"}, "bytes": 5}


async def test_h2_expect_100_continue(nursery: trio.Nursery, start_proxy: StartProxy) -> None:
    address = await start(nursery, start_proxy)
    async with open_h2_client(await open_h2(address)) as client:
        state = await client.request(
            request_headers(
                b"POST", b"/continue", (b"expect", b"100-continue"), (b"content-length", b"4")
            )
        )
        with trio.fail_after(10):
            await client.wait_for(lambda: bool(state.informational))
        assert state.informational[0][0] == (b":status", b"100")
        assert state.headers is None  # the final answer waits for the body
        await client.send_data(state, b"ping", end_stream=True)
        with trio.fail_after(10):
            await client.finished(state)
    assert state.status == 200
    assert bytes(state.data) == b"ping"


async def test_h2_framing_violations_are_stream_errors(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    """RFC 9113 §8.1.1: a body that disagrees with content-length is malformed: its stream is
    reset, the connection and its other requests carry on."""
    address = await start(nursery, start_proxy)
    async with open_h2_client(await open_h2(address)) as client:
        longer = await client.request(
            request_headers(b"POST", b"/digest", (b"content-length", b"10"))
        )
        await client.send_data(longer, b"x" * 20, end_stream=True)
        shorter = await client.request(
            request_headers(b"POST", b"/digest", (b"content-length", b"10"))
        )
        await client.send_data(shorter, b"x" * 5, end_stream=True)
        bad_value = await client.request(
            request_headers(b"POST", b"/digest", (b"content-length", b"ten"))
        )
        get_with_body = await client.request(
            request_headers(b"GET", b"/hello", (b"content-length", b"5"))
        )
        data_on_get = await client.request(request_headers(b"GET", b"/slow?ms=200"))
        await client.send_data(data_on_get, b"smuggled", end_stream=True)
        with trio.fail_after(10):
            for state in (longer, shorter, bad_value, get_with_body, data_on_get):
                await client.finished(state)
                assert state.reset_code == PROTOCOL_ERROR, state
        assert bad_value.status == 400
        assert get_with_body.status == 400
        still_fine = await h2_get(client, b"/hello")
        assert bytes(still_fine.data) == b"hello\n"
        assert client.terminated is None


async def test_backend_connections_are_kept_alive_and_reused(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    address = await start(nursery, start_proxy)
    async with open_h2_client(await open_h2(address)) as client:
        sockets = [json.loads(bytes((await h2_get(client, b"/headers")).data))["socket"]]
        sockets.append(json.loads(bytes((await h2_get(client, b"/headers")).data))["socket"])
        stats = json.loads(bytes((await h2_get(client, b"/stats")).data))
    assert sockets[0] == sockets[1]
    assert stats["connections"] == 1


async def test_client_reset_mid_download_discards_the_backend_connection(
    nursery: trio.Nursery, start_proxy: StartProxy, records: ProxyRecords
) -> None:
    address = await start(nursery, start_proxy)
    async with open_h2_client(await open_h2(address)) as client:
        first = json.loads(bytes((await h2_get(client, b"/headers")).data))["socket"]
        big = await client.request(request_headers(b"GET", b"/bytes/50000000"), end_stream=True)
        with trio.fail_after(10):
            await client.wait_for(lambda: len(big.data) > 0)
        await client.reset(big, CANCEL)
        after = json.loads(bytes((await h2_get(client, b"/headers")).data))["socket"]
    assert after != first  # the aborted exchange's connection was not given back
    ends = [line["end"] for line in records.named("request.closed")]
    assert "client_aborted" in ends


async def test_interleaved_download_upload_and_tunnels_on_one_connection(
    nursery: trio.Nursery, start_proxy: StartProxy, records: ProxyRecords
) -> None:
    """The issue's acceptance case: a large download, a large upload and several tunnels
    at once on one HTTP/2 connection; each finishes with every byte."""
    address = await start(nursery, start_proxy)
    download_size = 24 * 1024 * 1024
    upload = os.urandom(16 * 1024 * 1024)
    results: dict[str, object] = {}
    async with open_h2_client(await open_h2(address)) as client:

        async def download() -> None:
            state = await h2_get(client, f"/bytes/{download_size}".encode())
            results["download"] = bytes(state.data) == pattern(download_size)

        async def upload_body() -> None:
            state = await client.request(
                request_headers(b"PUT", b"/digest", (b"content-length", str(len(upload)).encode()))
            )
            await client.send_data(state, upload, end_stream=True)
            await client.finished(state)
            results["upload"] = json.loads(bytes(state.data))["sha256"]

        async def tunnel(index: int) -> None:
            ws = await client.websocket("/ws")
            assert ws.status == 200
            for round_ in range(20):
                message = f"tunnel {index} round {round_}"
                await ws.send(message)
                assert await ws.receive() == message
            await ws.close()
            results[f"tunnel{index}"] = True

        with trio.fail_after(60):
            async with trio.open_nursery() as work:
                work.start_soon(download)
                work.start_soon(upload_body)
                for index in range(6):
                    work.start_soon(tunnel, index)
    assert results.pop("download") is True
    assert results.pop("upload") == hashlib.sha256(upload).hexdigest()
    assert results == {f"tunnel{index}": True for index in range(6)}
    assert len(records.named("tunnel.closed")) == 6
    assert {line["end"] for line in records.named("request.closed")} == {"clean"}


# ---- HTTP/1.1 front end ----


async def raw_exchange(address: SocketAddress, data: bytes, *, until: bytes = b"") -> bytes:
    """Send ``data``; read until EOF (or until ``until`` appears), bounded in time."""
    stream = await trio.open_tcp_stream(address.host, address.port)
    await stream.send_all(data)
    answer = bytearray()
    with trio.fail_after(15):
        while not (until and until in answer):
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            answer += chunk
    await stream.aclose()
    return bytes(answer)


async def test_h1_keep_alive_and_pipelining(
    nursery: trio.Nursery, start_proxy: StartProxy, records: ProxyRecords
) -> None:
    address = await start(nursery, start_proxy)
    requests = (
        b"GET /hello HTTP/1.1\r\nHost: proxy.test\r\n\r\n"
        b"POST /digest HTTP/1.1\r\nHost: proxy.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
        b"GET /headers HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\n\r\n"
    )
    answer = await raw_exchange(address, requests)
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert b"hello\n" in answer
    assert hashlib.sha256(b"hello").hexdigest().encode() in answer
    seen = json.loads(answer.rsplit(b"\r\n\r\n", 1)[1].split(b"\r\n")[-1] or b"{}")
    assert seen.get("headers", {}).get("connection") in (None, "keep-alive", "close")
    lines = records.named("request.closed")
    assert [(line["front"], line["method"], line["status"]) for line in lines] == [
        ("h1", "GET", 200),
        ("h1", "POST", 200),
        ("h1", "GET", 200),
    ]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (
            b"POST /digest HTTP/1.1\r\nHost: p\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: p\r\n\r\n",
            400,
        ),
        (
            b"POST /digest HTTP/1.1\r\nHost: p\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            400,
        ),
        (b"POST /digest HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (
            b"POST /digest HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            501,
        ),
        (b"GET /hello HTTP/1.1\r\nHost: p\r\nContent-Length: 4\r\n\r\nGET /", 400),
        (b"GET /hello HTTP/1.1\r\nHost: p\r\nX-A: b\rc\r\n\r\n", 400),
        (b"GET /hello HTTP/1.1\r\nHost: p\r\nX-A\x00: b\r\n\r\n", 400),
        (b"GET /hello HTTP/1.1\r\nHost: p\r\nHost: q\r\n\r\n", 400),
        (b"GET /he llo HTTP/1.1\r\nHost: p\r\n\r\n", 400),
    ],
    ids=[
        "cl-and-te",
        "two-lengths",
        "unknown-coding",
        "two-te",
        "body-on-get",
        "bare-cr-in-value",
        "nul-in-name",
        "two-hosts",
        "space-in-target",
    ],
)
async def test_h1_smuggling_attempts_are_refused_before_the_backend(
    nursery: trio.Nursery, start_proxy: StartProxy, request_bytes: bytes, status: int
) -> None:
    address = await start(nursery, start_proxy)
    answer = await raw_exchange(address, request_bytes)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1  # one answer, then the connection is closed
    # Nothing reached the backend: its connection count is still zero.
    stats = await raw_exchange(
        address, b"GET /stats HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n"
    )
    assert stats.endswith(b'{"connections":1}')  # only this /stats request's connection


async def test_h1_early_answer_closes_the_connection(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    address = await start(nursery, start_proxy)
    body = b"x" * (4 * 1024 * 1024)
    head = f"POST /early HTTP/1.1\r\nHost: p\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    stream = await trio.open_tcp_stream(address.host, address.port)
    answer = bytearray()

    async def send_body() -> None:
        # The proxy closes after answering: a broken send is expected.
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(head + body)

    with trio.fail_after(15):
        async with trio.open_nursery() as work:
            work.start_soon(send_body)
            while True:
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not chunk:
                    break
                answer += chunk
            work.cancel_scope.cancel()
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert answer.endswith(b"too big!\n")


# ---- a misbehaving backend ----


FAKE_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned"
BODILESS_ANSWERS = {
    "204": (b"GET", b"HTTP/1.1 204 No Content\r\n\r\n" + FAKE_RESPONSE),
    "304": (b"GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 8\r\n\r\n" + FAKE_RESPONSE),
    "head": (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned" + FAKE_RESPONSE),
}


def answering_with_a_body(answer: bytes) -> Callable[[BackendConnection], Awaitable[None]]:
    """A backend whose bodiless answers carry bytes anyway: a fake next response."""

    async def behaviour(connection: BackendConnection) -> None:
        request = bytearray()
        while chunk := await connection.stream.receive_some(65536):
            request += chunk
            while b"\r\n\r\n" in request:
                _, request = request.split(b"\r\n\r\n", 1)
                await connection.stream.send_all(answer)

    return behaviour


@pytest.mark.parametrize("kind", sorted(BODILESS_ANSWERS))
async def test_bytes_after_a_bodiless_answer_never_reach_the_next_client(
    nursery: trio.Nursery, start_proxy: StartProxy, kind: str
) -> None:
    method, answer = BODILESS_ANSWERS[kind]
    status = int(answer.split(b" ")[1])
    backend = ScriptedBackend(answering_with_a_body(answer))
    port = await nursery.start(backend.run)
    address = await start_proxy(make_config(("/", backend_url(port))))
    async with open_h2_client(await open_h2(address)) as client:
        states = []
        for path in (b"/a", b"/b"):
            state = await client.request(request_headers(method, path), end_stream=True)
            with trio.fail_after(10):
                states.append(await client.finished(state))
    for state in states:
        assert state.status == status
        assert bytes(state.data) == b""
        assert state.reset_code is None
        if status == 204:
            assert state.header(b"content-length") is None  # not on a 204 (RFC 9110 §8.6)
    h1 = await raw_exchange(
        address,
        method
        + b" /c HTTP/1.1\r\nHost: p\r\n\r\n"
        + method
        + b" /d HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n",
    )
    assert b"poisoned" not in h1
    assert h1.count(f"HTTP/1.1 {status} ".encode()) == 2
    assert len(backend.connections) == 4  # a connection that over-sent is never reused
