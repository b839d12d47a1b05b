"""The Markdown report a benchmark prints as it goes and writes for --md, and its
progress notes on stderr."""

from __future__ import annotations

import sys
from collections.abc import Iterable


class Report:
    """Markdown printed as it comes, kept for --md."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, *lines: str) -> None:
        for line in lines:
            print(line, flush=True)
            self.lines.append(line)

    def table(self, header: list[str], rows: Iterable[list[str]], align: str = "") -> None:
        """A Markdown table; `align` has one letter per column (l or r), default l."""
        align = align or "l" * len(header)
        marks = ["---:" if a == "r" else "---" for a in align]
        self.add("| " + " | ".join(header) + " |", "| " + " | ".join(marks) + " |")
        for row in rows:
            self.add("| " + " | ".join(row) + " |")
        self.add("")


def note(text: str) -> None:
    """Progress on stderr, not part of the report."""
    print(f"  .. {text}", file=sys.stderr, flush=True)
