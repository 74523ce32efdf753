"""Real browsers through the proxy: Chromium and Firefox (headless), page and WebSocket.

The backend is ``tests/node/web_backend.mjs`` over HTTP/1.1: its page, loaded through
the proxy's TLS listener, opens ``wss://<same origin>/ws``, checks four echoes (two texts,
16 bytes and 100 KiB of binary), reports over the WebSocket itself, closes it, then POSTs
its final report. The backend prints both reports; the WebSocket one carries what the
backend itself saw on that connection, so it exists only if the WebSocket worked end to
end. The proxy runs in-process and its own log records say which front protocol carried
the tunnel (``front=h2`` is RFC 8441, ``front=h1`` a classic upgrade). Running and judging
the page is shared with ``test_browsers_h2_backend.py`` (the same page with an HTTP/2
backend): :mod:`tests.helpers.browser_page`.

What the browsers do (measured with Debian chromium 156 and firefox-esr 153 headless):

* Chromium loads the page over HTTP/2 (ALPN) and opens the WebSocket as an extended
  CONNECT stream on that same connection. With ``--disable-http2`` everything is
  HTTP/1.1, the WebSocket a classic upgrade on a connection of its own. After the
  closing handshake Chromium ends its stream (END_STREAM): the tunnel ends ``clean``
  while the page is still open.
* Firefox also puts the WebSocket on its HTTP/2 connection to the page's origin
  (``network.http.http2.websockets`` defaults to true). After the closing handshake it
  does not end its stream (no END_STREAM, no RST_STREAM), so the tunnel only ends when the
  browser goes away; the test therefore reads the tunnel's record after killing it.

Several certificates (SNI): a page on ``chat.example.test`` opens a WebSocket over HTTP/2
to itself and to ``x.api.example.test`` (a no-cors fetch first opens that origin's HTTP/2
connection), each name covered by its own certificate only; the browsers resolve both to
127.0.0.1 themselves (Chromium's ``--host-resolver-rules``, Firefox's
``network.dns.localDomains``).

Both need ordinary HTTP proxying for the page and the report (:func:`check_page_is_proxied`
says so plainly when the proxy answers 501). Browsers and certutil come from Debian
(``.ci/run`` installs them); without them the tests skip locally and fail under CI.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
import trio
import trustme

from h2ws_proxy.config import TLSConfig
from tests.conftest import StartProxy
from tests.helpers.browser_page import (
    RECORD_TIMEOUT_S,
    MakeCommand,
    assert_front,
    assert_page_ok,
    run_page,
    wait_for_reports,
)
from tests.helpers.browsers import (
    BrowserCommand,
    chromium_command,
    firefox_command,
    running_browser,
)
from tests.helpers.certificates import write_certificate
from tests.helpers.node import WEB_BACKEND_SCRIPT, require_node, start_node_peer
from tests.helpers.records import ProxyRecords, is_tunnel
from tests.helpers.setup import backend_url, make_config

pytestmark = [pytest.mark.browser, pytest.mark.node, pytest.mark.socket]


@pytest.fixture(autouse=True)
def _node_available() -> None:
    require_node()


async def test_chromium_websocket_over_http2(
    nursery: trio.Nursery,
    start_proxy: StartProxy,
    tls_config: TLSConfig,
    ca: trustme.CA,
    ca_file: Path,
    tmp_path: Path,
    proxy_records: ProxyRecords,
) -> None:
    run = await run_page(
        nursery, start_proxy, tls_config, ca, ca_file, tmp_path, proxy_records,
        chromium_command, ends_its_stream=True,
    )  # fmt: skip
    assert_page_ok(run, "HeadlessChrome/")
    assert_front(proxy_records, run.tunnel, "h2")
    assert run.tunnel.get("end") == "clean", run.tunnel


async def test_chromium_without_http2_uses_a_classic_upgrade(
    nursery: trio.Nursery,
    start_proxy: StartProxy,
    tls_config: TLSConfig,
    ca: trustme.CA,
    ca_file: Path,
    tmp_path: Path,
    proxy_records: ProxyRecords,
) -> None:
    async def without_http2(directory: Path, ca_pem: Path, url: str) -> BrowserCommand:
        return await chromium_command(directory, ca_pem, url, ["--disable-http2"])

    run = await run_page(
        nursery, start_proxy, tls_config, ca, ca_file, tmp_path, proxy_records,
        without_http2, ends_its_stream=True,
    )  # fmt: skip
    assert_page_ok(run, "HeadlessChrome/")
    assert_front(proxy_records, run.tunnel, "h1")
    assert run.tunnel.get("end") == "clean", run.tunnel


async def test_firefox_websocket_over_http2(
    nursery: trio.Nursery,
    start_proxy: StartProxy,
    tls_config: TLSConfig,
    ca: trustme.CA,
    ca_file: Path,
    tmp_path: Path,
    proxy_records: ProxyRecords,
) -> None:
    # Firefox never ends its side of the stream after the closing handshake; the proxy's
    # half-closed timeout ends the tunnel while the page is still open.
    run = await run_page(
        nursery, start_proxy, tls_config, ca, ca_file, tmp_path, proxy_records,
        firefox_command, ends_its_stream=True, half_closed_timeout_s=1.0,
    )  # fmt: skip
    assert_page_ok(run, "Firefox/")
    assert_front(proxy_records, run.tunnel, "h2")
    assert run.tunnel.get("end") in ("clean", "half_closed_timeout"), run.tunnel


# --- two host names on one listener, a certificate each (SNI) --------------------------------

#: Each covered by its own certificate only, so a browser that accepts both got the one SNI
#: asked for. Resolved to 127.0.0.1 by the browsers themselves (no system resolver).
SNI_NAMES = ("chat.example.test", "x.api.example.test")


async def _chromium_for_sni_names(directory: Path, ca_pem: Path, url: str) -> BrowserCommand:
    rules = "MAP *.example.test 127.0.0.1"
    return await chromium_command(directory, ca_pem, url, [f"--host-resolver-rules={rules}"])


async def _firefox_for_sni_names(directory: Path, ca_pem: Path, url: str) -> BrowserCommand:
    prefs = {"network.dns.localDomains": ",".join(SNI_NAMES)}
    return await firefox_command(directory, ca_pem, url, prefs)


@pytest.mark.parametrize(
    "make_command", [_chromium_for_sni_names, _firefox_for_sni_names], ids=["chromium", "firefox"]
)
async def test_two_names_on_one_listener_each_get_their_certificate(
    nursery: trio.Nursery,
    start_proxy: StartProxy,
    ca: trustme.CA,
    ca_file: Path,
    tmp_path: Path,
    proxy_records: ProxyRecords,
    make_command: MakeCommand,
) -> None:
    """The page on the first name opens a WebSocket over HTTP/2 to each name in turn; the
    browser verifies each connection's certificate against its name."""
    certificates = TLSConfig(
        certificates=(
            write_certificate(ca, tmp_path, "chat", "chat.example.test"),
            write_certificate(ca, tmp_path, "api", "*.api.example.test"),
        )
    )
    peer = await start_node_peer(nursery, WEB_BACKEND_SCRIPT)
    config = make_config(("/", backend_url(peer.port)), tls=certificates, half_closed_timeout_s=1.0)
    address = await start_proxy(config)
    origins = [f"https://{name}:{address.port}" for name in SNI_NAMES]
    query = "&".join(f"origin={quote(origin, safe='')}" for origin in origins)
    command = await make_command(tmp_path, ca_file, f"{origins[0]}/hosts?{query}")
    async with running_browser(command):
        _, report = await wait_for_reports(peer, command)
        assert report["ok"] is True, f"{report}\nbrowser log (tail):\n{command.log_tail()}"
        first = await proxy_records.wait_for(
            lambda r: is_tunnel(r, "/ws"), RECORD_TIMEOUT_S, "for the first /ws"
        )
        second = await proxy_records.wait_for(
            lambda r: is_tunnel(r, "/ws") and r is not first, RECORD_TIMEOUT_S, "for the second"
        )
    assert [r.get("front") for r in (first, second)] == ["h2", "h2"], (first, second)
    assert first.get("conn") != second.get("conn"), "one connection per certificate"
    misdirected = proxy_records.named("h2.request_refused")
    assert not misdirected, misdirected
