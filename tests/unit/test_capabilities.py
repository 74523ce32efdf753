"""transport.capabilities: each stream's fast paths found once, by what it can do."""

from __future__ import annotations

import socket
import ssl

import pytest
import trio
import trio.testing

from h2ws_proxy.transport.capabilities import (
    as_client_stream,
    as_pollable,
    lean_accepted,
    lean_backend,
    tls_of,
)


async def test_a_stream_of_trios_sends_nothing_without_waiting_and_the_rest_by_awaiting() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    client = as_client_stream(ours)
    assert not client.whole_writes
    assert client.send_nowait(b"abc") == 0  # nothing goes without waiting
    await client.send_all(b"abc")
    assert await theirs.receive_some(10) == b"abc"
    await theirs.send_all(b"back")
    assert await client.receive_some(10) == b"back"
    assert as_pollable(ours) is None
    assert tls_of(ours) is None
    await client.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await ours.send_all(b"x")


async def test_a_socket_becomes_our_own_stream_with_its_fast_paths() -> None:
    left, right = socket.socketpair()
    with right:
        stream = lean_accepted(trio.SocketStream(trio.socket.from_stdlib_socket(left)), None)
        client = as_client_stream(stream)
        assert client is stream
        assert not client.whole_writes
        assert client.send_nowait(b"now") == 3
        assert right.recv(10) == b"now"
        pollable = as_pollable(stream)
        assert pollable is not None
        assert pollable.fileno() == stream.fileno()
        pollable.close_now()


async def test_tls_over_a_socket_is_ours_and_writes_whole_records() -> None:
    left, right = socket.socketpair()
    with right:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        stream = lean_accepted(trio.SocketStream(trio.socket.from_stdlib_socket(left)), context)
        assert tls_of(stream) is stream
        assert as_client_stream(stream).whole_writes
        assert as_pollable(stream) is None  # TLS bytes are not the tunnel's bytes
        await stream.aclose()


def test_tls_is_refused_on_a_stream_that_is_not_a_socket() -> None:
    ours, _ = trio.testing.memory_stream_pair()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with pytest.raises(TypeError, match="sockets only"):
        lean_accepted(ours, context)


async def test_a_dialled_socket_becomes_pollable() -> None:
    left, right = socket.socketpair()
    with right:
        backend = lean_backend(trio.SocketStream(trio.socket.from_stdlib_socket(left)))
        pollable = as_pollable(backend)
        assert pollable is not None
        right.send(b"hi")
        assert pollable.receive_nowait(10) == b"hi"
        pollable.end_now()
        assert right.recv(10) == b""
        pollable.close_now()
