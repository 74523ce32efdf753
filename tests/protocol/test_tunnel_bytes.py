"""The tunnel delivers exactly the bytes it was given, however they are split.

Hypothesis picks the sizes of the client's DATA frames and of the backend's writes; the
test checks that each side receives the exact concatenation, in order, with nothing lost
at the edges (bytes behind the 101, the last bytes before END_STREAM / FIN).
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.backends import BackendConnection
from tests.helpers.h2_client import open_h2_client
from tests.helpers.memory import MemoryNet, open_memory_client
from tests.helpers.setup import make_config

pytestmark = pytest.mark.usefixtures("both_backend_kinds")

CONFIG = make_config(("/", "http://127.0.0.1:9"), stream_window_bytes=65535)

chunks = st.lists(st.binary(min_size=1, max_size=40_000), min_size=0, max_size=12)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(up=chunks, down=chunks, leftover=st.binary(max_size=300))
async def test_bytes_arrive_exactly_whatever_the_split(
    up: list[bytes], down: list[bytes], leftover: bytes
) -> None:
    received_up = bytearray()
    backend_done = trio.Event()

    async def backend(stream: trio.abc.HalfCloseableStream) -> None:
        conn = BackendConnection(stream)
        request = await conn.read_upgrade()
        await conn.accept(request, extra=leftover)
        for chunk in down:
            await stream.send_all(chunk)
        await stream.send_eof()
        while data := await conn.receive():
            received_up.extend(data)
        backend_done.set()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            net = MemoryNet(nursery, backend)
            async with open_h2_client(await open_memory_client(nursery, CONFIG, net)) as client:
                ws = await client.websocket("/")
                assert ws.status == 200
                for chunk in up:
                    await client.send_data(ws.state, chunk)
                await client.end_stream(ws.state)
                await client.finished(ws.state)
                await backend_done.wait()
                assert bytes(ws.state.data) == leftover + b"".join(down)
                assert bytes(received_up) == b"".join(up)
                assert ws.state.reset_code is None
            nursery.cancel_scope.cancel()
