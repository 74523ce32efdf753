"""Soak h2ws-proxy: open and close tens of thousands of tunnels, faults mixed in, and check
that the proxy's file descriptors, trio tasks and memory return to their baseline.

Not a unit test: a bounded run against the real proxy process. The pieces, all on 127.0.0.1:

* the proxy, started as its own process (``python -m h2ws_proxy --config FILE``) with an
  ``[admin]`` port whose ``GET /stats`` gives connections, tunnels, tasks and unexpected
  errors; its fds come from ``/proc/PID/fd`` and its RSS from ``/proc/PID/status``;
* the Node ``ws`` echo backend from ``tests/node`` (its own process);
* a port that refuses connections (bound, never listening) and a backend that accepts and
  never answers (served by this script), for the 502 and 504 faults;
* this script's trio clients: ``--workers`` HTTP/2 connections (the test client from
  ``tests/helpers/h2_client.py``, on the real ``h2`` library), each opening tunnels one after
  another and reconnecting every ``--per-connection`` tunnels (GOAWAY, then close) or after
  an abort, plus HTTP/1.1 upgrades on raw sockets (``wsproto`` for the handshake and frames).

Tunnel kinds, picked at random (``--seed``; the fault mix is seeded, the interleaving of the
workers is not): clean echo tunnels on HTTP/2 and HTTP/1.1, and the faults: client
RST_STREAM mid-tunnel, RST_STREAM right after HEADERS (before the 200), an abrupt TCP close
(FIN or RST) of a whole HTTP/2 connection with tunnels open or opening, an HTTP/1.1 tunnel
cut with a TCP RST, a refused backend (502), a backend that never answers (504 after
``handshake_timeout_s``), a backend that refuses the upgrade (403 relayed), a malformed
request (``:path`` without '/': 400 and RST_STREAM PROTOCOL_ERROR), and a path with no route
(404). Every result is checked; anything else (a wrong status, an unexpected reset, an
exception we did not cause, a timeout) counts as an error. The proxy's log is read too:
tracebacks fail the run; its per-tunnel lines are tallied and cross-checked (NOTE lines).

Phases: a warm-up (``--warmup`` tunnels, so lazily allocated things exist), all clients
closed, wait until ``/stats`` shows no connection and no tunnel, *baseline*; then the soak
(``--tunnels``), all clients closed, the same wait (at most 15 s), *end*. It fails (exit 1)
if fds or tasks are not back to baseline (within ±2), RSS grew more than
max(20 %, 10 MiB), unexpected_errors > 0, a connection or tunnel is still open at the end,
or any client-side check failed. A shared host sometimes stops scheduling every process for
seconds; such stalls are detected (see :func:`stall_watch`) and the errors of operations
caught in one are reported apart, without failing the run. Bounded: each phase stops taking
tunnels after ``--max-seconds``, each operation has 15 s, and the whole run a hard limit.

    .venv/bin/python bench/soak.py            # 20,000 tunnels after a 500-tunnel warm-up
    .venv/bin/python bench/soak.py --quick    # 1,000 tunnels, a few seconds
    .venv/bin/python bench/soak.py --proxy-log /tmp/proxy.log   # keep the proxy's log
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import queue
import random
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

REPO = Path(__file__).resolve().parent.parent
NODE_DIR = REPO / "tests" / "node"
sys.path.insert(0, str(REPO))

from tests.helpers.h2_client import H2TestClient, StreamState, open_h2_client  # noqa: E402

HOST = "127.0.0.1"
#: A single client operation (one tunnel, or one aborted connection) must finish in this.
OP_TIMEOUT_S = 15.0
#: After the clients are gone, how long the proxy gets to show 0 connections and 0 tunnels.
QUIESCE_TIMEOUT_S = 15.0
#: The proxy's handshake_timeout_s in the soak config: the "backend never answers" fault.
HANDSHAKE_TIMEOUT_S = 1.0
#: The driver's own event loop not running for this long is a stall of the host (this
#: script never blocks that long): see :func:`stall_watch`.
STALL_THRESHOLD_S = 1.0
#: Errors of operations that overlapped a host stall, or ended within this after it, are
#: put down to the stall (the proxy was frozen too and then fired its timers late).
STALL_GRACE_S = 2.0
FD_TOLERANCE = 2
TASK_TOLERANCE = 2
RSS_TOLERANCE_FRACTION = 0.20
RSS_TOLERANCE_KIB = 10 * 1024
CANCEL = 0x8
PROTOCOL_ERROR = 0x1

# kind -> weight. h1_* kinds use their own HTTP/1.1 connection; the rest share the worker's
# HTTP/2 connection.
KINDS: dict[str, int] = {
    "h2_clean": 50,
    "h2_rst_mid_tunnel": 7,
    "h2_rst_before_200": 6,
    "h2_abort_connection": 3,
    "h2_backend_refused_502": 4,
    "h2_backend_silent_504": 1,
    "h2_backend_rejects_403": 3,
    "h2_malformed_400": 4,
    "h2_no_route_404": 4,
    "h1_clean": 10,
    "h1_abort_tcp_rst": 3,
    "h1_backend_refused_502": 2,
    "h1_no_route_404": 3,
}


class Unexpected(Exception):
    """A result the proxy should not have produced."""


# ---- the processes: backend, proxy and its log -------------------------------------------


def start_backend() -> tuple[subprocess.Popen[str], int]:
    backend = subprocess.Popen(
        ["node", str(NODE_DIR / "ws_echo_backend.mjs"), "--port", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert backend.stdout is not None
    line = backend.stdout.readline()
    if not line:
        raise SystemExit("the Node backend did not start (npm --prefix tests/node ci?)")
    return backend, int(json.loads(line)["port"])


_TUNNEL_FIELDS = re.compile(r" (front|path|status|end)=(\S+)")


class ProxyLog:
    """Drains the proxy's stderr in a thread: finds the listening line, counts levels."""

    def __init__(self, stream: object, copy_to: Path | None) -> None:
        self._stream = stream
        self._copy = copy_to.open("w") if copy_to else None
        self.addresses: queue.Queue[tuple[int, int]] = queue.Queue()
        self.lines = 0
        self.levels: collections.Counter[str] = collections.Counter()
        self.tracebacks = 0
        #: Event names, and (front, path, status, end) of every tunnel.closed/refused line.
        self.events: collections.Counter[str] = collections.Counter()
        self.tunnel_ends: collections.Counter[tuple[str, ...]] = collections.Counter()
        self.problems: list[str] = []
        self.tail: collections.deque[str] = collections.deque(maxlen=50)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def finish(self) -> None:
        """After the proxy exited: wait (bounded) until every line has been counted."""
        self._thread.join(timeout=10)

    def _run(self) -> None:
        pattern = re.compile(
            r"server\.listening listeners=127\.0\.0\.1:(\d+) admin=127\.0\.0\.1:(\d+)"
        )
        for line in self._stream:  # type: ignore[attr-defined]
            self.lines += 1
            if self._copy is not None:
                self._copy.write(line)
                self._copy.flush()
            self.tail.append(line.rstrip())
            if match := pattern.search(line):
                self.addresses.put((int(match.group(1)), int(match.group(2))))
            parts = line.rstrip().split(" ", 2)
            if len(parts) >= 2 and parts[1] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
                self.levels[parts[1]] += 1
                event = parts[2].split(" ", 1)[0] if len(parts) == 3 else ""
                self.events[event] += 1
                if event.startswith("tunnel."):
                    fields = dict(_TUNNEL_FIELDS.findall(line))
                    key = (
                        fields.get("front", "?"),
                        fields.get("path", "?"),
                        fields.get("status", "?"),
                        fields.get("end", "?"),
                    )
                    self.tunnel_ends[key] += 1
                if parts[1] in ("WARNING", "ERROR", "CRITICAL") and len(self.problems) < 20:
                    self.problems.append(line.rstrip())
            if line.startswith("Traceback"):
                self.tracebacks += 1
        if self._copy is not None:
            self._copy.close()


def start_proxy(
    config_dir: Path,
    backend_port: int,
    refused_port: int,
    silent_port: int,
    log_copy: Path | None = None,
) -> tuple[subprocess.Popen[str], ProxyLog, int, int]:
    config = config_dir / "soak.toml"
    echo = f"http://{HOST}:{backend_port}"
    config.write_text(
        f'[[listener]]\nbind = "{HOST}:0"\n\n'
        # No "/" route: any other path is a 404.
        f'[[route]]\npath = "/echo"\nbackend = "{echo}"\n\n'
        f'[[route]]\npath = "/__status"\nbackend = "{echo}"\n\n'
        f'[[route]]\npath = "/refused"\nbackend = "http://{HOST}:{refused_port}"\n\n'
        f'[[route]]\npath = "/silent"\nbackend = "http://{HOST}:{silent_port}"\n\n'
        f'[admin]\nbind = "{HOST}:0"\n\n'
        f"[limits]\nhandshake_timeout_s = {HANDSHAKE_TIMEOUT_S}\nconnect_timeout_s = 2.0\n"
    )
    proxy = subprocess.Popen(
        [sys.executable, "-m", "h2ws_proxy", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    log = ProxyLog(proxy.stderr, log_copy)
    try:
        port, admin_port = log.addresses.get(timeout=30)
    except queue.Empty:
        proxy.kill()
        tail = "\n".join(log.tail)
        raise SystemExit(f"the proxy did not report listening within 30 s:\n{tail}") from None
    return proxy, log, port, admin_port


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


# ---- measuring the proxy ---------------------------------------------------------------


@dataclass
class Snapshot:
    fds: int
    rss_kib: int
    tasks: int
    connections: int
    tunnels: int
    unexpected_errors: int


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def admin_stats(admin_port: int) -> dict[str, int]:
    """GET /stats; a few tries, as the host may stall for a while (see stall_watch)."""
    for attempt in range(3):
        try:
            return await _admin_stats_once(admin_port)
        except (OSError, trio.TooSlowError):
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def _admin_stats_once(admin_port: int) -> dict[str, int]:
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream(HOST, admin_port)
        try:
            await stream.send_all(b"GET /stats HTTP/1.1\r\nhost: soak\r\nconnection: close\r\n\r\n")
            response = b""
            while len(response) < 65536 and (data := await stream.receive_some(4096)):
                response += data
        finally:
            await trio.aclose_forcefully(stream)
    head, _, body = response.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"/stats answered {head[:60]!r}")
    stats: dict[str, int] = json.loads(body)
    return stats


async def snapshot(pid: int, admin_port: int) -> Snapshot:
    stats = await admin_stats(admin_port)
    return Snapshot(
        fds=proc_fds(pid),
        rss_kib=proc_rss_kib(pid),
        tasks=stats["tasks"],
        connections=stats["connections"],
        tunnels=stats["tunnels"],
        unexpected_errors=stats["unexpected_errors"],
    )


async def quiesce(pid: int, admin_port: int) -> tuple[Snapshot, float]:
    """Wait (bounded) until the proxy has no connection and no tunnel; then measure."""
    start = trio.current_time()
    deadline = start + QUIESCE_TIMEOUT_S
    next_note = start + 1.0
    while True:
        stats = await admin_stats(admin_port)
        if stats["connections"] == 0 and stats["tunnels"] == 0:
            break
        now = trio.current_time()
        if now >= deadline:
            break
        if now >= next_note:
            print(f"  waiting for the proxy to go idle: {stats}", file=sys.stderr, flush=True)
            next_note = now + 1.0
        await trio.sleep(0.1)
    waited = trio.current_time() - start
    # The connection counter drops just before the socket is closed: let that happen.
    await trio.sleep(0.5)
    return await snapshot(pid, admin_port), waited


# ---- the run's shared state ----------------------------------------------------------------


@dataclass
class ErrorRecord:
    kind: str
    message: str
    started: float
    ended: float


@dataclass
class Run:
    port: int
    seed: int
    per_connection: int
    target: int = 0
    deadline: float = 0.0
    started: int = 0
    ops: collections.Counter[str] = field(default_factory=collections.Counter)
    ok: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: list[ErrorRecord] = field(default_factory=list)
    #: (start, end) of every stall of this process's event loop (trio clock).
    stalls: list[tuple[float, float]] = field(default_factory=list)
    connections_opened: int = 0
    timed_out: bool = False

    def take(self, tunnels: int) -> bool:
        """Claim ``tunnels`` of the phase's budget; False when the phase is over."""
        if self.started >= self.target:
            return False
        if trio.current_time() >= self.deadline:
            self.timed_out = True
            return False
        self.started += tunnels
        return True

    def more(self) -> bool:
        """Budget and time left in this phase."""
        return self.started < self.target and trio.current_time() < self.deadline

    def error(self, kind: str, message: str, started: float) -> None:
        self.errors.append(ErrorRecord(kind, message, started, trio.current_time()))

    def during_stall(self, error: ErrorRecord) -> bool:
        return any(
            start < error.ended and error.started < end + STALL_GRACE_S
            for start, end in self.stalls
        )


def describe(error: BaseException) -> str:
    if isinstance(error, BaseExceptionGroup):
        return " | ".join(describe(e) for e in error.exceptions)
    return f"{type(error).__name__}: {error}"[:300]


# ---- HTTP/2 tunnels ----------------------------------------------------------------------


def connect_headers(path: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"CONNECT"),
        (b":protocol", b"websocket"),
        (b":scheme", b"http"),
        (b":path", path),
        (b":authority", b"proxy.test"),
        (b"sec-websocket-version", b"13"),
    ]


def message(rng: random.Random) -> bytes | str:
    size = rng.choice((1, 16, 125, 126, 1000, 4096, 20000))
    if rng.random() < 0.5:
        return "".join(rng.choice("abcdefghij ✓") for _ in range(size))
    return rng.randbytes(size)


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise Unexpected(what)


async def h2_clean(client: H2TestClient, rng: random.Random) -> None:
    ws = await client.websocket("/echo/clean")
    expect(ws.status == 200, f"status {ws.status} (reset {ws.state.reset_code})")
    for _ in range(rng.randint(1, 2)):
        sent = message(rng)
        await ws.send(sent)
        echoed = await ws.receive()
        expect(echoed == sent, "echo differs")
    code, reset = await ws.close()
    expect(code == 1000, f"close code {code}")
    expect(reset is None, f"stream reset {reset} after a clean close")


async def h2_rst_mid_tunnel(client: H2TestClient, rng: random.Random) -> None:
    ws = await client.websocket("/echo/rst-mid")
    expect(ws.status == 200, f"status {ws.status}")
    await ws.send(message(rng))
    if rng.random() < 0.5:
        await ws.receive()  # else the echo is still in flight when we reset
    await client.reset(ws.state, CANCEL)


async def h2_rst_before_200(client: H2TestClient, rng: random.Random) -> None:
    state = await client.request(connect_headers(b"/echo/rst-early"))
    if rng.random() < 0.5:
        await trio.sleep(rng.random() * 0.003)  # sometimes during the backend dial
    await client.reset(state, CANCEL)


async def _refused(client: H2TestClient, path: bytes, status: int) -> StreamState:
    """A request the proxy answers with ``status``; we end our side politely.

    RFC 9113 §8.1: the answer ends the proxy's side, the client ends its own with an empty
    END_STREAM. That must not draw a reset: a PING round trip after it proves none came.
    """
    state = await client.request(connect_headers(path))
    await client.response(state)
    expect(state.status == status, f"status {state.status} (reset {state.reset_code})")
    await client.finished(state)
    expect(state.reset_code is None, f"reset {state.reset_code} with the {status}")
    await client.end_stream(state)
    await client.ping()
    expect(
        state.reset_code is None,
        f"RST_STREAM code {state.reset_code} in answer to our END_STREAM after the {status}",
    )
    return state


async def h2_backend_refused_502(client: H2TestClient, rng: random.Random) -> None:
    await _refused(client, b"/refused/x", 502)


async def h2_backend_silent_504(client: H2TestClient, rng: random.Random) -> None:
    await _refused(client, b"/silent/x", 504)


async def h2_backend_rejects_403(client: H2TestClient, rng: random.Random) -> None:
    state = await _refused(client, b"/__status/403", 403)
    expect(b"backend status 403" in state.data, f"body {bytes(state.data)[:80]!r}")


async def h2_no_route_404(client: H2TestClient, rng: random.Random) -> None:
    await _refused(client, b"/nowhere/x", 404)


async def h2_malformed_400(client: H2TestClient, rng: random.Random) -> None:
    state = await client.request(connect_headers(b"echo-without-slash"))
    await client.wait_for(lambda: state.reset_code is not None)
    expect(state.status == 400, f"status {state.status}")
    expect(state.reset_code == PROTOCOL_ERROR, f"reset code {state.reset_code}")


async def h2_abort_connection(client: H2TestClient, rng: random.Random, tunnels: int) -> None:
    """Open ``tunnels`` (some still opening), then drop the TCP connection (FIN or RST)."""
    for _ in range(tunnels):
        if rng.random() < 0.7:
            ws = await client.websocket("/echo/abort")
            expect(ws.status == 200, f"status {ws.status}")
            await ws.send(message(rng))
        else:
            path = b"/silent/abort" if rng.random() < 0.2 else b"/echo/abort-opening"
            await client.request(connect_headers(path))
    if rng.random() < 0.5:
        await trio.sleep(rng.random() * 0.003)
    abort_socket(client.stream, rst=rng.random() < 0.5)
    await trio.aclose_forcefully(client.stream)


def abort_socket(stream: trio.abc.Stream, *, rst: bool) -> None:
    if rst and isinstance(stream, trio.SocketStream):
        # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


H2Op = Callable[[H2TestClient, random.Random], Awaitable[None]]
H2_OPS: dict[str, H2Op] = {
    "h2_clean": h2_clean,
    "h2_rst_mid_tunnel": h2_rst_mid_tunnel,
    "h2_rst_before_200": h2_rst_before_200,
    "h2_backend_refused_502": h2_backend_refused_502,
    "h2_backend_silent_504": h2_backend_silent_504,
    "h2_backend_rejects_403": h2_backend_rejects_403,
    "h2_malformed_400": h2_malformed_400,
    "h2_no_route_404": h2_no_route_404,
}


# ---- HTTP/1.1 tunnels ---------------------------------------------------------------------


class H1Client:
    """A WebSocket client over one raw TCP connection: wsproto does the handshake/frames."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self._pending: collections.deque[Event] = collections.deque()

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def next_event(self) -> Event:
        while not self._pending:
            data = await self.stream.receive_some(65536)
            if not data:
                raise Unexpected("EOF from the proxy mid-exchange")
            self.ws.receive_data(bytes(data))
            self._pending.extend(self.ws.events())
        return self._pending.popleft()

    async def receive_message(self) -> bytes | str:
        parts: list[bytes | str] = []
        while True:
            event = await self.next_event()
            if not isinstance(event, Message):
                raise Unexpected(f"{type(event).__name__} instead of a message")
            parts.append(event.data)
            if event.message_finished:
                if isinstance(event, TextMessage):
                    return "".join(str(p) for p in parts)
                return b"".join(bytes(p) for p in parts)  # type: ignore[arg-type]

    async def rejection(self) -> tuple[int, bytes]:
        """The proxy's non-101 answer: (status, body)."""
        event = await self.next_event()
        if not isinstance(event, RejectConnection):
            raise Unexpected(f"{type(event).__name__} instead of a rejection")
        status, body, finished = event.status_code, b"", not event.has_body
        while not finished:
            data = await self.next_event()
            if not isinstance(data, RejectData):
                raise Unexpected(f"{type(data).__name__} in a rejection body")
            body += data.data
            finished = data.body_finished
        return status, body


async def h1_connect(run: Run, path: str) -> H1Client:
    stream = await trio.open_tcp_stream(HOST, run.port)
    client = H1Client(stream)
    await client.send(Request(host="proxy.test", target=path))
    return client


async def h1_clean(run: Run, rng: random.Random) -> None:
    client = await h1_connect(run, "/echo/h1")
    try:
        event = await client.next_event()
        expect(isinstance(event, AcceptConnection), f"{event!r} instead of 101")
        sent = message(rng)
        await client.send(
            TextMessage(data=sent) if isinstance(sent, str) else BytesMessage(data=sent)
        )
        expect(await client.receive_message() == sent, "echo differs")
        await client.send(CloseConnection(code=1000))
        event = await client.next_event()
        expect(isinstance(event, CloseConnection), f"{event!r} instead of a Close")
        expect(event.code == 1000, f"close code {event.code}")  # type: ignore[attr-defined]
        # The backend closes TCP first (RFC 6455 §7.1.1); the proxy passes that on.
        while await client.stream.receive_some(65536):
            pass
    finally:
        await trio.aclose_forcefully(client.stream)


async def h1_abort_tcp_rst(run: Run, rng: random.Random) -> None:
    client = await h1_connect(run, "/echo/h1-abort")
    try:
        event = await client.next_event()
        expect(isinstance(event, AcceptConnection), f"{event!r} instead of 101")
        await client.send(BytesMessage(data=rng.randbytes(rng.choice((10, 5000)))))
        if rng.random() < 0.5:
            await client.receive_message()
        abort_socket(client.stream, rst=True)
    finally:
        await trio.aclose_forcefully(client.stream)


async def _h1_refused(run: Run, path: str, status: int) -> None:
    client = await h1_connect(run, path)
    try:
        got, _ = await client.rejection()
        expect(got == status, f"status {got}")
    finally:
        await trio.aclose_forcefully(client.stream)


async def h1_backend_refused_502(run: Run, rng: random.Random) -> None:
    await _h1_refused(run, "/refused/h1", 502)


async def h1_no_route_404(run: Run, rng: random.Random) -> None:
    await _h1_refused(run, "/nowhere/h1", 404)


H1Op = Callable[[Run, random.Random], Awaitable[None]]
H1_OPS: dict[str, H1Op] = {
    "h1_clean": h1_clean,
    "h1_abort_tcp_rst": h1_abort_tcp_rst,
    "h1_backend_refused_502": h1_backend_refused_502,
    "h1_no_route_404": h1_no_route_404,
}


# ---- workers ---------------------------------------------------------------------------


def pick(rng: random.Random) -> str:
    return rng.choices(list(KINDS), weights=list(KINDS.values()))[0]


async def worker(run: Run, rng: random.Random) -> None:
    """Connections one after another until the phase's budget is spent."""
    for _ in range(run.target + 1):  # each connection takes at least one tunnel
        if not await h2_connection(run, rng):
            return


async def h2_connection(run: Run, rng: random.Random) -> bool:
    """One HTTP/2 connection for up to ``per_connection`` tunnels; False when done."""
    connection_started = trio.current_time()
    try:
        with trio.fail_after(OP_TIMEOUT_S):
            stream = await trio.open_tcp_stream(HOST, run.port)
    except (OSError, trio.TooSlowError) as error:
        run.error("h2_connect", describe(error), connection_started)
        await trio.sleep(0.1)
        return run.more()
    run.connections_opened += 1
    more = True
    try:
        async with open_h2_client(stream) as client:
            for _ in range(run.per_connection):
                kind = pick(rng)
                tunnels = rng.randint(1, 3) if kind == "h2_abort_connection" else 1
                if not run.take(tunnels):
                    more = False
                    break
                run.ops[kind] += 1
                op_started = trio.current_time()
                try:
                    with trio.fail_after(OP_TIMEOUT_S):
                        if kind in H1_OPS:
                            await H1_OPS[kind](run, rng)
                        elif kind == "h2_abort_connection":
                            await h2_abort_connection(client, rng, tunnels)
                        else:
                            await H2_OPS[kind](client, rng)
                except Exception as error:
                    run.error(kind, describe(error), op_started)
                    break  # the connection's state is unknown: start a new one
                else:
                    run.ok[kind] += 1
                finally:
                    client.streams.clear()  # finished streams: forget them
                if kind == "h2_abort_connection":
                    break
                if client.closed.is_set() or client.terminated is not None:
                    run.error(
                        kind,
                        f"connection lost after the tunnel ({client.terminated})",
                        op_started,
                    )
                    break
            else:
                # GOAWAY(NO_ERROR), then close. The h2 library takes any frame that arrives
                # after its GOAWAY as a connection error, and the proxy may still have frames
                # in flight for a stream we just reset: a PING round trip lets them land.
                op_started = trio.current_time()
                try:
                    with trio.fail_after(OP_TIMEOUT_S):
                        await client.ping()
                        client.conn.close_connection()
                        await client.flush()
                except Exception as error:
                    run.error("h2_goaway", describe(error), op_started)
    except Exception as error:
        run.error("h2_connection", describe(error), connection_started)
    return more and run.more()


async def run_phase(run: Run, workers: int, tunnels: int, max_seconds: float) -> float:
    run.target = run.started + tunnels
    run.deadline = trio.current_time() + max_seconds
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for index in range(workers):
            rng = random.Random(f"{run.seed}/{run.target}/{index}")
            nursery.start_soon(worker, run, rng)
    return trio.current_time() - start


# ---- the silent backend and the monitor --------------------------------------------------


async def silent_backend(listener: trio.SocketListener) -> None:
    """Accepts, reads, never answers; closes when the proxy does (or after 30 s)."""

    async def handle(stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(30):
                while await stream.receive_some(65536):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    await trio.serve_listeners(handle, [listener])


async def stall_watch(run: Run, limit_s: float) -> None:
    """Records when this process's event loop did not run for ``STALL_THRESHOLD_S``.

    Nothing in this script blocks its loop that long, so such a gap means the whole host
    (or VM) stopped scheduling us; on a shared CI machine that happens. The proxy stops
    too, and its timers (the 1 s backend handshake timeout) then fire late, so errors of
    operations that overlap a stall are reported apart from the others.
    """
    last = trio.current_time()
    for _ in range(int(limit_s / 0.05) + 1):
        await trio.sleep(0.05)
        now = trio.current_time()
        if now - last - 0.05 >= STALL_THRESHOLD_S:
            run.stalls.append((last, now))
            print(f"  host stall: this process did not run for {now - last:.1f} s", file=sys.stderr)
        last = now


@dataclass
class Peaks:
    fds: int = 0
    rss_kib: int = 0
    tasks: int = 0
    connections: int = 0
    tunnels: int = 0


async def monitor(
    pid: int,
    admin_port: int,
    run: Run,
    peaks: Peaks,
    proxy: subprocess.Popen[str],
    limit_s: float,
) -> None:
    """Samples the proxy once a second (peaks) and prints progress every 5 s."""
    last_report = trio.current_time()
    first = last_started = run.started
    for _ in range(int(limit_s) + 1):
        await trio.sleep(1.0)
        if proxy.poll() is not None:
            raise RuntimeError(f"the proxy exited with {proxy.returncode} during the soak")
        asked = trio.current_time()
        try:
            now = await snapshot(pid, admin_port)
        except (OSError, RuntimeError, trio.TooSlowError) as error:
            run.error("admin_stats", describe(error), asked)
            continue
        for name in ("fds", "rss_kib", "tasks", "connections", "tunnels"):
            setattr(peaks, name, max(getattr(peaks, name), getattr(now, name)))
        if trio.current_time() - last_report >= 5.0:
            rate = (run.started - last_started) / (trio.current_time() - last_report)
            print(
                f"  {run.started - first:>6} tunnels, {rate:,.0f}/s; proxy: fds {now.fds}, "
                f"RSS {now.rss_kib} KiB, tasks {now.tasks}, connections {now.connections}, "
                f"tunnels {now.tunnels}; client errors {len(run.errors)}",
                file=sys.stderr,
                flush=True,
            )
            last_report, last_started = trio.current_time(), run.started


# ---- main --------------------------------------------------------------------------------


@dataclass
class Result:
    baseline: Snapshot
    end: Snapshot
    waited_s: float
    soak_s: float
    soak_tunnels: int
    peaks: Peaks
    run: Run


async def soak(
    options: argparse.Namespace,
    proxy: subprocess.Popen[str],
    port: int,
    admin_port: int,
    silent: trio.SocketListener,
) -> Result:
    run = Run(port=port, seed=options.seed, per_connection=options.per_connection)
    peaks = Peaks()
    # Each phase stops taking new tunnels at --max-seconds; this bounds everything else.
    limit_s = 2 * options.max_seconds + 2 * QUIESCE_TIMEOUT_S + 2 * OP_TIMEOUT_S + 60
    with trio.move_on_after(limit_s):
        return await _soak(options, proxy, admin_port, silent, run, peaks, limit_s)
    raise SystemExit(f"\nFAIL: the run did not finish within its time limit ({limit_s:.0f} s)")


async def _soak(
    options: argparse.Namespace,
    proxy: subprocess.Popen[str],
    admin_port: int,
    silent: trio.SocketListener,
    run: Run,
    peaks: Peaks,
    limit_s: float,
) -> Result:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(silent_backend, silent)
        nursery.start_soon(stall_watch, run, limit_s)
        print(f"warm-up: {options.warmup} tunnels", file=sys.stderr, flush=True)
        warmup_s = await run_phase(run, options.workers, options.warmup, options.max_seconds)
        print(f"warm-up done in {warmup_s:.1f} s", file=sys.stderr, flush=True)
        baseline, waited = await quiesce(proxy.pid, admin_port)
        print(f"baseline (idle after {waited:.1f} s): {baseline}", file=sys.stderr, flush=True)
        print(f"soak: {options.tunnels} tunnels", file=sys.stderr, flush=True)
        nursery.start_soon(monitor, proxy.pid, admin_port, run, peaks, proxy, limit_s)
        started_before = run.started
        soak_s = await run_phase(run, options.workers, options.tunnels, options.max_seconds)
        soak_tunnels = run.started - started_before
        print(f"soak done in {soak_s:.1f} s", file=sys.stderr, flush=True)
        end, waited = await quiesce(proxy.pid, admin_port)
        print(f"end (idle after {waited:.1f} s): {end}", file=sys.stderr, flush=True)
        nursery.cancel_scope.cancel()
    return Result(baseline, end, waited, soak_s, soak_tunnels, peaks, run)


def report(result: Result, log: ProxyLog, options: argparse.Namespace) -> list[str]:
    """Prints the tables; returns the reasons the soak failed (empty: it passed)."""
    base, end, run = result.baseline, result.end, result.run
    rss_allowed = max(int(base.rss_kib * RSS_TOLERANCE_FRACTION), RSS_TOLERANCE_KIB)
    rows = [
        (
            "open fds",
            base.fds,
            end.fds,
            f"±{FD_TOLERANCE}",
            abs(end.fds - base.fds) <= FD_TOLERANCE,
        ),
        (
            "RSS (KiB)",
            base.rss_kib,
            end.rss_kib,
            f"+{rss_allowed}",
            end.rss_kib - base.rss_kib <= rss_allowed,
        ),
        (
            "trio tasks",
            base.tasks,
            end.tasks,
            f"±{TASK_TOLERANCE}",
            abs(end.tasks - base.tasks) <= TASK_TOLERANCE,
        ),
        ("connections", base.connections, end.connections, "0", end.connections == 0),
        ("tunnels", base.tunnels, end.tunnels, "0", end.tunnels == 0),
        (
            "unexpected_errors",
            base.unexpected_errors,
            end.unexpected_errors,
            "0",
            end.unexpected_errors == 0,
        ),
    ]
    print()
    print("| proxy | baseline | end | change | allowed | ok |")
    print("|---|---|---|---|---|---|")
    failures = []
    for name, before, after, allowed, ok in rows:
        print(
            f"| {name} | {before:,} | {after:,} | {after - before:+,} | {allowed} "
            f"| {'yes' if ok else 'NO'} |"
        )
        if not ok:
            failures.append(f"{name}: {before} -> {after} (allowed {allowed})")
    peaks = result.peaks
    print()
    print(
        f"Peaks during the soak (1 s samples): fds {peaks.fds:,}, RSS {peaks.rss_kib:,} KiB, "
        f"tasks {peaks.tasks:,}, connections {peaks.connections}, tunnels {peaks.tunnels}."
    )
    rate = result.soak_tunnels / result.soak_s if result.soak_s else 0.0
    print(
        f"Soak: {result.soak_tunnels:,} tunnels in {result.soak_s:.1f} s = {rate:,.0f} tunnels/s "
        f"({options.workers} workers, {run.connections_opened:,} client HTTP/2 connections in all "
        f"phases; warm-up {options.warmup:,} tunnels before the baseline); the proxy was idle "
        f"{result.waited_s:.1f} s after the last client closed."
    )
    print()
    stalled = [e for e in run.errors if run.during_stall(e)]
    errors = [e for e in run.errors if not run.during_stall(e)]
    print("| kind (warm-up + soak) | runs | ok | errors | of which during a host stall |")
    print("|---|---|---|---|---|")
    kinds = list(KINDS) + sorted({e.kind for e in run.errors} - set(KINDS))
    for kind in kinds:
        failed = sum(e.kind == kind for e in run.errors)
        in_stall = sum(e.kind == kind for e in stalled)
        runs, oks = (f"{run.ops[kind]:,}", f"{run.ok[kind]:,}") if kind in KINDS else ("-", "-")
        print(f"| {kind} | {runs} | {oks} | {failed:,} | {in_stall:,} |")
    print(
        f"| all | {sum(run.ops.values()):,} | {sum(run.ok.values()):,} | {len(run.errors):,} "
        f"| {len(stalled):,} |"
    )
    if run.stalls:
        longest = max(until - since for since, until in run.stalls)
        print(
            f"\nHost stalls (this process did not run for >= {STALL_THRESHOLD_S} s): "
            f"{len(run.stalls)}, longest {longest:.1f} s. Errors of operations that overlapped "
            f"one (or ended within {STALL_GRACE_S} s of it) are listed apart and do not fail "
            "the soak."
        )
    print()
    print(
        f"Proxy log: {log.lines:,} lines; levels {dict(log.levels)}; tracebacks {log.tracebacks}."
    )
    print("Proxy log events: " + ", ".join(f"{k} {v:,}" for k, v in log.events.most_common()))
    print()
    print("| proxy log: tunnel lines by front, path, status, end | count |")
    print("|---|---|")
    for key, count in sorted(log.tunnel_ends.items()):
        print(f"| {' '.join(key)} | {count:,} |")
    print()
    # Cross-checks of the proxy's log against what the clients saw. Reported, not failed:
    # they are about how the proxy labels what happened, not about leaks.
    clean_logged = log.tunnel_ends[("h2", "/echo/clean", "200", "clean")]
    if clean_logged < run.ok["h2_clean"]:
        print(
            f"NOTE: the clients completed {run.ok['h2_clean']:,} h2_clean tunnels (close "
            f"handshake and END_STREAM both ways, no reset) but the proxy logged only "
            f"{clean_logged:,} /echo/clean tunnels as end=clean: at least "
            f"{run.ok['h2_clean'] - clean_logged:,} clean tunnels were logged as something else "
            "(client_aborted, when the client closed its connection right after)."
        )
    if log.events["h2.stream_error"]:
        print(
            f"NOTE: the proxy logged {log.events['h2.stream_error']:,} h2.stream_error line(s); "
            "no request in this mix is a stream error (the malformed one is a 400 refusal)."
        )
    for line in log.problems[:10]:
        print(f"  log: {line[:300]}")
    for error in stalled[:10]:
        print(f"  error during a host stall: {error.kind}: {error.message}")
    for error in errors[:25]:
        print(f"  error: {error.kind}: {error.message}")
    if errors:
        failures.append(f"{len(errors)} client-side errors")
    if log.tracebacks:
        failures.append(f"{log.tracebacks} tracebacks in the proxy log")
    if run.timed_out:
        failures.append(f"stopped by --max-seconds after {run.started} tunnels")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tunnels", type=int, default=20_000, help="soak tunnels after warm-up")
    parser.add_argument("--warmup", type=int, default=500, help="tunnels before the baseline")
    parser.add_argument("--workers", type=int, default=32, help="concurrent client workers")
    parser.add_argument(
        "--per-connection", type=int, default=100, help="tunnels per HTTP/2 connection"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=900.0, help="time limit of each phase")
    parser.add_argument("--quick", action="store_true", help="1,000 tunnels, a few seconds")
    parser.add_argument("--proxy-log", type=Path, help="also write the proxy's log to this file")
    options = parser.parse_args()
    if options.quick:
        options.tunnels, options.warmup, options.max_seconds = 1000, 200, 120.0
    if options.tunnels < 1 or options.warmup < 0 or options.workers < 1:
        parser.error("--tunnels and --workers must be positive, --warmup not negative")

    backend, backend_port = start_backend()
    # A port that refuses: bound but never listening, held for the whole run.
    refused = socket.socket()
    refused.bind((HOST, 0))
    silent_sock = socket.socket()
    silent_sock.bind((HOST, 0))
    silent_sock.listen(512)
    try:
        with tempfile.TemporaryDirectory() as config_dir:
            proxy, log, port, admin_port = start_proxy(
                Path(config_dir),
                backend_port,
                refused.getsockname()[1],
                silent_sock.getsockname()[1],
                options.proxy_log,
            )
            try:

                async def go() -> Result:
                    silent = trio.SocketListener(trio.socket.from_stdlib_socket(silent_sock))
                    return await soak(options, proxy, port, admin_port, silent)

                print(
                    f"h2ws-proxy soak: pid {proxy.pid}, port {port}, admin {admin_port}, "
                    f"backend {backend_port}, seed {options.seed}",
                    file=sys.stderr,
                    flush=True,
                )
                started = time.monotonic()
                result = trio.run(go)
            finally:
                stop(proxy)
    finally:
        refused.close()
        silent_sock.close()
        stop(backend)
    log.finish()
    failures = report(result, log, options)
    print(f"\nTotal wall time {time.monotonic() - started:.0f} s.")
    if failures:
        print("\nFAIL: " + "; ".join(failures))
        return 1
    print(
        "\nPASS: fds, tasks and RSS back to baseline, no unexpected errors, no client-side "
        "errors outside host stalls."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
