"""The supervisor of ``workers = N`` (N > 1): bind once, run N worker processes on the same
sockets, restart the dead ones, pass signals on, and serve the admin port.

Theory of operation:

* **One shared socket per listener, not SO_REUSEPORT.** The supervisor binds every
  listener (and the admin port) itself, before any worker exists, exactly as the single
  process does: a bind error is one message and exit 2, and port 0 resolves to one real
  port that every worker serves. Each worker inherits the listening descriptors and runs
  its own accept loop on them; the kernel hands each new connection to one of the
  processes waiting. With SO_REUSEPORT every worker would bind its own socket: port 0
  would give each worker a different port, a bind error would show up N times (or in
  only some workers), and the connections queued on a dead worker's socket would be
  reset. The cost of sharing: the kernel does not balance connections between workers
  the way SO_REUSEPORT's hash does; a busy worker simply wins fewer accepts.
* **Re-exec, not fork.** Workers are new interpreters, ``python -m h2ws_proxy
  --worker-fd FD`` (``worker.py``), started with ``subprocess``'s fork+exec through
  :func:`trio.lowlevel.open_process`, which is safe while trio runs (a bare ``fork()``
  of a running trio process is not). The listening sockets cross by ``pass_fds``.
* **The control channel** (a socket pair per worker, see ``worker.py``) gives the worker
  its spec, tells the supervisor when the worker accepts, carries ``/stats``, and, by its
  EOF, tells a worker whose supervisor died to drain.
* **Restarts.** A worker that exits while the proxy is serving is started again in the
  same slot (same index), at most once per second, and with the wait doubling up to 30 s
  while it keeps dying within 30 s of its start (a crash loop does not spin). Each exit
  and restart is logged with the exit code (negative: the signal).
* **Signals.** The first SIGTERM/SIGINT turns ``/healthz`` to 503 and sends SIGTERM to
  every worker, which drains as the single process does (GOAWAY, ``graceful_timeout_s``);
  a second signal sends a second SIGTERM (stop at once). Workers still running 5 s after
  their own drain's end (``graceful_timeout_s``, then the WebSocket Close's
  ``close_wait_s``) are killed. The supervisor exits 0 when every worker ended with 0,
  else 1.
* **Admin.** Only the supervisor serves the admin port (one process per port; the
  supervisor outlives any worker). ``/healthz``: 200 while serving and at least one
  worker is ready, 503 otherwise. ``/stats``: each worker's counters (asked over its
  control channel, 1 s budget) and their sums.
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field

import trio

from h2ws_proxy.config import ProxyConfig, build_listener_contexts
from h2ws_proxy.log import log_event
from h2ws_proxy.relay.going_away import drain_deadline_s
from h2ws_proxy.server.admin import NOT_FOUND, answer_admin_request
from h2ws_proxy.server.descriptors import raise_descriptor_limit
from h2ws_proxy.server.serve import BoundSockets, bind_sockets, bound_address
from h2ws_proxy.server.worker import READY, ControlChannel, WorkerSpec
from h2ws_proxy.transport.errors import STREAM_GONE

logger = logging.getLogger(__name__)

_MIN_RESTART_INTERVAL_S = 1.0
_MAX_RESTART_INTERVAL_S = 30.0
#: A worker that ran this long was healthy: its next restart waits the minimum again.
_STABLE_AFTER_S = 30.0
#: Past their drain's end (``drain_deadline_s``), how long draining workers get before SIGKILL.
_KILL_MARGIN_S = 5.0
_STATS_TIMEOUT_S = 1.0
_STAT_KEYS = (
    "connections",
    "tunnels",
    "requests",
    "tasks",
    "unexpected_errors",
    "refused_per_client",
    "evicted_idle",
    "accept_failures",
)


class WorkerFailedToStart(Exception):
    """A worker of the first generation exited before it was ready (a broken install)."""


@dataclass(slots=True)
class _Slot:
    """One worker position; its process changes with each restart."""

    index: int
    process: trio.Process | None = None
    #: Set while the worker is ready and answers on its control channel.
    control: ControlChannel | None = None
    lock: trio.Lock = field(default_factory=trio.Lock)
    restarts: int = 0
    #: How the slot's worker ended its drain (None: no worker was running at the drain).
    drain_exit_code: int | None = None


class Supervisor:
    def __init__(
        self, config: ProxyConfig, sockets: BoundSockets, log_level: str, log_format: str
    ) -> None:
        self._config = config
        self._sockets = sockets
        self._log = (log_level, log_format)
        self._slots = [_Slot(index) for index in range(config.workers)]
        self._draining = trio.Event()
        self._stats_requests = 0

    async def run(self) -> int:
        """Run the workers until a signal drains them; the process's exit code."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pass_signals)
            if self._sockets.admin is not None:
                handler = functools.partial(answer_admin_request, answer=self._answer)
                nursery.start_soon(trio.serve_listeners, handler, self._sockets.admin)
            async with trio.open_nursery() as slots:
                async with trio.open_nursery() as starting:  # in parallel
                    for slot in self._slots:
                        starting.start_soon(slots.start, self._run_slot, slot)
                log_event(
                    logger,
                    logging.INFO,
                    "workers.started",
                    n=len(self._slots),
                    listeners=",".join(str(bound_address(ls)) for ls in self._sockets.listeners),
                    admin=bound_address(self._sockets.admin) if self._sockets.admin else None,
                )
                await self._draining.wait()
                grace = self._config.limits.graceful_timeout_s
                log_event(logger, logging.INFO, "workers.draining", graceful_timeout_s=grace)
                # After the workers' own cut (graceful_timeout_s, the WebSocket Close wait).
                drain_s = drain_deadline_s(self._config.limits)
                nursery.start_soon(self._kill_after, drain_s + _KILL_MARGIN_S)
            nursery.cancel_scope.cancel()
        clean = all(slot.drain_exit_code in (None, 0) for slot in self._slots)
        code = 0 if clean else 1
        log_event(logger, logging.INFO, "workers.stopped", code=code)
        return code

    # --- worker processes ---------------------------------------------------------------

    async def _run_slot(
        self, slot: _Slot, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep a worker running in ``slot`` until the drain; ``started`` once it is ready."""
        interval = _MIN_RESTART_INTERVAL_S
        previous: tuple[int, int] | None = None  # (pid, exit code) of the last worker
        started = False
        while True:
            started_at = trio.current_time()
            process, control = await self._start_worker(slot)
            if previous is not None:
                slot.restarts += 1
                log_event(
                    logger,
                    logging.WARNING,
                    "worker.restarted",
                    worker=slot.index,
                    pid=process.pid,
                    previous_pid=previous[0],
                    code=previous[1],
                    restarts=slot.restarts,
                )
            if control is not None and await control.receive() == READY:
                slot.control = control
                if not started:
                    started = True
                    task_status.started()
            code = await process.wait()
            slot.process, slot.control = None, None
            if control is not None:
                await control.aclose()
            draining = self._draining.is_set()
            if not started:
                if not draining:
                    raise WorkerFailedToStart(f"worker {slot.index} exited with {code} at start")
                task_status.started()  # a signal came while the workers were starting
            next_start = started_at + interval
            healthy = trio.current_time() - started_at >= _STABLE_AFTER_S
            interval = (
                _MIN_RESTART_INTERVAL_S if healthy else min(interval * 2, _MAX_RESTART_INTERVAL_S)
            )
            if draining:
                slot.drain_exit_code = code
                log_event(
                    logger,
                    logging.INFO,
                    "worker.exited",
                    worker=slot.index,
                    pid=process.pid,
                    code=code,
                )
                return
            wait_s = round(max(0.0, next_start - trio.current_time()), 3)
            log_event(
                logger,
                logging.WARNING,
                "worker.exited",
                worker=slot.index,
                pid=process.pid,
                code=code,
                restart_in_s=wait_s,
            )
            with trio.move_on_at(next_start):
                await self._draining.wait()
            if self._draining.is_set():
                return
            previous = (process.pid, code)

    async def _start_worker(self, slot: _Slot) -> tuple[trio.Process, ControlChannel | None]:
        """Start a worker for ``slot`` and send it its spec; no channel if it died at once."""
        ours, theirs = socket.socketpair()
        with theirs:
            listener_fds = tuple(
                tuple(listener.socket.fileno() for listener in listeners)
                for listeners in self._sockets.listeners
            )
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "h2ws_proxy", "--worker-fd", str(theirs.fileno())],
                pass_fds=(theirs.fileno(), *(fd for fds in listener_fds for fd in fds)),
                stdin=subprocess.DEVNULL,
                process_group=0,  # a terminal's Ctrl-C reaches only us; we pass it on once
            )
        slot.process = process
        if self._draining.is_set():
            process.send_signal(signal.SIGTERM)
        control = ControlChannel(ours)
        spec = WorkerSpec(slot.index, self._config, listener_fds, *self._log)
        try:
            await control.send(spec.encode())
        except STREAM_GONE:
            await control.aclose()
            return process, None
        return process, control

    async def _kill_after(self, seconds: float) -> None:
        await trio.sleep(seconds)
        for slot in self._slots:
            if slot.process is not None and slot.process.returncode is None:
                log_event(
                    logger,
                    logging.WARNING,
                    "worker.killed",
                    worker=slot.index,
                    pid=slot.process.pid,
                    problem="still draining past graceful_timeout_s",
                )
                slot.process.kill()

    async def _pass_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if self._draining.is_set():
                    logger.warning("second %s: stopping the workers now", name)
                else:
                    logger.info("%s: draining the workers (send it again to stop at once)", name)
                self._draining.set()
                for slot in self._slots:
                    if slot.process is not None and slot.process.returncode is None:
                        slot.process.send_signal(signal.SIGTERM)

    # --- admin --------------------------------------------------------------------------

    async def _answer(self, path: bytes) -> tuple[int, bytes]:
        if path == b"/healthz":
            if self._draining.is_set():
                return 503, b"draining\n"
            if not any(slot.control is not None for slot in self._slots):
                return 503, b"no worker is ready\n"
            return 200, b"ok\n"
        if path == b"/stats":
            workers: list[dict[str, object]] = [{} for _ in self._slots]
            async with trio.open_nursery() as nursery:
                for slot, entry in zip(self._slots, workers, strict=True):
                    nursery.start_soon(self._worker_stats, slot, entry)
            totals = {key: sum(_counter(entry, key) for entry in workers) for key in _STAT_KEYS}
            body = {**totals, "workers": workers}
            return 200, json.dumps(body).encode() + b"\n"
        return NOT_FOUND

    async def _worker_stats(self, slot: _Slot, entry: dict[str, object]) -> None:
        """Fill ``entry`` with the worker's counters, or ``ready: false``."""
        process = slot.process
        entry.update(
            worker=slot.index,
            pid=process.pid if process else None,
            ready=False,
            restarts=slot.restarts,
        )
        self._stats_requests += 1
        request_id = str(self._stats_requests)
        with trio.move_on_after(_STATS_TIMEOUT_S):
            async with slot.lock:
                control = slot.control
                if control is None:
                    return
                try:
                    await control.send(f"stats {request_id}".encode())
                except STREAM_GONE:
                    return
                # Skip answers to earlier requests that timed out.
                while (line := await control.receive()) is not None:
                    answer = json.loads(line)
                    if answer.pop("id", None) == request_id:
                        entry.update(answer, ready=True)
                        return


async def supervise(config: ProxyConfig, *, log_level: str, log_format: str) -> int:
    """Bind, start ``config.workers`` workers, serve until drained; the exit code.

    Raises ConfigError (before any worker starts) when a socket cannot bind or a TLS
    certificate does not load.
    """
    build_listener_contexts(config)
    sockets = await bind_sockets(config)
    raise_descriptor_limit(config)  # before any worker starts: they inherit it
    return await Supervisor(config, sockets, log_level, log_format).run()


def _counter(entry: dict[str, object], key: str) -> int:
    """A worker's counter from its stats (0 when it did not answer or lacks the key)."""
    value = entry.get(key, 0)
    return value if isinstance(value, int) else 0
