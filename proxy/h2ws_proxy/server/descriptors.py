"""The process's file-descriptor limit: raised at start, and checked against the config.

Every client connection holds a descriptor, and every tunnel and pooled backend
connection another. The soft ``RLIMIT_NOFILE`` is often 1024 while the hard one is far
higher, so the soft limit is raised to the hard one at start (nginx's
``worker_rlimit_nofile``, HAProxy sets it from ``maxconn``); workers inherit it. When the
configured limits can still need more, a warning says so once, with what to change: past
the limit ``accept`` fails with EMFILE (new clients then wait in the backlog, see
serve.py) and new tunnels get 502.
"""

from __future__ import annotations

import logging
import resource

from h2ws_proxy.config import ProxyConfig
from h2ws_proxy.log import log_event

logger = logging.getLogger(__name__)

#: Descriptors the process holds besides connections: the interpreter, trio's own, the
#: listening and admin sockets, logs, a poller per HTTP/2 connection at most.
_BASE_DESCRIPTORS = 64


def descriptors_needed(config: ProxyConfig) -> int:
    """The most descriptors ``config`` can need at once: every listener full, each
    connection with its streams' tunnels, every route's backend with its idle pool."""
    limits = config.limits
    per_connection = 2 + limits.max_concurrent_streams  # itself, a poller, its tunnels
    connections = len(config.listeners) * limits.max_connections
    pooled = len({route.backend for route in config.routes}) * limits.backend_max_idle
    return _BASE_DESCRIPTORS + connections * per_connection + pooled


def raise_descriptor_limit(config: ProxyConfig) -> int:
    """Raise the soft descriptor limit to the hard one; warn if ``config`` can exceed it.
    Returns the limit in effect."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as error:
            log_event(logger, logging.WARNING, "server.descriptor_limit_unchanged", error=error)
        else:
            log_event(logger, logging.INFO, "server.descriptor_limit_raised", old=soft, new=hard)
            soft = hard
    needed = descriptors_needed(config)
    if soft != resource.RLIM_INFINITY and needed > soft:
        log_event(
            logger,
            logging.WARNING,
            "server.descriptor_limit_low",
            limit=soft,
            can_need=needed,
            hint=(
                "max_connections x (2 + max_concurrent_streams) per listener can need more "
                "descriptors than the limit; raise it (ulimit -n, systemd LimitNOFILE=, "
                "docker --ulimit nofile=) or lower those limits; meanwhile, at the limit, new "
                "clients wait and new tunnels get 502"
            ),
        )
    return soft
