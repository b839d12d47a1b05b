"""Stored files' names: a release must find the files an earlier one stored."""

from __future__ import annotations

import hashlib
import json

import pytest

from pinedge.edge.store.objectfile import variant_id


def first_release_variant_id(
    key: str, names: tuple[str, ...], values: tuple[str | None, ...]
) -> str:
    text = json.dumps([key, list(names), list(values)], separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32]


@pytest.mark.parametrize(
    ("key", "names", "values"),
    [
        ("http://example.com/a", (), ()),
        ('http://example.com/"quoted"\\path?x=1', ("accept-encoding",), ("gzip, br",)),
        ("http://example.com/caf\u00e9/\u2603", ("accept", "cookie"), (None, "a=\x01\x7f")),
        ("http://example.com/\udc80", ("x",), ("\udcff\u2028",)),
        ("http://example.com/pic.jpg#v1#fmt=webp;w=474", (), ()),
    ],
)
def test_a_variant_keeps_the_name_the_first_release_gave_its_file(
    key: str, names: tuple[str, ...], values: tuple[str | None, ...]
) -> None:
    assert variant_id(key, names, values) == first_release_variant_id(key, names, values)
