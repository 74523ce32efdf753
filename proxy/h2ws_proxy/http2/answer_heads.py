"""What a backend's HTTP/1.1 answer head becomes on an HTTP/2 stream, remembered.

The backend's wire gives a repeated head as the same event object (``parse_plain_head``
remembers heads by their bytes), so what it becomes here (whether a body follows, the
fields to send) is remembered by that object's identity, as the whole HTTP/2 head the session sends
(``:status`` first, connection-specific fields already out: ``prepared_response_head``): a
backend's answers repeat, and the request path gains from each step it skips
(bench/README.md, the lean request path).
A HEAD request's heads are other objects than a GET's (the wire's key holds ``is_head``),
so the body decision, which depends on the method, stays right.
"""

from __future__ import annotations

import trio

from h2ws_proxy.backend.h1_wire import ResponseHead
from h2ws_proxy.h2session import SessionUsageError, StreamUnusable
from h2ws_proxy.http.message import HttpRequest, answer_has_body, response_fields
from h2ws_proxy.http2.proxy_session import prepared_response_head
from h2ws_proxy.http2.stream import H2Stream

Header = tuple[bytes, bytes]

#: By the head's id; the head is held too, so that its id is not reused while remembered.
_RELAYED: dict[int, tuple[ResponseHead, bool, list[Header]]] = {}
_RELAYED_MAX = 64
#: The entry :func:`h2_answer_head` gave last: a backend's next answer usually has the same
#: head object (the wire's ``LAST_PLAIN_HEADS``), found here by one identity test.
_last_relayed: tuple[ResponseHead | None, bool, list[Header]] = (None, False, [])


def h2_answer_head(request: HttpRequest, response: ResponseHead) -> tuple[bool, list[Header]]:
    """(a body follows, the head to send with ``ProxySession.send_prepared_head``) for a
    final answer head; the list is shared: nobody may change it. Raises ``StreamUnusable``
    as ``prepared_response_head`` (then nothing is remembered)."""
    global _last_relayed
    relayed = _RELAYED.get(id(response))
    if relayed is None or relayed[0] is not response:
        status = response.status
        has_body = answer_has_body(request, status, response.headers)
        fields = response_fields(status, response.headers, for_h2=True)
        relayed = (response, has_body, prepared_response_head(status, fields))
        if len(_RELAYED) >= _RELAYED_MAX:
            _RELAYED.clear()
        _RELAYED[id(response)] = relayed
    _last_relayed = relayed
    return relayed[1], relayed[2]


def send_answer_head(stream: H2Stream, request: HttpRequest, response: ResponseHead) -> None:
    """Send ``response`` (a final head, or a 1xx other than 101) on ``stream``; a final head
    without a body ends it. Raises as the session (``StreamUnusable``) or for a broken
    stream (``BrokenResourceError``)."""
    if stream.broken_reason is not None:
        raise trio.BrokenResourceError(stream.broken_reason)
    status = response.status
    if status < 200:
        fields = response_fields(status, response.headers, for_h2=True)
        stream.session.send_headers(stream.stream_id, [(b":status", str(status).encode()), *fields])
        return
    has_body, head = h2_answer_head(request, response)
    stream.session.send_prepared_head(stream.stream_id, head, end_stream=not has_body)
    if not has_body:
        stream.mark_ended_locally()


def send_whole_answer(
    stream: H2Stream, request: HttpRequest, response: ResponseHead, body: bytes
) -> int:
    """Send final head ``response`` and all of its ``body`` (what came with it) with
    END_STREAM, in one session call (``ProxySession.send_prepared_answer``'s, in place);
    how much of ``body`` went (less than all: the end waits for the rest, as for
    ``H2Stream.send_now``).
    Raises as :func:`send_answer_head`."""
    if stream.broken_reason is not None:
        raise trio.BrokenResourceError(stream.broken_reason)
    relayed = _last_relayed
    if relayed[0] is response:
        has_body, head = relayed[1], relayed[2]
    else:
        has_body, head = h2_answer_head(request, response)
    if not has_body:  # HEAD, 204, 304: no body came either (the wire gives them none)
        stream.session.send_prepared_head(stream.stream_id, head, end_stream=True)
        stream.mark_ended_locally()
        return 0
    # ``ProxySession.send_prepared_answer``'s steps in place (once per answer): the
    # session's call, its misuse as ``StreamUnusable``, the wake-up.
    session = stream.session
    try:
        sent = session.send_answer(stream.stream_id, head, body)
    except SessionUsageError as error:  # (the head's: after it, DATA cannot fail)
        raise StreamUnusable(str(error)) from error
    session.on_output()
    # Then ``send_now(body, end=True)``'s rules after the head: less than all of it, the
    # caller waits for new credit; all of it, our side is ended.
    if sent < len(body):
        stream.connection.wait_for_window(stream)
    else:
        stream.mark_ended_locally()
    return sent
