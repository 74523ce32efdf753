"""The client TLS context toward ``https://`` backends, built from a :class:`BackendTLS`.

Rules:

* ALPN offers what the server's ``protocol`` allows (RFC 7301): ``http/1.1`` alone by
  default, ``h2`` alone for ``protocol = "h2"``, both (``h2`` first) for ``"auto"``.
* TLS 1.2 or newer. The server's certificate is verified against ``ca`` (that file only)
  or, without it, the system's CAs, and its name against ``server_name`` or the host (the
  dial passes that: ``backend/tls.py``). ``verify = false`` turns both checks off.
* ``cert``/``key`` are the client certificate for mutual TLS; an encrypted key is refused.
* Any file that does not load is a :class:`BackendTLSFileError` naming the files and the
  key to fix (``ca`` or ``cert``): the parser turns it into a located error at load.
"""

from __future__ import annotations

import ssl

from h2ws_proxy.config.model import BackendProtocol, BackendTLS
from h2ws_proxy.errors import ConfigError

__all__ = ["BACKEND_ALPN_PROTOCOLS", "BackendTLSFileError", "build_backend_ssl_context"]

#: ALPN toward backends (RFC 7301), by the server's ``protocol``.
BACKEND_ALPN_PROTOCOLS: dict[BackendProtocol, tuple[str, ...]] = {
    "http/1.1": ("http/1.1",),
    "h2": ("h2",),
    "auto": ("h2", "http/1.1"),
}


class BackendTLSFileError(ConfigError):
    """A ``[backend.tls]`` file did not load; ``key`` is the key that names it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _refuse_password() -> bytes:
    raise ConfigError("the private key is encrypted; give an unencrypted key")


def build_backend_ssl_context(
    tls: BackendTLS | None, protocol: BackendProtocol = "http/1.1"
) -> ssl.SSLContext:
    """The client context for backends with ``tls`` (None: the defaults: system CAs,
    verification on, no client certificate) spoken to with ``protocol``. Raises
    :class:`BackendTLSFileError`."""
    tls = tls if tls is not None else BackendTLS()
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca) if tls.ca is not None else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise BackendTLSFileError(
            "ca",
            f"{tls.ca}: cannot load the CA certificates ({exc}); give PEM certificates",
        ) from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(list(BACKEND_ALPN_PROTOCOLS[protocol]))
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.client_cert is not None:
        cert, key = tls.client_cert.cert, tls.client_cert.key
        try:
            context.load_cert_chain(cert, key, password=_refuse_password)
        except (OSError, ssl.SSLError, ConfigError) as exc:
            reason = exc.message if isinstance(exc, ConfigError) else str(exc)
            raise BackendTLSFileError(
                "cert",
                f"{cert}, {key}: cannot load the client certificate and key ({reason}); "
                "give a PEM certificate chain and its matching PEM private key",
            ) from exc
    return context
