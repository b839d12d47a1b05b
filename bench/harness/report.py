"""The Markdown report a benchmark prints as it goes and writes for --md, and progress notes."""

from __future__ import annotations

import datetime
import json
import shlex
import sys
from collections.abc import Iterable
from pathlib import Path


class Report:
    """Markdown printed as it comes (unless `echo` is off), kept for --md."""

    def __init__(self, echo: bool = True) -> None:
        self.lines: list[str] = []
        self.echo = echo

    def add(self, *lines: str) -> None:
        for line in lines:
            if self.echo:
                print(line, flush=True)
            self.lines.append(line)

    def table(self, header: str | list[str], rows: Iterable[list[str]], align: str = "") -> None:
        """A Markdown table; `header` a list or one string "a | b | c"; `align` has one
        letter per column (l or r), default l."""
        if isinstance(header, str):
            header = header.split(" | ")
        align = align or "l" * len(header)
        marks = ["---:" if a == "r" else "---" for a in align]
        self.add("| " + " | ".join(header) + " |", "| " + " | ".join(marks) + " |")
        for row in rows:
            self.add("| " + " | ".join(row) + " |")
        self.add("")

    def text(self) -> str:
        return "\n".join(self.lines).rstrip() + "\n"

    def write(self, path: str | Path) -> None:
        Path(path).write_text(self.text())


def note(text: str) -> None:
    """Progress on stderr, not part of the report."""
    print(f"  .. {text}", file=sys.stderr, flush=True)


def command_line(script: str, argv: list[str] | None = None) -> str:
    """How this run was started, as a reader would type it: `.venv/bin/python bench/X.py ...`."""
    args = sys.argv[1:] if argv is None else argv
    return f".venv/bin/python bench/{script}" + (" " + shlex.join(args) if args else "")


def run_line(script: str, argv: list[str] | None = None) -> str:
    """The start of a report's first paragraph: the command and the date."""
    return f"`{command_line(script, argv)}` on {datetime.date.today().isoformat()}"


def write_json(path: str | Path, data: object) -> None:
    Path(path).write_text(json.dumps(data, indent=2, default=str))
