"""Ordinary HTTP/2 requests on a kept-alive backend connection, where they run without a
task (http2/polled_request.py): every way the backend or the client can end such a request.

Each test first makes one request, so that the backend connection it used waits idle in the
pool; the request under test then runs on it. The backend is a scripted raw one on loopback,
so that it can close, stall or misbehave at exactly the point each case needs.
"""

from __future__ import annotations

import hashlib

import pytest
import trio

from tests.conftest import StartProxy
from tests.helpers.backends import BackendConnection
from tests.helpers.h2_client import H2TestClient, open_h2_client
from tests.helpers.records import ProxyRecords
from tests.helpers.scripted_http import OK, fetch, get, until_closed
from tests.helpers.scripted_proxy import proxy_for

pytestmark = pytest.mark.socket

CANCEL, INTERNAL_ERROR = 0x8, 0x2
Header = tuple[bytes, bytes]


async def test_a_kept_connection_the_backend_closes_is_retried_on_a_new_one(
    nursery: trio.Nursery, start_proxy: StartProxy, proxy_records: ProxyRecords
) -> None:
    async def answer(connection: BackendConnection, _head: bytes, number: int) -> bool:
        if number == 1:
            return False  # took the second request, then closed without a word
        await connection.stream.send_all(OK)
        return True

    backend, stream = await proxy_for(nursery, start_proxy, answer)
    async with open_h2_client(stream) as client:
        first = await fetch(client, b"/one")
        second = await fetch(client, b"/two")
    assert (first.status, second.status) == (200, 200)
    assert bytes(second.data) == b"first"
    assert len(backend.connections) == 2
    assert backend.connections[0].received.count(b"GET /two ") == 1  # sent, unanswered
    assert backend.connections[1].received.startswith(b"GET /two ")
    lines = proxy_records.named("request.closed")
    assert [(line["path"], line["status"], line["end"]) for line in lines] == [
        ("/one", 200, "clean"),
        ("/two", 200, "clean"),
    ]


async def test_a_silent_backend_gets_504_after_the_idle_timeout(
    nursery: trio.Nursery, start_proxy: StartProxy, proxy_records: ProxyRecords
) -> None:
    async def answer(connection: BackendConnection, _head: bytes, number: int) -> bool:
        if number == 1:
            await trio.sleep_forever()  # the proxy's idle timer must end this one
        await connection.stream.send_all(OK)
        return True

    _, stream = await proxy_for(nursery, start_proxy, answer, http_idle_timeout_s=0.5)
    async with open_h2_client(stream) as client:
        await fetch(client, b"/one")
        silent = await fetch(client, b"/silent")
        after = await fetch(client, b"/after")  # a new connection serves the next one
    assert silent.status == 504
    assert b"did not answer" in bytes(silent.data)
    assert after.status == 200
    line = proxy_records.named("request.closed")[1]
    assert (line["path"], line["status"], line["end"]) == ("/silent", 504, "refused")


async def test_silent_backends_of_requests_in_flight_together_each_get_504(
    nursery: trio.Nursery, start_proxy: StartProxy, proxy_records: ProxyRecords
) -> None:
    """Two requests in flight at once on the two kept connections, neither answered: the
    second's idle timer is armed behind the first's (a queue already holding one: armed in
    place, http2/polled_request.py), and fires as well."""

    async def answer(connection: BackendConnection, head: bytes, _number: int) -> bool:
        if b" /silent" in head:
            await trio.sleep_forever()
        await trio.sleep(0.05)  # the first two in flight together: two connections kept
        await connection.stream.send_all(OK)
        return True

    async def fetch_into(client: H2TestClient, path: bytes, into: dict[bytes, int]) -> None:
        into[path] = (await fetch(client, path)).status

    backend, stream = await proxy_for(nursery, start_proxy, answer, http_idle_timeout_s=0.5)
    statuses: dict[bytes, int] = {}
    async with open_h2_client(stream) as client:
        for paths in ((b"/one", b"/two"), (b"/silent/1", b"/silent/2")):
            async with trio.open_nursery() as both:
                for path in paths:
                    both.start_soon(fetch_into, client, path, statuses)
    assert statuses == {b"/one": 200, b"/two": 200, b"/silent/1": 504, b"/silent/2": 504}
    assert len(backend.connections) == 2  # the silent ones went to the kept connections
    lines = proxy_records.named("request.closed")
    assert sorted((line["path"], line["status"], line["end"]) for line in lines[2:]) == [
        ("/silent/1", 504, "refused"),
        ("/silent/2", 504, "refused"),
    ]


async def test_a_connection_with_a_request_in_flight_is_not_closed_as_idle(
    nursery: trio.Nursery, start_proxy: StartProxy, proxy_records: ProxyRecords
) -> None:
    """A request without a task opens a stream like any other: while it waits for its
    answer, longer than ``idle_connection_timeout_s``, the connection is busy, not idle."""

    async def answer(connection: BackendConnection, head: bytes, _number: int) -> bool:
        if b" /slow" in head:
            await trio.sleep(0.8)
        await connection.stream.send_all(OK)
        return True

    _, stream = await proxy_for(
        nursery, start_proxy, answer, idle_connection_timeout_s=0.3, http_idle_timeout_s=5
    )
    async with open_h2_client(stream) as client:
        await fetch(client, b"/one")
        slow = await fetch(client, b"/slow")
        assert slow.status == 200
        assert proxy_records.named("h2.idle_connection_closed") == []


async def test_a_stall_mid_body_resets_the_stream_after_the_idle_timeout(
    nursery: trio.Nursery, start_proxy: StartProxy, proxy_records: ProxyRecords
) -> None:
    async def answer(connection: BackendConnection, _head: bytes, number: int) -> bool:
        if number == 1:
            await connection.stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10
            )
            await trio.sleep_forever()
        await connection.stream.send_all(OK)
        return True

    _, stream = await proxy_for(nursery, start_proxy, answer, http_idle_timeout_s=0.5)
    async with open_h2_client(stream) as client:
        await fetch(client, b"/one")
        stalled = await fetch(client, b"/stalled")
    assert stalled.status == 200
    assert bytes(stalled.data) == b"x" * 10
    assert stalled.reset_code == CANCEL
    assert not stalled.ended
    line = proxy_records.named("request.closed")[1]
    assert (line["path"], line["end"]) == ("/stalled", "idle_timeout")
    assert line["bytes_down"] == 10


async def test_a_backend_that_closes_mid_body_resets_the_stream(
    nursery: trio.Nursery, start_proxy: StartProxy, proxy_records: ProxyRecords
) -> None:
    async def answer(connection: BackendConnection, _head: bytes, number: int) -> bool:
        if number == 1:
            await connection.stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10
            )
            return False
        await connection.stream.send_all(OK)
        return True

    _, stream = await proxy_for(nursery, start_proxy, answer)
    async with open_h2_client(stream) as client:
        await fetch(client, b"/one")
        cut = await fetch(client, b"/cut")
        after = await fetch(client, b"/after")
    assert cut.status == 200
    assert cut.reset_code == INTERNAL_ERROR
    assert after.status == 200
    line = proxy_records.named("request.closed")[1]
    assert (line["path"], line["end"]) == ("/cut", "backend_aborted")


@pytest.mark.parametrize(
    ("answer_bytes", "reason"),
    [
        (b"HTTP/1.1 2000 Nope\r\n\r\n", b"not valid HTTP/1.1"),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", b"not valid"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n", b"without answering"),
    ],
    ids=["invalid", "switched", "closed_in_head"],
)
async def test_a_bad_answer_on_a_kept_connection_is_a_502(
    nursery: trio.Nursery,
    start_proxy: StartProxy,
    proxy_records: ProxyRecords,
    answer_bytes: bytes,
    reason: bytes,
) -> None:
    async def answer(connection: BackendConnection, _head: bytes, number: int) -> bool:
        if number == 1:
            await connection.stream.send_all(answer_bytes)
            return False
        await connection.stream.send_all(OK)
        return True

    _, stream = await proxy_for(nursery, start_proxy, answer)
    async with open_h2_client(stream) as client:
        await fetch(client, b"/one")
        bad = await fetch(client, b"/bad")
        after = await fetch(client, b"/after")
    assert bad.status == 502
    assert reason in bytes(bad.data)
    assert after.status == 200
    line = proxy_records.named("request.closed")[1]
    assert (line["path"], line["status"]) == ("/bad", 502)


async def test_a_large_answer_waits_for_the_clients_credit(
    nursery: trio.Nursery, start_proxy: StartProxy, proxy_records: ProxyRecords
) -> None:
    """The client returns credit only when it wants more: the answer arrives whole, no
    faster than that, and the backend connection is kept for the next request."""
    body = bytes(i % 251 for i in range(3 * 1024 * 1024 + 17))

    async def answer(connection: BackendConnection, _head: bytes, number: int) -> bool:
        if number == 1:
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            await connection.stream.send_all(head + body)
        else:
            await connection.stream.send_all(OK)
        return True

    backend, stream = await proxy_for(nursery, start_proxy, answer)
    async with open_h2_client(stream) as client:
        await fetch(client, b"/one")
        big = await client.request(get(b"/big"), end_stream=True, auto_ack=False)
        window = 65535  # the stream's initial window: nothing past it without our credit
        with trio.fail_after(30):
            while not big.ended:
                await client.wait_for(lambda: big.unacked >= window or big.ended, big)
                assert len(big.data) <= window * (1 + len(big.data) // window)
                await client.ack(big)
        after = await fetch(client, b"/after")
    assert hashlib.sha256(big.data).digest() == hashlib.sha256(body).digest()
    assert big.reset_code is None
    assert after.status == 200
    assert len(backend.connections) == 1  # kept and reused after the large answer
    line = proxy_records.named("request.closed")[1]
    assert (line["path"], line["end"], line["bytes_down"]) == ("/big", "clean", len(body))


async def test_a_client_reset_while_its_window_is_shut_frees_the_backend_connection(
    nursery: trio.Nursery, start_proxy: StartProxy, proxy_records: ProxyRecords
) -> None:
    async def answer(connection: BackendConnection, _head: bytes, number: int) -> bool:
        if number == 1:
            await connection.stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n" + b"y" * 200_000
            )
            return await until_closed(connection)
        await connection.stream.send_all(OK)
        return True

    backend, stream = await proxy_for(nursery, start_proxy, answer)
    async with open_h2_client(stream) as client:
        await fetch(client, b"/one")
        big = await client.request(get(b"/big"), end_stream=True, auto_ack=False)
        with trio.fail_after(10):
            await client.wait_for(lambda: big.unacked >= 65535, big)  # the window is shut
        await client.reset(big, CANCEL)
        with trio.fail_after(10):
            await backend.connections[0].closed.wait()  # the proxy closed that connection
        after = await fetch(client, b"/after")
    assert after.status == 200
    assert len(backend.connections) == 2
    line = proxy_records.named("request.closed")[1]
    assert (line["path"], line["end"]) == ("/big", "client_aborted")
