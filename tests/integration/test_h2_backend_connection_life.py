"""An HTTP/2 backend's connection through its life, against a scripted server on loopback.

SETTINGS late, never, or without ENABLE_CONNECT_PROTOCOL; the setting turned off
mid-connection; the socket dying; idle close; a server that stops answering PINGs. Each
case: what the client gets, what the backend saw (and when), and that the next tunnel
dials a new connection that works.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from functools import partial

import pytest
import trio

from h2ws_proxy.backend.h2 import pool
from tests.conftest import StartProxy
from tests.helpers.h2_backend_setup import (
    CONNECT_ERROR,
    NO_ERROR,
    PROTOCOL_ERROR,
    echoes,
    goaway_code,
    h2_client,
    proxy_to,
)
from tests.helpers.records import ProxyRecords, capture_proxy_records, is_tunnel
from tests.helpers.scripted_h2_backend import (
    ENABLE_CONNECT_PROTOCOL,
    GOAWAY,
    HEADERS,
    PING,
    SETTINGS,
    H2Peer,
    ScriptedH2Backend,
)

pytestmark = pytest.mark.socket


@pytest.fixture
def records() -> Iterator[ProxyRecords]:
    with capture_proxy_records() as captured:
        yield captured


async def test_connect_waits_for_late_settings(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    """The server's SETTINGS come 200 ms late: our CONNECT arrives only after them."""

    async def late(peer: H2Peer) -> None:
        await trio.sleep(0.2)  # the behaviour under test, not a wait for something
        await peer.send_settings()

    backend = ScriptedH2Backend(on_connect=late)
    address = await proxy_to(nursery, start_proxy, backend)
    with trio.fail_after(10):
        async with h2_client(address) as client:
            await echoes(await client.websocket("/late"))
    peer = backend.peers[0]
    assert peer.settings_sent_at is not None
    assert peer.settings_sent_at - peer.opened_at >= 0.2
    headers = peer.frames_of(HEADERS)
    assert headers
    assert all(f.at >= peer.settings_sent_at for f in headers)
    # The proxy's own SETTINGS did not wait: they came before ours.
    assert peer.frames_of(SETTINGS)[0].at < peer.settings_sent_at


async def test_no_settings_is_a_504_after_connect_timeout(
    nursery: trio.Nursery, start_proxy: StartProxy, records: ProxyRecords
) -> None:
    async def silent(peer: H2Peer) -> None:
        await trio.sleep_forever()  # a stalled peer: never SETTINGS

    backend = ScriptedH2Backend(on_connect=silent)
    address = await proxy_to(nursery, start_proxy, backend, connect_timeout_s=0.3)
    with trio.fail_after(10):
        async with h2_client(address) as client:
            started = trio.current_time()
            ws = await client.websocket("/never")
            waited = trio.current_time() - started
            assert ws.status == 504
            line = await records.wait_for(lambda r: r.event == "tunnel.refused", 5, "refused")
    assert 0.3 <= waited < 5
    assert line.get("status") == 504
    assert "did not send its HTTP/2 SETTINGS within 0.3s" in line.get("error")
    peer = backend.peers[0]
    assert not peer.frames_of(HEADERS)  # no CONNECT before SETTINGS
    with trio.fail_after(5):
        await peer.closed.wait()  # and the silent connection is not kept
    assert goaway_code(peer) == NO_ERROR


async def test_settings_without_extended_connect_is_a_502_naming_rfc_8441(
    nursery: trio.Nursery, start_proxy: StartProxy, records: ProxyRecords
) -> None:
    async def plain(peer: H2Peer) -> None:
        await peer.send_settings(enable_connect=False)

    backend = ScriptedH2Backend(on_connect=plain)
    address = await proxy_to(nursery, start_proxy, backend)
    with trio.fail_after(10):
        async with h2_client(address) as client:
            assert (await client.websocket("/plain")).status == 502
            line = await records.wait_for(lambda r: r.event == "tunnel.refused", 5, "refused")
    assert line.get("status") == 502
    assert "SETTINGS_ENABLE_CONNECT_PROTOCOL" in line.get("error")
    assert "RFC 8441" in line.get("error")
    assert not backend.peers[0].frames_of(HEADERS)


async def test_extended_connect_turned_off_fails_the_connection_only(
    nursery: trio.Nursery, start_proxy: StartProxy, records: ProxyRecords
) -> None:
    """RFC 8441 §3: a SETTINGS turning ENABLE_CONNECT_PROTOCOL from 1 to 0 is a connection
    error: GOAWAY(PROTOCOL_ERROR) from us, its tunnels reset, the next one on a new
    connection."""
    backend = ScriptedH2Backend()
    address = await proxy_to(nursery, start_proxy, backend)
    with trio.fail_after(10):
        async with h2_client(address) as client:
            first, second = await client.websocket("/a"), await client.websocket("/b")
            await echoes(first)
            await echoes(second)
            peer = backend.peers[0]
            off = struct.pack(">HI", ENABLE_CONNECT_PROTOCOL, 0)
            await peer.send_frame(SETTINGS, 0, 0, off)
            await client.wait_for(
                lambda: first.state.reset_code is not None and second.state.reset_code is not None
            )
            assert first.state.reset_code == second.state.reset_code == CONNECT_ERROR
            await peer.closed.wait()  # GOAWAY, then the socket closed
            assert goaway_code(peer) == PROTOCOL_ERROR
            third = await client.websocket("/c")
            await echoes(third)
            assert len(backend.peers) == 2
            assert [s.path for s in backend.peers[1].streams.values()] == ["/c"]
            await records.wait_for(
                lambda r: is_tunnel(r, "/a") and r.get("end") == "backend_aborted", 5, "/a"
            )


async def test_a_dead_connection_ends_its_tunnels_and_the_next_dials_anew(
    nursery: trio.Nursery, start_proxy: StartProxy, records: ProxyRecords
) -> None:
    backend = ScriptedH2Backend()
    address = await proxy_to(nursery, start_proxy, backend)
    with trio.fail_after(10):
        async with h2_client(address) as client:
            first, second = await client.websocket("/a"), await client.websocket("/b")
            await echoes(first)
            await echoes(second)
            await backend.peers[0].abort()
            await client.wait_for(
                lambda: first.state.reset_code is not None and second.state.reset_code is not None
            )
            assert first.state.reset_code == second.state.reset_code == CONNECT_ERROR
            for path in ("/a", "/b"):
                line = await records.wait_for(partial(is_tunnel, path=path), 5, path)
                assert line.get("end") == "backend_aborted"
                assert line.get("error") == "backend: backend closed the connection", line
            await echoes(await client.websocket("/c"))
    assert len(backend.peers) == 2


async def test_idle_connection_is_closed_with_goaway_no_error(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    backend = ScriptedH2Backend()
    address = await proxy_to(nursery, start_proxy, backend, backend_keepalive_s=0.3)
    with trio.fail_after(10):
        async with h2_client(address) as client:
            ws = await client.websocket("/a")
            await echoes(ws)
            assert await ws.close() == (1000, None)
            ended = trio.current_time()
            peer = backend.peers[0]
            await peer.wait_until(lambda: goaway_code(peer) is not None)
            await peer.closed.wait()
    assert goaway_code(peer) == NO_ERROR
    assert peer.frames_of(GOAWAY)[0].at - ended >= 0.3 - 0.05


async def test_a_server_that_stops_answering_pings_is_dropped(
    nursery: trio.Nursery,
    start_proxy: StartProxy,
    records: ProxyRecords,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a tunnel open and the server quiet for the PING interval we PING; no answer
    within the ping timeout (connect_timeout_s) drops the connection and its tunnels."""
    monkeypatch.setattr(pool, "PING_INTERVAL_S", 0.2)
    backend = ScriptedH2Backend()
    address = await proxy_to(nursery, start_proxy, backend, connect_timeout_s=0.4)
    with trio.fail_after(10):
        async with h2_client(address) as client:
            ws = await client.websocket("/a")
            await echoes(ws)
            peer = backend.peers[0]
            peer.mute = True
            muted = trio.current_time()
            await client.wait_for(lambda: ws.state.reset_code is not None)
            dropped = trio.current_time()
            assert ws.state.reset_code == CONNECT_ERROR
            line = await records.wait_for(lambda r: is_tunnel(r, "/a"), 5, "/a")
            assert line.get("end") == "backend_aborted"
            assert "did not answer a PING" in str(line.get("error")), line
            await echoes(await client.websocket("/b"))
            await peer.closed.wait()  # we closed the dead connection's socket
    assert goaway_code(peer) == NO_ERROR
    assert peer.frames_of(GOAWAY)[0].payload[8:] == b"no answer to PING"
    pings = [f for f in peer.frames_of(PING) if not f.flags & 0x1 and f.at >= muted]
    assert pings, "the proxy PINGed the quiet server"
    assert dropped - pings[0].at >= 0.4 - 0.05
    assert len(backend.peers) == 2


async def test_a_second_connection_opens_only_when_the_first_is_full(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    """The server allows 2 concurrent streams: tunnels 1-2 share the first connection, the
    third opens a second one; once one of the first two ends, the fourth goes on the
    first connection again (it has room), not a third one."""

    async def two_streams(peer: H2Peer) -> None:
        await peer.send_settings(MAX_CONCURRENT_STREAMS=2)

    backend = ScriptedH2Backend(on_connect=two_streams)
    address = await proxy_to(nursery, start_proxy, backend)
    with trio.fail_after(15):
        async with h2_client(address) as client:
            first = await client.websocket("/1")
            second = await client.websocket("/2")
            await echoes(first)
            await echoes(second)
            assert len(backend.peers) == 1
            third = await client.websocket("/3")
            await echoes(third)
            assert len(backend.peers) == 2
            assert [len(peer.frames_of(HEADERS)) for peer in backend.peers] == [2, 1]
            assert await first.close() == (1000, None)
            fourth = await client.websocket("/4")
            await echoes(fourth)
            assert len(backend.peers) == 2
            assert len(backend.peers[0].frames_of(HEADERS)) == 3
