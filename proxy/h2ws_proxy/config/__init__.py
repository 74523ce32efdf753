"""Configuration: one TOML file, validated completely at load, into frozen dataclasses.

Rules:

* Five top-level keys: ``workers`` (optional integer, or ``"auto"``), ``[[listener]]`` and
  ``[[route]]`` (arrays of tables, at least one of each), ``[admin]`` and ``[limits]``
  (optional tables). Any other key, at any level, is an error, with a "did you mean"
  suggestion when a known key is close.
* Types are exact: a boolean is not a number and a number is not a string. Timeouts take
  integers or floats (stored as ``float``); the other limits take integers only.
* Socket addresses are ``host:port``, IPv6 literals in brackets (``[::1]:8443``). Port 0
  asks the OS for a free port (tests). Listener binds are unique and the admin bind
  differs from all of them (port 0 excepted).
* Backends are ``http://host[:port][/]`` (port 80 by default), ``https://host[:port][/]``
  (port 443) or ``unix:/path/to.sock``; a path or query in the URL is refused.
* Relative paths (TLS files, unix sockets) are resolved against the config file's
  directory. TLS files must exist and be readable at load, and each certificate and key
  is read and checked then (``certificates.py``), as :func:`build_server_ssl_context`
  loads them when the server starts; ``[backend.tls]`` files are loaded into their
  context by :func:`build_backend_ssl_context` at load.
* Route paths start with ``/`` and are unique; the longest matching prefix wins
  (``relay/routing.py``).
* Every problem is one :class:`ConfigError` line,
  ``<file>:<line>: <key path>: <what is wrong>; <what to do>``, with 0-based array indexes
  in the key path (``route[1].backend``). The line is found in the raw text on a best
  effort basis and left out when it cannot be found.

Only :func:`load_config`, the TLS file checks, :func:`build_server_ssl_context` and
:func:`build_backend_ssl_context` touch the file system; everything else is pure.

Modules, each importing only those above it in this list:

* ``model``: the frozen dataclasses, and :func:`advertises_connect_protocol`.
* ``addresses``: ``host:port`` and backend URLs (:func:`parse_socket_address`,
  :func:`parse_backend`).
* ``backend_tls``: :func:`build_backend_ssl_context` (``[backend.tls]``, read by
  ``backends``).
* ``locate``: the line of a key path in the raw text.
* ``certificates``: a certificate's files read and checked, the names it covers
  (:class:`CertificateNames`).
* ``tables``: reading one table with exact types, known keys and located errors.
* ``routes``: one ``[[route]]`` table (:func:`parse_route`).
* ``tls``: :func:`build_server_ssl_context` (SNI among several certificates),
  :func:`build_listener_contexts`, :func:`served_names`.
* ``parse``: the schema, :func:`parse_config` and :func:`load_config`.

Import the public names from here (``from h2ws_proxy.config import ProxyConfig``).
"""

from __future__ import annotations

from h2ws_proxy.config.addresses import parse_backend, parse_socket_address
from h2ws_proxy.config.backend_tls import build_backend_ssl_context
from h2ws_proxy.config.certificates import CertificateNames, read_certificate
from h2ws_proxy.config.model import (
    AdminConfig,
    BackendAddress,
    BackendGroup,
    BackendProtocol,
    BackendTLS,
    Balance,
    CertificateConfig,
    HealthCheck,
    Limits,
    ListenerConfig,
    ProxyConfig,
    RouteConfig,
    SocketAddress,
    TLSConfig,
    advertises_connect_protocol,
)
from h2ws_proxy.config.parse import load_config, parse_config, parse_workers
from h2ws_proxy.config.tls import (
    build_listener_contexts,
    build_server_ssl_context,
    served_names,
)

__all__ = [
    "AdminConfig",
    "BackendAddress",
    "BackendGroup",
    "BackendProtocol",
    "BackendTLS",
    "Balance",
    "CertificateConfig",
    "CertificateNames",
    "HealthCheck",
    "Limits",
    "ListenerConfig",
    "ProxyConfig",
    "RouteConfig",
    "SocketAddress",
    "TLSConfig",
    "advertises_connect_protocol",
    "build_backend_ssl_context",
    "build_listener_contexts",
    "build_server_ssl_context",
    "load_config",
    "parse_backend",
    "parse_config",
    "parse_socket_address",
    "parse_workers",
    "read_certificate",
    "served_names",
]
