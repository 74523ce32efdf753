"""One ``[[route]]`` table: where requests go and what reaches the backend. Pure.

Rules:

* ``path`` starts with ``/`` and holds no ``?``, ``#``, spaces or controls (uniqueness is
  the schema's check, across tables); ``backend`` is a backend URL (``addresses.py``).
* ``x_forwarded`` is ``true``, ``false`` or ``"append"``; ``websocket`` and
  ``normalize_path`` are booleans.
* ``strip_fields`` is an array of field names (RFC 9110 §5.1 tokens), stored lowercase with
  ``-`` for ``_`` (WSGI/CGI read both as one variable, so both spellings go). The
  fields the proxy manages itself cannot be listed: pseudo-headers (``:path``...), the
  hop-by-hop fields it never forwards, and those it writes on every backend request
  (``host``, ``content-length``, ``sec-websocket-*``). Stripping them would either do
  nothing or break the framing or the handshake, so a config that asks is a mistake.
* ``host`` is a host name or a list of them, each exact or ``*.`` and a name (one label
  more); ``allowed_origins`` a list of ``http``/``https`` origins, ``*.`` allowed the same
  way; both stored in the canonical forms of ``hosts.py``, each listed once. ``null``
  cannot be allowed (any site can send it), nor ``*`` written for "any": leaving the key
  out means that.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Literal

from h2ws_proxy.config.backends import parse_route_backend
from h2ws_proxy.config.hosts import canonical_host, canonical_origin
from h2ws_proxy.config.model import BackendGroup, RouteConfig
from h2ws_proxy.config.tables import Table, describe

__all__ = ["ROUTE_KEYS", "parse_route"]

ROUTE_KEYS = (
    "path",
    "host",
    "backend",
    "x_forwarded",
    "websocket",
    "normalize_path",
    "strip_fields",
    "allowed_origins",
    "require_origin",
)
#: RFC 9110 §5.6.2 ``token`` (``http/grammar.py`` holds the same; config sits below http).
_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
#: RFC 9110 §7.6.1 and the de-facto ones: the proxy never forwards the client's (kept equal
#: to ``http/fields.HOP_BY_HOP``; a unit test checks).
HOP_BY_HOP_NAMES = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
#: Written by the proxy on every backend request (``content-length`` is our framing).
_SET_BY_PROXY = frozenset({"host", "content-length"})
_STRIP_EXAMPLE = 'strip_fields = ["x-internal-auth"]'


def parse_route(
    table: Table, hints: Mapping[str, str], groups: Mapping[str, BackendGroup]
) -> RouteConfig:
    """The route of ``table`` (``groups``: the named ``[[backend]]`` groups); raises
    ConfigError naming the key and its line."""
    table.check_keys(ROUTE_KEYS, hints=hints)
    path = table.string("path", 'path = "/"')
    if not path.startswith("/"):
        raise table.error("path", f'must start with "/"; write path = "/{path}"')
    if any(char in "?#" or char.isspace() or not char.isprintable() for char in path):
        problem = "must not contain '?', '#', spaces or control characters"
        raise table.error("path", f'{problem}; give a plain path prefix such as "/chat"')
    return RouteConfig(
        path,
        parse_route_backend(table, groups),
        x_forwarded=_x_forwarded(table),
        websocket=table.boolean("websocket", True),
        normalize_path=table.boolean("normalize_path", True),
        strip_fields=_strip_fields(table),
        host=_hosts(table),
        allowed_origins=_origins(table),
        require_origin=table.boolean("require_origin", False),
    )


def _x_forwarded(table: Table) -> bool | Literal["append"]:
    value = table.data.get("x_forwarded", True)
    if value == "append" or isinstance(value, bool):
        return value
    given = json.dumps(value) if isinstance(value, str) else describe(value)
    problem = f'must be true, false or "append", not {given}'
    raise table.error("x_forwarded", f"{problem}; write e.g. x_forwarded = true")


def _strip_fields(table: Table) -> frozenset[bytes]:
    value = table.data.get("strip_fields", [])
    if not isinstance(value, list):
        problem = f"must be an array of field names, not {describe(value)}"
        raise table.error("strip_fields", f"{problem}; write e.g. {_STRIP_EXAMPLE}")
    names: list[bytes] = []
    for item in value:
        if not isinstance(item, str):
            problem = f"must list field names as strings, not {describe(item)}"
            raise table.error("strip_fields", f"{problem}; write e.g. {_STRIP_EXAMPLE}")
        refusal = _unstrippable(item)
        if refusal is not None:
            raise table.error("strip_fields", f"{json.dumps(item)} {refusal}")
        # As backends read it: WSGI and CGI take "_" for "-" (http/fields.dashed).
        names.append(item.lower().replace("_", "-").encode("ascii"))
    return frozenset(names)


def _unstrippable(name: str) -> str | None:
    """Why ``name`` cannot be listed in ``strip_fields``, or None if it can."""
    lowered = name.lower()
    if name.startswith(":"):
        return "is a pseudo-header, not a field; the proxy writes the request line itself"
    if not _TOKEN.fullmatch(name):
        return (
            "is not a field name (letters, digits and !#$%&'*+-.^_`|~ only); "
            f"write e.g. {_STRIP_EXAMPLE}"
        )
    if lowered in HOP_BY_HOP_NAMES:
        return "is hop-by-hop: the proxy never forwards the client's; remove it from the list"
    if lowered in _SET_BY_PROXY or lowered.startswith("sec-websocket-"):
        return "is set by the proxy itself on the backend request; remove it from the list"
    return None


_HOST_EXAMPLE = 'host = ["chat.example.com", "*.example.com"]'


def _hosts(table: Table) -> tuple[str, ...]:
    """``host``: a name or a list of them, canonical (``config/hosts.py``): lowercase, no
    trailing dot, IPv6 literals compressed in brackets; ``*.`` only as the whole first label."""
    value = table.data.get("host")
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    wrong = next((item for item in items if not isinstance(item, str)), None)
    if not items or wrong is not None:
        given = describe(value if not items or wrong is value else wrong)
        problem = f"must be a host name or a list of them, not {given}"
        raise table.error("host", f"{problem}; write e.g. {_HOST_EXAMPLE}")
    hosts: list[str] = []
    for item in map(str, items):
        host = canonical_host(item, wildcard=True)
        if host is None:
            problem = _host_problem(item)
            raise table.error("host", f"{json.dumps(item)}: {problem}; write e.g. {_HOST_EXAMPLE}")
        if host in hosts:
            raise table.error("host", f"{json.dumps(item)} is listed twice; list each host once")
        hosts.append(host)
    return tuple(hosts)


def _host_problem(item: str) -> str:
    """Why ``item`` is not a host for a route, in words."""
    if item.strip() == "*":
        return "serving any host is leaving host out of the route"
    if "*" in item:
        return "a wildcard may only be the whole first label (*.example.com: one label more)"
    if "://" in item:
        return "is a URL; write the host name alone"
    if item.count(":") > 1 and not item.startswith("["):
        return "an IPv6 address goes in brackets, as in a Host field ([::1])"
    if ":" in item and not item.startswith("["):
        return "takes no port (hosts match whatever port the client named)"
    return "is not a host name"


_ORIGIN_EXAMPLE = 'allowed_origins = ["https://app.example.com", "https://*.example.com"]'


def _origins(table: Table) -> tuple[str, ...]:
    """``allowed_origins``: ``scheme://host[:port]`` (RFC 6454 serialisation), canonical
    (``config/hosts.py``: lowercase, no default port); ``*.`` may replace the host's first
    label. ``null`` is refused: any site can produce it."""
    value = table.data.get("allowed_origins", [])
    items = value if isinstance(value, list) else [value]
    wrong = next((item for item in items if not isinstance(item, str)), None)
    if not isinstance(value, list) or wrong is not None:
        given = describe(value if wrong is None else wrong)
        problem = f"must be a list of origins, not {given}"
        raise table.error("allowed_origins", f"{problem}; write e.g. {_ORIGIN_EXAMPLE}")
    origins: list[str] = []
    for item in map(str, items):
        origin = canonical_origin(item.removesuffix("/"), wildcard=True)
        if origin is None:
            raise table.error("allowed_origins", f"{json.dumps(item)} {_origin_problem(item)}")
        if origin in origins:
            raise table.error(
                "allowed_origins", f"{json.dumps(item)} is listed twice; list each origin once"
            )
        origins.append(origin)
    return tuple(origins)


def _origin_problem(item: str) -> str:
    """Why ``item`` is not an origin for ``allowed_origins``, in words."""
    if item.strip().lower() == "null":
        return (
            "cannot be allowed: sandboxed frames and file: pages send it, so any site can; "
            "remove it"
        )
    if item.strip() == "*":
        return "is not an origin; to allow any origin, leave allowed_origins out"
    return (
        "is not an origin (http:// or https://, a host, an optional port, no path); "
        f"write e.g. {_ORIGIN_EXAMPLE}"
    )
