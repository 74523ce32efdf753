"""Who asked, on every access line: ``client=`` (the peer's address and port, IPv6 in
brackets) and ``user_agent=`` (bounded, anything but printable ASCII escaped), on
``tunnel.closed``, ``tunnel.refused`` and ``request.closed``, over both front ends and
real loopback sockets (relay/record.py)."""

from __future__ import annotations

import dataclasses
import socket

import pytest
import trio
from websockets.sync.client import connect as ws_connect

from h2ws_proxy.config import SocketAddress
from h2ws_proxy.relay.record import USER_AGENT_MAX_BYTES
from tests.conftest import StartProxy, WebSocketsBackend
from tests.helpers.process import free_port
from tests.helpers.records import ProxyRecord, capture_proxy_records
from tests.helpers.setup import backend_url, make_config
from tests.protocol.test_virtual_hosts import send

pytestmark = pytest.mark.socket


def _local(stream: trio.SocketStream) -> str:
    host, port = stream.socket.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _ended(record: ProxyRecord) -> bool:
    return record.event in ("tunnel.closed", "tunnel.refused", "request.closed")


@pytest.mark.parametrize("front", ["h1", "h2"])
@pytest.mark.parametrize("upgrade", [False, True], ids=["request", "websocket"])
async def test_refusals_and_requests_name_the_client_and_its_user_agent(
    start_proxy: StartProxy, front: str, upgrade: bool
) -> None:
    # Nothing listens on the backend port: 502, a line for each kind.
    address = await start_proxy(make_config(("/", backend_url(free_port()))))
    with capture_proxy_records() as records:
        stream = await trio.open_tcp_stream(address.host, address.port)
        async with stream:
            status = await send(
                stream,
                front,
                b"/x",
                b"proxy.test",
                upgrade=upgrade,
                extra=[(b"user-agent", b"probe/1.0 (tests)")],
            )
            assert status == b"502"
            line = await records.wait_for(_ended, 10, "for the request")
            local = _local(stream)
    assert line.event == ("tunnel.refused" if upgrade else "request.closed")
    assert line.get("client") == local
    assert line.get("user_agent") == "probe/1.0 (tests)"
    assert line.get("host") == "proxy.test"


def _echo_once(port: int, user_agent: str) -> str:
    with ws_connect(f"ws://127.0.0.1:{port}/", user_agent_header=user_agent) as ws:
        ws.send("hello")
        assert ws.recv(10) == "hello"
        host, local_port = ws.socket.getsockname()[:2]
        return f"{host}:{local_port}"


async def test_a_tunnel_line_names_the_client_and_its_user_agent(
    start_proxy: StartProxy, ws_backend: WebSocketsBackend
) -> None:
    address = await start_proxy(make_config(("/", backend_url(ws_backend()))))
    with capture_proxy_records() as records:
        local = await trio.to_thread.run_sync(_echo_once, address.port, "legacy-client/2")
        line = await records.wait_for(lambda r: r.event == "tunnel.closed", 10, "tunnel")
    assert line.get("client") == local
    assert line.get("user_agent") == "legacy-client/2"
    assert line.get("end") == "clean"


async def test_a_long_or_non_ascii_user_agent_is_cut_and_escaped(start_proxy: StartProxy) -> None:
    address = await start_proxy(make_config(("/", backend_url(free_port()))))
    user_agent = b"caf\xc3\xa9\\ " + b"x" * 1000
    with capture_proxy_records() as records:
        stream = await trio.open_tcp_stream(address.host, address.port)
        async with stream:
            extra = [(b"user-agent", user_agent)]
            assert await send(stream, "h1", b"/", b"proxy.test", upgrade=False, extra=extra) == (
                b"502"
            )
            line = await records.wait_for(_ended, 10, "for the request")
    logged = line.get("user_agent")
    kept = USER_AGENT_MAX_BYTES - len(b"caf\xc3\xa9\\ ")
    assert logged == "caf\\xc3\\xa9\\x5c " + "x" * kept + "..."


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
async def test_an_ipv6_client_is_written_in_brackets(start_proxy: StartProxy) -> None:
    config = make_config(("/", backend_url(free_port())))
    listener = dataclasses.replace(config.listeners[0], bind=SocketAddress("::1", 0))
    address = await start_proxy(dataclasses.replace(config, listeners=(listener,)))
    with capture_proxy_records() as records:
        stream = await trio.open_tcp_stream("::1", address.port)
        async with stream:
            assert await send(stream, "h2", b"/", b"proxy.test", upgrade=False) == b"502"
            line = await records.wait_for(_ended, 10, "for the request")
            local = _local(stream)
    assert local.startswith("[::1]:")
    assert line.get("client") == local
    assert line.get("user_agent") == "-"
