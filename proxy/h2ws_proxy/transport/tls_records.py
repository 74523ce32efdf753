"""Where whole TLS records end in the bytes fed to OpenSSL's incoming memory BIO.

A TLS record is a 5-byte header, whose last two bytes are the length of the body that
follows (RFC 8446 §5.1, RFC 5246 §6.2), whatever its content type or protection. OpenSSL
without read-ahead (Python's ``ssl`` never sets it) takes a record's bytes from the BIO
only when it processes that record, so the BIO holds a whole record not yet processed
exactly when the bytes OpenSSL took (fed minus what the BIO still holds) end before the
last whole record fed. Asking OpenSSL for plaintext without one there costs a want-read:
its error queue, an ``SSLWantReadError`` made, raised and caught.
"""

from __future__ import annotations

#: A record's header: content type (1), legacy version (2), body length (2).
HEADER_SIZE = 5


class RecordBounds:
    """Follows the record boundaries of a byte stream fed in pieces of any size."""

    __slots__ = ("_body_left", "_head", "fed", "whole_end")

    def __init__(self) -> None:
        #: Bytes fed so far.
        self.fed = 0
        #: Where the last whole record fed ends (an offset in the bytes fed).
        self.whole_end = 0
        #: Body bytes of the current record still to come (0: the next byte is a header's).
        self._body_left = 0
        #: A header's first bytes, when a piece ended inside one.
        self._head = b""

    def feed(self, data: bytes) -> None:
        start, size, at = self.fed, len(data), 0
        body_left, head = self._body_left, self._head
        while at < size:
            if body_left:
                taken = min(body_left, size - at)
                at += taken
                body_left -= taken
                if not body_left:
                    self.whole_end = start + at
                continue
            if head or size - at < HEADER_SIZE:
                missing = HEADER_SIZE - len(head)
                head += data[at : at + missing]
                at = min(at + missing, size)
                if len(head) < HEADER_SIZE:
                    break
                body_left = (head[3] << 8) | head[4]
                head = b""
            else:
                body_left = (data[at + 3] << 8) | data[at + 4]
                at += HEADER_SIZE
            if not body_left:  # an empty record is whole with its header
                self.whole_end = start + at
        self.fed = start + size
        self._body_left, self._head = body_left, head

    def whole_record_left(self, unread: int) -> bool:
        """True if a whole record is among the last ``unread`` bytes fed (the bytes the
        BIO still holds)."""
        return self.fed - unread < self.whole_end
