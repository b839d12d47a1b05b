"""Hit ratios of S3-FIFO and LRU replaying a real Apache access log.

    .venv/bin/python bench/eviction.py [--trace FILE] [--sensitivity]

Prints a Markdown table: for caches of 1%, 5% and 20% of the trace's unique
bytes, the object and byte hit ratio of each policy and S3-FIFO minus LRU in
percentage points. `--sensitivity` adds S3-FIFO at other small-queue shares.
How the log becomes requests is described in bench/EVICTION.md.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.accesslog import TRACE, read_log

from pinedge.edge.store.eviction import LRU, S3FIFO, Policy, make_policy

FRACTIONS = (0.01, 0.05, 0.20)
SMALL_RATIOS = (0.05, 0.10, 0.15, 0.20, 0.25)


@dataclass(frozen=True)
class Trace:
    requests: list[tuple[int, int]]  # (object number, object size), in log order
    unique_bytes: int
    skipped: int


def load(path: Path) -> Trace:
    """Cacheable requests: GET 200, and GET 304 for a URL whose size a GET 200 shows.

    An object is a URL (path and query); its size is the largest body a GET 200
    for it sent. A 304 is an access to that object: a hit if it is cached, and
    a miss that has to fetch and store the whole object if it is not. Policies
    work on numbers: each URL gets one, in order of first request.
    """
    parsed = []
    sizes: dict[str, int] = {}
    for line in read_log(path):
        if line is None:
            continue
        method, url, status = line.method, line.url, line.status
        parsed.append((method, url, status))
        if method == "GET" and status == "200" and line.size is not None:
            sizes[url] = max(sizes.get(url, 0), line.size)
    numbers: dict[str, int] = {}
    requests = [
        (numbers.setdefault(url, len(numbers)), sizes[url])
        for method, url, status in parsed
        if method == "GET" and status in ("200", "304") and url in sizes
    ]
    return Trace(requests, sum(sizes.values()), len(parsed) - len(requests))


def replay(policy: Policy, requests: Iterable[tuple[int, int]]) -> tuple[float, float]:
    """Object and byte hit ratio of `policy`, starting cold, admitting on every miss."""
    hits = hit_bytes = total = total_bytes = 0
    for number, size in requests:
        total += 1
        total_bytes += size
        if number in policy:
            policy.hit(number)
            hits += 1
            hit_bytes += size
        else:
            policy.admit(number, size)
    return hits / total, hit_bytes / total_bytes


def percent(ratio: float) -> str:
    return f"{100 * ratio:.2f}%"


def points(difference: float) -> str:
    return f"{100 * difference:+.2f}"


def comparison(trace: Trace) -> str:
    rows = [
        "| cache size | bytes | LRU objects | S3-FIFO objects | Δ objects (pp) "
        "| LRU bytes | S3-FIFO bytes | Δ bytes (pp) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for fraction in FRACTIONS:
        budget = int(trace.unique_bytes * fraction)
        lru_obj, lru_bytes = replay(make_policy("lru", budget), trace.requests)
        s3_obj, s3_bytes = replay(make_policy("s3fifo", budget), trace.requests)
        rows.append(
            f"| {fraction:.0%} | {budget:,} | {percent(lru_obj)} | {percent(s3_obj)} "
            f"| {points(s3_obj - lru_obj)} | {percent(lru_bytes)} | {percent(s3_bytes)} "
            f"| {points(s3_bytes - lru_bytes)} |"
        )
    return "\n".join(rows)


def sensitivity(trace: Trace) -> str:
    """S3-FIFO's object / byte hit ratio by small-queue share, LRU's for reference."""
    policies: list[tuple[str, Callable[[int], Policy]]] = [("LRU", LRU)]
    for ratio in SMALL_RATIOS:
        policies.append((f"S3-FIFO small {ratio:.0%}", lambda b, r=ratio: S3FIFO(b, r)))  # type: ignore[misc]  # r binds this ratio
    header = "| policy | " + " | ".join(f"{f:.0%} objects / bytes" for f in FRACTIONS) + " |"
    rows = [header, "|---|" + "---:|" * len(FRACTIONS)]
    for name, factory in policies:
        cells = []
        for fraction in FRACTIONS:
            obj, byte = replay(factory(int(trace.unique_bytes * fraction)), trace.requests)
            cells.append(f"{percent(obj)} / {percent(byte)}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=TRACE)
    parser.add_argument("--sensitivity", action="store_true", help="vary S3-FIFO's small queue")
    args = parser.parse_args()
    trace = load(args.trace)
    print(
        f"{args.trace.name}: {len(trace.requests):,} cacheable requests "
        f"({trace.skipped:,} other lines skipped), "
        f"{len({number for number, _ in trace.requests}):,} objects, "
        f"{trace.unique_bytes:,} unique bytes\n"
    )
    print(comparison(trace))
    if args.sensitivity:
        print()
        print(sensitivity(trace))


if __name__ == "__main__":
    main()
