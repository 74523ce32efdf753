"""The server's TLS context, built from the validated :class:`TLSConfig` at startup.

Rules:

* ALPN offers ``h2`` then ``http/1.1`` (RFC 7301; RFC 9113 §3.2): one port serves both.
* TLS 1.2 or newer; TLS 1.2 gets only the AEAD ECDHE suites, and neither compression nor
  renegotiation (RFC 9113 §9.2).
* An encrypted private key is refused (the server cannot ask for a password); any problem
  is a :class:`ConfigError` naming both files.
"""

from __future__ import annotations

import ssl

from h2ws_proxy.config.model import TLSConfig
from h2ws_proxy.errors import ConfigError

__all__ = ["ALPN_PROTOCOLS", "build_server_ssl_context"]

#: ALPN protocols offered on TLS listeners, in order of preference (RFC 7301, RFC 9113 §3.2).
ALPN_PROTOCOLS = ("h2", "http/1.1")


def _refuse_password() -> bytes:
    raise ConfigError("the TLS private key is encrypted; give an unencrypted key")


def build_server_ssl_context(
    tls: TLSConfig, protocols: tuple[str, ...] = ALPN_PROTOCOLS
) -> ssl.SSLContext:
    """Server context for a TLS listener: the cert/key, ALPN ``protocols``, TLS 1.2 or newer.

    TLS 1.2 gets only the AEAD ECDHE suites and no compression or renegotiation, as
    RFC 9113 §9.2 requires for HTTP/2. Raises :class:`ConfigError` naming both files.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    context.set_alpn_protocols(list(protocols))
    first = tls.all_certificates()[0]  # SNI selection among several: see the SNI work
    try:
        context.load_cert_chain(first.cert, first.key, password=_refuse_password)
    except (OSError, ssl.SSLError, ConfigError) as exc:
        reason = exc.message if isinstance(exc, ConfigError) else str(exc)
        raise ConfigError(
            f"{first.cert}, {first.key}: cannot load the TLS certificate and key ({reason}); "
            "give a PEM certificate chain and its matching PEM private key"
        ) from exc
    return context
