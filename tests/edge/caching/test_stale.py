"""Serving stale through a real edge: stale-while-revalidate and stale-if-error
(RFC 5861), the edge's grace setting, and what forbids them (RFC 9111 §4.2.4, §5.2.2).

Objects live for max-age=1; each test sleeps just past that to make them stale.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from edge_support import RunningEdge, Scripted, StartEdge, our_entry, ttl

PAST_MAX_AGE = 1.2  # seconds: just past max-age=1

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def fetch(client: aiohttp.ClientSession, url: str) -> tuple[int, bytes, list[str]]:
    """(status, body, our Cache-Status parameters) of one GET."""
    async with client.get(url) as response:
        return response.status, await response.read(), our_entry(response.headers)


def first_then_error(cache_control: str, error: int = 500) -> Handler:
    """An origin handler: a stored 200 ("v1") first, then `error` on every later request."""
    calls = itertools.count()

    async def handler(request: web.Request) -> web.StreamResponse:
        if next(calls) == 0:
            return web.Response(text="v1", headers={"Cache-Control": cache_control})
        return web.Response(status=error, text="origin error")

    return handler


class StoppableOrigin:
    """An origin we can switch off, to see the edge with nothing listening upstream."""

    def __init__(self, cache_control: str) -> None:
        self.cache_control = cache_control
        self.runner: web.ServerRunner | None = None
        self.url = ""

    async def start(self) -> None:
        async def handler(request: web.BaseRequest) -> web.StreamResponse:
            return web.Response(text="v1", headers={"Cache-Control": self.cache_control})

        self.runner = web.ServerRunner(web.Server(handler))
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


StartOrigin = Callable[[str], Awaitable[StoppableOrigin]]


@pytest.fixture
async def start_origin() -> AsyncIterator[StartOrigin]:
    """Start a StoppableOrigin whose 200 carries the given Cache-Control."""
    started: list[StoppableOrigin] = []

    async def start(cache_control: str) -> StoppableOrigin:
        origin = StoppableOrigin(cache_control)
        started.append(origin)
        await origin.start()
        return origin

    yield start
    for origin in started:
        await origin.stop()


async def stored_then_origin_gone(
    start_origin: StartOrigin,
    start_edge: StartEdge,
    client: aiohttp.ClientSession,
    cache_control: str,
    **settings: object,
) -> RunningEdge:
    """An edge that stored "/page" ("v1"), whose origin has since stopped, past max-age."""
    origin = await start_origin(cache_control)
    edge = await start_edge(origin.url, **settings)
    status, body, entry = await fetch(client, edge.url + "/page")
    assert (status, body) == (200, b"v1")
    assert "stored" in entry
    await origin.stop()
    await asyncio.sleep(PAST_MAX_AGE)
    return edge


# ── stale-while-revalidate (RFC 5861 §3) ────────────────────────────────────


@pytest.mark.slow
async def test_stale_while_revalidate_serves_stale_at_once_and_refreshes_once(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 5861 §3: within the window the stale response is served immediately and
    one background request refreshes it, however many clients ask meanwhile."""
    versions = itertools.count(1)

    async def versioned(request: web.Request) -> web.StreamResponse:
        version = next(versions)
        if version == 1:
            cache_control = "max-age=1, stale-while-revalidate=30"
        else:
            await asyncio.sleep(0.3)  # the refresh is slow; stale answers must not wait
            cache_control = "max-age=60"
        return web.Response(text=f"v{version}", headers={"Cache-Control": cache_control})

    scripted.handle("/swr", versioned)
    url = edge.url + "/swr"
    assert (await fetch(client, url))[:2] == (200, b"v1")
    await asyncio.sleep(PAST_MAX_AGE)

    results = await asyncio.gather(*(fetch(client, url) for _ in range(10)))
    for status, body, entry in results:
        assert (status, body) == (200, b"v1")
        assert entry[1] == "hit"
        assert ttl(entry) < 0
        assert "detail=stale-while-revalidate" in entry

    for _ in range(20):
        status, body, entry = await fetch(client, url)
        if body == b"v2":
            break
        await asyncio.sleep(0.1)
    assert (status, body) == (200, b"v2")
    assert entry[1] == "hit"
    assert ttl(entry) > 0
    assert scripted.hits["/swr"] == 2


# ── stale-if-error (RFC 5861 §4) ────────────────────────────────────────────


@pytest.mark.slow
@pytest.mark.parametrize("error", [500, 502, 503, 504])
async def test_stale_if_error_serves_the_stale_response_when_the_origin_errs(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession, error: int
) -> None:
    """RFC 5861 §4: within stale-if-error, a 5xx from the origin is replaced by the
    stale response."""
    scripted.handle("/page", first_then_error("max-age=1, stale-if-error=60", error))
    assert (await fetch(client, edge.url + "/page"))[:2] == (200, b"v1")
    await asyncio.sleep(PAST_MAX_AGE)
    status, body, entry = await fetch(client, edge.url + "/page")
    assert (status, body) == (200, b"v1")
    assert "detail=stale-if-error" in entry
    assert ttl(entry) < 0
    assert scripted.hits["/page"] == 2


@pytest.mark.slow
async def test_stale_if_error_serves_the_stale_response_when_the_origin_is_down(
    start_origin: StartOrigin, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 5861 §4: an unreachable origin is an error too."""
    edge = await stored_then_origin_gone(
        start_origin, start_edge, client, "max-age=1, stale-if-error=60"
    )
    status, body, entry = await fetch(client, edge.url + "/page")
    assert (status, body) == (200, b"v1")
    assert "detail=stale-if-error" in entry


@pytest.mark.slow
async def test_past_the_stale_if_error_window_the_error_is_returned(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 5861 §4: stale-if-error=1 allows one second of staleness, no more."""
    scripted.handle("/page", first_then_error("max-age=1, stale-if-error=1"))
    assert (await fetch(client, edge.url + "/page"))[:2] == (200, b"v1")
    await asyncio.sleep(2.2)
    status, body, _ = await fetch(client, edge.url + "/page")
    assert (status, body) == (500, b"origin error")


# ── grace (an edge setting) ─────────────────────────────────────────────────


@pytest.mark.slow
async def test_grace_serves_stale_on_an_origin_error_without_stale_if_error(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    """grace="30s": the operator allows stale on failure where the origin said nothing."""
    scripted.handle("/page", first_then_error("max-age=1"))
    edge = await start_edge(scripted.url, grace="30s")
    assert (await fetch(client, edge.url + "/page"))[:2] == (200, b"v1")
    await asyncio.sleep(PAST_MAX_AGE)
    status, body, entry = await fetch(client, edge.url + "/page")
    assert (status, body) == (200, b"v1")
    assert ttl(entry) < 0


@pytest.mark.slow
async def test_grace_serves_stale_when_the_origin_is_down(
    start_origin: StartOrigin, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    """grace="30s" covers an unreachable origin too."""
    edge = await stored_then_origin_gone(start_origin, start_edge, client, "max-age=1", grace="30s")
    status, body, _ = await fetch(client, edge.url + "/page")
    assert (status, body) == (200, b"v1")


# ── what forbids serving stale (RFC 9111 §4.2.4, §5.2.2) ───────────────────

NO_STALE = [
    pytest.param("max-age=1, must-revalidate, stale-if-error=60", id="must-revalidate"),
    pytest.param("max-age=1, proxy-revalidate, stale-if-error=60", id="proxy-revalidate"),
    pytest.param("s-maxage=1, stale-if-error=60", id="s-maxage"),
]


@pytest.mark.slow
@pytest.mark.parametrize("cache_control", NO_STALE)
async def test_revalidation_directives_disable_stale_if_error_and_grace(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession, cache_control: str
) -> None:
    """RFC 9111 §5.2.2.2, §5.2.2.8, §5.2.2.10: once stale, the response must not be
    used without successful validation — not even when the origin errs."""
    scripted.handle("/page", first_then_error(cache_control))
    edge = await start_edge(scripted.url, grace="30s")
    assert (await fetch(client, edge.url + "/page"))[:2] == (200, b"v1")
    await asyncio.sleep(PAST_MAX_AGE)
    status, body, entry = await fetch(client, edge.url + "/page")
    assert (status, body) == (500, b"origin error")
    assert "detail=stale-if-error" not in entry


@pytest.mark.slow
@pytest.mark.parametrize("cache_control", NO_STALE)
async def test_revalidation_directives_give_a_gateway_error_when_the_origin_is_down(
    start_origin: StartOrigin,
    start_edge: StartEdge,
    client: aiohttp.ClientSession,
    cache_control: str,
) -> None:
    """RFC 9111 §5.2.2.2: if the cache cannot reach the origin it generates a 504
    (or here 502) rather than reuse the stale response."""
    edge = await stored_then_origin_gone(
        start_origin, start_edge, client, cache_control, grace="30s"
    )
    status, body, _ = await fetch(client, edge.url + "/page")
    assert status in (502, 504)
    assert body != b"v1"


@pytest.mark.parametrize(
    "cache_control",
    [
        pytest.param("no-cache, stale-if-error=60", id="no-cache"),
        pytest.param("no-cache, max-age=60, stale-if-error=60", id="no-cache-with-max-age"),
    ],
)
async def test_a_no_cache_response_is_never_served_when_validation_fails(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession, cache_control: str
) -> None:
    """RFC 9111 §5.2.2.4: no-cache means never reuse without a successful validation,
    whatever stale-if-error or grace say."""
    scripted.handle("/page", first_then_error(cache_control))
    edge = await start_edge(scripted.url, grace="30s")
    assert (await fetch(client, edge.url + "/page"))[:2] == (200, b"v1")
    status, body, entry = await fetch(client, edge.url + "/page")
    assert scripted.hits["/page"] == 2
    assert (status, body) == (500, b"origin error")
    assert "detail=stale-if-error" not in entry
