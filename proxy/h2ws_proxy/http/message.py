"""Translate ordinary HTTP requests and responses between the client's protocol and HTTP/1.1.
Pure, no I/O.

A frontend turns the client's request head into a protocol-neutral :class:`HttpRequest`
(:func:`request_from_h2` or :func:`request_from_h1`); :func:`build_backend_request` makes
the HTTP/1.1 request for the backend; :func:`response_fields` filters the backend's answer
for the way back.

Framing rules, which are what keeps one client's bytes from being read by the backend as a
second request (request smuggling, RFC 9112 §6.3 and §11.2):

* The backend request's framing is always ours: ``Content-Length`` when the length is known
  (the client declared it, and the frontend holds the client to it), else
  ``Transfer-Encoding: chunked`` re-encoded by h11, never the client's own chunking.
* An HTTP/1.1 request with both ``Content-Length`` and ``Transfer-Encoding`` is refused
  (400), not resolved: RFC 9112 §6.1 allows that, and a proxy and a backend that resolve it
  differently are the classic CL.TE desync. h11 already refuses conflicting
  ``Content-Length`` values and any transfer coding but ``chunked``.
* ``GET``, ``HEAD``, ``DELETE``, ``OPTIONS`` and ``TRACE`` requests with a body are
  refused (400): backends disagree on whether to read such a body, and one that does not
  would take it for the next request on a kept-alive connection. Browsers never send one.
* Names are lowercase; values carry no CR, LF or NUL (request_head and h11 check that).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

import h11

from h2ws_proxy.config import RouteConfig
from h2ws_proxy.errors import ClientProtocolError
from h2ws_proxy.http.fields import (
    HOP_BY_HOP,
    dashed,
    end_to_end_request_headers,
    is_forwarding_field,
    split_header_list,
    with_forwarding_fields,
)
from h2ws_proxy.http.grammar import AUTHORITY_PATTERN, REQUEST_TARGET, TOKEN, fields_pass
from h2ws_proxy.http.paths import split_target, target_for_route
from h2ws_proxy.http.request_head import H2RequestHead, malformed

Header = tuple[bytes, bytes]

#: Methods whose requests must not carry a body here (see the module rules).
BODILESS_METHODS = frozenset({b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"TRACE"})
#: RFC 9110 §9.3 and RFC 5789: the methods a backend may also read in another case.
_STANDARD = (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE")
_STANDARD_METHODS = {method.lower(): method for method in (*_STANDARD, b"PATCH")}
#: Fields the proxy sets itself toward the backend; the client's copies go.
_SET_BY_PROXY = frozenset({b"host", b"content-length"})
#: What is never forwarded as a field of the head, or as a trailer field.
_NOT_FORWARDED = frozenset({*_SET_BY_PROXY, *HOP_BY_HOP})
_DIGITS = re.compile(rb"[0-9]{1,18}\Z")
_ABSOLUTE_FORM = re.compile(rb"(?i)(https?)://([^/?#]*)(.*)\Z")
# What h11.Request accepts, by h11's grammar: checked here first, since building h11's
# event is the dearer path (bench/README.md, the "Plain GETs" step); h11 judges the rest.
_TOKEN = re.compile(TOKEN)
_TARGET = re.compile(REQUEST_TARGET)


class BodyFraming(enum.Enum):
    """How the request body travels to the backend."""

    NONE = "none"  #: no body
    LENGTH = "length"  #: Content-Length: n
    CHUNKED = "chunked"  #: Transfer-Encoding: chunked (length unknown)


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """An ordinary HTTP request, whatever protocol the client spoke."""

    method: bytes
    #: The request target in origin-form (``/path?query``), or ``*``, as routed: normalised
    #: (``http/paths.py``), or the client's own when ``path_refusal`` says why it is not.
    target: bytes
    authority: bytes
    #: ``b"https"`` when the client reached us over TLS, else ``b"http"``.
    scheme: bytes
    #: End-to-end fields: hop-by-hop, ``host`` and ``content-length`` removed.
    headers: tuple[Header, ...]
    framing: BodyFraming
    content_length: int | None = None
    #: The client's target when it differs from ``target`` (sent to a route with
    #: ``normalize_path = false``); None when they are the same bytes.
    raw_target: bytes | None = None
    #: Why normalisation refused the target: only a route with ``normalize_path = false``
    #: takes the request then (``relay/routing.py``).
    path_refusal: str | None = None

    @property
    def is_head(self) -> bool:
        return self.method == b"HEAD"


def _content_length(values: list[bytes], *, h2: bool) -> int | None:
    """The one length all ``content-length`` values agree on, or None if there is none."""
    if not values:
        return None
    items = {item.strip() for value in values for item in value.split(b",")}
    if not items:
        return None
    if len(items) != 1 or not _DIGITS.match(next(iter(items))):
        raise _refusal("content-length is not one non-negative integer", h2=h2)
    return int(items.pop())


def request_from_h2(head: H2RequestHead, *, tls: bool, end_stream: bool) -> HttpRequest:
    """An ordinary (not CONNECT) HTTP/2 request; ``end_stream`` if HEADERS ended the stream.

    Raises :class:`ClientProtocolError` (400 with a stream error when malformed).
    """
    _check_method(head.method)
    authority = head.target_authority
    if authority is None:
        raise malformed(":authority or host is required")  # RFC 9113 §8.3.1
    assert head.path is not None  # parse_h2_request_head requires it without CONNECT
    length = _content_length(head.get_all(b"content-length"), h2=True)
    if end_stream:
        if length:
            raise malformed(f"content-length {length} on a request that has no DATA")
        framing = BodyFraming.NONE
    elif length is not None:
        framing = BodyFraming.LENGTH if length else BodyFraming.NONE
    else:
        # No declared length: the body is whatever DATA comes. A bodiless method gets no
        # framing at all; the frontend resets the stream if DATA with bytes arrives.
        framing = BodyFraming.NONE if head.method in BODILESS_METHODS else BodyFraming.CHUNKED
    if framing is not BodyFraming.NONE and head.method in BODILESS_METHODS:
        raise _body_on_bodiless(head.method, h2=True)
    target, raw_target, path_refusal = split_target(head.path)
    return HttpRequest(
        method=head.method,
        target=target,
        authority=authority,
        scheme=b"https" if tls else b"http",
        headers=_forwarded_fields(head.headers),
        framing=framing,
        content_length=length if framing is BodyFraming.LENGTH else None,
        raw_target=raw_target,
        path_refusal=path_refusal,
    )


def _forwarded_fields(headers: tuple[Header, ...]) -> tuple[Header, ...]:
    """``end_to_end_request_headers(headers, replaced=_SET_BY_PROXY)``, in one pass when no
    ``connection`` field lists more to drop (never on HTTP/2, where it is malformed)."""
    for name, _ in headers:
        if name == b"connection":
            return end_to_end_request_headers(headers, replaced=_SET_BY_PROXY)
    return tuple([field for field in headers if field[0] not in _NOT_FORWARDED])


def request_from_h1(request: h11.Request, *, tls: bool) -> HttpRequest:
    """An ordinary HTTP/1.1 request as parsed by h11 (which checked names and values).

    Raises :class:`ClientProtocolError` (400) for what must not be forwarded.
    """
    _check_method(request.method)
    if request.method == b"CONNECT":
        raise ClientProtocolError(
            "plain CONNECT (a TCP tunnel to host:port) is not offered here", status_hint=501
        )
    headers = [(name.lower(), value) for name, value in request.headers]

    def values(name: bytes) -> list[bytes]:
        return [value for field, value in headers if field == name]

    chunked = bool(values(b"transfer-encoding"))
    length = _content_length(values(b"content-length"), h2=False)
    if chunked and length is not None:
        raise ClientProtocolError(
            "bad request: both content-length and transfer-encoding (RFC 9112 §6.1)"
        )
    target, authority = _origin_form(request.target, values(b"host"))
    if chunked:
        framing = BodyFraming.CHUNKED
    elif length:
        framing = BodyFraming.LENGTH
    else:
        framing = BodyFraming.NONE
    if framing is not BodyFraming.NONE and request.method in BODILESS_METHODS:
        raise _body_on_bodiless(request.method, h2=False)
    target, raw_target, path_refusal = split_target(target)
    return HttpRequest(
        method=request.method,
        target=target,
        authority=authority,
        scheme=b"https" if tls else b"http",
        headers=end_to_end_request_headers(headers, replaced=_SET_BY_PROXY),
        framing=framing,
        content_length=length if framing is BodyFraming.LENGTH else None,
        raw_target=raw_target,
        path_refusal=path_refusal,
    )


def _origin_form(target: bytes, hosts: list[bytes]) -> tuple[bytes, bytes]:
    """The origin-form target and the authority (RFC 9112 §3.2, §3.3)."""
    if len(hosts) != 1 or not AUTHORITY_PATTERN.match(hosts[0]):
        raise ClientProtocolError("bad request: exactly one valid host field is required")
    if target.startswith(b"/") or target == b"*":
        return target, hosts[0]
    absolute = _ABSOLUTE_FORM.match(target)
    if absolute is None or not AUTHORITY_PATTERN.match(absolute.group(2)):
        raise ClientProtocolError("bad request: the request target is not a path or an URL")
    # RFC 9112 §3.2.2: with an absolute-form target, its authority wins over Host.
    path = absolute.group(3) or b"/"
    if not path.startswith(b"/"):
        path = b"/" + path
    return path, absolute.group(2)


def _body_on_bodiless(method: bytes, *, h2: bool) -> ClientProtocolError:
    return _refusal(
        f"a {method.decode('ascii', 'replace')} request with a body is not forwarded "
        "(backends disagree on reading it)",
        h2=h2,
    )


def _check_method(method: bytes) -> None:
    """Refuse a method that differs from a standard one only in case (``get``, ``Head``):
    methods are case-sensitive (RFC 9110 §9.1), so the rules for GET would not see it,
    while many backends would read it as GET."""
    standard = _STANDARD_METHODS.get(method.lower())
    if standard is not None and standard != method:
        raise ClientProtocolError(
            f"bad request: method {method.decode('ascii', 'replace')} is not "
            f"{standard.decode()} (methods are case-sensitive, RFC 9110 §9.1)"
        )


def _refusal(reason: str, *, h2: bool) -> ClientProtocolError:
    """400: on HTTP/2 a malformed request (a stream error too), on HTTP/1.1 a bad one."""
    return malformed(reason) if h2 else ClientProtocolError(f"bad request: {reason}")


@dataclass(frozen=True, slots=True)
class BackendRequest:
    """The HTTP/1.1 request for the backend, valid for h11: ``host`` first, our framing."""

    method: bytes
    target: bytes
    headers: list[Header]
    framing: BodyFraming
    #: The route's ``strip_fields``: dropped from the client's trailers too.
    strip_fields: frozenset[bytes] = frozenset()

    def head_bytes(self) -> bytes:
        """The request line and fields, byte for byte as h11 writes them."""
        lines = [b"%s %s HTTP/1.1" % (self.method, self.target)]
        lines.extend([b"%s: %s" % field for field in self.headers])
        lines.append(b"\r\n")
        return b"\r\n".join(lines)

    def h11_event(self) -> h11.Request:
        return h11.Request(method=self.method, target=self.target, headers=self.headers)


def build_backend_request(
    request: HttpRequest, route: RouteConfig, client_address: str | None
) -> BackendRequest:
    """The HTTP/1.1 request for ``route``'s backend, with our own framing, to the target
    the route asks for (normalised, or the client's raw one: ``http/paths.py``).

    Raises :class:`ClientProtocolError` (400) for what h11 would not send.
    """
    headers: list[Header] = [(b"host", request.authority)]
    headers.extend(
        with_forwarding_fields(
            request.headers, route, client_address, request.scheme, request.authority
        )
    )
    if request.framing is BodyFraming.LENGTH:
        headers.append((b"content-length", str(request.content_length).encode()))
    elif request.framing is BodyFraming.CHUNKED:
        headers.append((b"transfer-encoding", b"chunked"))
    target = target_for_route(
        request.target,
        request.raw_target,
        request.path_refusal,
        normalize_path=route.normalize_path,
    )
    backend_request = BackendRequest(
        request.method, target, headers, request.framing, route.strip_fields
    )
    if not _valid_for_h11(backend_request):
        try:
            backend_request.h11_event()  # for h11's own words about what is wrong
        except h11.LocalProtocolError as error:
            raise ClientProtocolError(
                f"request cannot be expressed in HTTP/1.1: {error}"
            ) from error
    return backend_request


def _valid_for_h11(request: BackendRequest) -> bool:
    """What ``h11.Request`` checks, for a request with one ``host`` and our own framing.

    All names, then all values, in one match each (see ``grammar.fields_pass``).
    """
    headers = request.headers
    names = b"\n".join([name for name, _ in headers])
    values = b"\n".join([value for _, value in headers])
    return (
        _TOKEN.fullmatch(request.method) is not None
        and _TARGET.fullmatch(request.target) is not None
        and fields_pass(names, values, len(headers))
    )


_NO_DROP: frozenset[bytes] = frozenset()
_DROP_LENGTH = frozenset({b"content-length"})


#: Statuses whose answers never have a body, whatever their fields say (RFC 9110 §6.4.1).
NO_BODY_STATUSES = frozenset({204, 304})


def answer_has_body(request: HttpRequest, status: int, headers: list[Header]) -> bool:
    """Whether a final answer from an HTTP/1.1 backend has body bytes to relay: not for a
    HEAD, a 204 or a 304, nor with a ``content-length`` of 0 (the head then ends the
    HTTP/2 stream)."""
    if request.is_head or status in NO_BODY_STATUSES:
        return False
    lengths = [value for name, value in headers if name == b"content-length"]
    return lengths != [b"0"]


def response_fields(status: int, headers: list[Header], *, for_h2: bool) -> list[Header]:
    """The backend answer's fields (names lowercase) to relay: hop-by-hop removed.

    ``content-length`` stays (the backend was held to it, and HEAD answers need it), except
    on a 204 toward HTTP/2, where RFC 9110 §8.6 forbids it, and beside a
    ``transfer-encoding``, which overrides it (RFC 9112 §6.3). Used for 1xx heads too.
    """
    drop = _DROP_LENGTH if for_h2 and status == 204 else _NO_DROP
    listed: list[bytes] = []
    for name, value in headers:
        if name == b"connection":
            listed.extend(split_header_list([value.lower()]))
        elif name == b"transfer-encoding":
            # RFC 9112 §6.3: the transfer coding framed the body, and a proxy removes the
            # received Content-Length before forwarding such a message.
            drop = _DROP_LENGTH
    if not listed and not drop:
        return [field for field in headers if field[0] not in HOP_BY_HOP]
    # As end_to_end_response_headers: hop-by-hop, Connection-listed and ``drop`` removed.
    dropped = HOP_BY_HOP.union(listed, drop)
    return [field for field in headers if field[0] not in dropped]


def trailer_fields(
    headers: list[Header] | tuple[Header, ...], strip: frozenset[bytes] = frozenset()
) -> list[Header]:
    """Trailer fields fit to relay: names lowercase, no framing or hop-by-hop fields, no
    forwarding claim (a backend may merge trailers into the head's fields), and none of
    ``strip`` (a route's ``strip_fields``, for the client's trailers), in either spelling."""
    lowered = [(name.lower(), value) for name, value in headers]
    return [
        (name, value)
        for name, value in lowered
        if name not in _NOT_FORWARDED
        and not name.startswith(b":")
        and not is_forwarding_field(name)
        and (not strip or dashed(name) not in strip)
    ]
