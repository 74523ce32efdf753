"""A server certificate's files read and checked, and the host names it covers.

Rules:

* A certificate file holds a PEM chain, leaf first; its key file an unencrypted PEM
  private key (it may be the same file). Refused, naming the file at fault: unreadable
  files, no PEM certificate, no PEM private key, an encrypted key (the server cannot ask
  for a password), a key that is not the leaf's.
* The names a certificate covers are what a TLS client checks (RFC 6125, as browsers do):
  its subjectAltName DNS names and IP addresses; its subject's common name only when it
  has neither. A wildcard ``*.example.com`` covers one whole label in front of
  ``example.com`` (``a.example.com``, neither ``example.com`` nor ``a.b.example.com``);
  other wildcards (``a*.example.com``, ``*`` alone, ``*.com`` over a single label, as
  browsers refuse them) cover nothing. Names compare
  case-insensitively, a trailing dot ignored.

``cryptography`` reads the files: the standard library has no public way to read a
certificate's names from a file. Loading into OpenSSL is ``tls.py``'s.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import NameOID

from h2ws_proxy.config.model import CertificateConfig
from h2ws_proxy.errors import ConfigError

__all__ = [
    "CertificateError",
    "CertificateNames",
    "LoadedCertificate",
    "group_by_names",
    "host_of_authority",
    "read_certificate",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class CertificateError(ConfigError):
    """A certificate or its key is unusable. ``key`` names the config key of the file at
    fault (``"cert"`` or ``"key"``) and ``index`` the certificate's place in
    :meth:`TLSConfig.all_certificates` (when known), so the config parser can point at
    its line. The message names the file(s)."""

    def __init__(self, key: str, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.index = index


def _normalise(name: str) -> str:
    return name.lower().removesuffix(".")


@dataclass(frozen=True, slots=True)
class CertificateNames:
    """The host names one certificate covers (see the module's rules)."""

    #: DNS names, lowercase, no trailing dot, wildcards excluded.
    exact: frozenset[str] = frozenset()
    #: For each ``*.parent`` wildcard, its ``parent``.
    wildcard_parents: frozenset[str] = frozenset()
    #: IP addresses (subjectAltName iPAddress entries).
    addresses: frozenset[IPAddress] = frozenset()

    @classmethod
    def of(cls, dns_names: list[str], addresses: list[IPAddress]) -> CertificateNames:
        exact, parents = set(), set()
        for name in map(_normalise, dns_names):
            if name.startswith("*.") and "*" not in name[2:] and "." in name[2:]:
                parents.add(name[2:])
            elif "*" not in name and name:
                exact.add(name)
        return cls(frozenset(exact), frozenset(parents), frozenset(addresses))

    def covers(self, host: str) -> bool:
        """True if a client connecting to ``host`` (a name or an IP address) accepts it."""
        host = _normalise(host)
        if host in self.exact:
            return True
        label, dot, parent = host.partition(".")
        if label and dot and parent in self.wildcard_parents:
            return True
        if self.addresses and (host[:1].isdigit() or ":" in host):
            try:
                return ipaddress.ip_address(host.strip("[]")) in self.addresses
            except ValueError:
                return False
        return False

    def covers_authority(self, authority: bytes) -> bool:
        """:meth:`covers` for a request's ``:authority`` or ``Host`` (port removed)."""
        return self.covers(host_of_authority(authority))

    def __str__(self) -> str:
        names = [*sorted(self.exact), *(f"*.{p}" for p in sorted(self.wildcard_parents))]
        names.extend(str(address) for address in sorted(self.addresses, key=str))
        return ", ".join(names) or "(no names)"


def host_of_authority(authority: bytes) -> str:
    """The host of ``host[:port]`` (an IPv6 address without its brackets), lowercase,
    without a trailing dot. Bytes that are not ASCII stay as Latin-1 (and match nothing)."""
    text = authority.decode("latin-1")
    if text.startswith("["):
        return text[1 : text.find("]")].lower() if "]" in text else text.lower()
    host, _, port = text.rpartition(":")
    if host and (port.isdigit() or not port):
        text = host
    return _normalise(text)


@dataclass(frozen=True, slots=True)
class LoadedCertificate:
    """A certificate chain and key that passed every check, with what they say."""

    config: CertificateConfig
    names: CertificateNames
    #: "RSA", "ECDSA", "Ed25519"...: OpenSSL holds one certificate per kind of key.
    key_type: str


def read_certificate(config: CertificateConfig) -> LoadedCertificate:
    """Read and check ``config``'s files; raise :class:`CertificateError`."""
    chain = _read_chain(config.cert)
    key = _read_key(config.key)
    leaf = chain[0]
    public = leaf.public_key()
    if _public_bytes(public) != _public_bytes(key.public_key()):
        raise CertificateError(
            "key",
            f"{config.key} is not the private key of the certificate {config.cert} (the "
            "first certificate of the file, the leaf); give the leaf's key, or put the leaf "
            "first in the chain",
        )
    return LoadedCertificate(config, names_of(leaf), _key_type(public))


def group_by_names(loaded: Sequence[LoadedCertificate]) -> list[list[LoadedCertificate]]:
    """``loaded`` in groups of equal names, in order of first appearance: one OpenSSL context
    each, holding one certificate per key type (the handshake picks by the client's
    signature algorithms). Two of one key type for the same names: :class:`CertificateError`
    (OpenSSL would keep only the second)."""
    groups: dict[CertificateNames, list[LoadedCertificate]] = {}
    for index, certificate in enumerate(loaded):
        group = groups.setdefault(certificate.names, [])
        twin = next((c for c in group if c.key_type == certificate.key_type), None)
        if twin is not None:
            raise CertificateError(
                "cert",
                f"{certificate.config.cert} covers the same names ({certificate.names}) with "
                f"the same kind of key ({certificate.key_type}) as {twin.config.cert}; give "
                "one of them (one RSA and one ECDSA certificate for the same names is fine)",
                index=index,
            )
        group.append(certificate)
    return list(groups.values())


def names_of(certificate: x509.Certificate) -> CertificateNames:
    """The names ``certificate`` covers: its subjectAltName, else its common name."""
    dns: list[str] = []
    ips: list[IPAddress] = []
    try:
        alt_names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        pass
    else:
        dns = alt_names.value.get_values_for_type(x509.DNSName)
        addresses = alt_names.value.get_values_for_type(x509.IPAddress)
        ips = [a for a in addresses if isinstance(a, ipaddress.IPv4Address | ipaddress.IPv6Address)]
    if not dns and not ips:  # RFC 6125 §6.4.4: the CN only without a subjectAltName
        common = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        dns = [str(attribute.value) for attribute in common]
    return CertificateNames.of(dns, ips)


def _read(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise CertificateError(key, f"cannot read {path}: {error.strerror or error}") from error


def _read_chain(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(_read(path, "cert"))
    except ValueError as error:
        raise CertificateError(
            "cert",
            f"{path} holds no PEM certificate ({_reason(error)}); give the certificate "
            "chain as PEM (-----BEGIN CERTIFICATE-----), leaf first",
        ) from error


def _read_key(path: Path) -> PrivateKeyTypes:
    data = _read(path, "key")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError as error:  # cryptography: "Password was not given but ... encrypted"
        raise CertificateError(
            "key",
            f"{path}: the private key is encrypted; give an unencrypted key (the server "
            "cannot ask for a password), e.g. openssl pkey -in encrypted.pem -out key.pem",
        ) from error
    except (ValueError, UnsupportedAlgorithm) as error:
        raise CertificateError(
            "key",
            f"{path} holds no usable PEM private key ({_reason(error)}); give the "
            "certificate's private key as PEM (-----BEGIN PRIVATE KEY-----)",
        ) from error


def _reason(error: Exception) -> str:
    """cryptography's message without its FAQ link."""
    text = str(error).split(". See https://", 1)[0]
    return text.rstrip(".")


def _public_bytes(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _key_type(key: PublicKeyTypes) -> str:
    kinds: tuple[tuple[type[object], str], ...] = (
        (rsa.RSAPublicKey, "RSA"),
        (ec.EllipticCurvePublicKey, "ECDSA"),
        (ed25519.Ed25519PublicKey, "Ed25519"),
        (ed448.Ed448PublicKey, "Ed448"),
    )
    return next((name for kind, name in kinds if isinstance(key, kind)), type(key).__name__)
