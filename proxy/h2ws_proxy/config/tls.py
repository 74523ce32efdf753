"""The server's TLS contexts, built from the validated :class:`TLSConfig` at startup.

Rules:

* ALPN offers ``h2`` then ``http/1.1`` (RFC 7301; RFC 9113 §3.2): one port serves both.
* TLS 1.2 or newer; TLS 1.2 gets only the AEAD ECDHE suites, and neither compression nor
  renegotiation (RFC 9113 §9.2).
* Several certificates (SNI, RFC 6066 §3): one context per set of names, all made alike
  (ALPN, versions, ciphers, options: OpenSSL keeps the first context's settings for the
  connection, except the certificates and the ALPN choice, which follow the switch). The
  first certificate's context is the listener's; its ``sni_callback`` switches a
  connection to the context whose names cover the client's server name: an exact name
  first, then a wildcard, the earlier certificate among equals. No server name, or one no
  certificate covers: the first certificate. Certificates with the same names share a
  context, one per kind of key (RSA and ECDSA), and the handshake picks by the client's
  signature algorithms.
* After the handshake, :func:`served_names` says which names the connection was served
  with (the 421 check, RFC 9110 §15.5.20).
* Any problem is a :class:`ConfigError` naming the file(s) (``certificates.py`` checks the
  files; OpenSSL then loads them).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

from h2ws_proxy.config.certificates import (
    CertificateNames,
    LoadedCertificate,
    group_by_names,
    read_certificate,
)
from h2ws_proxy.config.model import ProxyConfig, TLSConfig
from h2ws_proxy.errors import ConfigError

__all__ = [
    "ALPN_PROTOCOLS",
    "CertificateContext",
    "build_listener_contexts",
    "build_server_ssl_context",
    "served_names",
]

#: ALPN protocols offered on TLS listeners, in order of preference (RFC 7301, RFC 9113 §3.2).
ALPN_PROTOCOLS = ("h2", "http/1.1")


class CertificateContext(ssl.SSLContext):
    """A server context holding the certificates of one set of names (one per key type)."""

    names: CertificateNames


def served_names(context: ssl.SSLContext) -> CertificateNames | None:
    """The names of the certificate(s) ``context`` serves (a connection's context after
    its handshake); None for a context not built here."""
    return context.names if isinstance(context, CertificateContext) else None


def build_listener_contexts(config: ProxyConfig) -> list[ssl.SSLContext | None]:
    """Every listener's context (None for a cleartext one), in ``config.listeners`` order:
    what the server loads at start, and what ``--check`` loads. Raises ConfigError."""
    return [
        build_server_ssl_context(listener.tls, listener.protocols) if listener.tls else None
        for listener in config.listeners
    ]


def build_server_ssl_context(
    tls: TLSConfig, protocols: tuple[str, ...] = ALPN_PROTOCOLS
) -> ssl.SSLContext:
    """The listener's context: its first certificate, and the others chosen by SNI.

    ALPN ``protocols``, TLS 1.2 or newer with only the AEAD ECDHE suites and no compression
    or renegotiation, as RFC 9113 §9.2 requires for HTTP/2. Raises :class:`ConfigError`.
    """
    loaded = [read_certificate(certificate) for certificate in tls.all_certificates()]
    contexts = [_context_for(group, protocols) for group in group_by_names(loaded)]
    if len(contexts) > 1:
        contexts[0].sni_callback = _ServerNameIndex(contexts).select
    return contexts[0]


def _context_for(
    group: Sequence[LoadedCertificate], protocols: tuple[str, ...]
) -> CertificateContext:
    context = CertificateContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    context.set_alpn_protocols(list(protocols))
    context.names = group[0].names
    for certificate in group:
        files = certificate.config
        try:
            context.load_cert_chain(files.cert, files.key, password=_refuse_password)
        except (OSError, ssl.SSLError, ConfigError) as exc:
            reason = exc.message if isinstance(exc, ConfigError) else str(exc)
            raise ConfigError(
                f"{files.cert}, {files.key}: cannot load the TLS certificate and key "
                f"({reason}); give a PEM certificate chain and its matching PEM private key"
            ) from exc
    return context


def _refuse_password() -> bytes:
    raise ConfigError("the TLS private key is encrypted; give an unencrypted key")


class _ServerNameIndex:
    """Which context serves a server name: exact names (and IP addresses), then wildcards
    by their parent domain; the earlier context among equals."""

    def __init__(self, contexts: Sequence[CertificateContext]) -> None:
        self._exact: dict[str, CertificateContext] = {}
        self._wildcards: dict[str, CertificateContext] = {}
        for context in contexts:
            for name in context.names.exact:
                self._exact.setdefault(name, context)
            for address in context.names.addresses:
                self._exact.setdefault(str(address), context)
            for parent in context.names.wildcard_parents:
                self._wildcards.setdefault(parent, context)

    def context_for(self, server_name: str) -> CertificateContext | None:
        name = server_name.lower().removesuffix(".")
        found = self._exact.get(name)
        if found is None:
            label, dot, parent = name.partition(".")
            found = self._wildcards.get(parent) if label and dot else None
        return found

    def select(self, tls: ssl.SSLObject, server_name: str | None, current: ssl.SSLContext) -> None:
        """The ``sni_callback``: switch ``tls`` to the context covering ``server_name``."""
        if not server_name:
            return  # no SNI: the first certificate
        chosen = self.context_for(server_name)
        if chosen is not None and chosen is not current:
            tls.context = chosen
