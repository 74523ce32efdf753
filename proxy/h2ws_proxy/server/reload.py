"""Reload: re-read the config file and switch the running server to it, losing no tunnel.

Rules:

* ``SIGHUP`` (:func:`reload_on_signals`) and ``POST /reload`` on the admin server
  (:meth:`Reloader.answer_admin`) reload. One reload runs at a time: a ``POST`` meanwhile
  gets 409, a signal waits its turn.
* Everything is built before anything changes: the file is loaded and checked as at
  start (the same one-line :class:`ConfigError`), the listeners' TLS contexts and the
  backends' are loaded, new listeners are bound, the routes and balancers are built. Any
  failure there changes nothing: ``config.reload_failed`` names it and the old config
  keeps serving.
* Then, without awaiting, the server switches (``ServerContext.switch``): new
  connections, and new streams on the connections already open, get the new routes,
  backends, limits and certificates. Tunnels and requests in progress keep the route and
  server they started with; balancer state carries over for servers that stay
  (``backend/balancer.py``); health checks follow the groups.
* Then added listeners start accepting and removed ones drain (``listeners.py``), and
  ``config.reloaded`` says what changed.
* Some changes need a restart, and a reload that makes them is refused, saying so: the
  admin server (added, removed or moved) and ``workers``.
* With ``workers`` > 1 the supervisor loads and checks the file once, binds new
  listeners, and each worker applies the checked config (:meth:`Reloader.apply`) with the
  new sockets it was handed (``reload_workers.py``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import pickle
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

import trio

from h2ws_proxy.backend.health import HealthChecks
from h2ws_proxy.backend.tls import ContextKey, build_backend_contexts, install_backend_contexts
from h2ws_proxy.config import (
    ListenerConfig,
    ProxyConfig,
    RouteConfig,
    SocketAddress,
    build_listener_contexts,
)
from h2ws_proxy.errors import ConfigError
from h2ws_proxy.log import log_event
from h2ws_proxy.relay.context import ServerContext
from h2ws_proxy.server.listeners import ListenerKey, ListenerSet, key_name, listener_keys

logger = logging.getLogger(__name__)

Bind = Callable[[SocketAddress], Awaitable[list[trio.SocketListener]]]
#: Each listener's certificate and key files, hashed: a renewed certificate at the same
#: path shows as a change.
Digests = dict[ListenerKey, str]
#: Sockets bound for the listeners a reload adds (a worker's, from its supervisor).
GivenSockets = Mapping[ListenerKey, list[trio.SocketListener]]


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    ok: bool
    #: What changed (one ``key=value`` a line), or the one-line error.
    message: str


@dataclass(frozen=True, slots=True)
class Prepared:
    """A checked config and what it loads from files, ready to switch to."""

    config: ProxyConfig
    listener_contexts: list[ssl.SSLContext | None]
    backend_contexts: dict[ContextKey, ssl.SSLContext]
    digests: Digests


def prepare(config: ProxyConfig, running: ProxyConfig) -> Prepared:
    """Load ``config``'s certificates and keys (blocking: run it in a thread) and check it
    may replace ``running``; raises ConfigError."""
    problem = restart_needed(running, config)
    if problem is not None:
        raise ConfigError(problem)
    return Prepared(
        config, build_listener_contexts(config), build_backend_contexts(config), digests(config)
    )


def restart_needed(running: ProxyConfig, config: ProxyConfig) -> str | None:
    """Why ``config`` cannot replace ``running`` without a restart, or None."""
    if running.workers != config.workers:
        return (
            f"{config.source}: workers: {running.workers} -> {config.workers} needs a restart; "
            "the old config keeps serving"
        )
    if running.admin != config.admin:
        before = running.admin.bind if running.admin else "none"
        after = config.admin.bind if config.admin else "none"
        return (
            f"{config.source}: admin.bind: {before} -> {after} needs a restart (the admin "
            "server stays as started); the old config keeps serving"
        )
    return None


def digests(config: ProxyConfig) -> Digests:
    """Each TLS listener's certificate and key files, hashed (blocking)."""
    found: Digests = {}
    for key, listener in zip(listener_keys(config), config.listeners, strict=True):
        if listener.tls is None:
            continue
        digest = hashlib.sha256()
        for certificate in listener.tls.all_certificates():
            for path in (certificate.cert, certificate.key):
                try:
                    digest.update(path.read_bytes())
                except OSError:
                    digest.update(b"unreadable")  # the contexts were built: it was there
        found[key] = digest.hexdigest()[:16]
    return found


def describe_changes(
    running: ProxyConfig, config: ProxyConfig, before: Digests, after: Digests
) -> dict[str, str]:
    """What ``config`` changes from ``running``: the ``config.reloaded`` fields."""
    old_routes = {_route_key(route): route for route in running.routes}
    new_routes = {_route_key(route): route for route in config.routes}
    old_keys, new_keys = set(listener_keys(running)), set(listener_keys(config))
    old_groups = {group.name: group for group in running.backends}
    new_groups = {group.name: group for group in config.backends}
    changes = {
        "routes_added": _names(new_routes.keys() - old_routes.keys()),
        "routes_removed": _names(old_routes.keys() - new_routes.keys()),
        "routes_changed": _names(
            key
            for key in new_routes.keys() & old_routes.keys()
            if new_routes[key] != old_routes[key]
        ),
        "backends_changed": _names(
            name
            for name in new_groups.keys() | old_groups.keys()
            if new_groups.get(name) != old_groups.get(name)
        ),
        "listeners_added": _names(map(key_name, new_keys - old_keys)),
        "listeners_removed": _names(map(key_name, old_keys - new_keys)),
        "certificates": _names(
            key_name(key) for key in new_keys & old_keys if before.get(key) != after.get(key)
        ),
    }
    limits_changed = running.limits != config.limits
    changes["limits"] = "changed" if limits_changed else "-"
    return changes


def _route_key(route: RouteConfig) -> str:
    """A route as its hosts and path tell it (``chat.example.com/chat``, ``/``)."""
    return f"{'|'.join(route.host)}{route.path}"


def _names(names: Iterable[str]) -> str:
    listed = sorted(names)
    return ",".join(listed) if listed else "-"


class Reloader:
    """Reloads one running server (a single process, or one worker)."""

    def __init__(self, load: Callable[[], ProxyConfig] | None = None) -> None:
        #: Reads and checks the config file (the CLI's ``load_config``, ``--workers`` applied).
        self._load = load
        self._lock = trio.Lock()
        self._server: ServerContext | None = None
        self._listeners: ListenerSet | None = None
        self._health: HealthChecks | None = None
        self._bind: Bind | None = None
        self._digests: Digests = {}

    def attach(
        self,
        server: ServerContext,
        listeners: ListenerSet,
        health: HealthChecks,
        bind: Bind,
    ) -> None:
        """Reload ``server`` from now on (``serve`` calls it once it listens)."""
        self._server, self._listeners, self._health, self._bind = server, listeners, health, bind
        self._digests = digests(server.config)

    async def answer_admin(self) -> tuple[int, bytes]:
        """``POST /reload``: 200 and what changed, 500 and why not, 409 while one runs."""
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            return 409, b"a reload is already running; try again when it ends\n"
        try:
            outcome = await self._reload_file()
        finally:
            self._lock.release()
        return (200 if outcome.ok else 500), outcome.message.encode() + b"\n"

    async def reload(self) -> ReloadOutcome:
        """Reload from the file (after any reload in progress)."""
        async with self._lock:
            return await self._reload_file()

    async def _reload_file(self) -> ReloadOutcome:
        load, server = self._load, self._server
        if load is None or server is None:
            return _failed("nothing to reload: no config file, or not serving yet")
        running = server.config
        try:
            prepared = await trio.to_thread.run_sync(load_and_prepare, load, running)
        except ConfigError as error:
            return _failed(error.message)
        return await self._switch(prepared, {})

    async def apply(self, config: ProxyConfig, sockets: GivenSockets) -> ReloadOutcome:
        """Switch to ``config``, checked already (a worker, told by its supervisor), with
        ``sockets`` bound for the listeners it adds."""
        async with self._lock:
            assert self._server is not None, "attach() first"
            running = self._server.config
            try:
                prepared = await trio.to_thread.run_sync(prepare, config, running)
            except ConfigError as error:
                return _failed(error.message)
            return await self._switch(prepared, sockets)

    async def _switch(self, prepared: Prepared, given: GivenSockets) -> ReloadOutcome:
        server, listeners, health = self._server, self._listeners, self._health
        assert server is not None, "attach() first"
        assert listeners is not None
        assert health is not None
        if server.shutdown.is_set():
            return _failed("the server is draining; not reloading")
        config, running = prepared.config, server.config
        keys = listener_keys(config)
        added = [
            (key, listener)
            for key, listener in zip(keys, config.listeners, strict=True)
            if key not in listeners.by_key
        ]
        try:
            opened = await self._open_sockets(added, given)
        except ConfigError as error:
            return _failed(error.message)
        if server.shutdown.is_set():  # began to drain while we bound
            for sockets in opened.values():
                for socket in sockets:
                    await socket.aclose()
            return _failed("the server is draining; not reloading")
        generation = server.next_generation(config)
        # The switch: no await from here until every piece is in place.
        server.switch(generation)
        install_backend_contexts(prepared.backend_contexts)
        contexts = prepared.listener_contexts
        for key, listener, context in zip(keys, config.listeners, contexts, strict=True):
            served = listeners.by_key.get(key)
            if served is not None and key not in opened:
                served.config, served.ssl_context = listener, context
                served.capacity.resize(config.limits.max_connections)
        health.update(generation.balancers)
        changes = describe_changes(running, config, self._digests, prepared.digests)
        self._digests = prepared.digests
        for key, listener, context in zip(keys, config.listeners, contexts, strict=True):
            if key in opened:
                await listeners.open(key, listener, opened[key], context)
        for key in [key for key in listeners.by_key if key not in keys]:
            await listeners.close(key, config.limits.graceful_timeout_s)
        changes["listening"] = ",".join(
            _bound(served.sockets) for served in listeners.by_key.values()
        )
        log_event(logger, logging.INFO, "config.reloaded", generation=generation.number, **changes)
        return ReloadOutcome(True, "\n".join(f"{key}={value}" for key, value in changes.items()))

    async def _open_sockets(
        self, added: list[tuple[ListenerKey, ListenerConfig]], given: GivenSockets
    ) -> dict[ListenerKey, list[trio.SocketListener]]:
        opened: dict[ListenerKey, list[trio.SocketListener]] = {}
        try:
            for key, listener in added:
                if key in given:
                    opened[key] = list(given[key])
                else:
                    assert self._bind is not None
                    opened[key] = await self._bind(listener.bind)
        except BaseException:
            for sockets in opened.values():
                for socket in sockets:
                    await socket.aclose()
            raise
        return opened


def load_and_prepare(load: Callable[[], ProxyConfig], running: ProxyConfig) -> Prepared:
    """Load the file and :func:`prepare` it (blocking); raises ConfigError."""
    return prepare(load(), running)


def _bound(sockets: list[trio.SocketListener]) -> str:
    host, port = sockets[0].socket.getsockname()[:2]
    return str(SocketAddress(host=host, port=port))


def _failed(message: str) -> ReloadOutcome:
    log_event(logger, logging.ERROR, "config.reload_failed", error=message)
    return ReloadOutcome(False, message)


@dataclass(frozen=True, slots=True)
class ReloadOrder:
    """A supervisor's ``reload`` message to a worker: the checked config, and the
    listeners it adds with how many of the message's descriptors are each one's sockets."""

    request_id: str
    config: ProxyConfig
    added: tuple[tuple[ListenerKey, int], ...]

    @property
    def fd_count(self) -> int:
        return sum(count for _, count in self.added)

    def encode(self) -> bytes:
        # pickle between two processes of one installation, over a private socket pair.
        return base64.b64encode(pickle.dumps(self))

    @staticmethod
    def decode(data: bytes) -> ReloadOrder:
        order = pickle.loads(base64.b64decode(data))  # our own supervisor wrote it
        if not isinstance(order, ReloadOrder):
            raise TypeError(f"expected a ReloadOrder, got {type(order).__name__}")
        return order

    async def apply(self, reloader: Reloader, fds: list[int]) -> bytes:
        """Switch the worker's server; the answer line for the supervisor."""
        sockets: dict[ListenerKey, list[trio.SocketListener]] = {}
        for key, count in self.added:
            taken, fds = fds[:count], fds[count:]
            sockets[key] = [listener_of_fd(fd) for fd in taken]
        outcome = await reloader.apply(self.config, sockets)
        if not outcome.ok:
            for listeners in sockets.values():
                for listener in listeners:
                    await listener.aclose()
        answer = {"id": self.request_id, "ok": outcome.ok, "message": outcome.message}
        return json.dumps(answer).encode()


def listener_of_fd(fd: int) -> trio.SocketListener:
    """A listening socket inherited or received as ``fd``."""
    return trio.SocketListener(trio.socket.from_stdlib_socket(socket.socket(fileno=fd)))


async def reload_on_signals(reload: Callable[[], Awaitable[object]]) -> None:
    """Every SIGHUP: ``reload`` (one after the other)."""
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        async for _ in signals:
            logger.info("SIGHUP: reloading the config")
            await reload()
