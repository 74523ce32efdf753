"""A whole answer whose header block needs CONTINUATION frames reaches the client intact.

Found in review: ``H2Session.send_answer`` encoded the head once to see whether its block
fits one frame and, when it did not, let ``send_headers`` encode it again and send only that
second block. HPACK encoding changes the encoder's dynamic table and takes any pending table
size update (RFC 7541 §4.2), so the client got a block naming entries of a block it never
saw ("Invalid table index" with a large table, as Chrome announces) or missing the size
update it was owed, and the connection died.

Each test runs twice: ``lean_path`` answers the request under test on a kept-alive backend
connection (a first request leaves one idle in the pool), where the whole answer goes in one
``send_answer`` call; ``task_path_control`` answers it on a task (head, then body).
"""

from __future__ import annotations

import random

import pytest
import trio

from tests.conftest import StartProxy
from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.h2_client import H2TestClient, open_h2_client
from tests.helpers.scripted_http import OK, fetch, scripted
from tests.helpers.setup import backend_url, make_config

pytestmark = pytest.mark.socket

HEADER_TABLE_SIZE = 0x1
Header = tuple[bytes, bytes]
PATHS = pytest.mark.parametrize("lean", [True, False], ids=["lean_path", "task_path_control"])


def big_fields() -> list[Header]:
    """About 34 KB of fields: more than one frame at the minimum MAX_FRAME_SIZE (16 KiB)."""
    rng = random.Random(7)
    letters = b"abcdefghijklmnopqrstuvwxyz0123456789"
    return [(b"x-f%03d" % i, bytes(rng.choice(letters) for _ in range(80))) for i in range(400)]


async def start_backend_and_proxy(
    nursery: trio.Nursery, start_proxy: StartProxy, fields: list[Header]
) -> tuple[str, int]:
    """A backend answering ``GET /big`` with ``fields`` and a 5-byte body, anything else
    with ``OK``; the proxy in front of it, whose address is returned."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n" + b"".join(
        name + b": " + value + b"\r\n" for name, value in fields
    )

    async def answer(connection: BackendConnection, request: bytes, _number: int) -> bool:
        if request.startswith(b"GET /big "):
            await connection.stream.send_all(head + b"\r\nhello")
        else:
            await connection.stream.send_all(OK)
        return True

    port = await nursery.start(ScriptedBackend(scripted(answer)).run)
    address = await start_proxy(make_config(("/", backend_url(port))))
    return address.host, address.port


async def fetch_big_answer(client: H2TestClient, fields: list[Header]) -> None:
    """GET /big decodes to every field as sent, and the next answer decodes too (the two
    sides' HPACK tables still agree)."""
    try:
        state = await fetch(client, b"/big")
    except Exception as error:  # the client's HPACK decoder failed
        pytest.fail(f"the answer could not be decoded: {error!r}")
    got = [(name, value) for name, value in state.headers or [] if name.startswith(b"x-f")]
    assert (state.status, bytes(state.data), state.ended) == (200, b"hello", True)
    assert got == fields
    assert (await fetch(client, b"/two")).status == 200


@PATHS
async def test_a_block_over_one_frame_decodes_with_a_large_client_table(
    nursery: trio.Nursery, start_proxy: StartProxy, lean: bool
) -> None:
    """A client with a 64 KiB HPACK table (as Chrome announces) and the minimum frame size."""
    fields = big_fields()
    host, port = await start_backend_and_proxy(nursery, start_proxy, fields)
    stream = await trio.open_tcp_stream(host, port)
    async with open_h2_client(stream, settings={HEADER_TABLE_SIZE: 65536}) as client:
        # (the helper takes its SETTINGS as current: its decoder is told here)
        client.conn.decoder.max_allowed_table_size = 65536
        if lean:
            assert (await fetch(client, b"/one")).status == 200  # a kept connection
        await fetch_big_answer(client, fields)


@PATHS
async def test_a_block_over_one_frame_carries_the_table_size_update_owed(
    nursery: trio.Nursery, start_proxy: StartProxy, lean: bool
) -> None:
    """The client shrinks its HPACK table below the size our encoder uses: the next block
    must open with the size update (RFC 7541 §4.2), or the client's decoder refuses it."""
    fields = big_fields()
    host, port = await start_backend_and_proxy(nursery, start_proxy, fields)
    stream = await trio.open_tcp_stream(host, port)
    async with open_h2_client(stream, settings={HEADER_TABLE_SIZE: 65536}) as client:
        client.conn.decoder.max_allowed_table_size = 65536
        if lean:
            assert (await fetch(client, b"/one")).status == 200  # a kept connection
        client.conn.update_settings({HEADER_TABLE_SIZE: 1024})  # binds at the proxy's ACK
        await client.flush()
        await fetch_big_answer(client, fields)
        assert client.conn.decoder.header_table_size <= 1024
