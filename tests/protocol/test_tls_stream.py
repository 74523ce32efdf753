"""LeanTLSStream on a real socketpair against trio's own TLS client: the same bytes, ends
and errors a client sees from trio.SSLStream, whatever OpenSSL asks to wait for."""

from __future__ import annotations

import socket
import ssl

import pytest
import trio
import trio.testing
import trustme

from h2ws_proxy.transport.tls_stream import LeanTLSStream

pytestmark = pytest.mark.socket


def _contexts(ca: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("proxy.test").configure_cert(server)
    server.set_alpn_protocols(["h2", "http/1.1"])
    client = ssl.create_default_context()
    ca.configure_trust(client)
    client.set_alpn_protocols(["h2"])
    return server, client


async def _connected(
    ca: trustme.CA,
) -> tuple[LeanTLSStream, trio.SSLStream[trio.SocketStream]]:
    server_context, client_context = _contexts(ca)
    ours, theirs = socket.socketpair()
    server = LeanTLSStream(ours, server_context)
    client = trio.SSLStream(
        trio.SocketStream(trio.socket.from_stdlib_socket(theirs)),
        client_context,
        server_hostname="proxy.test",
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        nursery.start_soon(client.do_handshake)
    return server, client


async def test_handshake_alpn_and_bytes_both_ways(ca: trustme.CA) -> None:
    server, client = await _connected(ca)
    assert server.selected_alpn_protocol() == "h2"
    await client.send_all(b"hello")
    assert await server.receive_some(100) == b"hello"
    # Far more than the socket buffers hold: the writer must wait for the reader.
    big = bytes(range(256)) * 16384  # 4 MiB
    received = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.send_all, big)
        while len(received) < len(big):
            received += await client.receive_some(65536)
    assert received == big
    await server.aclose()
    assert await client.receive_some(100) == b""  # our close_notify


async def test_receive_checkpoints_when_openssl_had_bytes(ca: trustme.CA) -> None:
    server, client = await _connected(ca)
    await client.send_all(b"x" * 100)
    await trio.testing.wait_all_tasks_blocked()
    with trio.testing.assert_checkpoints():
        assert await server.receive_some(10) == b"x" * 10
    with trio.testing.assert_checkpoints():
        assert await server.receive_some(100) == b"x" * 90


async def test_close_notify_and_a_bare_close_both_end_the_stream(ca: trustme.CA) -> None:
    server, client = await _connected(ca)
    await client.aclose()  # trio sends close_notify
    assert await server.receive_some(100) == b""
    server, client = await _connected(ca)
    client.transport_stream.socket.close()  # no close_notify, as browsers do
    assert await server.receive_some(100) == b""


async def test_failed_handshake_is_broken_with_its_cause() -> None:
    server_context, _ = _contexts(trustme.CA())
    ours, theirs = socket.socketpair()
    with theirs:
        theirs.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # plaintext to a TLS port
        server = LeanTLSStream(ours, server_context)
        with pytest.raises(trio.BrokenResourceError) as raised:
            await server.do_handshake()
        assert isinstance(raised.value.__cause__, ssl.SSLError)
        await server.aclose()
        theirs.settimeout(5)
        theirs.recv(65536)  # an alert or EOF, not a reset: our unread input was dropped


async def test_close_wakes_a_waiting_receiver(ca: trustme.CA) -> None:
    server, _client = await _connected(ca)
    async with trio.open_nursery() as nursery:

        async def receive() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await server.receive_some(100)

        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        await server.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await server.send_all(b"x")


async def test_send_nowait_writes_whole_or_leaves_the_same_bytes_to_repeat(
    ca: trustme.CA,
) -> None:
    """OpenSSL's rule for a write that had to wait: the next one begins with the same bytes
    and is no shorter. The frontend keeps them at the head of its output, and the writer's
    send_all (or another send_nowait) repeats them with more behind; the peer must read
    every byte once, in order."""
    server, client = await _connected(ca)
    assert server.send_nowait(b"small") == 5
    assert await client.receive_some(100) == b"small"
    # Fill the socket until a write has to wait (the client reads nothing meanwhile).
    output = bytearray()
    sent = bytearray()
    piece = 0
    while True:
        chunk = bytes([piece % 251]) * 16384
        piece += 1
        output += chunk
        taken = server.send_nowait(output)
        if not taken:
            break
        assert taken == len(output)  # all or nothing
        sent += output
        del output[:taken]
    output += b"and more behind"  # the output grew before the writer got to it
    received = bytearray()
    expected = bytes(sent + output)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.send_all, output)
        while len(received) < len(expected):
            received += await client.receive_some(65536)
    assert received == expected


async def test_send_nowait_stays_out_of_a_send_in_progress(ca: trustme.CA) -> None:
    server, client = await _connected(ca)
    big = b"y" * (8 * 1024 * 1024)  # more than the socket buffers: send_all must wait
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.send_all, big)
        await trio.testing.wait_all_tasks_blocked()
        assert server.send_nowait(b"z") == 0
        received = 0
        while received < len(big):
            received += len(await client.receive_some(65536))
    assert server.send_nowait(b"z") == 1
    assert await client.receive_some(10) == b"z"


async def test_a_shorter_repeat_of_a_waiting_write_is_refused(ca: trustme.CA) -> None:
    """Why the frontend sends inline over TLS only what fits the writer's first slice:
    OpenSSL refuses a repeat shorter than the write that had to wait."""
    server, _client = await _connected(ca)
    output = bytes(16384)
    while server.send_nowait(output):
        pass
    with pytest.raises(trio.BrokenResourceError):
        with trio.move_on_after(5):
            await server.send_all(output[:100])


async def test_a_read_takes_every_whole_record_already_here(ca: trustme.CA) -> None:
    """OpenSSL hands over one record (16 KiB at most) per read; a read goes on past full
    and short ones alike while more is there, up to its size."""
    server, client = await _connected(ca)
    await client.send_all(bytes(range(256)) * 256)  # 64 KiB: four full records
    await client.send_all(b"tail")
    await trio.testing.wait_all_tasks_blocked()
    assert await server.receive_some(65536) == bytes(range(256)) * 256
    assert await server.receive_some(65536) == b"tail"
    await client.send_all(b"x" * 20000)  # a full record, then a short one
    await client.send_all(b"y" * 20000)
    await client.send_all(b"z" * 100)
    await trio.testing.wait_all_tasks_blocked()
    assert await server.receive_some(65536) == b"x" * 20000 + b"y" * 20000 + b"z" * 100
    await client.send_all(b"x" * 20000)
    await client.send_all(b"y" * 20000)
    await trio.testing.wait_all_tasks_blocked()
    assert await server.receive_some(30000) == b"x" * 20000 + b"y" * 10000  # up to its size
    assert await server.receive_some(30000) == b"y" * 10000


async def test_a_read_after_the_peer_paused_waits_for_its_next_record(ca: trustme.CA) -> None:
    """A read that found nothing more behind its records makes the next one wait for the
    socket first; plaintext OpenSSL still holds is read without waiting."""
    server, client = await _connected(ca)
    await client.send_all(b"abc" * 10)  # one record
    await trio.testing.wait_all_tasks_blocked()
    assert await server.receive_some(10) == b"abc" * 3 + b"a"  # the rest stays in OpenSSL
    assert await server.receive_some(100) == b"bc" + b"abc" * 6  # held, read at once
    async with trio.open_nursery() as nursery:
        received: list[bytes] = []

        async def receive() -> None:
            received.append(await server.receive_some(100))

        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        assert received == []  # waiting for the socket
        await client.send_all(b"next")
    assert received == [b"next"]
    await client.send_all(b"one")
    await client.send_all(b"two")
    await trio.testing.wait_all_tasks_blocked()
    assert await server.receive_some(100) == b"onetwo"


@pytest.mark.parametrize("close_notify", [True, False])
async def test_an_end_met_while_reading_on_comes_after_the_bytes(
    ca: trustme.CA, close_notify: bool
) -> None:
    server, client = await _connected(ca)
    await client.send_all(b"z" * 16384 * 2)  # two full records, then the end
    if close_notify:
        await client.aclose()
    else:
        client.transport_stream.socket.close()
    await trio.testing.wait_all_tasks_blocked()
    assert await server.receive_some(65536) == b"z" * 16384 * 2
    assert await server.receive_some(65536) == b""
    assert await server.receive_some(65536) == b""


async def test_an_error_met_while_reading_on_comes_after_the_bytes(ca: trustme.CA) -> None:
    server, client = await _connected(ca)
    await client.send_all(b"e" * 16384)
    raw = client.transport_stream.socket
    await raw.send(b"\x17\x03\x03\x00\x05garbage")  # an application-data record that fails
    await trio.testing.wait_all_tasks_blocked()
    assert await server.receive_some(65536) == b"e" * 16384
    with pytest.raises(trio.BrokenResourceError):
        await server.receive_some(65536)
