"""Real browsers through the proxy to an HTTP/2 backend: the page of ``test_browsers.py``
with the route's backend ``h2c://`` (``web_backend.mjs --h2c``, Node's ``http2`` with
RFC 8441).

The proxy reaches the backend over one shared cleartext HTTP/2 connection: the page, the
favicon and the report are ordinary streams on it, the WebSocket an extended CONNECT
stream (``:protocol websocket``). The browser side is as in ``test_browsers.py``: HTTP/2
with TLS from Chromium and Firefox (the WebSocket an extended CONNECT on the page's
connection), and Chromium with ``--disable-http2`` (HTTP/1.1, a classic upgrade answered
101 by the proxy from the backend's 200). The same reports and counts must come out, and
the proxy's records must name the ``h2c://`` backend; the backend's own request lines say
HTTP/2 (``httpVersion`` ``2.0``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trustme

from h2ws_proxy.config import TLSConfig
from tests.conftest import StartProxy
from tests.helpers.browser_page import (
    MakeCommand,
    PageRun,
    assert_front,
    assert_page_ok,
    run_page,
)
from tests.helpers.browsers import BrowserCommand, chromium_command, firefox_command
from tests.helpers.node import require_node
from tests.helpers.records import ProxyRecords, is_request

pytestmark = [pytest.mark.browser, pytest.mark.node, pytest.mark.socket]


@pytest.fixture(autouse=True)
def _node_available() -> None:
    require_node()


async def chromium_without_http2(directory: Path, ca_pem: Path, url: str) -> BrowserCommand:
    return await chromium_command(directory, ca_pem, url, ["--disable-http2"])


def assert_h2c_backend(records: ProxyRecords, run: PageRun) -> None:
    """The tunnel, the page and the report all went to the ``h2c://`` backend over HTTP/2."""
    assert run.backend.startswith("h2c://127.0.0.1:"), run.backend
    assert run.tunnel.get("backend") == run.backend, run.tunnel
    for path in ("/", "/report"):
        found = records.matching(lambda r, path=path: is_request(r, path))
        assert found, f"no request.closed for {path}: {records.records}"
        assert all(r.get("backend") == run.backend for r in found), found
    seen = [(event["method"], event["url"]) for event in run.backend_requests]
    assert ("GET", "/") in seen, run.backend_requests
    assert ("POST", "/report") in seen, run.backend_requests
    versions = {event["httpVersion"] for event in run.backend_requests}
    assert versions == {"2.0"}, run.backend_requests


@pytest.mark.parametrize(
    ("make_command", "user_agent", "front", "ends"),
    [
        # Chromium ends its stream after the closing handshake: the tunnel ends clean.
        (chromium_command, "HeadlessChrome/", "h2", ("clean",)),
        # HTTP/1.1 from the browser: a classic upgrade, 101 on the record.
        (chromium_without_http2, "HeadlessChrome/", "h1", ("clean",)),
        # Firefox never ends its side after the closing handshake (see test_browsers.py):
        # the proxy's half-closed timeout may end the tunnel.
        (firefox_command, "Firefox/", "h2", ("clean", "half_closed_timeout")),
    ],
    ids=["chromium", "chromium-http1", "firefox"],
)
async def test_browser_page_through_an_h2c_backend(
    nursery: trio.Nursery,
    start_proxy: StartProxy,
    tls_config: TLSConfig,
    ca: trustme.CA,
    ca_file: Path,
    tmp_path: Path,
    proxy_records: ProxyRecords,
    make_command: MakeCommand,
    user_agent: str,
    front: str,
    ends: tuple[str, ...],
) -> None:
    run = await run_page(
        nursery, start_proxy, tls_config, ca, ca_file, tmp_path, proxy_records,
        make_command, ends_its_stream=True, half_closed_timeout_s=1.0, h2c_backend=True,
    )  # fmt: skip
    assert_page_ok(run, user_agent)
    assert_front(proxy_records, run.tunnel, front)
    assert_h2c_backend(proxy_records, run)
    assert run.tunnel.get("end") in ends, run.tunnel
