"""The Apache access log the replay benchmarks read: where it is, and its lines parsed."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

TRACE = Path(__file__).resolve().parent.parent / "traces" / "elastic_apache_logs.log.gz"

# Combined log format: host ident user [time] "METHOD TARGET PROTOCOL" status bytes ...
LINE = re.compile(r'^(\S+) \S+ \S+ \[[^\]]*\] "(\S+) (\S+)[^"]*" (\d{3}) (\d+|-)')


@dataclass(frozen=True, slots=True)
class LogLine:
    ip: str
    method: str
    url: str
    status: str
    size: int | None  # None: the log says "-"


def read_log(path: Path, limit: int | None = None) -> Iterator[LogLine | None]:
    """The first `limit` lines (all by default) in order, each parsed, or None for a line
    not in the format."""
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as log:
        for number, line in enumerate(log):
            if limit is not None and number >= limit:
                return
            match = LINE.match(line)
            if match is None:
                yield None
                continue
            ip, method, url, status, size = match.groups()
            yield LogLine(ip, method, url, status, None if size == "-" else int(size))
