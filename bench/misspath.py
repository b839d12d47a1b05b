"""Miss path and store at scale, side by side: nginx `proxy_cache` and pinedge.

    .venv/bin/python bench/misspath.py [--rounds 3] [--duration 10] [--connections 50]
                                       [--scenarios miss,mix,zipf,memory] [--fill 70000]
                                       [--zipf-s 0.9] [--zipf-duration 30]
                                       [--profile DIR] [--quick] [--md FILE] [--json FILE]

Both proxies sit in front of the same origin: nginx serving a few files of random
bytes with `Cache-Control: public, max-age=3600` for ANY path under `/o/1k/` (1 KiB),
`/t/KB/` (thumbnails, 5-30 KiB) and `/p/KB/` (pages, 20-60 KiB). One proxy runs at a
time, started fresh for every wrk run: nginx `proxy_cache` (one worker, cache on
/dev/shm) or `pinedge edge --workers 1 --cache-mem 2GiB` (a supervisor that owns the
store, one worker). Servers run on CPU 0, wrk and the origin on CPU 1. Scenarios, each
a wrk Lua script written by this script (every wrk thread makes its own URLs):

- miss:   every request a new URL (1 KiB): misses/s, CPU per miss of every process;
- mix:    95% hits on 1,000 warmed URLs, 5% new URLs (1 KiB): req/s;
- zipf:   Zipf popularity (s=0.9) over 1,000,000 URLs of realistic sizes, cold
          start: req/s and the hit ratio each proxy reached;
- memory: N distinct 1 KiB objects stored, then what the store accounts against what
          it occupies on /dev/shm, and the RSS growth per object of each process.

Rounds alternate which proxy goes first; ratios pinedge/nginx are taken pair by pair
within a round and the medians are of those ratios. `--profile DIR` adds a pinedge
`miss` run under py-spy (worker and supervisor) and prints the functions with the
most own time. Only the standard library and bench/harness are used; nothing is
asserted. See bench/README.md and bench/MISSPATH.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import session
from harness.errors import BenchError
from harness.machine import (
    QUIET_SHARE,
    REPO,
    CpuSample,
    children,
    cmdline,
    code_state,
    cpu_seconds,
    ensure_tool,
    neighbours,
    others_share,
    proc_memory,
    wait_for_quiet,
    which,
    worker_pids,
)
from harness.nginx import (
    fill_through,
    nginx_common,
    nginx_server,
    nginx_temp_paths,
    origin_requests,
)
from harness.report import Report, note, run_line
from harness.servers import (
    Edge,
    Server,
    cache_status,
    free_ports,
    http_get,
    settled,
    start_edge,
    wait_http,
)
from harness.servers import requests_by_cache as by_cache
from harness.stats import median, verdict
from harness.wrk import BROWSER_FIELDS, WrkResult, parse_wrk, run_wrk, wrk_version

NGINX = "/usr/sbin/nginx"
KiB = 1024
MiB = 1024 * KiB

SERVER_CPU = 0  # the proxy under test
LOAD_CPU = 1  # wrk, the origin, py-spy
SCENARIOS = ("miss", "mix", "zipf", "memory")
THUMBS = range(5, 31)  # KiB, /t/KB/...
PAGES = range(20, 61)  # KiB, /p/KB/...
WARM_URLS = 1000
PREFILL = 1000  # objects stored before the memory scenario's "before" readings

# Targets of issue 14, each read on the medians.
MIX_TARGET = 1.0  # pinedge/nginx req/s
MISS_TARGET = 0.5  # pinedge/nginx misses/s
STORE_TARGET = 1.25  # real bytes of the store / bytes it accounts, 1 KiB objects
OWNER_TARGET = 400  # bytes of owner RSS per indexed object

PROXIES = ("nginx", "pinedge")


# ---------------------------------------------------------------------------- CPUs


@contextlib.contextmanager
def pinned(cpu: int) -> Iterator[None]:
    """Processes started inside run on `cpu` only (they inherit this thread's mask)."""
    if cpu >= (os.cpu_count() or 1):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# ---------------------------------------------------------------------------- nginx


def nginx_head(home: Path) -> str:
    return f"""\
{nginx_common(home, 1)}http {{
    access_log off;
{nginx_temp_paths(home)}
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
"""


def origin_conf(home: Path, files: Path, port: int) -> str:
    return f"""\
{nginx_head(home)}
    default_type application/octet-stream;
    open_file_cache max=200 inactive=1h;
    open_file_cache_valid 1h;
    server {{
        listen 127.0.0.1:{port};
        root {files};
        location / {{
            # Any path: /o/1k/x -> o-1k.bin, /t/12/x -> t-12.bin, /p/40/x -> p-40.bin
            rewrite ^/([otp])/(\\w+)/ /$1-$2.bin break;
            add_header Cache-Control "public, max-age=3600";
        }}
        # Requests that reach the origin, counted by nginx: the misses of a proxy.
        location = /_stub {{
            stub_status;
        }}
    }}
}}
"""


def proxy_conf(home: Path, cache: Path, origin_port: int, port: int) -> str:
    return f"""\
{nginx_head(home)}
    proxy_cache_path {cache} levels=1:2 keys_zone=bench:256m max_size=2g
                     inactive=1h use_temp_path=off;
    upstream origin {{
        server 127.0.0.1:{origin_port};
        keepalive 128;
        keepalive_requests 1000000;
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


def start_nginx(name: str, nginx: str, home: Path, conf_text: str, cpu: int) -> Server:
    server = nginx_server(name, nginx, home, conf_text)
    with pinned(cpu):
        server.start()
    return server


def du_kib(path: Path) -> tuple[int, int]:
    """(apparent KiB, allocated KiB) of a directory tree, as `du -sk` counts them."""

    def du(*flags: str) -> int:
        done = subprocess.run(
            ["du", "-sk", *flags, str(path)], capture_output=True, text=True, check=False
        )
        return int(done.stdout.split()[0]) if done.stdout else 0

    return du("--apparent-size"), du()


# ---------------------------------------------------------------------------- proxies


@dataclass
class Proxy:
    """One proxy under test, started fresh: its client port and the processes to read."""

    kind: str
    server: Server
    port: int
    edge: Edge | None = None
    cache: Path | None = None  # nginx: its cache directory

    def processes(self) -> dict[str, int]:
        """role -> pid: pinedge's supervisor and worker, nginx's processes."""
        if self.edge is not None:
            sup = self.server.pid
            found = {"supervisor": sup}
            for i, pid in enumerate(worker_pids(sup)):
                found["worker" if i == 0 else f"worker{i + 1}"] = pid
            return found
        found = {"master": self.server.pid}
        for pid in children(self.server.pid):
            text = cmdline(pid)
            role = "worker" if "worker process" in text else text.split(":")[-1].strip()
            found[role.replace(" process", "")] = pid
        return found

    def store_dir(self) -> Path | None:
        if self.edge is None:
            return self.cache
        found = sorted(Path("/dev/shm").glob(f"pinedge-store-{self.server.pid}-*"))
        return found[0] if found else None

    def logged_errors(self) -> int:
        """pinedge: the ERROR lines in its log so far (nginx's error log is not read)."""
        if self.edge is None:
            return 0
        try:
            text = self.server.log_path.read_text(errors="replace")
        except OSError:
            return 0
        return sum(1 for line in text.splitlines() if " ERROR " in line)

    def stop(self) -> None:
        store = self.store_dir() if self.edge is not None else None
        self.server.stop()
        if self.cache is not None:
            shutil.rmtree(self.cache, ignore_errors=True)
        if store is not None:  # left only if the node was killed: it is ours
            shutil.rmtree(store, ignore_errors=True)


class Lab:
    """The tools, the origin and where each proxy is started."""

    def __init__(self, args: argparse.Namespace, tmp: Path, shm: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.shm = shm
        self.nginx = ensure_tool(NGINX, "nginx")
        self.wrk = ensure_tool("wrk", "wrk")
        self.origin_port = 0
        self.origin: Server | None = None
        self.started = 0

    def start_origin(self) -> None:
        files = self.tmp / "files"
        files.mkdir()
        (files / "o-1k.bin").write_bytes(os.urandom(KiB))
        for kb in THUMBS:
            (files / f"t-{kb}.bin").write_bytes(os.urandom(kb * KiB))
        for kb in PAGES:
            (files / f"p-{kb}.bin").write_bytes(os.urandom(kb * KiB))
        (self.origin_port,) = free_ports(1)
        home = self.tmp / "origin"
        conf = origin_conf(home, files, self.origin_port)
        self.origin = start_nginx("nginx-origin", self.nginx, home, conf, LOAD_CPU)
        wait_http(self.origin, self.origin_port, "/o/1k/check", timeout=15)
        for path, size in (("/o/1k/a", KiB), ("/t/12/b", 12 * KiB), ("/p/60/c", 60 * KiB)):
            status, headers, body = http_get(self.origin_port, path)
            if (
                status != 200
                or len(body) != size
                or "max-age=3600" not in headers.get("cache-control", "")
            ):
                raise BenchError(f"origin: GET {path} -> {status}, {len(body)} bytes, {headers}")

    def start(self, kind: str) -> Proxy:
        self.started += 1
        label = f"{kind}-{self.started}"
        if kind == "nginx":
            (port,) = free_ports(1)
            home = self.tmp / label
            cache = self.shm / label
            conf = proxy_conf(home, cache, self.origin_port, port)
            server = start_nginx(label, self.nginx, home, conf, SERVER_CPU)
            wait_http(server, port, "/", timeout=15, any_status=True)
            return Proxy(kind, server, port, cache=cache)
        with pinned(SERVER_CPU):
            edge = start_edge(
                self.tmp,
                label,
                self.origin_port,
                cache_mem=self.args.cache_mem,
                workers=1,
                ready_timeout=60,
            )
        return Proxy(kind, edge.server, edge.port, edge=edge)

    def load(self, proxy: Proxy, script: Path, duration: float) -> tuple[WrkResult, float]:
        """wrk on CPU 1 against the proxy; its parsed summary and its own CPU seconds."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with pinned(LOAD_CPU):
            result, output = run_wrk(
                self.wrk,
                f"http://127.0.0.1:{proxy.port}",
                connections=self.args.connections,
                duration=duration,
                threads=self.args.threads,
                script=script,
                fields=BROWSER_FIELDS if self.args.browser else (),
            )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        (self.tmp / f"{proxy.server.name}-{script.stem}.wrk.txt").write_text(output)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return result, cpu


# ---------------------------------------------------------------------------- wrk scripts

LUA_HEAD = """\
-- generated by bench/misspath.py: {what}
local nonce = "{nonce}"
local seed = {seed}
local next_id = 0
local i = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end
"""

MISS_LUA = """
-- every request a URL never asked before: the thread's id and a counter
function request()
  i = i + 1
  return wrk.format(nil, "/o/1k/m-" .. nonce .. "-" .. (id or 0) .. "-" .. i)
end
"""

MIX_LUA = """
local warm, share = {warm}, {share}

function init(args)
  math.randomseed(seed + (id or 0))
end

-- a share of new URLs, the rest spread over the warmed ones
function request()
  i = i + 1
  if math.random() < share then
    return wrk.format(nil, "/o/1k/n-" .. nonce .. "-" .. (id or 0) .. "-" .. i)
  end
  return wrk.format(nil, "/o/1k/w" .. math.random(0, warm - 1))
end
"""

ZIPF_LUA = """
local n, s = {urls}, {s}
local cdf = nil

-- the CDF over the n ranks, once per thread; the same seed for both proxies
function init(args)
  math.randomseed(seed + (id or 0))
  cdf = {{}}
  local total = 0
  for k = 1, n do
    total = total + k ^ (-s)
    cdf[k] = total
  end
  for k = 1, n do
    cdf[k] = cdf[k] / total
  end
end

-- rank by binary search of a uniform draw; the rank's size bucket from a hash of it:
-- 80% thumbnails (/t/5..30/), 20% pages (/p/20..60/)
function request()
  if cdf == nil then
    return wrk.format(nil, "/o/1k/check")
  end
  local u = math.random()
  local lo, hi = 1, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  local h = (lo * 2654435761) % 4294967296
  local pick = math.floor(h / 128)
  if h % 100 < 80 then
    return wrk.format(nil, "/t/" .. (5 + pick % 26) .. "/z" .. lo)
  end
  return wrk.format(nil, "/p/" .. (20 + pick % 41) .. "/z" .. lo)
end
"""

FILL_LUA = """
local total, threads = {total}, {threads}

-- objects id, id + threads, ... below total once each, then the first one again (a hit)
function request()
  local k = (id or 0) + threads * i
  if k < total then
    i = i + 1
    return wrk.format(nil, "/o/1k/f" .. k)
  end
  return wrk.format(nil, "/o/1k/f" .. (id or 0))
end
"""


def lua(tmp: Path, name: str, body: str, **values: object) -> Path:
    nonce = secrets.token_hex(4)
    text = LUA_HEAD.format(what=name, nonce=nonce, seed=values.pop("seed", 1)) + body.format(
        **values
    )
    path = tmp / f"{name}-{nonce}.lua"
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------- readings


def proc_cpu(pids: dict[str, int]) -> dict[str, float]:
    return {role: cpu_seconds([pid]) for role, pid in pids.items()}


def requests_by_cache(proxy: Proxy) -> Counter[str]:
    """pinedge: requests so far by the `cache` label of pinedge_requests_total."""
    assert proxy.edge is not None
    return Counter({k: int(v) for k, v in by_cache(proxy.edge.admin).items()})


def pinedge_metric(proxy: Proxy, name: str) -> float:
    assert proxy.edge is not None
    _, _, body = http_get(proxy.edge.admin, "/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def is_hit(proxy: Proxy, headers: dict[str, str]) -> bool:
    if proxy.kind == "nginx":
        return headers.get("x-cache", "").upper() == "HIT"
    return "hit" in [p.lower() for p in cache_status(headers)]


def get_all(port: int, paths: list[str]) -> list[tuple[int, dict[str, str], int]]:
    """GET each path on one kept-alive connection: (status, headers, body length)."""
    out = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for path in paths:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            out.append((resp.status, {k.lower(): v for k, v in resp.getheaders()}, len(body)))
    finally:
        conn.close()
    return out


def warm(proxy: Proxy, count: int) -> None:
    """GET /o/1k/w0 .. w{count-1}; then each again must be a hit, or the run stops."""
    paths = [f"/o/1k/w{k}" for k in range(count)]
    for path, (status, _, size) in zip(paths, get_all(proxy.port, paths), strict=True):
        if status != 200 or size != KiB:
            raise BenchError(f"{proxy.kind}: warming GET {path} -> {status}, {size} bytes")
    time.sleep(0.5)
    misses = [
        p
        for p, (_, h, _) in zip(paths, get_all(proxy.port, paths), strict=True)
        if not is_hit(proxy, h)
    ]
    if misses:
        time.sleep(1.0)
        again = get_all(proxy.port, misses)
        still = [p for p, (_, h, _) in zip(misses, again, strict=True) if not is_hit(proxy, h)]
        if still:
            _, headers, _ = again[0]
            raise BenchError(
                f"{proxy.kind}: {len(still)} of {count} warmed URLs are not hits on the "
                f"second request (first: {still[0]}, headers {headers})"
            )


# ---------------------------------------------------------------------------- one run


@dataclass
class Run:
    """One wrk run against one proxy."""

    proxy: str
    rps: float
    requests: int
    seconds: float
    errors: str
    origin_requests: int
    cpu: dict[str, float]  # role -> CPU seconds during the run (proxy processes)
    origin_cpu: float
    wrk_cpu: float
    others: float  # share of the machine's CPUs processes not ours used during the run
    by_cache: dict[str, float] = field(default_factory=dict)  # pinedge only
    logged_errors: int = 0  # pinedge: ERROR lines in its log (set once it stops)

    def per_request_us(self, role: str) -> float:
        return self.cpu.get(role, float("nan")) / self.requests * 1e6 if self.requests else 0

    @property
    def origin_share(self) -> float:
        """Origin fetches per client request."""
        return self.origin_requests / self.requests if self.requests else float("nan")

    @property
    def hit_ratio(self) -> float:
        """pinedge: its own count of hits; nginx: 1 - origin fetches per request (every
        nginx miss is one origin fetch: no proxy_cache_lock)."""
        if self.by_cache:
            total = sum(self.by_cache.values())
            return self.by_cache.get("hit", 0) / total if total else float("nan")
        return 1 - self.origin_share


def measure(lab: Lab, proxy: Proxy, script: Path, duration: float) -> Run:
    if lab.args.quiet_wait > 0:
        wait_for_quiet(lab.args.quiet_wait)
    time.sleep(lab.args.pause)
    pids = proxy.processes()
    origin_pid = lab.origin.pid if lab.origin else 0
    before_cpu, before_origin_cpu = proc_cpu(pids), cpu_seconds(children(origin_pid))
    before_origin = origin_requests(lab.origin_port)
    before_cache = requests_by_cache(proxy) if proxy.edge else Counter()
    started, machine = time.monotonic(), CpuSample.now()
    result, wrk_cpu = lab.load(proxy, script, duration)
    seconds, others = time.monotonic() - started, others_share(machine, CpuSample.now())
    after = proc_cpu(pids)
    origin_cpu = cpu_seconds(children(origin_pid)) - before_origin_cpu
    fetched = origin_requests(lab.origin_port) - before_origin - 1
    by_cache: dict[str, float] = {}
    if proxy.edge:
        time.sleep(1.5)  # workers report their metrics once a second
        after_cache = requests_by_cache(proxy)
        by_cache = {k: after_cache[k] - before_cache[k] for k in after_cache}
        by_cache = {k: v for k, v in by_cache.items() if v}
    if proxy.server.exited() is not None:
        raise BenchError(f"{proxy.server.name} exited during the run:\n{proxy.server.output()}")
    return Run(
        proxy=proxy.kind,
        rps=result.rps,
        requests=result.requests,
        seconds=seconds,
        errors=result.errors,
        origin_requests=fetched,
        cpu={role: after[role] - before_cpu.get(role, 0.0) for role in after},
        origin_cpu=origin_cpu,
        wrk_cpu=wrk_cpu,
        others=others,
        by_cache=by_cache,
    )


@dataclass
class Pair:
    first: str
    runs: dict[str, Run]
    attempts: int = 1
    set_aside: list[float] = field(default_factory=list)  # others' share in the attempts not kept

    @property
    def disturbed(self) -> float:
        """The larger share of the CPUs other processes used during either run."""
        return max(run.others for run in self.runs.values())

    @property
    def ratio(self) -> float:
        n, p = self.runs["nginx"].rps, self.runs["pinedge"].rps
        return p / n if n else float("nan")


def one_round(lab: Lab, name: str, index: int) -> Pair:
    """Each proxy once, fresh, in this round's order."""
    args = lab.args
    order = PROXIES if index % 2 == 0 else PROXIES[::-1]
    runs: dict[str, Run] = {}
    seed = 1000 + index
    for kind in order:
        proxy = lab.start(kind)
        try:
            duration = args.duration
            if name == "miss":
                script = lua(lab.tmp, "miss", MISS_LUA)
            elif name == "mix":
                warm(proxy, WARM_URLS)
                script = lua(
                    lab.tmp, "mix", MIX_LUA, seed=seed, warm=WARM_URLS, share=args.miss_share
                )
            else:
                duration = args.zipf_duration
                script = lua(
                    lab.tmp, "zipf", ZIPF_LUA, seed=seed, urls=args.zipf_urls, s=args.zipf_s
                )
            runs[kind] = measure(lab, proxy, script, duration)
        finally:
            proxy.stop()
        runs[kind].logged_errors = proxy.logged_errors()
    return Pair(order[0], runs)


def scenario_rounds(lab: Lab, name: str) -> list[Pair]:
    """The rounds of a scenario. A round during which other processes used more than
    --others-limit of the CPUs is measured again, up to --attempts times in all; the
    attempt they disturbed least is kept."""
    args = lab.args
    pairs = []
    for index in range(args.rounds):
        tries: list[Pair] = []
        while len(tries) < args.attempts:
            pair = one_round(lab, name, index)
            tries.append(pair)
            n, p = pair.runs["nginx"], pair.runs["pinedge"]
            note(
                f"{name} round {index + 1}/{args.rounds} (attempt {len(tries)}): nginx "
                f"{n.rps:,.0f}/s, pinedge {p.rps:,.0f}/s, ratio {pair.ratio:.2f}x; others' "
                f"CPU {n.others:.0%} / {p.others:.0%}"
            )
            if pair.disturbed < args.others_limit:
                break
        kept = min(tries, key=lambda pair: pair.disturbed)
        kept.attempts = len(tries)
        kept.set_aside = [pair.disturbed for pair in tries if pair is not kept]
        pairs.append(kept)
    return pairs


# ---------------------------------------------------------------------------- memory


@dataclass
class Memory:
    proxy: str
    asked: int  # distinct objects the fill asked for (the pre-fill not counted)
    indexed_before: float  # objects the proxy held after the pre-fill
    indexed: float  # and after the fill (pinedge: pinedge_store_objects; nginx: files)
    accounted: float  # pinedge: pinedge_store_bytes; nginx: the cache's apparent size
    apparent: int  # du --apparent-size, bytes
    real: int  # du (blocks), bytes
    files: int
    fill_seconds: float
    rss_before: dict[str, dict[str, int]]
    rss_after: dict[str, dict[str, int]]

    @property
    def added(self) -> float:
        return self.indexed - self.indexed_before

    def growth(self, role: str, kind: str = "VmRSS") -> float:
        """Bytes of `kind` this process grew by during the fill, per object it added."""
        before = self.rss_before.get(role, {}).get(kind)
        after = self.rss_after.get(role, {}).get(kind)
        if before is None or after is None or not self.added:
            return float("nan")
        return (after - before) / self.added


def fill(lab: Lab, proxy: Proxy, total: int, prefix: str) -> float:
    """Store `total` distinct 1 KiB objects through the proxy with wrk; stopped (SIGINT)
    once the origin has been asked for all of them. Seconds taken."""
    args = lab.args
    body = FILL_LUA.replace("/o/1k/f", f"/o/1k/{prefix}")
    script = lua(lab.tmp, f"fill-{prefix}", body, total=total, threads=args.threads)
    limit = int(60 + total / 100)
    argv = [lab.wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{limit}s"]
    argv += ["--timeout", "30s", "-s", str(script), f"http://127.0.0.1:{proxy.port}"]
    with pinned(LOAD_CPU):
        seconds, out = fill_through(argv, lab.origin_port, total)
    result = parse_wrk(out)
    if result.errors:
        note(f"fill through {proxy.kind}: {result.errors}")
    return seconds


def indexed(proxy: Proxy, want: float, timeout: float = 30.0) -> float:
    """Objects the proxy holds, once it holds `want` or the count stops moving for 3 s
    (pinedge: pinedge_store_objects; nginx: files in its cache directory)."""

    def count() -> float:
        if proxy.edge:
            return pinedge_metric(proxy, "pinedge_store_objects")
        store = proxy.store_dir()
        return float(sum(len(n) for _, _, n in os.walk(store))) if store else 0.0

    return settled(count, want, timeout)


def memory_scenario(lab: Lab, kind: str) -> Memory:
    args = lab.args
    proxy = lab.start(kind)
    try:
        # A first thousand objects, so that what any first miss allocates once (code
        # paths, connections, buffers) is in the "before" readings, not per object.
        fill(lab, proxy, PREFILL, "pre")
        held = indexed(proxy, PREFILL)
        time.sleep(1.0)
        pids = proxy.processes()
        before = {role: proc_memory(pid) for role, pid in pids.items()}
        seconds = fill(lab, proxy, args.fill, "f")
        count = indexed(proxy, held + args.fill)
        time.sleep(2.0)
        after = {role: proc_memory(pid) for role, pid in pids.items()}
        store = proxy.store_dir()
        if store is None or not store.is_dir():
            raise BenchError(f"{kind}: its store directory was not found ({store})")
        apparent, real = du_kib(store)
        files = sum(len(names) for _, _, names in os.walk(store))
        # nginx has no gauge of what it holds: its apparent size stands for it
        own = pinedge_metric(proxy, "pinedge_store_bytes") if proxy.edge else None
        accounted = own if own is not None else apparent * KiB
        return Memory(
            proxy=kind,
            asked=args.fill,
            indexed_before=held,
            indexed=count,
            accounted=accounted,
            apparent=apparent * KiB,
            real=real * KiB,
            files=files,
            fill_seconds=seconds,
            rss_before=before,
            rss_after=after,
        )
    finally:
        proxy.stop()


# ---------------------------------------------------------------------------- profile


def py_spy_path(args: argparse.Namespace) -> str:
    for candidate in (
        args.py_spy,
        str(Path(sys.executable).parent / "py-spy"),
        str(REPO / ".venv" / "bin" / "py-spy"),
        "py-spy",
    ):
        if candidate and which(candidate):
            return which(candidate) or candidate
    raise BenchError("py-spy not found: pip install py-spy, or give --py-spy PATH")


def own_time(raw: Path) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """From py-spy's raw (collapsed) stacks: the samples; per function (name and file,
    lines merged) the samples in which it was the innermost frame (own time); and per
    function of pinedge's own code the samples it was anywhere in (inclusive time)."""
    total, leaves, within = 0, Counter[str](), Counter[str]()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
        frames[-1] = frames[-1] or "(no Python frame)"
        total += int(count)
        leaves[frames[-1]] += int(count)
        for frame in set(frames):
            if re.search(r"\((edge|core)/", frame) and not frame.startswith("run"):
                within[frame] += int(count)
    return total, leaves.most_common(), within.most_common()


@dataclass
class Profile:
    run: Run
    files: dict[str, str]
    samples: dict[str, int]
    top: dict[str, list[tuple[str, int]]]
    inclusive: dict[str, list[tuple[str, int]]]
    said: dict[str, str]


def profile(lab: Lab, out: Path) -> Profile:
    args = lab.args
    spy = py_spy_path(args)
    out.mkdir(parents=True, exist_ok=True)
    proxy = lab.start("pinedge")
    spies: dict[str, subprocess.Popen[str]] = {}
    files: dict[str, str] = {}
    try:
        pids = proxy.processes()
        for role in ("worker", "supervisor"):
            path = out / f"{args.profile_scenario}-{role}.raw"
            files[role] = str(path)
            argv = [spy, "record", "--pid", str(pids[role]), "--rate", str(args.profile_rate)]
            argv += ["--format", "raw", "--output", str(path), "--nonblocking"]
            with pinned(LOAD_CPU):
                spies[role] = subprocess.Popen(
                    argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
                )
        time.sleep(1.0)
        for role, spy_proc in spies.items():
            if spy_proc.poll() is not None:
                raise BenchError(f"py-spy on the {role} exited: {spy_proc.communicate()[0]}")
        if args.profile_scenario == "mix":
            warm(proxy, WARM_URLS)
            script = lua(lab.tmp, "mix", MIX_LUA, seed=999, warm=WARM_URLS, share=args.miss_share)
        else:
            script = lua(lab.tmp, "miss", MISS_LUA)
        run = measure(lab, proxy, script, args.duration)
    finally:
        said = {}
        for role, spy_proc in spies.items():
            if spy_proc.poll() is None:
                spy_proc.send_signal(signal.SIGINT)
            try:
                said[role] = spy_proc.communicate(timeout=60)[0]
            except subprocess.TimeoutExpired:
                spy_proc.kill()
                said[role] = spy_proc.communicate()[0]
        proxy.stop()
    samples, top, inclusive = {}, {}, {}
    for role, written in files.items():
        if not Path(written).exists():
            raise BenchError(f"py-spy wrote nothing for the {role}: {said.get(role)}")
        samples[role], top[role], inclusive[role] = own_time(Path(written))
    return Profile(run, files, samples, top, inclusive, said)


# ---------------------------------------------------------------------------- report


def f0(x: float) -> str:
    return f"{x:,.0f}" if x == x else "-"


def fx(x: float) -> str:
    return f"{x:.2f}x" if x == x else "-"


def fpct(x: float) -> str:
    return f"{x:.1%}" if x == x else "-"


def fmib(n: float) -> str:
    return f"{n / MiB:,.1f} MiB"


def others(pair: Pair) -> str:
    """The share of the machine's CPUs processes not ours used during each run."""
    return f"{pair.runs['nginx'].others:.0%} / {pair.runs['pinedge'].others:.0%}"


def problems(report: Report, pairs: list[Pair], misses: bool) -> None:
    for i, pair in enumerate(pairs, 1):
        for kind in PROXIES:
            run = pair.runs[kind]
            if run.errors:
                report.add(f"- ! round {i} {kind}: {run.errors}")
            if misses and run.origin_share < 0.99:
                report.add(
                    f"- ! round {i} {kind}: only {run.origin_share:.1%} of the requests "
                    "reached the origin"
                )
    for i, pair in enumerate(pairs, 1):
        if pair.set_aside:
            shares = ", ".join(f"{share:.0%}" for share in pair.set_aside)
            report.add(
                f"- round {i} was measured {pair.attempts} times: other processes used "
                f"{shares} of the CPUs in the attempts set aside; the table has the attempt "
                "they disturbed least"
            )
    logged = sum(pair.runs["pinedge"].logged_errors for pair in pairs)
    if logged:
        report.add(
            f"- pinedge logged {logged:,} ERROR lines over these runs (`--keep` keeps its logs)"
        )


def miss_section(report: Report, args: argparse.Namespace, pairs: list[Pair]) -> None:
    report.add(
        "## miss: every request a new URL (1 KiB)",
        "",
        "misses/s is wrk's req/s; every request is a URL never asked before, so each is a "
        "miss (origin fetches per request below, from the origin's own counter). CPU µs per "
        "miss: user + system time of each proxy process during the run, over the requests.",
        "",
    )
    rows = []
    for i, pair in enumerate(pairs, 1):
        n, p = pair.runs["nginx"], pair.runs["pinedge"]
        rows.append(
            [
                str(i),
                pair.first,
                f0(n.rps),
                f0(p.rps),
                fx(pair.ratio),
                f"{n.origin_share:.3f} / {p.origin_share:.3f}",
                f0(sum(n.cpu.values()) / n.requests * 1e6),
                f0(p.per_request_us("worker")),
                f0(p.per_request_us("supervisor")),
                others(pair),
            ]
        )
    rows.append(
        [
            "median",
            "",
            f0(median(pp.runs["nginx"].rps for pp in pairs)),
            f0(median(pp.runs["pinedge"].rps for pp in pairs)),
            fx(median(pp.ratio for pp in pairs)),
            "",
            f0(
                median(
                    sum(pp.runs["nginx"].cpu.values()) / pp.runs["nginx"].requests * 1e6
                    for pp in pairs
                )
            ),
            f0(median(pp.runs["pinedge"].per_request_us("worker") for pp in pairs)),
            f0(median(pp.runs["pinedge"].per_request_us("supervisor") for pp in pairs)),
            "",
        ]
    )
    report.table(
        "round | first | nginx misses/s | pinedge misses/s | ratio | origin fetches/req "
        "nginx / pinedge | nginx CPU µs/miss (all processes) | pinedge worker CPU µs/miss "
        "| pinedge supervisor CPU µs/miss | others' CPU",
        rows,
        "llrrrrrrrr",
    )
    cpu_line(report, pairs)
    problems(report, pairs, misses=True)
    report.add("")


def cpu_line(report: Report, pairs: list[Pair]) -> None:
    """Where the CPU went, as a share of one core over the wrk run (medians)."""
    parts = []
    for kind in PROXIES:
        runs = [pp.runs[kind] for pp in pairs]
        roles = sorted({r for run in runs for r in run.cpu})
        procs = ", ".join(
            f"{role} {median(run.cpu.get(role, 0) / run.seconds for run in runs):.0%}"
            for role in roles
            if median(run.cpu.get(role, 0) / run.seconds for run in runs) >= 0.005
        )
        parts.append(
            f"with {kind}: {procs or 'none'} (CPU {SERVER_CPU}); origin "
            f"{median(run.origin_cpu / run.seconds for run in runs):.0%}, wrk "
            f"{median(run.wrk_cpu / run.seconds for run in runs):.0%} (CPU {LOAD_CPU})"
        )
    report.add(
        "",
        "Share of a core during the runs (medians): "
        + "; ".join(parts)
        + ". others' CPU: the share of the machine's CPUs that processes this script did "
        "not start used during each run, nginx's / pinedge's (other tenants; before each "
        f"run the script waits up to --quiet-wait s for a second under {QUIET_SHARE:.0%}).",
        "",
    )


def mix_section(report: Report, args: argparse.Namespace, pairs: list[Pair]) -> None:
    report.add(
        f"## mix: {1 - args.miss_share:.0%} hits on {WARM_URLS:,} warm URLs, "
        f"{args.miss_share:.0%} new URLs (1 KiB)",
        "",
        f"Before each run the proxy is warmed: one GET of each of the {WARM_URLS:,} URLs, "
        "then a second that must be a hit (`X-Cache: HIT`, `hit` in pinedge's "
        "`Cache-Status`), else the run stops.",
        "",
    )
    rows = []
    for i, pair in enumerate(pairs, 1):
        n, p = pair.runs["nginx"], pair.runs["pinedge"]
        rows.append(
            [
                str(i),
                pair.first,
                f0(n.rps),
                f0(p.rps),
                fx(pair.ratio),
                f"{n.origin_share:.3f} / {p.origin_share:.3f}",
                fpct(p.hit_ratio),
                others(pair),
            ]
        )
    rows.append(
        [
            "median",
            "",
            f0(median(pp.runs["nginx"].rps for pp in pairs)),
            f0(median(pp.runs["pinedge"].rps for pp in pairs)),
            fx(median(pp.ratio for pp in pairs)),
            "",
            "",
            "",
        ]
    )
    report.table(
        "round | first | nginx req/s | pinedge req/s | ratio | origin fetches/req nginx / "
        "pinedge | pinedge hits (own count) | others' CPU",
        rows,
        "llrrrrrr",
    )
    cpu_line(report, pairs)
    problems(report, pairs, misses=False)
    report.add("")


def zipf_section(report: Report, args: argparse.Namespace, pairs: list[Pair]) -> None:
    report.add(
        f"## zipf: {args.zipf_urls:,} URLs, Zipf s={args.zipf_s:g}, realistic sizes, cold start",
        "",
        f"wrk -d{args.zipf_duration:g}s on an empty proxy. 80% of the URLs are thumbnails "
        f"({THUMBS.start}–{THUMBS.stop - 1} KiB), 20% pages ({PAGES.start}–{PAGES.stop - 1} "
        "KiB), the bucket fixed per URL by a hash of its rank; both proxies get the same "
        "draws. Hit ratio: nginx, 1 − origin fetches per request (without "
        "`proxy_cache_lock`, each nginx miss is one fetch); pinedge, `hit` over all of "
        "`pinedge_requests_total` (`collapsed` requests waited on another's fetch and are "
        "not hits). The faster proxy asks more of the distribution in the same time, so "
        "it also reaches a higher hit ratio: compare requests too.",
        "",
    )
    rows = []
    for i, pair in enumerate(pairs, 1):
        n, p = pair.runs["nginx"], pair.runs["pinedge"]
        collapsed = p.by_cache.get("collapsed", 0) / max(1, sum(p.by_cache.values()))
        rows.append(
            [
                str(i),
                pair.first,
                f0(n.rps),
                f0(p.rps),
                fx(pair.ratio),
                f"{n.requests:,}",
                f"{p.requests:,}",
                fpct(n.hit_ratio),
                fpct(p.hit_ratio),
                fpct(collapsed),
                f"{n.origin_share:.3f} / {p.origin_share:.3f}",
                others(pair),
            ]
        )
    rows.append(
        [
            "median",
            "",
            f0(median(pp.runs["nginx"].rps for pp in pairs)),
            f0(median(pp.runs["pinedge"].rps for pp in pairs)),
            fx(median(pp.ratio for pp in pairs)),
            "",
            "",
            fpct(median(pp.runs["nginx"].hit_ratio for pp in pairs)),
            fpct(median(pp.runs["pinedge"].hit_ratio for pp in pairs)),
            "",
            "",
            "",
        ]
    )
    report.table(
        "round | first | nginx req/s | pinedge req/s | ratio | nginx requests | pinedge "
        "requests | nginx hit ratio | pinedge hit ratio | pinedge collapsed | origin "
        "fetches/req nginx / pinedge | others' CPU",
        rows,
        "llrrrrrrrrrr",
    )
    cpu_line(report, pairs)
    problems(report, pairs, misses=False)
    report.add("")


def memory_section(report: Report, args: argparse.Namespace, mem: dict[str, Memory]) -> None:
    report.add(
        f"## memory: {args.fill:,} distinct 1 KiB objects",
        "",
        f"A fresh proxy; {PREFILL:,} objects first (what any first miss allocates once "
        'goes into the "before" readings), RSS read (`/proc/PID/status`), then '
        f"{args.fill:,} more objects through wrk, then the store and the RSS again; growth "
        "per object is over the objects the fill added. pinedge accounts "
        "`pinedge_store_bytes` (the records' bytes) for `pinedge_store_objects`; objects "
        "this small are records in segment files of about 1 MiB under "
        "`/dev/shm/pinedge-store-…`. nginx has no such "
        "gauge: its accounted row is the cache's apparent size and its object count the "
        "files in its cache. real = `du -sk` (allocated blocks), apparent = `du -sk "
        "--apparent-size`.",
        "",
    )
    cols = [mem.get(kind) for kind in PROXIES]

    def row(what: str, cell: Callable[[Memory], str]) -> list[str]:
        return [what, *(cell(m) if m else "-" for m in cols)]

    rows = [
        row("objects held after the fill", lambda m: f"{m.indexed:,.0f}"),
        row("objects the fill added (asked)", lambda m: f"{m.added:,.0f} ({m.asked:,})"),
        row("files in the store directory", lambda m: f"{m.files:,}"),
        row("fill: objects/s", lambda m: f0(m.asked / m.fill_seconds)),
        row("accounted", lambda m: fmib(m.accounted)),
        row("apparent (du --apparent-size)", lambda m: fmib(m.apparent)),
        row("real (du)", lambda m: fmib(m.real)),
        row("**real / accounted**", lambda m: fx(m.real / m.accounted)),
        row("accounted bytes per object", lambda m: f0(m.accounted / m.indexed)),
        row("real bytes per object", lambda m: f0(m.real / m.indexed)),
    ]
    for m in cols:
        if m is None:
            continue
        for role in m.rss_after:
            b, a = m.rss_before.get(role, {}), m.rss_after[role]
            name = f"{m.proxy} {role}" + (" (store owner)" if role == "supervisor" else "")
            cells = ["-", "-"]
            cells[PROXIES.index(m.proxy)] = (
                f"{fmib(b.get('VmRSS', 0))} → {fmib(a.get('VmRSS', 0))}: "
                f"**{f0(m.growth(role))}** (anon {f0(m.growth(role, 'RssAnon'))}, "
                f"shmem {f0(m.growth(role, 'RssShmem'))})"
            )
            rows.append([f"{name}: RSS before → after, growth B/object", *cells])
    report.table("measure | nginx | pinedge", rows, "lrr")


def profile_section(report: Report, args: argparse.Namespace, prof: Profile) -> None:
    run = prof.run
    report.add(
        f"## Profile: pinedge in the {args.profile_scenario} scenario",
        "",
        f"One `{args.profile_scenario}` run of {args.duration:g} s against a fresh pinedge, "
        "with `py-spy record "
        f"--rate {args.profile_rate} --format raw --nonblocking` on the worker and on the "
        f"supervisor (py-spy on CPU {LOAD_CPU}; Python frames only; samples of an idle "
        f"thread left out): {run.rps:,.0f} requests/s under the profiler (other processes "
        f"used {run.others:.0%} of the CPUs meanwhile). **Own time**: the "
        "samples in which the function was the innermost Python frame, lines merged; "
        "`Runner.run (asyncio/runners.py)` as innermost frame is time in the event loop's "
        "own code (uvloop, C) below any Python callback. py-spy counts a sample whenever "
        "the thread is not sleeping, waiting for the CPU included: with the supervisor "
        "and the worker on one core, time a process spends preempted by the other is in "
        "its samples. **Inclusive**: the samples in "
        "which a function of pinedge (`edge/`, `core/`) was anywhere on the stack. Files: "
        + ", ".join(f"`{path}`" for path in prof.files.values())
        + ".",
        "",
    )
    for role in ("worker", "supervisor"):
        total = prof.samples[role]
        cpu = run.cpu.get(role, 0.0)

        def share(count: int, total: int = total) -> str:
            return fpct(count / total if total else float("nan"))

        report.add(
            f"**{role}**: {total:,} samples; {cpu:.1f} CPU s in the wrk run "
            f"({cpu / run.seconds:.0%} of a core)",
            "",
        )
        rows = [
            [str(i), f"`{name}`", f"{count:,}", share(count)]
            for i, (name, count) in enumerate(prof.top[role][: args.profile_top], 1)
        ]
        report.table("# | own time: function (file) | samples | share", rows, "llrr")
        rows = [
            [str(i), f"`{name}`", f"{count:,}", share(count)]
            for i, (name, count) in enumerate(prof.inclusive[role][: args.profile_top], 1)
        ]
        report.table("# | inclusive: pinedge function (file) | samples | share", rows, "llrr")


def targets(report: Report, results: dict) -> None:
    lines = ["## Targets (issue 14), from the medians", ""]
    pairs = results.get("pairs", {})
    if "mix" in pairs:
        r = median(p.ratio for p in pairs["mix"])
        lines.append(
            f"- mix req/s pinedge/nginx {fx(r)}, target ≥ {MIX_TARGET:.1f}x: "
            f"{verdict(r >= MIX_TARGET)}"
        )
    if "miss" in pairs:
        r = median(p.ratio for p in pairs["miss"])
        lines.append(
            f"- misses/s pinedge/nginx {fx(r)}, target ≥ {MISS_TARGET:.1f}x: "
            f"{verdict(r >= MISS_TARGET)}"
        )
    mem = results.get("memory", {}).get("pinedge")
    if mem is not None:
        r = mem.real / mem.accounted if mem.accounted else float("nan")
        lines.append(
            f"- pinedge store real/accounted, 1 KiB objects, {fx(r)}, target ≤ "
            f"{STORE_TARGET:.2f}x: {verdict(r <= STORE_TARGET)}"
        )
        g = mem.growth("supervisor")
        lines.append(
            f"- pinedge owner (supervisor) RSS growth {f0(g)} bytes per indexed object, "
            f"target ≤ {OWNER_TARGET}: {verdict(g <= OWNER_TARGET)}"
        )
    if len(lines) > 2:  # no scenario with a target ran: no heading either
        report.add(*lines, "")


def header(report: Report, args: argparse.Namespace, lab: Lab) -> None:
    report.add(
        "# Miss path and store at scale: pinedge next to nginx proxy_cache",
        "",
        f"{run_line('misspath.py')}: pinedge at {code_state()}, nginx "
        f"{nginx_version(lab.nginx)}, wrk {wrk_version(lab.wrk)}; {os.cpu_count()} CPUs, "
        f"proxies on CPU {SERVER_CPU}, wrk (-t{args.threads} -c{args.connections}) and the "
        f"origin on CPU {LOAD_CPU}."
        + (" Requests carry a browser's fields (`--browser`)." if args.browser else "")
        + (" **`--quick`: a smoke run, its numbers are not a result.**" if args.quick else ""),
        "",
        f"The machine at the start: {neighbours()}.",
        "",
        "Origin: nginx, one worker, one file of random bytes per size, `Cache-Control: "
        "public, max-age=3600`, any path under `/o/1k/`, `/t/KB/`, `/p/KB/`. nginx "
        "`proxy_cache`: one worker, `keys_zone` 256 MB, cache on /dev/shm, `max_size=2g`, "
        "`proxy_cache_valid 200 1h`, HTTP/1.1 with upstream keepalive, `access_log off`. "
        f"pinedge: `edge --workers 1 --cache-mem {args.cache_mem}` (a supervisor owning the "
        "store, one worker). One proxy runs at a time, started fresh for every wrk run; "
        "rounds alternate which goes first; a ratio is pinedge/nginx within a round and "
        "the median ratio is the median of those. Before each wrk run the script waits up "
        f"to {args.quiet_wait:g} s for a second in which processes it did not start use "
        f"under {QUIET_SHARE:.0%} of the CPUs; a round during which they used more than "
        f"{args.others_limit:.0%} is measured again, up to {args.attempts} times in all, "
        "and the attempt they disturbed least is kept.",
        "",
    )


def nginx_version(nginx: str) -> str:
    done = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
    found = re.search(r"nginx/(\S+)", done.stderr + done.stdout)
    return found.group(1) if found else "?"


# ---------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--rounds", type=int, help="rounds per scenario (3; --quick 1)")
    add("--duration", type=float, help="seconds per wrk run (10; --quick 3)")
    add("--connections", type=int, default=50, help="wrk connections (50)")
    add("--threads", type=int, default=1, help="wrk threads (1)")
    add("--scenarios", default=",".join(SCENARIOS), help="of miss,mix,zipf,memory (all)")
    add("--fill", type=int, help="objects stored in the memory scenario (70000; --quick 5000)")
    add("--miss-share", type=float, default=0.05, help="share of new URLs in mix (0.05)")
    add(
        "--browser",
        action="store_true",
        help="requests carry a browser's fields for an image (harness/wrk.py), not Host alone",
    )
    add("--zipf-s", type=float, default=0.9, help="Zipf exponent (0.9)")
    add("--zipf-urls", type=int, default=1_000_000, help="URLs of the Zipf scenario (1000000)")
    add("--zipf-duration", type=float, help="seconds per zipf run (30; --quick 3)")
    add("--cache-mem", default="2GiB", help="pinedge --cache-mem (2GiB)")
    add("--pause", type=float, default=1.0, help="seconds of quiet before each wrk run (1)")
    add(
        "--attempts",
        type=int,
        help="measure a round again while other processes use over --others-limit of the "
        "CPUs during it, up to this many times in all (3; --quick 1)",
    )
    add(
        "--others-limit",
        type=float,
        default=0.2,
        help="share of the CPUs other processes may use during a round (0.2)",
    )
    add(
        "--quiet-wait",
        type=float,
        help="before each wrk run, wait up to S s for a second in which processes not ours "
        "use under 10%% of the CPUs (60; --quick 0)",
    )
    add("--profile", metavar="DIR", help="also a pinedge miss run under py-spy, files in DIR")
    add(
        "--profile-scenario",
        choices=("miss", "mix"),
        default="miss",
        help="the scenario run under the profiler (miss)",
    )
    add("--profile-rate", type=int, default=200, help="py-spy samples per second (200)")
    add("--profile-top", type=int, default=15, help="functions listed per process (15)")
    add("--py-spy", metavar="PATH", help="py-spy to use (default: the venv's, or on PATH)")
    add("--quick", action="store_true", help="smoke run: 1 round of 3 s, fill 5000")
    add("--md", metavar="FILE", help="also write the report to FILE")
    add("--json", metavar="FILE", help="every number as JSON to FILE")
    add("--keep", action="store_true", help="keep the temp dir (configs, logs, Lua scripts)")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (3 if args.quick else 10)
    args.zipf_duration = args.zipf_duration or (3 if args.quick else 30)
    args.fill = args.fill or (5000 if args.quick else 70_000)
    args.attempts = max(1, args.attempts or (1 if args.quick else 3))
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.quick else 60.0
    args.scenario_list = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(args.scenario_list) - set(SCENARIOS)
    if unknown:
        parser.error(f"--scenarios: unknown {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report()
    results: dict = {}

    def body(tmp: Path) -> None:
        shm_base = Path("/dev/shm") if Path("/dev/shm").is_dir() else tmp
        # nginx's caches go to a directory of our own there: tmpfs, as pinedge's store
        shm = Path(tempfile.mkdtemp(prefix="misspath-nginx-", dir=shm_base))
        try:
            lab = Lab(args, tmp, shm)
            header(report, args, lab)
            lab.start_origin()
            pairs: dict[str, list[Pair]] = {}
            results["pairs"] = pairs
            for name in args.scenario_list:
                if name == "memory":
                    results["memory"] = {k: memory_scenario(lab, k) for k in PROXIES}
                    memory_section(report, args, results["memory"])
                    continue
                pairs[name] = scenario_rounds(lab, name)
                {"miss": miss_section, "mix": mix_section, "zipf": zipf_section}[name](
                    report, args, pairs[name]
                )
            if args.profile:
                results["profile"] = profile(lab, Path(args.profile))
                profile_section(report, args, results["profile"])
            targets(report, results)
            report.add(f"The machine at the end: {neighbours()}.")
        finally:
            Server.stop_all()
            shutil.rmtree(shm, ignore_errors=True)

    def as_json() -> dict:
        out: dict = {"args": vars(args)}
        for name, pairs in results.get("pairs", {}).items():
            out[name] = [
                {
                    "first": p.first,
                    "attempts": p.attempts,
                    "set_aside_others": p.set_aside,
                    **{k: asdict(r) for k, r in p.runs.items()},
                }
                for p in pairs
            ]
        if "memory" in results:
            out["memory"] = {k: asdict(m) for k, m in results["memory"].items()}
        if "profile" in results:
            out["profile"] = asdict(results["profile"])
        return out

    return session.run(
        body,
        prefix="pinedge-misspath-",
        keep=args.keep,
        report=report,
        md=args.md,
        json_path=args.json,
        results=as_json,
    )


if __name__ == "__main__":
    sys.exit(main())
