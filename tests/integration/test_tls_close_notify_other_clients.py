"""At the proxy: one TLS client's close_notify with a record behind it in the same segment
must not stop the worker from serving everyone else (a read loop that never yields would
stall the whole trio loop: the watchdog's exception would then surface in the proxy's
connection handler as ``connection.unexpected_error`` and the other client's connect time
out)."""

from __future__ import annotations

import pytest
import trio
import trio.testing
import trustme

from h2ws_proxy.config import TLSConfig
from tests.conftest import StartProxy
from tests.helpers.setup import client_ssl_context, make_config
from tests.helpers.tls_peer import Client, watchdog

pytestmark = pytest.mark.socket


async def test_one_clients_close_notify_and_a_record_do_not_stall_the_worker(
    start_proxy: StartProxy, tls_config: TLSConfig, ca: trustme.CA
) -> None:
    address = await start_proxy(make_config(("/", "http://127.0.0.1:9"), tls=tls_config))
    context = client_ssl_context(ca, ["h2"])
    sock = trio.socket.socket()
    await sock.connect((address.host, address.port))
    attacker = Client(sock, context)
    attacker.tls = context.wrap_bio(
        attacker.incoming, attacker.outgoing, server_hostname="localhost"
    )
    with trio.fail_after(10):
        await attacker.handshake()
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    poison = attacker.records(preface) + attacker.close_notify() + b"\x17\x03\x03\x00\x05abcde"
    await attacker.sock.send_all(poison)
    with watchdog(10), trio.fail_after(8):
        # Someone else's handshake and request: served as usual.
        other = trio.SSLStream(
            await trio.open_tcp_stream(address.host, address.port),
            context,
            server_hostname="localhost",
        )
        await other.do_handshake()
        assert other.selected_alpn_protocol() == "h2"
        await other.aclose()
    await attacker.sock.aclose()
