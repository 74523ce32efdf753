"""The schema: parse_config (validated TOML to :class:`ProxyConfig`) and load_config (a file).

Rules:

* Five top-level keys: ``workers`` (optional integer, or ``"auto"``), ``[[listener]]`` and
  ``[[route]]`` (arrays of tables, at least one of each), ``[admin]`` and ``[limits]``
  (optional tables). Any other key, at any level, is an error.
* Timeouts take integers or floats (stored as ``float``), finite, greater than 0 (or 0 to
  disable, where the limit says so); the other limits take integers in their ranges.
* Listener binds are unique (port 0 excepted) and the admin bind differs from all of them.
* Route paths are unique; each ``[[route]]`` table is read by ``routes.py`` (its rules).
* ``load_config`` refuses a file that cannot be read, is not UTF-8 or is not TOML, naming
  the line where it can.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

from h2ws_proxy.config.backends import parse_backend_group
from h2ws_proxy.config.certificates import CertificateError, group_by_names, read_certificate
from h2ws_proxy.config.locate import Locator
from h2ws_proxy.config.model import (
    AdminConfig,
    BackendGroup,
    CertificateConfig,
    Limits,
    ListenerConfig,
    ProxyConfig,
    RouteConfig,
    SocketAddress,
    TLSConfig,
)
from h2ws_proxy.config.routes import parse_route
from h2ws_proxy.config.tables import Context, Table, describe
from h2ws_proxy.errors import ConfigError

__all__ = ["MAX_WORKERS", "load_config", "parse_config", "parse_workers"]

MIB = 1024 * 1024
#: Upper bound of ``workers``: far past any useful count on one machine (the supervisor
#: holds one pipe and one process per worker), low enough to catch a typo like 800.
MAX_WORKERS = 64

#: Inclusive ranges of the integer limits; the other limits are seconds.
_INT_LIMITS: dict[str, tuple[int, int]] = {
    "max_concurrent_streams": (1, 65535),
    "stream_window_bytes": (65535, 2**31 - 1),  # RFC 9113 §6.9.1 window bounds
    "max_header_list_bytes": (1024, 16 * MIB),
    "max_rejection_body_bytes": (0, 16 * MIB),
    "max_connections": (1, 1_000_000),
    "max_connections_per_client": (0, 1_000_000),  # 0: no limit
    "max_tunnels_per_client": (0, 1_000_000),  # 0: no limit
    "max_stream_resets": (1, 1_000_000),
    "max_empty_frames": (1, 1_000_000),
    "backend_max_idle": (0, 100_000),
}
#: Second-valued limits where 0 means "disabled".
_ZERO_DISABLES = frozenset(
    {
        "idle_timeout_s",
        "idle_connection_timeout_s",
        "backend_keepalive_s",
        "half_closed_timeout_s",
        "drain_accept_s",
    }
)


_TOP_KEYS = ("workers", "listener", "backend", "route", "admin", "limits")
#: ``workers = 2`` written below a table header lands in that table (TOML's rule).
_TOP_LEVEL_HINTS = {
    "workers": "is a top-level key; move it above the first [table] or [[table]] of the file"
}
_MOVED_TO_LISTENER = {
    "enable_connect_protocol": "belongs to the [[listener]] table; move it above [listener.tls]"
}


def _parse_listener(table: Table) -> ListenerConfig:
    table.check_keys(
        ("bind", "tls", "enable_connect_protocol", "protocols"), hints=_TOP_LEVEL_HINTS
    )
    bind = table.address("bind", 'bind = "127.0.0.1:8443"')
    tls_table = table.table("tls")
    tls = None if tls_table is None else _parse_tls(tls_table)
    return ListenerConfig(bind, tls, _connect_protocol_setting(table), _protocols(table))


#: What a listener can serve, by ALPN name (RFC 7301; "h2" is RFC 9113 §3.2).
_PROTOCOLS = ("h2", "http/1.1")


def _protocols(table: Table) -> tuple[str, ...]:
    value = table.data.get("protocols", list(_PROTOCOLS))
    example = 'protocols = ["h2", "http/1.1"]'
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(item, str) and item in _PROTOCOLS for item in value)
        or len(set(value)) != len(value)
    ):
        given = json.dumps(value) if isinstance(value, list) else describe(value)
        raise table.error(
            "protocols",
            f'must list "h2", "http/1.1" or both, once each, not {given}; write e.g. {example}',
        )
    return tuple(value)


def _connect_protocol_setting(table: Table) -> bool | Literal["auto"]:
    value = table.data.get("enable_connect_protocol", "auto")
    if value == "auto" or isinstance(value, bool):
        return value
    raise table.error(
        "enable_connect_protocol",
        f'must be "auto", true or false, not {describe(value)}; write e.g. '
        'enable_connect_protocol = "auto"',
    )


def _parse_tls(table: Table) -> TLSConfig:
    """``cert``/``key`` (the default certificate) and/or ``[[listener.tls.certificate]]``
    tables, at least one certificate in all; each read and checked as the server will
    load it (``certificates.py``), its problems located at its ``cert`` or ``key``."""
    table.check_keys(("cert", "key", "certificate"), hints=_MOVED_TO_LISTENER)
    certificate_tables: list[Table] = []
    if "certificate" in table.data:
        certificate_tables = table.tables("certificate")
    certificates = tuple(_certificate(item) for item in certificate_tables)
    if certificates and "cert" not in table.data and "key" not in table.data:
        tls = TLSConfig(certificates=certificates)
        _check_certificates(tls, certificate_tables)
        return tls
    tls = TLSConfig(
        cert=table.file("cert", 'cert = "cert.pem"'),
        key=table.file("key", 'key = "key.pem"'),
        certificates=certificates,
    )
    _check_certificates(tls, [table, *certificate_tables])
    return tls


def _check_certificates(tls: TLSConfig, tables: list[Table]) -> None:
    """Read every certificate and key now, so that a bad one is a located config error
    (the server loads them again, the same way, when it starts)."""
    loaded = []
    for certificate, where in zip(tls.all_certificates(), tables, strict=True):
        try:
            loaded.append(read_certificate(certificate))
        except CertificateError as error:
            raise where.error(error.key, error.message) from error
    try:
        group_by_names(loaded)
    except CertificateError as error:
        raise tables[error.index or 0].error(error.key, error.message) from error


def _certificate(table: Table) -> CertificateConfig:
    table.check_keys(("cert", "key"))
    return CertificateConfig(
        cert=table.file("cert", 'cert = "cert.pem"'), key=table.file("key", 'key = "key.pem"')
    )


def _parse_admin(table: Table) -> AdminConfig:
    table.check_keys(("bind",), hints=_TOP_LEVEL_HINTS)
    return AdminConfig(table.address("bind", 'bind = "127.0.0.1:9901"'))


def parse_workers(value: object) -> int:
    """``workers``: an integer from 1 to :data:`MAX_WORKERS`, or ``"auto"`` (one per CPU,
    capped at :data:`MAX_WORKERS`); raise ValueError with a readable reason."""
    if value == "auto":
        return max(1, min(os.cpu_count() or 1, MAX_WORKERS))
    if isinstance(value, bool) or not isinstance(value, int):
        problem = f'must be an integer or "auto", not {describe(value)}; write e.g. workers = 2'
        raise ValueError(problem)  # noqa: TRY004 (as parse_backend: the caller adds the key)
    if not 1 <= value <= MAX_WORKERS:
        raise ValueError(f"{value} is out of range; use a value from 1 to {MAX_WORKERS}")
    return value


def _workers_setting(root: Table) -> int:
    try:
        return parse_workers(root.data.get("workers", 1))
    except ValueError as exc:
        raise root.error("workers", str(exc)) from None


#: Limits that are switches.
_BOOL_LIMITS = frozenset({"drain_close_websockets"})


def _limit_value(table: Table, name: str) -> float | int | bool:
    if name in _BOOL_LIMITS:
        return table.boolean(name, default=False)
    value, default = table.data[name], getattr(Limits(), name)
    example = f"write e.g. {name} = {100 if default is None else default}"
    if name in _INT_LIMITS:
        low, high = _INT_LIMITS[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise table.error(name, f"must be an integer, not {describe(value)}; {example}")
        if not low <= value <= high:
            raise table.error(name, f"{value} is out of range; use a value from {low} to {high}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise table.error(name, f"must be a number of seconds, not {describe(value)}; {example}")
    if not math.isfinite(value):
        raise table.error(name, f"must be a finite number of seconds; {example}")
    if name in _ZERO_DISABLES and value < 0:
        raise table.error(name, "must not be negative; use 0 to disable it")
    if name not in _ZERO_DISABLES and value <= 0:
        raise table.error(name, f"must be greater than 0 seconds; {example}")
    return float(value)


def _parse_limits(table: Table) -> Limits:
    names = [limit.name for limit in fields(Limits)]
    table.check_keys(names, hints=_TOP_LEVEL_HINTS)
    values: dict[str, Any] = {
        name: _limit_value(table, name) for name in names if name in table.data
    }
    limits = Limits(**values)
    if limits.drain_accept_s and limits.drain_accept_s >= limits.graceful_timeout_s:
        raise table.error(
            "drain_accept_s",
            f"must be below graceful_timeout_s ({limits.graceful_timeout_s:g}): the drain "
            "ends at graceful_timeout_s, accepting included",
        )
    return limits


def _bind_key(address: SocketAddress) -> tuple[str, int]:
    try:
        host = ipaddress.ip_address(address.host).compressed
    except ValueError:
        host = address.host.lower()
    return host, address.port


def _check_binds(
    ctx: Context, listeners: Sequence[ListenerConfig], admin: AdminConfig | None
) -> None:
    seen: dict[tuple[str, int], int] = {}
    for index, listener in enumerate(listeners):
        key = _bind_key(listener.bind)
        if listener.bind.port and key in seen:
            used = f"{listener.bind} is already used by listener[{seen[key]}]"
            raise ctx.error(("listener", index, "bind"), f"{used}; give each its own address")
        seen.setdefault(key, index)
    if admin is not None and admin.bind.port:
        other = seen.get(_bind_key(admin.bind))
        if other is not None:
            used = f"{admin.bind} is already used by listener[{other}]"
            raise ctx.error(("admin", "bind"), f"{used}; give the admin server its own port")


def _check_paths(ctx: Context, routes: Sequence[RouteConfig]) -> None:
    """No two routes serve the same path for the same host (a route without ``host``
    serves any host: its own entry)."""
    seen: dict[tuple[str, str], int] = {}
    for index, route in enumerate(routes):
        for host in route.host or ("",):
            key = (host, route.path)
            if key in seen:
                where = f" for host {host!r}" if host else ""
                used = f"{route.path!r}{where} is already the path of route[{seen[key]}]"
                raise ctx.error(
                    ("route", index, "path"), f"{used}; give each route its own path or host"
                )
            seen[key] = index


def parse_config(
    data: Mapping[str, object],
    *,
    source: str = "<memory>",
    text: str | None = None,
    base_dir: Path | None = None,
) -> ProxyConfig:
    """Validate parsed TOML into a :class:`ProxyConfig`; raise :class:`ConfigError`.

    ``text`` (the raw TOML) lets messages carry line numbers; ``base_dir`` (default: the
    current directory) anchors relative paths.
    """
    ctx = Context(source, Locator(text), base_dir if base_dir is not None else Path.cwd())
    root = Table(ctx, data, ())
    root.check_keys(_TOP_KEYS)
    workers = _workers_setting(root)
    listeners = tuple(_parse_listener(table) for table in root.tables("listener"))
    backends = _parse_backends(root)
    groups = {group.name: group for group in backends}
    routes = tuple(parse_route(table, _TOP_LEVEL_HINTS, groups) for table in root.tables("route"))
    admin_table, limits_table = root.table("admin"), root.table("limits")
    admin = None if admin_table is None else _parse_admin(admin_table)
    limits = Limits() if limits_table is None else _parse_limits(limits_table)
    _check_binds(ctx, listeners, admin)
    _check_paths(ctx, routes)
    return ProxyConfig(listeners, routes, admin, limits, source, workers, backends)


def _parse_backends(root: Table) -> tuple[BackendGroup, ...]:
    """The ``[[backend]]`` tables (optional), their names unique."""
    if "backend" not in root.data:
        return ()
    groups: list[BackendGroup] = []
    for index, table in enumerate(root.tables("backend")):
        group = parse_backend_group(table)
        for other, earlier in enumerate(groups):
            if earlier.name == group.name:
                raise root.ctx.error(
                    ("backend", index, "name"),
                    f"{group.name!r} is already the name of backend[{other}]; "
                    "give each [[backend]] its own name",
                )
        groups.append(group)
    return tuple(groups)


# --- files ----------------------------------------------------------------------------

_TOML_POSITION = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")


def _syntax_error(source: str, text: str, exc: tomllib.TOMLDecodeError) -> ConfigError:
    message = str(exc)  # "Invalid value (at line 3, column 9)"
    match = _TOML_POSITION.search(message)
    if match is None:
        return ConfigError(f"{source}: invalid TOML: {message}; fix the syntax")
    what = message[: match.start()]
    if match[1] is None:
        line, what = text.count("\n") + 1, f"{what} at the end of the file"
    else:
        line, what = int(match[1]), f"{what} (column {match[2]})"
    return ConfigError(f"{source}:{line}: invalid TOML: {what}; fix the syntax")


def load_config(path: str | os.PathLike[str]) -> ProxyConfig:
    """Read, parse and validate a TOML config file; raise :class:`ConfigError`."""
    source = os.fspath(path)
    try:
        raw = Path(source).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            f"{source}: cannot read the config file ({reason}); check the path"
        ) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{source}:{line}: not valid UTF-8; save the file as UTF-8") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(source, text, exc) from exc
    base_dir = Path(os.path.abspath(source)).parent
    return parse_config(data, source=source, text=text, base_dir=base_dir)
