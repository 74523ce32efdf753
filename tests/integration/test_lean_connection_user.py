"""A lean GET's backend connection is its request's (``BackendConnection.user``) only until
the request ends, whichever way (``backend/kept_connection.py``): then the connection,
kept or closed, no longer names it, so no cycle holds the two (the collector is off here:
a cycle would keep the request's objects until its next run) and a kept connection's idle
events are its own.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import trio

from h2ws_proxy.backend.kept_connection import BackendConnection as KeptConnection
from h2ws_proxy.http2.polled_request import PolledRequest
from tests.conftest import StartProxy
from tests.helpers.backends import BackendConnection
from tests.helpers.h2_client import open_h2_client
from tests.helpers.scripted_http import OK, fetch
from tests.helpers.scripted_proxy import proxy_for

pytestmark = pytest.mark.socket

BIG = bytes(range(256)) * 800  # more than a stream window: the answer waits for credit

#: case: the backend's bytes for ``/case`` (None: it closes without answering).
CASES: dict[str, bytes | None] = {
    "whole": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "in_parts": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BIG) + BIG,
    "not_kept": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    "broken": None,
}


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.parametrize("case", list(CASES))
async def test_a_lean_requests_connection_forgets_it_at_its_end(
    nursery: trio.Nursery, start_proxy: StartProxy, collector_off: None, case: str
) -> None:
    raw = CASES[case]

    async def answer(connection: BackendConnection, head: bytes, _number: int) -> bool:
        if head.split(b" ")[1] == b"/case":
            if raw is None:
                return False  # closed unanswered: the task path retries, on a new connection
            await connection.stream.send_all(raw)
            return True
        await connection.stream.send_all(OK)
        return True

    _, stream = await proxy_for(nursery, start_proxy, answer)
    async with open_h2_client(stream) as client:
        assert (await fetch(client, b"/one")).status == 200  # leaves a kept connection
        await fetch(client, b"/case")  # runs without a task
        assert (await fetch(client, b"/two")).status == 200
        objects = gc.get_objects()
        connections = [o for o in objects if type(o) is KeptConnection]
        assert connections
        assert [connection.user for connection in connections] == [None] * len(connections)
        assert not [o for o in objects if type(o) is PolledRequest]
        del objects, connections
