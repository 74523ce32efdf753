"""Header blocks: HPACK decoding and encoding (RFC 7541) through the ``hpack`` library.

Rules:

* Every HPACK decoding error is a connection COMPRESSION_ERROR (RFC 9113 §4.3): the
  decoder's state is shared by the whole connection. hpack 4.2 refuses, as we checked and
  the tests pin: index 0 and indexes past the table (a field or a literal's name), truncated
  integers and strings, Huffman padding longer than 7 bits or not all ones, a dynamic table
  size update after a field or above ``max_allowed_table_size`` (our
  SETTINGS_HEADER_TABLE_SIZE), and a table left larger than that at a block's end. Nothing
  needed adding around it, beyond mapping IndexError/TypeError/ValueError the same way
  (h2 guards those too; fuzzing found none).
* The *decoded* size of a block is bounded twice. Our SETTINGS_MAX_HEADER_LIST_SIZE
  (RFC 9113 §6.5.2: name + value + 32 per field) is measured here and reported with the
  list (:meth:`HeaderCodec.decode`); the session decides what an oversized list means. hpack's own
  ``max_header_list_size`` is set to :data:`HARD_LIST_LIMIT_FACTOR` times ours: past that
  hpack stops mid-block, its table no longer matches the peer's, and the connection ends
  with ENHANCE_YOUR_CALM (as h2 does).
* Cookie crumbs are joined into one ``cookie`` field with "; " (RFC 9113 §8.2.3), placed
  after the other fields (h2's order), because the proxy forwards one Cookie line.
* Encoding: the peer's SETTINGS_HEADER_TABLE_SIZE (capped at :data:`MAX_ENCODER_TABLE`, our
  choice, RFC 7541 §4.2 lets the encoder use less) is applied just before the next block,
  which then opens with at most two size updates: the smallest size since the last block,
  if lower, then the final one (RFC 7541 §4.2). Applied lazily because hpack's encoder,
  told its own size again, clears its "announce a resize" flag and would never announce a
  shrink-then-grow; we only ever tell it a size it does not have.
"""

from __future__ import annotations

from typing import cast

import hpack

from h2ws_proxy.h2session.errors import ConnectionFault, ErrorCode
from h2ws_proxy.h2session.library_internals import RepeatedBlockDecoder, RepeatedBlockEncoder

Header = tuple[bytes, bytes]

#: hpack gives up decoding past this many times our advertised header list size.
HARD_LIST_LIMIT_FACTOR = 4
#: The largest HPACK dynamic table our encoder keeps, whatever the peer allows.
MAX_ENCODER_TABLE = 65536
_FIELD_OVERHEAD = 32  # RFC 9113 §6.5.2, RFC 7541 §4.1


class HeaderCodec:
    """One connection's HPACK decoder (the peer's blocks) and encoder (ours)."""

    def __init__(self, max_header_list_size: int, decoder_table_limit: int) -> None:
        # hpack's codecs, keeping the last block that left the dynamic table alone (see
        # library_internals): a client's requests repeat their block once its fields are
        # in the table, and so do most of our answers that open tunnels.
        self._decoder = RepeatedBlockDecoder(
            max_header_list_size=max(max_header_list_size, 1) * HARD_LIST_LIMIT_FACTOR
        )
        self._decoder.max_allowed_table_size = decoder_table_limit
        self._encoder = RepeatedBlockEncoder()
        #: The last block decoded to a result that still holds, with that result. Read by
        #: the session's block end, which takes a repeated block's result in place (the
        #: first step of :meth:`decode`: a copy of ``kept_headers``, ``kept_size``); set
        #: only here.
        self.kept_block = b""
        self.kept_headers: tuple[Header, ...] = ()
        self.kept_size = 0
        # Peer table size changes not yet applied: (smallest since last block, latest).
        self._pending_sizes: tuple[int, int] | None = None
        #: The block for ``repeat_fields`` (a copy of the list it was made for) while
        #: sending it again is right, else b"": the last block encoded, if it holds only
        #: indexed fields (it left the table alone, which changes only by a block or a
        #: size owed) and no table size is owed since. Read-only outside this class:
        #: ``H2Session.send_answer`` takes it without a call (most answers repeat a head).
        self.repeat_block = b""
        self.repeat_fields: list[Header] = []

    def set_decoder_table_limit(self, size: int) -> None:
        """The largest dynamic table the peer's encoder may use (our HEADER_TABLE_SIZE);
        told again at every SETTINGS we send or see ACKed, mostly the same."""
        if size != self._decoder.max_allowed_table_size:
            self._decoder.max_allowed_table_size = size
            # The kept block skipped hpack's table size check under the old limit: the next
            # block is judged under the new one by hpack (RFC 7541 §4.2). An unchanged limit
            # leaves that check's outcome as it was, so the block stays kept.
            self.kept_block = b""

    def decode(self, block: bytes) -> tuple[list[Header], int]:
        """The header list of a complete block, and its size as SETTINGS_MAX_HEADER_LIST_SIZE
        counts it (a new list each time: it is the caller's); raises the connection error
        for a bad block."""
        decoder = self._decoder
        try:
            if block == self.kept_block and block:  # (empty when nothing is kept)
                # Kept only while the decoder keeps it (below) and the table's size limit
                # stays (``set_decoder_table_limit`` drops it when the limit changes): any
                # other block goes through hpack, which then judges afresh what is kept and
                # checks the table's size, and nothing else changes the table or its limit in
                # between.
                return list(self.kept_headers), self.kept_size
            self.kept_block = b""  # (also when this block fails)
            decoded = decoder.decode(block, raw=True)
        except hpack.OversizedHeaderListError as error:
            raise ConnectionFault(ErrorCode.ENHANCE_YOUR_CALM, str(error)) from error
        except (hpack.HPACKError, IndexError, TypeError, ValueError) as error:
            # hpack documents HPACKError only; the others are what h2 guards against too,
            # in case garbage trips an unguarded path (our fuzz test found none).
            raise ConnectionFault(ErrorCode.COMPRESSION_ERROR, str(error)) from error
        headers: list[Header] = []
        cookies: list[bytes] = []
        size = 0
        for name, value in cast("list[Header]", decoded):
            size += len(name) + len(value) + _FIELD_OVERHEAD
            if name == b"cookie":
                cookies.append(value)
            else:
                headers.append((name, value))
        if cookies:
            headers.append((b"cookie", b"; ".join(cookies)))
        if decoder.keeps(block):
            self.kept_block, self.kept_headers, self.kept_size = block, tuple(headers), size
        return headers, size

    def peer_table_size(self, size: int) -> None:
        """The peer's new SETTINGS_HEADER_TABLE_SIZE (RFC 7541 §4.2), for the next block."""
        size = min(size, MAX_ENCODER_TABLE)
        self.repeat_block = b""  # the next block opens with the size update
        if self._pending_sizes is None:
            self._pending_sizes = (size, size)
        else:
            self._pending_sizes = (min(self._pending_sizes[0], size), size)

    def encode(self, headers: list[Header]) -> bytes:
        """The block for ``headers``, opening with any table size updates owed; the last
        block again for the same list while it holds (``repeat_block``). The encoder keeps
        such a block too (``RepeatedBlockEncoder``): testing it here first saves a call."""
        if self.repeat_block and headers == self.repeat_fields:
            return self.repeat_block
        if self._pending_sizes is not None:
            smallest, final = self._pending_sizes
            self._pending_sizes = None
            encoder = self._encoder
            if smallest < encoder.header_table_size and smallest != final:
                encoder.header_table_size = smallest
            if final != encoder.header_table_size:
                encoder.header_table_size = final
        # Dropped first: an encode that raises may have changed the table on its way.
        self.repeat_block = b""
        block = self._encoder.encode(headers, huffman=True)
        if block and min(block) >= 0x80:  # indexed fields only (1xxxxxxx each)
            self.repeat_fields = list(headers)  # (the caller may change its own list later)
            self.repeat_block = block
        return block
