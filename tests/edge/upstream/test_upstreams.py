"""Upstreams that fail without taking the edge down: origin pools with backups and
weights, circuit breakers, active probes, retries only where safe, timeouts.
Real origins on loopback (and ports where nothing listens), real clients."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web
from edge_support import RunningEdge, Scripted, StartEdge, send
from support import refusing_port


@asynccontextmanager
async def origin_server(port: int = 0) -> AsyncIterator[Scripted]:
    """Another programmable origin, like the `scripted` fixture, stoppable."""
    origin = Scripted()
    runner = web.ServerRunner(web.Server(origin.dispatch, auto_decompress=False))  # type: ignore[arg-type]  # reads a BaseRequest's
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    origin.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield origin
    finally:
        await runner.cleanup()


def pool(*origins: tuple[str, int, bool]) -> list[dict[str, object]]:
    return [{"url": url, "weight": weight, "backup": backup} for url, weight, backup in origins]


def site(origins: list[dict[str, object]], **extra: object) -> list[dict[str, object]]:
    return [{"name": "pins", "hosts": ["127.0.0.1", "localhost"], "origins": origins, **extra}]


async def metric(
    edge: RunningEdge, client: aiohttp.ClientSession, name: str, **labels: str
) -> float:
    text = await edge.metrics(client)
    total = 0.0
    for line in re.findall(rf"^{name}{{([^}}]*)}} (\S+)$", text, re.M):
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line[1])
    return total


async def eventually(check: Callable[[], object], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():  # type: ignore[misc]  # check() returns an awaitable
            await asyncio.sleep(0.05)


NO_STORE = {"Cache-Control": "no-store"}


async def test_a_dead_primary_is_skipped_for_its_backup_and_no_request_fails(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    with refusing_port() as port:
        dead = f"http://127.0.0.1:{port}"
        scripted.reply("/pin", "from the backup", headers=NO_STORE)
        edge = await start_edge(sites=site(pool((dead, 1, False), (scripted.url, 1, True))))
        for _ in range(3):
            reply = await send(client, edge.url + "/pin")
            assert reply.status == 200 and reply.body == b"from the backup"
    assert scripted.hits["/pin"] == 3
    refused = await metric(edge, client, "pinedge_upstream_errors_total", kind="upstream-connect")
    assert refused >= 1


@pytest.mark.slow
async def test_failures_open_the_breaker_and_a_trial_after_the_cooldown_closes_it(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    async with origin_server() as primary:
        primary.reply("/pin", "primary down", status=503, headers=NO_STORE)
        scripted.reply("/pin", "from the backup", headers=NO_STORE)
        edge = await start_edge(
            sites=site(pool((primary.url, 1, False), (scripted.url, 1, True))),
            breaker_failures=2,
            breaker_cooldown="1s",
        )
        label = f"origin {primary.url}"
        for _ in range(2):  # a 503 is an answer: passed on, not retried elsewhere
            assert (await send(client, edge.url + "/pin")).status == 503
        assert await metric(edge, client, "pinedge_upstream_breaker_state", upstream=label) == 2
        for _ in range(3):  # open: the primary is not even asked
            assert (await send(client, edge.url + "/pin")).body == b"from the backup"
        assert primary.hits["/pin"] == 2

        primary.reply("/pin", "primary back", headers=NO_STORE)
        await asyncio.sleep(1.1)
        assert (await send(client, edge.url + "/pin")).body == b"primary back"
        assert await metric(edge, client, "pinedge_upstream_breaker_state", upstream=label) == 0
        assert (await send(client, edge.url + "/pin")).body == b"primary back"
        opens = await metric(edge, client, "pinedge_upstream_breaker_opens_total", upstream=label)
        assert opens == 1


async def test_weighted_primaries_share_the_requests_by_weight(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    async with origin_server() as light:
        scripted.reply("/pin", "heavy", headers=NO_STORE)
        light.reply("/pin", "light", headers=NO_STORE)
        edge = await start_edge(sites=site(pool((scripted.url, 3, False), (light.url, 1, False))))
        bodies = [(await send(client, edge.url + "/pin")).body for _ in range(400)]
    share = bodies.count(b"heavy") / len(bodies)
    assert 0.62 <= share <= 0.88  # 3 of 4 expected; a wide band: it is random


async def test_a_request_with_a_body_is_never_sent_to_a_second_upstream(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    with refusing_port() as port:
        dead = f"http://127.0.0.1:{port}"
        scripted.reply("/like", "liked", headers=NO_STORE)
        edge = await start_edge(sites=site(pool((dead, 1, False), (scripted.url, 1, True))))
        posted = await send(client, edge.url + "/like", method="POST", data=b"pin=1")
        assert posted.status == 502 and b"refused" in posted.body
        assert scripted.hits["/like"] == 0
        assert (await send(client, edge.url + "/like")).status == 200  # GET: retried


@pytest.mark.slow
async def test_a_slow_origin_is_cut_off_by_its_timeout_and_counted(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    async with origin_server() as backup:
        scripted.reply("/slow", "late", headers=NO_STORE, delay=3)
        backup.reply("/slow", "backup", headers=NO_STORE)
        edge = await start_edge(
            sites=site(pool((scripted.url, 1, False), (backup.url, 1, True))),
            first_byte_timeout="0.3s",
        )
        reply = await send(client, edge.url + "/slow")
        assert reply.status == 504 and b"in time" in reply.body
        assert backup.hits["/slow"] == 0  # the origin may be working on it: not sent twice
    label = f"origin {scripted.url}"
    kind = "upstream-timeout"
    assert (
        await metric(edge, client, "pinedge_upstream_errors_total", upstream=label, kind=kind) == 1
    )


@pytest.mark.slow
async def test_with_every_origin_down_stale_is_served_and_the_rest_gets_a_clear_error(
    start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    async with origin_server() as origin:
        port = int(origin.url.rsplit(":", 1)[1])
        origin.reply("/pin", "kept", headers={"Cache-Control": "max-age=1, stale-if-error=60"})
        edge = await start_edge(
            sites=site(pool((origin.url, 1, False))), breaker_failures=2, breaker_cooldown="30s"
        )
        assert (await send(client, edge.url + "/pin")).status == 200
    await asyncio.sleep(1.1)  # stale now, and the origin is gone
    stale = await send(client, edge.url + "/pin")
    assert stale.status == 200 and stale.body == b"kept"
    never = await send(client, edge.url + "/never-fetched")
    assert never.status == 502 and b"refused" in never.body
    await send(client, edge.url + "/never-fetched")  # the second failure opens the breaker
    shut = await send(client, edge.url + "/never-fetched")
    assert shut.status == 503 and b"circuit breakers are open" in shut.body
    assert (await send(client, edge.url + "/pin")).body == b"kept"  # still served stale

    async with origin_server(port) as back:
        back.reply("/never-fetched", "now here", headers=NO_STORE)
        label = f"origin {back.url}"
        state = await metric(edge, client, "pinedge_upstream_breaker_state", upstream=label)
        assert state == 2  # no probes in this test: the breaker waits for its cooldown
        assert (await send(client, edge.url + "/never-fetched")).status == 503


async def test_active_probes_open_and_close_the_breaker_without_client_traffic(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    healthy = {"now": False}

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=200 if healthy["now"] else 500)

    scripted.handle("/healthz", health)
    edge = await start_edge(
        sites=site(pool((scripted.url, 1, False)), probe_path="/healthz"),
        probe_interval="0.1s",
        breaker_failures=2,
        breaker_cooldown="60s",  # only a probe can close it within this test
    )
    label = f"origin {scripted.url}"

    async def state_is(value: int) -> bool:
        return await metric(edge, client, "pinedge_upstream_breaker_state", upstream=label) == value

    await eventually(lambda: state_is(2))
    healthy["now"] = True
    await eventually(lambda: state_is(0))
    assert set(scripted.hits) == {"/healthz"}
    assert await metric(edge, client, "pinedge_upstream_probes_total", result="up") >= 1
    assert await metric(edge, client, "pinedge_upstream_probes_total", result="down") >= 2


async def test_a_head_miss_goes_to_the_shield_its_get_went_to(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    """Before: pass-through requests ranked the shields by host and path, not by the
    cache key, so a HEAD missing at an edge went to the other shield half the time."""
    shields = [await start_edge(scripted.url, role="shield", name=f"shield-{n}") for n in "ab"]
    urls = [s.url for s in shields]
    first, second = [await start_edge(scripted.url, shield=urls, name=n) for n in ("e1", "e2")]
    for index in range(8):
        path = f"/pin/{index}"
        scripted.reply(path, "pin", headers={"Cache-Control": "max-age=600"})
        assert (await send(client, first.url + path)).status == 200
        head = await send(client, second.url + path, method="HEAD")  # a miss at e2
        assert head.status == 200 and "e2; fwd=miss" in head.headers["Cache-Status"]
        assert scripted.hits[path] == 1, head.headers["Cache-Status"]
