"""Hit path, side by side: nginx `proxy_cache` and pinedge in front of the same origin.

    .venv/bin/python bench/hitpath.py [--rounds 3] [--duration 10] [--connections 50]
                                      [--sizes 1k,50k,1m] [--workers-run] [--quick]

What it does, top to bottom (see bench/README.md for how to read the output):

1. a temp dir with one file of random bytes per size;
2. an origin: nginx serving those files with `Cache-Control: public, max-age=3600`;
3. nginx `proxy_cache` (one worker) and pinedge (one worker) in front of that origin;
4. warms both and checks that the second response for every object is a cache hit
   (`X-Cache: HIT` for nginx, a `hit` in `Cache-Status` for pinedge) -- or stops;
5. per size, per round: `wrk --latency` against both, alternating which goes first;
6. prints req/s, p50 and p99 per round and as medians, the ratio pinedge/nginx taken
   pair by pair, the peak RSS of every server process, then the hit-path targets.

With `--workers-run` it repeats 3-6 with pinedge `--workers 2` against nginx
`worker_processes 2`. Only the standard library and bench/harness are used; nothing
is asserted.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import session
from harness.errors import BenchError
from harness.machine import children, cmdline, descendants, ensure_tool, proc_memory
from harness.nginx import nginx_common, nginx_server, nginx_temp_paths, origin_requests
from harness.servers import Server, free_ports, http_get, start_edge, wait_http
from harness.stats import median, verdict
from harness.wrk import BROWSER_FIELDS, WrkResult, run_wrk

BROWSER_NOTE = ", requests with a browser's fields"

NGINX = "/usr/sbin/nginx"

KiB = 1024
MiB = 1024 * KiB
MB = 1000 * 1000

# The hit path's targets: minimum ratio pinedge/nginx in hits per second, by object size.
REQS_TARGET = {1 * KiB: 1.0, 50 * KiB: 1.0, 1 * MiB: 0.8}
RSS_ALLOWANCE = 80 * MB  # peak RSS per worker may exceed the memory budget by this much


# ---------------------------------------------------------------------------- sizes


SIZE_RE = re.compile(r"^\s*(\d+)\s*([a-z]*)\s*$", re.IGNORECASE)
SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": KiB,
    "kb": KiB,
    "kib": KiB,
    "m": MiB,
    "mb": MiB,
    "mib": MiB,
    "g": 1024 * MiB,
    "gib": 1024 * MiB,
}


def parse_size(text: str) -> int:
    """`1k` -> 1024, `50k` -> 51200, `1m` / `1MiB` -> 1048576 (binary units throughout)."""
    match = SIZE_RE.match(text)
    if not match or match.group(2).lower() not in SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 1k, 50k, 1m)")
    return int(match.group(1)) * SIZE_UNITS[match.group(2).lower()]


def size_label(size: int) -> str:
    for unit, name in ((MiB, "MiB"), (KiB, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} B"


# ---------------------------------------------------------------------------- nginx


def origin_conf(home: Path, files: Path, port: int) -> str:
    return f"""\
{nginx_common(home, 1)}
http {{
    access_log off;
{nginx_temp_paths(home)}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        root {files};
        location / {{
            add_header Cache-Control "public, max-age=3600";
        }}
        # Request counter: a hit path sends nothing here, so it must not move during a run.
        location = /_stub {{
            stub_status;
        }}
    }}
}}
"""


def proxy_conf(home: Path, origin_port: int, port: int, workers: int) -> str:
    return f"""\
{nginx_common(home, workers)}
http {{
    access_log off;
{nginx_temp_paths(home)}
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    proxy_cache_path {home}/cache levels=1:2 keys_zone=bench:16m max_size=1g
                     inactive=1h use_temp_path=off;
    upstream origin {{
        server 127.0.0.1:{origin_port};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering on;
            proxy_cache bench;
            proxy_cache_valid 200 1h;
            add_header X-Cache $upstream_cache_status;
        }}
    }}
}}
"""


def start_nginx(name: str, nginx: str, home: Path, conf_text: str) -> Server:
    server = nginx_server(name, nginx, home, conf_text)
    server.start()
    return server


def nginx_workers(master: int) -> list[int]:
    return [pid for pid in children(master) if "worker process" in cmdline(pid)]


# ---------------------------------------------------------------------------- warm-up


def is_hit(kind: str, headers: dict[str, str]) -> bool:
    if kind == "nginx":
        return headers.get("x-cache", "").upper() == "HIT"
    # Cache-Status: pinedge-bench; hit; ttl=3599  (RFC 9211; the last entry is this node's)
    entry = headers.get("cache-status", "").split(",")[-1]
    return "hit" in [p.strip().lower() for p in entry.split(";")[1:]]


def warm(kind: str, port: int, objects: dict[int, tuple[str, bytes]], checks: int) -> None:
    """First GET fills the cache; the next `checks` GETs, each on a new connection, must hit."""
    header = "X-Cache" if kind == "nginx" else "Cache-Status"
    for _size, (path, data) in objects.items():
        status, _, _ = http_get(port, path)
        if status != 200:
            raise BenchError(f"{kind}: GET {path} -> {status} on the first (filling) request")
        # A cache may finish storing a large object just after it has sent it: allow
        # up to two seconds for the first hit before the strict checks below.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            status, headers, _ = http_get(port, path)
            if status == 200 and is_hit(kind, headers):
                break
            time.sleep(0.05)
        for attempt in range(1, checks + 1):
            status, headers, body = http_get(port, path)
            if status != 200 or body != data:
                raise BenchError(
                    f"{kind}: GET {path} -> {status}, {len(body)} bytes "
                    f"(expected 200 and the file's {len(data)} bytes)"
                )
            if not is_hit(kind, headers):
                raise BenchError(
                    f"{kind}: GET {path} request {attempt + 1} is not a cache hit: "
                    f"{header}: {headers.get(header.lower(), '(absent)')!r}. "
                    "The benchmark measures hits only; fix this before benchmarking."
                )


# ---------------------------------------------------------------------------- one run


@dataclass
class Round:
    first: str
    nginx: WrkResult
    pinedge: WrkResult

    @property
    def ratio(self) -> float:
        return self.pinedge.rps / self.nginx.rps if self.nginx.rps else float("nan")

    def p_ratio(self, pct: str) -> float:
        n, p = self.nginx.latency_us.get(pct), self.pinedge.latency_us.get(pct)
        return p / n if n and p is not None else float("nan")


@dataclass
class SizeResult:
    size: int
    rounds: list[Round] = field(default_factory=list)


@dataclass
class RunResult:
    label: str
    workers: int
    sizes: list[SizeResult] = field(default_factory=list)
    rss: dict[str, dict[int, dict]] = field(default_factory=dict)  # server -> pid -> info
    skipped: str = ""


def sample_rss(run: RunResult, proxy: Server, edge: Server) -> None:
    """Keep, per process, the highest VmHWM seen (a process that was replaced keeps its own)."""
    groups = {
        "nginx": [(pid, "worker") for pid in nginx_workers(proxy.pid)],
        "pinedge": [(edge.pid, "main" if run.workers == 1 else "supervisor")]
        + [(pid, "child") for pid in descendants(edge.pid)],
    }
    for name, procs in groups.items():
        seen = run.rss.setdefault(name, {})
        for pid, role in procs:
            mem = proc_memory(pid)
            if not mem:
                continue
            old = seen.get(pid)
            if old is None or mem.get("VmHWM", 0) >= old["VmHWM"]:
                seen[pid] = {"role": role, **mem}


def bench_run(
    label: str,
    workers: int,
    args: argparse.Namespace,
    tools: dict[str, str],
    tmp: Path,
    origin_port: int,
    objects: dict[int, tuple[str, bytes]],
) -> RunResult:
    run = RunResult(label, workers)
    (proxy_port,) = free_ports(1)
    home = tmp / f"proxy-w{workers}"
    proxy = start_nginx(
        f"nginx-proxy-w{workers}",
        tools["nginx"],
        home,
        proxy_conf(home, origin_port, proxy_port, workers),
    )
    (tmp / f"pinedge-w{workers}").mkdir(exist_ok=True)
    node = start_edge(
        tmp / f"pinedge-w{workers}",
        f"pinedge-w{workers}",
        origin_port,
        cache_mem=args.cache_mem,
        workers=None if workers == 1 else workers,
        ready_timeout=None,
    )
    edge, edge_port, admin_port = node.server, node.port, node.admin
    wait_http(proxy, proxy_port, "/", timeout=15, any_status=True)  # "/" is a 404
    try:
        wait_http(edge, admin_port, "/readyz", timeout=30)
    except BenchError as exc:
        if workers == 1:
            raise
        code = edge.exited()
        said = (edge.output().splitlines() or ["(no output)"])[-1]
        how = f"exited with status {code}" if code is not None else "never became ready"
        run.skipped = f"pinedge refused --workers {workers}: it {how}: {said}"
        print(f"\n*** {label}: SKIPPED. {run.skipped}", flush=True)
        if code is None:
            print(textwrap.indent(str(exc), "    "), flush=True)
        proxy.stop()
        edge.stop()
        return run

    checks = 8 if workers > 1 else 2
    warm("nginx", proxy_port, objects, checks)
    warm("pinedge", edge_port, objects, checks)
    print(
        f"\n{label}: warmed; every object was a hit on {checks} further requests, "
        "each on a new connection.",
        flush=True,
    )
    urls = {
        "nginx": f"http://127.0.0.1:{proxy_port}",
        "pinedge": f"http://127.0.0.1:{edge_port}",
    }
    for size, (path, _) in objects.items():
        result = SizeResult(size)
        run.sizes.append(result)
        for index in range(args.rounds):
            order = ("nginx", "pinedge") if index % 2 == 0 else ("pinedge", "nginx")
            got: dict[str, WrkResult] = {}
            for name in order:
                time.sleep(args.pause)
                before = origin_requests(origin_port)
                got[name], _ = run_wrk(
                    tools["wrk"],
                    urls[name] + path,
                    connections=args.connections,
                    duration=args.duration,
                    threads=args.threads,
                    fields=BROWSER_FIELDS if args.browser else (),
                )
                got[name].origin_requests = origin_requests(origin_port) - before - 1
                sample_rss(run, proxy, edge)
            result.rounds.append(Round(order[0], got["nginx"], got["pinedge"]))
            r = result.rounds[-1]
            print(
                f"  {size_label(size):>8} round {index + 1}/{args.rounds}: "
                f"nginx {r.nginx.rps:,.0f}/s, pinedge {r.pinedge.rps:,.0f}/s, "
                f"ratio {r.ratio:.2f}x",
                flush=True,
            )
        # Still hits after the load? (An eviction or expiry would make the numbers misses.)
        warm("nginx", proxy_port, {size: objects[size]}, 1)
        warm("pinedge", edge_port, {size: objects[size]}, 1)
    for server in (edge, proxy):
        code = server.exited()
        if code is not None:
            print(f"*** {server.name} exited with status {code} during the run", flush=True)
    proxy.stop()
    edge.stop()
    return run


# ---------------------------------------------------------------------------- report


def fmt_us(us: float | None) -> str:
    if us is None:
        return "-"
    if us < 1000:
        return f"{us:.0f}us"
    if us < 1e6:
        return f"{us / 1e3:.2f}ms"
    return f"{us / 1e6:.2f}s"


def fmt_bytes(n: int) -> str:
    return f"{n / MiB:.1f} MiB"


def print_size_table(run: RunResult, result: SizeResult, args: argparse.Namespace) -> None:
    print(
        f"\n== {size_label(result.size)} object ({result.size} bytes) -- {run.label}; "
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency"
        f"{BROWSER_NOTE if args.browser else ''} =="
    )
    head = (
        f"{'round':<7}{'first':<9}{'nginx req/s':>12}{'pinedge req/s':>15}{'ratio':>8}"
        f"{'nginx p50':>11}{'pinedge p50':>13}{'nginx p99':>11}{'pinedge p99':>13}"
        f"{'p99 ratio':>11}"
    )
    print(head)
    print("-" * len(head))
    notes = []
    for i, r in enumerate(result.rounds, 1):
        print(
            f"{i:<7}{r.first:<9}{r.nginx.rps:>12,.0f}{r.pinedge.rps:>15,.0f}"
            f"{r.ratio:>7.2f}x"
            f"{fmt_us(r.nginx.latency_us.get('50')):>11}"
            f"{fmt_us(r.pinedge.latency_us.get('50')):>13}"
            f"{fmt_us(r.nginx.latency_us.get('99')):>11}"
            f"{fmt_us(r.pinedge.latency_us.get('99')):>13}"
            f"{r.p_ratio('99'):>10.2f}x"
        )
        for name, w in (("nginx", r.nginx), ("pinedge", r.pinedge)):
            if w.errors:
                notes.append(f"round {i} {name}: {w.errors}")
            if w.origin_requests:
                notes.append(f"round {i} {name}: {w.origin_requests} requests reached the origin")
    rs = result.rounds
    print(
        f"{'median':<16}{median([r.nginx.rps for r in rs]):>12,.0f}"
        f"{median([r.pinedge.rps for r in rs]):>15,.0f}"
        f"{median([r.ratio for r in rs]):>7.2f}x"
        f"{fmt_us(median([r.nginx.latency_us.get('50', float('nan')) for r in rs])):>11}"
        f"{fmt_us(median([r.pinedge.latency_us.get('50', float('nan')) for r in rs])):>13}"
        f"{fmt_us(median([r.nginx.latency_us.get('99', float('nan')) for r in rs])):>11}"
        f"{fmt_us(median([r.pinedge.latency_us.get('99', float('nan')) for r in rs])):>13}"
        f"{median([r.p_ratio('99') for r in rs]):>10.2f}x"
    )
    print("(ratio = pinedge/nginx per round; the median ratio is the median of those pairs)")
    for note in notes:
        print(f"  ! {note}")


def print_rss(run: RunResult, budget: int) -> None:
    print(f"\npeak RSS (VmHWM from /proc/PID/status) -- {run.label}:")
    for name in ("nginx", "pinedge"):
        procs = run.rss.get(name, {})
        if not procs:
            print(f"  {name:<8} (no process sampled)")
            continue
        total = 0
        for pid, info in sorted(procs.items()):
            total += info["VmHWM"]
            print(
                f"  {name:<8} pid {pid:<8} {info['role']:<11} peak {fmt_bytes(info['VmHWM']):>10}"
                f"   (at last sample: anon {fmt_bytes(info.get('RssAnon', 0))}, "
                f"file {fmt_bytes(info.get('RssFile', 0))}, "
                f"shmem {fmt_bytes(info.get('RssShmem', 0))})"
            )
        if len(procs) > 1:
            print(f"  {name:<8} sum of peaks {fmt_bytes(total)} (shared pages counted per process)")
    print(
        f"  pinedge memory budget (--cache-mem) {fmt_bytes(budget)}; "
        f"target per worker <= budget + 80 MB = {fmt_bytes(budget + RSS_ALLOWANCE)}"
    )


def pinedge_workers(run: RunResult) -> dict[int, dict]:
    """The processes that serve requests: children if there are any, else the main process."""
    procs = run.rss.get("pinedge", {})
    kids = {pid: info for pid, info in procs.items() if info["role"] == "child"}
    return kids or procs


def summary(runs: list[RunResult], budget: int) -> list[str]:
    lines = ["", "== targets of the hit path, from the medians above =="]
    for run in runs:
        lines.append(f"{run.label}:")
        if run.skipped:
            lines.append(f"  not run: {run.skipped}")
            continue
        for result in run.sizes:
            rs = result.rounds
            ratio = median([r.ratio for r in rs])
            p99 = median([r.p_ratio("99") for r in rs])
            target = REQS_TARGET.get(result.size)
            if target is None:
                reqs = f"req/s ratio {ratio:.2f}x (no target for this size)"
            else:
                reqs = (
                    f"req/s ratio {ratio:.2f}x, target >= {target:.1f}x: {verdict(ratio >= target)}"
                )
            lines.append(f"  {size_label(result.size):>8}  {reqs}")
            lines.append(
                f"  {'':>8}  p99 pinedge/nginx {p99:.2f}x, target <= 1.00x: {verdict(p99 <= 1.0)}"
            )
        workers = pinedge_workers(run)
        if workers:
            peak = max(info["VmHWM"] for info in workers.values())
            limit = budget + RSS_ALLOWANCE
            lines.append(
                f"  peak RSS per pinedge worker: max {fmt_bytes(peak)} over {len(workers)} "
                f"process(es), target <= {fmt_bytes(limit)}: {verdict(peak <= limit)}"
            )
    return lines


# ---------------------------------------------------------------------------- main


def make_files(tmp: Path, sizes: list[int]) -> dict[int, tuple[str, bytes]]:
    files = tmp / "files"
    files.mkdir()
    objects = {}
    for size in sizes:
        name = f"obj-{size}.bin"
        data = os.urandom(size)
        (files / name).write_bytes(data)
        objects[size] = (f"/{name}", data)
    return objects


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="nginx proxy_cache vs pinedge on cache hits (see bench/README.md)"
    )
    add = parser.add_argument
    add("--rounds", type=int, default=3, help="rounds per size (default 3)")
    add("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    add("--connections", type=int, default=50, help="wrk connections (default 50)")
    add("--threads", type=int, default=1, help="wrk threads (default 1)")
    add(
        "--sizes",
        default="1k,50k,1m",
        help="object sizes, binary units (default 1k,50k,1m)",
    )
    add("--cache-mem", default="256MiB", help="pinedge --cache-mem (default 256MiB)")
    add("--pause", type=float, default=1.0, help="seconds of quiet before each wrk run")
    add(
        "--browser",
        action="store_true",
        help="requests carry a browser's fields for an image (harness/wrk.py), not Host alone",
    )
    add(
        "--workers-run",
        action="store_true",
        help="then also pinedge --workers 2 against nginx worker_processes 2",
    )
    add("--quick", action="store_true", help="smoke run: 1 round of 3 s")
    add("--json", metavar="FILE", help="also write every number to FILE")
    add("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 1, 3
    args.size_list = sorted({parse_size(s) for s in args.sizes.split(",") if s.strip()})
    args.budget = parse_size(args.cache_mem)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs: list[RunResult] = []

    def body(tmp: Path) -> None:
        tools = {"nginx": ensure_tool(NGINX, "nginx"), "wrk": ensure_tool("wrk", "wrk")}
        objects = make_files(tmp, args.size_list)
        (origin_port,) = free_ports(1)
        origin = start_nginx(
            "nginx-origin",
            tools["nginx"],
            tmp / "origin",
            origin_conf(tmp / "origin", tmp / "files", origin_port),
        )
        wait_http(origin, origin_port, objects[args.size_list[0]][0], timeout=15)
        print(
            f"pinedge hit-path benchmark: {args.rounds} round(s) x {args.duration}s per size; "
            f"sizes {', '.join(size_label(s) for s in args.size_list)}; "
            f"{os.cpu_count()} CPU(s); temp dir {tmp}",
            flush=True,
        )
        plan = [("1 worker each", 1)]
        if args.workers_run:
            plan.append(("pinedge --workers 2 vs nginx worker_processes 2", 2))
        for label, workers in plan:
            runs.append(bench_run(label, workers, args, tools, tmp, origin_port, objects))
        for run in runs:
            if run.skipped:
                continue
            for result in run.sizes:
                print_size_table(run, result, args)
            print_rss(run, args.budget)
        for line in summary(runs, args.budget):
            print(line)

    def results() -> dict | None:
        return {"args": vars(args), "runs": [asdict(r) for r in runs]} if runs else None

    return session.run(
        body,
        prefix="pinedge-bench-",
        keep=args.keep,
        json_path=args.json,
        results=results,
        failed="bench/hitpath.py",
    )


if __name__ == "__main__":
    sys.exit(main())
