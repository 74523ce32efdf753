"""One worker process of ``workers = N`` (N > 1): serve on sockets the supervisor bound.

The supervisor (``supervisor.py``) starts ``python -m h2ws_proxy --worker-fd FD``. FD is the
worker's end of a socket pair, the *control channel*, which carries one message per line:

* supervisor → worker, first: the :class:`WorkerSpec` (index, the supervisor's validated
  config, the descriptor numbers of the inherited listening sockets, log settings). A
  restarted worker gets the same spec, so it never re-reads a config file edited since.
  The worker puts ``worker=<i> pid=<pid>`` on every log line, serves with
  :func:`server.serve` on the inherited sockets, and answers ``ready`` once it accepts.
* supervisor → worker: ``stats <id>``; worker → supervisor: ``{"id": <id>, ...}``, its
  ``/stats`` counters as JSON (the supervisor sums them on the admin port), and
  ``not_ready``: why it should get no new clients, null when it is ready (``/readyz``).
* supervisor → worker: ``metrics <id>``; worker → supervisor: ``{"id": <id>, "samples":
  ...}``, its ``/metrics`` samples (``metrics.py``; the supervisor adds them up).
* supervisor → worker: ``reload <id> <order>``, with the descriptors of the listening
  sockets the reload adds attached (SCM_RIGHTS); worker → supervisor: ``{"id": <id>, "ok":
  ..., "message": ...}`` once it switched or failed to (``reload_workers.py``).
* End of file: the supervisor is gone (killed, crashed). The worker drains as on SIGTERM,
  so it never outlives its supervisor by more than ``graceful_timeout_s``. A socket's EOF
  tells this on every POSIX system, unlike Linux's ``PR_SET_PDEATHSIG``.

Signals: SIGTERM drains, a second one stops at once, as in the single process
(:func:`server.drain_on_signals`). Workers run in their own process group, so a terminal's
Ctrl-C reaches only the supervisor, which passes it on once. A SIGHUP sent to a worker
itself is logged and ignored: reloads go through the supervisor.

``limits.max_connections`` is per worker, as every other limit: the proxy as a whole
accepts up to ``workers x max_connections`` connections per listener.
"""

from __future__ import annotations

import array
import base64
import functools
import json
import logging
import os
import pickle
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from h2ws_proxy.config import ProxyConfig
from h2ws_proxy.errors import ConfigError
from h2ws_proxy.log import configure_logging, log_event, set_process_fields
from h2ws_proxy.relay.context import ServerStats
from h2ws_proxy.server.admin import server_stats
from h2ws_proxy.server.metrics import encode_samples, take_samples
from h2ws_proxy.server.reload import Reloader, ReloadOrder, listener_of_fd
from h2ws_proxy.server.serve import BoundAddresses, BoundSockets, drain_on_signals, serve
from h2ws_proxy.transport.errors import STREAM_GONE

logger = logging.getLogger(__name__)

#: A control line longer than this is a bug; the channel is then treated as closed.
_MAX_LINE_BYTES = 16 * 1024 * 1024
READY = b"ready"
#: Descriptors one control message may carry (new listening sockets of one reload).
MAX_FDS = 64
_INT_SIZE = array.array("i").itemsize


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What the supervisor tells a worker it starts."""

    index: int
    config: ProxyConfig
    #: Inherited descriptors of the listening sockets, one tuple per ``config.listeners``.
    listener_fds: tuple[tuple[int, ...], ...]
    log_level: str
    log_format: str

    def encode(self) -> bytes:
        # pickle between two processes of one installation, over a private socket pair.
        return base64.b64encode(pickle.dumps(self))

    @staticmethod
    def decode(line: bytes) -> WorkerSpec:
        spec = pickle.loads(base64.b64decode(line))  # our own supervisor wrote it
        if not isinstance(spec, WorkerSpec):
            raise TypeError(f"expected a WorkerSpec, got {type(spec).__name__}")
        return spec


class ControlChannel:
    """The supervisor's line-per-message link with one worker (either end); a message may
    carry descriptors (listening sockets), taken in order with :meth:`take_fds`."""

    def __init__(self, sock: socket.socket) -> None:
        self._stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        self._buffer = bytearray()
        self._fds: list[int] = []

    async def send(self, message: bytes, fds: Sequence[int] = ()) -> None:
        """Send one line (and ``fds``); raises trio.BrokenResourceError when the peer is
        gone."""
        data = message + b"\n"
        if fds:
            if len(fds) > MAX_FDS:
                raise ValueError(f"at most {MAX_FDS} descriptors per message")
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
            try:
                sent = await self._stream.socket.sendmsg([data], rights)
            except OSError as error:
                raise trio.BrokenResourceError(str(error)) from error
            data = data[sent:]
        if data:
            await self._stream.send_all(data)

    def take_fds(self, count: int) -> list[int]:
        """The next ``count`` descriptors received (those of the message just read)."""
        taken, self._fds = self._fds[:count], self._fds[count:]
        return taken

    async def receive(self) -> bytes | None:
        """The next line without its newline; None at end of file or on a broken link."""
        while (end := self._buffer.find(b"\n")) < 0:
            if len(self._buffer) > _MAX_LINE_BYTES:
                return None
            try:
                data, ancillary, flags, _ = await self._stream.socket.recvmsg(
                    65536, socket.CMSG_SPACE(MAX_FDS * _INT_SIZE)
                )
            except (*STREAM_GONE, OSError):
                return None
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(payload[: len(payload) - len(payload) % _INT_SIZE])
                    self._fds.extend(fds)
            if flags & socket.MSG_CTRUNC:
                return None  # descriptors lost: a bug, the channel is treated as closed
            if not data:
                return None
            self._buffer += data
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return line

    async def aclose(self) -> None:
        await self._stream.aclose()


def run_worker(control_fd: int) -> int:
    """The ``--worker-fd`` entry point: the process's exit code (0 after a drain)."""
    try:
        return trio.run(_worker_main, control_fd)
    except ConfigError as error:  # e.g. a TLS file removed since the supervisor checked it
        print(f"h2ws-proxy: error: {error.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


async def _worker_main(control_fd: int) -> int:
    control = ControlChannel(socket.socket(fileno=control_fd))
    line = await control.receive()
    if line is None:
        return 1  # the supervisor went away before it told us what to do
    spec = WorkerSpec.decode(line)
    configure_logging(spec.log_level, spec.log_format)
    set_process_fields(worker=spec.index, pid=os.getpid())
    sockets = BoundSockets(
        listeners=tuple([listener_of_fd(fd) for fd in fds] for fds in spec.listener_fds), admin=None
    )
    shutdown, stats, reloader = trio.Event(), ServerStats(), Reloader()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain_on_signals, shutdown, nursery.cancel_scope)
        nursery.start_soon(_refuse_sighup)
        run_server = functools.partial(
            _serve_then_stop, spec.config, shutdown, sockets, stats, reloader, nursery.cancel_scope
        )
        await nursery.start(run_server)
        nursery.start_soon(_answer_supervisor, control, shutdown, stats, reloader)
    return 0


async def _serve_then_stop(
    config: ProxyConfig,
    shutdown: trio.Event,
    sockets: BoundSockets,
    stats: ServerStats,
    reloader: Reloader,
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[BoundAddresses] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until drained, then stop the worker's other tasks."""
    await serve(
        config,
        shutdown=shutdown,
        sockets=sockets,
        stats=stats,
        warn_unverified_backends=False,  # the supervisor did, once
        reloader=reloader,
        task_status=task_status,
    )
    scope.cancel()


async def _refuse_sighup() -> None:
    """A SIGHUP sent to a worker itself reloads nothing (and does not kill it)."""
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        async for _ in signals:
            log_event(
                logger,
                logging.WARNING,
                "worker.sighup_ignored",
                hint="send SIGHUP to the supervisor (or POST /reload): it checks the file once",
            )


async def _answer_supervisor(
    control: ControlChannel, shutdown: trio.Event, stats: ServerStats, reloader: Reloader
) -> None:
    """Say ``ready``, answer ``stats`` and ``reload`` requests, and drain when the
    supervisor is gone."""
    try:
        await control.send(READY)
        while (message := await control.receive()) is not None:
            command, _, request_id = message.partition(b" ")
            if command == b"stats":
                not_ready = stats.not_ready() if stats.not_ready else "starting"
                answer = {
                    "id": request_id.decode("ascii", "replace"),
                    **server_stats(stats),
                    "not_ready": not_ready,
                }
                await control.send(json.dumps(answer).encode())
            elif command == b"metrics":
                request = request_id.decode("ascii", "replace")
                await control.send(encode_samples(request, take_samples(stats)))
            elif command == b"reload":
                order = ReloadOrder.decode(request_id)
                await control.send(await order.apply(reloader, control.take_fds(order.fd_count)))
    except STREAM_GONE:
        pass
    if not shutdown.is_set():
        log_event(logger, logging.WARNING, "worker.orphaned", problem="the supervisor is gone")
        shutdown.set()
