"""Real browsers for tests: Debian's ``chromium`` and ``firefox-esr``, headless, no driver.

A browser is started on one URL and left alone: the page itself does the work and
reports to its backend (``tests/node/web_backend.mjs``), so no WebDriver, CDP or
Marionette is needed. Each run gets a fresh temporary profile and ``HOME``:

* Trust: the test CA (``trustme``) is added to an NSS database with ``certutil``
  (Debian ``libnss3-tools``), exactly as a user or an administrator would trust a private
  CA, so certificate verification stays on (no ``--ignore-certificate-errors``).
  Chromium on Linux reads ``$HOME/.pki/nssdb``; Firefox reads ``cert9.db`` in its
  profile. The flag ``-t "C,,"`` trusts the CA for TLS server certificates only.
* Quiet: both browsers are told not to phone home (component updates, sync, telemetry,
  safe browsing, captive portal checks, prefetch...). The test machine may have no
  outside network, and Chromium's connections fail without the background-networking
  switches there.
* Cleanup: the browser runs in a session (process group) of its own, killed as a
  whole (SIGKILL) when the block ends, so no renderer or content process outlives
  the test.

A missing browser or ``certutil`` skips the test on a developer's machine and fails it
under CI (``CI`` set), as for the Node peers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

CHROMIUM_NAMES = ("chromium", "chromium-browser")
FIREFOX_NAMES = ("firefox-esr", "firefox")
APT_HINT = "apt-get install chromium firefox-esr libnss3-tools (what .ci/run does)"

#: How long a browser may take to exit after SIGKILL before we stop waiting for it.
KILL_WAIT_S = 5.0

#: Chromium switches for a quiet, throwaway, headless run. ``--no-sandbox``: the tests
#: run as root in a container, where Chromium refuses to start with its sandbox.
#: ``--disable-quic``: the proxy speaks TCP only; no Alt-Svc racing either.
CHROMIUM_SWITCHES = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-breakpad",
    "--metrics-recording-only",
    "--password-store=basic",
)

#: Firefox preferences written to the profile's ``user.js``: no first-run or
#: what's-new pages, no telemetry, studies, updates or remote settings, no captive
#: portal or connectivity probes, no prefetching or speculative connections, no safe
#: browsing lists, no DNS over HTTPS, no OCSP (the test CA has no responder).
#: ``network.http.http2.websockets`` is deliberately left at the browser's default.
FIREFOX_PREFS: dict[str, bool | int | str] = {
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.page": 0,
    "browser.startup.homepage_override.mstone": "ignore",
    "startup.homepage_welcome_url": "",
    "startup.homepage_welcome_url.additional": "",
    "browser.aboutwelcome.enabled": False,
    "browser.newtabpage.enabled": False,
    "browser.tabs.warnOnClose": False,
    "browser.sessionstore.resume_from_crash": False,
    "browser.ping-centre.telemetry": False,
    "browser.newtabpage.activity-stream.feeds.telemetry": False,
    "browser.newtabpage.activity-stream.telemetry": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.region.network.url": "",
    "browser.region.update.enabled": False,
    "browser.search.update": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.archive.enabled": False,
    "toolkit.telemetry.server": "",
    "app.normandy.enabled": False,
    "app.shield.optoutstudies.enabled": False,
    "app.update.auto": False,
    "app.update.enabled": False,
    "extensions.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.blocklist.enabled": False,
    "services.settings.server": "",
    "security.remote_settings.crlite_filters.enabled": False,
    "security.remote_settings.intermediates.enabled": False,
    "security.OCSP.enabled": 0,
    "media.gmp-manager.url": "",
    "media.gmp-gmpopenh264.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.prefetch-next": False,
    "network.dns.disablePrefetch": True,
    "network.predictor.enabled": False,
    "network.http.speculative-parallel-limit": 0,
    "network.trr.mode": 5,
    "dom.push.enabled": False,
    "geo.enabled": False,
}


def _running_under_ci() -> bool:
    return bool(os.environ.get("CI"))


def require_executable(names: Sequence[str], what: str) -> str:
    """The path of the first of ``names`` on PATH; else skip, or under CI fail, the test."""
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    message = f"{what} unavailable: none of {', '.join(names)} on PATH; {APT_HINT}"
    if _running_under_ci():
        pytest.fail(f"{message} (CI is set, so this is an error, not a skip)", pytrace=False)
    pytest.skip(message)


@dataclass(frozen=True)
class BrowserCommand:
    """How to start one browser run: its argv, its environment and its log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError:
            return "(no browser log)"
        return "\n".join(text.splitlines()[-lines:])


async def _certutil(*args: str) -> None:
    certutil = require_executable(("certutil",), "certutil (NSS tools)")
    await trio.run_process(
        [certutil, *args], stdin=subprocess.DEVNULL, capture_stdout=True, capture_stderr=True
    )


async def trust_ca_in_nssdb(nssdb: Path, ca_pem: Path) -> None:
    """Create an NSS database (no password) in ``nssdb`` that trusts ``ca_pem`` for TLS."""
    await trio.Path(nssdb).mkdir(parents=True, exist_ok=True)
    database = f"sql:{nssdb}"
    await _certutil("-N", "--empty-password", "-d", database)
    await _certutil("-A", "-n", "h2ws-test-ca", "-t", "C,,", "-i", str(ca_pem), "-d", database)


def _base_env(home: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key in ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR")
    }
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
    )
    return env


async def chromium_command(
    directory: Path, ca_pem: Path, url: str, extra_switches: Sequence[str] = ()
) -> BrowserCommand:
    """Chromium on ``url`` with a fresh profile and ``HOME`` in ``directory``."""
    binary = require_executable(CHROMIUM_NAMES, "Chromium")
    home = directory / "home"
    await trust_ca_in_nssdb(home / ".pki" / "nssdb", ca_pem)
    argv = [
        binary,
        *CHROMIUM_SWITCHES,
        f"--user-data-dir={directory / 'profile'}",
        *extra_switches,
        url,
    ]
    return BrowserCommand("chromium", argv, _base_env(home), directory / "chromium.log")


def _pref_line(name: str, value: bool | int | str) -> str:
    if isinstance(value, bool):
        rendered = "true" if value else "false"
    elif isinstance(value, int):
        rendered = str(value)
    else:
        rendered = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f'user_pref("{name}", {rendered});\n'


async def firefox_command(
    directory: Path,
    ca_pem: Path,
    url: str,
    extra_prefs: Mapping[str, bool | int | str] | None = None,
) -> BrowserCommand:
    """Firefox on ``url`` with a fresh profile (quiet prefs, trusted CA, ``extra_prefs``)
    in ``directory``."""
    binary = require_executable(FIREFOX_NAMES, "Firefox")
    home = directory / "home"
    await trio.Path(home).mkdir(parents=True, exist_ok=True)
    profile = directory / "profile"
    await trust_ca_in_nssdb(profile, ca_pem)
    all_prefs = {**FIREFOX_PREFS, **(extra_prefs or {})}
    prefs = "".join(_pref_line(name, value) for name, value in all_prefs.items())
    await trio.Path(profile / "user.js").write_text(prefs)
    argv = [binary, "--headless", "--no-remote", "--profile", str(profile), url]
    env = _base_env(home)
    env["MOZ_CRASHREPORTER_DISABLE"] = "1"
    return BrowserCommand("firefox", argv, env, directory / "firefox.log")


def _kill_group(process: trio.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def running_browser(command: BrowserCommand) -> AsyncIterator[trio.Process]:
    """Run ``command`` (its output to its log file) until the block ends, then kill it all."""
    with command.log_path.open("wb") as log:
        process = await trio.lowlevel.open_process(
            command.argv,
            env=command.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed as a whole below
        )
        try:
            yield process
        finally:
            _kill_group(process)
            with trio.move_on_after(KILL_WAIT_S) as waited:
                waited.shield = True
                await process.wait()
            _kill_group(process)  # children that outlived the leader, if any
