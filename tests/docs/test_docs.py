"""The README and docs/ are the user's manual: every setting, file and target they name exists."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from support import REPO

from pinedge.core.config import load
from pinedge.edge.node.config import EdgeConfig, RateLimitConfig, SiteConfig
from pinedge.geodns.config import DnsConfig, PopConfig, SteeredConfig, ZoneConfig
from pinedge.geodns.zone import Zones
from pinedge.origin import OriginConfig

ROOT = REPO
README = (ROOT / "README.md").read_text()
REFERENCE = (ROOT / "docs" / "configuration.md").read_text()
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FOLDERS = "edge|core|origin|geodns|control|bench|tests|deploy|docs|scripts|pkg"


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
    missing = [name for name in names if not re.search(rf"`(\w+(\[\])?\.)*{name}`", REFERENCE)]
    assert missing == []


@pytest.mark.slow
def test_the_configuration_reference_is_what_the_script_writes(tmp_path: Path) -> None:
    rewritten = tmp_path / "configuration.md"
    rewritten.write_text(REFERENCE)
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "config-reference"), "--write", str(rewritten)],
        check=True,
    )
    assert rewritten.read_text() == REFERENCE


def test_the_quickstart_is_make_demo_and_make_test() -> None:
    assert "make demo" in README and "make test" in README


def test_the_readme_stays_short() -> None:
    assert len(README.splitlines()) <= 250


def test_the_example_configurations_load() -> None:
    deploy = ROOT / "deploy"
    edge = load(EdgeConfig, deploy / "edge.toml")
    assert edge.site_list()
    # The example names a production database path that does not exist here.
    dns = load(DnsConfig, deploy / "dns.toml", {"geoip": None})
    Zones(dns)
    assert [pop.name for pop in dns.pops] == ["ams", "iad", "sin"]


def toml_examples() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for block in re.findall(r"^```toml\n(.*?)^```", page.read_text(), re.M | re.S):
            found.append((page.name, block))
    return found


@pytest.mark.parametrize("page,block", toml_examples())
def test_every_toml_example_in_the_docs_loads(page: str, block: str, tmp_path: Path) -> None:
    path = tmp_path / "example.toml"
    path.write_text(block)
    if "zones" in tomllib.loads(block):
        # A production database path is named, which does not exist here.
        Zones(load(DnsConfig, path, {"geoip": None}))
    else:
        assert load(EdgeConfig, path).site_list()


def named_paths() -> set[str]:
    """Repository paths the pages name in backticks, and their relative links."""
    names = set()
    for page in PAGES:
        text = page.read_text()
        for span in re.findall(r"`([^`\n]+)`", text):
            if re.fullmatch(rf"(?:{FOLDERS})/[\w./-]*", span) and "*" not in span:
                names.add(span)
        for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if not link.startswith(("http://", "https://")):
                names.add(str((page.parent / link).resolve().relative_to(ROOT)))
    return names


def test_every_file_and_folder_the_docs_name_exists() -> None:
    missing = sorted(name for name in named_paths() if not (ROOT / name).exists())
    assert missing == []


def test_every_make_target_the_docs_name_exists() -> None:
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    named = set()
    for page in PAGES:
        for quoted, at_line_start in re.findall(r"`make (\w+)|^make (\w+)", page.read_text(), re.M):
            named.add(f"make {quoted or at_line_start}")
    assert sorted(name for name in named if name.split()[1] not in targets) == []
