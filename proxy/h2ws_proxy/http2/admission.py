"""What a new HTTP/2 request stream is: a WebSocket tunnel or an ordinary request, routed.

Pure decisions on a validated request head; the frontend acts on them. Plain CONNECT (a TCP
tunnel to host:port) is not offered: 501. Extended CONNECT needs SETTINGS_ENABLE_CONNECT_
PROTOCOL advertised on this listener (RFC 8441 §4). Over TLS, a request for a host the
connection's certificate does not cover is misdirected: 421 (:func:`check_authority`).
Errors are :class:`ProxyError`s with the status to answer.
"""

from __future__ import annotations

from h2ws_proxy.config import CertificateNames, RouteConfig
from h2ws_proxy.errors import ClientProtocolError, MisdirectedRequest
from h2ws_proxy.http.handshake import WebSocketRequest, parse_extended_connect
from h2ws_proxy.http.message import HttpRequest, request_from_h2
from h2ws_proxy.http.request_head import H2RequestHead
from h2ws_proxy.relay.routing import Router, http_route, websocket_route


def is_tunnel(head: H2RequestHead) -> bool:
    """A CONNECT of any kind (answered as a tunnel or refused as one), not a request."""
    return head.method == b"CONNECT" or head.protocol is not None


def check_authority(head: H2RequestHead, certificate: CertificateNames | None) -> None:
    """Raise :class:`MisdirectedRequest` (421) if the request's host (``:authority``, else
    ``host``) is not covered by ``certificate``, the one the connection was served with.

    RFC 9110 §15.5.20: browsers reuse a connection for another host that resolves to the
    same address when the certificate covers it too (RFC 9113 §9.1.1); a request the
    certificate does not cover (another certificate's host, or none of them) was sent on
    the wrong connection, and the client retries it on a new one. ``certificate`` is None
    without TLS: nothing to check. Plain CONNECT names a tunnel's target, not this origin.
    """
    if certificate is None or (head.method == b"CONNECT" and head.protocol is None):
        return
    authority = head.target_authority
    if authority is not None and not certificate.covers_authority(authority):
        raise MisdirectedRequest(
            f"this connection's certificate does not cover {authority.decode('latin-1')}; "
            "open a connection of its own for that host"
        )


_Accepted = tuple[H2RequestHead, Router, HttpRequest, RouteConfig]


def accept_http(
    head: H2RequestHead, router: Router, *, tls: bool, ended: bool
) -> tuple[HttpRequest, RouteConfig]:
    """The request and its route; raises the :class:`ProxyError` to answer.

    Both depend on nothing but the arguments, and a client repeats its requests (the same
    fields give the same ``head`` object: ``parse_h2_request_head`` remembers the heads that
    passed), so an accepted one is remembered by the identity of its head and router: a
    repeated request skips its translation and routing (bench/README.md, the lean request
    path). A refused one is judged again every time.
    """
    key = (id(head), id(router), tls, ended)
    accepted = _ACCEPTED.get(key)
    if accepted is not None and accepted[0] is head and accepted[1] is router:
        return accepted[2], accepted[3]
    request = request_from_h2(head, tls=tls, end_stream=ended)
    route = http_route(router, request)
    if len(_ACCEPTED) >= _ACCEPTED_MAX:
        _ACCEPTED.clear()
    # The head and router are held too: their ids cannot be reused while remembered.
    _ACCEPTED[key] = (head, router, request, route)
    return request, route


#: Accepted requests by (head, router, tls, ended), as far as ``parse_h2_request_head``
#: remembers heads; cleared when full.
_ACCEPTED: dict[
    tuple[int, int, bool, bool], tuple[H2RequestHead, Router, HttpRequest, RouteConfig]
] = {}
_ACCEPTED_MAX = 64


def accept_websocket(
    head: H2RequestHead, router: Router, *, connect_protocol_enabled: bool, tls: bool
) -> tuple[WebSocketRequest, RouteConfig]:
    if head.protocol is None:
        raise ClientProtocolError(
            "plain CONNECT (a TCP tunnel to host:port) is not offered here; "
            "only extended CONNECT with :protocol websocket",
            status_hint=501,
        )
    request = parse_extended_connect(
        head, connect_protocol_enabled=connect_protocol_enabled, tls=tls
    )
    return request, websocket_route(router, request)
