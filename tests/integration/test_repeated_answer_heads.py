"""The wire's memory of the last plain head (LAST_PLAIN_HEADS) end to end: lean GETs/HEADs
whose answer head repeats, byte for byte, the head the proxy read last (so ``receive_whole``
takes the last head's result without parsing), with a framing that differs: stray bytes or a
second answer after it, a body on a HEAD answer, a HEAD after GETs and GETs after a HEAD,
the same head from another backend followed by stray bytes. The next request must get its
own answer, the connection reused exactly when a full parse would reuse it."""

from __future__ import annotations

import pytest
import trio

from tests.conftest import StartProxy
from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.h2_client import open_h2_client
from tests.helpers.records import ProxyRecords
from tests.helpers.scripted_http import OK, fetch, get, scripted
from tests.helpers.scripted_proxy import proxy_for
from tests.helpers.setup import backend_url, make_config

pytestmark = pytest.mark.socket

HEAD_BYTES = OK[: OK.index(b"\r\n\r\n") + 4]  # the head every answer below repeats

# case: (method of /case, what the backend writes for /case, expected (status, body),
#        backend connections used by the four requests)
CASES = {
    "stray_after_repeated_head": ("GET", OK + b"STRAY", (200, b"first"), 2),
    "second_answer_after_repeated_head": ("GET", OK + OK, (200, b"first"), 2),
    "head_answer_same_head": ("HEAD", HEAD_BYTES, (200, b""), 1),
    "head_answer_with_body": ("HEAD", OK, (200, b""), 2),
    "clean_repeat": ("GET", OK, (200, b"first"), 1),
}


async def _run(
    nursery: trio.Nursery, start_proxy: StartProxy, method: str, raw: bytes
) -> tuple[object, list[object], ScriptedBackend]:
    async def answer(connection: BackendConnection, head: bytes, _number: int) -> bool:
        path = head.split(b" ")[1]
        if path == b"/case":
            await connection.stream.send_all(raw)
        elif head.startswith(b"HEAD "):
            await connection.stream.send_all(HEAD_BYTES)
        else:
            await connection.stream.send_all(OK)
        return True

    backend, stream = await proxy_for(nursery, start_proxy, answer)
    async with open_h2_client(stream) as client:
        first = await fetch(client, b"/one")  # a kept connection; its head is the last
        prime_head = [(b":method", b"HEAD"), *get(b"/prime")[1:]]
        state = await client.request(prime_head, end_stream=True)  # HEAD's last head too
        with trio.fail_after(15):
            primed = await client.finished(state)
        headers = get(b"/case")
        if method == "HEAD":
            headers = [(b":method", b"HEAD"), *headers[1:]]
        state = await client.request(headers, end_stream=True)
        with trio.fail_after(15):
            case = await client.finished(state)
        after = await fetch(client, b"/two")
    return case, [first, primed, after], backend


@pytest.mark.parametrize("case", list(CASES))
async def test_a_repeated_head_then_the_next(
    nursery: trio.Nursery, start_proxy: StartProxy, proxy_records: ProxyRecords, case: str
) -> None:
    method, raw, expected, connections = CASES[case]
    state, (first, primed, after), backend = await _run(nursery, start_proxy, method, raw)
    assert (first.status, bytes(first.data)) == (200, b"first")
    assert (primed.status, bytes(primed.data), primed.ended) == (200, b"", True)
    assert (state.status, bytes(state.data), state.ended) == (*expected, True)
    assert (after.status, bytes(after.data), after.ended) == (200, b"first", True)
    assert len(backend.connections) == connections
    line = [entry for entry in proxy_records.named("request.closed") if entry["path"] == "/case"]
    assert [entry["end"] for entry in line] == ["clean"]


async def test_the_same_head_from_another_backend_with_stray_bytes(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    """Backend A's head is the last read; backend B answers with the same head bytes and
    stray bytes after its body: B's connection must not be kept (its next answer would be
    the stray bytes)."""

    async def plain(connection: BackendConnection, head: bytes, _number: int) -> bool:
        await connection.stream.send_all(OK)
        return True

    async def poisoned(connection: BackendConnection, head: bytes, number: int) -> bool:
        await connection.stream.send_all(
            OK + b"HTTP/1.1 404 Stray\r\ncontent-length: 0\r\n\r\n" if number == 1 else OK
        )
        return True

    a, b = ScriptedBackend(scripted(plain)), ScriptedBackend(scripted(poisoned))
    port_a = await nursery.start(a.run)
    port_b = await nursery.start(b.run)
    address = await start_proxy(
        make_config(("/a", backend_url(port_a)), ("/b", backend_url(port_b)))
    )
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with open_h2_client(stream) as client:
        assert bytes((await fetch(client, b"/b/0")).data) == b"first"
        assert bytes((await fetch(client, b"/a/0")).data) == b"first"
        assert bytes((await fetch(client, b"/a/1")).data) == b"first"
        poisoned_state = await fetch(client, b"/b/1")  # same head as /a's: the fast path
        after = await fetch(client, b"/b/2")
    assert (poisoned_state.status, bytes(poisoned_state.data)) == (200, b"first")
    assert (after.status, bytes(after.data)) == (200, b"first")
    assert len(b.connections) == 2
