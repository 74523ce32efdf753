"""TLS toward ``https://`` backends: one context per distinct :class:`BackendTLS`, the
handshake on a dialled connection, and its failures as :mod:`h2ws_proxy.errors`.

Rules:

* One ``ssl.SSLContext`` per distinct ``BackendTLS`` and protocol (its ALPN offer; a
  route's own ``https://`` URL has no ``BackendTLS``: the system CAs, the host verified),
  built once per process: at startup by
  :func:`prepare_backend_tls` (the server's), else at first use. The files were loaded
  once at config load already, so a build failure here is a file changed since.
* SNI and the name verified: ``server_name`` if set, else the host; for an IP address no
  SNI is sent and the certificate's IP SANs are verified (Python's ``ssl`` does both).
* A failed handshake is :class:`BackendUnavailable` (502) whose message names the backend
  and says why (expired, hostname mismatch, unknown CA...: ``transport/tls_client.py``).
  Never a fallback to an unverified connection: only ``verify = false`` makes one, and
  then :func:`prepare_backend_tls` names the group in a warning at startup.
* The handshake runs under the dial's ``connect_timeout_s``, as the TCP connect does.
"""

from __future__ import annotations

import logging
import ssl

import trio

from h2ws_proxy.config import (
    BackendAddress,
    BackendProtocol,
    BackendTLS,
    ProxyConfig,
    build_backend_ssl_context,
)
from h2ws_proxy.errors import BackendUnavailable
from h2ws_proxy.log import log_event
from h2ws_proxy.transport.tls_client import (
    LeanTLSClientStream,
    start_tls_client,
    tls_failure_reason,
)

logger = logging.getLogger(__name__)

#: Contexts by settings and ALPN offer: the configuration names a few (one per
#: [backend.tls] and protocol, and the default).
ContextKey = tuple[BackendTLS | None, BackendProtocol]
_contexts: dict[ContextKey, ssl.SSLContext] = {}


def backend_ssl_context(
    tls: BackendTLS | None, protocol: BackendProtocol = "http/1.1"
) -> ssl.SSLContext:
    """The context for backends with ``tls`` and ``protocol`` (built on first use); raises
    ConfigError."""
    context = _contexts.get((tls, protocol))
    if context is None:
        context = _contexts[tls, protocol] = build_backend_ssl_context(tls, protocol)
    return context


def build_backend_contexts(config: ProxyConfig) -> dict[ContextKey, ssl.SSLContext]:
    """Fresh contexts for every ``https://`` server of ``config`` (a reload: CA files may
    have been renewed in place); raises ConfigError. Switch to them with
    :func:`install_backend_contexts`."""
    groups = [*config.backends, *(route.backend for route in config.routes)]
    contexts: dict[ContextKey, ssl.SSLContext] = {}
    for group in groups:
        for server in group.servers:
            key = (server.tls, server.protocol)
            if server.scheme == "https" and key not in contexts:
                contexts[key] = build_backend_ssl_context(*key)
    return contexts


def install_backend_contexts(contexts: dict[ContextKey, ssl.SSLContext]) -> None:
    """New backend connections use ``contexts`` from now on (connections open keep theirs)."""
    _contexts.clear()
    _contexts.update(contexts)


def prepare_backend_tls(config: ProxyConfig, *, warn: bool = True) -> None:
    """Build the context of every ``https://`` server ``config`` names (raises ConfigError),
    and with ``warn`` log a warning for each group that does not verify its servers."""
    groups = [*config.backends, *(route.backend for route in config.routes)]
    for group in groups:
        for server in group.servers:
            if server.scheme == "https":
                backend_ssl_context(server.tls, server.protocol)
    if not warn:
        return
    for group in config.backends:
        if any(server.tls is not None and not server.tls.verify for server in group.servers):
            log_event(
                logger,
                logging.WARNING,
                "backend.tls_unverified",
                backend=group.name,
                problem="verify = false: its servers' certificates and names are not checked",
            )


def server_hostname(address: BackendAddress) -> str:
    """The name sent as SNI and verified (an IP address: none sent, its SANs verified)."""
    if address.tls is not None and address.tls.server_name is not None:
        return address.tls.server_name
    return address.host


async def start_backend_tls(
    stream: trio.abc.Stream, address: BackendAddress, protocol: BackendProtocol | None = None
) -> LeanTLSClientStream:
    """TLS over the connection just dialled to ``address`` (taken over; closed on failure),
    offering ``protocol`` in ALPN (default: the address's own).

    Raises BackendUnavailable naming the backend and the reason.
    """
    context = backend_ssl_context(address.tls, protocol or address.protocol)
    try:
        return await start_tls_client(stream, context, server_hostname(address))
    except trio.BrokenResourceError as error:
        reason = tls_failure_reason(error.__cause__)
        raise BackendUnavailable(f"TLS handshake with backend {address} failed: {reason}") from (
            error.__cause__
        )
