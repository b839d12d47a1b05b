"""Ten million objects on one node: fill, hits, misses, a tag purge, eviction under
pressure and a restart, with memory by process and by /dev/shm at each step.

    .venv/bin/python bench/tenmillion.py [--objects 10000000] [--dir DIR] [--md FILE]

An nginx origin generates the objects (not a log replay): any `/g/BOARD/NAME` is a
`--size`-byte body with `Cache-Control: public, max-age=86400` and
`Surrogate-Key: board-BOARD`, `--per-board` objects to a board. One `pinedge edge`
(`--workers`, its store in `--dir` on disk, budget `--cache-disk`) is filled
through wrk with `--objects` distinct URLs, then:

1. **hits**: wrk asks for URLs drawn at random from the filled ones, `--duration` s;
2. **misses**: every request a new URL, `--duration` s (the store is full: each
   admission evicts);
3. **tag purge**: `POST /purge {"tags": ["board-N"]}` for `--purges` boards, each
   answered with its count and time;
4. **eviction under pressure**: `--pressure` more new objects beyond the budget;
   the store's bytes must stay within it;
5. **restart**: SIGTERM, then the same command on the same directory: seconds to
   ready, hits while the node indexes what it found (it serves meanwhile),
   seconds until every file is indexed, and the objects kept.

Why on disk: the store's directory outlives the node there, for the restart step
(and before segments, a node kept one file per object, which this machine's
/dev/shm could not hold ten million of). Objects this small are records in
segments, so the budget counts their bytes.

At each step: resident memory of the supervisor (the store's owner) and of each
worker, split into anonymous and shared pages; the node's segments in /dev/shm;
the store directory (`du`); and pinedge's own gauges. Nothing is asserted; the
growth of the owner per object is reported beside issue 14's target (400 bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import BenchError
from harness.machine import ensure_tool, proc_memory, worker_pids
from harness.nginx import (
    fill_through,
    nginx_common,
    nginx_server,
    nginx_temp_paths,
)
from harness.report import Report, note, run_line, write_json
from harness.servers import (
    Edge,
    Server,
    free_ports,
    http_get,
    metric,
    pinedge_env,
    requests_by_cache,
    settled,
    start_edge,
)
from harness.wrk import parse_wrk

KiB, MiB, GiB = 1024, 1024**2, 1024**3
TOKEN = "bench-" + secrets.token_hex(8)
# What the store counts for an object of --size 512 in a segment: its record's bytes
# (a 24-byte header, the metadata with eight header fields, the body), 859 bytes in a
# run of 200,000; a little less, so that the pressure step evicts.
ACCOUNTED_PER_SMALL_RECORD = 850


def origin_conf(home: Path, files: Path, port: int) -> str:
    return f"""\
{nginx_common(home, 1)}http {{
    access_log off;
{nginx_temp_paths(home)}
    keepalive_requests 1000000;
    default_type application/octet-stream;
    open_file_cache max=10 inactive=1h;
    server {{
        listen 127.0.0.1:{port};
        root {files};
        location ~ ^/g/(?<board>[0-9]+)/ {{
            rewrite ^ /object.bin break;
            add_header Cache-Control "public, max-age=86400";
            add_header Surrogate-Key "board-$board";
        }}
        location = /_stub {{
            stub_status;
        }}
    }}
}}
"""


# Each wrk thread numbered from 0, in `id`.
LUA_THREAD_IDS = """
local id = 0
local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end
"""

LUA_FILL = (
    LUA_THREAD_IDS
    + """local first, total, per_board, threads = {first}, {total}, {per_board}, {threads}
local i = 0
-- objects first + id, first + id + threads, ... below first + total, each once;
-- then the first again (a hit) until stopped
function request()
  local k = first + id + threads * i
  if k < first + total then
    i = i + 1
    return wrk.format(nil, "/g/" .. math.floor(k / per_board) .. "/o" .. k)
  end
  return wrk.format(nil, "/g/0/o0")
end
"""
)

LUA_HITS = (
    LUA_THREAD_IDS
    + """local filled, per_board, seed = {filled}, {per_board}, {seed}
function init(args)
  math.randomseed(seed + id)
end
function request()
  local k = math.random(0, filled - 1)
  return wrk.format(nil, "/g/" .. math.floor(k / per_board) .. "/o" .. k)
end
"""
)

LUA_MISSES = """
local nonce = "{nonce}"
local i = 0
function request()
  i = i + 1
  return wrk.format(nil, "/g/999999/m-" .. nonce .. "-" .. i)
end
"""


@dataclass
class Snapshot:
    step: str
    seconds: float  # since the fill began
    objects: float
    store_bytes: float
    budget: float
    evictions: float
    dir_real: int  # du of the store directory, bytes
    shm: int  # the node's /dev/shm segments, bytes of pages in use
    owner: dict[str, int]
    workers: list[dict[str, int]]


@dataclass
class Results:
    objects: int
    size: int
    workers: int
    budget: int
    fill_seconds: float = 0.0
    snapshots: list[Snapshot] = field(default_factory=list)
    hits: dict[str, Any] = field(default_factory=dict)
    misses: dict[str, Any] = field(default_factory=dict)
    purges: list[dict[str, Any]] = field(default_factory=list)
    pressure: dict[str, Any] = field(default_factory=dict)
    restart: dict[str, Any] = field(default_factory=dict)


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path, store: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.store = store
        self.nginx = ensure_tool("/usr/sbin/nginx", "nginx")
        self.wrk_path = ensure_tool("wrk", "wrk")
        self.origin: Server | None = None
        self.origin_port = 0
        self.edge: Edge | None = None
        self.started = 0.0

    # ── the servers ──────────────────────────────────────────────────────────

    def start_origin(self) -> None:
        files = self.tmp / "files"
        files.mkdir()
        (files / "object.bin").write_bytes(os.urandom(self.args.size))
        (self.origin_port,) = free_ports(1)
        home = self.tmp / "origin"
        conf = origin_conf(home, files, self.origin_port)
        self.origin = nginx_server("origin", self.nginx, home, conf).start()
        time.sleep(0.5)
        status, headers, _ = http_get(self.origin_port, "/g/7/check")
        if status != 200 or headers.get("surrogate-key") != "board-7":
            raise BenchError(f"origin: GET /g/7/check -> {status} {headers}")

    def start_edge(self, label: str) -> Edge:
        extra = ["--cache-dir", str(self.store), "--cache-disk", str(self.args.cache_disk)]
        self.edge = start_edge(
            self.tmp,
            label,
            self.origin_port,
            cache_mem="256MiB",
            workers=self.args.workers,
            extra=extra,
            env=pinedge_env(PINEDGE_ADMIN_TOKEN=TOKEN),
            ready_timeout=None,
        )
        return self.edge

    def wait_ready(self, timeout: float) -> float:
        assert self.edge is not None
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.edge.server.exited() is not None:
                raise BenchError(f"pinedge exited:\n{self.edge.server.output()}")
            try:
                status, _, _ = http_get(self.edge.admin, "/readyz")
                if status == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.2)
        raise BenchError(f"pinedge not ready in {timeout:g} s")

    def wait_indexed(self, starting: float, timeout: float) -> float:
        """Seconds from `starting` until pinedge_store_loading reads 0."""
        while self.gauge("pinedge_store_loading"):
            if time.monotonic() - starting > timeout:
                raise BenchError(f"pinedge still indexing its store after {timeout:g} s")
            time.sleep(0.5)
        return time.monotonic() - starting

    # ── readings ─────────────────────────────────────────────────────────────

    def gauge(self, name: str) -> float:
        assert self.edge is not None
        return metric(self.edge.admin, name)

    def snapshot(self, step: str) -> Snapshot:
        assert self.edge is not None
        pid = self.edge.server.pid
        shot = Snapshot(
            step=step,
            seconds=time.monotonic() - self.started,
            objects=self.gauge("pinedge_store_objects"),
            store_bytes=self.gauge("pinedge_store_bytes"),
            budget=self.gauge("pinedge_store_budget_bytes"),
            evictions=self.gauge("pinedge_store_evictions_total"),
            dir_real=du_bytes(self.store),
            shm=shm_bytes(pid),
            owner=proc_memory(pid),
            workers=[proc_memory(worker) for worker in worker_pids(pid)],
        )
        workers = ", ".join(f"{w['VmRSS'] / MiB:,.0f}" for w in shot.workers)
        note(
            f"{step}: {shot.objects:,.0f} objects, owner RSS {shot.owner['VmRSS'] / MiB:,.0f} MiB, "
            f"workers {workers} MiB, "
            f"/dev/shm {shot.shm / MiB:,.0f} MiB, store dir {shot.dir_real / GiB:,.2f} GiB"
        )
        return shot

    # ── load ─────────────────────────────────────────────────────────────────

    def lua(self, name: str, text: str, **values: object) -> Path:
        path = self.tmp / f"{name}.lua"
        path.write_text(text.format(**values))
        return path

    def wrk(self, script: Path, seconds: float) -> Any:
        assert self.edge is not None
        argv = [self.wrk_path, "-t1", f"-c{self.args.connections}", f"-d{seconds:g}s"]
        argv += ["--timeout", "30s", "-s", str(script), f"http://127.0.0.1:{self.edge.port}"]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BenchError(f"wrk failed: {done.stderr}")
        return parse_wrk(done.stdout)

    def fill(self, first: int, total: int, snapshots: bool) -> float:
        """Ask for objects first..first+total-1 once each; snapshots on the way."""
        args = self.args
        script = self.lua(
            f"fill-{first}",
            LUA_FILL,
            first=first,
            total=total,
            per_board=args.per_board,
            threads=1,
        )
        assert self.edge is not None
        argv = [self.wrk_path, "-t1", f"-c{args.connections}", f"-d{int(600 + total / 100)}s"]
        argv += ["--timeout", "30s", "-s", str(script), f"http://127.0.0.1:{self.edge.port}"]
        due = [args.snapshot_every]

        def progress(fetched: int) -> None:
            if snapshots and fetched >= due[0]:
                self.results.snapshots.append(self.snapshot(f"fill {due[0]:,}"))
                due[0] += args.snapshot_every

        seconds, _ = fill_through(argv, self.origin_port, total, progress, poll=0.5)
        return seconds

    def settle(self, want: float, timeout: float = 60.0) -> float:
        """pinedge_store_objects once it reaches `want` or stops moving for 3 s."""
        return settled(lambda: self.gauge("pinedge_store_objects"), want, timeout, poll=0.5)

    def by_cache(self) -> dict[str, float]:
        assert self.edge is not None
        return requests_by_cache(self.edge.admin)

    def timed_load(self, name: str, script: Path) -> dict[str, Any]:
        before = self.by_cache()
        result = self.wrk(script, self.args.duration)
        time.sleep(1.5)  # workers report their counters once a second
        after = self.by_cache()
        delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
        answered = sum(delta.values()) or 1.0
        out = {
            "rps": result.rps,
            "requests": result.requests,
            "errors": result.errors,
            "hit_share": delta.get("hit", 0.0) / answered,
            "by_cache": {k: v for k, v in delta.items() if v},
        }
        note(f"{name}: {result.rps:,.0f} req/s, hits {out['hit_share']:.1%} ({out['by_cache']})")
        return out

    def purge(self, board: int) -> dict[str, Any]:
        assert self.edge is not None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.edge.admin}/purge",
            data=json.dumps({"tags": [f"board-{board}"]}).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            method="POST",
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        answer["wall_ms"] = (time.perf_counter() - started) * 1000
        answer["board"] = board
        return answer

    # ── the run ──────────────────────────────────────────────────────────────

    def run(self) -> Results:
        args = self.args
        self.results = Results(args.objects, args.size, args.workers, args.cache_disk)
        self.start_origin()
        self.start_edge("pinedge-1")
        self.wait_ready(120)
        self.started = time.monotonic()
        results = self.results
        results.snapshots.append(self.snapshot("empty"))
        results.fill_seconds = self.fill(0, args.objects, snapshots=True)
        self.settle(args.objects)
        results.snapshots.append(self.snapshot("filled"))

        seed = random.Random(args.seed).randrange(1 << 30)
        hits = self.lua("hits", LUA_HITS, filled=args.objects, per_board=args.per_board, seed=seed)
        results.hits = self.timed_load("hits", hits)
        misses = self.lua("misses", LUA_MISSES, nonce=secrets.token_hex(4))
        results.misses = self.timed_load("misses", misses)
        results.snapshots.append(self.snapshot("after hits and misses"))

        boards = max(1, args.objects // args.per_board)
        picker = random.Random(args.seed)
        for board in sorted(picker.sample(range(boards), min(args.purges, boards))):
            answer = self.purge(board)
            results.purges.append(answer)
            note(f"purge board-{board}: {answer}")
        results.snapshots.append(self.snapshot("after the purges"))

        evictions = self.gauge("pinedge_store_evictions_total")
        seconds = self.fill(args.objects, args.pressure, snapshots=False)
        time.sleep(2.0)
        shot = self.snapshot("after the pressure")
        results.snapshots.append(shot)
        results.pressure = {
            "objects": args.pressure,
            "seconds": seconds,
            "evicted": shot.evictions - evictions,
            "store_bytes": shot.store_bytes,
            "budget": shot.budget,
        }

        before = shot.objects
        assert self.edge is not None
        stopping = time.monotonic()
        self.edge.server.stop(timeout=args.restart_timeout)
        stopped = time.monotonic() - stopping
        starting = time.monotonic()
        self.start_edge("pinedge-2")
        ready = self.wait_ready(args.restart_timeout)
        results.restart = {"stop_seconds": stopped, "ready_seconds": ready, "before": before}
        # The node serves while it indexes what it found (loader.py): hits meanwhile.
        results.restart["during"] = self.timed_load("hits while it indexes", hits)
        results.restart["indexed_seconds"] = self.wait_indexed(starting, args.restart_timeout)
        kept = self.settle(before)
        shot = self.snapshot("restarted")
        results.snapshots.append(shot)
        results.restart["kept"] = kept
        results.restart["hits"] = self.timed_load("hits after the restart", hits)
        return results

    def close(self) -> None:
        if self.edge is not None:
            self.edge.server.stop()
        if self.origin is not None:
            self.origin.stop()


def du_bytes(path: Path) -> int:
    done = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=False)
    try:
        return int(done.stdout.split()[0]) * KiB
    except (IndexError, ValueError):
        return 0


def shm_bytes(pid: int) -> int:
    """Pages in use of the node's segments in /dev/shm (named with its pid)."""
    total = 0
    for path in Path("/dev/shm").glob(f"pinedge-*{pid}*"):
        total += du_bytes(path)
    return total


# ── report ──────────────────────────────────────────────────────────────────


def report(args: argparse.Namespace, results: Results) -> Report:
    out = Report()
    out.add(
        "# Ten million objects on one node",
        "",
        run_line("tenmillion.py", sys.argv[1:]),
        "",
        f"{results.objects:,} objects of {results.size:,} bytes, {args.per_board:,} to a tag; "
        f"`pinedge edge --workers {results.workers} --cache-dir DIR --cache-disk "
        f"{results.budget:,}`; wrk `-t1 -c{args.connections}`. Fill: "
        f"{results.fill_seconds:,.0f} s ({results.objects / max(results.fill_seconds, 1e-9):,.0f} "
        "objects/s).",
        "",
    )
    rows = []
    for shot in results.snapshots:
        workers = " + ".join(f"{w['VmRSS'] / MiB:,.0f}" for w in shot.workers)
        rows.append(
            [
                shot.step,
                f"{shot.seconds:,.0f}",
                f"{shot.objects:,.0f}",
                f"{shot.owner['VmRSS'] / MiB:,.0f}",
                f"{shot.owner['RssAnon'] / MiB:,.0f}",
                f"{shot.owner['RssShmem'] / MiB:,.0f}",
                workers,
                f"{shot.shm / MiB:,.0f}",
                f"{shot.dir_real / GiB:,.2f}",
                f"{shot.store_bytes / GiB:,.2f}",
                f"{shot.budget / GiB:,.2f}",
                f"{shot.evictions:,.0f}",
            ]
        )
    out.table(
        "step | s | objects | owner RSS MiB | owner anon MiB | owner shared MiB | "
        "workers RSS MiB | /dev/shm MiB | store dir GiB (du) | accounted GiB | budget GiB "
        "| evicted",
        rows,
        "lrrrrrrrrrrr",
    )
    empty = results.snapshots[0]
    filled = next((s for s in results.snapshots if s.step == "filled"), results.snapshots[-1])
    grown = filled.objects - empty.objects
    if grown > 0:
        for kind in ("VmRSS", "RssAnon"):
            per = (filled.owner[kind] - empty.owner[kind]) / grown
            out.add(f"- owner {kind} growth: **{per:,.0f} bytes per object** (target ≤ 400)")
    if results.hits:
        out.add(
            f"- hits: {results.hits['rps']:,.0f} req/s, {results.hits['hit_share']:.1%} "
            "answered from the store",
            f"- misses: {results.misses['rps']:,.0f} req/s",
        )
    for purge in results.purges:
        out.add(
            f"- purge board-{purge['board']}: {purge['purged']:,} objects in "
            f"{purge['took_ms']:,.1f} ms (request {purge['wall_ms']:,.1f} ms)"
        )
    pressure = results.pressure
    if not pressure:
        return out
    out.add(
        f"- pressure: {pressure['objects']:,} more objects in {pressure['seconds']:,.0f} s, "
        f"{pressure['evicted']:,.0f} evicted; accounted {pressure['store_bytes'] / GiB:,.2f} GiB "
        f"of a {pressure['budget'] / GiB:,.2f} GiB budget",
    )
    restart = results.restart
    if "hits" not in restart:
        return out
    during = restart["during"]
    out.add(
        f"- restart: stopped in {restart['stop_seconds']:,.1f} s, ready in "
        f"{restart['ready_seconds']:,.1f} s, every file indexed "
        f"{restart['indexed_seconds']:,.1f} s after the start; while indexing "
        f"{during['rps']:,.0f} req/s ({during['hit_share']:.1%} from the store); "
        f"{restart['kept']:,.0f} of {restart['before']:,.0f} objects kept; hits after it "
        f"{restart['hits']['rps']:,.0f} req/s ({restart['hits']['hit_share']:.1%} from the store)",
    )
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--objects", type=int, default=10_000_000, help="objects filled (10,000,000)")
    add("--size", type=int, default=512, help="body bytes of each object (512)")
    add("--per-board", type=int, default=1000, help="objects per tag (1,000)")
    add("--workers", type=int, default=2, help="pinedge workers (2)")
    add("--dir", help="store directory, on disk (default: a temp dir under /var/tmp)")
    add(
        "--cache-disk",
        type=int,
        default=0,
        help="the store's budget in bytes (default: what --objects files take, so that "
        "the pressure step evicts)",
    )
    add("--pressure", type=int, default=200_000, help="objects filled past the budget (200,000)")
    add("--purges", type=int, default=5, help="tags purged (5)")
    add("--duration", type=float, default=10.0, help="seconds of each wrk run (10)")
    add("--connections", type=int, default=50, help="wrk connections (50)")
    add("--snapshot-every", type=int, default=1_000_000, help="objects between snapshots")
    add(
        "--restart-timeout",
        type=float,
        default=10800.0,
        help="seconds a restart may take (3 h: ten million files read from a cold disk "
        "took over 30 min here)",
    )
    add("--seed", type=int, default=14)
    add("--md", metavar="FILE", help="also write the report to FILE")
    add("--json", metavar="FILE", help="every number as JSON to FILE")
    args = parser.parse_args(argv)
    if args.cache_disk <= 0:
        args.cache_disk = args.objects * (ACCOUNTED_PER_SMALL_RECORD + args.size - 512)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    free = shutil.disk_usage(args.dir or "/var/tmp").free
    need = args.objects * 4096 * 1.1
    if free < need:
        raise SystemExit(f"the store needs about {need / GiB:,.0f} GiB; {free / GiB:,.0f} free")
    with tempfile.TemporaryDirectory(prefix="tenmillion-") as tmp_text:
        tmp = Path(tmp_text)
        store = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(dir="/var/tmp"))
        bench = Bench(args, tmp, store)
        failed = ""
        try:
            results = bench.run()
        except BenchError as exc:  # what was measured before it is still reported
            failed = str(exc)
            results = bench.results
        finally:
            bench.close()
            if not args.dir:
                shutil.rmtree(store, ignore_errors=True)
    out = report(args, results)  # printed as it is made
    if failed:
        out.add("", f"**The run stopped here**: {failed}")
    if args.md:
        Path(args.md).write_text(out.text())
    if args.json:
        write_json(args.json, asdict(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
