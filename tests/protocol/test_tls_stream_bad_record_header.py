"""A peer that sends a record header no record can have (too long, or not TLS at all):
OpenSSL refuses it at the header (record_overflow / wrong version), so the stream ends at
once with an alert, rather than waiting for the bytes such a header announces (the
connection held, no alert)."""

from __future__ import annotations

import pytest
import trio
import trio.testing
import trustme

from h2ws_proxy.transport.tls_stream import LeanTLSStream
from tests.helpers.tls_peer import connected, watchdog

pytestmark = pytest.mark.socket


async def _receive_now(server: LeanTLSStream) -> object:
    """What a receive gives (or raises) without the peer sending more; None if it waits."""
    got: list[object] = []

    async def receive() -> None:
        try:
            got.append(await server.receive_some(65536))
        except trio.BrokenResourceError as error:
            got.append(error)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    return got[0] if got else None


@pytest.mark.parametrize(
    "header",
    [b"\x17\x03\x03\xff\xff", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"],
    ids=["oversized-length", "plaintext-http"],
)
async def test_an_impossible_record_header_fails_at_once(ca: trustme.CA, header: bytes) -> None:
    server, client = await connected(ca)
    await client.sock.send_all(client.records(b"fine") + header)
    await trio.testing.wait_all_tasks_blocked()
    with watchdog(5):
        assert await _receive_now(server) == b"fine"
        outcome = await _receive_now(server)
    assert isinstance(outcome, trio.BrokenResourceError), f"the receive gave {outcome!r}"
    # The client is told why (a fatal alert), as OpenSSL on the socket tells it.
    with pytest.raises(Exception, match=r"(?i)alert|overflow|version|record"):
        await client.receive(1)
