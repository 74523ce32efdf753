"""Request paths normalised before routing, so that no backend resolves a path elsewhere
than the route chosen for it. Pure, no I/O.

Rules (the path part of the target; the query after the first ``?`` is left as it is):

* Percent-escapes of unreserved characters (RFC 3986 §2.3: letters, digits, ``-._~``) are
  decoded (``/%61dmin`` is ``/admin``); other escapes stay, their hex digits upper-cased
  (RFC 3986 §6.2.2.1). A ``%`` not followed by two hex digits is refused.
* Encoded ``/`` and ``\\`` (``%2F``, ``%5C``) and a literal ``\\`` are refused: backends
  disagree on whether they separate segments.
* Dot-segments are removed (RFC 3986 §5.2.4) and repeated slashes merged; a path that
  climbs above ``/`` is refused. A segment ``..`` or ``.`` followed by ``;`` parameters
  (``..;``, which Tomcat resolves as ``..``) is refused.
* What is refused gets 400 (:class:`ClientProtocolError`), unless the route its raw form
  matches has ``normalize_path = false`` (below). The backend receives the normalised
  path, which is the one that was routed.

A route with ``normalize_path = false`` (for backends that need the bytes as sent: an
encoded ``/`` that means something to them, a signed URL) gets the client's raw target
instead. The route is still chosen on the normalised path when there is one, so
``/raw/../admin`` goes to the ``/admin`` route (normalised, if that route normalises). Only
a path that normalisation refuses is routed on its raw form, and it proceeds only when the
route so chosen itself has ``normalize_path = false``: a refused path never reaches a
normalising route's backend, in any form. What a raw route's backend makes of the bytes
(``/raw/..%2Fadmin`` resolved as its own ``/admin``) is that backend's business: raw routes
are for backends that decide nothing policy-relevant by path.

The request objects carry the three results of :func:`split_target` (the target routed,
the raw one when it differs, the refusal); :func:`target_for_route` picks what is sent.
"""

from __future__ import annotations

from h2ws_proxy.errors import ClientProtocolError

#: RFC 3986 §2.3.
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset(b"0123456789abcdefABCDEF")
#: Decoded, these would be segment separators for some backend.
_SEPARATORS = frozenset({ord("/"), ord("\\")})


def normalize_target(target: bytes) -> bytes:
    """``target`` (a path, with its query if any) as it is routed and sent on; raises
    :class:`ClientProtocolError` (400) for one that must not be."""
    path, mark, query = target.partition(b"?")
    if (
        b"%" not in path
        and b"//" not in path
        and b"/." not in path
        and b"\\" not in path
        and path.startswith(b"/")
    ):
        return target  # nothing to normalise: most requests
    if not path.startswith(b"/"):
        return target  # not an origin-form path (``*``): nothing to route on
    return _normalized_path(path) + mark + query


def split_target(target: bytes) -> tuple[bytes, bytes | None, str | None]:
    """``(routed, raw, refusal)`` for the client's ``target``: the target to route on
    (normalised, or ``target`` itself when refused), ``target`` when it differs from
    ``routed`` (else None, the common case), and why normalisation refused it (else None).
    """
    try:
        routed = normalize_target(target)
    except ClientProtocolError as error:
        return target, None, error.message
    return routed, (None if routed == target else target), None


def target_for_route(
    routed: bytes, raw: bytes | None, refusal: str | None, *, normalize_path: bool
) -> bytes:
    """The target sent to the backend of a route with ``normalize_path``, from what
    :func:`split_target` gave. Raises :class:`ClientProtocolError` (400) for a refused path
    and a normalising route: routing refuses that first, and this keeps it so."""
    if normalize_path:
        if refusal is not None:
            raise ClientProtocolError(refusal)
        return routed
    return routed if raw is None else raw


def _normalized_path(path: bytes) -> bytes:
    if b"\\" in path:
        raise _refused("a backslash in the path")
    decoded = _decode_unreserved(path) if b"%" in path else path
    kept: list[bytes] = []
    segments = decoded.split(b"/")[1:]
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment in (b"", b"."):
            if last:
                kept.append(b"")  # a trailing slash stays
            continue
        if segment == b"..":
            if not kept:
                raise _refused("the path climbs above /")
            kept.pop()
            if last:
                kept.append(b"")
            continue
        if segment.startswith((b"..;", b".;")):
            raise _refused("a dot-segment with parameters")
        kept.append(segment)
    return b"/" + b"/".join(kept)


def _decode_unreserved(path: bytes) -> bytes:
    out = bytearray()
    index, end = 0, len(path)
    while index < end:
        byte = path[index]
        if byte != 0x25:  # "%"
            out.append(byte)
            index += 1
            continue
        escape = path[index + 1 : index + 3]
        if len(escape) != 2 or escape[0] not in _HEX or escape[1] not in _HEX:
            raise _refused("a % in the path not followed by two hex digits")
        value = int(escape, 16)
        if value in _SEPARATORS:
            raise _refused("an encoded / or \\ in the path")
        if value in _UNRESERVED:
            out.append(value)
        else:
            out += b"%" + escape.upper()
        index += 3
    return bytes(out)


def _refused(reason: str) -> ClientProtocolError:
    return ClientProtocolError(f"bad request: {reason}")
