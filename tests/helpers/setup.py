"""Building blocks for tests: configs made in code, client TLS contexts."""

from __future__ import annotations

import dataclasses
import ssl

import trustme

from h2ws_proxy.config import (
    BackendGroup,
    Limits,
    ListenerConfig,
    ProxyConfig,
    RouteConfig,
    SocketAddress,
    TLSConfig,
    parse_backend,
)

Route = tuple[str, str]


def make_config(
    *routes: Route,
    tls: TLSConfig | None = None,
    enable_connect_protocol: bool | str = True,
    x_forwarded: bool = True,
    **limits: float,
) -> ProxyConfig:
    """A config listening on 127.0.0.1 port 0 with ``routes`` as (path, backend URL)."""
    return ProxyConfig(
        listeners=(
            ListenerConfig(
                bind=SocketAddress("127.0.0.1", 0),
                tls=tls,
                enable_connect_protocol=enable_connect_protocol,
            ),
        ),
        routes=tuple(
            RouteConfig(
                path=path, backend=BackendGroup.of(parse_backend(url)), x_forwarded=x_forwarded
            )
            for path, url in routes
        ),
        limits=dataclasses.replace(Limits(), **limits),  # type: ignore[arg-type]
    )


def client_ssl_context(ca: trustme.CA, alpn: list[str]) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.set_alpn_protocols(alpn)
    return context


def backend_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"
