"""close_notify as a peer sends it: alone, after data, followed by more records.

OpenSSL's SSL_read returns 0 for ever once close_notify was read, and Python's read then
gives b"" (no SSLZeroReturnError) while only close_notify was received."""

from __future__ import annotations

import pytest
import trio
import trio.testing
import trustme

from h2ws_proxy.transport.tls_stream import LeanTLSStream
from tests.helpers.tls_peer import connected, watchdog

pytestmark = pytest.mark.socket


async def test_records_after_close_notify_do_not_spin(ca: trustme.CA) -> None:
    """A peer sends close_notify and, in the same segment, one more well-framed record:
    the receive must end the stream, not spin for ever in OpenSSL reads of b"" (the whole
    process's loop stuck: every connection of the worker)."""
    server, client = await connected(ca)
    wire = client.records(b"hello") + client.close_notify() + b"\x17\x03\x03\x00\x05abcde"
    await client.sock.send_all(wire)
    await trio.testing.wait_all_tasks_blocked()
    with watchdog(5), trio.fail_after(5):
        first = await server.receive_some(65536)
        if first:
            assert first == b"hello"
            assert await server.receive_some(65536) == b""


async def _receive_now(server: LeanTLSStream) -> bytes | None:
    """What a receive gives without the peer sending anything more; None if it waits."""
    got: list[bytes] = []

    async def receive() -> None:
        got.append(await server.receive_some(65536))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    return got[0] if got else None


async def test_data_then_close_notify_ends_the_stream_at_once(ca: trustme.CA) -> None:
    """Data and close_notify in one read, the peer keeping its socket open (waiting for
    ours): the receive after the data is b"" at once, not a wait for the
    socket (the connection then hangs until a timeout)."""
    server, client = await connected(ca)
    await client.sock.send_all(client.records(b"hello") + client.close_notify())
    await trio.testing.wait_all_tasks_blocked()
    with watchdog(5):
        assert await _receive_now(server) == b"hello"
        assert await _receive_now(server) == b"", "the receive after close_notify waits"


async def test_close_notify_alone_then_receive_again(ca: trustme.CA) -> None:
    """close_notify alone: b"", and b"" again on the next receive (no wait)."""
    server, client = await connected(ca)
    await client.sock.send_all(client.close_notify())
    await trio.testing.wait_all_tasks_blocked()
    with watchdog(5):
        assert await _receive_now(server) == b""
        assert await _receive_now(server) == b"", "a second receive after close_notify waits"
