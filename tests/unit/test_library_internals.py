"""The fence around hpack's internals: checked at import, one clear line when one is gone."""

from __future__ import annotations

import hpack
import pytest
from hpack.table import HeaderTable

from h2ws_proxy.http2 import library_internals


def test_the_installed_hpack_has_every_internal_the_proxy_uses() -> None:
    assert library_internals.problems() == []
    library_internals.require()


def test_a_missing_table_attribute_stops_the_proxy_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original_init = HeaderTable.__init__

    def init_without_entries(table: HeaderTable) -> None:
        original_init(table)
        del table.dynamic_entries

    monkeypatch.setattr(HeaderTable, "__init__", init_without_entries)
    with pytest.raises(SystemExit) as stopped:
        library_internals.require()
    message = str(stopped.value)
    assert "\n" not in message
    assert "hpack.table.HeaderTable().dynamic_entries" in message
    assert f"tested with hpack {library_internals.TESTED_HPACK}.x" in message
    assert "hpack 4." in message  # the installed version, named


def test_a_missing_setter_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        hpack.Encoder, "header_table_size", property(lambda encoder: 4096), raising=True
    )
    assert library_internals.problems() == [
        "a setter of the hpack.Encoder.header_table_size property"
    ]
