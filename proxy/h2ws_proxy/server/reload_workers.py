"""Reload with ``workers`` > 1: the supervisor checks the file once, the workers switch.

Theory of operation:

* The supervisor loads and checks the file as a single process does (``reload.py``:
  the same one-line errors, the restart-only changes refused), binds the listeners the
  reload adds (port 0 resolves once, for every worker), then sends each ready worker a
  ``reload`` message over its control channel carrying the checked config and the new
  sockets' descriptors (``worker.py``). Each worker switches its own server, as a single
  process does, and answers.
* Once every worker answered, the supervisor serves the new config: a worker restarted
  later gets it, with the new sockets; the supervisor closes its copy of the sockets of
  removed listeners (each worker closed its own as its listener drained).
* A worker that fails to apply it (a certificate file it cannot read, say) keeps its old
  config; the supervisor logs ``config.reload_failed`` naming the worker, and the answer to
  ``POST /reload`` is a 500 naming it too. The others switched; a reload that works for all
  brings them in line again.
* One reload at a time: ``POST /reload`` meanwhile gets 409, a SIGHUP waits its turn.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from h2ws_proxy.backend.tls import install_backend_contexts
from h2ws_proxy.config import ProxyConfig
from h2ws_proxy.errors import ConfigError
from h2ws_proxy.log import log_event
from h2ws_proxy.server.listeners import ListenerKey, listener_keys
from h2ws_proxy.server.reload import (
    Digests,
    Prepared,
    ReloadOrder,
    ReloadOutcome,
    describe_changes,
    digests,
    load_and_prepare,
)
from h2ws_proxy.server.serve import BoundSockets, bind_listener, bound_address
from h2ws_proxy.server.worker import MAX_FDS, ControlChannel
from h2ws_proxy.transport.errors import STREAM_GONE

logger = logging.getLogger(__name__)

#: How long a worker gets to switch (it loads the certificates itself).
_WORKER_RELOAD_TIMEOUT_S = 30.0


class WorkerLink(Protocol):
    """What the reload needs of a supervisor's worker slot."""

    index: int
    control: ControlChannel | None
    lock: trio.Lock


@dataclass(frozen=True, slots=True)
class Serving:
    """What the supervisor serves: the config and its bound sockets (one list per
    ``config.listeners`` entry)."""

    config: ProxyConfig
    sockets: BoundSockets


class WorkerReloader:
    """The supervisor's reloads."""

    def __init__(self, load: Callable[[], ProxyConfig] | None, serving: Serving) -> None:
        self._load = load
        self._lock = trio.Lock()
        self._requests = 0
        #: What the supervisor serves; restarted workers get it.
        self.serving = serving
        self._digests: Digests = digests(serving.config)

    async def answer_admin(self, workers: Sequence[WorkerLink]) -> tuple[int, bytes]:
        """``POST /reload``: 200 and what changed, 500 and why not, 409 while one runs."""
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            return 409, b"a reload is already running; try again when it ends\n"
        try:
            outcome = await self._reload(workers)
        finally:
            self._lock.release()
        return (200 if outcome.ok else 500), outcome.message.encode() + b"\n"

    async def reload(self, workers: Sequence[WorkerLink]) -> ReloadOutcome:
        """Reload from the file (after any reload in progress): SIGHUP."""
        async with self._lock:
            return await self._reload(workers)

    async def _reload(self, workers: Sequence[WorkerLink]) -> ReloadOutcome:
        if self._load is None:
            return _failed("this supervisor has no config file to reload")
        running = self.serving.config
        try:
            prepared = await trio.to_thread.run_sync(load_and_prepare, self._load, running)
            added, sockets = await self._bind(prepared.config)
        except ConfigError as error:
            return _failed(error.message)
        install_backend_contexts(prepared.backend_contexts)  # the supervisor's own checks
        problems: list[str] = []
        async with trio.open_nursery() as nursery:
            for worker in workers:
                order = ReloadOrder(self._next_id(), prepared.config, added)
                nursery.start_soon(self._tell, worker, order, sockets, problems)
        self._switch(prepared, sockets)
        if problems:
            return _failed(f"{'; '.join(sorted(problems))} (the other workers switched)")
        changes = describe_changes(running, prepared.config, self._digests, prepared.digests)
        self._digests = prepared.digests
        changes["listening"] = ",".join(str(bound_address(ls)) for ls in sockets.listeners)
        log_event(logger, logging.INFO, "config.reloaded", workers=len(workers), **changes)
        return ReloadOutcome(True, "\n".join(f"{key}={value}" for key, value in changes.items()))

    async def _bind(
        self, config: ProxyConfig
    ) -> tuple[tuple[tuple[ListenerKey, int], ...], BoundSockets]:
        """The sockets of ``config``'s listeners: kept ones as they are, added ones bound
        now; and the added ones with their socket counts (the order of the descriptors)."""
        old = self.serving
        kept = dict(zip(listener_keys(old.config), old.sockets.listeners, strict=True))
        added: list[tuple[ListenerKey, int]] = []
        listeners: list[list[trio.SocketListener]] = []
        try:
            for key, listener in zip(listener_keys(config), config.listeners, strict=True):
                sockets = kept.get(key)
                if sockets is None:
                    sockets = await bind_listener(listener.bind)
                    added.append((key, len(sockets)))
                listeners.append(sockets)
            _check_fd_count(config, added)
        except BaseException:
            new = {key for key, _ in added}
            for key, sockets in zip(listener_keys(config), listeners, strict=False):
                if key in new:
                    for socket in sockets:
                        await socket.aclose()
            raise
        return tuple(added), BoundSockets(tuple(listeners), old.sockets.admin)

    async def _tell(
        self,
        worker: WorkerLink,
        order: ReloadOrder,
        sockets: BoundSockets,
        problems: list[str],
    ) -> None:
        """Send ``order`` to ``worker`` and wait for its answer; a failure goes to
        ``problems``. A worker not ready now gets the new config when it starts."""
        added = {key for key, _ in order.added}
        fds = [
            socket.socket.fileno()
            for key, listeners in zip(listener_keys(order.config), sockets.listeners, strict=True)
            if key in added
            for socket in listeners
        ]
        with trio.move_on_after(_WORKER_RELOAD_TIMEOUT_S) as scope:
            async with worker.lock:
                control = worker.control
                if control is None:
                    return
                try:
                    await control.send(b"reload " + order.encode(), fds)
                except STREAM_GONE:
                    return  # it is exiting; restarted, it gets the new config
                while (line := await control.receive()) is not None:
                    answer = json.loads(line)
                    if answer.get("id") == order.request_id:
                        if not answer.get("ok"):
                            message = answer.get("message")
                            problems.append(f"worker {worker.index}: {message}")
                        return
        if scope.cancelled_caught:
            problems.append(
                f"worker {worker.index}: no answer within {_WORKER_RELOAD_TIMEOUT_S:g}s"
            )

    def _switch(self, prepared: Prepared, sockets: BoundSockets) -> None:
        """Serve ``prepared`` from now on; close our copies of removed listeners' sockets."""
        kept = {id(socket) for listeners in sockets.listeners for socket in listeners}
        for listeners in self.serving.sockets.listeners:
            for socket in listeners:
                if id(socket) not in kept:
                    socket.socket.close()
        self.serving = Serving(prepared.config, sockets)

    def _next_id(self) -> str:
        self._requests += 1
        return f"r{self._requests}"


def _check_fd_count(config: ProxyConfig, added: list[tuple[ListenerKey, int]]) -> None:
    if sum(count for _, count in added) > MAX_FDS:
        raise ConfigError(
            f"{config.source}: a reload with workers adds at most {MAX_FDS} listening "
            "sockets; restart to add more"
        )


def _failed(message: str) -> ReloadOutcome:
    log_event(logger, logging.ERROR, "config.reload_failed", error=message)
    return ReloadOutcome(False, message)
