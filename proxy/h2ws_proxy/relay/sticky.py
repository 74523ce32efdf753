"""The sticky cookie of ``balance = "cookie"``: read from requests, set on answers.

Rules:

* The proxy names the server that served a client in a cookie (``sticky_cookie``) whose
  value is an opaque hash of the server (``backend/balancer.sticky_value``); a request
  that carries a value naming a server that is up goes to it, else to the next in turn,
  and the answer sets the cookie anew.
* Cookies are read from every ``cookie`` field (HTTP/2 may split them, RFC 9113 §8.2.3),
  ``; ``-separated pairs (RFC 6265 §5.4); the first pair with the name wins.
* The cookie is set on ordinary answers (socket.io's long-polling requests carry it to
  their upgrade), ``Path=/``, ``HttpOnly``, ``SameSite=Lax``, ``Secure`` when the client
  came over TLS; never on a WebSocket's own answer.
"""

from __future__ import annotations

Header = tuple[bytes, bytes]


def sticky_cookie(headers: tuple[Header, ...] | list[Header], name: str) -> str | None:
    """The value of cookie ``name`` in ``headers``' cookie fields, or None."""
    if not name:
        return None
    wanted = name.encode("ascii") + b"="
    for field_name, value in headers:
        if field_name != b"cookie":
            continue
        for pair in value.split(b";"):
            pair = pair.strip()
            if pair.startswith(wanted):
                return pair[len(wanted) :].decode("ascii", "replace")
    return None


def set_cookie_field(name: str, value: str, *, secure: bool) -> Header:
    """The ``set-cookie`` field that pins the client to the server named by ``value``."""
    attributes = "; Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")
    return b"set-cookie", f"{name}={value}{attributes}".encode("ascii")
