"""The README is the user's manual: it must name every setting and the two commands."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from pinedge.core.config import load
from pinedge.edge.node.config import EdgeConfig, RateLimitConfig, SiteConfig
from pinedge.geodns.config import DnsConfig, PopConfig, SteeredConfig, ZoneConfig
from pinedge.geodns.zone import Zones
from pinedge.origin import OriginConfig

README = (Path(__file__).parent.parent / "README.md").read_text()


@pytest.mark.parametrize(
    "schema",
    [
        EdgeConfig,
        SiteConfig,
        RateLimitConfig,
        OriginConfig,
        DnsConfig,
        ZoneConfig,
        SteeredConfig,
        PopConfig,
    ],
)
def test_every_setting_is_in_the_configuration_reference(schema: type) -> None:
    names = [f.name for f in dataclasses.fields(schema) if f.init]
    missing = [name for name in names if not re.search(rf"`(\w+(\[\])?\.)*{name}`", README)]
    assert missing == []


def test_the_quickstart_is_make_demo_and_make_test() -> None:
    assert "make demo" in README and "make test" in README


def test_the_example_configurations_load() -> None:
    deploy = Path(__file__).parent.parent / "deploy"
    edge = load(EdgeConfig, deploy / "edge.toml")
    assert edge.site_list()
    # The example names a production database path that does not exist here.
    dns = load(DnsConfig, deploy / "dns.toml", {"geoip": None})
    Zones(dns)
    assert [pop.name for pop in dns.pops] == ["ams", "iad", "sin"]
