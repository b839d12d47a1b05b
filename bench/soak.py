"""A soak: one node under a steady mixed load for half an hour, sampled once a minute.

    .venv/bin/python bench/soak.py [--minutes 30] [--clients 25] [--rate 250]
                                   [--warmup MIN] [--md bench/SOAK.md] [--keep]

`pinedge origin` (the sample origin) and `pinedge edge --workers 2 --cache-mem 256MiB`
in front of it, on loopback. Clients (aiohttp, one connection each) ask for pages, API
documents, static assets and photos with a Zipf-like popularity, new URLs, image
variants and text codings, some with `If-None-Match`; the admin listener purges a tag
or a URL every 30 s; one worker is SIGKILLed half-way. Once a minute: memory, open
files and threads of every process of the node, the store, the node's /dev/shm bytes,
and the minute's requests by outcome and its errors. Then a verdict: does memory level
off, and did anything fail that should not have. Nothing is asserted; the results of a
full run are in bench/SOAK.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import signal
import stat
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from harness import session
from harness.errors import BenchError
from harness.machine import TICK, CpuSample, descendants, others_share, proc_ticks, worker_pids
from harness.report import Report, note, run_line
from harness.servers import Edge, http_get, pinedge_env, start_edge, start_sample_origin

CACHE_MEM = "256MiB"
WORKERS = 2
TOKEN = "soak-bench-token"  # the admin token the purges send
WIDTHS = (236, 474, 736, 1200)
SEED = 20261204
ZIPF_EXPONENT = 1.0  # weight of the URL at popularity rank r is 1 / r**s

# Share of requests by what they ask for; a "miss" is a URL of one of the other
# kinds with a query the node has not seen (`soak=N`).
KINDS = {"page": 20, "api": 15, "static": 10, "variant": 40, "photo": 5, "miss": 10}
MISS_KINDS = {"page": 40, "api": 25, "static": 10, "photo": 20, "variant": 5}

# Image clients by what they accept: (Accept, share). Chrome, Firefox before AVIF,
# Safari before WebP.
IMAGE_ACCEPTS = {
    "avif": ("image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8", 50),
    "webp": ("image/webp,*/*", 30),
    "jpeg": ("image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5", 20),
}
TEXT_CODINGS = {"br": 35, "zstd": 25, "gzip": 25, "none": 15}
IMAGE_ENCODINGS = "gzip, deflate, br"  # what a browser sends with an image request
NEGOTIATED = ("image/avif", "image/webp")  # formats a client gets only if it accepts them
NEGOTIATED_FOR = {"avif": NEGOTIATED, "webp": ("image/webp",), "jpeg": ()}

CONDITIONAL_SHARE = 0.3  # of requests for a URL the client holds an ETag for
CLOSE_SHARE = 0.02  # requests sent with `Connection: close`: the client reconnects
REQUEST_TIMEOUT = 30.0
PURGE_EVERY = 30.0
URL_PURGE_EVERY = 5  # every 5th purge names a URL instead of a tag
KILL_WINDOW = 5.0  # seconds after the worker kill whose errors are counted apart
FLAT_MIB = 1.0  # per 10 minutes: a process's memory slope at or below this is flat
FLAT_NODE_MIB = 2.0  # the same for the node's total
FD_EVERY = 5.0  # seconds between counts of open files; a minute shows the fewest and most
MIB = 1 << 20

CACHE_KINDS = ("hit", "stale", "reval", "miss", "other")


# ---------------------------------------------------------------------------- the load


@dataclass(frozen=True)
class Ask:
    target: str
    headers: dict[str, str]
    profile: str  # the Accept or Accept-Encoding choice: a client's ETags are per profile
    image: bool


class Plan:
    """The URLs of the catalog by kind, each list in popularity order, and the draws."""

    def __init__(self, urls: dict[str, list[str]], seed: int) -> None:
        shuffler = random.Random(seed)
        self.urls = {}
        for kind, found in urls.items():
            ranked = sorted(found)
            shuffler.shuffle(ranked)
            self.urls[kind] = ranked
        self.weights = {
            kind: list(_cumulative([1 / (r + 1) ** ZIPF_EXPONENT for r in range(len(v))]))
            for kind, v in self.urls.items()
        }
        self.next_miss = 0

    def pick_url(self, rng: random.Random, kind: str) -> str:
        return rng.choices(self.urls[kind], cum_weights=self.weights[kind])[0]

    def draw(self, rng: random.Random) -> Ask:
        kind = _choice(rng, KINDS)
        if kind == "miss":
            kind = _choice(rng, MISS_KINDS)
            target = self.pick_url(rng, kind)
            self.next_miss += 1
            target += ("&" if "?" in target else "?") + f"soak={self.next_miss}"
            if kind == "photo":
                # a new original for a JPEG-only client is stored as it comes: no
                # transform, only bytes that fill the store
                return image_ask(target, "jpeg")
        else:
            target = self.pick_url(rng, kind)
        if kind in ("photo", "variant"):
            return image_ask(target, _choice(rng, {k: v[1] for k, v in IMAGE_ACCEPTS.items()}))
        coding = _choice(rng, TEXT_CODINGS)
        headers = {} if coding == "none" else {"Accept-Encoding": coding}
        return Ask(target, headers, coding, False)


def image_ask(target: str, accepts: str) -> Ask:
    headers = {"Accept": IMAGE_ACCEPTS[accepts][0], "Accept-Encoding": IMAGE_ENCODINGS}
    return Ask(target, headers, accepts, True)


def _cumulative(values: Iterable[float]) -> Iterable[float]:
    total = 0.0
    for value in values:
        total += value
        yield total


def _choice(rng: random.Random, weighted: dict[str, int]) -> str:
    return rng.choices(list(weighted), weights=list(weighted.values()))[0]


def catalog_urls(origin_port: int) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(URLs by kind, purge tags by kind), read from the origin's home page and API."""
    _, _, home = http_get(origin_port, "/")
    statics = sorted(set(re.findall(r'(/static/[\w.-]+\?v=[0-9a-f]+)"', home.decode())))
    _, _, first = http_get(origin_port, "/api/pins")
    pages = json.loads(first)["pages"]
    _, _, everything = http_get(origin_port, "/api/pins?per_page=50")
    pins = json.loads(everything)["items"]
    files = sorted({p["photo"]["file"] for p in pins})
    boards = sorted({p["board"]["id"] for p in pins})
    users = sorted({p["user"]["id"] for p in pins})
    if not statics or not pins:
        raise BenchError("the origin's home page or API lists no static assets or pins")
    urls = {
        "page": ["/"]
        + [f"/?page={n}" for n in range(2, pages + 1)]
        + [f"/pin/{p['id']}" for p in pins]
        + [f"/board/{b}" for b in boards]
        + [f"/user/{u}" for u in users],
        "api": [f"/api/pins?page={n}" for n in range(1, pages + 1)]
        + [f"/api/pins/{p['id']}" for p in pins],
        "static": [*statics, "/favicon.ico"],
        "photo": [f"/img/{f}" for f in files],
        "variant": [f"/img/{f}?w={w}" for f in files for w in WIDTHS],
    }
    tags = {
        "pin": [f"pin-{p['id']}" for p in pins],
        "photo": [f"photo-{f.rsplit('.', 1)[0]}" for f in files],
        "home": ["home"],
        "board": [f"board-{b}" for b in boards],
        "user": [f"user-{u}" for u in users],
    }
    return urls, tags


# ---------------------------------------------------------------------------- outcomes


@dataclass
class Minute:
    """What the clients saw in one minute of the run."""

    requests: int = 0
    body_bytes: int = 0
    statuses: Counter[str] = field(default_factory=Counter)  # 2xx, 304, 4xx, 5xx, …
    cache: Counter[str] = field(default_factory=Counter)  # CACHE_KINDS
    errors: Counter[str] = field(default_factory=Counter)  # failures by kind, outside the kill
    at_kill: Counter[str] = field(default_factory=Counter)  # the same, just after it
    latencies: list[float] = field(default_factory=list)  # ms
    purges: int = 0


@dataclass(frozen=True)
class Failure:
    at: float  # seconds into the run
    kind: str
    target: str
    detail: str
    at_kill: bool


class Tally:
    """Outcomes by minute of the run, and every failure."""

    def __init__(self, minutes: int, started: float) -> None:
        # [0] is unused; [minutes + 1] takes what ends after the last sample
        self.minutes = [Minute() for _ in range(minutes + 2)]
        self.started = started
        self.failures: list[Failure] = []
        self.kill_at: float | None = None  # monotonic time of the worker kill

    def minute(self, now: float) -> Minute:
        index = int((now - self.started) // 60) + 1
        return self.minutes[max(1, min(index, len(self.minutes) - 1))]

    def near_kill(self, now: float) -> bool:
        return self.kill_at is not None and 0 <= now - self.kill_at <= KILL_WINDOW

    def fail(self, now: float, kind: str, target: str, detail: str) -> None:
        near = self.near_kill(now)
        minute = self.minute(now)
        (minute.at_kill if near else minute.errors)[kind] += 1
        if len(self.failures) < 2000:
            self.failures.append(Failure(now - self.started, kind, target, detail, near))


def node_entry(headers: Mapping[str, str]) -> list[str]:
    """This node's Cache-Status entry (RFC 9211: the last one), as its parameters."""
    value = headers.get("Cache-Status", "")
    return [p.strip() for p in value.split(",")[-1].split(";")[1:]]


def cache_kind(params: list[str]) -> str:
    """hit, stale (served stale), reval (a stale entry checked with the origin), miss
    or other (passed, bypassed, no Cache-Status)."""
    values = dict(p.split("=", 1) for p in params if "=" in p)
    stale_detail = values.get("detail", "").startswith("stale-")
    if "hit" in params:
        ttl = values.get("ttl", "0")
        return "stale" if stale_detail or ttl.startswith("-") else "hit"
    forward = values.get("fwd")
    if forward == "stale":
        return "stale" if stale_detail else "reval"
    if forward in ("miss", "vary-miss", "uri-miss"):
        return "miss"
    return "other"


def wrong_variant(ask: Ask, headers: Mapping[str, str]) -> str:
    """Why the response is not one this client can use, or ''."""
    coding = headers.get("Content-Encoding", "")
    if coding and (ask.image or coding != ask.profile):
        return f"Content-Encoding {coding} for a client that asked {ask.profile}"
    kind = headers.get("Content-Type", "")
    if ask.image and kind in NEGOTIATED and kind not in NEGOTIATED_FOR[ask.profile]:
        return f"{kind} for a client that accepts {ask.profile}"
    return ""


async def run_client(
    index: int,
    url: str,
    plan: Plan,
    tally: Tally,
    rate: float,
    stop: asyncio.Event,
) -> None:
    """One client: one connection, requests at `rate` per second (Poisson), its ETags
    remembered per URL and profile."""
    rng = random.Random(SEED + index)
    etags: dict[tuple[str, str], str] = {}
    loop = asyncio.get_running_loop()
    session = aiohttp.ClientSession(
        url,
        connector=aiohttp.TCPConnector(limit=1),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
        auto_decompress=False,
        skip_auto_headers=("Accept-Encoding",),
    )
    next_at = loop.time() + rng.expovariate(rate)
    async with session:
        while not stop.is_set():
            wait = next_at - loop.time()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                if stop.is_set():
                    return
            next_at = max(next_at, loop.time() - 1.0) + rng.expovariate(rate)
            ask = plan.draw(rng)
            headers = dict(ask.headers)
            etag = etags.get((ask.target, ask.profile))
            conditional = etag is not None and rng.random() < CONDITIONAL_SHARE
            if conditional:
                headers["If-None-Match"] = etag  # type: ignore[assignment]  # not None when conditional
            if rng.random() < CLOSE_SHARE:
                headers["Connection"] = "close"
            await one_request(session, ask, headers, conditional, etags, tally)


async def one_request(
    session: aiohttp.ClientSession,
    ask: Ask,
    headers: dict[str, str],
    conditional: bool,
    etags: dict[tuple[str, str], str],
    tally: Tally,
) -> None:
    started = time.monotonic()
    try:
        async with session.get(ask.target, headers=headers, allow_redirects=False) as response:
            body = await response.read()
    except TimeoutError:
        tally.fail(time.monotonic(), "timeout", ask.target, f"no answer in {REQUEST_TIMEOUT:g} s")
        return
    except aiohttp.ClientError as exc:
        tally.fail(time.monotonic(), "conn", ask.target, f"{type(exc).__name__}: {exc}")
        return
    now = time.monotonic()
    minute = tally.minute(now)
    status = response.status
    minute.requests += 1
    minute.body_bytes += len(body)
    minute.latencies.append((now - started) * 1000)
    minute.statuses["304" if status == 304 else f"{status // 100}xx"] += 1
    minute.cache[cache_kind(node_entry(response.headers))] += 1
    if status >= 500:
        retry = response.headers.get("Retry-After")
        detail = f"{status} {body[:120].decode(errors='replace').strip()}"
        tally.fail(now, "5xx", ask.target, detail + (f" (Retry-After {retry})" if retry else ""))
    elif status not in (200, 304) or (status == 304 and not conditional):
        why = "" if status != 304 else " without If-None-Match"
        tally.fail(now, "unexpected", ask.target, f"{status}{why}")
    elif why := wrong_variant(ask, response.headers):
        tally.fail(now, "wrong-variant", ask.target, why)
    elif status == 200 and (etag := response.headers.get("ETag")):
        etags[(ask.target, ask.profile)] = etag


# ---------------------------------------------------------------------------- purges and the kill


@dataclass(frozen=True)
class Purge:
    at: float  # seconds into the run
    what: str  # e.g. `tag photo-horse`
    soft: bool
    status: int
    purged: int
    took_ms: float
    error: str


async def run_purges(
    admin: str,
    tags: dict[str, list[str]],
    urls: dict[str, list[str]],
    tally: Tally,
    stop: asyncio.Event,
) -> list[Purge]:
    """Every PURGE_EVERY s, soft and hard in turn: a tag (pin, photo, home, board, user
    in turn), or every URL_PURGE_EVERY-th time a URL."""
    rng = random.Random(SEED - 1)
    done: list[Purge] = []
    tag_kinds = list(tags)
    url_pool = ["/", "/api/pins?page=1", *urls["photo"][:3], *urls["page"][:3]]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        number = 0
        while True:
            due = tally.started + PURGE_EVERY / 2 + number * PURGE_EVERY
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, due - time.monotonic()))
            if stop.is_set():
                return done
            soft = number % 2 == 0
            if number % URL_PURGE_EVERY == URL_PURGE_EVERY - 1:
                url = rng.choice(url_pool)
                what, body = f"url {url}", {"urls": [url], "soft": soft}
            else:
                tag = rng.choice(tags[tag_kinds[number % len(tag_kinds)]])
                what, body = f"tag {tag}", {"tags": [tag], "soft": soft}
            number += 1
            now = time.monotonic()
            tally.minute(now).purges += 1
            try:
                async with session.post(admin + "/purge", json=body, headers=auth) as response:
                    text = await response.text()
                    answer = json.loads(text) if response.status == 200 else {}
                    status = response.status
                    error = "" if status == 200 else text[:200]
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                answer, status, error = {}, 0, f"{type(exc).__name__}: {exc}"
            done.append(
                Purge(
                    now - tally.started,
                    what,
                    soft,
                    status,
                    int(answer.get("purged", 0)),
                    float(answer.get("took_ms", float("nan"))),
                    error,
                )
            )


@dataclass
class Kill:
    at: float = float("nan")  # seconds into the run
    victim: int = 0
    replacement: int = 0
    replaced_after: float = float("nan")  # seconds until a new worker process ran
    ready_after: float = float("nan")  # seconds until /readyz said every worker serves
    note: str = ""


async def kill_worker(node: Edge, tally: Tally, at: float, kill: Kill) -> None:
    """At `at` (monotonic), SIGKILL the node's first worker; then wait for its successor."""
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    before = worker_pids(node.server.pid)
    if not before:
        kill.note = "no worker process found to kill"
        return
    kill.victim = min(before)
    tally.kill_at = time.monotonic()
    kill.at = tally.kill_at - tally.started
    os.kill(kill.victim, signal.SIGKILL)
    deadline = tally.kill_at + 60
    while not kill.replacement and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        if new := set(worker_pids(node.server.pid)) - set(before):
            kill.replacement = min(new)
            kill.replaced_after = time.monotonic() - tally.kill_at
    if kill.replacement and await workers_ready(node, len(before), deadline):
        kill.ready_after = time.monotonic() - tally.kill_at
    else:
        kill.note = f"the node did not have {len(before)} serving workers again within 60 s"


async def workers_ready(node: Edge, workers: int, deadline: float) -> bool:
    """Whether /readyz says all `workers` serve, polled until `deadline` (monotonic)."""
    url = f"http://127.0.0.1:{node.admin}/readyz"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url) as response:
                    text = await response.text()
                if response.status == 200 and text.startswith(f"ready: {workers} of {workers}"):
                    return True
            await asyncio.sleep(0.1)
    return False


# ---------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class Proc:
    pid: int
    role: str  # supervisor, worker or helper (the resource tracker)
    anon: float  # MiB, RssAnon
    file: float  # MiB, RssFile
    shmem: float  # MiB, RssShmem
    threads: int
    fds: int  # open files: the fewest counted during the minute (connections come and go)
    fds_peak: int  # the most
    ticks: int  # CPU, its reaped children's included


@dataclass
class Sample:
    minute: int
    procs: list[Proc]
    metrics: dict[str, float]
    shm_bytes: int
    shm_files: int
    cpu: CpuSample
    metrics_error: str  # why /metrics gave nothing, or ''

    @property
    def anon(self) -> float:
        return sum(p.anon for p in self.procs)

    @property
    def node_total(self) -> float:
        """Private memory of every process plus the node's /dev/shm, in MiB."""
        return self.anon + self.shm_bytes / MIB

    @property
    def ticks(self) -> int:
        return sum(p.ticks for p in self.procs)


def read_proc(pid: int, role: str, fd_counts: list[int]) -> Proc | None:
    """The process now; `fd_counts` are its open files counted earlier in the minute."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = [*fd_counts, len(os.listdir(f"/proc/{pid}/fd"))]
    except OSError:
        return None
    found = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)

    def kib(name: str) -> float:
        return int(found.get(name, "0 kB").split()[0]) / 1024

    rss = kib("RssAnon"), kib("RssFile"), kib("RssShmem")
    threads = int(found.get("Threads", "0"))
    return Proc(pid, role, *rss, threads, min(fds), max(fds), proc_ticks(pid))


def shm_usage(pids: Iterable[int]) -> tuple[int, int]:
    """(bytes, files) under /dev/shm in entries a node's processes named after their
    pid (`pinedge-store-PID-…`, `pinedge-generations-PID-…`, …), as du counts them."""
    wanted = {str(p) for p in pids}
    used = files = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir("/dev/shm"):
            if not node_entry_name(entry.name, wanted):
                continue
            for path in [Path(entry.path), *_walk(Path(entry.path))]:
                with contextlib.suppress(OSError):
                    found = path.lstat()
                    used += found.st_blocks * 512
                    files += stat.S_ISREG(found.st_mode)
    return used, files


def _walk(root: Path) -> Iterable[Path]:
    if not root.is_dir() or root.is_symlink():
        return
    for directory, subdirs, names in os.walk(root):
        for name in [*subdirs, *names]:
            yield Path(directory) / name


def parse_metrics(text: str) -> dict[str, float]:
    """Each metric's samples summed over their labels (histogram buckets left out)."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = re.split(r"[{ ]", line, maxsplit=1)[0]
        with contextlib.suppress(ValueError):
            totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


class Sampler:
    """Samples the node; counts open files every FD_EVERY s in between; remembers every
    pid it has seen, so the /dev/shm entries of a process that died are still counted."""

    def __init__(self, node: Edge) -> None:
        self.node = node
        self.seen: set[int] = {node.server.pid}
        self.fd_counts: dict[int, list[int]] = {}
        self.lock = threading.Lock()

    def count_fds(self) -> None:
        supervisor = self.node.server.pid
        for pid in [supervisor, *descendants(supervisor)]:
            with contextlib.suppress(OSError), self.lock:
                self.fd_counts.setdefault(pid, []).append(len(os.listdir(f"/proc/{pid}/fd")))

    async def watch_fds(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FD_EVERY)
            await asyncio.to_thread(self.count_fds)

    def processes(self) -> tuple[list[Proc], int, int]:
        supervisor = self.node.server.pid
        workers = set(worker_pids(supervisor))
        with self.lock:
            counts, self.fd_counts = self.fd_counts, {}
        procs = [read_proc(supervisor, "supervisor", counts.get(supervisor, []))]
        for pid in sorted(descendants(supervisor)):
            role = "worker" if pid in workers else "helper"
            procs.append(read_proc(pid, role, counts.get(pid, [])))
        alive = [p for p in procs if p is not None]
        self.seen.update(p.pid for p in alive)
        used, files = shm_usage(self.seen)
        return alive, used, files

    async def sample(self, minute: int, session: aiohttp.ClientSession) -> Sample:
        metrics: dict[str, float] = {}
        error = ""
        try:
            async with session.get(f"http://127.0.0.1:{self.node.admin}/metrics") as response:
                metrics = parse_metrics(await response.text())
                error = "" if response.status == 200 else f"status {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        procs, used, files = await asyncio.to_thread(self.processes)
        cpu = await asyncio.to_thread(CpuSample.now)
        return Sample(minute, procs, metrics, used, files, cpu, error)


# ---------------------------------------------------------------------------- the run


@dataclass
class Run:
    samples: list[Sample]
    tally: Tally
    purges: list[Purge]
    kill: Kill
    seconds: float
    script_cpu: float  # CPU seconds of this script (the clients) during the run
    node_exit: str  # how the node ended before the run did, or ''

    def minutes_judged(self, warmup: float) -> bool:
        """Whether the node's total had enough samples after warm-up for a verdict."""
        return growth(series(self.samples[1:], lambda s: s.node_total), warmup) is not None


async def soak(args: argparse.Namespace, node: Edge, plan: Plan, tags: dict[str, list[str]]) -> Run:
    sampler = Sampler(node)
    stop = asyncio.Event()
    samples: list[Sample] = []
    if not await workers_ready(node, WORKERS, time.monotonic() + 60):
        raise BenchError(f"the node's /readyz never said {WORKERS} of {WORKERS} workers serve")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        samples.append(await sampler.sample(0, session))
        started, cpu_before = time.monotonic(), time.process_time()
        tally = Tally(args.minutes, started)
        url = f"http://127.0.0.1:{node.port}"
        per_client = args.rate / args.clients
        clients = [
            asyncio.create_task(run_client(i, url, plan, tally, per_client, stop))
            for i in range(args.clients)
        ]
        admin = f"http://127.0.0.1:{node.admin}"
        purges = asyncio.create_task(run_purges(admin, tags, plan.urls, tally, stop))
        kill = Kill()
        killer = asyncio.create_task(kill_worker(node, tally, started + kill_time(args), kill))
        fd_watch = asyncio.create_task(sampler.watch_fds(stop))
        node_exit = ""
        try:
            for minute in range(1, args.minutes + 1):
                await asyncio.sleep(max(0.0, started + minute * 60 - time.monotonic()))
                if (code := node.server.exited()) is not None:
                    node_exit = f"the node exited with status {code} in minute {minute}"
                    break
                sample = await sampler.sample(minute, session)
                samples.append(sample)
                note(progress(sample, tally.minutes[minute], samples[-2]))
        finally:
            stop.set()
            killer.cancel()
            tasks = [*clients, purges, killer, fd_watch]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 40)
    seconds, cpu = time.monotonic() - started, time.process_time() - cpu_before
    return Run(samples, tally, purges.result(), kill, seconds, cpu, node_exit)


def kill_time(args: argparse.Namespace) -> float:
    """Seconds into the run of the worker kill: the middle, or half a minute after it
    when the middle is a sample's time (a sample then would catch the node between
    the old worker and the new)."""
    middle = args.minutes * 30.0
    return middle + 30 if middle % 60 == 0 else middle


def progress(sample: Sample, minute: Minute, before: Sample) -> str:
    errors = sum(minute.errors.values())
    return (
        f"minute {sample.minute}: {minute.requests} requests, {errors} failed, "
        f"{sum(minute.at_kill.values())} at the kill; node anon {sample.anon:.0f} MiB, "
        f"/dev/shm {sample.shm_bytes / MIB:.0f} MiB, "
        f"store {sample.metrics.get('pinedge_store_objects', 0):.0f} objects; "
        f"node CPU {cpu_share(before, sample):.0%}"
    )


def cpu_share(before: Sample, after: Sample) -> float:
    """The node's CPU between two samples, as a share of one CPU."""
    seconds = (after.cpu.at - before.cpu.at) or float("nan")
    return max(0, after.ticks - before.ticks) / TICK / seconds


# ---------------------------------------------------------------------------- growth


@dataclass(frozen=True)
class Growth:
    """A series' slope (per 10 minutes) in the first and last third after warm-up."""

    first: float
    last: float
    start: float  # the value at the end of warm-up
    end: float
    window: str  # the minutes compared, e.g. `5-13 and 22-30`
    first_values: tuple[float, ...]
    last_values: tuple[float, ...]


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (minute, value), per 10 minutes."""
    if len(points) < 2:
        return float("nan")
    mean_t = statistics.fmean(t for t, _ in points)
    mean_v = statistics.fmean(v for _, v in points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    return 10 * sum((t - mean_t) * (v - mean_v) for t, v in points) / spread


def growth(points: list[tuple[float, float]], warmup: float) -> Growth | None:
    """Compare the first and the last third of a series after its first `warmup`
    minutes; None when fewer than 6 samples are left."""
    if not points:
        return None
    born = points[0][0]
    kept = [(t, v) for t, v in points if t >= born + warmup]
    if len(kept) < 6:
        return None
    start, end = kept[0][0], kept[-1][0]
    third = (end - start) / 3
    first = [(t, v) for t, v in kept if t <= start + third]
    last = [(t, v) for t, v in kept if t >= end - third]
    window = f"{first[0][0]:g}-{first[-1][0]:g} and {last[0][0]:g}-{last[-1][0]:g}"
    return Growth(
        slope(first),
        slope(last),
        kept[0][1],
        kept[-1][1],
        window,
        tuple(v for _, v in first),
        tuple(v for _, v in last),
    )


def fd_verdict(found: Growth | None) -> str:
    """Open files grow when the fewest of any minute in the last third is above the
    most of the fewest in the first third: a leak raises the floor, connections
    coming and going do not."""
    if found is None:
        return "too short to tell"
    return "**still growing**" if min(found.last_values) > max(found.first_values) else "flat"


def verdict_of(found: Growth | None, flat: float) -> str:
    if found is None:
        return "too short to tell"
    if found.last <= flat:
        return "levels off" if found.first > flat else "flat"
    if found.last <= found.first / 2:
        return "**slowing, still growing**"
    return "**still growing**"


# ---------------------------------------------------------------------------- the report


def mib(value: float) -> str:
    return f"{value:.1f}"


def span(values: Iterable[float]) -> str:
    found = list(values)
    return f"{min(found):.0f}-{max(found):.0f}"


def signed(value: float) -> str:
    return "-" if value != value else f"{value:+.1f}"


def traffic_rows(run: Run) -> list[list[str]]:
    rows = []
    for sample, before in zip(run.samples[1:], run.samples, strict=False):
        m = run.tally.minutes[sample.minute]
        lat = sorted(m.latencies)

        def pct(q: float, lat: list[float] = lat) -> str:
            return f"{lat[min(len(lat) - 1, int(q * len(lat)))]:.1f}" if lat else "-"

        failed = sum(m.errors.values())
        rows.append(
            [
                str(sample.minute),
                f"{m.requests:,}",
                f"{m.requests / 60:.0f}",
                f"{m.body_bytes / MIB:.0f}",
                f"{m.statuses['2xx']:,}",
                f"{m.statuses['304']:,}",
                str(m.statuses["4xx"]),
                str(m.statuses["5xx"]),
                *(f"{m.cache[k]:,}" for k in CACHE_KINDS),
                pct(0.5),
                pct(0.99),
                counts(m.errors) if failed else "0",
                counts(m.at_kill) if m.at_kill else "",
                str(m.purges),
                f"{cpu_share(before, sample):.0%}",
                f"{others_share(before.cpu, sample.cpu):.0%}",
            ]
        )
    return rows


def counts(counter: Counter[str]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in counter.most_common())


def worker_slots(samples: list[Sample]) -> list[list[int | None]]:
    """Per sample, the worker pids in stable columns: a new worker takes the column
    of the one it replaced."""
    slots: list[int | None] = []
    table = []
    for sample in samples:
        alive = [p.pid for p in sample.procs if p.role == "worker"]
        slots = [pid if pid in alive else None for pid in slots]
        for pid in alive:
            if pid not in slots:
                if None in slots:
                    slots[slots.index(None)] = pid
                else:
                    slots.append(pid)
        table.append(list(slots))
    return table


def memory_rows(run: Run) -> tuple[list[str], list[list[str]]]:
    slots = worker_slots(run.samples)
    width = max(len(s) for s in slots)
    header = ["min", "supervisor", "fds", "thr"]
    for n in range(1, width + 1):
        header += [f"worker {n}", "fds", "thr"]
    rows = []
    for sample, pids in zip(run.samples, slots, strict=True):
        by_pid = {p.pid: p for p in sample.procs}
        supervisor = next((p for p in sample.procs if p.role == "supervisor"), None)
        row = [str(sample.minute), *proc_cells(supervisor)]
        for pid in [*pids, *[None] * (width - len(pids))]:
            row += proc_cells(by_pid.get(pid) if pid else None)
        rows.append(row)
    return header, rows


def proc_cells(proc: Proc | None) -> list[str]:
    if proc is None:
        return ["-", "-", "-"]
    return [
        f"{proc.anon:.1f} / {proc.file:.1f} / {proc.shmem:.1f}",
        f"{proc.fds}-{proc.fds_peak}",
        str(proc.threads),
    ]


def store_rows(run: Run) -> list[list[str]]:
    rows = []
    before: Sample | None = None
    for sample in run.samples:
        metric = sample.metrics.get
        evicted = metric("pinedge_store_evictions_total", 0) - (
            before.metrics.get("pinedge_store_evictions_total", 0) if before else 0
        )
        rows.append(
            [
                str(sample.minute),
                mib(metric("pinedge_store_bytes", 0) / MIB),
                f"{metric('pinedge_store_objects', 0):,.0f}",
                f"{evicted:,.0f}",
                f"{metric('pinedge_store_purged_pending', 0):,.0f}",
                mib(sample.shm_bytes / MIB),
                f"{sample.shm_files:,}",
                mib(sample.anon),
                mib(sample.node_total),
                f"{metric('pinedge_workers', 0):.0f}",
                f"{metric('pinedge_worker_restarts_total', 0):.0f}",
            ]
        )
        before = sample
    return rows


def series(
    samples: list[Sample], value: Callable[[Sample], float | None]
) -> list[tuple[float, float]]:
    points = []
    for sample in samples:
        found = value(sample)
        if found is not None:
            points.append((float(sample.minute), found))
    return points


def proc_value(pid: int, read: Callable[[Proc], float]) -> Callable[[Sample], float | None]:
    def value(sample: Sample) -> float | None:
        proc = next((p for p in sample.procs if p.pid == pid), None)
        return None if proc is None else read(proc)

    return value


def growth_rows(run: Run, warmup: float) -> tuple[list[list[str]], list[str]]:
    """One row per process and one for the node: memory and file growth; and the
    names of whatever is still growing."""
    samples = run.samples[1:]  # minute 0 is before any load
    rows, growing = [], []
    pids: dict[int, str] = {}
    for sample in samples:
        for proc in sample.procs:
            pids.setdefault(proc.pid, proc.role)
    for pid, role in pids.items():
        if role == "helper":
            continue
        anon = growth(series(samples, proc_value(pid, lambda p: p.anon)), warmup)
        fds = growth(series(samples, proc_value(pid, lambda p: float(p.fds))), warmup)
        life = series(samples, proc_value(pid, lambda p: p.anon))
        name = f"{role} {pid}"
        mem_verdict, files_verdict = verdict_of(anon, FLAT_MIB), fd_verdict(fds)
        alive = f"{life[0][0]:g}-{life[-1][0]:g}"
        rows.append(growth_row(name, alive, anon, mem_verdict, fds, files_verdict))
        growing += [f"{name} memory" for v in [mem_verdict] if "growing" in v]
        growing += [f"{name} open files" for v in [files_verdict] if "growing" in v]
    total = growth(series(samples, lambda s: s.node_total), warmup)
    shm = growth(series(samples, lambda s: s.shm_bytes / MIB), warmup)
    total_verdict = verdict_of(total, FLAT_NODE_MIB)
    rows.append(growth_row("node: Σ anon + /dev/shm", "", total, total_verdict, None, ""))
    rows.append(
        growth_row("node: /dev/shm alone", "", shm, verdict_of(shm, FLAT_NODE_MIB), None, "")
    )
    growing += ["the node's total memory" for v in [total_verdict] if "growing" in v]
    return rows, growing


def growth_row(
    name: str, life: str, mem: Growth | None, mem_verdict: str, fds: Growth | None, fd_verdict: str
) -> list[str]:
    return [
        name,
        life,
        mem.window if mem else "-",
        f"{mem.start:.1f} → {mem.end:.1f}" if mem else "-",
        signed(mem.first) if mem else "-",
        signed(mem.last) if mem else "-",
        mem_verdict,
        f"{span(fds.first_values)} → {span(fds.last_values)}" if fds else "",
        fd_verdict,
    ]


def report_run(report: Report, args: argparse.Namespace, run: Run, log: str) -> bool:
    """The tables and the verdict; True when nothing failed that should not have."""
    report.add("## Traffic, one row per minute", "")
    report.table(
        [
            "min",
            "requests",
            "req/s",
            "MiB",
            "2xx",
            "304",
            "4xx",
            "5xx",
            *CACHE_KINDS,
            "p50 ms",
            "p99 ms",
            "failed",
            "at the kill",
            "purges",
            "node CPU",
            "others' CPU",
        ],
        traffic_rows(run),
        "rrrrrrrrrrrrrrrlllrr",
    )
    report.add(
        "`hit`, `stale` (served stale: `stale-while-revalidate`), `reval` (a stale or "
        "soft-purged entry checked with the origin), `miss`, `other`: this node's "
        "Cache-Status entry. `304`: answers to the clients' `If-None-Match`. `failed`: "
        "requests that failed outside the kill window, by kind: `conn` (connection "
        f"refused, reset or closed), `timeout` (no answer in {REQUEST_TIMEOUT:g} s), `5xx`, "
        "`unexpected` (another status, or a 304 to an unconditional request), "
        "`wrong-variant` (a coding or image format the client did not accept). "
        f"`at the kill`: the same in the {KILL_WINDOW:g} s after the worker kill. `node "
        "CPU`: the node's processes, as a share of one CPU; `others' CPU`: processes this "
        "script did not start, as a share of the machine.",
        "",
    )
    header, rows = memory_rows(run)
    report.add("## Memory per process (MiB: anon / file / shmem resident), open files, threads", "")
    report.table(header, rows, "r" * len(header))
    report.add(
        "From `/proc/PID/status` (RssAnon, RssFile, RssShmem, Threads) at the minute's end; "
        f"`fds`: the fewest and the most open files in `/proc/PID/fd`, counted every "
        f"{FD_EVERY:g} s during the minute. Minute 0 is before the load. A worker that "
        "replaced a killed one takes its column "
        + (
            f"(worker pid {run.kill.victim} was killed at {clock(run.kill.at)}, pid "
            f"{run.kill.replacement} took its place)."
            if run.kill.replacement
            else "."
        ),
        "",
    )
    report.add("## The store and the node's memory", "")
    report.table(
        [
            "min",
            "store MiB",
            "objects",
            "evicted",
            "purged pending",
            "/dev/shm MiB",
            "/dev/shm files",
            "Σ anon MiB",
            "node total MiB",
            "workers",
            "restarts",
        ],
        store_rows(run),
        "r" * 11,
    )
    report.add(
        "`store MiB`, `objects`, `purged pending`: `pinedge_store_bytes`, "
        "`pinedge_store_objects`, `pinedge_store_purged_pending`; `evicted`: "
        "`pinedge_store_evictions_total` in that minute. `/dev/shm`: what `du` counts in the "
        "node's entries (its store, shared decodes and segments, named after its pids). "
        "`Σ anon`: the private memory of all the node's processes (the resource tracker "
        "included); `node total`: that plus `/dev/shm`, so shared pages count once. "
        f"The store's budget is {CACHE_MEM}.",
        "",
    )
    return report_verdict(report, args, run, log)


def clock(seconds: float) -> str:
    return "-" if seconds != seconds else f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def report_verdict(report: Report, args: argparse.Namespace, run: Run, log: str) -> bool:
    report.add("## Verdict", "")
    rows, growing = growth_rows(run, args.warmup)
    report.table(
        [
            "process",
            "alive (min)",
            "compared (min)",
            "anon MiB",
            "first third MiB/10 min",
            "last third MiB/10 min",
            "memory",
            "fewest open files a minute, first → last third",
            "open files",
        ],
        rows,
        "llllrrlrl",
    )
    report.add(
        f"Each series without its first {args.warmup:g} minutes (warm-up: the store "
        "fills, each worker's hot memory and decoded images fill), split in thirds; the "
        "slope of a least-squares line through each third's samples, per 10 minutes. "
        f"Flat: the last third's slope is at most {FLAT_MIB:g} MiB per 10 minutes for a "
        f"process, {FLAT_NODE_MIB:g} MiB for the node; levels off: flat at the end after "
        "growing at first; slowing: above that but under half the first third's slope. "
        "Open files are judged on each minute's fewest (counted every "
        f"{FD_EVERY:g} s; client and origin connections come and go): they grow when every "
        "minute of the last third has more than any minute of the first.",
        "",
    )
    lines = []
    if run.node_exit:
        lines.append(f"- **The run stopped early: {run.node_exit}.**")
    if growing:
        lines.append(f"- **Still growing at the end: {', '.join(growing)}.**")
    elif any("too short" in row[6] for row in rows):
        lines.append(
            "- Memory and open files: nothing is still growing where there were enough "
            "samples after warm-up to tell; where there were not, the table says so."
        )
    else:
        lines.append(
            "- Memory and open files: every process and the node's total level off or stay "
            "flat after warm-up."
        )
    scrapes = [f"minute {s.minute}: {s.metrics_error}" for s in run.samples if s.metrics_error]
    if scrapes:
        lines.append(f"- **The admin /metrics did not answer: {'; '.join(scrapes[:5])}.**")
    last = run.samples[-1]
    budget_mib = last.metrics.get("pinedge_store_budget_bytes", 0) / MIB
    evictions = last.metrics.get("pinedge_store_evictions_total", 0)
    lines.append(
        f"- The store held {last.metrics.get('pinedge_store_bytes', 0) / MIB:.1f} MiB of "
        f"its {budget_mib:.0f} MiB budget at the end, in "
        f"{last.metrics.get('pinedge_store_objects', 0):,.0f} objects, after "
        f"{evictions:,.0f} evictions; the node's /dev/shm held {last.shm_bytes / MIB:.1f} MiB."
    )
    ok = not growing and not run.node_exit and not scrapes
    lines += failure_lines(run)
    if any(f for f in run.tally.failures if not f.at_kill) or any(
        p.status != 200 for p in run.purges
    ):
        ok = False
    kill = run.kill
    if kill.victim:
        lines.append(
            f"- Worker kill at {clock(kill.at)}: pid {kill.victim} (SIGKILL); "
            + (
                f"a new worker (pid {kill.replacement}) ran {kill.replaced_after:.1f} s later, "
                f"and `/readyz` said 2 of 2 workers serve after {kill.ready_after:.1f} s."
                if kill.replacement and kill.ready_after == kill.ready_after
                else f"**{kill.note or 'no new worker seen'}**."
            )
        )
    restarts = last.metrics.get("pinedge_worker_restarts_total", 0)
    if kill.victim and restarts != 1:
        ok = False
        lines.append(f"- **`pinedge_worker_restarts_total` is {restarts:.0f}, not 1.**")
    if kill.note:
        ok = False
    logged, alarming = log_line(log)
    lines.append(logged)
    report.add(*lines)
    return ok and not alarming


def failure_lines(run: Run) -> list[str]:
    total = sum(m.requests for m in run.tally.minutes)
    outside = [f for f in run.tally.failures if not f.at_kill]
    near = [f for f in run.tally.failures if f.at_kill]
    lines = [
        f"- Requests answered: {total:,} in {run.seconds / 60:.1f} minutes "
        f"({total / run.seconds:.0f}/s); the clients (this script) used "
        f"{run.script_cpu / run.seconds:.0%} of a CPU."
    ]
    if outside:
        kinds = Counter(f.kind for f in outside)
        lines.append(f"- **Failed outside the kill window: {counts(kinds)}.** First ones:")
        lines += [f"  - {clock(f.at)} {f.kind} `{f.target}`: {f.detail}" for f in outside[:10]]
    else:
        lines.append("- Nothing failed outside the kill window.")
    if near:
        lines.append(
            f"- In the {KILL_WINDOW:g} s after the kill (a killed worker's requests in flight): "
            f"{counts(Counter(f.kind for f in near))}; e.g. "
            + "; ".join(f"`{f.target}` {f.detail}" for f in near[:3])
            + "."
        )
    elif run.kill.victim:
        lines.append("- No request failed at the kill.")
    purges = run.purges
    if purges:
        bad = [p for p in purges if p.status != 200]
        soft = sum(p.soft for p in purges)
        lines.append(
            f"- Purges: {len(purges)} ({soft} soft, {len(purges) - soft} hard; "
            f"{sum(p.what.startswith('url') for p in purges)} by URL), "
            + (
                f"**{len(bad)} not answered 200**: "
                + "; ".join(f"{clock(p.at)} {p.what}: {p.status} {p.error}" for p in bad[:5])
                if bad
                else "all answered 200"
            )
            + f"; objects covered per purge: median "
            f"{statistics.median(p.purged for p in purges):g}, max {max(p.purged for p in purges)}."
        )
    return lines


def log_line(log: str) -> tuple[str, bool]:
    """The node's warnings and errors (it runs with --log-level WARNING), grouped with
    their numbers as N; and whether any is an error or a traceback."""
    messages: Counter[str] = Counter()
    for line in log.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and re.fullmatch(r"\d\d:\d\d:\d\d,\d+", parts[1]):
            messages[re.sub(r"\d+", "N", " ".join(parts[2:]))[:200]] += 1
        elif line.strip():
            messages[line.strip()[:200]] += 1
    if not messages:
        return "- The node logged no warning or error.", False
    alarming = any(m.startswith(("ERROR", "CRITICAL", "Traceback")) for m in messages)
    shown = "; ".join(f"{n}x `{text}`" for text, n in messages.most_common(8))
    if alarming:
        return f"- **The node logged errors**: {shown}.", True
    return f"- The node's log (warnings and errors): {shown}.", False


def header(report: Report, args: argparse.Namespace, node_code: str) -> None:
    report.add(
        "# Soak: a node under a steady mixed load",
        "",
        f"{run_line('soak.py')}: {args.minutes} minutes on a "
        f"2-core shared machine ({os.cpu_count()} CPUs seen; the node, the origin and this "
        f"script share them with other work), Python {platform.python_version()}, aiohttp "
        f"{aiohttp.__version__}, pinedge at {node_code}."
        + (f" Environment of the node: {allocator_env()}." if allocator_env() else ""),
        "",
        f"`pinedge origin` and `pinedge edge --workers 2 --cache-mem {CACHE_MEM}` in front "
        "of it (`PINEDGE_ADMIN_TOKEN` set, `--log-level WARNING`, other settings default), "
        f"on loopback. {args.clients} clients, one connection each ({CLOSE_SHARE:.0%} of "
        "requests say `Connection: close`), about "
        f"{args.rate:g} requests/s in all (Poisson): "
        + ", ".join(f"{share}% {kind}" for kind, share in KINDS.items())
        + "; within a kind, the catalog's URLs by Zipf popularity (1/rank). `page`: the "
        "pin grid, pin, board and user pages; `api`: `/api/pins?page=N`, `/api/pins/ID` "
        "(`max-age=10, stale-while-revalidate=30`); `static`: versioned CSS, JS, SVG and "
        "the favicon; `photo`: originals; `variant`: photos at `?w=` "
        + "/".join(map(str, WIDTHS))
        + ". Image requests accept AVIF (50%), WebP (30%) or neither (20%); text requests "
        "ask "
        + ", ".join(f"{k} ({v}%)" for k, v in TEXT_CODINGS.items())
        + ". A `miss` is a URL of those kinds (pages 40%, API 25%, static 10%, originals "
        "for a JPEG-only client 20%, variants 5%) with a new `soak=N` query. A client "
        f"holding an ETag for a URL sends `If-None-Match` {CONDITIONAL_SHARE:.0%} of the "
        f"time. Every {PURGE_EVERY:g} s a purge through the admin listener, soft and hard "
        f"in turn: a tag (pin-N, photo-NAME, home, board-X, user-Y in turn), every "
        f"{URL_PURGE_EVERY}th a URL. At {clock(kill_time(args))} one worker gets SIGKILL.",
        "",
    )


def allocator_env() -> str:
    """Variables in this environment (which the node inherits) that change how memory
    is allocated, e.g. `MALLOC_ARENA_MAX=2`."""
    names = sorted(k for k in os.environ if k.startswith(("MALLOC_", "PYTHONMALLOC", "LD_PRELOAD")))
    return ", ".join(f"`{k}={os.environ[k]}`" for k in names)


# ---------------------------------------------------------------------------- main


def leftovers(pids: Iterable[int]) -> list[str]:
    """/dev/shm entries still named after the node's processes."""
    wanted = {str(p) for p in pids}
    with contextlib.suppress(OSError):
        return sorted(e.name for e in os.scandir("/dev/shm") if node_entry_name(e.name, wanted))
    return []


def node_entry_name(name: str, pids: set[str]) -> bool:
    """Whether a /dev/shm entry is named after one of `pids`: `pinedge-KIND-PID-…`."""
    parts = name.split("-")
    return parts[0] == "pinedge" and len(parts) > 2 and parts[2] in pids


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--minutes", type=int, default=30, help="length of the load, in minutes (30)")
    add("--clients", type=int, default=25, help="concurrent clients, one connection each (25)")
    add("--rate", type=float, default=250.0, help="requests per second, all clients (250)")
    add("--warmup", type=float, help="minutes left out of the growth verdict (minutes/6)")
    add("--md", help="also write the report to this file (e.g. bench/SOAK.md)")
    add("--keep", action="store_true", help="keep the temp dir (the node's and origin's logs)")
    args = parser.parse_args(argv)
    if args.minutes < 1 or args.clients < 1 or args.rate <= 0:
        parser.error("--minutes, --clients and --rate must be positive")
    if args.warmup is None:
        args.warmup = max(1.0, round(args.minutes / 6))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report()

    def body(tmp: Path) -> int:
        _, origin_port = start_sample_origin(tmp)
        urls, tags = catalog_urls(origin_port)
        env = pinedge_env(PINEDGE_ADMIN_TOKEN=TOKEN)
        node = start_edge(
            tmp, "edge-soak", origin_port, cache_mem=CACHE_MEM, workers=WORKERS, env=env
        )
        header(report, args, node.code)
        note(f"node up: supervisor pid {node.server.pid}; logs in {tmp}")
        run = run_loop(soak_main(args, node, Plan(urls, SEED), tags))
        seen = {p.pid for s in run.samples for p in s.procs}
        log = node.server.output(limit=200_000)
        clean = report_run(report, args, run, log)
        node.server.stop(timeout=30)
        left = leftovers(seen)
        report.add(
            f"- After SIGTERM the node left in /dev/shm: **{', '.join(left)}**."
            if left
            else "- After SIGTERM the node left nothing in /dev/shm.",
            "",
        )
        judged = run.minutes_judged(args.warmup)
        report.add(
            "**Verdict: see the bold lines above.**"
            if not clean or left
            else "**Verdict: memory and open files level off, and nothing failed that should "
            "not have.**"
            if judged
            else "**Verdict: nothing failed that should not have; the run was too short to "
            "judge memory.**",
            "",
        )
        return 1 if not clean or left else 0

    return session.run(
        body,
        prefix="pinedge-soak-",
        keep=args.keep,
        keep_failed=True,
        kept="logs kept in {tmp} (edge-soak.log, origin.log)",
        report=report,
        md=args.md,
        signals=(),
    )


def run_loop(main: Coroutine[Any, Any, Run]) -> Run:
    """`main` on uvloop when it is installed (the node's own loop), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def soak_main(
    args: argparse.Namespace, node: Edge, plan: Plan, tags: dict[str, list[str]]
) -> Run:
    """The run, with SIGTERM and SIGINT stopping it as Ctrl-C does."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    try:
        return await soak(args, node, plan, tags)
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None


if __name__ == "__main__":
    sys.exit(main())
