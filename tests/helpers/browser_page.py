"""The page of the real-browser tests, served through the proxy: run it, collect and judge it.

A browser (:mod:`tests.helpers.browsers`) loads ``tests/node/web_backend.mjs``'s page
through the proxy's TLS listener; the page checks four echoes over ``wss://<same
origin>/ws`` (two texts, 16 bytes and 100 KiB of binary), reports over the WebSocket
itself, closes it, then POSTs its final report. The backend prints both reports; the
WebSocket one carries what the backend itself saw on that connection, so it exists only
if the WebSocket worked end to end. The proxy runs in-process and its own log records
(:mod:`tests.helpers.records`) say which front protocol carried the tunnel (``front=h2``
is RFC 8441, ``front=h1`` a classic upgrade) and which backend it reached.

:func:`run_page` does one run, with the backend over HTTP/1.1 (``http://``) or over
HTTP/2 (``h2c://``, the backend's ``--h2c`` mode); :func:`assert_page_ok` and
:func:`assert_front` judge it. Both browsers need ordinary HTTP proxying for the page and
the report (:func:`check_page_is_proxied` says so plainly when the proxy answers 501).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
import trio
import trustme

from h2ws_proxy.config import SocketAddress, TLSConfig
from tests.conftest import StartProxy
from tests.helpers.browsers import BrowserCommand, running_browser
from tests.helpers.node import WEB_BACKEND_SCRIPT, NodePeer, start_node_peer
from tests.helpers.records import ProxyRecord, ProxyRecords, is_request, is_tunnel
from tests.helpers.setup import backend_url, client_ssl_context, make_config

#: Browser start, page load, four echoes and two reports; a few seconds in practice.
PAGE_TIMEOUT_S = 20.0
#: How long the tunnel's record may take to appear once the browser ended it.
RECORD_TIMEOUT_S = 5.0
#: The page's messages as the backend counts them: 23 + 15 (UTF-8) + 16 + 102400 bytes.
ECHOED_MESSAGES = 4
ECHOED_BYTES = 23 + 15 + 16 + 100 * 1024

MakeCommand = Callable[[Path, Path, str], Awaitable[BrowserCommand]]


@dataclass
class PageRun:
    """What one browser run produced: the page's two reports, the tunnel's proxy record."""

    command: BrowserCommand
    #: The route's backend URL (``http://`` or ``h2c://``), as the proxy's records spell it.
    backend: str
    #: The backend's ``request`` events (its ordinary requests) up to the final report.
    backend_requests: list[dict[str, Any]]
    ws_report: dict[str, Any] | None
    http_report: dict[str, Any]
    tunnel: ProxyRecord


async def check_page_is_proxied(address: SocketAddress, ca: trustme.CA) -> None:
    """GET / through the proxy (TLS, HTTP/1.1) must be the page, or the browser would hang."""
    stream = trio.SSLStream(
        await trio.open_tcp_stream(address.host, address.port),
        client_ssl_context(ca, ["http/1.1"]),
        server_hostname="localhost",
    )
    connection = h11.Connection(h11.CLIENT)
    host = f"localhost:{address.port}".encode()
    request = h11.Request(method="GET", target="/", headers=[(b"host", host)])
    with trio.fail_after(10):
        await stream.send_all(connection.send(request) + connection.send(h11.EndOfMessage()))
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(bytes(await stream.receive_some(65536)))
            elif isinstance(event, h11.Response):
                break
    await trio.aclose_forcefully(stream)
    content_type = dict(event.headers).get(b"content-type", b"")
    problem = (
        f"GET / through the proxy answered {event.status_code} ({content_type!r}), not the "
        "backend's page: these tests need ordinary HTTP proxying (page and POST /report)"
    )
    assert event.status_code == 200, problem
    assert content_type.startswith(b"text/html"), problem


async def wait_for_reports(
    peer: NodePeer, command: BrowserCommand
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The page's WebSocket report (None if it never came) and its final POSTed report."""
    reports: dict[str, dict[str, Any]] = {}
    with trio.move_on_after(PAGE_TIMEOUT_S):
        while "http" not in reports:
            event = await peer.next_event()
            if event.get("event") == "report":
                reports[str(event.get("via"))] = event
        return reports.get("ws"), reports["http"]
    raise AssertionError(
        f"{command.name}: no final report from the page within {PAGE_TIMEOUT_S} s; "
        f"reports so far: {reports}; backend events: {peer.events}\n"
        f"browser log (tail):\n{command.log_tail()}"
    )


async def run_page(
    nursery: trio.Nursery,
    start_proxy: StartProxy,
    tls_config: TLSConfig,
    ca: trustme.CA,
    ca_file: Path,
    tmp_path: Path,
    records: ProxyRecords,
    make_command: MakeCommand,
    *,
    ends_its_stream: bool,
    half_closed_timeout_s: float = 10.0,
    h2c_backend: bool = False,
) -> PageRun:
    """Serve the page through the proxy, let the browser run it, collect what happened.

    ``ends_its_stream``: the WebSocket's stream ends while the browser still runs (the
    browser ends it after the closing handshake, or the proxy's ``half_closed_timeout_s``
    does), so the tunnel's record must appear then; otherwise the record is awaited after
    the browser was killed (its connection then drops). ``h2c_backend``: the backend
    speaks HTTP/2 (``--h2c``), the route's backend is ``h2c://``.
    """
    if h2c_backend:
        peer = await start_node_peer(nursery, WEB_BACKEND_SCRIPT, "--h2c")
        backend = f"h2c://127.0.0.1:{peer.port}"
    else:
        peer = await start_node_peer(nursery, WEB_BACKEND_SCRIPT)
        backend = backend_url(peer.port)
    config = make_config(
        ("/", backend), tls=tls_config, half_closed_timeout_s=half_closed_timeout_s
    )
    address = await start_proxy(config)
    await check_page_is_proxied(address, ca)
    command = await make_command(tmp_path, ca_file, f"https://127.0.0.1:{address.port}/")
    async with running_browser(command):
        ws_report, http_report = await wait_for_reports(peer, command)
        # The backend printed the report before answering it: its record follows shortly.
        await records.wait_for(lambda r: is_request(r, "/report"), RECORD_TIMEOUT_S, "for /report")
        if ends_its_stream and ws_report is not None:
            await records.wait_for(
                lambda r: is_tunnel(r, "/ws"), RECORD_TIMEOUT_S, "for /ws while the page is open"
            )
    tunnel = await records.wait_for(lambda r: is_tunnel(r, "/ws"), RECORD_TIMEOUT_S, "for /ws")
    requests = [event for event in peer.events if event.get("event") == "request"]
    return PageRun(command, backend, requests, ws_report, http_report, tunnel)


def assert_page_ok(run: PageRun, user_agent: str) -> None:
    """Both reports say ok, and the backend saw every message on the WebSocket."""
    http_report, ws_report = run.http_report, run.ws_report
    log_tail = run.command.log_tail()
    assert http_report["ok"] is True, f"{http_report}\nbrowser log (tail):\n{log_tail}"
    assert ws_report is not None, f"no report over the WebSocket; final report: {http_report}"
    assert ws_report["ok"] is True, ws_report
    assert user_agent in ws_report["ua"], ws_report["ua"]
    assert ws_report["backend"] == {
        "path": "/ws",
        "x_forwarded_proto": "https",
        "messages": ECHOED_MESSAGES,
        "bytes": ECHOED_BYTES,
    }, ws_report
    details = http_report["details"]
    assert len(details["echoed"]) == ECHOED_MESSAGES, details
    assert details["ws_report_acked"] is True, details
    assert details["close"]["code"] == 1000, details


def assert_front(records: ProxyRecords, tunnel: ProxyRecord, front: str) -> None:
    """The tunnel and the page itself went through the ``front`` protocol's frontend."""
    assert tunnel.get("front") == front, tunnel
    assert tunnel.get("status") == (200 if front == "h2" else 101), tunnel
    pages = records.matching(lambda r: is_request(r, "/") and r.get("front") == front)
    assert pages, f"no request.closed for / with front={front}: {records.records}"
    reports = records.matching(lambda r: is_request(r, "/report") and r.get("front") == front)
    assert reports, f"no request.closed for /report with front={front}: {records.records}"
