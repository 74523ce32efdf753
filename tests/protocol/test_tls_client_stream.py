"""LeanTLSClientStream (a backend's TLS connection) on a real socketpair against trio's own
TLS server: the idle check the pool relies on, half-close that sends nothing, the short
reasons of failures, and capabilities (never pollable)."""

from __future__ import annotations

import contextlib
import socket
import ssl

import pytest
import trio
import trustme

from h2ws_proxy.transport.capabilities import as_pollable, idle_is_quiet
from h2ws_proxy.transport.tls_client import (
    LeanTLSClientStream,
    start_tls_client,
    tls_failure_reason,
)

pytestmark = pytest.mark.socket


async def _connected(
    ca: trustme.CA, server_name: str = "backend.test"
) -> tuple[LeanTLSClientStream, trio.SSLStream[trio.SocketStream]]:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("backend.test").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    ours, theirs = socket.socketpair()
    server = trio.SSLStream(
        trio.SocketStream(trio.socket.from_stdlib_socket(theirs)), server_context, server_side=True
    )
    dialled = trio.SocketStream(trio.socket.from_stdlib_socket(ours))

    async def server_handshake() -> None:
        with contextlib.suppress(trio.BrokenResourceError):  # a test of a failed one
            await server.do_handshake()

    failure: trio.BrokenResourceError | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server_handshake)
        try:
            client = await start_tls_client(dialled, client_context, server_name)
        except trio.BrokenResourceError as error:
            failure = error  # raised out of the nursery, not in a group
    if failure is not None:
        raise failure
    return client, server


async def _exchange(client: LeanTLSClientStream, server: trio.SSLStream[trio.SocketStream]) -> None:
    """One request and answer, as a pooled connection has had before it idles."""
    await client.send_all(b"request")
    assert await server.receive_some(100) == b"request"
    await server.send_all(b"answer")
    assert await client.receive_some(100) == b"answer"


async def test_idle_connection_is_quiet_until_the_backend_speaks(ca: trustme.CA) -> None:
    client, server = await _connected(ca)
    await _exchange(client, server)
    assert idle_is_quiet(client)
    await server.send_all(b"unsolicited")  # a record on the socket
    await trio.testing.wait_all_tasks_blocked()
    assert not idle_is_quiet(client)
    await client.aclose()


async def test_idle_connection_the_backend_closed_is_not_quiet(ca: trustme.CA) -> None:
    client, server = await _connected(ca)
    await _exchange(client, server)
    await server.aclose()  # close_notify, then the socket's end
    assert not idle_is_quiet(client)
    await client.aclose()


async def test_bytes_openssl_holds_make_it_not_quiet(ca: trustme.CA) -> None:
    client, server = await _connected(ca)
    await server.send_all(b"two records: " + b"x" * 20000)
    assert len(await client.receive_some(5)) == 5  # the rest of the record stays in OpenSSL
    assert not idle_is_quiet(client)
    await client.aclose()


async def test_send_eof_sends_nothing_and_the_backend_still_answers(ca: trustme.CA) -> None:
    client, server = await _connected(ca)
    await client.send_all(b"last")
    await client.send_eof()
    with pytest.raises(trio.ClosedResourceError):
        await client.send_all(b"more")
    assert await server.receive_some(100) == b"last"
    with trio.move_on_after(0.1) as nothing_more:
        await server.receive_some(100)  # no close_notify, no FIN: TLS stays up
    assert nothing_more.cancelled_caught
    await server.send_all(b"late answer")
    assert await client.receive_some(100) == b"late answer"
    await server.aclose()
    assert await client.receive_some(100) == b""
    await client.aclose()


async def test_a_tls_backend_is_never_pollable(ca: trustme.CA) -> None:
    client, _server = await _connected(ca)
    assert as_pollable(client) is None
    await client.aclose()


async def test_a_wrong_name_fails_the_handshake_saying_why(ca: trustme.CA) -> None:
    with pytest.raises(trio.BrokenResourceError, match="hostname mismatch") as info:
        await _connected(ca, server_name="other.test")
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)


def _verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_code, error.verify_message = code, message
    return error


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (_verify_error(10, "certificate has expired"), "certificate expired"),
        (_verify_error(20, "unable to get local issuer certificate"), "unknown CA"),
        (_verify_error(18, "self-signed certificate"), "self-signed certificate"),
        (_verify_error(62, "Hostname mismatch"), "hostname mismatch (Hostname mismatch)"),
        (_verify_error(99, "something new"), "certificate verify failed: something new"),
        (ConnectionResetError(104, "Connection reset by peer"), "Connection reset by peer"),
    ],
)
def test_failure_reasons(error: BaseException, reason: str) -> None:
    assert reason in tls_failure_reason(error)
