"""The README is the user's manual: it must name every setting and the two commands."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pinedge.edge.config import EdgeConfig, SiteConfig
from pinedge.origin import OriginConfig

README = (Path(__file__).parent.parent / "README.md").read_text()


@pytest.mark.parametrize("schema", [EdgeConfig, SiteConfig, OriginConfig])
def test_every_setting_is_in_the_configuration_reference(schema: type) -> None:
    missing = [
        f.name
        for f in dataclasses.fields(schema)
        if f.init and f"`{f.name}`" not in README and f"`sites[].{f.name}`" not in README
    ]
    assert missing == []


def test_the_quickstart_is_make_demo_and_make_test() -> None:
    assert "make demo" in README and "make test" in README
