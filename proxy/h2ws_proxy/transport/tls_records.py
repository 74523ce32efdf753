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

    __slots__ = ("_head", "_next", "fed", "whole_end")

    def __init__(self) -> None:
        #: Bytes fed so far.
        self.fed = 0
        #: Where the last whole record fed ends (an offset in the bytes fed).
        self.whole_end = 0
        #: Where the next record begins (its header), at or past the bytes fed so far.
        self._next = 0
        #: That record's header's first bytes, when a piece ended inside it.
        self._head = b""

    def feed(self, data: bytes) -> None:
        start = self.fed
        end = start + len(data)
        self.fed = end
        head = self._head
        if head:  # a header split between pieces: its record ends after its body
            missing = HEADER_SIZE - len(head)
            head += data[:missing]
            if len(head) < HEADER_SIZE:
                self._head = head
                return
            self._head = b""
            self._next = start + missing + ((head[3] << 8) | head[4])
        following = self._next
        while following + HEADER_SIZE <= end:  # a whole header here: skip its record
            self.whole_end = following  # (the record before it ended there)
            at = following - start
            following += HEADER_SIZE + ((data[at + 3] << 8) | data[at + 4])
        if following <= end:
            self.whole_end = following
            if following < end:  # a header's first bytes
                self._head = data[following - start :]
        self._next = following
