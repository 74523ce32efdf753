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
* **Signals.** The first SIGTERM/SIGINT turns ``/healthz`` and ``/readyz`` to 503, sends
  SIGTERM to every worker, which drains as the single process does (GOAWAY,
  ``drain_accept_s``, ``graceful_timeout_s``), and closes the supervisor's own copies of
  the listening sockets (once no worker is being started with them): a listening socket
  closes only when every process holding it did, and a copy left open would let new
  clients queue in a backlog nobody accepts from;
  a second signal sends a second SIGTERM (stop at once). Workers still running 5 s after
  their own drain's end (``graceful_timeout_s``, then the WebSocket Close's
  ``close_wait_s``) are killed. The supervisor exits 0
  when every worker ended with 0, else 1.
* **Reload.** SIGHUP or ``POST /reload``: the supervisor checks the file once and the
  workers switch (``reload_workers.py``).
* **Admin.** Only the supervisor serves the admin port (one process per port; the
  supervisor outlives any worker), until it exits. ``/healthz``: 200 while serving and at
  least one worker is ready, 503 otherwise. ``/readyz``: 200 only when every worker is
  ready (each asked over its control channel, as for ``/stats``), else 503 with the first
  reason. ``/stats``: each worker's counters (asked over its control channel, 1 s budget)
  and their sums. ``/metrics``: the workers' samples added up, with the last samples of
  dead workers kept so that counters never go backwards (``metrics.py``); they are also
  refreshed every ``_SAMPLES_REFRESH_S``.
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import socket
import subprocess
import sys
from collections.abc import Callable

import trio

from h2ws_proxy.backend.tls import prepare_backend_tls
from h2ws_proxy.config import ProxyConfig, build_listener_contexts
from h2ws_proxy.log import log_event
from h2ws_proxy.relay.going_away import drain_deadline_s
from h2ws_proxy.server.admin import NOT_FOUND, answer_admin_request
from h2ws_proxy.server.descriptors import raise_descriptor_limit
from h2ws_proxy.server.metrics import Samples, WorkerSamples, exposition
from h2ws_proxy.server.reload import reload_on_signals
from h2ws_proxy.server.reload_workers import Serving, WorkerReloader
from h2ws_proxy.server.serve import BoundSockets, bind_sockets, bound_address
from h2ws_proxy.server.worker import READY, ControlChannel, WorkerSpec
from h2ws_proxy.server.worker_slot import WorkerSlot, sum_stats
from h2ws_proxy.transport.errors import STREAM_GONE

logger = logging.getLogger(__name__)

_MIN_RESTART_INTERVAL_S = 1.0
_MAX_RESTART_INTERVAL_S = 30.0
#: A worker that ran this long was healthy: its next restart waits the minimum again.
_STABLE_AFTER_S = 30.0
#: Past their drain's end (``drain_deadline_s``), how long draining workers get before SIGKILL.
_KILL_MARGIN_S = 5.0
#: How often each worker's metric samples are fetched besides scrapes: what a killed
#: worker can lose of its counts.
_SAMPLES_REFRESH_S = 5.0


class WorkerFailedToStart(Exception):
    """A worker of the first generation exited before it was ready (a broken install)."""


class Supervisor:
    def __init__(
        self,
        config: ProxyConfig,
        sockets: BoundSockets,
        log_level: str,
        log_format: str,
        load: Callable[[], ProxyConfig] | None = None,
    ) -> None:
        self._config = config
        self._sockets = sockets
        #: What a reload changed (the config and sockets that workers started now get).
        self._reloads = WorkerReloader(load, Serving(config, sockets))
        self._log = (log_level, log_format)
        self._slots = [WorkerSlot(index) for index in range(config.workers)]
        self._draining = trio.Event()
        #: Workers being started with the listening sockets (which stay open until then).
        self._spawning = 0
        self._listeners_closed = False
        self._samples = WorkerSamples(len(self._slots))

    async def run(self) -> int:
        """Run the workers until a signal drains them; the process's exit code."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pass_signals)
            nursery.start_soon(
                reload_on_signals, functools.partial(self._reloads.reload, self._slots)
            )
            if self._sockets.admin is not None:
                reload = functools.partial(self._reloads.answer_admin, self._slots)
                handler = functools.partial(
                    answer_admin_request, answer=self._answer, reload=reload
                )
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
                limits = self._reloads.serving.config.limits  # as the last reload left them
                grace = limits.graceful_timeout_s
                log_event(logger, logging.INFO, "workers.draining", graceful_timeout_s=grace)
                # After the workers' own cut (graceful_timeout_s, the WebSocket Close wait).
                drain_s = drain_deadline_s(limits)
                nursery.start_soon(self._kill_after, drain_s + _KILL_MARGIN_S)
            nursery.cancel_scope.cancel()
        clean = all(slot.drain_exit_code in (None, 0) for slot in self._slots)
        code = 0 if clean else 1
        log_event(logger, logging.INFO, "workers.stopped", code=code)
        return code

    # --- worker processes ---------------------------------------------------------------

    async def _run_slot(
        self, slot: WorkerSlot, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep a worker running in ``slot`` until the drain; ``started`` once it is ready."""
        interval = _MIN_RESTART_INTERVAL_S
        previous: tuple[int, int] | None = None  # (pid, exit code) of the last worker
        started = False
        while True:
            if self._draining.is_set():  # a signal came before this slot's first start
                task_status.started()
                return
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
            async with trio.open_nursery() as watching:
                watching.start_soon(self._refresh_samples_every, slot, _SAMPLES_REFRESH_S)
                code = await process.wait()
                watching.cancel_scope.cancel()
            self._samples.worker_exited(slot.index)
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

    async def _start_worker(self, slot: WorkerSlot) -> tuple[trio.Process, ControlChannel | None]:
        """Start a worker for ``slot`` and send it its spec; no channel if it died at once."""
        ours, theirs = socket.socketpair()
        serving = self._reloads.serving
        with theirs:
            listener_fds = tuple(
                tuple(listener.socket.fileno() for listener in listeners)
                for listeners in serving.sockets.listeners
            )
            self._spawning += 1
            try:
                process = await trio.lowlevel.open_process(
                    [sys.executable, "-m", "h2ws_proxy", "--worker-fd", str(theirs.fileno())],
                    pass_fds=(theirs.fileno(), *(fd for fds in listener_fds for fd in fds)),
                    stdin=subprocess.DEVNULL,
                    process_group=0,  # a terminal's Ctrl-C reaches only us; we pass it on once
                )
            finally:
                self._spawning -= 1
                self._close_listeners_if_draining()
        slot.process = process
        if self._draining.is_set():
            process.send_signal(signal.SIGTERM)
        control = ControlChannel(ours)
        spec = WorkerSpec(slot.index, serving.config, listener_fds, *self._log)
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
                self._close_listeners_if_draining()

    def _close_listeners_if_draining(self) -> None:
        """Once draining and no worker is being started: close our listening sockets."""
        if not self._draining.is_set() or self._spawning or self._listeners_closed:
            return
        self._listeners_closed = True
        for listeners in self._sockets.listeners:
            for listener in listeners:
                listener.socket.close()

    # --- admin --------------------------------------------------------------------------

    async def _answer(self, path: bytes) -> tuple[int, bytes]:
        if path == b"/healthz":
            if self._draining.is_set():
                return 503, b"draining\n"
            if not any(slot.control is not None for slot in self._slots):
                return 503, b"no worker is ready\n"
            return 200, b"ok\n"
        if path == b"/readyz":
            reason = await self._not_ready()
            return (200, b"ready\n") if reason is None else (503, reason.encode() + b"\n")
        if path == b"/stats":
            workers = await self._all_worker_stats()
            totals = sum_stats(workers)
            body = {**totals, "workers": workers}
            return 200, json.dumps(body).encode() + b"\n"
        if path == b"/metrics":
            async with trio.open_nursery() as nursery:
                for slot in self._slots:
                    nursery.start_soon(self._refresh_samples, slot)
            return 200, exposition(self._samples.total())
        return NOT_FOUND

    async def _not_ready(self) -> str | None:
        """Why the proxy should get no new clients: draining, or the first worker that is
        not ready (starting, restarting, or its own reason); None when every one is."""
        if self._draining.is_set():
            return "draining"
        for entry in await self._all_worker_stats():
            if not entry["ready"]:
                return (
                    f"worker {entry['worker']}: not ready (starting, restarting or not answering)"
                )
            if entry.get("not_ready") is not None:
                return f"worker {entry['worker']}: {entry['not_ready']}"
        return None

    async def _all_worker_stats(self) -> list[dict[str, object]]:
        """Every worker's ``/stats`` answer, asked in parallel (``WorkerSlot.fill_stats``)."""
        workers: list[dict[str, object]] = [{} for _ in self._slots]
        async with trio.open_nursery() as nursery:
            for slot, entry in zip(self._slots, workers, strict=True):
                nursery.start_soon(slot.fill_stats, entry)
        return workers

    async def _refresh_samples_every(self, slot: WorkerSlot, interval_s: float) -> None:
        while True:
            await trio.sleep(interval_s)
            await self._refresh_samples(slot)

    async def _refresh_samples(self, slot: WorkerSlot) -> None:
        """Ask the slot's worker for its metric samples (kept if it answers in time)."""
        answer = await slot.ask("metrics")
        if answer is not None:
            try:
                self._samples.update(slot.index, Samples.from_json(answer.get("samples")))
            except ValueError as error:
                log_event(logger, logging.WARNING, "worker.bad_samples", error=str(error))


async def supervise(
    config: ProxyConfig,
    *,
    log_level: str,
    log_format: str,
    load: Callable[[], ProxyConfig] | None = None,
) -> int:
    """Bind, start ``config.workers`` workers, serve until drained; the exit code.
    ``load`` re-reads the config file for a reload.

    Raises ConfigError (before any worker starts) when a socket cannot bind or a TLS
    certificate does not load.
    """
    build_listener_contexts(config)
    prepare_backend_tls(config)  # and the warnings for verify = false, once for all workers
    sockets = await bind_sockets(config)
    raise_descriptor_limit(config)  # before any worker starts: they inherit it
    return await Supervisor(config, sockets, log_level, log_format, load).run()
