"""The store owner's memory per indexed object, and its time per message.

    .venv/bin/python bench/ownermem.py [--objects 100000,1000000] [--runs 1]
                                       [--lookups 100000] [--tracemalloc] [--md FILE]

For each count N, a fresh child process (nothing else in it) makes a `StoreOwner`
over a temp dir in /dev/shm and an `OwnerServer` for it, writes N small objects
with `objectfile.write` as a worker does (eight header fields, among them
`Surrogate-Key: pin-{i} board-{i // 100}`: one tag of its own, one shared by 100
objects) and hands the owner each admission as the msgpack message a worker
sends, through `OwnerServer.answer`, 1,000 at a time. The budget is large enough
that nothing is evicted. Then it reads the process's resident set again:
**bytes per object** is its growth over N. `RssShmem` is the generation counters
(generations.py: fixed, at most 36 MiB, as many pages as the keys touch), apart
from the private memory (`RssAnon`) the index itself takes.

Then the owner's time per message, each timed from the bytes a worker sends to
the bytes of the answer (unpacking, the owner's work, packing the answer):
admit (the N above); lookup of `--lookups` keys drawn at random (seeded); hits,
in lists of 100 variant ids as workers send them; and a purge of each of 100
`board-` tags (100 objects each) with the settling after it.

`--tracemalloc` runs each count once more with tracemalloc on and adds the bytes
Python allocated per object (the RSS of that run is not used: tracemalloc keeps
its own records). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from harness.machine import code_state, neighbours, proc_memory
from harness.report import Report, note, run_line
from harness.stats import median

REPO = Path(__file__).resolve().parent.parent
BATCH = 1000  # messages unpacked and answered in one go, as one read from a socket
BODY = b"x" * 200
HITS_PER_MESSAGE = 100
PURGED_TAGS = 100


def key_of(i: int) -> str:
    return f"https://i.pinedge.example/736x/{i % 256:02x}/{i:08d}/photo-{i * 7919 % 100003}.jpg"


def fields_of(i: int, now: float) -> dict[str, Any]:
    headers = (
        ("Cache-Control", "public, max-age=86400"),
        ("Content-Type", "image/jpeg"),
        ("Date", "Tue, 04 Jun 2024 10:00:00 GMT"),
        ("ETag", f'"{i * 2654435761 % (1 << 32):08x}-{i:x}"'),
        ("Last-Modified", "Mon, 03 Jun 2024 08:12:45 GMT"),
        ("Surrogate-Key", f"pin-{i} board-{i // 100}"),
        ("Access-Control-Allow-Origin", "*"),
        ("X-Content-Type-Options", "nosniff"),
    )
    return {
        "key": key_of(i),
        "vary_names": (),
        "vary_values": (),
        "status": 200,
        "reason": "OK",
        "headers": headers,
        "request_time": now - 0.05,
        "response_time": now,
    }


class Side:
    """Stands for a worker's connection: packs each answer as the owner's side would."""

    def __init__(self, packer: Any) -> None:
        self.packer = packer
        self.answered = 0

    def reply(self, ident: int, ok: bool, result: Any) -> None:
        self.packer.pack((ident, ok, result))
        self.answered += 1


def memory() -> dict[str, int]:
    gc.collect()
    return proc_memory(os.getpid())


def one(count: int, lookups: int, traced: bool) -> dict[str, Any]:
    """One child's run: what it measured, as a dict."""
    import msgpack

    import pinedge
    from pinedge.edge.store import objectfile
    from pinedge.edge.store.link import Op, OwnerServer
    from pinedge.edge.store.owner import StoreOwner
    from pinedge.edge.store.purge import Selection

    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    root = Path(tempfile.mkdtemp(prefix="ownermem-", dir=base))
    (root / "tmp").mkdir()
    (root / "objects").mkdir()
    owner = StoreOwner(root, budget=1 << 50)
    server = OwnerServer(owner, root / "socket")
    packer = msgpack.Packer(unicode_errors="surrogateescape")
    side = Side(msgpack.Packer(unicode_errors="surrogateescape"))

    def answer(messages: bytes) -> float:
        """Seconds the owner takes to read `messages` and answer them."""
        unpacker = msgpack.Unpacker(
            unicode_errors="surrogateescape", max_buffer_size=1 << 28, strict_map_key=False
        )
        started = time.perf_counter()
        unpacker.feed(messages)
        for message in unpacker:
            server.answer(side, message)  # type: ignore[arg-type]  # a stand-in for _OwnerSide
        return time.perf_counter() - started

    try:
        before = memory()
        if traced:
            tracemalloc.start()
        admit_s = 0.0
        for start in range(0, count, BATCH):
            now = time.time()
            written = [
                objectfile.write(root, fields_of(i, now), BODY)
                for i in range(start, min(start + BATCH, count))
            ]
            batch = [packer.pack((Op.ADMIT, 0, objectfile.Admission.of(meta))) for meta in written]
            admit_s += answer(b"".join(batch))
        traced_bytes = tracemalloc.get_traced_memory()[0] if traced else 0
        tracemalloc.stop()
        after = memory()
        stored = len(os.listdir(root / "objects"))

        rng = random.Random(count)
        asked = [rng.randrange(count) for _ in range(lookups)]
        lookup_s = 0.0
        side.answered = 0
        for start in range(0, len(asked), BATCH):
            chunk = asked[start : start + BATCH]
            blob = b"".join(packer.pack((Op.LOOKUP, n + 1, key_of(i))) for n, i in enumerate(chunk))
            lookup_s += answer(blob)
        answered = side.answered

        hit_s = 0.0
        for start in range(0, len(asked), BATCH * HITS_PER_MESSAGE):
            chunk = asked[start : start + BATCH * HITS_PER_MESSAGE]
            vids = [objectfile.variant_id(key_of(i), (), ()) for i in chunk]
            lists = [vids[n : n + HITS_PER_MESSAGE] for n in range(0, len(vids), HITS_PER_MESSAGE)]
            hit_s += answer(b"".join(packer.pack((Op.HITS, 0, ids)) for ids in lists))

        boards = rng.sample(range(max(1, count // 100)), min(PURGED_TAGS, max(1, count // 100)))
        purged = 0
        started = time.perf_counter()
        for board in boards:
            purged += owner.index.purge(Selection(tags=frozenset({f"board-{board}"})), soft=False)
        purge_s = time.perf_counter() - started
        started = time.perf_counter()
        owner.cleaner.settle_all()
        settle_s = time.perf_counter() - started
        return {
            "pinedge": str(Path(pinedge.__file__).resolve().parent.parent),
            "objects": count,
            "stored_dirs": stored,
            "before": before,
            "after": after,
            "traced_bytes": traced_bytes,
            "admit_us": admit_s / count * 1e6,
            "lookup_us": lookup_s / max(1, len(asked)) * 1e6,
            "lookups_answered": answered,
            "hit_us": hit_s / max(1, len(asked)) * 1e6,
            "tag_purges": len(boards),
            "purged": purged,
            "purge_us": purge_s / max(1, len(boards)) * 1e6,
            "settle_us": settle_s / max(1, purged) * 1e6,
        }
    finally:
        owner.close(keep_files=False)
        shutil.rmtree(root, ignore_errors=True)


def child(count: int, lookups: int, traced: bool) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--child", str(count), "--lookups", str(lookups)]
    if traced:
        argv.append("--tracemalloc")
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the child for {count:,} objects failed:\n{done.stderr}")
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def grown(run: dict[str, Any], field: str) -> float:
    return (run["after"].get(field, 0) - run["before"].get(field, 0)) / run["objects"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", default="100000,1000000", help="counts, comma-separated")
    parser.add_argument("--runs", type=int, default=1, help="children per count")
    parser.add_argument("--lookups", type=int, default=100_000)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--md", help="also write the report to this file")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(one(args.child, args.lookups, args.tracemalloc)))
        return 0

    report = Report()
    report.add(
        f"{run_line('ownermem.py')}, code {code_state()}, Python {sys.version.split()[0]}.",
        "",
        neighbours() + ".",
        "",
    )
    counts = [int(text.replace("_", "")) for text in args.objects.split(",")]
    rows = []
    for count in counts:
        runs = []
        for n in range(args.runs):
            note(f"{count:,} objects, run {n + 1} of {args.runs}")
            runs.append(child(count, args.lookups, False))
        traced = child(count, args.lookups, True) if args.tracemalloc else None
        rows.append((count, runs, traced))
    measured = [run for _, runs, traced in rows for run in (*runs, traced) if run is not None]
    imported = measured[0]["pinedge"] if measured else str(REPO)
    if Path(imported) != REPO:
        report.add(f"pinedge imported from `{imported}` (PYTHONPATH), not this checkout.", "")

    report.add("### Owner memory per indexed object", "")
    header = ["objects", "runs", "RSS B/object", "RssAnon B/object", "RssShmem MiB"]
    if args.tracemalloc:
        header.append("tracemalloc B/object")
    table = []
    for count, runs, traced in rows:
        shmem = median([grown(r, "RssShmem") * count / 2**20 for r in runs])
        row = [
            f"{count:,}",
            str(len(runs)),
            " / ".join(f"{grown(r, 'VmRSS'):,.0f}" for r in runs),
            " / ".join(f"{grown(r, 'RssAnon'):,.0f}" for r in runs),
            f"{shmem:,.1f}",
        ]
        if traced is not None:
            row.append(f"{traced['traced_bytes'] / count:,.0f}")
        table.append(row)
    report.table(header, table, "rrrrr" + "r" * bool(args.tracemalloc))

    report.add("### The owner's time per message (µs, median of the runs)", "")
    table = []
    for count, runs, _ in rows:
        table.append(
            [
                f"{count:,}",
                f"{median([r['admit_us'] for r in runs]):.1f}",
                f"{median([r['lookup_us'] for r in runs]):.1f}",
                f"{median([r['hit_us'] for r in runs]):.2f}",
                f"{median([r['purge_us'] for r in runs]):.0f}",
                f"{median([r['settle_us'] for r in runs]):.1f}",
            ]
        )
    report.table(
        "objects | admit | lookup | hit (per id) | tag purge (100 objects) | settle (per object)",
        table,
        "rrrrrr",
    )
    if args.md:
        report.write(args.md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
