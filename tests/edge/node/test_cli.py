"""The `pinedge` command as an operator runs it: a real process, its exit code and
what it prints. Configuration mistakes exit 2 with `pinedge COMMAND: key: reason`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pinedge import __version__

BIN = Path(sys.executable).parent
PINEDGE = str(BIN / "pinedge")

EDGE_FLAGS = (
    "--listen",
    "--admin",
    "--origin",
    "--shield",
    "--role",
    "--workers",
    "--cache-mem",
    "--cache-dir",
    "--cache-disk",
    "--name",
    "--control",
    "--host",
    "--config",
)


def pinedge(*args: str, command: tuple[str, ...] = (PINEDGE,)) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PINEDGE_CONFIG"}
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=30, check=False, env=env
    )


@pytest.mark.parametrize(
    "command",
    [
        pytest.param((PINEDGE,), id="script"),
        pytest.param((sys.executable, "-m", "pinedge"), id="module"),
    ],
)
def test_version_prints_the_version(command):
    result = pinedge("--version", command=command)
    assert result.returncode == 0
    assert result.stdout.strip() == f"pinedge {__version__}"


def test_an_unknown_key_in_the_config_file_exits_2_naming_it(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('origin = "http://127.0.0.1:8090"\ncolour = "red"\n')
    result = pinedge("edge", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.startswith("pinedge edge: colour: unknown key")


def test_a_bad_flag_value_exits_2_naming_the_key():
    result = pinedge("edge", "--origin", "http://127.0.0.1:8090", "--cache-mem", "lots")
    assert result.returncode == 2
    assert result.stderr.startswith("pinedge edge: cache_mem: ")


def test_a_missing_config_file_exits_2_naming_the_file(tmp_path):
    missing = tmp_path / "missing.toml"
    result = pinedge("edge", "--config", str(missing))
    assert result.returncode == 2
    assert str(missing) in result.stderr


def test_edge_without_an_origin_exits_2_saying_what_to_give():
    result = pinedge("edge")
    assert result.returncode == 2
    assert result.stderr.startswith("pinedge edge: ")
    assert "--origin" in result.stderr


def test_edge_help_lists_the_contract_flags():
    result = pinedge("edge", "--help")
    assert result.returncode == 0
    missing = [flag for flag in EDGE_FLAGS if flag not in result.stdout]
    assert missing == []


def test_origin_help_lists_the_contract_flags():
    result = pinedge("origin", "--help")
    assert result.returncode == 0
    assert "--listen" in result.stdout
    assert "--config" in result.stdout


def test_the_control_plane_not_yet_built_exits_nonzero_saying_so():
    result = pinedge("control")
    assert result.returncode != 0
    assert "pinedge control: " in result.stderr
    assert "not available" in result.stderr


def test_dns_without_a_config_file_says_it_needs_one():
    result = pinedge("dns")
    assert result.returncode == 2
    assert "pinedge dns: give --config FILE" in result.stderr


def test_no_subcommand_exits_2_with_usage():
    result = pinedge()
    assert result.returncode == 2
    assert "usage: pinedge" in result.stderr
