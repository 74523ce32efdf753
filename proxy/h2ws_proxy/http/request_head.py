"""Validate an HTTP/2 request header block (RFC 9113 §8.2-8.3), strictly. Pure, no I/O.

Our HTTP/2 session leaves the request head's content to this module: RFC 9113 §8.1.1 makes
a malformed request a *stream* error (h2, our tests' oracle, made it a connection error
that takes down every tunnel on the connection), so a bad request fails only its own
stream.

Rules enforced (each violation raises :class:`ClientProtocolError` with status 400 and
``stream_error`` set, so the frontend answers 400 and resets the stream PROTOCOL_ERROR):

1. Field names are non-empty lowercase tokens; values carry no NUL, CR or LF and no
   leading or trailing whitespace (§8.2.1). Names with upper case are malformed (§8.2).
2. Pseudo-headers are the request ones only, each at most once, all before regular
   fields (§8.3).
3. Connection-specific fields (``connection``, ``keep-alive``, ``proxy-connection``,
   ``transfer-encoding``, ``upgrade``) are malformed; ``te`` may only be ``trailers``
   (§8.2.2). This is what keeps an HTTP/2 request from smuggling framing into HTTP/1.1.
4. ``:authority`` has no userinfo (§8.3.1) and agrees with ``host`` when both are sent.
5. ``:path`` is visible ASCII only (no spaces or controls: they would split the HTTP/1.1
   request line) and starts with ``/`` (or is ``*`` for OPTIONS).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from h2ws_proxy.errors import ClientProtocolError
from h2ws_proxy.http.grammar import (
    AUTHORITY_PATTERN,
    H2_FORBIDDEN_IN_VALUE,
    LOWER_TOKEN,
    REQUEST_TARGET,
    TOKEN,
)

Header = tuple[bytes, bytes]

_REQUEST_PSEUDO_HEADERS = frozenset({b":method", b":scheme", b":path", b":authority", b":protocol"})
# RFC 9113 §8.2.2
_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
# Rule 1: lowercase tokens (RFC 9113 §8.2: upper case is malformed); methods are tokens.
_LOWER_TOKEN = re.compile(LOWER_TOKEN + rb"\Z")
_METHOD_TOKEN = re.compile(TOKEN + rb"\Z")
_FORBIDDEN_IN_VALUE = re.compile(H2_FORBIDDEN_IN_VALUE)
# Every value breaking rule 1 matches this (one search per field, per new stream).
_SUSPECT_VALUE = re.compile(H2_FORBIDDEN_IN_VALUE + rb"|\A[ \t]|[ \t]\Z")
_HAS_PORT = re.compile(rb":[0-9]+\Z")
# Rule 5: the request target h11 would write (visible ASCII).
_VISIBLE_ASCII = re.compile(REQUEST_TARGET + rb"\Z")


@dataclass(frozen=True, slots=True)
class H2RequestHead:
    """A request header block that passed every rule above."""

    method: bytes
    scheme: bytes | None
    #: ``:authority`` as sent (None when absent: ``host`` is then in :attr:`host`).
    authority: bytes | None
    path: bytes | None
    protocol: bytes | None
    #: The ``host`` field, if sent; it equals ``authority`` (case-insensitively) when both are.
    host: bytes | None
    #: Regular fields in arrival order, names lowercase, ``host`` removed (it is
    #: rebuilt from ``authority`` on the way to HTTP/1.1).
    headers: tuple[Header, ...]

    @property
    def target_authority(self) -> bytes | None:
        """``:authority``, else ``host`` (RFC 9113 §8.3.1): what ``Host`` becomes on HTTP/1.1."""
        return self.authority if self.authority is not None else self.host

    def get(self, name: bytes) -> bytes | None:
        """The first value of regular field ``name`` (lowercase), or None."""
        for field_name, value in self.headers:
            if field_name == name:
                return value
        return None

    def get_all(self, name: bytes) -> list[bytes]:
        """Every value of regular field ``name``, in order."""
        return [value for field_name, value in self.headers if field_name == name]


def malformed(reason: str) -> ClientProtocolError:
    """The error for a malformed request: 400 and a PROTOCOL_ERROR stream reset."""
    return ClientProtocolError(f"malformed request: {reason}", status_hint=400, stream_error=True)


#: Heads that passed lately, by their fields: a client opens stream after stream with the
#: same ones, and checking them again was a large part of taking a new stream
#: (bench/README.md, the "New tunnels" step).
#: Small heads only, and a few of them (the map is emptied when full): memory stays bounded
#: whatever a client sends.
_PASSED: dict[tuple[Header, ...], H2RequestHead] = {}
_PASSED_MAX_HEADS = 32
_PASSED_MAX_BYTES = 2048


def parse_h2_request_head(headers: list[Header]) -> H2RequestHead:
    """Check ``headers`` (as decoded by h2, bytes) against RFC 9113 and split them.

    Raises :class:`ClientProtocolError` (400, stream error) on the first violation. The
    result depends on nothing but ``headers``, so a head that passed is remembered (see
    ``_PASSED``); one that fails is checked again every time.
    """
    fields = tuple(headers)
    head = _PASSED.get(fields)
    if head is None:
        head = _check_head(headers)
        if sum([len(name) + len(value) for name, value in fields]) <= _PASSED_MAX_BYTES:
            if len(_PASSED) >= _PASSED_MAX_HEADS:
                _PASSED.clear()
            _PASSED[fields] = head
    return head


def _check_head(headers: list[Header]) -> H2RequestHead:
    """:func:`parse_h2_request_head` without the memory."""
    pseudo: dict[bytes, bytes] = {}
    regular: list[Header] = []
    host: bytes | None = None
    seen_regular = False
    for name, value in headers:
        if _SUSPECT_VALUE.search(value):
            _check_value(name, value)  # raises, saying which rule the value broke
        if name.startswith(b":"):
            if seen_regular:
                raise malformed(f"pseudo-header {name!r} after a regular field")
            if name not in _REQUEST_PSEUDO_HEADERS:
                raise malformed(f"pseudo-header {name!r} is not a request pseudo-header")
            if name in pseudo:
                raise malformed(f"pseudo-header {name!r} repeated")
            pseudo[name] = value
            continue
        seen_regular = True
        _check_regular_field(name, value)
        if name == b"host":
            if host is not None:
                raise malformed("host repeated")
            host = value
        else:
            regular.append((name, value))
    return _build_head(pseudo, regular, host)


def _check_value(name: bytes, value: bytes) -> None:
    if _FORBIDDEN_IN_VALUE.search(value):
        raise malformed(f"NUL, CR or LF in the value of {name!r}")
    if value[:1] in (b" ", b"\t") or value[-1:] in (b" ", b"\t"):
        raise malformed(f"leading or trailing whitespace in the value of {name!r}")


def _check_regular_field(name: bytes, value: bytes) -> None:
    if not _LOWER_TOKEN.match(name):
        raise malformed(f"field name {name!r} is empty, not a token or not lowercase")
    if name in _CONNECTION_SPECIFIC:
        raise malformed(f"connection-specific field {name.decode()!r}")
    if name == b"te" and value.lower() != b"trailers":
        raise malformed("te other than 'trailers'")


def _build_head(
    pseudo: dict[bytes, bytes], regular: list[Header], host: bytes | None
) -> H2RequestHead:
    method = pseudo.get(b":method")
    if method is None or not _METHOD_TOKEN.match(method):
        raise malformed(":method missing or not a token")
    authority = pseudo.get(b":authority")
    if authority is not None and not AUTHORITY_PATTERN.match(authority):
        raise malformed(":authority is not host[:port] (userinfo and whitespace are not allowed)")
    if host is not None:
        if not AUTHORITY_PATTERN.match(host):
            raise malformed("host is not host[:port]")
        if authority is not None and host.lower() != authority.lower():
            raise malformed("host disagrees with :authority")
    _check_pseudo_set(method, pseudo)
    path = pseudo.get(b":path")
    if path is not None:
        if not _VISIBLE_ASCII.match(path):
            raise malformed(":path is empty or has spaces, controls or non-ASCII bytes")
        if not path.startswith(b"/") and not (path == b"*" and method == b"OPTIONS"):
            raise malformed(":path does not start with '/'")
    return H2RequestHead(
        method=method,
        scheme=pseudo.get(b":scheme"),
        authority=authority,
        path=path,
        protocol=pseudo.get(b":protocol"),
        host=host,
        headers=tuple(regular),
    )


def _check_pseudo_set(method: bytes, pseudo: dict[bytes, bytes]) -> None:
    """Which pseudo-headers each kind of request must and must not carry (RFC 9113 §8.3, §8.5)."""
    if b":protocol" in pseudo and method != b"CONNECT":
        raise malformed(":protocol on a non-CONNECT request")  # RFC 8441 §4
    if method == b"CONNECT" and b":protocol" not in pseudo:
        if b":scheme" in pseudo or b":path" in pseudo:
            raise malformed("plain CONNECT must not carry :scheme or :path")
        if not _HAS_PORT.search(pseudo.get(b":authority", b"")):
            # RFC 9110 §9.3.6: there is no default port; the client MUST send one.
            raise malformed("CONNECT without :authority host:port")
        return
    if b":scheme" not in pseudo or b":path" not in pseudo:
        raise malformed(":scheme and :path are required")
