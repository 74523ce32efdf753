"""A lean GET whose answer came whole in its first read but could not go at once (the
client's window shut), then the stream or connection ends mid-answer; an answer whole with
a byte beyond it; a 1xx before the final head in one read. Each on the lean path (a kept
connection first): the line, the backend connection's fate and the client's bytes."""

from __future__ import annotations

import pytest
import trio

from tests.conftest import StartProxy
from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.h2_client import open_h2_client
from tests.helpers.records import ProxyRecords
from tests.helpers.scripted_http import OK, fetch, get, scripted
from tests.helpers.setup import backend_url, make_config

pytestmark = pytest.mark.socket

INITIAL_WINDOW_SIZE = 0x4
BODY = bytes(range(256)) * 8
WHOLE = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY


def _backend(answers: dict[bytes, bytes]) -> ScriptedBackend:
    async def answer(connection: BackendConnection, head: bytes, _number: int) -> bool:
        await connection.stream.send_all(answers.get(head.split(b" ")[1], OK))
        return True

    return ScriptedBackend(scripted(answer))


@pytest.mark.parametrize("how", ["rst", "close", "credit"])
async def test_whole_first_read_held_by_window_then(
    nursery: trio.Nursery, start_proxy: StartProxy, proxy_records: ProxyRecords, how: str
) -> None:
    backend = _backend({b"/whole": WHOLE, b"/extra": WHOLE + b"X"})
    port = await nursery.start(backend.run)
    address = await start_proxy(make_config(("/", backend_url(port))))
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with open_h2_client(stream, settings={INITIAL_WINDOW_SIZE: 100}) as client:
        assert (await fetch(client, b"/one")).status == 200  # a kept connection
        path = b"/extra" if how == "credit" else b"/whole"
        state = await client.request(get(path), end_stream=True, auto_ack=False)
        with trio.fail_after(10):
            await client.wait_for(lambda: state.unacked >= 100, state)
        assert state.status == 200
        assert not state.ended
        if how == "rst":
            await client.reset(state)
            assert (await fetch(client, b"/two")).status == 200
            with trio.fail_after(10):
                await backend.connections[0].closed.wait()
            assert len(backend.connections) == 2
        elif how == "close":
            await client.stream.aclose()
            with trio.fail_after(10):
                await backend.connections[0].closed.wait()
        else:
            state.auto_ack = True
            client.conn.acknowledge_received_data(state.unacked, state.stream_id)
            state.unacked = 0
            if how == "goaway_then_credit":  # (the credit, then GOAWAY, in one write)
                client.conn.close_connection()
            await client.flush()
            with trio.fail_after(10):
                await client.finished(state)
            assert (bytes(state.data), state.ended) == (BODY, True)
            if how == "credit":  # a byte beyond the answer: never kept
                assert (await fetch(client, b"/two")).status == 200
                assert len(backend.connections) == 2
    for _ in range(50):
        if any(line["path"] == path.decode() for line in proxy_records.named("request.closed")):
            break
        await trio.lowlevel.checkpoint()
    lines = [
        (line["status"], line["end"], line["bytes_down"])
        for line in proxy_records.named("request.closed")
        if line["path"] == path.decode()
    ]
    expected = {
        "rst": [(200, "client_aborted", len(BODY))],
        "close": None,
        "goaway_then_credit": [(200, "clean", len(BODY))],
        "credit": [(200, "clean", len(BODY))],
    }[how]
    if expected is not None:
        assert lines == expected
    else:
        assert len(lines) == 1
        assert lines[0][0] == 200
        assert lines[0][1] != "clean"


async def test_informational_then_final_in_one_read(
    nursery: trio.Nursery, start_proxy: StartProxy, proxy_records: ProxyRecords
) -> None:
    answers = {
        b"/hint": b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + OK,
        b"/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
        b"/notmod": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
    }
    backend = _backend(answers)
    port = await nursery.start(backend.run)
    address = await start_proxy(make_config(("/", backend_url(port))))
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with open_h2_client(stream) as client:
        assert (await fetch(client, b"/one")).status == 200
        hint = await fetch(client, b"/hint")
        chunked = await fetch(client, b"/chunked")
        notmod = await fetch(client, b"/notmod")
        assert (await fetch(client, b"/two")).status == 200
    assert [h[0][1] for h in hint.informational] == [b"103"]
    assert (hint.status, bytes(hint.data), hint.ended) == (200, b"first", True)
    assert (chunked.status, bytes(chunked.data)) == (200, b"hello")
    assert (notmod.status, bytes(notmod.data), notmod.ended) == (304, b"", True)
    assert len(backend.connections) == 1
