"""The fence: the one module that relies on hpack's undocumented internals.

Rules:

* Nothing else in the package reads a library's undocumented attribute or private name
  (``.ci/check_architecture.py`` enforces it for private names). The HPACK block reuse
  below reads hpack's header table (``dynamic_entries``, ``maxsize``, ``resized``) and
  calls hpack's own ``header_table_size`` setter from an override; those are here, and
  only here.
* Each internal is checked when this module is imported. A missing one stops the proxy at
  start-up with one line naming the library, its installed version, the version we tested
  and what is missing (a :class:`LibraryMismatch`, a ``SystemExit``: no traceback),
  instead of failing at the first request. pyproject.toml bounds hpack to the minor
  version tested, so this fires only on an install that bypasses that bound.
* The block reuse serves our own session's HPACK codec (``session/headers.py``); nothing
  in the package touches h2's or hyperframe's internals (h2 is the tests' oracle and peer).
"""

from __future__ import annotations

import importlib.metadata
from collections import deque
from collections.abc import Callable, Iterable, Sequence

import hpack
from hpack.table import HeaderTable

#: The hpack version these internals were checked against (pyproject.toml bounds it).
TESTED_HPACK = "4.2"


class LibraryMismatch(SystemExit):
    """An installed library lacks an internal the proxy relies on; exits with one line."""


def _encoder_table_size_setter() -> Callable[[hpack.Encoder, int], None] | None:
    prop = vars(hpack.Encoder).get("header_table_size")
    if isinstance(prop, property) and prop.fset is not None:
        setter: Callable[[hpack.Encoder, int], None] = prop.fset
        return setter
    return None


def problems() -> list[str]:
    """What of the internals used here is missing in the installed hpack (empty: none)."""
    found = []
    table = HeaderTable()
    for name, kind in (("dynamic_entries", deque), ("maxsize", int), ("resized", bool)):
        if not isinstance(getattr(table, name, None), kind):
            found.append(f"hpack.table.HeaderTable().{name} ({kind.__name__})")
    if _encoder_table_size_setter() is None:
        found.append("a setter of the hpack.Encoder.header_table_size property")
    for codec in (hpack.Encoder(), hpack.Decoder()):
        if not isinstance(getattr(codec, "header_table", None), HeaderTable):
            found.append(f"hpack.{type(codec).__name__}().header_table (a HeaderTable)")
    return found


def require() -> None:
    """Raise :class:`LibraryMismatch` naming what is missing, if anything is."""
    missing = problems()
    if missing:
        version = importlib.metadata.version("hpack")
        raise LibraryMismatch(
            f"h2ws-proxy: hpack {version} lacks {'; '.join(missing)}. It was tested with "
            f"hpack {TESTED_HPACK}.x: pip install 'hpack=={TESTED_HPACK}.*'"
        )


def _table_size_setter() -> Callable[[hpack.Encoder, int], None]:
    setter = _encoder_table_size_setter()
    if setter is None:  # require() said so already
        raise LibraryMismatch("h2ws-proxy: hpack.Encoder.header_table_size has no setter")
    return setter


require()
_SET_ENCODER_TABLE_SIZE = _table_size_setter()
#: What ``hpack.Encoder.encode`` takes (its own annotation).
_EncoderInput = (
    Iterable[
        hpack.HeaderTuple
        | tuple[bytes | str, bytes | str]
        | tuple[bytes | str, bytes | str, bool | None]
    ]
    | dict[bytes | str, bytes | str]
)


class RepeatedBlockDecoder(hpack.Decoder):
    """hpack's decoder, which remembers the last header block that left its table alone.

    A client sends request after request with the same fields, and once the first request
    has put them in the dynamic table, HPACK sends most of them as one-byte indexes and the
    rest (h2load's and curl's ``:path``, for one) as literals that are not to be indexed:
    the same bytes every time, decoding to the same list, the table untouched. Decoding
    them again was the largest part of reading a new stream's HEADERS. A block whose
    decoding left the dynamic table as it was (the same newest entry, by identity, the same
    number of entries, the same size limit) is kept with its result; the same bytes next
    time get a copy of that result, as long as nothing that decoding depends on changed in
    between: any other block is decoded (and may change the table) by hpack, which drops
    the kept one, and the header list limit is compared too.
    """

    def __init__(self, max_header_list_size: int) -> None:
        super().__init__(max_header_list_size=max_header_list_size)
        self._kept_block = b""
        self._kept_headers: tuple[hpack.HeaderTuple, ...] = ()
        self._kept_under = (0, 0)  # (header_table_size, max_header_list_size) then

    def keeps(self, data: bytes) -> bool:
        """``data`` is the kept block and still decodes to the kept result (an empty block
        never is: ``_kept_block`` is empty when nothing is kept)."""
        return (
            bool(data)
            and data == self._kept_block
            and self._kept_under
            == (
                self.header_table_size,
                self.max_header_list_size,
            )
        )

    def check_table_size(self) -> None:
        """hpack's check after every block (its ``_assert_valid_table_size``), on documented
        attributes: a table size the peer's encoder did not shrink to within our limit."""
        if self.header_table_size > self.max_allowed_table_size:
            raise hpack.InvalidTableSizeError("Encoder did not shrink table size to within the max")

    def decode(self, data: bytes, raw: bool = False) -> list[hpack.HeaderTuple]:
        if raw and self.keeps(data):
            self.check_table_size()
            return list(self._kept_headers)
        self._kept_block = b""
        table = self.header_table
        entries = table.dynamic_entries
        # An entry added is a new tuple (held here, its identity cannot be reused). A block
        # opening with a table size update (001xxxxx, only at a block's start) is not kept:
        # repeated after our limit went down, its update must fail (RFC 7541 §4.2).
        newest = entries[0] if entries else None
        before = (len(entries), table.maxsize)
        headers = list(super().decode(data, raw))
        if (
            raw
            and data
            and data[0] & 0xE0 != 0x20
            and (entries[0] if entries else None) is newest
            and (len(entries), table.maxsize) == before
        ):
            self._kept_block = bytes(data)
            self._kept_headers = tuple(headers)
            self._kept_under = (self.header_table_size, self.max_header_list_size)
        return headers


class RepeatedBlockEncoder(hpack.Encoder):
    """hpack's encoder, which remembers the last header list it sent as indexed fields only.

    The answer that opens a tunnel is the same list every time (usually ``:status 200``
    alone, a static table entry), and hpack spends far more Python on it than the one
    byte it produces. A list whose block holds only one-byte indexed fields (which
    neither add to the dynamic table nor resize it) is kept with its block; the same list
    next time gets the same block, unless a table size change waits to be announced or
    the table's size changed. Any other list is hpack's, which drops the kept one.
    """

    def __init__(self) -> None:
        super().__init__()
        self._kept_fields: Sequence[object] = ()
        self._kept_block = b""
        self._kept_huffman = True  # (``huffman`` then)

    @property
    def header_table_size(self) -> int:
        return int(self.header_table.maxsize)

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        """The peer's SETTINGS_HEADER_TABLE_SIZE. The size it already has changes nothing.

        hpack's table clears its "size change to announce" flag when told its own size
        again, so a client sending 0, then 256 twice, would have the eviction to 0 never
        announced (RFC 7541 §4.2) and every later index misread; and a kept block would
        name entries that are gone. A real change drops the kept block.
        """
        if value == self.header_table.maxsize:
            return
        self._kept_block = b""
        _SET_ENCODER_TABLE_SIZE(self, value)

    def encode(self, headers: _EncoderInput, huffman: bool = True) -> bytes:
        if type(headers) is list:
            fields = headers  # (compared, never kept: a copy is kept)
        elif isinstance(headers, dict):
            self._kept_block = b""
            return super().encode(headers, huffman)
        else:
            fields = list(headers)
        # The table's size is not compared: a real change of it goes through the setter
        # above, which drops the kept block.
        if (
            self._kept_block
            and huffman is self._kept_huffman
            and fields == self._kept_fields
            and not self.header_table.resized
        ):
            return self._kept_block
        self._kept_block = b""
        block = super().encode(fields, huffman)
        if block and min(block) >= 0x80:
            self._kept_fields = list(fields)  # the caller may change its own list later
            self._kept_block = block
            self._kept_huffman = huffman
        return block
