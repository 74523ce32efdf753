"""Side by side: h2ws-proxy, HAProxy, nghttpx, Apache httpd and a direct baseline, on the same
backend and load client.

Every process is its own, on 127.0.0.1: the echo backend (``bench/node/echo_backend.mjs``:
HTTP/1.1 WebSocket echo and GET, plus its own RFC 8441 endpoint), h2ws-proxy
(``python -m h2ws_proxy --config``), HAProxy, nghttpx and Apache httpd (the Debian packages
``haproxy``, ``nghttp2-proxy`` and ``apache2``, each optional; this script writes their
configs) and the load client (``bench/node/h2_load.mjs``:
Node's built-in ``http2``, nghttp2 underneath) or ``h2load`` for plain GETs. "direct" is the
load client talking RFC 8441 to the backend's own HTTP/2 listener: the same client and echo
code with no proxy and no HTTP/1.1 hop, i.e. what the client and backend cost on their own.

For each run it reports the client's own CPU (``process.cpuUsage``), the proxy's and the
backend's (``/proc/PID/stat``) over the measured interval, in cores, so a reader can see who
saturates. Rounds alternate between proxies (round-robin within each round, the order rotated
each round); the table gives medians and ours / each of them.

Per core: h2ws-proxy runs one process (one core at most), so beside HAProxy with its default
threads (one per CPU) it also meets HAProxy with ``nbthread 1`` ("HAProxy 1T") and nghttpx
with one worker (``workers=1``, its default: one thread does all the proxying, in nghttpx's
worker process beside its main process); their ratios are the per-core columns. Everything is
bounded by counts and seconds, and each client process has a hard timeout.

A proxy that cannot hold a scenario's tunnels per connection open at once (Apache's mod_http2
starts 6 streams per connection and holds the rest back until one of them finishes, which a
tunnel never does) gets "n/a (...)" in that cell, decided by a short probe on one connection,
instead of waiting out the client's timeout in every round.

    .venv/bin/python bench/compare.py                    # full run, under 10 minutes
    .venv/bin/python bench/compare.py --smoke            # a few seconds (CI)
    .venv/bin/python bench/compare.py --only echo256,bulk --proxies h2ws,haproxy,apache --rounds 5
    .venv/bin/python bench/compare.py --only echo256 --proxies h2ws --py-spy /tmp/prof.txt
    .venv/bin/python bench/compare.py --only get --h2ws-python /usr/bin/python3.11   # see below

The interpreter's build counts: h2ws-proxy runs on ``sys.executable`` unless ``--h2ws-python``
names another (a venv's ``bin/python`` or an interpreter whose site-packages hold the
dependencies). A source build without PGO and LTO (pyenv's default) runs the proxy's Python
slower than a distribution's or the official container image's optimized build
(bench/README.md, "The interpreter's build"); the header names the one used.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
BENCH = Path(__file__).resolve().parent
CLIENT = BENCH / "node" / "h2_load.mjs"
BACKEND = BENCH / "node" / "echo_backend.mjs"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROXIES = ("h2ws", "haproxy", "haproxy1", "nghttpx", "apache", "direct")
LABELS = {
    "h2ws": "h2ws-proxy",
    "haproxy": "HAProxy",
    "haproxy1": "HAProxy 1T",
    "nghttpx": "nghttpx",
    "apache": "Apache httpd",
    "direct": "direct",
}
#: The proxies "ours / X" columns compare against, when they are in the run.
RIVALS = ("haproxy", "haproxy1", "nghttpx", "apache")
SHORT = {"haproxy": "HAProxy", "haproxy1": "HAProxy 1T", "nghttpx": "nghttpx", "apache": "Apache"}
CLIENT_TIMEOUT_S = 120.0
#: How long the tunnels-per-connection probe waits for its tunnels to open (they open in
#: milliseconds when they open at all).
PROBE_TIMEOUT_MS = 5000


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    kind: str  # "load" (h2_load.mjs echo/open), "idle" (RSS per tunnel) or "get" (h2load)
    unit: str
    full: str  # the client's arguments for a full run
    smoke: str  # ... and for --smoke
    tls: bool = False
    #: Through the proxy to the backend's HTTP/2 side (RFC 8441 both ways, path /h2b/),
    #: rather than to its HTTP/1.1 side.
    h2_backend: bool = False


def _with_tls(*scenarios: Scenario) -> list[Scenario]:
    plain = list(scenarios)
    return plain + [
        Scenario(f"{s.key}-tls", f"{s.title}, TLS", s.kind, s.unit, s.full, s.smoke, tls=True)
        for s in plain
    ]


SCENARIOS = (
    *_with_tls(
        Scenario(
            "echo256",
            "64 B echo, 256 tunnels on 4 connections",
            "load",
            "msg/s",
            "--mode echo --size 64 --connections 4 --tunnels 256 --seconds 3 --messages 3000000",
            "--mode echo --size 64 --connections 2 --tunnels 8 --seconds 0.2 --messages 500",
        ),
        Scenario(
            "pingpong",
            "one tunnel ping-pong, 64 B",
            "load",
            "msg/s",
            "--mode echo --size 64 --seconds 3 --messages 300000",
            "--mode echo --size 64 --seconds 0.2 --messages 100",
        ),
        Scenario(
            "bulk",
            "64 KiB bulk, one tunnel, 8 in flight",
            "load",
            "MB/s echoed",
            "--mode echo --size 65536 --depth 8 --seconds 3 --messages 100000",
            "--mode echo --size 65536 --depth 8 --seconds 0.2 --messages 50",
        ),
        Scenario(
            "open",
            "new tunnels (open, 200, one echo, close), 4 conns x 16",
            "load",
            "tunnels/s",
            "--mode open --connections 4 --concurrency 16 --tunnels 100000 --seconds 3",
            "--mode open --connections 2 --concurrency 2 --tunnels 20 --seconds 1",
        ),
    ),
    Scenario(
        "echo256-h2b",
        "64 B echo, 256 tunnels on 4 conns, HTTP/2 backend",
        "load",
        "msg/s",
        "--mode echo --size 64 --connections 4 --tunnels 256 --seconds 3 --messages 3000000"
        " --path /h2b/echo",
        "--mode echo --size 64 --connections 2 --tunnels 8 --seconds 0.2 --messages 500"
        " --path /h2b/echo",
        h2_backend=True,
    ),
    Scenario(
        "open-h2b",
        "new tunnels, 4 conns x 16, HTTP/2 backend",
        "load",
        "tunnels/s",
        "--mode open --connections 4 --concurrency 16 --tunnels 100000 --seconds 3"
        " --path /h2b/echo",
        "--mode open --connections 2 --concurrency 2 --tunnels 20 --seconds 1 --path /h2b/echo",
        h2_backend=True,
    ),
    Scenario(
        "idle1k",
        "RSS per idle tunnel, 1k tunnels on 10 conns",
        "idle",
        "KiB/tunnel",
        "--mode idle --connections 10 --tunnels 1000 --seconds 60",
        "--mode idle --connections 2 --tunnels 20 --seconds 10",
    ),
    Scenario(
        "idle10k",
        "RSS per idle tunnel, 10k tunnels on 100 conns",
        "idle",
        "KiB/tunnel",
        "--mode idle --connections 100 --tunnels 10000 --seconds 90",
        "--mode idle --connections 2 --tunnels 40 --seconds 10",
    ),
    Scenario(
        "get",
        "plain GET / over h2c, h2load -c 4 -m 16",
        "get",
        "req/s",
        "-c 4 -m 16 -D 3",
        "-c 1 -m 4 -n 50",
    ),
)
#: For these, lower is better; the ratio column still reads ours / HAProxy.
LOWER_IS_BETTER = {"KiB/tunnel"}


class MeasureError(Exception):
    """One run went wrong: reported in the table and in the exit status, the rest goes on."""


@dataclass
class Measure:
    value: float | None = None
    note: str = ""
    cores: dict[str, float] = field(default_factory=dict)  # "proxy", "client", "backend"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with status {proc.returncode} before listening")
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {HOST}:{port} within 15 s")


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        match = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
        total += int(match.group(1)) if match else 0
    return total


@dataclass
class Certs:
    ca: Path
    cert: Path  # leaf + chain
    key: Path
    combined: Path  # cert + key, for HAProxy's crt

    @classmethod
    def make(cls, directory: Path) -> Certs:
        import trustme  # the test extra; only needed here

        ca = trustme.CA()
        leaf = ca.issue_cert(HOST, "localhost")
        certs = cls(
            directory / "ca.pem",
            directory / "cert.pem",
            directory / "key.pem",
            directory / "haproxy.pem",
        )
        ca.cert_pem.write_to_path(str(certs.ca))
        leaf.private_key_pem.write_to_path(str(certs.key))
        chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
        certs.cert.write_bytes(chain)
        certs.combined.write_bytes(chain + leaf.private_key_pem.bytes())
        return certs


@dataclass
class Target:
    """One thing the client talks to: its URLs and the processes whose CPU/RSS count."""

    name: str
    h2c_url: str
    tls_url: str
    pids: list[int]
    proc: subprocess.Popen[bytes] | None = None


@dataclass
class Backend:
    proc: subprocess.Popen[bytes]
    port: int
    h2_port: int
    tls_port: int


@dataclass(frozen=True)
class Run:
    """What every measurement shares."""

    backend: Backend
    certs: Certs
    settle_s: float  # before reading a proxy's RSS


@contextmanager
def start_backend(certs: Certs) -> Iterator[Backend]:
    proc = subprocess.Popen(
        [
            "node",
            str(BACKEND),
            "--tls-port",
            "0",
            "--cert",
            str(certs.cert),
            "--key",
            str(certs.key),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        ports = json.loads(proc.stdout.readline())
        yield Backend(proc, ports["port"], ports["h2_port"], ports["tls_port"])
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


H2WS_CONFIG = """\
workers = {workers}

[[listener]]
bind = "{host}:{h2c}"

[[listener]]
bind = "{host}:{tls}"
[listener.tls]
cert = "{cert}"
key = "{key}"

[[route]]
path = "/"
backend = "http://{host}:{backend}"

# The HTTP/2-backend rows: one shared connection to the backend's RFC 8441 side.
[[route]]
path = "/h2b"
backend = "h2c://{host}:{h2backend}"

# The load generator is one client address: no per-client caps (HAProxy has none either).
[limits]
max_connections_per_client = 0
max_tunnels_per_client = 0
"""

# HAProxy 2.6 advertises SETTINGS_ENABLE_CONNECT_PROTOCOL on h2 frontends unless the global
# h2-workaround-bogus-websocket-clients is set, and relays a websocket stream to an HTTP/1.1
# server as an Upgrade (server "ws auto"). Defaults otherwise (threads = CPUs, h2 windows).
HAPROXY_CONFIG = """\
global
    maxconn 9000

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 300s

{threads}
frontend bench
    bind {host}:{h2c} proto h2
    bind {host}:{tls} ssl crt {pem} alpn h2
    use_backend echo_h2 if {{ path_beg /h2b/ }}
    default_backend echo

backend echo
    server echo {host}:{backend}

# The HTTP/2-backend rows: RFC 8441 toward the backend's h2c side.
backend echo_h2
    server echo {host}:{h2backend} proto h2
"""

# nghttpx 1.52 (Debian nghttp2-proxy) takes RFC 8441 extended CONNECTs by default and relays
# each to an HTTP/1.1 backend as an Upgrade. One worker (workers=1, the default; threads are
# its workers) in its worker process, which the harness counts with the main process.
# Raised from the defaults: the backend read and write timeouts (1m and 30s) and the
# frontend's (1m), so idle tunnels live as long as HAProxy's "timeout tunnel 300s"; OCSP
# stapling off (the test CA has no responder). No access log (none is configured: HAProxy
# and h2ws-proxy at warning write none either).
# nghttpx 1.52 never ends a tunnel's stream toward an HTTP/2 backend: after the client's
# END_STREAM it sends the backend neither END_STREAM nor RST_STREAM, so each tunnel leaves one
# stream open on its backend connection (the echo backend counts them), and once the backend's
# SETTINGS_MAX_CONCURRENT_STREAMS (1000) are used up new tunnels wait for ever. So nghttpx
# gets a fresh process for each HTTP/2-backend measurement, and the new-tunnels row (thousands
# of tunnels in one run) is n/a for it.
NGHTTPX_H2_BACKEND_OPEN = "n/a (nghttpx 1.52 leaves each tunnel's HTTP/2 backend stream open)"

NGHTTPX_CONFIG = """\
frontend={host},{h2c};no-tls
frontend={host},{tls}
private-key-file={key}
certificate-file={cert}
backend={host},{backend};;proto=http/1.1
backend={host},{h2backend};/h2b/;proto=h2
workers=1
no-ocsp=yes
frontend-read-timeout=300s
backend-read-timeout=300s
backend-write-timeout=300s
"""

# Apache httpd 2.4 (>= 2.4.58): mod_http2 takes RFC 8441 extended CONNECTs (H2WebSockets on)
# and hands each one, as an HTTP/1.1-style Upgrade request, to mod_proxy_http, which tunnels it
# to the backend because the worker says upgrade=websocket; other requests are proxied as
# usual, over pooled backend connections that are reused (mod_proxy's default). The ws://
# scheme through mod_proxy_wstunnel (ProxyWebsocketFallbackToProxyHttp Off) also works but
# echoed one tunnel's ping-pong about 6x slower here, so it is not used. Everything else lives
# in the temp dir, and no access log is written (HAProxy logs nothing either).
#
# Raised from the defaults, as a tuner would for this load:
# * ServerLimit = StartServers = 2 children and MaxSpareThreads = MaxRequestWorkers: the set of
#   processes is fixed for the whole run, so their CPU and RSS can be summed.
# * ThreadsPerChild 128 (MaxRequestWorkers 256; defaults 25 and 150 on Debian): an h2
#   connection with streams in progress holds an MPM worker thread (with 200 connections of
#   tunnels and 128 threads the error log said "server reached MaxRequestWorkers"), and
#   idle10k opens 100 connections, which the two children need not share evenly.
# * H2MaxWorkers 1024 (default 3/2 x ThreadsPerChild): an upgraded stream keeps one h2 worker
#   thread for the tunnel's whole life, so 256 tunnels on 4 connections may need 256 workers
#   in one child (10k tunnels would need 5k per child; the limit below comes first).
# * ProxyPass max=1024 (default ThreadsPerChild): each tunnel also keeps one backend
#   connection out of the worker's pool for its whole life.
# * H2MaxSessionStreams 256 (default 100): the most tunnels one connection opens is 100, and
#   mod_http2 caps the streams it processes per connection at min(this, H2MaxWorkers).
# * Timeout 300 (default 60): idle tunnels, like HAProxy's "timeout tunnel 300s".
# Not raisable: mod_http2 starts each connection with 6 streams in processing ("workers_limit=6"
# in its debug log; hard-coded in h2_mplx.c) and doubles that only when a stream's request
# completes; tunnels never complete, so from the 7th tunnel on a connection the CONNECT waits.
APACHE_CONFIG = """\
ServerRoot "{work}"
ServerName {host}
PidFile "{work}/apache.pid"
DefaultRuntimeDir "{work}/apache-run"
ErrorLog "{work}/apache-error.log"
LogLevel {log_level}
{user}
LoadModule mpm_event_module {modules}/mod_mpm_event.so
# Without an authz module every request fails with 500 "couldn't check user".
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule http2_module {modules}/mod_http2.so
LoadModule proxy_module {modules}/mod_proxy.so
LoadModule proxy_http_module {modules}/mod_proxy_http.so
LoadModule ssl_module {modules}/mod_ssl.so

StartServers 2
ServerLimit 2
ThreadLimit 128
ThreadsPerChild 128
MaxRequestWorkers 256
MinSpareThreads 1
MaxSpareThreads 256
Timeout 300

Listen {host}:{h2c}
Listen {host}:{tls}
Protocols h2 h2c http/1.1
H2Direct on
H2WebSockets on
H2MaxWorkers 1024
H2MaxSessionStreams 256
ProxyPass / http://{host}:{backend}/ upgrade=websocket max=1024

<VirtualHost {host}:{tls}>
    SSLEngine on
    SSLCertificateFile "{cert}"
    SSLCertificateKeyFile "{key}"
</VirtualHost>
"""
#: Apache's fixed number of child processes (ServerLimit above).
APACHE_CHILDREN = 2
APACHE_MODULES = Path("/usr/lib/apache2/modules")


def apache_binary() -> str | None:
    """apache2 from PATH, or Debian's /usr/sbin/apache2 (not on a non-root user's PATH)."""
    return _sbin("apache2")


def _sbin(tool: str) -> str | None:
    found = shutil.which(tool)
    if found is None and Path(f"/usr/sbin/{tool}").exists():
        found = f"/usr/sbin/{tool}"
    return found


def apache_user() -> str:
    """Started as root, Apache must switch its children to another user (it refuses root)."""
    if os.geteuid() == 0:
        return "User www-data\nGroup www-data"
    return ""  # not root: the children keep our user and User/Group would be ignored


@contextmanager
def start_target(
    name: str,
    backend: Backend,
    certs: Certs,
    work: Path,
    log_level: str,
    workers: int = 1,
    python: str = sys.executable,
) -> Iterator[Target]:
    if name == "direct":
        yield Target(
            name, f"http://{HOST}:{backend.h2_port}", f"https://{HOST}:{backend.tls_port}", []
        )
        return
    h2c, tls = free_port(), free_port()
    # What the configs below name (each template takes the ones it needs).
    places = {
        "host": HOST,
        "h2c": h2c,
        "tls": tls,
        "cert": certs.cert,
        "key": certs.key,
        "pem": certs.combined,
        "backend": backend.port,
        "h2backend": backend.h2_port,
    }
    if name == "h2ws":
        config = work / "h2ws.toml"
        config.write_text(H2WS_CONFIG.format(**places, workers=workers))
        command = [
            python,
            "-m",
            "h2ws_proxy",
            "--config",
            str(config),
            "--log-level",
            log_level,
        ]
    elif name == "apache":
        command = apache_command(work, h2c, tls, certs, backend, log_level)
    elif name == "nghttpx":
        config = work / "nghttpx.conf"
        config.write_text(NGHTTPX_CONFIG.format(**places))
        command = [_sbin("nghttpx") or "nghttpx", f"--conf={config}"]
    else:
        config = work / f"{name}.cfg"
        config.write_text(
            HAPROXY_CONFIG.format(
                **places, threads="global\n    nbthread 1\n" if name == "haproxy1" else ""
            )
        )
        command = ["haproxy", "-db", "-f", str(config)]
    log = (work / f"{name}.log").open("wb")
    # h2ws-proxy from this tree's proxy/, not the venv's editable install's (a worktree).
    env = {**os.environ, "PYTHONPATH": str(BENCH.parent / "proxy")} if name == "h2ws" else None
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
    try:
        wait_port(h2c, proc, LABELS[name])
        wait_port(tls, proc, LABELS[name])
        # With h2ws-proxy's workers > 1 the work is done by the supervisor's children; Apache's
        # parent only supervises its children, which do all the work; so does nghttpx's.
        children = {"h2ws": workers if workers > 1 else 0, "apache": APACHE_CHILDREN}
        expected = {**children, "nghttpx": 1}.get(name, 0)
        pids = [proc.pid, *_children(proc.pid, expected=expected)]
        yield Target(name, f"http://{HOST}:{h2c}", f"https://{HOST}:{tls}", pids, proc)
    finally:
        stop(proc)
        log.close()


def apache_command(
    work: Path, h2c: int, tls: int, certs: Certs, backend: Backend, log_level: str
) -> list[str]:
    """Writes Apache's config into ``work``; the command runs it in the foreground with
    mpm_event (``-X`` would be a single process with one connection at a time)."""
    binary = apache_binary()
    assert binary is not None  # check_tools dropped "apache" otherwise
    (work / "apache-run").mkdir(exist_ok=True)
    config = work / "apache.conf"
    config.write_text(
        APACHE_CONFIG.format(
            work=work,
            host=HOST,
            h2c=h2c,
            tls=tls,
            cert=certs.cert,
            key=certs.key,
            backend=backend.port,
            modules=APACHE_MODULES,
            user=apache_user(),
            # Apache's levels include h2ws-proxy's, with "warn" for "warning".
            log_level="warn" if log_level == "warning" else log_level,
        )
    )
    return [binary, "-f", str(config), "-DFOREGROUND"]


def _children(pid: int, expected: int) -> list[int]:
    """The child processes of ``pid`` once ``expected`` of them run (at most 10 s); none
    for ``expected`` 0 (a single h2ws-proxy worker is the process itself)."""
    if expected <= 0:
        return []
    deadline = time.monotonic() + 10
    while True:
        with open(f"/proc/{pid}/task/{pid}/children") as listing:
            children = [int(child) for child in listing.read().split()]
        if len(children) >= expected or time.monotonic() > deadline:
            return children
        time.sleep(0.05)


def run_client(
    target: Target,
    run: Run,
    scenario: Scenario,
    args: tuple[str, ...],
    on_opened: float | None = None,
) -> tuple[dict[str, object], Measure]:
    """Runs h2_load.mjs; samples CPU at its start/stop lines, RSS around "opened"."""
    url = target.tls_url if scenario.tls else target.h2c_url
    command = ["node", str(CLIENT), "--url", url, "--ca", str(run.certs.ca), *args]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    killer = threading.Timer(CLIENT_TIMEOUT_S, proc.kill)
    killer.start()
    measure = Measure()
    samples: list[tuple[float, float, float]] = []
    result: dict[str, object] = {"ok": False, "error": "no result line"}
    try:
        assert proc.stdout is not None
        assert proc.stdin is not None
        for raw in proc.stdout:
            line = json.loads(raw)
            event = line.get("event")
            if event in ("start", "stop"):
                samples.append(
                    (
                        time.monotonic(),
                        cpu_seconds(target.pids),
                        cpu_seconds([run.backend.proc.pid]),
                    )
                )
            elif event == "opened" and on_opened is not None:
                time.sleep(run.settle_s)  # let the proxy settle before reading its RSS
                measure.value = (rss_kib(target.pids) - on_opened) / float(line["tunnels"])
                proc.stdin.write(b"\n")
                proc.stdin.flush()
            elif event == "result":
                result = line
        proc.wait()
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if len(samples) == 2 and result.get("ok"):
        (t0, p0, b0), (t1, p1, b1) = samples
        wall = t1 - t0
        if target.pids:
            measure.cores["proxy"] = (p1 - p0) / wall
        measure.cores["backend"] = (b1 - b0) / wall
        measure.cores["client"] = float(result["client_cpu_s"]) / wall  # type: ignore[arg-type]
    return result, measure


def measure_load(target: Target, run: Run, scenario: Scenario, args: tuple[str, ...]) -> Measure:
    result, measure = run_client(target, run, scenario, args)
    if not result.get("ok"):
        raise MeasureError(f"{scenario.key} via {target.name}: client failed: {result}")
    if result.get("connect_protocol") is not True:
        raise MeasureError(f"{target.name} did not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL")
    key = {"msg/s": "messages_per_s", "MB/s echoed": "mb_per_s"}.get(scenario.unit, "tunnels_per_s")
    measure.value = float(result[key])  # type: ignore[arg-type]
    return measure


def measure_idle(target: Target, run: Run, scenario: Scenario, args: tuple[str, ...]) -> Measure:
    if not target.pids:
        return Measure(note="-")
    time.sleep(run.settle_s)
    result, measure = run_client(target, run, scenario, args, on_opened=rss_kib(target.pids))
    if not result.get("ok") or measure.value is None:
        raise MeasureError(f"{scenario.key} via {target.name}: client failed: {result}")
    return measure


def measure_get(target: Target, run: Run, scenario: Scenario, args: tuple[str, ...]) -> Measure:
    probe = Scenario("probe", "", "load", "", "--mode probe", "")
    result, _ = run_client(target, run, probe, ("--mode", "probe"))
    if result.get("status") != 200:
        return Measure(note=f"n/a (proxy answered {result.get('status', result.get('error'))})")
    pids = [*target.pids, run.backend.proc.pid]
    t0, c0 = time.monotonic(), [cpu_seconds([pid]) for pid in pids]
    proc = subprocess.Popen(
        ["h2load", *args, f"{target.h2c_url}/"], stdout=subprocess.PIPE, text=True
    )
    killer = threading.Timer(CLIENT_TIMEOUT_S, proc.kill)
    killer.start()
    try:
        assert proc.stdout is not None
        output = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        killer.cancel()
    wall = time.monotonic() - t0
    c1 = [cpu_seconds([pid]) for pid in pids]
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", output)
    # In a timed run a response may land after the clock stopped: counted as a 2xx, not as
    # "succeeded". So: no failure of any kind, and nothing but 2xx.
    clean = re.search(r"\d+ succeeded, 0 failed, 0 errored, 0 timeout", output)
    codes = re.search(r"status codes: \d+ 2xx, 0 3xx, 0 4xx, 0 5xx", output)
    if not (rate and clean and codes):
        raise MeasureError(f"h2load via {target.name} failed:\n{output}")
    cores = {
        "client": (usage.ru_utime + usage.ru_stime) / wall,
        "backend": (c1[-1] - c0[-1]) / wall,
    }
    if target.pids:
        proxy_pids = len(target.pids)  # the supervisor and its workers, if any
        cores["proxy"] = (sum(c1[:proxy_pids]) - sum(c0[:proxy_pids])) / wall
    return Measure(float(rate.group(1)), cores=cores)


MEASURES = {"load": measure_load, "idle": measure_idle, "get": measure_get}


def tunnels_per_connection(args: tuple[str, ...]) -> int:
    """How many tunnels each connection of an echo or idle run holds open at once (0 for
    the other modes: ``open`` tunnels come and go, ``probe`` opens none)."""
    options = dict(zip(args[::2], args[1::2], strict=False))
    if options.get("--mode") not in ("echo", "idle"):
        return 0
    tunnels, connections = int(options.get("--tunnels", 1)), int(options.get("--connections", 1))
    return -(-tunnels // connections)


@dataclass
class TunnelCapacity:
    """Whether one of a proxy's connections carries N tunnels at once, learnt with a short
    probe (N tunnels on one connection, one echo each) the first time N is asked about."""

    target: Target
    run: Run
    held: int = 1  # the most tunnels seen open on one connection
    failed: int | None = None  # the fewest that did not all open

    def check(self, count: int) -> str:
        """An empty string when ``count`` tunnels per connection work, else the table's
        "n/a (...)" cell."""
        if count > self.held and (self.failed is None or count < self.failed):
            self._probe(count)
        if self.failed is None or count < self.failed:
            return ""
        seconds = PROBE_TIMEOUT_MS / 1000
        if count == self.failed:
            return f"n/a ({count} tunnels on one conn do not all open in {seconds:g} s)"
        return f"n/a ({count} tunnels/conn: {self.failed} already do not all open in {seconds:g} s)"

    def _probe(self, count: int) -> None:
        args = ("--mode", "echo", "--tunnels", str(count), "--messages", str(count))
        probe = Scenario("probe", "", "load", "", "", "")
        timing = ("--seconds", "0.1", "--timeout-ms", str(PROBE_TIMEOUT_MS))
        result, _ = run_client(self.target, self.run, probe, args + timing)
        # Only the tunnels' CONNECTs waiting unanswered is a matter of capacity; any other
        # failure (an error status, a reset) is left for the scenario itself to report.
        if result.get("error") == "opening tunnels: timeout":
            self.failed = count
            print(
                f"NOTE: {count} tunnels on one connection via {self.target.name} did not all "
                f"open within {PROBE_TIMEOUT_MS} ms; scenarios with as many are n/a for it",
                file=sys.stderr,
            )
        else:
            self.held = count


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def median_of(runs: list[Measure]) -> tuple[float | None, str]:
    values = [m.value for m in runs if m.value is not None]
    if values:
        return statistics.median(values), ""
    return None, runs[0].note if runs else ""


def print_tables(
    results: dict[str, dict[str, list[Measure]]], proxies: list[str], rounds: int
) -> None:
    names = [LABELS[p] for p in proxies]
    rivals = [p for p in RIVALS if p in proxies] if "h2ws" in proxies else []
    ratios = [f"ours / {SHORT[p]}" for p in rivals]
    print(f"\n| scenario | unit | {' | '.join(names + ratios)} |")
    print(f"|---|---|{'---|' * (len(names) + len(ratios))}")
    for scenario in SCENARIOS:
        if scenario.key not in results:
            continue
        medians = {p: median_of(results[scenario.key][p]) for p in proxies}
        cells = [fmt(v) if v is not None else (note or "-") for v, note in medians.values()]
        cells += [_ratio(medians["h2ws"][0], medians[p][0]) for p in rivals]
        print(f"| {scenario.title} | {scenario.unit} | {' | '.join(cells)} |")
    print(
        f"\nMedians of {rounds} round(s). CPU in cores over the measured interval (medians), "
        "proxy / client / backend; then the work done per second of proxy CPU (medians of "
        "each run's rate / proxy cores), which other load on the machine distorts less:\n"
    )
    proxied = [p for p in proxies if p != "direct"]
    per_cpu = [f"{LABELS[p]} per CPU-s" for p in proxied]
    extra = per_cpu + [f"{ratio} per CPU-s" for ratio in ratios]
    print(f"| scenario | {' | '.join(names + extra)} |")
    print(f"|---|{'---|' * (len(names) + len(extra))}")
    for scenario in SCENARIOS:
        if scenario.key not in results or scenario.kind == "idle":
            continue
        cells = [_cores_cell(results[scenario.key][p]) for p in proxies]
        efficiency = {p: _per_proxy_cpu_s(results[scenario.key][p]) for p in proxied}
        cells += [fmt(efficiency[p]) for p in proxied]
        cells += [_ratio(efficiency["h2ws"], efficiency[p]) for p in rivals]
        print(f"| {scenario.title} | {' | '.join(cells)} |")


def _ratio(ours: float | None, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}x" if ours and theirs else "-"


def _cores_cell(runs: list[Measure]) -> str:
    runs = [m for m in runs if m.cores]
    parts = [
        statistics.median(m.cores[k] for m in runs) if runs and k in runs[0].cores else None
        for k in ("proxy", "client", "backend")
    ]
    return " / ".join("-" if v is None else f"{v:.2f}" for v in parts)


def _per_proxy_cpu_s(runs: list[Measure]) -> float | None:
    rates = [m.value / m.cores["proxy"] for m in runs if m.value and m.cores.get("proxy")]
    return statistics.median(rates) if rates else None


def check_tools(proxies: list[str], scenarios: list[Scenario]) -> list[str]:
    ci = os.environ.get("CI") == "true"
    needed = {"haproxy": "haproxy"} if {"haproxy", "haproxy1"} & set(proxies) else {}
    if "apache" in proxies:
        needed["apache2"] = "apache2"
    if "nghttpx" in proxies:
        needed["nghttpx"] = "nghttp2-proxy"
    if any(s.kind == "get" for s in scenarios):
        needed["h2load"] = "nghttp2-client"
    for tool, package in needed.items():
        found = _sbin(tool)
        if found is None:
            if ci:
                raise SystemExit(f"CI: {tool} is not installed (apt-get install {package})")
            print(
                f"NOTE: {tool} not installed (apt-get install {package}); skipping it",
                file=sys.stderr,
            )
            skipped = {"haproxy": ("haproxy", "haproxy1"), "apache2": ("apache",)}
            skipped["nghttpx"] = ("nghttpx",)
            proxies = [p for p in proxies if p not in skipped.get(tool, ())]
    versions = {
        "haproxy": ["haproxy", "-v"],
        "haproxy1": ["haproxy", "-v"],
        "nghttpx": [_sbin("nghttpx") or "", "--version"],
        "apache": [apache_binary() or "", "-v"],
    }
    for command in {tuple(versions[p]) for p in proxies if p in versions}:
        version = subprocess.run(command, capture_output=True, text=True, check=False)
        print(f"# {(version.stdout or version.stderr).splitlines()[0]}")
    return proxies


def print_interpreter(python: str) -> None:
    """The header's line on the interpreter h2ws-proxy runs on: its version, its path, and
    whether it loads ``libpython`` as a shared library (pyenv's default build does; Debian's
    ``python3`` is linked statically and built with PGO and LTO)."""
    probe = subprocess.run(
        [python, "-c", "import platform, sys; print(platform.python_version(), sys.executable)"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        raise SystemExit(f"--h2ws-python {python} does not run: {probe.stderr.strip()}")
    version, executable = probe.stdout.split(maxsplit=1)
    real = os.path.realpath(executable.strip())
    linked = subprocess.run(["ldd", real], capture_output=True, text=True, check=False).stdout
    shared = "libpython" in linked
    print(
        f"# h2ws-proxy on Python {version} ({executable.strip()} -> {real}; "
        f"libpython {'shared' if shared else 'linked in'})"
    )


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(
        f"# RLIMIT_NOFILE {hard}; {os.cpu_count()} CPUs; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny counts, one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--only", help="comma-separated scenario keys: " + ",".join(s.key for s in SCENARIOS)
    )
    parser.add_argument("--proxies", default=",".join(PROXIES))
    parser.add_argument(
        "--proxy-log-level",
        default="warning",
        help="h2ws-proxy --log-level, and Apache's LogLevel (HAProxy logs nothing here)",
    )
    parser.add_argument(
        "--h2ws-workers",
        type=int,
        default=1,
        help="h2ws-proxy's `workers` (HAProxy runs its default threads, one per CPU; "
        "HAProxy 1T one thread; nghttpx one worker)",
    )
    parser.add_argument(
        "--h2ws-python",
        metavar="PATH",
        default=sys.executable,
        help="the interpreter h2ws-proxy runs on (default: this one; see the module docstring)",
    )
    parser.add_argument(
        "--py-spy", metavar="FILE", help="record a py-spy profile (raw folded stacks) of h2ws-proxy"
    )
    return parser.parse_args()


def main() -> None:
    options = parse_args()
    started = time.monotonic()
    keys = options.only.split(",") if options.only else [s.key for s in SCENARIOS]
    unknown = set(keys) - {s.key for s in SCENARIOS}
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    scenarios = [s for s in SCENARIOS if s.key in keys]
    proxies = [p for p in options.proxies.split(",") if p]
    if set(proxies) - set(PROXIES):
        raise SystemExit(f"--proxies takes {','.join(PROXIES)}")
    raise_nofile()
    proxies = check_tools(proxies, scenarios)
    if "h2ws" in proxies:
        print_interpreter(options.h2ws_python)
    rounds = 1 if options.smoke else options.rounds
    failures = 0
    results: dict[str, dict[str, list[Measure]]] = {
        s.key: {p: [] for p in proxies} for s in scenarios
    }
    with tempfile.TemporaryDirectory(prefix="h2ws-compare-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        certs = Certs.make(work)
        backend = stack.enter_context(start_backend(certs))
        run = Run(backend, certs, settle_s=0.05 if options.smoke else 0.5)
        targets = {
            p: stack.enter_context(
                start_target(
                    p,
                    backend,
                    certs,
                    work,
                    options.proxy_log_level,
                    options.h2ws_workers,
                    options.h2ws_python,
                )
            )
            for p in proxies
        }
        capacity = {p: TunnelCapacity(target, run) for p, target in targets.items()}
        if options.py_spy and "h2ws" in targets:
            stack.enter_context(py_spy(targets["h2ws"].pids[0], options.py_spy))
        for round_no in range(rounds):
            order = proxies[round_no % len(proxies) :] + proxies[: round_no % len(proxies)]
            for scenario in scenarios:
                args = tuple((scenario.smoke if options.smoke else scenario.full).split())
                for name in order:
                    measure = MEASURES[scenario.kind]
                    unfit = capacity[name].check(tunnels_per_connection(args))
                    try:
                        if unfit:
                            got = Measure(note=unfit)
                        elif scenario.h2_backend and name == "apache":
                            # mod_proxy_http2 does not relay extended CONNECT (RFC 8441).
                            got = Measure(note="n/a")
                        elif scenario.h2_backend and name == "nghttpx" and "open" in args:
                            got = Measure(note=NGHTTPX_H2_BACKEND_OPEN)
                        elif scenario.kind == "idle" or (scenario.h2_backend and name == "nghttpx"):
                            # A fresh proxy: RSS starts from nothing; nghttpx's HTTP/2
                            # backend connection starts with no stream left open.
                            with start_target(
                                name,
                                backend,
                                certs,
                                work,
                                options.proxy_log_level,
                                options.h2ws_workers,
                            ) as fresh:
                                got = measure(fresh, run, scenario, args)
                        else:
                            got = measure(targets[name], run, scenario, args)
                    except MeasureError as error:
                        print(f"ERROR: {error}", file=sys.stderr)
                        failures += 1
                        got = Measure(note="error (see stderr)")
                    results[scenario.key][name].append(got)
                    print(
                        f"round {round_no + 1} {scenario.key:12} {name:8} "
                        f"{fmt(got.value) if got.value is not None else got.note} "
                        f"{scenario.unit} (load {os.getloadavg()[0]:.1f})",
                        file=sys.stderr,
                        flush=True,
                    )
    print_tables(results, proxies, rounds)
    print(
        f"\nwall time {time.monotonic() - started:.0f} s; load average now "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    if failures:
        raise SystemExit(f"{failures} run(s) failed")


@contextmanager
def py_spy(pid: int, output: str) -> Iterator[None]:
    proc = subprocess.Popen(
        [
            "py-spy",
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--rate",
            "200",
            "--output",
            output,
            "--nonblocking",
            # Samples where the proxy holds the GIL: its Python work, not its waits.
            "--gil",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
