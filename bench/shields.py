"""Origin share with and without shields, replaying a real access log.

    .venv/bin/python bench/shields.py [--quick] [--rounds N] [--concurrency N]
                                      [--md bench/SHIELDS.md] [--json FILE] [--keep]

Replays the GET and HEAD lines of bench/traces/elastic_apache_logs.log.gz, in log
order, through three `pinedge edge` nodes (each client IP sticks to one edge, as a
GeoDNS or load balancer would send it), first straight to a replay origin (A), then
with two `--role shield` nodes between the edges and the origin (B). The replay
origin counts the requests that reach it; the share of replayed requests it saw is
the measure. Fresh processes for every scenario of every round. Everything is
printed as Markdown; nothing is asserted. The set-up is described in bench/SHIELDS.md.

The same file is the replay origin: `bench/shields.py --serve-origin PORT --plan FILE`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import mimetypes
import os
import platform
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from harness import session
from harness.accesslog import TRACE, LogLine, read_log
from harness.errors import BenchError
from harness.report import Report, run_line
from harness.servers import (
    REPO,
    Edge,
    Server,
    http_get,
    start_edge,
    start_script_origin,
    wait_http,
)
from harness.stats import median
from yarl import URL

from pinedge.edge.http.key import check_target, primary_key
from pinedge.edge.pipeline.errors import EdgeError

QUICK_LINES = 2000
BODY_CAP = 256 * 1024  # largest body the replay origin sends
STAND_IN = 1024  # body of an object the log only shows as 304s (its size is unknown)
MAX_AGE = 86400
REPLAY_HEADER = "X-Replay"  # tags client requests; health probes do not carry it
STATS_PATH = "/_replay/stats"
EDGES = ("edge-1", "edge-2", "edge-3")
SHIELDS = ("shield-a", "shield-b")
REPLAYED_METHODS = ("GET", "HEAD")
OK_STATUSES = ("200", "206", "304")  # lines that show the URL exists (answered 200 here)


# ---------------------------------------------------------------------------- the trace


@dataclass
class Trace:
    requests: list[LogLine]  # GET and HEAD lines, in log order
    lines: int  # lines read
    skipped: Counter[str]  # other methods, by method
    unmatched: int


def load_trace(path: Path, limit: int | None) -> Trace:
    requests: list[LogLine] = []
    skipped: Counter[str] = Counter()
    lines = unmatched = 0
    for line in read_log(path, limit):
        lines += 1
        if line is None:
            unmatched += 1
        elif line.method not in REPLAYED_METHODS:
            skipped[line.method] += 1
        else:
            requests.append(line)
    return Trace(requests, lines, skipped, unmatched)


def edge_of(ip: str) -> int:
    """The edge a client IP is sent to: BLAKE2b of the address, mod 3."""
    return int.from_bytes(hashlib.blake2b(ip.encode(), digest_size=8).digest(), "big") % len(EDGES)


# ---------------------------------------------------------------------------- the origin's answers


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    size: int
    content_type: str


def content_type(url: str) -> str:
    path = url.split("?", 1)[0]
    last = path.rsplit("/", 1)[-1]
    if "." not in last:
        return "text/html"
    guessed, _ = mimetypes.guess_type("x" + path)
    return guessed or "application/octet-stream"


def answer_for(lines: list[LogLine]) -> Answer:
    """What the origin answers for one URL, from all its lines.

    A URL with a 200, 206 or 304 line exists: 200, with the largest size of its
    200 lines (of its 206 lines when it has none: a lower bound), or STAND_IN
    bytes when the log shows only 304s. Other URLs get their most frequent status
    (404, 301, 403, 416, 500) with the largest size logged for it. Capped at BODY_CAP.
    """
    ctype = content_type(lines[0].url)
    statuses = Counter(line.status for line in lines)
    if any(status in statuses for status in OK_STATUSES):
        sizes = [ln.size for ln in lines if ln.status == "200" and ln.size is not None]
        sizes = sizes or [ln.size for ln in lines if ln.status == "206" and ln.size is not None]
        return Answer(200, min(max(sizes, default=STAND_IN), BODY_CAP), ctype)
    status = statuses.most_common(1)[0][0]
    sizes = [ln.size for ln in lines if ln.status == status and ln.size is not None]
    return Answer(int(status), min(max(sizes, default=0), BODY_CAP), ctype)


def origin_plan(requests: Iterable[LogLine]) -> dict[str, Answer]:
    by_url: dict[str, list[LogLine]] = {}
    for line in requests:
        by_url.setdefault(line.url, []).append(line)
    return {url: answer_for(lines) for url, lines in by_url.items()}


# ---------------------------------------------------------------------------- the replay origin


def plain(obj: Any) -> dict[str, Any]:
    """A dataclass's fields as a dict, Counters as plain dicts (asdict would rebuild a
    Counter from its items, counting the pairs), sets as their size."""
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, set):
            value = len(value)
        elif isinstance(value, Counter):
            value = dict(value)
        out[f.name] = value
    return out


@dataclass
class OriginStats:
    total: int = 0
    replay: int = 0  # requests carrying REPLAY_HEADER: caused by the replay
    untagged: int = 0  # health probes (and a shield's fetch for a probe)
    unknown: int = 0  # targets not in the plan (answered 404)
    by_method: Counter[str] = field(default_factory=Counter)
    by_sender: Counter[str] = field(default_factory=Counter)  # the last Via hop
    by_path: Counter[str] = field(default_factory=Counter)  # replay requests, by trace URL
    untagged_paths: Counter[str] = field(default_factory=Counter)
    rewritten: Counter[str] = field(default_factory=Counter)  # "trace URL -> received target"

    def count(self, request: web.Request, url: str | None) -> None:
        """One request; `url` is the trace URL it was matched to (None: unknown)."""
        self.total += 1
        self.by_method[request.method] += 1
        via = request.headers.get("Via", "")
        self.by_sender[via.rsplit(",", 1)[-1].strip().partition(" ")[2] or "(no Via)"] += 1
        if url is None:
            self.unknown += 1
        elif url != request.raw_path:
            self.rewritten[f"{url} -> {request.raw_path}"] += 1
        if REPLAY_HEADER in request.headers:
            self.replay += 1
            self.by_path[url or request.raw_path] += 1
        else:
            self.untagged += 1
            self.untagged_paths[request.raw_path] += 1


def requoted(url: str) -> str:
    """`url` as yarl re-quotes it when handed a string (what aiohttp sends for it)."""
    try:
        return URL("http://origin" + url).raw_path_qs
    except ValueError:
        return url


def origin_app(plan: dict[str, Answer]) -> web.Application:
    stats = OriginStats()
    filler = (b"pinedge replay origin\n" * (BODY_CAP // 22 + 1))[:BODY_CAP]
    # A target that arrives re-encoded is matched through the form yarl gives it.
    aliases = {requoted(url): url for url in plan if requoted(url) not in plan}

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.raw_path == STATS_PATH:
            return web.json_response(plain(stats))
        url = request.raw_path if request.raw_path in plan else aliases.get(request.raw_path)
        stats.count(request, url)
        answer = None if url is None else plan[url]
        if answer is None:
            return web.Response(status=404, text="not in the trace\n")
        headers = {"Cache-Control": f"max-age={MAX_AGE}", "Content-Type": answer.content_type}
        if answer.status in (301, 302):
            headers["Location"] = request.path.rstrip("/") + "/"
        return web.Response(status=answer.status, body=filler[: answer.size], headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def serve_origin(port: int, plan_path: Path) -> None:
    raw = json.loads(plan_path.read_text())
    plan = {url: Answer(*value) for url, value in raw.items()}
    web.run_app(origin_app(plan), host="127.0.0.1", port=port, access_log=None, print=None)


# ---------------------------------------------------------------------------- processes


@dataclass
class Node:
    name: str
    server: Server
    port: int
    admin: int


@dataclass
class Topology:
    origin: Server
    origin_port: int
    shields: list[Node]
    edges: list[Node]


def start_origin(tmp: Path, plan_path: Path, tag: str) -> tuple[Server, int]:
    return start_script_origin(
        tmp, f"{tag}-origin", __file__, ["--plan", str(plan_path)], STATS_PATH
    )


def start_node(
    tmp: Path, tag: str, name: str, upstream_port: int, args: argparse.Namespace, extra: list[str]
) -> Node:
    """A one-worker node, started without waiting: wait_ready waits for a group."""
    edge: Edge = start_edge(
        tmp,
        f"{tag}-{name}",
        upstream_port,
        cache_mem=args.cache_mem,
        workers=1,
        name=name,
        extra=extra,
        ready_timeout=None,
    )
    return Node(name, edge.server, edge.port, edge.admin)


def wait_ready(nodes: list[Node]) -> None:
    for node in nodes:
        wait_http(node.server, node.admin, "/readyz", timeout=120)


def start_topology(
    tmp: Path, plan_path: Path, tag: str, shielded: bool, args: argparse.Namespace
) -> Topology:
    origin, origin_port = start_origin(tmp, plan_path, tag)
    shields: list[Node] = []
    if shielded:
        shields = [
            start_node(tmp, tag, name, origin_port, args, ["--role", "shield"]) for name in SHIELDS
        ]
        wait_ready(shields)  # before the edges' first health probe of them
    flags = [arg for s in shields for arg in ("--shield", f"http://127.0.0.1:{s.port}")]
    edges = [start_node(tmp, tag, name, origin_port, args, flags) for name in EDGES]
    wait_ready(edges)
    return Topology(origin, origin_port, shields, edges)


def stop_topology(topology: Topology) -> None:
    for node in [*topology.edges, *topology.shields]:
        node.server.stop()
    topology.origin.stop()


# ---------------------------------------------------------------------------- the replay


@dataclass
class EdgeTally:
    name: str
    clients: set[str] = field(default_factory=set)
    requests: int = 0
    hits: int = 0
    forwarded: Counter[str] = field(default_factory=Counter)  # by fwd= value
    shield: Counter[str] = field(default_factory=Counter)  # forwarded: what the shield said
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    wrong_length_urls: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return plain(self)


def split_outside_quotes(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def cache_status_entries(value: str) -> list[tuple[str, dict[str, str]]]:
    """Cache-Status (RFC 9211) as (cache name, parameters), first hop first."""
    entries = []
    for member in split_outside_quotes(value, ","):
        name, *params = split_outside_quotes(member, ";")
        pairs = (p.partition("=") for p in params)
        entries.append((name.strip('"'), {k.strip(): v.strip('"') for k, _, v in pairs}))
    return entries


def outcome(entries: list[tuple[str, dict[str, str]]], name: str) -> str | None:
    """'hit', 'fwd=VALUE' or 'other' for cache `name`'s entry (the last of that name)."""
    for cache, params in reversed(entries):
        if cache == name:
            if "hit" in params:
                return "hit"
            return f"fwd={params['fwd']}" if "fwd" in params else "other"
    return None


def tally_response(
    tally: EdgeTally,
    url: str,
    status: int,
    header: str,
    body_length: int,
    expected: Answer | None,
) -> None:
    tally.statuses[status] += 1
    entries = cache_status_entries(header)
    own = outcome(entries, tally.name)
    if own == "hit":
        tally.hits += 1
    else:
        tally.forwarded[own or "(no entry)"] += 1
        for shield in SHIELDS:
            said = outcome(entries, shield)
            if said is not None:
                tally.shield[f"{shield} {said}"] += 1
    if expected is not None and status == expected.status and body_length != expected.size:
        tally.wrong_length_urls.append(url)


async def send(
    session: aiohttp.ClientSession,
    port: int,
    index: int,
    line: LogLine,
    tally: EdgeTally,
    expected: Answer | None,
) -> None:
    url = URL(f"http://127.0.0.1:{port}{line.url}", encoded=True)
    headers = {REPLAY_HEADER: str(index)}
    try:
        async with session.request(
            line.method, url, headers=headers, allow_redirects=False
        ) as resp:
            body = await resp.read()
            header = resp.headers.get("Cache-Status", "")
            length = len(body) if line.method == "GET" else (expected.size if expected else 0)
            tally_response(tally, line.url, resp.status, header, length, expected)
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.errors[type(exc).__name__] += 1


async def replay(
    requests: list[LogLine], edges: list[Node], plan: dict[str, Answer], concurrency: int
) -> list[EdgeTally]:
    """Every request to its client's edge, `concurrency` in flight, taken in log order."""
    tallies = [EdgeTally(node.name) for node in edges]
    queue: Iterator[tuple[int, LogLine]] = iter(enumerate(requests))
    timeout = aiohttp.ClientTimeout(total=180)
    connector = aiohttp.TCPConnector(limit=concurrency * len(edges))
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent"),
    ) as session:

        async def worker() -> None:
            for index, line in queue:
                which = edge_of(line.ip)
                tallies[which].requests += 1
                tallies[which].clients.add(line.ip)
                node = edges[which]
                await send(session, node.port, index, line, tallies[which], plan.get(line.url))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tallies


# ---------------------------------------------------------------------------- metrics


METRIC = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(admin: int) -> list[tuple[str, dict[str, str], float]]:
    status, _, body = http_get(admin, "/metrics", timeout=30)
    if status != 200:
        raise BenchError(f"GET /metrics on port {admin}: status {status}")
    samples = []
    for line in body.decode().splitlines():
        match = METRIC.match(line)
        if match and not line.startswith("#"):
            labels = dict(LABEL.findall(match.group(2) or ""))
            samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def metric_total(samples: list[tuple[str, dict[str, str], float]], name: str) -> float:
    return sum(value for metric, _, value in samples if metric == name)


def upstream_requests(
    samples: list[tuple[str, dict[str, str], float]], names: dict[str, str]
) -> dict[str, int]:
    """pinedge_upstream_requests_total summed by upstream, named by `names`
    (upstream URL -> node name); origins are 'origin'."""
    totals: Counter[str] = Counter()
    for metric, labels, value in samples:
        if metric == "pinedge_upstream_requests_total":
            kind, _, url = labels.get("upstream", "").partition(" ")
            totals["origin" if kind == "origin" else names.get(url, url)] += int(value)
    return dict(totals)


@dataclass
class NodeMetrics:
    upstream: dict[str, int]
    evictions: float
    collapsed: float
    breaker_opens: float
    probes: float


def node_metrics(node: Node, names: dict[str, str]) -> NodeMetrics:
    samples = scrape(node.admin)
    return NodeMetrics(
        upstream_requests(samples, names),
        metric_total(samples, "pinedge_store_evictions_total"),
        metric_total(samples, "pinedge_collapsed_requests_total"),
        metric_total(samples, "pinedge_upstream_breaker_opens_total"),
        metric_total(samples, "pinedge_upstream_probes_total"),
    )


# ---------------------------------------------------------------------------- one run


@dataclass
class Run:
    scenario: str  # "A" or "B"
    replayed: int
    origin: dict[str, Any]  # OriginStats as a dict
    edges: list[dict[str, Any]]
    metrics: dict[str, dict[str, Any]]  # node name -> NodeMetrics
    seconds: float

    @property
    def origin_requests(self) -> int:
        return int(self.origin["replay"])

    @property
    def share(self) -> float:
        return self.origin_requests / self.replayed


def run_scenario(
    tmp: Path,
    trace: Trace,
    plan: dict[str, Answer],
    plan_path: Path,
    tag: str,
    shielded: bool,
    args: argparse.Namespace,
) -> Run:
    topology = start_topology(tmp, plan_path, tag, shielded, args)
    try:
        started = time.monotonic()
        tallies = asyncio.run(replay(trace.requests, topology.edges, plan, args.concurrency))
        seconds = time.monotonic() - started
        time.sleep(2.5)  # workers report metrics to their supervisor every second
        names = {f"http://127.0.0.1:{s.port}": s.name for s in topology.shields}
        metrics = {
            n.name: asdict(node_metrics(n, names)) for n in [*topology.shields, *topology.edges]
        }
        code, _, body = http_get(topology.origin_port, STATS_PATH)
        if code != 200:
            raise BenchError(f"the replay origin's {STATS_PATH}: status {code}")
        origin = json.loads(body)
    finally:
        stop_topology(topology)
    return Run(
        "B" if shielded else "A",
        len(trace.requests),
        origin,
        [t.as_dict() for t in tallies],
        metrics,
        seconds,
    )


# ---------------------------------------------------------------------------- the model


@dataclass
class Model:
    """Origin requests if every request were served one at a time by caches that
    never evict or expire: what the counts should be, give or take concurrency."""

    keys: int  # unique cache keys among replayed requests the edge accepts
    edge_keys: int  # unique (edge, key) pairs
    rejected: int  # requests the edge refuses before its cache (check_target)
    a: int
    b: int
    heads: int
    per_key: dict[str, Counter[str]]  # scenario -> cache key -> origin requests


def cache_key(url: str) -> str | None:
    try:
        check_target(url)
    except EdgeError:
        return None
    return primary_key("http", "127.0.0.1", url)


def model(requests: list[LogLine]) -> Model:
    """A: a miss at the client's edge goes to the origin. B: it goes to the shield
    (one shared set, since every edge sends a key to the same shield), whose miss
    goes to the origin. A GET miss stores the answer; a HEAD miss passes through."""
    edges: list[set[str]] = [set() for _ in EDGES]
    shield: set[str] = set()
    per_key: dict[str, Counter[str]] = {"A": Counter(), "B": Counter()}
    pairs: set[tuple[int, str]] = set()
    rejected = 0
    for line in requests:
        key = cache_key(line.url)
        if key is None:
            rejected += 1
            continue
        edge = edge_of(line.ip)
        pairs.add((edge, key))
        if key not in edges[edge]:
            per_key["A"][key] += 1
            if key not in shield:
                per_key["B"][key] += 1
        if line.method == "GET":
            edges[edge].add(key)
            shield.add(key)
    heads = sum(line.method == "HEAD" for line in requests)
    totals = {name: sum(counts.values()) for name, counts in per_key.items()}
    keys = len({key for _, key in pairs})
    return Model(keys, len(pairs), rejected, totals["A"], totals["B"], heads, per_key)


def key_differences(run: Run, m: Model) -> list[tuple[str, int, int]]:
    """(key, model, measured) for every cache key whose origin count is not the model's."""
    expected = m.per_key[run.scenario]
    got: Counter[str] = Counter()
    for url, n in run.origin["by_path"].items():
        got[cache_key(url) or url] += n
    return sorted(
        (key, expected[key], got[key])
        for key in expected.keys() | got.keys()
        if expected[key] != got[key]
    )


# ---------------------------------------------------------------------------- the report


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.2f}%" if whole else "—"


def shown_path(path: Path) -> str:
    resolved = path.resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(path)


def describe(
    report: Report, trace: Trace, plan: dict[str, Answer], args: argparse.Namespace, m: Model
) -> None:
    codes = Counter(a.status for a in plan.values() if a.status != 200)
    mirrored = [f"{code} for {n} URL{'s' * (n > 1)}" for code, n in codes.most_common()]
    gets = len(trace.requests) - m.heads
    skipped = ", ".join(f"{n} {method}" for method, n in sorted(trace.skipped.items()))
    clients = Counter(edge_of(line.ip) for line in trace.requests)
    ips = [len({ln.ip for ln in trace.requests if edge_of(ln.ip) == i}) for i in range(len(EDGES))]
    spread = ", ".join(
        f"{name} {clients[i]:,} requests from {ips[i]:,} clients" for i, name in enumerate(EDGES)
    )
    report.add(
        "## Set-up",
        "",
        f"- **Trace**: `{shown_path(args.trace)}` ({trace.lines:,} lines read"
        + (", `--quick`: the first 2,000 only" if args.quick else "")
        + f"), parsed with bench/eviction.py's line pattern. Replayed: its {gets:,} GET and "
        f"{m.heads} HEAD lines, in log order. Skipped: {skipped or 'none'}"
        + (f", {trace.unmatched} unparsed lines" if trace.unmatched else "")
        + ".",
        "- **Replay origin** (this script, `--serve-origin`, aiohttp): answers per URL, not per "
        "line. A URL the log shows with a 200, 206 or 304 is answered 200 with a body of the "
        "largest size its 200 lines logged (its 206 lines' when it has no 200; 1 KiB when it "
        "only has 304s, whose size the log does not give). Other URLs get their logged status "
        f"({', '.join(mirrored)}) with the logged body size. Bodies are capped at 256 KiB. "
        "Every answer says `Cache-Control: max-age=86400` and a Content-Type guessed from the "
        "extension (text/html without one). The log carries no caching headers, so, as in "
        "bench/eviction.py, every object is taken as cacheable and, at replay speed, never "
        "expires; unlike eviction.py the 404s, 301s and the rest are replayed and cached too, "
        "as a CDN caches them when the origin gives them a lifetime.",
        f"- **The measure**: the replay origin counts the requests that reach it. The client "
        f"tags every request with an `{REPLAY_HEADER}` header, which the nodes pass upstream; "
        "requests without it are the nodes' health probes (`GET /` every 5 s to each "
        "upstream; in B the edges probe the origin directly as well as both shields, and a "
        "probe of a shield that misses is fetched from the origin), counted apart and left "
        "out of the share. **Origin share** = tagged "
        "requests at the origin / requests replayed.",
        f"- **A, edges only**: three `pinedge edge` nodes ({', '.join(EDGES)}), `--workers 1 "
        f"--cache-mem {args.cache_mem}`, with `--origin` the replay origin.",
        f"- **B, edges + two shields**: {' and '.join(SHIELDS)}, `pinedge edge --role shield "
        "--workers 1` with the same cache, `--origin` the replay origin; the three edges get "
        "`--shield URL` for both, so each cache key goes to one shield (rendezvous hashing, "
        "the same choice on every edge).",
        f"- **Clients**: each request goes to the edge BLAKE2b(client IP) mod 3 picks, so a "
        f"client sticks to one edge, as GeoDNS or a load balancer would do: {spread}. One "
        f"aiohttp client, {args.concurrency} requests in flight, taken in log order; no "
        "`Accept`, `Accept-Encoding` or conditional headers, so every answer is the stored "
        "object itself (image and compression variants are derived at the edge from the "
        "stored source, edge/variants/derive.py, so they would add no origin requests).",
        "- Every scenario of every round starts fresh processes (origin, shields, edges), "
        "each round runs A then B. After a replay the script waits 2.5 s and reads every "
        "node's `/metrics` (`pinedge_upstream_requests_total` by upstream).",
        "",
    )


def results_table(report: Report, pairs: list[tuple[Run, Run]]) -> None:
    report.add(
        "## Origin share",
        "",
        "| round | requests replayed | A: origin requests | A: origin share "
        "| B: origin requests | B: origin share | B/A | A replay s | B replay s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    )
    for i, (a, b) in enumerate(pairs, 1):
        report.add(
            f"| {i} | {a.replayed:,} | {a.origin_requests:,} "
            f"| {pct(a.origin_requests, a.replayed)} "
            f"| {b.origin_requests:,} | {pct(b.origin_requests, b.replayed)} "
            f"| {b.share / a.share:.3f} | {a.seconds:.1f} | {b.seconds:.1f} |"
        )
    a_med = median([a.origin_requests for a, _ in pairs])
    b_med = median([b.origin_requests for _, b in pairs])
    replayed = pairs[0][0].replayed
    ratio = median([b.share / a.share for a, b in pairs])
    report.add(
        f"| **median** | {replayed:,} | {a_med:,.0f} | {pct(a_med, replayed)} | {b_med:,.0f} "
        f"| {pct(b_med, replayed)} | {ratio:.3f} | | |",
        "",
        "*Replay s*: how long the replay took, for information only (the machine is shared "
        "and 8 requests in flight is far below what the nodes can take).",
        "",
    )


def spread(counts: list[int]) -> str:
    if len(set(counts)) == 1:
        return f"{counts[0]:,} in every round"
    return f"{min(counts):,}–{max(counts):,}"


def identical_note(pairs: list[tuple[Run, Run]]) -> str:
    if len(pairs) == 1:
        return "One round only."
    a_counts = [a.origin_requests for a, _ in pairs]
    b_counts = [b.origin_requests for _, b in pairs]
    same = len(set(a_counts)) == len(set(b_counts)) == 1
    return f"Origin requests: A {spread(a_counts)}, B {spread(b_counts)}" + (
        " (identical rounds)."
        if same
        else "; the Checks below list, per round, the URLs whose counts moved and why."
    )


def edge_table(report: Report, run: Run, label: str) -> None:
    shielded = run.scenario == "B"
    head = "| edge | clients | requests | hits | forwarded | hit ratio |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if shielded:
        head += " forwarded: shield hit | forwarded: shield fwd |"
        rule += "---:|---:|"
    report.add(f"**{label}**", "", head, rule)
    for edge in run.edges:
        forwarded = sum(edge["forwarded"].values())
        row = (
            f"| {edge['name']} | {edge['clients']:,} | {edge['requests']:,} | {edge['hits']:,} "
            f"| {forwarded:,} | {pct(edge['hits'], edge['requests'])} |"
        )
        if shielded:
            shield = Counter[str]()
            for key, n in edge["shield"].items():
                shield[key.split(" ", 1)[1].split("=")[0]] += n
            row += f" {shield['hit']:,} | {shield['fwd']:,} |"
        report.add(row)
    report.add("")


def forwarded_kinds(run: Run) -> str:
    kinds: Counter[str] = Counter()
    for edge in run.edges:
        kinds.update(edge["forwarded"])
    return ", ".join(f"`{k}` {n:,}" for k, n in kinds.most_common())


def shield_table(report: Report, runs: list[Run]) -> None:
    report.add(
        "**B: requests per shield** (from `/metrics`: the edges' `pinedge_upstream_requests_"
        "total` by shield, summed over the three edges, and each shield's to its origin)",
        "",
        "| round | " + " | ".join(f"edges → {s} | {s} → origin" for s in SHIELDS) + " "
        "| edges → origin (fallback) |",
        "|---:|" + "---:|---:|" * len(SHIELDS) + "---:|",
    )
    for i, run in enumerate(runs, 1):
        cells = []
        for shield in SHIELDS:
            sent = sum(run.metrics[e]["upstream"].get(shield, 0) for e in EDGES)
            cells += [f"{sent:,}", f"{run.metrics[shield]['upstream'].get('origin', 0):,}"]
        fallback = sum(run.metrics[e]["upstream"].get("origin", 0) for e in EDGES)
        report.add(f"| {i} | " + " | ".join(cells) + f" | {fallback:,} |")
    report.add("")


def model_section(report: Report, m: Model, pairs: list[tuple[Run, Run]], head_issue: bool) -> None:
    a_med = median([a.origin_requests for a, _ in pairs])
    b_med = median([b.origin_requests for _, b in pairs])
    replayed = pairs[0][0].replayed
    report.add(
        "## What to expect",
        "",
        f"- **{m.keys:,} unique cache keys** among the replayed requests (URL with its query "
        "normalised, as the edge keys it"
        + (
            f"; {m.rejected} request(s) the edge refuses with a 400 before its cache "
            "(`check_target`: a `%09` in the path) are not counted"
            if m.rejected
            else ""
        )
        + "). With one shared cache that never evicts, that is the floor of origin requests: "
        f"{pct(m.keys, replayed)} of the requests.",
        f"- Three independent edges can each fetch every key once: at most 3 × {m.keys:,} = "
        f"{3 * m.keys:,}. With clients stuck to edges, {m.edge_keys:,} (edge, key) pairs occur: "
        f"that is what A has to fetch ({pct(m.edge_keys, replayed)}), "
        f"{m.edge_keys / m.keys:.2f}× the floor.",
        f"- The same requests played one at a time through caches that never evict or expire "
        f"(HEAD misses pass through and store nothing): **A {m.a:,} "
        f"({pct(m.a, replayed)}), B {m.b:,} ({pct(m.b, replayed)})**, B/A "
        f"{m.b / m.a:.3f}. Measured medians: A {a_med:,.0f}, B {b_med:,.0f}. What can make "
        "them differ: requests for one key in flight together on different nodes (each "
        "forwards; a node collapses only its own); the health probes (in B each edge probes "
        "`GET /` through both shields, so a shield may hold `/`, fetched untagged, before a "
        "client asks for it)"
        + (
            "; and, found here, a HEAD miss going to another shield than the GETs of its URL "
            "(see the last section)."
            if head_issue
            else "."
        ),
        "",
    )


def short(key: str, limit: int = 60) -> str:
    path = key.removeprefix("http://127.0.0.1")
    return path if len(path) <= limit else path[: limit - 1] + "…"


def run_checks(run: Run, m: Model, heads: set[str]) -> str:
    errors = sum(sum(e["errors"].values()) for e in run.edges)
    wrong = [url for e in run.edges for url in e["wrong_length_urls"]]
    statuses: Counter[str] = Counter()
    for edge in run.edges:
        statuses.update({str(k): v for k, v in edge["statuses"].items()})
    evictions = sum(n["evictions"] for n in run.metrics.values())
    opens = sum(n["breaker_opens"] for n in run.metrics.values())
    diffs = key_differences(run, m)
    moved = (
        ", ".join(
            f"`{short(k)}` {want}→{got}" + (" (HEAD in the trace)" if k in heads else "")
            for k, want, got in diffs
        )
        or "none"
    )
    rewritten = sum(run.origin["rewritten"].values())
    return (
        "statuses "
        + ", ".join(f"{k} ×{v:,}" for k, v in sorted(statuses.items()))
        + f"; client errors {errors}; bodies of an unexpected length {len(wrong)}"
        + (f" ({', '.join(f'`{short(u)}`' for u in wrong[:5])})" if wrong else "")
        + f"; evictions {evictions:.0f}; breaker opens {opens:.0f}; untagged (probe) origin "
        f"requests {run.origin['untagged']}; targets unknown to the origin "
        f"{run.origin['unknown']}; targets the nodes re-encoded on the way to the origin "
        f"{rewritten}; edge forwards by kind: {forwarded_kinds(run)}; origin count per key "
        f"differing from the model: {moved}."
    )


def head_keys(trace: Trace) -> set[str]:
    keys = {cache_key(line.url) for line in trace.requests if line.method == "HEAD"}
    return {key for key in keys if key is not None}


def diagnostics(report: Report, trace: Trace, m: Model, pairs: list[tuple[Run, Run]]) -> None:
    heads = head_keys(trace)
    notes = [
        f"- round {i} {run.scenario}: {run_checks(run, m, heads)}"
        for i, pair in enumerate(pairs, 1)
        for run in pair
    ]
    report.add("## Checks", "", *notes, "")


def head_note(extra: set[str]) -> str:
    return (
        f"- **A HEAD miss can go to the other shield.** In B, the origin saw more requests than "
        f"the model for {len(extra)} URL(s) that HEAD requests ask for "
        f"({', '.join(f'`{short(k)}`' for k in sorted(extra))}). An edge passes a HEAD miss "
        "through (`Edge.pass_through` in `edge/pipeline/proxy.py`), and it calls `send()` without "
        "`key=`, so `Upstreams.order` ranks the shields by `route.host + target` "
        "(`127.0.0.1/path`) rather than by the cache key (`http://127.0.0.1/path`) that GETs "
        "are ranked by. Where the two rankings differ the HEAD goes to the shield that does "
        "not hold the object, misses there, and reaches the origin. The ranking hashes the "
        "shields' URLs, whose ports change every round, so which URLs are affected changes "
        "from round to round."
    )


def where_differ(sent: str, received: str) -> str:
    """The two targets around their first difference."""
    i = next(
        (n for n, (x, y) in enumerate(zip(sent, received, strict=False)) if x != y),
        min(len(sent), len(received)),
    )
    start = max(i - 12, 0)

    def cut(text: str) -> str:
        return ("…" if start else "") + text[start : i + 16] + ("…" if len(text) > i + 16 else "")

    return f"`{cut(sent)}` arrived as `{cut(received)}`"


def rewrite_note(pairs: set[str]) -> str:
    examples = "; ".join(where_differ(*pair.split(" -> ", 1)) for pair in sorted(pairs))
    return REWRITE_NOTE + f" Here: {examples}."


REWRITE_NOTE = (
    "- **The target sent upstream is re-encoded.** The nodes hand aiohttp the string "
    "`upstream.url + target` (`Edge.send` → `Upstream.request`), and yarl re-quotes it: "
    "percent-encoded `(`, `)` and `'` in a path are decoded (yarl does the same to `;`, `=` "
    "and `@`) and an empty query `?` is dropped, so the origin is asked for another "
    "URI than the client's (RFC 3986 §6.2.2.2 allows decoding only unreserved characters). "
    "The replay origin matches such targets through the same re-quoting, so the counts are "
    "unaffected."
)


def head_extra(trace: Trace, m: Model, pairs: list[tuple[Run, Run]]) -> set[str]:
    """Keys HEAD requests ask for that reached the origin more often in B than the model says."""
    heads = head_keys(trace)
    return {
        key
        for _, b in pairs
        for key, want, got in key_differences(b, m)
        if got > want and key in heads
    }


def findings(report: Report, trace: Trace, m: Model, pairs: list[tuple[Run, Run]]) -> None:
    extra = head_extra(trace, m, pairs)
    rewritten = {text for pair in pairs for run in pair for text in run.origin["rewritten"]}
    notes = [head_note(extra)] if extra else []
    notes += [rewrite_note(rewritten)] if rewritten else []
    if notes:
        report.add("## pinedge behaviour this run exposed", "", *notes, "")


def write_report(
    report: Report, trace: Trace, args: argparse.Namespace, m: Model, pairs: list[tuple[Run, Run]]
) -> None:
    results_table(report, pairs)
    a_med = median([a.share for a, _ in pairs])
    b_med = median([b.share for _, b in pairs])
    verdict = "met" if b_med < a_med else "NOT MET"
    report.add(
        identical_note(pairs),
        "",
        f"Target: shields must cut the origin share (B < A): A {100 * a_med:.2f}% → "
        f"B {100 * b_med:.2f}% (B/A {b_med / a_med:.3f}), {verdict}."
        + (" (`--quick`: not a result.)" if args.quick else ""),
        "",
        "## Per edge",
        "",
        "Hits and forwards from each response's `Cache-Status`: the edge's own entry "
        "(`hit`, or `fwd=`), and in B the shield's entry of a forwarded response; round 1 "
        "(see the JSON for every round). *Forwarded* includes collapsed requests, which wait "
        "for another request's fetch on the same node and send nothing upstream, so it can "
        "exceed the node's upstream requests in `/metrics`.",
        "",
    )
    a1, b1 = pairs[0]
    edge_table(report, a1, "A: edges only")
    edge_table(report, b1, "B: edges + two shields")
    shield_table(report, [b for _, b in pairs])
    model_section(report, m, pairs, bool(head_extra(trace, m, pairs)))
    diagnostics(report, trace, m, pairs)
    findings(report, trace, m, pairs)


# ---------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of A then B (default 3)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (8)")
    parser.add_argument("--cache-mem", default="512MiB", help="each node's --cache-mem")
    parser.add_argument("--trace", type=Path, default=TRACE)
    parser.add_argument("--quick", action="store_true", help="first 2,000 lines, one round")
    parser.add_argument("--md", type=Path, help="also write the report (Markdown) here")
    parser.add_argument("--json", type=Path, help="every number as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server logs)")
    parser.add_argument("--serve-origin", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--plan", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def header(report: Report, args: argparse.Namespace) -> None:
    report.add(
        "# Shields: origin share replaying a real access log",
        "",
        f"{run_line('shields.py')}: one run on a 2-core shared "
        f"machine ({os.cpu_count()} CPUs seen), Python {platform.python_version()}, "
        f"aiohttp {aiohttp.__version__}."
        + (" **`--quick`: a smoke run, its numbers are not a result.**" if args.quick else ""),
        "",
    )


def run_rounds(
    args: argparse.Namespace, trace: Trace, plan: dict[str, Answer], tmp: Path
) -> list[tuple[Run, Run]]:
    plan_path = tmp / "plan.json"
    plan_path.write_text(json.dumps({url: list(asdict(a).values()) for url, a in plan.items()}))
    pairs = []
    for i in range(1, args.rounds + 1):
        runs = []
        for shielded in (False, True):
            tag = f"r{i}{'B' if shielded else 'A'}"
            print(f"round {i}, scenario {tag[-1]}: replaying...", file=sys.stderr, flush=True)
            run = run_scenario(tmp, trace, plan, plan_path, tag, shielded, args)
            print(
                f"  {run.origin_requests:,} of {run.replayed:,} reached the origin "
                f"({pct(run.origin_requests, run.replayed)}) in {run.seconds:.1f}s",
                file=sys.stderr,
                flush=True,
            )
            runs.append(run)
        pairs.append((runs[0], runs[1]))
    return pairs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_origin is not None:
        serve_origin(args.serve_origin, args.plan)
        return 0
    if args.quick:
        args.rounds = 1
    trace = load_trace(args.trace, QUICK_LINES if args.quick else None)
    plan = origin_plan(trace.requests)
    m = model(trace.requests)
    report = Report()
    header(report, args)
    describe(report, trace, plan, args, m)
    pairs: list[tuple[Run, Run]] = []

    def body(tmp: Path) -> None:
        pairs.extend(run_rounds(args, trace, plan, tmp))
        write_report(report, trace, args, m, pairs)

    def results() -> dict:
        model_data = {k: v for k, v in plain(m).items() if k != "per_key"}
        return {"model": model_data, "rounds": [[asdict(a), asdict(b)] for a, b in pairs]}

    return session.run(
        body,
        prefix="pinedge-shields-",
        keep=args.keep,
        report=report,
        md=args.md,
        json_path=args.json,
        results=results,
        signals=(signal.SIGTERM, signal.SIGINT),
    )


if __name__ == "__main__":
    sys.exit(main())
