"""Lean GETs (a kept backend connection, no task) whose answers the lean path reads in one
call (``H1BackendWire.receive_whole``) or hands to the event-by-event read.

Rules guarded, each with an answer written in one send: the client gets exactly the answer
(status, body, END_STREAM) and its access line says a clean end with the body's bytes; the
backend connection is kept only when h11 would keep it (not after stray bytes or a second
answer in the same read, not after ``connection: close`` or a close-delimited body), so the
next request gets its own answer, on a new connection when the first was not kept.
"""

from __future__ import annotations

import pytest
import trio

from tests.conftest import StartProxy
from tests.helpers.backends import BackendConnection
from tests.helpers.h2_client import open_h2_client
from tests.helpers.records import ProxyRecords
from tests.helpers.scripted_http import OK, fetch
from tests.helpers.scripted_proxy import proxy_for

pytestmark = pytest.mark.socket

BIG = bytes(range(256)) * 800  # 204800 bytes: more than a read, more than a stream window

#: case: (the backend's bytes for ``/case``, the client's (status, body), backend connections
#: used by the three requests: 1 when the answer leaves its connection kept, else 2).
CASES: dict[str, tuple[bytes, tuple[int, bytes], int]] = {
    "second_answer": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTRAY",
        (200, b"hello"),
        2,
    ),
    "stray_after_204": (b"HTTP/1.1 204 No Content\r\n\r\nJUNK", (204, b""), 2),
    "stray_after_empty": (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nX", (200, b""), 2),
    "close": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        (200, b"hello"),
        2,
    ),
    "early_hints": (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        (200, b"ok"),
        1,
    ),
    "not_modified": (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", (304, b""), 1),
    "chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        (200, b"abc"),
        1,
    ),
    "large": (
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BIG) + BIG,
        (200, BIG),
        1,
    ),
    "close_delimited": (b"HTTP/1.1 200 OK\r\n\r\nto-the-end", (200, b"to-the-end"), 2),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_lean_answer_then_the_next_request(
    nursery: trio.Nursery, start_proxy: StartProxy, proxy_records: ProxyRecords, case: str
) -> None:
    raw, expected, connections = CASES[case]

    async def answer(connection: BackendConnection, head: bytes, _number: int) -> bool:
        if head.split(b" ")[1] == b"/case":
            await connection.stream.send_all(raw)
            # A close-delimited body ends with the close. After ``connection: close`` the
            # backend keeps its socket open: only the proxy's reading of the field stops reuse.
            return case != "close_delimited"
        await connection.stream.send_all(OK)
        return True

    backend, stream = await proxy_for(nursery, start_proxy, answer)
    async with open_h2_client(stream) as client:
        assert (await fetch(client, b"/one")).status == 200  # leaves a kept connection
        state = await fetch(client, b"/case")  # so this one runs without a task
        after = await fetch(client, b"/two")
    assert (state.status, bytes(state.data), state.ended) == (*expected, True)
    assert (after.status, bytes(after.data)) == (200, b"first")
    assert len(backend.connections) == connections
    line = [entry for entry in proxy_records.named("request.closed") if entry["path"] == "/case"]
    assert [(entry["end"], entry["bytes_down"]) for entry in line] == [("clean", len(expected[1]))]
