"""Purge by tag: how long it takes on a full node, and what it does to the hit path.

    .venv/bin/python bench/purge.py [--quick] [--objects 100000] [--index-objects 1000000]
                                    [--rounds 3] [--duration 10] [--no-varnish]
                                    [--md bench/PURGE.md] [--json FILE]

Two parts, one per purge target; the results of a full run are in bench/PURGE.md:

1. **tag**: a node (`--workers 2`) holds `--objects` objects, all tagged `big`; per
   round, `POST /purge {"tags": ["big"]}` is timed (the node's `took_ms` and the
   client's wall time), checked (purged objects are misses), the objects are
   fetched again, then the same for a soft purge. The same against Varnish 7 with
   vmod xkey, when it is installed.
2. **hitpath**: a fresh node holds `--index-objects` objects; wrk on one cached URL,
   with no purge running and while one `g{k}` tag (1/1000 of the objects) after
   another is purged, rounds alternating.

The origin is this script (`--serve-origin PORT`, aiohttp); the store is filled
through the edge by wrk walking the ids with a Lua script. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import mmap
import os
import platform
import random
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from harness import session
from harness.errors import BenchError
from harness.machine import (
    QUIET_SHARE,
    TICK,
    CpuSample,
    code_state,
    neighbours,
    others_share,
    wait_for_quiet,
)
from harness.report import Report, note, run_line
from harness.servers import (
    Edge,
    Server,
    cache_status,
    free_ports,
    http_get,
    metric,
    pinedge_env,
    start_edge,
    start_script_origin,
    wait_http,
)
from harness.stats import median, spread, verdict
from harness.wrk import TAIL_LUA, WrkResult, parse_wrk, run_wrk, tail_us, wrk_version

WRK = "/usr/bin/wrk"
VARNISHD = "/usr/sbin/varnishd"
VARNISHSTAT = "/usr/bin/varnishstat"
TOKEN = "purge-bench-token"
NAME = "pinedge-bench"

BIG = 100_000  # objects 0 .. BIG-1 carry the tag `big`
GROUPS = 1000  # object i carries the tag g{i % GROUPS}
HOT_ID = 5  # the URL wrk hammers in part 2; its group is never purged

TAG_TARGET_MS = 100.0
FILL_CONNECTIONS = 64
SAMPLE = 50  # purged URLs fetched to check that a purge took effect


# ---------------------------------------------------------------------------- the origin


def serve_origin(port: int, body_size: int) -> None:
    """`GET /o/{i}`: a small body, cacheable for a day, tagged `o{i} g{i % 1000}` and
    `big` below 100,000. `/fill-done` (204, not stored) is what the fill asks once
    every id is asked; `/_count` says how many `/o/` requests came."""
    import asyncio

    from aiohttp import web

    count = 0
    nostore = {"Cache-Control": "no-store"}

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        nonlocal count
        path = request.path
        if path.startswith("/o/") and path[3:].isdigit():
            count += 1
            i = int(path[3:])
            keys = f"o{i} g{i % GROUPS}" + (" big" if i < BIG else "")
            headers = {
                "Cache-Control": "max-age=86400",
                "Surrogate-Key": keys,
                "Content-Type": "application/octet-stream",
            }
            return web.Response(body=f"{i}:".encode().ljust(body_size, b"x"), headers=headers)
        if path == "/fill-done":
            return web.Response(status=204, headers=nostore)
        if path == "/_count":
            return web.Response(text=str(count), headers=nostore)
        return web.Response(status=404, headers=nostore)

    async def main() -> None:
        server = web.Server(handle, access_log=None)
        await asyncio.get_running_loop().create_server(server, "127.0.0.1", port, backlog=1024)
        await asyncio.Event().wait()

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())


def origin_count(port: int) -> int:
    _, _, body = http_get(port, "/_count")
    return int(body)


# ---------------------------------------------------------------------------- output


def ms(value: float) -> str:
    if value != value:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 1000 else f"{value:,.0f}"


def fmt_us(us: float | None) -> str:
    if us is None or us != us:
        return "-"
    return f"{us:.0f} µs" if us < 1000 else f"{us / 1000:.2f} ms"


# ---------------------------------------------------------------------------- the machine


NODE_IDLE_SHARE = 0.05  # of one CPU: the node's processes together, for "at rest"


def wait_for_node_idle(node: Edge, limit: float) -> float:
    """Before a measurement: wait, up to `limit` seconds, for a one-second window in
    which the node's own processes used under NODE_IDLE_SHARE of one CPU, so that no
    run starts while the node still works off the previous one (the refill after a
    purging run: index, eviction, garbage collection); the seconds waited."""
    started = time.monotonic()
    while True:
        before, at = node.cpu_ticks(), time.monotonic()
        time.sleep(1.0)
        after, span = node.cpu_ticks(), time.monotonic() - at
        used = (sum(after) - sum(before)) / TICK / span
        waited = time.monotonic() - started
        if used < NODE_IDLE_SHARE or waited >= limit:
            if used >= NODE_IDLE_SHARE:
                note(f"the node still uses {used:.0%} of a CPU after {waited:.0f} s; measuring")
            return waited - 1.0


def idle_memory_probe(idle: float = 30.0, pages: int = 2000) -> dict[str, float]:
    """Microseconds to write one byte to each of `pages` random pages of 256 MiB that was
    all written just before (key "hot"), and again after `idle` s untouched ("idle")."""
    size = 256 << 20
    memory = mmap.mmap(-1, size)
    count = size // mmap.PAGESIZE
    found = {}
    try:
        for label, wait in (("hot", 0.1), ("idle", idle)):
            for offset in range(0, size, mmap.PAGESIZE):
                memory[offset] = 1
            time.sleep(wait)
            sample = random.sample(range(count), pages)
            started = time.perf_counter()
            for page in sample:
                memory[page * mmap.PAGESIZE] = 2
            found[label] = (time.perf_counter() - started) / pages * 1e6
    finally:
        memory.close()
    return found


def idle_memory_line(when: str, probe: dict[str, float], idle: float = 30.0) -> str:
    return (
        f"Memory left alone, {when}: writing one byte to each of 2,000 random pages of a "
        f"256 MiB mapping took {probe['hot']:.1f} µs a page right after the mapping was "
        f"written, {probe['idle']:.1f} µs a page after {idle:g} s untouched"
        + (
            f" ({probe['idle'] / probe['hot']:.0f}x). On this machine memory a process has "
            "not touched for a while is slow to reach again (reclaimed outside the VM, it "
            "seems: there is no swap inside it), so a "
            "purge that comes alone and touches a few scattered pages per purged object "
            "(index entries, generation counters) costs far more than the same purge among "
            "many."
            if probe["idle"] > 3 * probe["hot"]
            else "."
        )
    )


# ---------------------------------------------------------------------------- processes


def start_origin(tmp: Path, body_size: int) -> tuple[Server, int]:
    return start_script_origin(
        tmp, "origin", __file__, ["--body-size", str(body_size)], "/_count", timeout=30
    )


def start_node(tmp: Path, origin_port: int, cache_mem: str, tag: str) -> Edge:
    """A node with two workers and an admin token, as both parts use."""
    env = pinedge_env(PINEDGE_ADMIN_TOKEN=TOKEN)
    return start_edge(
        tmp, f"edge-{tag}", origin_port, cache_mem=cache_mem, workers=2, name=NAME, env=env
    )


def stored(admin: int) -> int:
    return int(metric(admin, "pinedge_store_objects"))


def wait_stored(admin: int, want: int, timeout: float) -> tuple[int, float]:
    """Poll pinedge_store_objects until it is `want` (admits arrive just after the
    responses; purged entries are cleaned in the background); (last value, seconds)."""
    started = time.perf_counter()
    deadline = started + timeout
    while True:
        count = stored(admin)
        if count == want or time.perf_counter() > deadline:
            return count, time.perf_counter() - started
        time.sleep(0.02)


def wait_cleaned(admin: int, timeout: float) -> tuple[int, float]:
    """Poll pinedge_store_purged_pending until the node has removed every hard-purged
    object (it does so while the CPUs are idle); (objects left, seconds)."""
    started = time.perf_counter()
    deadline = started + timeout
    while True:
        left = int(metric(admin, "pinedge_store_purged_pending"))
        if left == 0 or time.perf_counter() > deadline:
            return left, time.perf_counter() - started
        time.sleep(0.02)


# ---------------------------------------------------------------------------- filling


FILL_LUA = """\
-- generated by bench/purge.py: GET /o/ID for every ID of the segments, once each
local segments = {SEGMENTS}
local total = {TOTAL}
local si, j, issued, started, said = 1, 0, 0, false, false
ok, bad, filler = 0, 0, 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function request()
  -- wrk calls request() once before the run to check the script: not an id
  if not started or issued >= total then
    started = true
    return wrk.format(nil, "/fill-done")
  end
  local s = segments[si]
  local id = s[1] + s[2] * j
  j = j + 1
  if j >= s[3] then
    si = si + 1
    j = 0
  end
  issued = issued + 1
  return wrk.format(nil, "/o/" .. id)
end

function response(status, headers, body)
  if status == 204 then
    filler = filler + 1
  elseif status == 200 then
    ok = ok + 1
  else
    bad = bad + 1
  end
  -- every id answered (or many fillers since: some were lost): the caller stops wrk
  if not said and (ok + bad >= total or filler > 20000) then
    said = true
    io.write("FILL-DONE\\n")
    io.stdout:flush()
  end
end

function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    io.write(string.format("FILL ok=%d bad=%d filler=%d\\n", t:get("ok"), t:get("bad"),
      t:get("filler")))
  end
end
"""

Segment = tuple[int, int, int]  # first id, step, count


@dataclass
class Fill:
    asked: int
    ok: int
    bad: int
    seconds: float
    errors: str = ""

    @property
    def rate(self) -> float:
        return self.asked / self.seconds if self.seconds else float("nan")


def fill(tmp: Path, port: int, segments: list[Segment]) -> Fill:
    """GET every id of `segments` once through the server on `port`: wrk, one thread,
    FILL_CONNECTIONS connections, stopping once every id has had a response."""
    total = sum(count for _, _, count in segments)
    lua = FILL_LUA.replace("{SEGMENTS}", lua_segments(segments)).replace("{TOTAL}", str(total))
    script = tmp / "fill.lua"
    script.write_text(lua)
    limit = int(60 + total / 200)  # wrk's -d: a ceiling; it is stopped once done
    argv = [WRK, "-t1", f"-c{FILL_CONNECTIONS}", f"-d{limit}s", "--timeout", "30s"]
    argv += ["-s", str(script), f"http://127.0.0.1:{port}"]
    out, seconds = run_until_done(argv)
    match = re.search(r"FILL ok=(\d+) bad=(\d+) filler=(\d+)", out)
    if not match:
        raise BenchError("fill: wrk output not understood:\n" + textwrap.indent(out, "  "))
    ok, bad = int(match.group(1)), int(match.group(2))
    errors = parse_wrk(out).errors if "Requests/sec" in out else ""
    return Fill(total, ok, bad, seconds, errors)


def run_until_done(argv: list[str]) -> tuple[str, float]:
    """Run the fill's wrk until its script prints FILL-DONE, then SIGINT it (wrk then
    prints its summary and the script's counts); its output and the seconds to done."""
    started = time.perf_counter()
    seconds = float("nan")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.strip() == "FILL-DONE":
                seconds = time.perf_counter() - started
                proc.send_signal(signal.SIGINT)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        err = proc.stderr.read() if proc.stderr else ""
        raise BenchError(f"fill: {shlex.join(argv)} failed ({proc.returncode}):\n{err}")
    if seconds != seconds:
        seconds = time.perf_counter() - started
    return "".join(lines), seconds


def lua_segments(segments: list[Segment]) -> str:
    return "{" + ", ".join(f"{{{a}, {b}, {c}}}" for a, b, c in segments) + "}"


def fill_checked(tmp: Path, node: Edge, segments: list[Segment], want: int, what: str) -> Fill:
    """Fill, then wait for the store to hold `want` objects (or say what it holds)."""
    result = fill(tmp, node.port, segments)
    count, _ = wait_stored(node.admin, want, timeout=30)
    note(
        f"{what}: {result.asked:,} GETs in {result.seconds:.1f} s ({result.rate:,.0f}/s), "
        f"{result.ok:,} answered 200, {result.bad} other; store holds {count:,} "
        f"(expected {want:,}){' ' + result.errors if result.errors else ''}"
    )
    if result.ok != result.asked:
        raise BenchError(f"{what}: only {result.ok:,} of {result.asked:,} GETs answered 200")
    return result


# ---------------------------------------------------------------------------- purging


@dataclass
class Purge:
    purged: int
    wall_ms: float  # at the client: request sent (connection already open) to body read
    took_ms: float = float("nan")  # inside the node, around the owner's purge call
    others: float = float("nan")  # CPU share of processes not ours around the purge
    attempt: int = 1  # earlier attempts were discarded: the machine was busy
    cleaned_ms: float = float("nan")  # hard: after the answer, until the deferred clean-up ended
    freed: int = 0  # Varnish: bytes its storage released by then


class Purger:
    """POST /purge on one kept-alive connection to the node's admin listener."""

    def __init__(self, admin: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=60)
        self.conn.connect()

    def purge(self, tags: list[str], soft: bool = False) -> Purge:
        body = json.dumps({"tags": tags, "soft": soft})
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        started = time.perf_counter()
        self.conn.request("POST", "/purge", body=body, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        wall = (time.perf_counter() - started) * 1000
        if resp.status != 200:
            raise BenchError(f"POST /purge {body} -> {resp.status}: {data[:500]!r}")
        answer = json.loads(data)
        return Purge(answer["purged"], wall, answer["took_ms"])

    def close(self) -> None:
        self.conn.close()


def purge_once(admin: int, tags: list[str], soft: bool) -> Purge:
    purger = Purger(admin)
    try:
        return purger.purge(tags, soft)
    finally:
        purger.close()


def varnish_purge(port: int, tag: str, soft: bool) -> Purge:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.connect()
        headers = {"xkey-purge": tag, "xkey-soft": "1" if soft else "0"}
        started = time.perf_counter()
        conn.request("PURGE", "/", headers=headers)
        resp = conn.getresponse()
        resp.read()
        wall = (time.perf_counter() - started) * 1000
        if resp.status != 200:
            raise BenchError(f"varnish PURGE xkey {tag} -> {resp.status}")
        return Purge(int(resp.getheader("x-purged", "-1")), wall)
    finally:
        conn.close()


@dataclass
class Check:
    """What GETs of purged URLs answered, after a purge."""

    asked: int
    misses: int  # went to the origin: fwd=miss (hard) or fwd=stale (soft); Varnish MISS
    hits: int
    origin_fetches: int  # the origin's count of /o/ requests went up by this much


def check_pinedge(node: Edge, origin: int, ids: list[int], soft: bool) -> Check:
    want = "fwd=stale" if soft else "fwd=miss"
    before = origin_count(origin)
    misses = hits = 0
    for i in ids:
        _, headers, _ = http_get(node.port, f"/o/{i}")
        params = cache_status(headers)
        misses += want in params
        hits += "hit" in params
    time.sleep(0.2)
    return Check(len(ids), misses, hits, origin_count(origin) - before)


def check_varnish(port: int, origin: int, ids: list[int]) -> Check:
    before = origin_count(origin)
    misses = hits = 0
    for i in ids:
        _, headers, _ = http_get(port, f"/o/{i}")
        misses += headers.get("x-cache") == "MISS"
        hits += headers.get("x-cache") == "HIT"
    time.sleep(0.5)  # a soft-purged object is served stale and fetched in the background
    return Check(len(ids), misses, hits, origin_count(origin) - before)


# ---------------------------------------------------------------------------- varnish


VCL = """\
vcl 4.1;
import xkey;

backend origin {{
    .host = "127.0.0.1";
    .port = "{origin}";
}}

sub vcl_recv {{
    if (req.url == "/_ready") {{
        return (synth(200, "ready"));
    }}
    if (req.method == "PURGE") {{
        if (req.http.xkey-soft == "1") {{
            set req.http.x-purged = xkey.softpurge(req.http.xkey-purge);
        }} else {{
            set req.http.x-purged = xkey.purge(req.http.xkey-purge);
        }}
        return (synth(200, "purged"));
    }}
}}

sub vcl_backend_response {{
    if (beresp.http.Surrogate-Key) {{
        set beresp.http.xkey = beresp.http.Surrogate-Key;
    }}
}}

sub vcl_synth {{
    set resp.http.x-purged = req.http.x-purged;
    set resp.http.Cache-Control = "no-store";
}}

sub vcl_deliver {{
    if (obj.hits > 0) {{
        set resp.http.X-Cache = "HIT";
    }} else {{
        set resp.http.X-Cache = "MISS";
    }}
    unset resp.http.xkey;
}}
"""


def varnish_available(args: argparse.Namespace) -> str:
    """'' if varnishd and vmod xkey can be used, else why not (after trying apt-get as root)."""
    if args.varnish is False:
        return "not asked for (--no-varnish)"
    if not os.access(VARNISHD, os.X_OK) and os.geteuid() == 0:
        note("varnishd not found; apt-get install -y varnish varnish-modules")
        subprocess.run(
            ["apt-get", "install", "-y", "varnish", "varnish-modules"],
            capture_output=True,
            check=False,
            env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
        )
    if not os.access(VARNISHD, os.X_OK):
        return f"{VARNISHD} is not installed (`apt-get install varnish varnish-modules`)"
    if not list(Path("/usr/lib").glob("*/varnish/vmods/libvmod_xkey.so")):
        return "vmod xkey is not installed (Debian package varnish-modules)"
    return ""


def varnish_version() -> str:
    done = subprocess.run([VARNISHD, "-V"], capture_output=True, text=True, check=False)
    match = re.search(r"varnish-[\d.]+", done.stderr + done.stdout)
    return match.group(0) if match else "varnish (version unknown)"


@dataclass
class Varnish:
    server: Server
    port: int
    state: Path  # varnishd -n: where varnishstat finds its counters


def start_varnish(tmp: Path, origin_port: int, storage: str) -> Varnish:
    (port,) = free_ports(1)
    home = tmp / "varnish"
    home.mkdir()
    vcl = home / "bench.vcl"
    vcl.write_text(VCL.format(origin=origin_port))
    argv = [VARNISHD, "-F", "-j", "none", "-n", str(home / "state"), "-a", f"127.0.0.1:{port}"]
    argv += ["-f", str(vcl), "-s", f"malloc,{storage}", "-p", "thread_pool_min=100"]
    server = Server("varnish", argv, tmp).start()
    wait_http(server, port, "/_ready", timeout=60)
    return Varnish(server, port, home / "state")


def varnish_counters(state: Path) -> dict[str, int]:
    """MAIN.n_object (objects in the cache) and SMA.s0.g_bytes (bytes the malloc storage
    holds), from varnishstat."""
    argv = [VARNISHSTAT, "-n", str(state), "-1", "-f", "MAIN.n_object", "-f", "SMA.s0.g_bytes"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    return {m[0]: int(m[1]) for m in re.findall(r"^(\S+)\s+(\d+)", done.stdout, re.MULTILINE)}


def varnish_purge_and_clean(v: Varnish, tag: str) -> Purge:
    """Hard-purge `tag`, then wait until Varnish has let go of the purged objects:
    `xkey.purge()` marks them and answers; its expiry thread removes them from the
    cache afterwards, and their storage is freed when the last reference goes
    (MAIN.n_object falls by the purged count, polled every 20 ms)."""
    before = varnish_counters(v.state)
    result = varnish_purge(v.port, tag, soft=False)
    if "MAIN.n_object" not in before:
        note("varnishstat gave no MAIN.n_object: the clean-up after the purge is not timed")
        return result
    want = before["MAIN.n_object"] - result.purged
    started = time.perf_counter()
    deadline = started + 120
    now = before
    while time.perf_counter() < deadline:
        now = varnish_counters(v.state)
        if now.get("MAIN.n_object", want + 1) <= want:
            break
        time.sleep(0.02)
    else:
        note(f"varnish: {now.get('MAIN.n_object', 0) - want:,} purged objects still held")
    result.cleaned_ms = (time.perf_counter() - started) * 1000
    result.freed = before.get("SMA.s0.g_bytes", 0) - now.get("SMA.s0.g_bytes", 0)
    return result


# ---------------------------------------------------------------------------- part 1


@dataclass
class TagRound:
    hard: Purge
    hard_check: Check
    refill: Fill
    soft: Purge
    soft_check: Check
    soft_refill: Fill


@dataclass
class TagResult:
    objects: int
    tagged: int
    fill: Fill | None = None
    stored: int = 0
    rounds: list[TagRound] = field(default_factory=list)
    varnish: list[tuple[Purge, Check, Purge, Check]] = field(default_factory=list)
    varnish_fill: Fill | None = None
    varnish_note: str = ""
    code: str = ""
    rss: tuple[float, list[float]] = (float("nan"), [])


def quiet_purge(
    args: argparse.Namespace, purge: Callable[[], Purge], refill: Callable[[], object]
) -> Purge:
    """`purge()` on a quiet machine: after wait_for_quiet, and again (after `refill()`)
    if other processes took over QUIET_SHARE of the CPUs around it, up to --attempts."""
    for attempt in range(1, args.attempts + 1):
        wait_for_quiet(args.quiet_wait)
        start = CpuSample.now()
        result = purge()
        time.sleep(max(0.0, start.at + 0.5 - time.monotonic()))  # enough 10 ms ticks
        result.others, result.attempt = others_share(start, CpuSample.now()), attempt
        if result.others < QUIET_SHARE or attempt == args.attempts:
            return result
        note(f"others used {result.others:.0%} of the CPUs around the purge: again")
        refill()
    raise AssertionError("unreachable")


def purge_and_clean(admin: int, objects: int) -> Purge:
    """Hard-purge `big`, then wait until the node has removed the purged entries and
    files (in the background)."""
    result = purge_once(admin, ["big"], soft=False)
    left, seconds = wait_cleaned(admin, timeout=120)
    if left:
        note(f"after the hard purge {left:,} objects were still not removed after {seconds:.0f} s")
    result.cleaned_ms = seconds * 1000
    return result


def tag_round(
    tmp: Path, node: Edge, origin: int, args: argparse.Namespace, tagged: int
) -> TagRound:
    objects = args.objects
    ids = random.sample(range(tagged), min(SAMPLE, tagged))
    big = [(0, 1, tagged)]

    def refill() -> Fill:
        return fill_checked(tmp, node, big, objects, "refill")

    hard = quiet_purge(args, lambda: purge_and_clean(node.admin, objects), refill)
    hard_check = check_pinedge(node, origin, ids, soft=False)
    hard_refill = refill()
    soft = quiet_purge(args, lambda: purge_once(node.admin, ["big"], soft=True), refill)
    soft_check = check_pinedge(node, origin, ids, soft=True)
    return TagRound(hard, hard_check, hard_refill, soft, soft_check, refill())


def part_tag(
    report: Report, args: argparse.Namespace, tmp: Path, origin: int, results: dict
) -> TagResult:
    tagged = min(args.objects, BIG)
    result = TagResult(args.objects, tagged)
    node = start_node(tmp, origin, args.cache_mem, "tag")
    try:
        result.fill = fill_checked(tmp, node, [(0, 1, args.objects)], args.objects, "fill")
        result.stored, result.code, result.rss = stored(node.admin), node.code, node.rss_mib()
        for r in range(args.rounds):
            note(f"part 1, pinedge round {r + 1}/{args.rounds}")
            result.rounds.append(tag_round(tmp, node, origin, args, tagged))
            last = result.rounds[-1]
            note(
                f"hard: purged {last.hard.purged:,}, took_ms {last.hard.took_ms:.1f}, "
                f"wall {last.hard.wall_ms:.1f} ms; soft: took_ms {last.soft.took_ms:.1f}"
            )
    finally:
        node.server.stop()
    why = varnish_available(args)
    if why:
        result.varnish_note = why
    else:
        part_tag_varnish(tmp, args, origin, result)
    results["tag"] = asdict(result)
    report_tag(report, args, result)
    return result


def part_tag_varnish(tmp: Path, args: argparse.Namespace, origin: int, result: TagResult) -> None:
    try:
        varnish = start_varnish(tmp, origin, args.varnish_storage)
    except BenchError as exc:
        result.varnish_note = f"varnishd did not start: {exc}"
        return
    port = varnish.port
    try:
        big = [(0, 1, result.tagged)]
        result.varnish_fill = fill(tmp, port, [(0, 1, args.objects)])
        note(f"varnish fill: {result.varnish_fill.rate:,.0f}/s")
        for r in range(args.rounds):
            ids = random.sample(range(result.tagged), min(SAMPLE, result.tagged))

            def refill() -> None:
                fill(tmp, port, big)
                settle(origin)  # a soft-purged object is fetched again in the background

            hard = quiet_purge(args, partial(varnish_purge_and_clean, varnish, "big"), refill)
            hard_check = check_varnish(port, origin, ids)
            refill()
            soft = quiet_purge(args, partial(varnish_purge, port, "big", soft=True), refill)
            soft_check = check_varnish(port, origin, ids)
            refill()
            result.varnish.append((hard, hard_check, soft, soft_check))
            note(
                f"varnish round {r + 1}: hard {hard.wall_ms:.1f} ms (cleaned after "
                f"{hard.cleaned_ms:,.0f} ms), soft {soft.wall_ms:.1f} ms"
            )
    finally:
        varnish.server.stop()


def settle(origin: int, timeout: float = 60.0) -> None:
    """Until the origin's request count has not moved for half a second."""
    deadline = time.monotonic() + timeout
    last = origin_count(origin)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        count = origin_count(origin)
        if count == last:
            return
        last = count


def report_tag(report: Report, args: argparse.Namespace, result: TagResult) -> None:
    fill_line = "(no fill)"
    if result.fill is not None:
        f = result.fill
        fill_line = (
            f"Filled by {f.asked:,} GETs through the edge in {f.seconds:.1f} s "
            f"({f.rate:,.0f} objects/s, wrk -t1 -c{FILL_CONNECTIONS} walking the ids); "
            f"`pinedge_store_objects` after the fill: **{result.stored:,}**."
        )
    report.add(
        f"## 1. Purge by tag: one tag over {result.tagged:,} stored objects",
        "",
        f"A fresh `pinedge edge --workers 2 --cache-mem {args.cache_mem}` holding objects "
        f"`/o/0` .. `/o/{result.objects - 1}` ({args.body_size} B bodies), every one "
        f"tagged `big` by the origin's `Surrogate-Key`. {fill_line} "
        + node_line(result.code, result.rss),
        "",
        'Per round: `POST /purge {"tags": ["big"]}` on the admin port (connection '
        "already open); `took_ms` is the node's own figure (around the store owner's "
        "purge call), `wall` is the client's, request sent to answer read. `cleanup` is "
        "how long after the answer `pinedge_store_purged_pending` (polled every 20 ms) "
        "fell to 0: the background part, index entries and files, which the node does "
        "while the CPUs are idle. Then "
        f"{SAMPLE} random purged URLs are fetched: each must go to the origin "
        "(`fwd=miss` in Cache-Status). Then every tagged object is fetched again and the "
        'same tag is purged soft (`"soft": true`), checked the same way (`fwd=stale`: '
        "revalidated), and fetched again. `other CPU`: the share of the machine's CPUs "
        "used by processes this script did not start, from just before the purge to 0.5 s "
        f"after it; over {QUIET_SHARE:.0%}, the purge is done again after a refill (up to "
        f"{args.attempts} attempts; `*n`: the figure is from attempt n).",
        "",
    )
    rows = []
    for i, r in enumerate(result.rounds, 1):
        rows.append(
            [
                str(i),
                f"{r.hard.purged:,}",
                ms(r.hard.took_ms),
                ms(r.hard.wall_ms),
                f"{r.hard_check.misses}/{r.hard_check.asked} miss, {r.hard_check.hits} hit",
                f"{r.hard.cleaned_ms:,.0f} ms",
                f"{r.refill.rate:,.0f}/s",
                f"{r.soft.purged:,}",
                ms(r.soft.took_ms),
                ms(r.soft.wall_ms),
                f"{r.soft_check.misses}/{r.soft_check.asked} stale, {r.soft_check.hits} hit",
                f"{r.hard.others:.0%} / {r.soft.others:.0%}{retried(r.hard, r.soft)}",
            ]
        )
    rs = result.rounds
    rows.append(
        [
            "**median**",
            "",
            f"**{ms(median(r.hard.took_ms for r in rs))}**",
            f"**{ms(median(r.hard.wall_ms for r in rs))}**",
            "",
            f"{median(r.hard.cleaned_ms for r in rs):,.0f} ms",
            "",
            "",
            f"**{ms(median(r.soft.took_ms for r in rs))}**",
            f"**{ms(median(r.soft.wall_ms for r in rs))}**",
            "",
            "",
        ]
    )
    report.table(
        [
            "round",
            "hard purged",
            "hard took_ms",
            "hard wall ms",
            "after: GETs",
            "cleanup",
            "refetch",
            "soft purged",
            "soft took_ms",
            "soft wall ms",
            "after: GETs",
            "other CPU hard / soft",
        ],
        rows,
        "lrrrlrrrrrlr",
    )
    report_varnish(report, args, result)
    took = median(r.hard.took_ms for r in rs)
    wall = median(r.hard.wall_ms for r in rs)
    soft = median(r.soft.took_ms for r in rs)
    cleaned = median(r.hard.cleaned_ms for r in rs)
    report.add(
        f"Target: purge by a tag that covers {result.tagged:,} stored objects completes on a "
        f"node in ≤ {TAG_TARGET_MS:.0f} ms: hard {ms(took)} ms (node's took_ms, median of "
        f"{len(rs)}; client wall {ms(wall)} ms; then {cleaned / 1000:.1f} s of deferred "
        f"clean-up in the background), {verdict(took <= TAG_TARGET_MS)}. "
        f"Soft: {ms(soft)} ms, {verdict(soft <= TAG_TARGET_MS)}."
        + (
            ""
            if result.tagged >= BIG
            else f" **The tag covers {result.tagged:,}, not 100,000, objects: not the target.**"
        ),
        "",
    )


def node_line(code: str, rss: tuple[float, list[float]]) -> str:
    """Which code the node ran and what it held in memory after the fill."""
    workers = " and ".join(f"{w:,.0f}" for w in rss[1]) or "-"
    return (
        f"The node ran pinedge at {code}. Resident memory after the fill: the supervisor "
        f"(store owner, with the index) {rss[0]:,.0f} MiB, the workers {workers} MiB (a "
        "worker's figure includes the shared-memory pages of stored objects it has touched)."
    )


def retried(*purges: Purge) -> str:
    """` *2` and such for purges measured on a later attempt."""
    marks = [f"*{p.attempt}" if p.attempt > 1 else "" for p in purges]
    return f" ({' / '.join(m or '-' for m in marks)})" if any(marks) else ""


def report_varnish(report: Report, args: argparse.Namespace, result: TagResult) -> None:
    if result.varnish_note:
        report.add(f"**Varnish: not run: {result.varnish_note}.**", "")
        return
    vf = result.varnish_fill
    report.add(
        f"The same against **{varnish_version()}** with vmod xkey (varnish-modules), "
        f"`-s malloc,{args.varnish_storage}`, default thread pools (min 100): the VCL copies "
        "`Surrogate-Key` into `xkey` in `vcl_backend_response` and answers `PURGE` with "
        "header `xkey-purge: big` by `xkey.purge()` (hard) or `xkey.softpurge()` (soft), "
        "the count in a response header. Filled the same way"
        + (f" ({vf.asked:,} GETs at {vf.rate:,.0f}/s)" if vf else "")
        + ". Varnish has no node-side figure: its times are the client's wall time, measured "
        "as for pinedge. `cleanup`, as for pinedge, is the deferred part of a hard purge: "
        "`xkey.purge()` marks the objects and answers, Varnish's expiry thread then takes "
        "them out of the cache and their storage is freed when the last reference goes; "
        "it is how long after the answer `MAIN.n_object` (varnishstat, polled every 20 ms) "
        "had fallen by the purged count, and `freed` what `SMA.s0.g_bytes` had fallen by "
        "then. After the purge, the same check (`X-Cache` from `obj.hits`; a "
        "soft-purged object is served stale and fetched in the background, so it shows as a "
        "hit and the origin count is what proves it).",
        "",
    )
    rows = []
    for i, (hard, hcheck, soft, scheck) in enumerate(result.varnish, 1):
        rows.append(
            [
                str(i),
                f"{hard.purged:,}",
                ms(hard.wall_ms),
                f"{hard.cleaned_ms:,.0f} ms",
                f"{hard.freed / 2**20:,.1f} MiB",
                f"{hcheck.misses}/{hcheck.asked} miss, origin +{hcheck.origin_fetches}",
                f"{soft.purged:,}",
                ms(soft.wall_ms),
                f"{scheck.hits}/{scheck.asked} hit (stale), origin +{scheck.origin_fetches}",
                f"{hard.others:.0%} / {soft.others:.0%}{retried(hard, soft)}",
            ]
        )
    vh = median(h.wall_ms for h, _, _, _ in result.varnish)
    vs = median(s.wall_ms for _, _, s, _ in result.varnish)
    vc = median(h.cleaned_ms for h, _, _, _ in result.varnish)
    rows.append(
        ["**median**", "", f"**{ms(vh)}**", f"{vc:,.0f} ms", "", "", "", f"**{ms(vs)}**", "", ""]
    )
    report.table(
        [
            "round",
            "hard purged",
            "hard wall ms",
            "cleanup",
            "freed",
            "after",
            "soft purged",
            "soft wall ms",
            "after",
            "other CPU hard / soft",
        ],
        rows,
        "lrrrrlrrlr",
    )
    ph = median(r.hard.wall_ms for r in result.rounds)
    ps = median(r.soft.wall_ms for r in result.rounds)
    pc = median(r.hard.cleaned_ms for r in result.rounds)
    report.add(
        f"Client wall time, pinedge / Varnish (medians): hard {ms(ph)} / {ms(vh)} ms = "
        f"**{ph / vh:.2f}x**, soft {ms(ps)} / {ms(vs)} ms = **{ps / vs:.2f}x** "
        "(below 1: pinedge is faster). That is the answer only: both finish a hard purge "
        f"after answering. The deferred clean-up after the answer: pinedge {pc / 1000:.1f} s "
        "(until `pinedge_store_purged_pending` was 0: index entries and files removed, "
        f"which it does while the CPUs are idle), Varnish {vc / 1000:.1f} s (until "
        "`MAIN.n_object` had fallen by the purged count). Answer and clean-up together, "
        f"pinedge / Varnish: {(ph + pc) / 1000:.2f} / {(vh + vc) / 1000:.2f} s = "
        f"**{(ph + pc) / (vh + vc):.2f}x**.",
        "",
    )


# ---------------------------------------------------------------------------- part 2


@dataclass
class HitRun:
    kind: str  # "quiet" or "N purges/s"
    wrk: WrkResult
    purges: list[Purge] = field(default_factory=list)
    stored_before: int = 0
    rate: float | None = None  # purges/s (0: back to back); None: quiet
    round: int = 0
    stored_after: int = 0
    others: float = float("nan")  # CPU share used by processes not ours during the run
    attempt: int = 1  # earlier attempts were discarded: the machine was busy
    tail_us: dict[str, float] = field(default_factory=dict)  # "99.9", "max"
    supervisor_cpu: float = float("nan")  # share of one CPU over the run
    node_settled_s: float = 0.0  # waited before the run for the node to be at rest
    workers_cpu: float = float("nan")  # the workers', summed
    pending_after: int = 0  # hard-purged objects not yet removed when the run ended

    @property
    def p99(self) -> float:
        return self.wrk.latency_us.get("99", float("nan"))


class PurgeLoop(threading.Thread):
    """Purges one g{k} tag after another on the node until stopped, back to back
    (rate 0) or `rate` per second; never the hot URL's group."""

    def __init__(self, admin: int, tags: list[str], rate: float) -> None:
        super().__init__(daemon=True)
        self.purger = Purger(admin)
        self.tags = tags
        self.rate = rate
        self.done: list[Purge] = []
        self.used: list[str] = []
        self.error: BaseException | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        started = time.perf_counter()
        try:
            for n, tag in enumerate(self.tags):
                if self.halt.is_set():
                    break
                self.done.append(self.purger.purge([tag]))
                self.used.append(tag)
                if self.rate:
                    self.halt.wait(max(0.0, started + (n + 1) / self.rate - time.perf_counter()))
        except Exception as exc:  # reported by the caller
            self.error = exc
        finally:
            self.purger.close()


def tag_order() -> list[str]:
    """Every group's tag but the hot URL's, in a fixed shuffled order."""
    groups = [k for k in range(GROUPS) if k != HOT_ID % GROUPS]
    random.Random(5).shuffle(groups)
    return [f"g{k}" for k in groups]


def rate_label(rate: float | None) -> str:
    if rate is None:
        return "quiet"
    if rate == 0:
        return "back to back"
    return f"{rate:g} purge{'' if rate == 1 else 's'}/s"


def hit_run(
    tmp: Path, node: Edge, args: argparse.Namespace, rate: float | None, tags: list[str]
) -> tuple[HitRun, list[str]]:
    """One wrk run on the hot URL; with the purge loop over `tags` at `rate` unless
    `rate` is None."""
    wait_for_quiet(args.quiet_wait)
    settled = wait_for_node_idle(node, args.quiet_wait)
    time.sleep(args.pause)
    before = stored(node.admin)
    loop = PurgeLoop(node.admin, tags, rate) if rate is not None else None
    start, node_start = CpuSample.now(), node.cpu_ticks()
    if loop is not None:
        loop.start()
    try:
        script = tmp / "tail.lua"
        script.write_text(TAIL_LUA)
        result, out = run_wrk(
            WRK,
            f"http://127.0.0.1:{node.port}/o/{HOT_ID}",
            connections=args.connections,
            duration=args.duration,
            script=script,
        )
        tails = tail_us(out)
    finally:
        if loop is not None:
            loop.halt.set()
            loop.join(60)
    end, node_end = CpuSample.now(), node.cpu_ticks()
    if loop is not None and loop.error is not None:
        raise BenchError(f"purge loop: {loop.error!r}")
    run = HitRun(rate_label(rate), result, loop.done if loop else [], before, rate=rate)
    run.node_settled_s = settled
    run.others, run.tail_us = others_share(start, end), tails
    span = (end.at - start.at) * TICK
    run.supervisor_cpu = (node_end[0] - node_start[0]) / span
    run.workers_cpu = (node_end[1] - node_start[1]) / span
    run.stored_after = stored(node.admin)
    run.pending_after = int(metric(node.admin, "pinedge_store_purged_pending"))
    return run, loop.used if loop else []


def hot_is_hit(node: Edge) -> bool:
    """Every one of 8 GETs of the hot URL, each on a new connection, is a hit."""
    return all("hit" in cache_status(http_get(node.port, f"/o/{HOT_ID}")[1]) for _ in range(8))


@dataclass
class HitResult:
    objects: int
    fill: Fill | None = None
    stored: int = 0
    runs: list[HitRun] = field(default_factory=list)
    refills: list[Fill] = field(default_factory=list)
    hot_misses: int = 0  # checks after a run where the hot URL was not a hit
    code: str = ""
    rss: tuple[float, list[float]] = (float("nan"), [])


class HitBench:
    """Part 2's node and the tags not purged lately (the next ones to purge)."""

    def __init__(self, tmp: Path, node: Edge, args: argparse.Namespace, result: HitResult):
        self.tmp, self.node, self.args, self.result = tmp, node, args, result
        self.pending = tag_order()

    def run(self, index: int, rate: float | None) -> HitRun:
        """One run, done again (up to --attempts) while other processes were busy."""
        for attempt in range(1, self.args.attempts + 1):
            run, used = hit_run(self.tmp, self.node, self.args, rate, self.pending)
            run.round, run.attempt = index, attempt
            self.result.hot_misses += not hot_is_hit(self.node)
            if used:
                n = self.result.objects
                self.result.refills.append(refill_groups(self.tmp, self.node, used, n))
                self.pending = self.pending[len(used) :] + used
            if run.others < QUIET_SHARE or attempt == self.args.attempts:
                return run
            note(f"others used {run.others:.0%} of the CPUs during the run: again")
        raise AssertionError("unreachable")


def part_hitpath(
    report: Report, args: argparse.Namespace, tmp: Path, origin: int, results: dict
) -> HitResult:
    n = args.index_objects
    result = HitResult(n)
    node = start_node(tmp, origin, args.index_cache_mem, "index")
    try:
        result.fill = fill_checked(tmp, node, [(0, 1, n)], n, "fill")
        result.stored, result.code, result.rss = stored(node.admin), node.code, node.rss_mib()
        for _ in range(3):
            http_get(node.port, f"/o/{HOT_ID}")
        if not hot_is_hit(node):
            raise BenchError(f"/o/{HOT_ID} is not a hit after the fill")
        bench = HitBench(tmp, node, args, result)
        kinds: list[float | None] = [None, *args.rates]
        for r in range(args.rounds):
            for rate in kinds[r % len(kinds) :] + kinds[: r % len(kinds)]:
                note(f"part 2 round {r + 1}/{args.rounds}: {rate_label(rate)}")
                run = bench.run(r + 1, rate)
                result.runs.append(run)
                note(
                    f"{run.kind}: {run.wrk.rps:,.0f} req/s, p99 {fmt_us(run.p99)}, "
                    f"{len(run.purges)} purges"
                )
    finally:
        node.server.stop()
    results["hitpath"] = asdict(result)
    report_hitpath(report, args, result)
    return result


def refill_groups(tmp: Path, node: Edge, tags: list[str], objects: int) -> Fill:
    """Fetch again every object of the purged groups, so each run starts on a full index."""
    wait_cleaned(node.admin, timeout=120)
    per_group = objects // GROUPS
    segments = [(int(tag[1:]), GROUPS, per_group) for tag in tags]
    return fill_checked(tmp, node, segments, objects, f"refill of {len(tags)} purged groups")


def report_hitpath(report: Report, args: argparse.Namespace, result: HitResult) -> None:
    per_group = result.objects // GROUPS
    f = result.fill
    rates = " and ".join(rate_label(rate) for rate in args.rates)
    report.add(
        f"## 2. The hit path while tags are purged among {result.objects:,} objects",
        "",
        f"A fresh `pinedge edge --workers 2 --cache-mem {args.index_cache_mem}` holding "
        f"`/o/0` .. `/o/{result.objects - 1}`, filled by "
        + (f"{f.asked:,} GETs in {f.seconds:.0f} s ({f.rate:,.0f}/s)" if f else "(no fill)")
        + f"; `pinedge_store_objects` after the fill: **{result.stored:,}**. "
        f"Each run is `wrk -t1 -c{args.connections} -d{args.duration}s --latency` on one "
        f"cached URL, `/o/{HOT_ID}` ({args.body_size} B body, a hit in both workers), after "
        f"{args.pause:g} s of quiet. **quiet**: nothing else runs. **N purges/s**: meanwhile "
        f"a thread of this script purges tags `g{{k}}` ({per_group:,} objects each) one "
        f"after another at that rate ({rates}), hard, on one kept-alive admin connection; "
        f"the hot URL's group (`g{HOT_ID % GROUPS}`) is never purged. After a purging run the "
        "purged groups are fetched again, so every run starts with the whole index. Each "
        "round runs every kind once, the order rotating from round to round. "
        + node_line(result.code, result.rss),
        "",
    )
    report.table(
        ["round", "run", "req/s", "p50", "p99", "p99.9", "max", "other CPU", "wrk errors"],
        [hit_row(run) for run in result.runs],
        "llrrrrrrl",
    )
    report.add(
        "What the node did meanwhile: `took_ms` per purge (the node's own figure), the "
        "client's wall time per purge, `owner busy purging` (the sum of took_ms over the "
        "run's length; the background clean-up is not in it), and the CPU time the node's "
        "processes used over the run, as a share of one CPU: the supervisor (store owner, "
        "admin listener, purges and their clean-up) and the two workers (the hit path); "
        "`left to clean up`: hard-purged objects whose index entries and files the node "
        "had not removed yet when wrk stopped (it removes them while the CPUs are idle, "
        "a few per 0.2 s otherwise, or at once when their space is needed); `node busy "
        "before`: how long the script waited, before the run, for a second in which the "
        f"node's processes used under {NODE_IDLE_SHARE:.0%} of a CPU (work left over from "
        "the refill after the previous purging run).",
        "",
    )
    report.table(
        [
            "round",
            "run",
            "indexed at start",
            "purges",
            "objects purged",
            "took_ms median / max",
            "purge wall ms median",
            "owner busy purging",
            "supervisor CPU",
            "workers CPU",
            "left to clean up at the end",
            "node busy before",
        ],
        [work_row(run, args) for run in result.runs],
        "llrrrrrrrrrr",
    )
    report_hitpath_verdict(report, args, result)


def hit_row(run: HitRun) -> list[str]:
    return [
        str(run.round),
        run.kind,
        f"{run.wrk.rps:,.0f}",
        fmt_us(run.wrk.latency_us.get("50")),
        fmt_us(run.p99),
        fmt_us(run.tail_us.get("99.9")),
        fmt_us(run.tail_us.get("max")),
        f"{run.others:.0%}" + (f" (*{run.attempt})" if run.attempt > 1 else ""),
        run.wrk.errors or "",
    ]


def work_row(run: HitRun, args: argparse.Namespace) -> list[str]:
    took = [p.took_ms for p in run.purges]
    return [
        str(run.round),
        run.kind,
        f"{run.stored_before:,}",
        str(len(took)) if took else "-",
        f"{sum(p.purged for p in run.purges):,}" if took else "-",
        f"{ms(median(took))} / {ms(max(took))}" if took else "-",
        ms(median(p.wall_ms for p in run.purges)) if took else "-",
        f"{sum(took) / (args.duration * 10):.1f}%" if took else "-",
        f"{run.supervisor_cpu:.0%}",
        f"{run.workers_cpu:.0%}",
        f"{run.pending_after:,}" if took else "-",
        f"{run.node_settled_s:.0f} s",
    ]


@dataclass
class Versus:
    """One purge rate's runs against the quiet ones."""

    label: str
    rps: float  # median req/s while purging / quiet median
    p99: float  # the same for p99
    rps_band: tuple[float, float]  # the quiet runs' spread, as fractions of their median
    p99_band: tuple[float, float]

    @property
    def inside(self) -> bool:
        """Within the quiet runs' noise (or better than their median) on both counts."""
        rps_ok = self.rps >= 1 or self.rps_band[0] <= self.rps <= self.rps_band[1]
        p99_ok = self.p99 <= 1 or self.p99_band[0] <= self.p99 <= self.p99_band[1]
        return rps_ok and p99_ok


def versus(result: HitResult, rate: float) -> Versus:
    quiet = [r for r in result.runs if r.rate is None]
    busy = [r for r in result.runs if r.rate == rate]
    q_rps, q_p99 = median(r.wrk.rps for r in quiet), median(r.p99 for r in quiet)
    return Versus(
        rate_label(rate),
        median(r.wrk.rps for r in busy) / q_rps,
        median(r.p99 for r in busy) / q_p99,
        spread([r.wrk.rps for r in quiet]),
        spread([r.p99 for r in quiet]),
    )


def cpu_line(result: HitResult, args: argparse.Namespace) -> str:
    """Where the CPU went, quiet against each purge rate (medians of the runs)."""
    workers: dict[float | None, float] = {}
    parts = []
    for rate in [None, *args.rates]:
        runs = [r for r in result.runs if r.rate == rate]
        workers[rate] = median(r.workers_cpu for r in runs)
        parts.append(
            f"{rate_label(rate)}: workers {workers[rate]:.0%}, "
            f"supervisor {median(r.supervisor_cpu for r in runs):.0%}"
        )
    dropped = any(workers[rate] < workers[None] - 0.02 for rate in args.rates)
    return (
        "CPU of the node's processes, as a share of one CPU (medians): "
        + "; ".join(parts)
        + (
            ". The workers (the hit path) got less CPU while tags were purged: with wrk and "
            "the workers already using both CPUs, what the supervisor took for the purges "
            "and their clean-up came out of theirs."
            if dropped
            else ". The workers' CPU did not drop while tags were purged."
        )
    )


def report_hitpath_verdict(report: Report, args: argparse.Namespace, result: HitResult) -> None:
    quiet = [r for r in result.runs if r.rate is None]
    rows = [
        [
            "quiet",
            f"{median(r.wrk.rps for r in quiet):,.0f}",
            "",
            fmt_us(median(r.p99 for r in quiet)),
            "",
            "",
        ]
    ]
    found = [versus(result, rate) for rate in args.rates]
    for v in found:
        busy = [r for r in result.runs if r.kind == v.label]
        rows.append(
            [
                v.label,
                f"{median(r.wrk.rps for r in busy):,.0f}",
                f"{v.rps:.3f}x",
                fmt_us(median(r.p99 for r in busy)),
                f"{v.p99:.3f}x",
                "yes" if v.inside else "**no**",
            ]
        )
    report.table(
        ["run (medians)", "req/s", "of quiet", "p99", "of quiet", "within the quiet noise"],
        rows,
        "lrrrrl",
    )
    lo, hi = found[0].rps_band if found else (float("nan"), float("nan"))
    p_lo, p_hi = found[0].p99_band if found else (float("nan"), float("nan"))
    refills = ", ".join(f"{f.asked:,} at {f.rate:,.0f}/s" for f in result.refills)
    report.add(
        f"The quiet runs' spread (slowest and fastest as a fraction of their median): req/s "
        f"{lo:.3f}x – {hi:.3f}x, p99 {p_lo:.3f}x – {p_hi:.3f}x. A purging median inside it, "
        "or better than the quiet median, is within the run-to-run noise: not measurable. "
        "p99.9 and max come from wrk's own histogram (a `done()` script). `other CPU` is the "
        "share of the machine's CPUs used during the run by processes this script did not "
        "start (/proc/stat less our processes): another tenant or benchmark at work; over "
        f"{QUIET_SHARE:.0%}, the run was done again (up to {args.attempts} attempts; `*n`: "
        "the figures are from attempt n). "
        + (f"Refills after the purging runs: {refills}. " if refills else "")
        + (
            f"**The hot URL was not a hit on {result.hot_misses} check(s) after a run.**"
            if result.hot_misses
            else "The hot URL was still a hit (8 of 8 GETs, new connections) after every run."
        ),
        "",
    )
    report.add(cpu_line(result, args), "")
    scale = "" if result.objects >= 1_000_000 else f" (among {result.objects:,}, not 1,000,000)"
    for v in found:
        judged = (
            verdict(v.inside)
            if len(quiet) > 1
            else "no verdict (one quiet run has no spread to compare with)"
        )
        rate = next(r.rate for r in result.runs if r.kind == v.label)
        if rate is not None and 0 < rate <= 1:
            report.add(
                f"Target: purging one tag among 1,000,000 indexed objects does not slow the "
                f"hit path measurably while it runs{scale}; one tag at a time, {v.label}: "
                f"req/s {v.rps:.3f}x and p99 {v.p99:.3f}x of the quiet runs', {judged}.",
                "",
            )
        else:
            storm = "" if not rate else f" ({rate * (result.objects // GROUPS):,.0f} objects/s)"
            report.add(
                f"Beyond the target, a purge storm, {v.label}{storm}: req/s {v.rps:.3f}x and "
                f"p99 {v.p99:.3f}x of the quiet runs', "
                + (
                    "no verdict (one quiet run)."
                    if len(quiet) < 2
                    else "within the quiet noise."
                    if v.inside
                    else "**measurably slower**."
                )
                + " On a machine whose CPUs are already full, what the supervisor spends on "
                "the purge requests and the purges comes out of the workers' share (see the "
                "CPU line).",
                "",
            )


# ---------------------------------------------------------------------------- main


def versions() -> str:
    import aiohttp

    return (
        f"Python {platform.python_version()}, aiohttp {aiohttp.__version__}, pinedge at "
        f"{code_state()}, wrk {wrk_version(WRK)}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="smoke run: 10k / 50k objects, 1 round of 3 s")
    add("--only", default="tag,hitpath", help="parts to run, of tag,hitpath")
    add("--objects", type=int, help="objects of part 1, all tagged `big` (100000)")
    add("--index-objects", type=int, help="objects indexed in part 2 (1000000)")
    add("--rounds", type=int, help="rounds of each part (3)")
    add("--duration", type=int, help="seconds per wrk run in part 2 (10)")
    add("--connections", type=int, default=50, help="wrk connections in part 2 (50)")
    add(
        "--purge-rates",
        default="10,1",
        help="purge rates of part 2's purging runs, per second, 0: back to back (10,1)",
    )
    add("--pause", type=float, default=1.0, help="seconds of quiet before each wrk run")
    add(
        "--attempts",
        type=int,
        default=3,
        help="measurements during which other processes used over 10%% of the CPUs are done "
        "again, up to this many times in all (3)",
    )
    add(
        "--quiet-wait",
        type=float,
        default=120.0,
        help="before each measurement, wait up to S s for other processes to leave the CPUs "
        "(under 10%% for 1 s); 0: don't (120)",
    )
    add("--body-size", type=int, default=200, help="bytes per object body (200)")
    add("--cache-mem", default="1GiB", help="pinedge --cache-mem in part 1 (1GiB)")
    add("--index-cache-mem", default="4GiB", help="pinedge --cache-mem in part 2 (4GiB)")
    add("--varnish", action=argparse.BooleanOptionalAction, default=None, help="part 1 on Varnish")
    add("--varnish-storage", default="2G", help="varnishd -s malloc,SIZE (2G)")
    add("--md", help="also write the report to this file (e.g. bench/PURGE.md)")
    add("--json", help="every number as JSON to this file")
    add("--keep", action="store_true", help="keep the temp dir (server logs, fill.lua, VCL)")
    add("--serve-origin", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.only.split(",") if p.strip()]
    if set(args.parts) - {"tag", "hitpath"}:
        parser.error("--only takes tag, hitpath or both")
    args.objects = args.objects or (10_000 if args.quick else BIG)
    args.index_objects = args.index_objects or (50_000 if args.quick else 1_000_000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.attempts = max(1, args.attempts)
    try:
        args.rates = [float(r) for r in args.purge_rates.split(",") if r.strip()]
    except ValueError:
        parser.error(f"--purge-rates: not numbers: {args.purge_rates!r}")
    args.duration = args.duration or (3 if args.quick else 10)
    return args


def header(report: Report, args: argparse.Namespace) -> None:
    report.add(
        "# Purge: benchmark results",
        "",
        f"{run_line('purge.py')}: one run on a 2-core shared "
        f"machine ({os.cpu_count()} CPUs seen; wrk, the node, the origin and this script "
        f"share them), {versions()}."
        + (" **`--quick`: a smoke run, its numbers are not a result.**" if args.quick else ""),
        "",
        f"The machine at the start: {neighbours()}.",
        "",
        "The origin (this script, `--serve-origin`, aiohttp on uvloop) answers `GET /o/{i}` "
        f"with a {args.body_size} B body, `Cache-Control: max-age=86400` and "
        f"`Surrogate-Key: o{{i}} g{{i % {GROUPS}}}`, plus `big` for i < {BIG:,}. Stores are "
        f"filled through the server under test by wrk (one thread, {FILL_CONNECTIONS} "
        "connections) with a Lua script that asks every id once. Other work shares this "
        "machine at times (other tenants, other benchmarks): before each timed purge and each "
        f"wrk run the script waits, up to {args.quiet_wait:g} s, for a second in which "
        f"processes it did not start use under {QUIET_SHARE:.0%} of the CPUs, and the tables "
        "give their share as `other CPU`.",
        "",
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_origin:
        serve_origin(args.serve_origin, args.body_size)
        return 0
    report = Report()
    results: dict = {"args": vars(args)}

    def body(tmp: Path) -> None:
        if not os.access(WRK, os.X_OK):
            raise BenchError(f"{WRK} is missing (apt-get install wrk)")
        results["code"] = code_state()
        header(report, args)
        if not args.quick:
            wait_for_quiet(args.quiet_wait)
            results["idle_memory_start"] = probe = idle_memory_probe()
            report.add(idle_memory_line("at the start of the run", probe), "")
        start = CpuSample.now()
        _, origin = start_origin(tmp, args.body_size)
        if "tag" in args.parts:
            part_tag(report, args, tmp, origin, results)
        if "hitpath" in args.parts:
            part_hitpath(report, args, tmp, origin, results)
        if not args.quick:
            wait_for_quiet(args.quiet_wait)
            results["idle_memory_end"] = probe = idle_memory_probe()
            report.add(idle_memory_line("at the end of the run", probe), "")
        code_now = code_state()
        if code_now != results["code"]:
            report.add(
                f"**The code changed during the run**: pinedge was at {results['code']} when "
                f"it started and at {code_now} when it ended; each node runs the code it "
                "started with.",
                "",
            )
        results["others"] = others_share(start, CpuSample.now())
        report.add(
            f"Over the whole run ({(time.monotonic() - start.at) / 60:.0f} min), processes this "
            f"script did not start used {results['others']:.0%} of the machine's CPUs. "
            f"The machine at the end: {neighbours()}.",
            "",
        )

    return session.run(
        body,
        prefix="pinedge-purge-",
        keep=args.keep,
        report=report,
        md=args.md,
        json_path=args.json,
        results=lambda: results,
    )


if __name__ == "__main__":
    sys.exit(main())
