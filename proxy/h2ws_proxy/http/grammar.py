"""HTTP field and message grammar, written once: RFC 9110 §5, RFC 9112, as h11 spells it. Pure.

The proxy reads and writes the common HTTP/1.1 cases itself (:mod:`~h2ws_proxy.http.message`,
:mod:`~h2ws_proxy.http.upgrade_wire`, :mod:`~h2ws_proxy.backend.h1_wire`) and leaves every
other case to h11. That is only sound if nothing passes here that h11 would refuse, so:

Rules:

* The HTTP/1.1 sets are h11's own (``h11/_abnf.py``), byte for byte; ``tests/unit/
  test_grammar.py`` compares each with h11's at every byte value.
* Where h11 writes ``\\s`` (for bytes ``[\\t\\n\\x0b\\x0c\\r ]``), the class is spelled out as a
  literal set: the same bytes, and a literal class costs Python's regex engine less than
  h11's nested one. These fast paths exist for their CPU (bench/README.md, the "New
  tunnels" and "Plain GETs" steps).
* The pieces are pattern texts (``bytes``), meant to be joined; a module compiles what it
  combines. Patterns that several modules use whole are compiled here.
* HTTP/2 adds its own rules on top (RFC 9113 §8.2): lowercase names only, and a value
  may hold no NUL, CR or LF at all.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "AUTHORITY_PATTERN",
    "CHUNK_HEADER",
    "FIELD_LINE",
    "FIELD_VALUE",
    "FIELD_VCHAR",
    "H2_FORBIDDEN_IN_VALUE",
    "HEAD_END",
    "LINE_FORBIDDEN_BYTES",
    "LOWER_TOKEN",
    "OWS",
    "REASON_PHRASE",
    "REQUEST_TARGET",
    "TOKEN",
    "fields_pass",
]

#: RFC 9110 §5.6.2 token (h11 ``token``): field names and methods.
TOKEN: Final = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
#: A token without upper case: an HTTP/2 field name (RFC 9113 §8.2).
LOWER_TOKEN: Final = rb"[-!#$%&'*+.^_`|~0-9a-z]+"
#: RFC 9110 §5.6.3 optional whitespace (h11 ``OWS``).
OWS: Final = rb"[ \t]*"
#: RFC 9110 §5.5 field-vchar, obs-text included (h11 ``field_vchar``, ``[^\x00\s]``).
FIELD_VCHAR: Final = rb"[^\x00\t\n\x0b\x0c\r ]"
#: RFC 9110 §5.5 field-value: vchar runs joined by spaces and tabs, none at either end.
FIELD_VALUE: Final = rb"(?:" + FIELD_VCHAR + rb"+(?:[ \t]+" + FIELD_VCHAR + rb"+)*)?"
#: RFC 9112 §5 field-line (h11 ``header_field``); groups: the name, the value.
FIELD_LINE: Final = rb"(" + TOKEN + rb"):" + OWS + rb"(" + FIELD_VALUE + rb")" + OWS
#: RFC 9112 §3.2 request-target as h11 takes it: visible ASCII (h11 ``request_target``).
REQUEST_TARGET: Final = rb"[\x21-\x7e]+"
#: RFC 9112 §4 reason-phrase (h11 ``reason_phrase``, ``([ \t] | field_vchar)*``) as one class.
REASON_PHRASE: Final = rb"[^\x00\n\x0b\x0c\r]*"
#: RFC 9112 §7.1 chunk header (h11 ``chunk_header``): the size (group 1), extensions read
#: and dropped, the trailing whitespace h11 tolerates.
CHUNK_HEADER: Final = rb"([0-9A-Fa-f]{1,20})(?:;.*)?[ \t]*\r\n"
#: The bytes other than CR and LF that a field line or a status line may not hold: what
#: FIELD_VCHAR, OWS and REASON_PHRASE leave out (NUL, VT, FF).
LINE_FORBIDDEN_BYTES: Final = (b"\x00", b"\x0b", b"\x0c")
#: RFC 9113 §8.2.1: what no HTTP/2 field value may hold anywhere (NUL, CR, LF).
H2_FORBIDDEN_IN_VALUE: Final = rb"[\x00\r\n]"

#: Where h11 ends a head (``h11/_receivebuffer.py``): the first LF, optional CR, LF.
HEAD_END: Final = re.compile(rb"\n\r?\n", re.MULTILINE)
#: RFC 3986 §3.2 authority as the proxy takes it: reg-name, IPv4 or [IPv6], an optional
#: port; no userinfo, no whitespace.
AUTHORITY_PATTERN: Final = re.compile(
    rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(:[0-9]*)?\Z"
)

# Every name, or every value, joined by "\n" (which neither grammar allows).
_NAMES: Final = re.compile(TOKEN + rb"(?:\n" + TOKEN + rb")*")
_VALUES: Final = re.compile(FIELD_VALUE + rb"(?:\n" + FIELD_VALUE + rb")*")


def fields_pass(names: bytes, values: bytes, count: int) -> bool:
    """Whether ``count`` fields are each a token name and a valid value, as h11 requires
    of a message it writes; ``names`` and ``values`` are theirs joined by ``b"\\n"``.

    One match each: "\\n" is in neither grammar, so when a joined string matches
    "item (\\n item)*" and holds one "\\n" fewer than there are fields, its "\\n"s are
    exactly the separators and every field passed on its own.
    """
    separators = count - 1
    return (
        names.count(b"\n") == separators
        and values.count(b"\n") == separators
        and _NAMES.fullmatch(names) is not None
        and _VALUES.fullmatch(values) is not None
    )
