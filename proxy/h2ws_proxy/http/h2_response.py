"""A response head from an HTTP/2 backend, checked before anything of it is used. Pure.

Rules (RFC 9113 §8.2, §8.3.2): the one pseudo-field is ``:status``, first, three digits;
names are lowercase and not empty; no connection-specific field (``connection``,
``keep-alive``, ``proxy-connection``, ``transfer-encoding``, ``upgrade``; ``te`` only as
``trailers``). A head that breaks one is malformed: :class:`BackendProtocolError` (502 to
the client, and the stream is reset by its owner).
"""

from __future__ import annotations

from h2ws_proxy.errors import BackendProtocolError
from h2ws_proxy.http.fields import H2_CONNECTION_SPECIFIC

__all__ = ["parse_h2_response_head"]

Header = tuple[bytes, bytes]


def parse_h2_response_head(headers: list[Header]) -> tuple[int, list[Header]]:
    """``(status, fields without the pseudo-field)``; raises BackendProtocolError."""
    if not headers or headers[0][0] != b":status":
        raise _malformed("it does not start with :status")
    status_text = headers[0][1]
    if len(status_text) != 3 or not status_text.isdigit():
        raise _malformed(f":status {status_text.decode('ascii', 'replace')!r} is not 3 digits")
    fields = headers[1:]
    for name, value in fields:
        if not name or name[:1] == b":":
            raise _malformed(f"it has the pseudo-field {name.decode('ascii', 'replace')!r}")
        if name != name.lower():
            raise _malformed(f"field name {name.decode('ascii', 'replace')!r} is not lowercase")
        if name in H2_CONNECTION_SPECIFIC or (name == b"te" and value.lower() != b"trailers"):
            raise _malformed(f"it has the connection-specific field {name.decode()!r}")
    return int(status_text), fields


def _malformed(why: str) -> BackendProtocolError:
    return BackendProtocolError(
        f"backend's HTTP/2 response head is malformed (RFC 9113 §8.3.2): {why}",
        outcome="bad_answer",
    )
