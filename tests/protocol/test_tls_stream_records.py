"""LeanTLSStream's records as they come over loopback TCP from a client whose every byte the
test places: records split across reads at every byte, several in one read, a record
without plaintext between two with, and writes the socket takes in part."""

from __future__ import annotations

import ssl

import pytest
import trio
import trio.testing
import trustme

from h2ws_proxy.transport.tls_stream import LeanTLSStream
from tests.helpers.tls_peer import Client, connected, contexts

pytestmark = pytest.mark.socket


async def _connected(
    ca: trustme.CA, *, small_buffers: bool = False, client_auth_later: bool = False
) -> tuple[LeanTLSStream, Client]:
    server_context, client_context = contexts(ca)
    if client_auth_later:  # TLS 1.3 post-handshake authentication, asked for by the test
        server_context.verify_mode = ssl.CERT_OPTIONAL
        server_context.post_handshake_auth = True
        client_context.post_handshake_auth = True
    return await connected(
        ca,
        small_buffers=small_buffers,
        server_context=server_context,
        client_context=client_context,
    )


async def test_records_split_across_reads_at_every_byte(ca: trustme.CA) -> None:
    """Two records cut at each byte in turn: a receive hands over nothing before a record
    is whole (it waits), and then every record that is whole."""
    server, client = await _connected(ca)
    first_size = _AEAD_RECORD + len(b"first record")  # TLS 1.3: its records' size
    size = first_size + _AEAD_RECORD + len(b"second")
    for cut in range(1, size):
        wire = client.records(b"first record", b"second")
        assert len(wire) == size
        await client.sock.send_all(wire[:cut])
        received: list[bytes] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_receive_into, server, received, len(b"first recordsecond"))
            await trio.testing.wait_all_tasks_blocked()
            assert received == ([b"first record"] if cut >= first_size else []), cut
            await client.sock.send_all(wire[cut:])
        assert b"".join(received) == b"first recordsecond", cut


async def _receive_into(server: LeanTLSStream, received: list[bytes], size: int) -> None:
    while sum(map(len, received)) < size:
        received.append(await server.receive_some(65536))


#: A TLS 1.3 record's bytes beyond its plaintext: header, content type, AEAD tag.
_AEAD_RECORD = 5 + 1 + 16


async def test_several_records_in_one_read_are_one_receive(ca: trustme.CA) -> None:
    server, client = await _connected(ca)
    await client.sock.send_all(client.records(b"one", b"two", b"three" * 1000, b"four"))
    await trio.testing.wait_all_tasks_blocked()
    with trio.testing.assert_checkpoints():
        assert await server.receive_some(65536) == b"onetwo" + b"three" * 1000 + b"four"
    # More than 64 KiB of ciphertext is read on at once (full records), up to the size.
    big = bytes(range(256)) * 320  # 80 KiB: 5 full records (the socket buffers hold them)
    await client.sock.send_all(
        client.records(*(big[at : at + 16384] for at in range(0, len(big), 16384)))
    )
    await trio.testing.wait_all_tasks_blocked()
    assert await server.receive_some(70_000) == big[:70_000]
    assert await server.receive_some(len(big)) == big[70_000:]


async def test_a_record_without_plaintext_between_two_with(ca: trustme.CA) -> None:
    """The client's answer to a post-handshake certificate request (handshake records)
    comes between two of its application records, all in one read: both plaintexts are
    handed over, the handshake records read on the way."""
    server, client = await _connected(ca, client_auth_later=True)
    server._tls.verify_client_post_handshake()  # sent with our next write
    assert server.send_nowait(b"ping") == 4
    before = client.records(b"before")
    assert await client.receive(4) == b"ping"  # the client's answer is made here
    answer = client.outgoing.read()
    assert answer  # a Certificate and a Finished, at least
    await client.sock.send_all(before + answer + client.records(b"after"))
    await trio.testing.wait_all_tasks_blocked()
    assert await server.receive_some(65536) == b"beforeafter"
    await client.sock.send_all(client.records(b"later"))
    assert await server.receive_some(65536) == b"later"


async def test_a_write_the_socket_takes_in_part_is_completed_in_order(ca: trustme.CA) -> None:
    """Small socket buffers: a write's records go in part and OpenSSL keeps the rest; the
    write returns 0 and its repetition (with more behind) sends the rest once, in order."""
    server, client = await _connected(ca, small_buffers=True)
    written = bytearray()
    piece = 0
    while True:
        chunk = bytes([piece % 251]) * 40000  # three records
        piece += 1
        if not server.send_nowait(chunk):
            break
        written += chunk
    repeated = chunk + b"and more behind"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.send_all, repeated)
        received = await client.receive(len(written) + len(repeated))
    assert received == bytes(written) + repeated
    assert server.send_nowait(b"then") == 4
    assert await client.receive(4) == b"then"
