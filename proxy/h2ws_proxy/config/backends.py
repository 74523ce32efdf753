"""``[[backend]]`` tables (named groups of servers) and a route's ``backend`` value. Pure,
but for the TLS files it checks exist.

Rules:

* A group has a ``name`` (letters, digits, ``.``, ``_``, ``-``; unique) and ``servers``: a
  non-empty array of backend URLs (``http://``, ``https://``, ``unix:``), each once.
* ``balance`` is ``"round_robin"`` (default), ``"least_connections"``, ``"client_ip"`` or
  ``"cookie"``; ``sticky_cookie`` (a cookie name) is required with ``"cookie"`` and refused
  without it.
* ``max_connections`` (per server, 0: no limit), ``max_fails`` (0: no passive health) are
  integers >= 0; ``queue_timeout_s`` and ``fail_timeout_s`` are seconds > 0.
* ``[backend.health_check]``: ``path`` (starts with ``/``), ``interval_s``, ``timeout_s``
  (> 0, the timeout below the interval), ``healthy``, ``unhealthy`` (>= 1).
* ``[backend.tls]`` (only with an ``https://`` server): ``ca`` (a PEM file), ``server_name``,
  ``cert``/``key`` (both or neither: mutual TLS), ``verify`` (true unless written). The
  TLS context is built once here, so a file that does not load (no PEM certificate in
  ``ca``, a key that does not match ``cert``) is an error at load, naming the files.
* ``protocol`` (``"http/1.1"``, the default; ``"h2"``; ``"auto"``) is what the group's
  ``https://`` servers are spoken to with: ``h2`` offers only ``h2`` in ALPN, ``auto``
  offers ``h2`` and ``http/1.1`` and the server chooses (RFC 7301). ``h2c://`` servers
  speak HTTP/2 whatever it says; it is refused for a group with only ``http://`` or
  ``unix:`` servers (write ``h2c://`` for cleartext HTTP/2).
* A route's ``backend`` is a URL (a group of one), an array of URLs (a group with the
  defaults), or the name of a group. A name used but not defined is an error.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Mapping, Sequence

from h2ws_proxy.config.addresses import parse_backend
from h2ws_proxy.config.backend_tls import BackendTLSFileError, build_backend_ssl_context
from h2ws_proxy.config.model import (
    BackendAddress,
    BackendGroup,
    BackendProtocol,
    BackendTLS,
    Balance,
    CertificateConfig,
    HealthCheck,
)
from h2ws_proxy.config.tables import Table, describe

__all__ = ["BACKEND_KEYS", "parse_backend_group", "parse_route_backend"]

BACKEND_KEYS = (
    "name",
    "servers",
    "balance",
    "sticky_cookie",
    "max_connections",
    "queue_timeout_s",
    "max_fails",
    "fail_timeout_s",
    "health_check",
    "tls",
    "protocol",
)
_PROTOCOLS: tuple[BackendProtocol, ...] = ("http/1.1", "h2", "auto")
_BALANCES: tuple[Balance, ...] = ("round_robin", "least_connections", "client_ip", "cookie")
_NAME = re.compile(r"[A-Za-z0-9._-]+")
#: RFC 6265 §4.1.1 cookie-name: a token.
_COOKIE_NAME = re.compile(r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_URL_EXAMPLE = 'backend = "http://127.0.0.1:9000"'


def parse_backend_group(table: Table) -> BackendGroup:
    """The named group of a ``[[backend]]`` table; raises ConfigError naming key and line."""
    table.check_keys(BACKEND_KEYS)
    name = table.string("name", 'name = "chat"')
    if not _NAME.fullmatch(name):
        raise table.error("name", f"{json.dumps(name)}: use letters, digits, '.', '_' and '-' only")
    tls = _backend_tls(table)
    servers = _with_protocol(table, _servers(table, tls))
    balance = _balance(table)
    sticky_cookie = _sticky_cookie(table, balance)
    return BackendGroup(
        servers=servers,
        name=name,
        balance=balance,
        sticky_cookie=sticky_cookie,
        max_connections=_count(table, "max_connections", 0),
        queue_timeout_s=_seconds(table, "queue_timeout_s", 5.0),
        max_fails=_count(table, "max_fails", 3),
        fail_timeout_s=_seconds(table, "fail_timeout_s", 10.0),
        health_check=_health_check(table),
    )


def parse_route_backend(table: Table, groups: Mapping[str, BackendGroup]) -> BackendGroup:
    """A route's ``backend``: a URL, an array of URLs, or a group's name."""
    value = table.require("backend", _URL_EXAMPLE)
    if isinstance(value, list):
        if not value:
            raise table.error("backend", f"is an empty list; write e.g. {_URL_EXAMPLE}")
        return BackendGroup.of(*_addresses(table, "backend", value, None))
    if not isinstance(value, str):
        problem = f"must be a URL, a list of URLs or a [[backend]] name, not {describe(value)}"
        raise table.error("backend", f"{problem}; write e.g. {_URL_EXAMPLE}")
    if ":" not in value:
        group = groups.get(value)
        if group is None:
            known = ", ".join(sorted(groups)) or "none"
            raise table.error(
                "backend",
                f"no [[backend]] is named {json.dumps(value)} (defined: {known}); "
                f'define one with name = "{value}", or give a URL such as http://{value}:9000',
            )
        return group
    return BackendGroup.of(*_addresses(table, "backend", [value], None))


def _servers(table: Table, tls: BackendTLS | None) -> tuple[BackendAddress, ...]:
    value = table.require("servers", 'servers = ["http://127.0.0.1:9000"]')
    if not isinstance(value, list) or not value:
        given = "an empty list" if value == [] else describe(value)
        raise table.error(
            "servers",
            f"must be a non-empty list of backend URLs, not {given}; write e.g. "
            'servers = ["http://127.0.0.1:9000", "http://127.0.0.1:9001"]',
        )
    servers = _addresses(table, "servers", value, tls)
    if tls is not None and not any(server.scheme == "https" for server in servers):
        raise table.error("tls", "applies to https:// servers, and this group has none")
    return servers


def _addresses(
    table: Table, key: str, values: Sequence[object], tls: BackendTLS | None
) -> tuple[BackendAddress, ...]:
    addresses: list[BackendAddress] = []
    for item in values:
        if not isinstance(item, str):
            raise table.error(key, f"must list URLs as strings, not {describe(item)}")
        try:
            address = parse_backend(item)
        except ValueError as exc:
            raise table.error(key, str(exc)) from None
        if address.scheme == "unix" and not os.path.isabs(address.unix_path):
            unix_path = os.path.abspath(table.ctx.base_dir / address.unix_path)
            address = BackendAddress("unix", unix_path=unix_path)
        if address.scheme == "https" and tls is not None:
            address = BackendAddress("https", address.host, address.port, tls=tls)
        if address in addresses:
            raise table.error(key, f"{item} is listed twice; list each server once")
        addresses.append(address)
    return tuple(addresses)


def _with_protocol(table: Table, servers: tuple[BackendAddress, ...]) -> tuple[BackendAddress, ...]:
    """The group's ``https://`` servers with its ``protocol`` (see the module's rules)."""
    if "protocol" not in table.data:
        return servers
    value = table.data["protocol"]
    protocol = next((choice for choice in _PROTOCOLS if value == choice), None)
    if protocol is None:
        choices = ", ".join(json.dumps(choice) for choice in _PROTOCOLS)
        given = json.dumps(value) if isinstance(value, str) else describe(value)
        raise table.error("protocol", f"must be one of {choices}, not {given}")
    if not any(server.scheme == "https" for server in servers):
        raise table.error(
            "protocol",
            "applies to https:// servers, and this group has none; "
            "for HTTP/2 in cleartext write the servers as h2c://host:port",
        )
    return tuple(
        dataclasses.replace(server, protocol=protocol) if server.scheme == "https" else server
        for server in servers
    )


def _balance(table: Table) -> Balance:
    value = table.data.get("balance", "round_robin")
    for balance in _BALANCES:
        if value == balance:
            return balance
    choices = ", ".join(json.dumps(choice) for choice in _BALANCES)
    given = json.dumps(value) if isinstance(value, str) else describe(value)
    raise table.error("balance", f"must be one of {choices}, not {given}")


def _sticky_cookie(table: Table, balance: Balance) -> str:
    if "sticky_cookie" not in table.data:
        if balance == "cookie":
            raise table.ctx.error(
                (*table.path, "sticky_cookie"),
                'is required with balance = "cookie"; add e.g. sticky_cookie = "h2ws_server"',
                at=(*table.path, "balance"),
            )
        return ""
    value = table.string("sticky_cookie", 'sticky_cookie = "h2ws_server"')
    if balance != "cookie":
        raise table.error(
            "sticky_cookie", 'only applies with balance = "cookie"; remove it or set that'
        )
    if not _COOKIE_NAME.fullmatch(value):
        raise table.error("sticky_cookie", f"{json.dumps(value)} is not a cookie name (a token)")
    return value


def _count(table: Table, key: str, default: int, low: int = 0) -> int:
    value = table.data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise table.error(
            key, f"must be an integer, not {describe(value)}; write e.g. {key} = {default}"
        )
    if not low <= value <= 1_000_000:
        raise table.error(key, f"{value} is out of range; use a value from {low} to 1000000")
    return value


def _seconds(table: Table, key: str, default: float) -> float:
    value = table.data.get(key, default)
    example = f"write e.g. {key} = {default}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise table.error(key, f"must be a number of seconds, not {describe(value)}; {example}")
    if not math.isfinite(value) or value <= 0:
        raise table.error(key, f"must be a finite number of seconds greater than 0; {example}")
    return float(value)


def _health_check(table: Table) -> HealthCheck | None:
    check = table.table("health_check")
    if check is None:
        return None
    check.check_keys(("path", "interval_s", "timeout_s", "healthy", "unhealthy"))
    path = check.data.get("path", "/")
    if (
        not isinstance(path, str)
        or not path.startswith("/")
        or any(char.isspace() or not char.isprintable() for char in path)
    ):
        raise check.error("path", 'must be a path starting with "/"; write e.g. path = "/healthz"')
    interval_s = _seconds(check, "interval_s", 5.0)
    timeout_s = _seconds(check, "timeout_s", 2.0)
    if timeout_s >= interval_s:
        raise check.error(
            "timeout_s", f"must be below interval_s ({interval_s:g}); lower it or raise that"
        )
    return HealthCheck(
        path=path,
        interval_s=interval_s,
        timeout_s=timeout_s,
        healthy=_count(check, "healthy", 2, low=1),
        unhealthy=_count(check, "unhealthy", 3, low=1),
    )


def _backend_tls(table: Table) -> BackendTLS | None:
    tls = table.table("tls")
    if tls is None:
        return None
    tls.check_keys(("ca", "server_name", "cert", "key", "verify"))
    ca = tls.file("ca", 'ca = "backend-ca.pem"') if "ca" in tls.data else None
    server_name = None
    if "server_name" in tls.data:
        server_name = tls.string("server_name", 'server_name = "backend.internal"')
        if not server_name or any(char.isspace() for char in server_name):
            raise tls.error(
                "server_name", 'must be a host name; write e.g. server_name = "app.internal"'
            )
    client_cert = None
    if ("cert" in tls.data) != ("key" in tls.data):
        missing = "key" if "cert" in tls.data else "cert"
        raise tls.error(
            missing, f"missing; mutual TLS needs both cert and key (add {missing} = ...)"
        )
    if "cert" in tls.data:
        client_cert = CertificateConfig(
            tls.file("cert", 'cert = "client.pem"'), tls.file("key", 'key = "client-key.pem"')
        )
    backend_tls = BackendTLS(
        ca=ca, server_name=server_name, client_cert=client_cert, verify=tls.boolean("verify", True)
    )
    try:
        build_backend_ssl_context(backend_tls)
    except BackendTLSFileError as error:
        raise tls.error(error.key, error.message) from None
    return backend_tls
