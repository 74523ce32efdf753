"""What an HTTP/2 backend answers to our extended CONNECT, and streams it resets or refuses.

Each bad answer gets its client a clear outcome (a status, a reset, a log line) while a
healthy tunnel on the same backend connection, open before and after, keeps echoing: a
bad stream never harms its neighbours.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import pytest
import trio
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.conftest import StartProxy
from tests.helpers.h2_backend_setup import (
    CANCEL,
    CONNECT_ERROR,
    INTERNAL_ERROR,
    NO_ERROR,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    echoes,
    goaway_code,
    h2_client,
    proxy_to,
)
from tests.helpers.records import ProxyRecords, capture_proxy_records, is_tunnel
from tests.helpers.scripted_h2_backend import (
    DATA,
    GOAWAY,
    H2Peer,
    PeerStream,
    ScriptedH2Backend,
    echo,
)

pytestmark = pytest.mark.socket

Header = tuple[bytes, bytes]
Handler = Callable[[H2Peer, PeerStream], Awaitable[None]]


@pytest.fixture
def records() -> Iterator[ProxyRecords]:
    with capture_proxy_records() as captured:
        yield captured


def raw_head(headers: list[Header], *, end_stream: bool = False) -> Handler:
    async def answer(peer: H2Peer, state: PeerStream) -> None:
        await peer.send_raw_head(state.stream_id, headers, end_stream=end_stream)

    return answer


async def data_before_head(peer: H2Peer, state: PeerStream) -> None:
    await peer.send_frame(DATA, 0, state.stream_id, b"\x81\x05early")
    await peer.respond(state.stream_id, [(b":status", b"200")])


OK = (b":status", b"200")
BAD_ANSWERS: dict[str, tuple[Handler, str]] = {
    "200-end-stream": (raw_head([OK], end_stream=True), "ended its stream"),
    "200-accept": (raw_head([OK, (b"sec-websocket-accept", b"x")]), "sec-websocket-accept"),
    "data-first": (data_before_head, "broke a stream rule (PROTOCOL_ERROR)"),
    "204": (raw_head([(b":status", b"204")]), "only 200 opens"),
    "no-status": (raw_head([(b"server", b"x")]), "does not start with :status"),
    "uppercase": (raw_head([OK, (b"X-Upper", b"1")]), "'X-Upper' is not lowercase"),
    "connection-field": (
        raw_head([OK, (b"connection", b"keep-alive")]),
        "connection-specific field 'connection'",
    ),
}


@pytest.mark.parametrize("case", list(BAD_ANSWERS))
async def test_a_bad_answer_is_a_502_and_its_stream_is_reset(
    nursery: trio.Nursery, start_proxy: StartProxy, records: ProxyRecords, case: str
) -> None:
    handler, reason = BAD_ANSWERS[case]
    backend = ScriptedH2Backend({"/bad": handler})
    address = await proxy_to(nursery, start_proxy, backend)
    with trio.fail_after(10):
        async with h2_client(address) as client:
            healthy = await client.websocket("/ok")
            await echoes(healthy)
            bad = await client.websocket("/bad")
            assert bad.status == 502
            line = await records.wait_for(lambda r: r.event == "tunnel.refused", 5, "refused")
            peer = backend.peers[0]
            (state,) = [s for s in peer.streams.values() if s.path == "/bad"]
            await peer.wait_until(lambda: state.reset_code is not None)
            await echoes(healthy, "still here")
    assert line.get("status") == 502
    assert reason in line.get("error")
    assert state.reset_code == PROTOCOL_ERROR
    assert len(backend.peers) == 1
    assert goaway_code(peer) is None


async def rejection(peer: H2Peer, state: PeerStream) -> None:
    await peer.respond(
        state.stream_id,
        [(b":status", b"403"), (b"set-cookie", b"why=because"), (b"content-type", b"text/plain")],
    )
    await peer.send_data(state.stream_id, b"not for you", end_stream=True)


async def test_a_rejection_is_relayed_to_an_h2_client(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    backend = ScriptedH2Backend({"/no": rejection})
    address = await proxy_to(nursery, start_proxy, backend)
    with trio.fail_after(10):
        async with h2_client(address) as client:
            healthy = await client.websocket("/ok")
            ws = await client.websocket("/no")
            await client.finished(ws.state)
            await echoes(healthy)
    assert ws.status == 403
    assert ws.state.header(b"set-cookie") == b"why=because"
    assert ws.state.header(b"content-type") == b"text/plain"
    assert bytes(ws.state.data) == b"not for you"
    assert ws.state.reset_code is None


async def test_a_rejection_is_relayed_to_an_h1_client(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    backend = ScriptedH2Backend({"/no": rejection})
    address = await proxy_to(nursery, start_proxy, backend)

    def attempt() -> InvalidStatus:
        with pytest.raises(InvalidStatus) as caught:
            ws_connect(f"ws://127.0.0.1:{address.port}/no", open_timeout=10)
        return caught.value

    with trio.fail_after(15):
        error = await trio.to_thread.run_sync(attempt)
    assert error.response.status_code == 403
    assert error.response.headers["set-cookie"] == "why=because"
    assert error.response.body == b"not for you"


def resets_after_first_message(code: int) -> Handler:
    async def answer(peer: H2Peer, state: PeerStream) -> None:
        await peer.respond(state.stream_id, [OK])
        await peer.wait_until(lambda: bool(state.data))
        peer.conn.reset_stream(state.stream_id, code)
        await peer.flush()

    return answer


@pytest.mark.parametrize("code", [CANCEL, INTERNAL_ERROR])
async def test_a_reset_tunnel_aborts_for_an_h2_client_only(
    nursery: trio.Nursery, start_proxy: StartProxy, records: ProxyRecords, code: int
) -> None:
    backend = ScriptedH2Backend({"/bad": resets_after_first_message(code)})
    address = await proxy_to(nursery, start_proxy, backend)
    with trio.fail_after(10):
        async with h2_client(address) as client:
            healthy = await client.websocket("/ok")
            await echoes(healthy)
            bad = await client.websocket("/bad")
            assert bad.status == 200
            await bad.send("x")
            await client.wait_for(lambda: bad.state.reset_code is not None)
            line = await records.wait_for(lambda r: is_tunnel(r, "/bad"), 5, "/bad")
            await echoes(healthy, "still here")
    assert bad.state.reset_code == CONNECT_ERROR
    assert line.get("end") == "backend_aborted"
    assert len(backend.peers) == 1


async def test_a_reset_tunnel_closes_an_h1_clients_connection(
    nursery: trio.Nursery, start_proxy: StartProxy, records: ProxyRecords
) -> None:
    backend = ScriptedH2Backend({"/bad": resets_after_first_message(CANCEL)})
    address = await proxy_to(nursery, start_proxy, backend)

    def tunnel() -> ConnectionClosedError:
        with ws_connect(f"ws://127.0.0.1:{address.port}/bad", open_timeout=10) as ws:
            ws.send("x")
            with pytest.raises(ConnectionClosedError) as caught:
                ws.recv(timeout=10)
        return caught.value

    with trio.fail_after(10):
        async with h2_client(address) as client:
            healthy = await client.websocket("/ok")
            await echoes(healthy)
            closed = await trio.to_thread.run_sync(tunnel)
            line = await records.wait_for(lambda r: is_tunnel(r, "/bad"), 5, "/bad")
            await echoes(healthy, "still here")
    assert closed.rcvd is None  # no Close frame: the TCP connection just ended
    assert line.get("end") == "backend_aborted"


async def test_goaway_below_a_connect_retries_it_and_older_streams_finish(
    nursery: trio.Nursery, start_proxy: StartProxy, records: ProxyRecords
) -> None:
    """RFC 9113 §6.8: streams above GOAWAY's last stream id were not processed: the
    CONNECT goes again on a new connection; the older tunnel carries on and ends."""

    async def goaway_on_first(peer: H2Peer, state: PeerStream) -> None:
        if peer is not backend.peers[0]:
            await echo(peer, state)
            return
        last = (state.stream_id - 2).to_bytes(4, "big") + NO_ERROR.to_bytes(4, "big")
        await peer.send_frame(GOAWAY, 0, 0, last)

    backend = ScriptedH2Backend({"/new": goaway_on_first})
    address = await proxy_to(nursery, start_proxy, backend)
    with trio.fail_after(10):
        async with h2_client(address) as client:
            old = await client.websocket("/old")
            await echoes(old)
            new = await client.websocket("/new")
            await echoes(new)
            await echoes(old, "after the goaway")
            first = backend.peers[0]
            assert first.closed.is_set() is False
            assert await old.close() == (1000, None)
            await first.closed.wait()  # drained: we said GOAWAY and closed
            await records.wait_for(lambda r: r.event == "backend.h2_goaway", 5, "goaway")
    assert goaway_code(first) == NO_ERROR
    assert [s.path for s in backend.peers[1].streams.values()] == ["/new"]
    assert len(backend.peers) == 2


async def test_a_refused_connect_is_sent_again(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    refusals: list[int] = []

    async def refuse_once(peer: H2Peer, state: PeerStream) -> None:
        if refusals:
            await echo(peer, state)
            return
        refusals.append(state.stream_id)
        peer.conn.reset_stream(state.stream_id, REFUSED_STREAM)
        await peer.flush()

    backend = ScriptedH2Backend({"/refused": refuse_once})
    address = await proxy_to(nursery, start_proxy, backend)
    with trio.fail_after(10):
        async with h2_client(address) as client:
            healthy = await client.websocket("/ok")
            await echoes(await client.websocket("/refused"))
            await echoes(healthy)
    paths = [s.path for peer in backend.peers for s in peer.streams.values()]
    assert paths == ["/ok", "/refused", "/refused"]


async def test_a_stream_refused_every_time_is_a_502(
    nursery: trio.Nursery, start_proxy: StartProxy, records: ProxyRecords
) -> None:
    async def refuse(peer: H2Peer, state: PeerStream) -> None:
        peer.conn.reset_stream(state.stream_id, REFUSED_STREAM)
        await peer.flush()

    backend = ScriptedH2Backend({"/refused": refuse})
    address = await proxy_to(nursery, start_proxy, backend)
    with trio.fail_after(10):
        async with h2_client(address) as client:
            assert (await client.websocket("/refused")).status == 502
            line = await records.wait_for(lambda r: r.event == "tunnel.refused", 5, "refused")
    assert "refused the stream 3 times" in line.get("error")
    assert len(backend.peers[0].streams) == 3
