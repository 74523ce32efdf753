"""A client repeating its HTTP/1.1 requests (http1/request_memory.py): an equal request
takes the last one's translation and route, and its lean start the kept backend request;
a request differing in any line, or arriving after a reload, is judged as itself."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import pytest
import trio
import trio.testing

from h2ws_proxy.http.message import HttpRequest
from h2ws_proxy.http1 import frontend, request_memory
from h2ws_proxy.relay.kept_start import LastRequest
from tests.conftest import StartProxy
from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.reload import post_reload, serve_between
from tests.helpers.scripted_http import scripted
from tests.helpers.setup import backend_url, make_config
from tests.integration.test_h1_lean_endings import RawClient, request

pytestmark = pytest.mark.socket


def answering(body: bytes) -> ScriptedBackend:
    """A backend answering every request with ``body``."""

    async def answer(connection: BackendConnection, _head: bytes, _number: int) -> bool:
        await connection.stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        return True

    return ScriptedBackend(scripted(answer))


async def open_client(
    start_proxy: StartProxy, nursery: trio.Nursery, backend: ScriptedBackend
) -> RawClient:
    """A raw client of a proxy whose one route goes to ``backend`` (started here)."""
    port = await nursery.start(backend.run)
    address = await start_proxy(make_config(("/", backend_url(port))))
    return RawClient(await trio.open_tcp_stream(address.host, address.port))


async def get(client: RawClient, *fields: bytes, path: bytes = b"/a") -> tuple[bytes, bytes]:
    """GET ``path`` with ``fields`` on ``client``; the answer's head and body."""
    await client.stream.send_all(request(path, *fields))
    answer = await client.answer()
    assert answer is not None
    return answer


async def test_a_repeated_request_is_translated_once_and_its_lean_start_kept(
    nursery: trio.Nursery, start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four equal GETs on one connection: translated once, and the backend request made
    once (by the first, which then ran on the task path: nothing was idle yet); the lean
    path took the other three."""
    translated: list[bytes] = []
    prepared: list[bytes] = []
    lean: list[object] = []
    translate, prepare, run_lean = frontend.request_from_h1, LastRequest.prepare, frontend.run_lean

    def noted_translate(*args: object, **kwargs: object) -> HttpRequest:
        made = translate(*args, **kwargs)  # type: ignore[arg-type]
        translated.append(made.target)
        return made

    def noted_prepare(last: LastRequest, *args: object) -> bool:
        prepared.append(b"")
        return prepare(last, *args)  # type: ignore[arg-type]

    async def noted_run_lean(*args: object) -> bool | None:
        lean.append(args)
        return await run_lean(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(frontend, "request_from_h1", noted_translate)
    monkeypatch.setattr(LastRequest, "prepare", noted_prepare)
    monkeypatch.setattr(frontend, "run_lean", noted_run_lean)
    backend = answering(b"same")
    client = await open_client(start_proxy, nursery, backend)
    for _ in range(4):
        assert (await get(client, b"x-n: 1"))[1] == b"same"
    assert translated == [b"/a"]
    assert len(prepared) == 1
    assert len(lean) == 3
    assert backend.all_received.count(b"GET /a HTTP/1.1\r\n") == 4


async def test_a_request_differing_in_one_line_is_judged_as_itself(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    """After repeated GETs: a changed header value reaches the backend as sent, and one
    adding a conflicting framing is refused (400) with nothing sent to the backend."""
    backend = answering(b"same")
    client = await open_client(start_proxy, nursery, backend)
    for _ in range(3):
        await get(client, b"x-n: 1")
    await get(client, b"x-n: 2")
    last_head = backend.all_received.rsplit(b"GET ", 1)[1]
    assert b"\r\nx-n: 2\r\n" in last_head
    assert b"x-n: 1" not in last_head
    sent = len(backend.all_received)
    smuggled = request(b"/a", b"x-n: 1", b"content-length: 3", b"transfer-encoding: chunked")
    await client.stream.send_all(smuggled + b"0\r\n\r\n")
    refused = await client.answer()
    assert refused is not None
    assert refused[0].startswith(b"HTTP/1.1 400 ")
    assert await client.ended()
    assert len(backend.all_received) == sent


async def test_a_repeated_request_follows_a_reload(tmp_path: Path) -> None:
    """The remembered route was the old router's: after a reload moved the route, the same
    request on the same connection goes to the new backend."""
    async with trio.open_nursery() as nursery:
        a, b = answering(b"AAAAA"), answering(b"BBBBB")
        file, bound, stream = await serve_between(nursery, tmp_path, a, b)
        client = RawClient(stream)
        for _ in range(3):
            assert (await get(client))[1] == b"AAAAA"
        file.routes = [("/", b.url)]
        file.write()
        assert bound.admin is not None
        status, body = await post_reload(bound.admin)
        assert status == 200, body
        for _ in range(3):
            assert (await get(client))[1] == b"BBBBB"
        assert b.all_received.count(b"GET /a ") == 3
        await client.stream.aclose()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "fields",
    [
        [b"x-%d: 1" % number for number in range(request_memory.MAX_LINES + 1)],
        [b"x-%d: %s" % (number, b"v" * 1000) for number in range(9)],  # past MAX_BYTES
    ],
    ids=["many-lines", "many-bytes"],
)
async def test_a_request_too_large_to_remember_is_judged_each_time(
    nursery: trio.Nursery,
    start_proxy: StartProxy,
    monkeypatch: pytest.MonkeyPatch,
    fields: list[bytes],
) -> None:
    """Equal GETs with more header lines than ``MAX_LINES``, or more bytes than
    ``MAX_BYTES``: each translated and its backend request made anew (nothing of it kept
    for the next), yet all answered."""
    translated: list[bytes] = []
    prepared: list[LastRequest] = []
    translate, prepare = frontend.request_from_h1, LastRequest.prepare

    def noted_translate(*args: object, **kwargs: object) -> HttpRequest:
        made = translate(*args, **kwargs)  # type: ignore[arg-type]
        translated.append(made.target)
        return made

    def noted_prepare(last: LastRequest, *args: object) -> bool:
        prepared.append(last)
        return prepare(last, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(frontend, "request_from_h1", noted_translate)
    monkeypatch.setattr(LastRequest, "prepare", noted_prepare)
    client = await open_client(start_proxy, nursery, answering(b"big"))
    for _ in range(3):
        assert (await get(client, *fields))[1] == b"big"
    assert translated == [b"/a"] * 3
    assert len(set(map(id, prepared))) == len(prepared)  # a memory of its own each time


async def test_an_idle_connection_keeps_little_of_a_request_with_many_lines(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    """A head of ~60 KiB in 7,500 short lines (under the header limit), twice (the second
    on the lean path): the idle connection holds almost nothing of it afterwards, neither
    the parsed request nor its translation and backend request (the request memory keeps
    small requests only; the idle timeout may keep a connection for minutes)."""
    lines = [b"f%d: v" % (number % 100) for number in range(7500)]
    tracemalloc.start()
    try:
        client = await open_client(start_proxy, nursery, answering(b"ok"))
        for _ in range(2):
            assert (await get(client, *lines))[1] == b"ok"
        idle = await _settled_memory()
        await client.stream.aclose()
        gone = await _settled_memory()
    finally:
        tracemalloc.stop()
    # Kilobytes now; the parsed request alone was about 1.1 MB while the connection's loop
    # held it, and 3.1 MB with the request and its backend request remembered as well.
    assert idle - gone < 256 * 1024


async def _settled_memory() -> int:
    await trio.testing.wait_all_tasks_blocked()
    gc.collect()
    return tracemalloc.get_traced_memory()[0]
