"""Per-client request budgets: 429 with Retry-After past a site's rate and burst, a
separate budget for what reaches the origin (hits stay free), per site, per client
as the edge sees it (behind trusted peers: from X-Forwarded-For), across workers.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from recorder import exchange
from support import running_node, sample

CACHEABLE = {"Cache-Control": "max-age=60"}


async def get(url: str, extra: bytes = b"", host: bytes = b"127.0.0.1") -> int:
    """The status of a GET of `url` on a new connection, with raw extra field lines."""
    scheme, _, rest = url.partition("://")
    authority, _, path = rest.partition("/")
    reply = await exchange(
        f"{scheme}://{authority}",
        b"GET /%s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (path.encode(), host, extra),
    )
    return reply.status


async def statuses(client: aiohttp.ClientSession, url: str, count: int, **headers: str) -> list:
    found = []
    for _ in range(count):
        async with client.get(url, headers=headers) as response:
            await response.read()
            found.append(response.status)
    return found


async def test_a_client_past_its_request_budget_gets_429_with_retry_after(
    client, scripted, start_edge
):
    """The burst is served, then 429 until the bucket refills; hits are charged
    on the hit path the same as anywhere else."""
    scripted.reply("/pin", b"pin", headers=CACHEABLE)
    edge = await start_edge(scripted.url, rate_limit={"requests": 0.2, "requests_burst": 4})
    seen = await statuses(client, edge.url + "/pin", 6)
    assert seen == [200, 200, 200, 200, 429, 429]
    async with client.get(edge.url + "/pin") as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "5"  # one token at 0.2/s
        assert "too many requests" in await response.text()
        assert "detail=rate-limited" in response.headers["Cache-Status"]
        assert response.headers["Cache-Control"] == "no-store"
    assert scripted.hits["/pin"] == 1
    text = await edge.metrics(client)
    assert sample(text, "pinedge_requests_limited_total", site="default", budget="requests") == 3
    assert sample(text, "pinedge_requests_total", cache="error", code="4xx") == 3


@pytest.mark.slow
async def test_a_limited_client_is_served_again_once_its_bucket_refills(
    client, scripted, start_edge
):
    scripted.reply("/pin", b"pin", headers=CACHEABLE)
    edge = await start_edge(scripted.url, rate_limit={"requests": 1, "requests_burst": 1})
    assert await statuses(client, edge.url + "/pin", 2) == [200, 429]
    await asyncio.sleep(1.1)
    assert await statuses(client, edge.url + "/pin", 1) == [200]


async def test_cache_busting_is_held_back_while_hits_stay_free(client, scripted, start_edge):
    """A stream of new query strings forces misses: the misses budget runs out, the
    origin sees only the burst, and the same client's hits are still served."""

    async def any_query(request):
        return aiohttp.web.Response(text=request.query_string, headers=CACHEABLE)

    scripted.handle("/search", any_query)
    scripted.reply("/pin", b"pin", headers=CACHEABLE)
    edge = await start_edge(scripted.url, rate_limit={"misses": 0.1, "misses_burst": 3})
    async with client.get(edge.url + "/pin") as response:
        assert response.status == 200
    busted = [(await statuses(client, f"{edge.url}/search?q={n}", 1))[0] for n in range(10)]
    assert busted == [200, 200, 429, 429, 429, 429, 429, 429, 429, 429]
    assert scripted.hits["/search"] == 2
    assert await statuses(client, edge.url + "/pin", 20) == [200] * 20
    async with client.get(f"{edge.url}/search?q=x") as response:
        assert "detail=miss-rate-limited" in response.headers["Cache-Status"]
        assert "reach the origin" in await response.text()
        assert int(response.headers["Retry-After"]) >= 1


async def test_each_site_keeps_its_own_budget(client, scripted, start_edge):
    scripted.reply("/pin", b"pin", headers=CACHEABLE)
    edge = await start_edge(
        sites=[
            {
                "name": "strict",
                "hosts": ["strict.test"],
                "origin": scripted.url,
                "rate_limit": {"requests": 0.1, "requests_burst": 2},
            },
            {"name": "open", "hosts": ["open.test"], "origin": scripted.url},
        ]
    )
    strict = [await get(edge.url + "/pin", host=b"strict.test") for _ in range(4)]
    assert strict == [200, 200, 429, 429]
    assert [await get(edge.url + "/pin", host=b"open.test") for _ in range(10)] == [200] * 10


async def test_the_top_level_budget_applies_to_sites_without_their_own(
    client, scripted, start_edge
):
    scripted.reply("/pin", b"pin", headers=CACHEABLE)
    edge = await start_edge(
        sites=[{"name": "pins", "hosts": ["pins.test"], "origin": scripted.url}],
        rate_limit={"requests": 0.1, "requests_burst": 2},
    )
    assert [await get(edge.url + "/pin", host=b"pins.test") for _ in range(3)] == [200, 200, 429]


async def test_behind_a_trusted_peer_each_forwarded_client_has_its_own_budget(
    client, scripted, start_edge
):
    scripted.reply("/pin", b"pin", headers=CACHEABLE)
    edge = await start_edge(
        scripted.url,
        trusted_proxies=["127.0.0.1"],
        rate_limit={"requests": 0.1, "requests_burst": 2},
    )
    first = b"X-Forwarded-For: 198.51.100.1\r\n"
    second = b"X-Forwarded-For: 198.51.100.2\r\n"
    assert [await get(edge.url + "/pin", first) for _ in range(3)] == [200, 200, 429]
    assert [await get(edge.url + "/pin", second) for _ in range(3)] == [200, 200, 429]


async def test_a_spoofed_x_forwarded_for_buys_no_new_budget(client, scripted, start_edge):
    scripted.reply("/pin", b"pin", headers=CACHEABLE)
    edge = await start_edge(scripted.url, rate_limit={"requests": 0.1, "requests_burst": 2})
    seen = [
        await get(edge.url + "/pin", b"X-Forwarded-For: 198.51.100.%d\r\n" % n) for n in range(4)
    ]
    assert seen == [200, 200, 429, 429]


async def test_a_client_is_its_slash_24_when_client_ipv4_prefix_says_so(
    client, scripted, start_edge
):
    scripted.reply("/pin", b"pin", headers=CACHEABLE)
    edge = await start_edge(
        scripted.url,
        client_ipv4_prefix=24,
        rate_limit={"requests": 0.1, "requests_burst": 2},
    )
    seen = []
    for local in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        connector = aiohttp.TCPConnector(local_addr=(local, 0))
        async with aiohttp.ClientSession(connector=connector) as neighbour:
            seen += await statuses(neighbour, edge.url + "/pin", 1)
    assert seen == [200, 200, 429]


@pytest.mark.slow
async def test_a_log_line_says_when_a_client_starts_and_stops_being_limited(
    client, scripted, start_edge, caplog
):
    scripted.reply("/pin", b"pin", headers=CACHEABLE)
    edge = await start_edge(scripted.url, rate_limit={"requests": 0.5, "requests_burst": 2})
    with caplog.at_level(logging.INFO, logger="pinedge.limits"):
        await statuses(client, edge.url + "/pin", 6)
        await asyncio.sleep(2.1)
        assert await statuses(client, edge.url + "/pin", 1) == [200]
    lines = [record.getMessage() for record in caplog.records if record.name == "pinedge.limits"]
    assert len(lines) == 2, lines
    assert "client 127.0.0.1 on site default: over its requests budget (0.5/s" in lines[0]
    assert "back within its requests budget" in lines[1]
    assert "4 refused" in lines[1]


@pytest.mark.slow
async def test_two_workers_share_one_budget_per_client(client, scripted, tmp_path):
    """Every request on a new connection, landing on either worker: the burst is the
    node's, not each worker's."""
    scripted.reply("/pin", b"pin", headers=CACHEABLE)
    config = tmp_path / "edge.toml"
    config.write_text("[rate_limit]\nrequests = 0.01\nrequests_burst = 10\n")
    async with running_node(client, scripted.url, workers=2, config=str(config)) as node:
        seen = [await get(node.url + "/pin", b"Connection: close\r\n") for _ in range(30)]
        assert seen.count(200) == 10
        async with asyncio.timeout(10):  # workers report their counters every second
            while await node.metric(client, "pinedge_requests_limited_total") < 20:
                await asyncio.sleep(0.2)
        assert await node.metric(client, "pinedge_requests_limited_total") == 20
        assert await node.metric(client, "pinedge_clients_limited") == 1
