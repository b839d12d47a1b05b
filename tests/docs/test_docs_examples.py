"""The commands the README and docs/ show work as written.

A fenced block whose info string is `sh runnable` (or `sh runnable=NAME`) is
run; the blocks of every page (the README first, then docs/ by name) run in
order in one shell, as a reader would type them, with the ports they name
moved to free ones. A comment line of its own in such a block is the output
the command above it prints: the block's output must hold a line that matches
it, any number standing for any number. Named blocks get a check of their own
below. Other blocks are not run: they start servers in the foreground, name
hosts that are not here, need root, a container engine or minutes of CPU
(`make test`, `make demo`, the benchmarks, `podman`), and the README and each
page say what they are for.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import REPO, free_port

from pinedge.core.cli import SUBCOMMANDS

ROOT = REPO
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PORTS = ("8080", "8081", "8090", "8091", "5353", "9153")
PINEDGE = [sys.executable, "-m", "pinedge"]


@dataclass
class Block:
    page: str
    name: str
    text: str

    def expected_lines(self) -> list[str]:
        return [line[2:] for line in self.text.splitlines() if line.startswith("# ")]


def runnable_blocks() -> list[Block]:
    blocks = []
    for page in PAGES:
        for info, text in re.findall(
            r"^```sh (runnable\S*)\n(.*?)^```", page.read_text(), re.M | re.S
        ):
            blocks.append(Block(page.name, info.partition("=")[2], text))
    return blocks


def purged(output: str) -> int:
    answers = [json.loads(line) for line in output.splitlines() if line.startswith('{"purged"')]
    assert len(answers) == 1
    return int(answers[0]["purged"])


# What a named block must show beyond its comment lines.
CHECKS = {
    "start": lambda out: out.splitlines()[-1].startswith("ready: "),
    "cache-status": lambda out: "fwd=miss; stored" in out and "; hit; ttl=" in out,
    "purge-hard": lambda out: purged(out) >= 1 and "; fwd=miss;" in out,
    "purge-soft": lambda out: purged(out) >= 1 and "fwd=stale; fwd-status=304" in out,
    "dns": lambda out: "hostmaster.cdn.example." in out,
}


def matches(expected: str, line: str) -> bool:
    pattern = re.sub(r"\d+(?:\\\.\d+)*", "[0-9.]+", re.escape(expected.strip()))
    return re.fullmatch(pattern, line.strip(), re.I) is not None


def session(blocks: list[Block], ports: dict[str, str]) -> str:
    """One bash script for all blocks, each block's output after a marker line."""
    lines = ["set -euo pipefail"]
    for index, block in enumerate(blocks):
        text = re.sub(r"\b(" + "|".join(PORTS) + r")\b", lambda m: ports[m.group(1)], block.text)
        text = text.replace(".venv/bin/", f"{Path(sys.executable).parent}/")
        lines += [f"echo '@@block {index}@@'", text]
    return "\n".join([*lines, "echo '@@end@@'"]) + "\n"


def stop_group(pgid: int) -> None:
    for signum, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, signum)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def test_every_named_block_has_a_check_and_every_check_a_block() -> None:
    assert {b.name for b in runnable_blocks() if b.name} == set(CHECKS)


@pytest.mark.slow
def test_the_runnable_examples_print_what_the_docs_show(tmp_path: Path) -> None:
    blocks = runnable_blocks()
    ports = {port: str(free_port()) for port in PORTS}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PINEDGE_")}
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    with stdout.open("w") as out, stderr.open("w") as err:
        shell = subprocess.Popen(
            ["bash", "-c", session(blocks, ports)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            shell.wait(timeout=90)
        finally:
            stop_group(shell.pid)
    printed = stdout.read_text()
    parts = re.split(r"^@@block (\d+)@@\n", printed.replace("@@end@@\n", ""), flags=re.M)
    outputs = {int(parts[i]): parts[i + 1] for i in range(1, len(parts), 2)}
    assert printed.endswith("@@end@@\n"), (
        f"the shell stopped with status {shell.returncode} in "
        f"{blocks[max(outputs)] if outputs else 'its first line'};\n"
        f"stderr:\n{stderr.read_text()[-3000:]}"
    )
    for index, block in enumerate(blocks):
        lines = outputs[index].splitlines()
        for expected in block.expected_lines():
            assert any(matches(expected, line) for line in lines), (block, expected, lines)
        if block.name:
            assert CHECKS[block.name](outputs[index]), (block, outputs[index])


def commands_with_flags() -> list[tuple[str, str]]:
    """(command, flag) for every flag written after `pinedge COMMAND` in a
    backtick span or a code line (backslash continuations joined)."""
    found = set()
    for page in PAGES:
        text = page.read_text()
        code = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S)
        spans = re.findall(r"`([^`\n]+)`", text) + "\n".join(code).replace("\\\n", " ").splitlines()
        for span in spans:
            for command, rest in re.findall(r"\bpinedge (\w+)((?: [^`]*)?)", span):
                if command in SUBCOMMANDS:
                    found.add((command, ""))
                    found.update((command, flag) for flag in re.findall(r"--[a-z][a-z-]*", rest))
    return sorted(found)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["", *sorted({c for c, _ in commands_with_flags()})])
def test_every_command_the_docs_name_answers_help(command: str) -> None:
    done = subprocess.run(
        [*PINEDGE, *command.split(), "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.startswith("usage: pinedge")


@pytest.mark.slow
def test_every_flag_the_docs_give_a_command_is_in_its_help() -> None:
    unknown = []
    helps: dict[str, str] = {}
    for command, flag in commands_with_flags():
        if not flag:
            continue
        if command not in helps:
            helps[command] = subprocess.run(
                [*PINEDGE, command, "--help"], capture_output=True, text=True, timeout=60
            ).stdout
        if not re.search(rf"{flag}\b", helps[command]):
            unknown.append((command, flag))
    assert unknown == []


def test_a_bad_setting_is_refused_with_the_message_the_docs_quote() -> None:
    quoted = re.search(
        r"`(pinedge edge: cache_mem: [^`]+)`", (ROOT / "docs" / "configuration.md").read_text()
    )
    assert quoted
    done = subprocess.run(
        [*PINEDGE, "edge", "--origin", "http://127.0.0.1:9", "--cache-mem", "lots"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("PINEDGE_")},
    )
    assert done.returncode == 2
    assert quoted.group(1) in done.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["control"],
        ["edge", "--origin", "http://127.0.0.1:9", "--control", "http://127.0.0.1:9"],
        ["dns", "--config", "deploy/dns.toml", "--control", "http://127.0.0.1:9"],
    ],
)
def test_the_control_plane_the_docs_call_not_built_is_refused(argv: list[str]) -> None:
    done = subprocess.run(
        [*PINEDGE, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("PINEDGE_")},
    )
    assert done.returncode == 2 and "control" in done.stderr


@pytest.mark.slow
def test_the_test_ids_the_readme_gives_exist() -> None:
    ids = re.findall(r"tests/[\w/]+\.py::\w+", (ROOT / "README.md").read_text())
    assert ids
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:randomly", *ids],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:]


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.headers["Cache-Status"]


@pytest.mark.slow
@pytest.mark.system
def test_the_demo_prints_what_the_readme_shows_and_its_page_is_cached(tmp_path: Path) -> None:
    shown = re.search(r"^```\n(  Open .*?)^```", (ROOT / "README.md").read_text(), re.M | re.S)
    assert shown
    env = {k: v for k, v in os.environ.items() if not k.startswith("PINEDGE_")}
    log = tmp_path / "stderr"
    with log.open("w") as err:
        demo = subprocess.Popen(
            [*PINEDGE, "demo", "--port", str(free_port())],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
            start_new_session=True,
        )
        try:
            printed = []
            assert demo.stdout is not None
            for line in demo.stdout:
                printed.append(line.rstrip("\n"))
                if "Ctrl-C" in line:
                    break
            page = re.search(r"Open (http://\S+)", "\n".join(printed))
            assert page, log.read_text()
            first, again = get(page.group(1)), get(page.group(1))
        finally:
            stop_group(demo.pid)
            demo.wait()

    def ported(lines: list[str]) -> list[str]:
        return [re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", line) for line in lines]

    expected = ported(shown.group(1).rstrip("\n").splitlines())
    assert ported(printed)[-len(expected) :] == expected
    assert first == (200, "pinedge-demo; fwd=miss; stored")
    assert again[0] == 200 and again[1].startswith("pinedge-demo; hit; ttl=")
