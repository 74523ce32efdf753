"""How an HTTP/2 connection ends, over real sockets (h2c and TLS), byte for byte.

RFC 9113 §3.4: bytes that are not the client preface where one is due are a connection error
PROTOCOL_ERROR (on a listener serving HTTP/1.1 too, only bytes that open like the preface).
RFC 9113 §5.4.1: after the GOAWAY for a connection error the TCP connection MUST be closed;
the proxy ends its side (a FIN; over TLS close_notify, then a FIN) as soon as the GOAWAY
went out, and only then drains what the client still sends (lingering). RFC 9113 §6.8, §7:
a client's GOAWAY, whatever its code (an unknown one triggers nothing special), with no
stream open, closes the connection at once. The bounds below are on the order of events
(the close comes well before the linger's own end, ``LINGER_S``), not on speed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import struct

import pytest
import trio
import trustme

from h2ws_proxy.config import SocketAddress, TLSConfig
from h2ws_proxy.transport.lingering import LINGER_S
from tests.conftest import StartProxy
from tests.helpers.frames import EMPTY_SETTINGS, PREFACE, frame
from tests.helpers.setup import client_ssl_context, make_config

pytestmark = pytest.mark.socket

PING, GOAWAY, SETTINGS = 0x6, 0x7, 0x4
FRAME_SIZE_ERROR = 0x6
#: The close must come within this: well before a linger that waited for the client.
CLOSE_WITHIN_S = LINGER_S / 2


async def connect(
    address: SocketAddress, tls: bool, ca: trustme.CA
) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
    stream = await trio.open_tcp_stream(address.host, address.port)
    if not tls:
        return stream
    ssl_stream = trio.SSLStream(stream, client_ssl_context(ca, ["h2"]), server_hostname="localhost")
    await ssl_stream.do_handshake()
    assert ssl_stream.selected_alpn_protocol() == "h2"
    return ssl_stream


async def frames_until_close(stream: trio.abc.ReceiveStream) -> list[tuple[int, int, bytes]]:
    """Every frame (type, stream, payload) the proxy sends until it closes its side."""
    buffer, frames = b"", []
    while True:
        try:
            data = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            data = b""  # a TLS peer that closed without our close_notify in return
        if not data:
            return frames
        buffer += data
        while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
            length = int.from_bytes(buffer[:3], "big")
            frames.append((buffer[3], int.from_bytes(buffer[5:9], "big"), buffer[9 : 9 + length]))
            buffer = buffer[9 + length :]


@pytest.fixture(params=[False, True], ids=["h2c", "tls"])
def tls(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


async def start(start_proxy: StartProxy, tls: bool, tls_config: TLSConfig) -> SocketAddress:
    return await start_proxy(
        make_config(("/", "http://127.0.0.1:9"), tls=tls_config if tls else None)
    )


async def test_a_connection_error_sends_goaway_then_closes(
    start_proxy: StartProxy, tls: bool, tls_config: TLSConfig, ca: trustme.CA
) -> None:
    client = await connect(await start(start_proxy, tls, tls_config), tls, ca)
    # A PING must carry 8 bytes (RFC 9113 §6.7): a connection error FRAME_SIZE_ERROR.
    await client.send_all(PREFACE + EMPTY_SETTINGS + frame(PING, 0, 0, b"short!"))
    with trio.fail_after(CLOSE_WITHIN_S):
        frames = await frames_until_close(client)
    goaways = [payload for kind, _, payload in frames if kind == GOAWAY]
    assert len(goaways) == 1
    assert struct.unpack(">LL", goaways[0][:8])[1] == FRAME_SIZE_ERROR
    assert frames[-1][0] == GOAWAY  # nothing after it


@pytest.mark.parametrize("code", [0x0, 0xFF], ids=["no_error", "unknown_code"])
async def test_a_clients_goaway_with_nothing_open_closes_at_once(
    start_proxy: StartProxy, tls: bool, tls_config: TLSConfig, ca: trustme.CA, code: int
) -> None:
    client = await connect(await start(start_proxy, tls, tls_config), tls, ca)
    await client.send_all(PREFACE + EMPTY_SETTINGS)
    await client.send_all(frame(GOAWAY, 0, 0, struct.pack(">LL", 0, code)))
    # A PING in a write of its own (over TLS, a record of its own): answered, or the
    # connection is closed already; never left without either.
    with contextlib.suppress(trio.BrokenResourceError):
        await client.send_all(frame(PING, 0, 0, b"h2spec  "))
    with trio.fail_after(CLOSE_WITHIN_S):
        frames = await frames_until_close(client)
    assert all(kind in (SETTINGS, PING, 0x8) for kind, _, _ in frames), frames


PROTOCOL_ERROR = 0x1


async def start_serving(
    start_proxy: StartProxy, protocols: tuple[str, ...], tls: TLSConfig | None = None
) -> SocketAddress:
    config = make_config(("/", "http://127.0.0.1:9"), tls=tls)
    listener = dataclasses.replace(config.listeners[0], protocols=protocols)
    return await start_proxy(dataclasses.replace(config, listeners=(listener,)))


@pytest.mark.parametrize(
    ("protocols", "first_bytes"),
    [
        (("h2", "http/1.1"), b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"),  # opens like it
        (("h2",), b"INVALID CONNECTION PREFACE\r\n\r\n"),  # h2spec 3.5/2
        (("h2",), b"GET / HTTP/1.1\r\nhost: proxy.test\r\n\r\n"),
    ],
    ids=["mixed-broken-preface", "h2-only-garbage", "h2-only-http11"],
)
async def test_an_invalid_preface_gets_goaway_then_close(
    start_proxy: StartProxy, protocols: tuple[str, ...], first_bytes: bytes
) -> None:
    address = await start_serving(start_proxy, protocols)
    client = await trio.open_tcp_stream(address.host, address.port)
    await client.send_all(first_bytes)
    with trio.fail_after(CLOSE_WITHIN_S):
        frames = await frames_until_close(client)
    assert [(kind, sid) for kind, sid, _ in frames] == [(GOAWAY, 0)]
    assert struct.unpack(">LL", frames[0][2][:8]) == (0, PROTOCOL_ERROR)


async def test_a_listener_without_h2_takes_the_preface_as_http11(
    start_proxy: StartProxy,
) -> None:
    address = await start_serving(start_proxy, ("http/1.1",))
    client = await trio.open_tcp_stream(address.host, address.port)
    await client.send_all(PREFACE + EMPTY_SETTINGS)
    answer = b""
    with trio.fail_after(10):
        while data := await client.receive_some(65536):
            answer += data
    assert answer.startswith(b"HTTP/1.1 4")  # h11 refuses the PRI request line


@pytest.mark.parametrize(
    ("served", "offered", "selected"),
    [
        (("h2",), ["h2", "http/1.1"], "h2"),
        (("http/1.1",), ["h2", "http/1.1"], "http/1.1"),
        (("h2",), ["http/1.1"], None),
    ],
)
async def test_tls_offers_the_listeners_protocols(
    start_proxy: StartProxy,
    tls_config: TLSConfig,
    ca: trustme.CA,
    served: tuple[str, ...],
    offered: list[str],
    selected: str | None,
) -> None:
    address = await start_serving(start_proxy, served, tls_config)
    stream = await trio.open_tcp_stream(address.host, address.port)
    client = trio.SSLStream(stream, client_ssl_context(ca, offered), server_hostname="localhost")
    await client.do_handshake()
    assert client.selected_alpn_protocol() == selected
    if selected is None:
        # HTTP/2 over TLS is negotiated (RFC 9113 §3.2): without it, nothing is served.
        with trio.fail_after(CLOSE_WITHIN_S):
            assert await frames_until_close(client) == []
