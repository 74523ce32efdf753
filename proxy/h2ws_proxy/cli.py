"""The ``h2ws-proxy`` command: load the config, run the server, map failures to exit codes.

Exit codes: 0 after a clean stop (SIGTERM/SIGINT drain), 2 for a configuration problem
(the one-line message names the file, key and line), 1 for anything unexpected.
A second SIGTERM/SIGINT while draining stops at once. SIGHUP reloads the config file
(``server/reload.py``).

``h2ws-proxy healthcheck --admin HOST:PORT`` asks a running proxy's admin server instead
(``server/healthcheck.py``: exit 0 on a 200 from ``/healthz``), for container health checks.
``h2ws-proxy connect URL`` opens a WebSocket from the terminal (``client/``; its own exit
codes, ``client/options.py``).

With ``workers`` > 1 (config or ``--workers``) this process becomes the supervisor
(``supervisor.py``); ``--worker-fd`` is how the supervisor starts a worker (``worker.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import sys
from collections.abc import Callable, Sequence

import trio

from h2ws_proxy import __version__
from h2ws_proxy.client.connect import connect_main
from h2ws_proxy.config import (
    ProxyConfig,
    RouteConfig,
    advertises_connect_protocol,
    build_listener_contexts,
    load_config,
    parse_workers,
    read_certificate,
)
from h2ws_proxy.errors import ConfigError
from h2ws_proxy.log import configure_logging
from h2ws_proxy.server.demo import serve_demo_backend
from h2ws_proxy.server.healthcheck import healthcheck_main
from h2ws_proxy.server.reload import Reloader, reload_on_signals
from h2ws_proxy.server.serve import drain_on_signals, serve
from h2ws_proxy.server.supervisor import supervise
from h2ws_proxy.server.worker import run_worker

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="h2ws-proxy",
        description="WebSocket over HTTP/2 (RFC 8441) in front of HTTP/1.1 WebSocket backends.",
        epilog="h2ws-proxy healthcheck --admin HOST:PORT [--path /readyz]: "
        "exit 0 if a running proxy's admin server answers 200. "
        "h2ws-proxy connect URL: a WebSocket from the terminal over HTTP/2 or HTTP/1.1 "
        "(h2ws-proxy connect --help)",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="TOML configuration (see config/example.toml)"
    )
    parser.add_argument(
        "--check", action="store_true", help="validate the config, print what it serves, exit"
    )
    parser.add_argument(
        "--demo-backend",
        action="store_true",
        help="also run a demo WebSocket echo server on every http:// backend address",
    )
    parser.add_argument(
        "--workers",
        metavar="N",
        help='worker processes, overriding the config\'s workers ("auto": one per CPU)',
    )
    parser.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)  # supervisor.py
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    parser.add_argument("--version", action="version", version=f"h2ws-proxy {__version__}")
    return parser


def describe(config: ProxyConfig) -> str:
    """A human summary of what ``config`` serves (printed by ``--check``)."""
    lines = [f"config {config.source} is valid"]
    for listener in config.listeners:
        mode = (
            "TLS (ALPN h2, http/1.1)"
            if listener.tls
            else "cleartext (h2c prior knowledge + HTTP/1.1)"
        )
        advertised = (
            "advertises" if advertises_connect_protocol(config, listener) else "does not advertise"
        )
        why = " (auto)" if listener.enable_connect_protocol == "auto" else ""
        lines.append(
            f"listener {listener.bind}: {mode}; {advertised} SETTINGS_ENABLE_CONNECT_PROTOCOL{why}"
        )
        for certificate in listener.tls.all_certificates() if listener.tls else ():
            names = read_certificate(certificate).names
            lines.append(f"  certificate {certificate.cert}: {names}")
    for group in config.backends:
        servers = ", ".join(map(str, group.servers))
        checks = "health checks on" if group.health_check else "no health checks"
        lines.append(f"backend {group.name}: {group.balance} over {servers}; {checks}")
    for route in sorted(config.routes, key=lambda r: r.path):
        lines.append(f"route {route.path} -> {route.backend}{_route_settings(route)}")
    for group in config.backends:
        if any(server.tls is not None and not server.tls.verify for server in group.servers):
            lines.append(
                f"backend {group.name}: verify = false (its servers' certificates are not checked)"
            )
    if config.admin:
        lines.append(f"admin {config.admin.bind}: /healthz, /readyz, /stats")
    if config.workers > 1:
        lines.append(f"workers {config.workers}: a supervisor and {config.workers} processes")
    return "\n".join(lines)


def _route_settings(route: RouteConfig) -> str:
    """The route's settings that differ from the defaults, as written in TOML: the hosts it
    serves, and those that change what reaches its backend or who may open WebSockets, are
    worth seeing at a glance."""
    settings = []
    if route.host:
        settings.append(f"host = {json.dumps(list(route.host))}")
    if not route.websocket:
        settings.append("websocket = false")
    if not route.normalize_path:
        settings.append("normalize_path = false")
    if route.x_forwarded is not True:
        settings.append(f"x_forwarded = {json.dumps(route.x_forwarded)}")
    if route.strip_fields:
        names = sorted(name.decode("ascii") for name in route.strip_fields)
        settings.append(f"strip_fields = {json.dumps(names)}")
    if route.allowed_origins:
        settings.append(f"allowed_origins = {json.dumps(list(route.allowed_origins))}")
    if route.require_origin:
        settings.append("require_origin = true")
    return f" ({', '.join(settings)})" if settings else ""


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == ["healthcheck"]:
        return healthcheck_main(arguments[1:])
    if arguments[:1] == ["connect"]:
        return connect_main(arguments[1:])
    args = _parser().parse_args(arguments)
    if args.worker_fd is not None:
        return run_worker(args.worker_fd)
    if not args.config:
        print(
            "h2ws-proxy: error: --config FILE is required (try config/example.toml)",
            file=sys.stderr,
        )
        return 2
    load = functools.partial(_load, args.config, args.workers)
    try:
        config = load()
    except ConfigError as error:
        print(f"h2ws-proxy: error: {error.message}", file=sys.stderr)
        return 2
    if args.check:
        try:
            build_listener_contexts(config)  # the certificates and keys, loaded as at start
            print(describe(config))
        except ConfigError as error:
            print(f"h2ws-proxy: error: {error.message}", file=sys.stderr)
            return 2
        return 0
    configure_logging(args.log_level, args.log_format)
    try:
        return trio.run(_run, config, load, args.demo_backend, args.log_level, args.log_format)
    except (ConfigError, BaseExceptionGroup) as error:
        # A bind failure surfaces from inside the nursery, wrapped in an ExceptionGroup.
        problems = _config_errors(error)
        if not problems:
            raise
        for problem in problems:
            print(f"h2ws-proxy: error: {problem.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def _load(path: str, workers: str | None) -> ProxyConfig:
    """The config file as the command line amends it (at start and on each reload);
    raises ConfigError."""
    config = load_config(path)
    if workers is not None:
        config = dataclasses.replace(config, workers=_workers_option(workers))
    return config


def _workers_option(value: str) -> int:
    """``--workers N`` or ``--workers auto``; raise ConfigError."""
    try:
        return parse_workers(value if value == "auto" else int(value))
    except ValueError as error:
        problem = str(error) if value.strip().isdigit() else 'write a number or "auto"'
        raise ConfigError(f"--workers {value}: {problem}") from None


def _config_errors(error: BaseException) -> list[ConfigError]:
    """The ConfigErrors in ``error`` when that is all it holds, else an empty list."""
    if isinstance(error, ConfigError):
        return [error]
    if isinstance(error, BaseExceptionGroup):
        matched, rest = error.split(ConfigError)
        if matched is not None and rest is None:
            return [leaf for inner in matched.exceptions for leaf in _config_errors(inner)]
    return []


async def _run(
    config: ProxyConfig,
    load: Callable[[], ProxyConfig],
    demo_backend: bool,
    log_level: str,
    log_format: str,
) -> int:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        if demo_backend:
            addresses = {server for route in config.routes for server in route.backend.servers}
            for address in sorted(addresses, key=str):
                await nursery.start(serve_demo_backend, address)
        if config.workers > 1:
            code = await supervise(config, log_level=log_level, log_format=log_format, load=load)
            nursery.cancel_scope.cancel()
            return code
        nursery.start_soon(drain_on_signals, shutdown, nursery.cancel_scope)
        reloader = Reloader(load)
        nursery.start_soon(reload_on_signals, reloader.reload)
        await serve(config, shutdown=shutdown, reloader=reloader)
        nursery.cancel_scope.cancel()
    return 0
