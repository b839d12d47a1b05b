"""A real topology on loopback: three edges, two shields, the sample origin.

The origin runs in this process (so that it can be stopped and started again on
its port); each shield is the real `pinedge edge --role shield` command (a
supervisor and its worker) in a process group of its own, so that it can be
killed whole; the edges are in-process nodes with both shields. What is checked
is what clients see (status, body, Cache-Status), what reached the origin
(`/_origin/stats` on its control listener) and the nodes' /metrics.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gzip
import json
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from edge_support import Reply, RunningEdge, Scripted, StartEdge, send
from support import free_port, sample

from pinedge.origin import OriginConfig, RunningOrigin
from pinedge.origin import start as start_origin

pytestmark = pytest.mark.system

TOKEN = "shield-topology-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SHIELD_NAMES = ("shield-a", "shield-b")
EDGE_NAMES = ("edge-1", "edge-2", "edge-3")
# Settings a shield takes from its config file (there are no flags for them).
SHIELD_SETTINGS = """\
grace = "60s"
probe_interval = "0.2s"
breaker_cooldown = "1s"
drain_time = "1s"
"""
WAIT = 30.0  # how long a poll waits for something that happens in the background
IDENTITY = {"Accept-Encoding": "identity"}


# ── reading answers and metrics ──────────────────────────────────────────────


@dataclass
class Hop:
    """One entry of Cache-Status: a cache's name and its parameters (bare ones True)."""

    name: str
    params: dict[str, str | bool]

    @property
    def hit(self) -> bool:
        return self.params.get("hit") is True


def hops(reply: Reply) -> list[Hop]:
    """Every Cache-Status entry, the cache farthest from the client first."""
    out = []
    for entry in reply.headers.get("Cache-Status", "").split(","):
        if not entry.strip():
            continue
        name, *params = (part.strip() for part in entry.split(";"))
        parsed: dict[str, str | bool] = {}
        for param in params:
            key, eq, value = param.partition("=")
            parsed[key] = value if eq else True
        out.append(Hop(name, parsed))
    return out


async def text_of(client: aiohttp.ClientSession, url: str) -> str:
    async with client.get(url) as response:
        return await response.text()


async def upstream_report(net: Topology, client: aiohttp.ClientSession) -> str:
    """Every node's upstream metrics, for failure messages."""
    lines = []
    nodes = [(net.names[e.url], e.admin_url) for e in net.edges]
    nodes += [(s.name, s.admin) for s in net.shields if not s.killed]
    for name, admin in nodes:
        text = await text_of(client, admin + "/metrics")
        lines += [f"{name}: {line}" for line in text.splitlines() if line.startswith("pinedge_up")]
    return "\n".join(lines)


async def poll(check: Callable[[], Awaitable[bool]], what: str, timeout: float = WAIT) -> None:
    """Wait until `check()` holds; fail saying `what` never happened."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"waited {timeout:.0f}s in vain for: {what}") from None


async def purge(client: aiohttp.ClientSession, admin: str, body: object) -> dict[str, object]:
    async with client.post(admin + "/purge", json=body, headers=AUTH) as response:
        assert response.status == 200, await response.text()
        answer: dict[str, object] = await response.json()
        return answer


# ── the topology ─────────────────────────────────────────────────────────────


@dataclass
class Shield:
    """A `pinedge edge --role shield` node: a supervisor and its worker."""

    name: str
    process: asyncio.subprocess.Process
    url: str
    admin: str
    killed: bool = False
    segments: set[Path] = field(default_factory=set)  # to remove if it is killed

    @property
    def label(self) -> str:
        """How edges name it in their metrics."""
        return f"shield {self.url}"

    def kill(self) -> None:
        """SIGKILL the supervisor and its worker at once (the whole process group);
        the supervisor alone would leave the worker serving the port."""
        if self.process.returncode is None:
            self.segments |= self.shared_memory()
        self.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def shared_memory(self) -> set[Path]:
        """The shared memory segments the supervisor maps (its own: it made them)."""
        try:
            maps = Path(f"/proc/{self.process.pid}/maps").read_text()
        except OSError:
            return set()
        return {Path(p) for p in re.findall(r"(/dev/shm/psm_\w+)", maps)}

    async def metrics(self, client: aiohttp.ClientSession) -> str:
        return await text_of(client, self.admin + "/metrics")

    async def stop(self) -> None:
        """SIGTERM (a clean stop), then SIGKILL for whatever of the group is left."""
        if self.process.returncode is None and not self.killed:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), 15)
        if self.process.returncode is None:  # it did not stop: its whole group goes
            self.kill()
            await self.process.wait()
        if self.killed:  # a killed node leaves its store and shared memory behind
            for leftover in Path("/dev/shm").glob(f"pinedge-store-{self.process.pid}-*"):
                shutil.rmtree(leftover, ignore_errors=True)
            for segment in self.segments:
                segment.unlink(missing_ok=True)


@dataclass
class Topology:
    origin_config: OriginConfig
    origin_runner: RunningOrigin | None
    shields: list[Shield]
    edges: list[RunningEdge]
    names: dict[str, str] = field(default_factory=dict)  # edge URL -> edge name

    @property
    def origin(self) -> str:
        return "http://" + self.origin_config.listen

    @property
    def admins(self) -> list[str]:
        """The admin URL of every node: edges, then shields."""
        return [edge.admin_url for edge in self.edges] + [s.admin for s in self.shields]

    def shield(self, name: str) -> Shield:
        (found,) = (s for s in self.shields if s.name == name)
        return found

    async def origin_hits(self, client: aiohttp.ClientSession, path: str) -> int:
        control = "http://" + self.origin_config.admin
        async with client.get(control + "/_origin/stats") as response:
            stats = await response.json()
        return int(stats["paths"].get(path, 0))

    async def stop_origin(self) -> None:
        assert self.origin_runner is not None
        runner, self.origin_runner = self.origin_runner, None
        await runner.cleanup()

    async def restart_origin(self) -> None:
        """The origin again, on the same ports (its counters start from zero)."""
        assert self.origin_runner is None
        self.origin_runner = await start_origin(self.origin_config)


async def start_shield(
    client: aiohttp.ClientSession, name: str, origin: str, workdir: Path, sockets: Path
) -> tuple[Shield, Callable[[], Awaitable[None]]]:
    """Spawn a shield; returns it and an awaitable that waits until it is ready."""
    port, admin = free_port(), free_port()
    config = workdir / f"{name}.toml"
    config.write_text(SHIELD_SETTINGS)
    with (workdir / f"{name}.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pinedge",
            "edge",
            "--role",
            "shield",
            "--name",
            name,
            "--listen",
            f"127.0.0.1:{port}",
            "--admin",
            f"127.0.0.1:{admin}",
            "--origin",
            origin,
            "--workers",
            "1",
            "--config",
            str(config),
            env={
                **os.environ,
                "PINEDGE_CONFIG": "",
                "PINEDGE_ADMIN_TOKEN": TOKEN,
                "TMPDIR": str(sockets),  # the supervisor's socket directory
            },
            stdout=log,
            stderr=log,
            start_new_session=True,  # its own process group, worker included
        )
    shield = Shield(name, process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}")

    async def ready() -> None:
        async def serving() -> bool:
            assert process.returncode is None, f"{name} exited: see {workdir / name}.log"
            try:
                async with client.get(shield.admin + "/readyz") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await poll(serving, f"{name} to be ready")
        shield.segments |= shield.shared_memory()

    return shield, ready


SpawnShields = Callable[[str], Awaitable[list[Shield]]]


@pytest.fixture
async def spawn_shields(
    client: aiohttp.ClientSession, tmp_path: Path
) -> AsyncIterator[SpawnShields]:
    """`await spawn_shields(origin_url)`: shield-a and shield-b in front of the origin,
    ready; every process of theirs is gone after the test, whatever happened."""
    sockets = Path(tempfile.mkdtemp(prefix="pe-"))  # short: Unix socket paths are limited
    shields: list[Shield] = []

    async def spawn(origin: str) -> list[Shield]:
        pair, waits = [], []
        for name in SHIELD_NAMES:
            shield, ready = await start_shield(client, name, origin, tmp_path, sockets)
            shields.append(shield)
            pair.append(shield)
            waits.append(ready())
        await asyncio.gather(*waits)
        return pair

    try:
        yield spawn
    finally:
        await asyncio.gather(*(shield.stop() for shield in shields))
        shutil.rmtree(sockets, ignore_errors=True)


StartTopology = Callable[..., Awaitable[Topology]]


@pytest.fixture
async def start_topology(
    start_edge: StartEdge, spawn_shields: SpawnShields, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[StartTopology]:
    """`await start_topology(html_ttl=60.0)`: the origin, two shields in front of it
    and three edges with both shields, every node with the same admin token."""
    monkeypatch.setenv("PINEDGE_ADMIN_TOKEN", TOKEN)  # for the in-process edges
    started: list[Topology] = []

    async def start(html_ttl: float = 60.0) -> Topology:
        config = OriginConfig(
            listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}", html_ttl=html_ttl
        )
        net = Topology(config, await start_origin(config), [], [])
        started.append(net)
        net.shields = await spawn_shields(net.origin)
        for name in EDGE_NAMES:
            edge = await start_edge(
                net.origin, name=name, shield=[s.url for s in net.shields], grace="60s"
            )
            net.edges.append(edge)
            net.names[edge.url] = name
        return net

    try:
        yield start
    finally:
        for net in started:
            if net.origin_runner is not None:
                await net.origin_runner.cleanup()


# ── the tests ────────────────────────────────────────────────────────────────


async def test_three_hundred_concurrent_misses_over_three_edges_reach_the_origin_once(
    start_topology: StartTopology, client: aiohttp.ClientSession
) -> None:
    net = await start_topology()
    path = "/pin/1"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as many:
        replies = await asyncio.gather(
            *(send(many, edge.url + path) for _ in range(100) for edge in net.edges)
        )

    assert [r.status for r in replies] == [200] * 300
    assert len({r.body for r in replies}) == 1
    assert replies[0].headers["Content-Type"].startswith("text/html")
    assert await net.origin_hits(client, path) == 1
    # All of them went through the URL's one shield, and each edge stored the page.
    assert len({hops(r)[0].name for r in replies}) == 1
    stored = {hops(r)[-1].name for r in replies if hops(r)[-1].params.get("stored")}
    assert stored == set(EDGE_NAMES)


async def test_every_edge_sends_a_url_to_the_same_shield_and_clients_never_see_its_tags(
    start_topology: StartTopology, client: aiohttp.ClientSession
) -> None:
    net = await start_topology()
    paths = [f"/pin/{n}" for n in range(2, 18)]
    chosen: dict[str, set[str]] = collections.defaultdict(set)

    for path in paths:
        for number, edge in enumerate(net.edges):
            reply = await send(client, edge.url + path)
            assert reply.status == 200
            assert "Surrogate-Key" not in reply.headers and "Cache-Tag" not in reply.headers
            shield, own = hops(reply)  # the shield's entry first, then the edge's
            assert own.name == EDGE_NAMES[number]
            assert own.params.get("fwd") == "miss" and own.params.get("stored")
            assert shield.name in SHIELD_NAMES
            if number == 0:  # the shield's first request for the URL
                assert shield.params.get("fwd") == "miss" and shield.params.get("stored")
            else:  # stored there, or still being stored: no second origin request
                assert shield.hit or shield.params.get("collapsed"), reply.headers["Cache-Status"]
            chosen[path].add(shield.name)
        again = await send(client, net.edges[0].url + path)
        assert hops(again)[-1].hit and hops(again)[-1].name == "edge-1"
        assert "Surrogate-Key" not in again.headers and "Cache-Tag" not in again.headers
        assert await net.origin_hits(client, path) == 1

    assert {path: len(names) for path, names in chosen.items()} == dict.fromkeys(paths, 1)
    # Rendezvous hashing spreads the keys: both shields hold some (2 in 2**15 that not).
    assert set().union(*chosen.values()) == set(SHIELD_NAMES)
    # The shield itself keeps the tags in its answers: its edges index them.
    (owner,) = chosen[paths[0]]
    direct = await send(client, net.shield(owner).url + paths[0])
    assert direct.status == 200 and hops(direct)[0].hit
    assert "pin-2" in direct.headers["Surrogate-Key"].split()


async def test_a_tag_purge_on_every_node_refetches_the_tagged_page_once_and_keeps_the_rest(
    start_topology: StartTopology, client: aiohttp.ClientSession
) -> None:
    net = await start_topology()
    purged, kept = "/pin/18", "/pin/19"  # tagged pin-18 and pin-19 (among others)
    bodies: dict[str, bytes] = {}
    for path in (purged, kept):
        for edge in net.edges:
            reply = await send(client, edge.url + path)
            assert reply.status == 200
            bodies[path] = reply.body
        for edge in net.edges:
            assert hops(await send(client, edge.url + path))[-1].hit

    answers = [await purge(client, admin, {"tags": ["pin-18"]}) for admin in net.admins]

    assert {answer["mode"] for answer in answers} == {"hard"}
    edge_counts = [int(str(a["purged"])) for a in answers[: len(net.edges)]]
    shield_counts = [int(str(a["purged"])) for a in answers[len(net.edges) :]]
    assert min(edge_counts) >= 1
    assert sum(shield_counts) == 1  # only the page's own shield held it
    for edge in net.edges:
        again = await send(client, edge.url + purged)
        assert again.status == 200 and again.body == bodies[purged]
        assert hops(again)[-1].params.get("fwd") == "miss", again.headers["Cache-Status"]
        still = await send(client, edge.url + kept)
        assert still.status == 200 and still.body == bodies[kept]
        assert hops(still)[-1].hit, still.headers["Cache-Status"]
    assert await net.origin_hits(client, purged) == 2
    assert await net.origin_hits(client, kept) == 1


async def upstream_requests(edge: RunningEdge, client: aiohttp.ClientSession) -> float:
    return sample(await edge.metrics(client), "pinedge_upstream_requests_total")


async def test_a_soft_purge_on_every_node_answers_from_the_stale_copy_while_the_origin_revalidates(
    start_topology: StartTopology, client: aiohttp.ClientSession
) -> None:
    net = await start_topology()
    path = "/api/pins/21"  # max-age=10, stale-while-revalidate=30, tagged pin-21
    for edge in net.edges:
        assert (await send(client, edge.url + path, IDENTITY)).status == 200
    body = (await send(client, net.edges[0].url + path, IDENTITY)).body
    assert await net.origin_hits(client, path) == 1

    answers = [await purge(client, a, {"tags": ["pin-21"], "soft": True}) for a in net.admins]
    assert {answer["mode"] for answer in answers} == {"soft"}

    for edge in net.edges:
        reply = await send(client, edge.url + path, IDENTITY)
        assert reply.status == 200 and reply.body == body
        own = hops(reply)[-1]
        assert own.params.get("detail") == "stale-while-revalidate", reply.headers["Cache-Status"]
        assert "fwd" not in own.params  # answered at once, from the edge's own copy

    async def revalidated() -> bool:
        return await net.origin_hits(client, path) >= 2

    await poll(revalidated, "the origin to see the revalidation")

    async def edges_settled() -> bool:
        counts = [await upstream_requests(edge, client) for edge in net.edges]
        return counts == [2, 2, 2]  # the first fill and one background revalidation each

    await poll(edges_settled, "every edge to revalidate once in the background")
    # The shields collapsed the edges' revalidations into one conditional request
    # (the origin answered 304: nothing changed).
    assert await net.origin_hits(client, path) == 2, await upstream_report(net, client)
    shield_texts = [await shield.metrics(client) for shield in net.shields]
    origin_label = f"origin {net.origin}"

    async def shield_reported() -> bool:
        shield_texts[:] = [await shield.metrics(client) for shield in net.shields]
        return sum(sample(t, "pinedge_upstream_requests_total") for t in shield_texts) >= 2

    await poll(shield_reported, "the shields to report their upstream requests")
    assert sum(sample(t, "pinedge_upstream_requests_total") for t in shield_texts) == 2
    assert (
        sum(
            sample(t, "pinedge_upstream_requests_total", upstream=origin_label, code="3xx")
            for t in shield_texts
        )
        == 1
    )
    for edge in net.edges:
        reply = await send(client, edge.url + path, IDENTITY)
        assert reply.status == 200 and reply.body == body


async def test_after_a_soft_purge_on_every_node_every_edge_serves_the_origins_new_version(
    start_topology: StartTopology, client: aiohttp.ClientSession
) -> None:
    net = await start_topology()
    path = "/api/pins/22"  # max-age=10, stale-while-revalidate=30, tagged pin-22
    for edge in net.edges:
        reply = await send(client, edge.url + path, IDENTITY)
        assert reply.status == 200 and json.loads(reply.body)["likes"] == 0
    # The pin changes at the origin (behind the caches' backs), then the operator
    # soft-purges it everywhere.
    async with client.post(net.origin + path + "/likes") as response:
        assert response.status == 200 and (await response.json())["likes"] == 1
    for admin in net.admins:
        await purge(client, admin, {"tags": ["pin-22"], "soft": True})

    for edge in net.edges:  # stale while revalidating: the old version, at once
        reply = await send(client, edge.url + path, IDENTITY)
        assert reply.status == 200 and json.loads(reply.body)["likes"] == 0

    async def edges_settled() -> bool:
        counts = [await upstream_requests(edge, client) for edge in net.edges]
        return counts == [2, 2, 2]  # the first fill and one background revalidation each

    await poll(edges_settled, "every edge to revalidate once in the background")

    async def origin_refetched() -> bool:
        return await net.origin_hits(client, path) >= 2

    await poll(origin_refetched, "the shield to revalidate at the origin")
    # Revalidated. An edge may still answer with the copy the soft purge marked
    # stale, but only as stale (while it revalidates again): never as a fresh hit.
    answers = {}
    for edge in net.edges:
        reply = await send(client, edge.url + path, IDENTITY)
        assert reply.status == 200
        own = hops(reply)[-1]
        old_as_fresh = (
            json.loads(reply.body)["likes"] == 0 and own.hit and "detail" not in own.params
        )
        answers[net.names[edge.url]] = (old_as_fresh, reply.headers["Cache-Status"])
    assert [name for name, (bad, _) in answers.items() if bad] == [], answers

    async def new_version_everywhere() -> bool:
        replies = [await send(client, edge.url + path, IDENTITY) for edge in net.edges]
        return all(json.loads(reply.body)["likes"] == 1 for reply in replies)

    await poll(new_version_everywhere, "every edge to serve the new version")
    assert await net.origin_hits(client, path) == 2, await upstream_report(net, client)


@dataclass
class Outcome:
    edge: str
    path: str
    status: int  # 0: the request failed (the error is in `error`)
    body: bytes = b""
    hops: list[Hop] = field(default_factory=list)
    before_kill: bool = False  # completed before the shield was killed
    error: str = ""


LOAD_PATHS = [f"/pin/{n}" for n in range(1, 37)] + [f"/api/pins/{n}" for n in range(1, 5)]


async def test_a_shield_killed_mid_load_loses_no_request_and_its_keys_move_to_the_other_shield(
    start_topology: StartTopology, client: aiohttp.ClientSession
) -> None:
    net = await start_topology()
    victim, survivor = net.shield("shield-a"), net.shield("shield-b")
    rounds = 3
    work = collections.deque(
        (edge, path) for _ in range(rounds) for path in LOAD_PATHS for edge in net.edges
    )
    total = len(work)
    kill_after = len(LOAD_PATHS) * len(net.edges) // 2  # half-way through the first round
    results: list[Outcome] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        while work:
            edge, path = work.popleft()
            name = net.names[edge.url]
            try:
                reply = await send(session, edge.url + path)
                outcome = Outcome(name, path, reply.status, reply.body, hops(reply))
                if reply.status != 200:
                    outcome.error = f"{reply.headers.get('Cache-Status')}: {reply.body[:200]!r}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome = Outcome(name, path, 0, error=repr(exc))
            outcome.before_kill = not victim.killed
            results.append(outcome)
            if len(results) >= kill_after and not victim.killed:
                victim.kill()

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        connector=connector, auto_decompress=False, timeout=timeout
    ) as session:
        await asyncio.gather(*(worker(session) for _ in range(20)))

        assert victim.killed and len(results) == total
        failed = [(o.edge, o.path, o.status, o.error) for o in results if o.status != 200]
        assert failed == []
        bodies = collections.defaultdict(set)
        for outcome in results:
            bodies[outcome.path].add(outcome.body)
        assert {path: len(found) for path, found in bodies.items()} == dict.fromkeys(LOAD_PATHS, 1)
        await victim.process.wait()

        # The keys the victim held (as answers before its death show) ...
        moved = {o.path for o in results if o.before_kill and o.hops[0].name == victim.name}
        assert moved, "no key went to shield-a before it was killed"
        for admin in [edge.admin_url for edge in net.edges]:
            await purge(client, admin, {"all": True})
        # ... are now fetched through the other shield, as are all the others.
        # (One URL at a time: many compressions at once would fill the edges'
        # transform queues, which answer 503 when full.)
        replies = []
        for path in LOAD_PATHS:
            replies += await asyncio.gather(*(send(session, e.url + path) for e in net.edges))
    via = {(r.status, hops(r)[0].name) for r in replies}
    assert via == {(200, survivor.name)}
    for edge in net.edges:
        text = await edge.metrics(client)
        assert sample(text, "pinedge_upstream_errors_total", upstream=victim.label) >= 1
        assert sample(text, "pinedge_upstream_breaker_opens_total", upstream=victim.label) >= 1


async def test_a_shield_killed_after_its_answers_head_still_costs_the_client_nothing(
    scripted: Scripted,
    spawn_shields: SpawnShields,
    start_edge: StartEdge,
    client: aiohttp.ClientSession,
) -> None:
    """The kill of the test above, made certain to land between a shield's response
    head and its body, while the edge has sent the client nothing yet (it waits for
    the whole page to compress it): the page can still come from the other shield."""
    body = b"<!doctype html><title>slow</title><p>" + b"pinedge " * 4000
    askers: list[str] = []  # the Via of each request at the origin: who asked
    head_sent = asyncio.Event()
    release = asyncio.Event()

    async def page(request: web.Request) -> web.StreamResponse:
        askers.append(request.headers.get("Via", ""))
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/html; charset=utf-8",
                "Cache-Control": "max-age=600",
                "Content-Length": str(len(body)),
            }
        )
        await response.prepare(request)
        if len(askers) > 1:
            await response.write(body)
            return response
        await response.write(body[:100])  # the head and a little: then it stalls
        head_sent.set()
        await release.wait()
        return response  # its shield is gone by now

    scripted.handle("/slow", page)
    shields = await spawn_shields(scripted.url)
    edge = await start_edge(scripted.url, name="edge-1", shield=[s.url for s in shields])
    try:
        asked = asyncio.create_task(send(client, edge.url + "/slow", {"Accept-Encoding": "gzip"}))
        await asyncio.wait_for(head_sent.wait(), WAIT)

        async def edge_has_the_head() -> bool:
            text = await edge.metrics(client)
            return sample(text, "pinedge_upstream_requests_total", code="2xx") >= 1

        await poll(edge_has_the_head, "the shield's response head to reach the edge")
        (victim,) = (s for s in shields if f"1.1 {s.name}" in askers[0])
        (survivor,) = (s for s in shields if s is not victim)
        victim.kill()
        reply = await asyncio.wait_for(asked, WAIT)
    finally:
        release.set()

    assert reply.status == 200, (reply.headers.get("Cache-Status"), reply.body[:200])
    assert gzip.decompress(reply.body) == body
    assert hops(reply)[0].name == survivor.name


async def test_with_the_origin_stopped_stale_pages_are_served_and_new_urls_fail_clearly(
    start_topology: StartTopology, client: aiohttp.ClientSession
) -> None:
    net = await start_topology(html_ttl=1.0)
    stale_path, new_path = "/board/home", "/user/ada"
    first = await send(client, net.edges[0].url + stale_path)
    assert first.status == 200
    await send(client, net.edges[1].url + stale_path)
    await asyncio.sleep(1.5)  # max-age=1: stale on the edges and on the shield now

    await net.stop_origin()

    for edge in net.edges[:2]:
        reply = await send(client, edge.url + stale_path)
        assert reply.status == 200 and reply.body == first.body
        shield, own = hops(reply)
        assert shield.params.get("detail") == "stale-if-error", reply.headers["Cache-Status"]
        assert own.params.get("fwd") == "stale", reply.headers["Cache-Status"]
    never = await send(client, net.edges[2].url + new_path)
    assert never.status in (502, 503, 504)
    reason = never.body.decode()
    assert reason.startswith(f"{never.status} ") and len(reason.split()) >= 4, reason

    origin_label = f"origin {net.origin}"

    async def breakers(state: int) -> bool:
        texts = [await shield.metrics(client) for shield in net.shields]
        found = [sample(t, "pinedge_upstream_breaker_state", upstream=origin_label) for t in texts]
        ok = all(f'upstream="{origin_label}"' in t for t in texts)
        return ok and found == [state] * len(texts)

    await poll(lambda: breakers(2), "the shields' breakers for the origin to open")

    await net.restart_origin()

    await poll(lambda: breakers(0), "the shields' breakers for the origin to close")
    again = await send(client, net.edges[2].url + new_path)
    assert again.status == 200 and again.headers["Content-Type"].startswith("text/html")
    fresh = await send(client, net.edges[0].url + stale_path)
    assert fresh.status == 200 and fresh.body == first.body
    for node in net.shields:
        text = await node.metrics(client)
        assert sample(text, "pinedge_upstream_breaker_opens_total", upstream=origin_label) >= 1
