"""Request Cache-Control directives (RFC 9111 §5.2.1, §5.4), seen from outside."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web
from edge_support import Handler, RunningEdge, Scripted, StartEdge, send

ETAG = '"d1"'


def page(cache_control: str) -> Handler:
    """A page with an ETag; 304 to a matching If-None-Match."""

    async def handler(request: web.Request) -> web.StreamResponse:
        headers = {"Cache-Control": cache_control, "ETag": ETAG}
        if request.headers.get("If-None-Match") == ETAG:
            return web.Response(status=304, headers=headers)
        return web.Response(body=b"page", headers=headers)

    return handler


async def stored(
    scripted: Scripted,
    edge: RunningEdge,
    client: aiohttp.ClientSession,
    path: str,
    cache_control: str = "max-age=60",
) -> None:
    scripted.handle(path, page(cache_control))
    await send(client, edge.url + path)


# ── directives that make the edge go to the origin ──────────────────────────
# no-cache, max-age and min-fresh say what a client "prefers" (§5.2.1); the edge
# honours them only with client_cache_control = true, so a browser reload cannot
# empty the CDN by default.


@pytest.fixture
async def honouring(scripted: Scripted, start_edge: StartEdge) -> RunningEdge:
    """An edge that honours the client's no-cache, max-age and min-fresh."""
    return await start_edge(scripted.url, client_cache_control=True)


async def test_by_default_a_client_no_cache_is_served_from_a_fresh_entry(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §5.2.1 (a preference); edge setting client_cache_control defaults to off."""
    await stored(scripted, edge, client, "/r")
    reply = await send(client, edge.url + "/r", {"Cache-Control": "no-cache"})
    assert reply.hit
    assert scripted.hits["/r"] == 1


async def test_request_no_cache_revalidates_a_fresh_entry(
    scripted: Scripted, honouring: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §5.2.1.4; RFC 9211 §2.2: fwd=request (fresh, but the request ruled it out)."""
    await stored(scripted, honouring, client, "/r")
    reply = await send(client, honouring.url + "/r", {"Cache-Control": "no-cache"})
    assert reply.status == 200
    assert reply.body == b"page"
    assert reply.cache["fwd"] == "request"
    assert reply.cache["fwd-status"] == "304"
    assert scripted.hits["/r"] == 2
    assert scripted.last("/r").headers["If-None-Match"] == ETAG


async def test_pragma_no_cache_alone_revalidates_a_fresh_entry(
    scripted: Scripted, honouring: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §5.4: without Cache-Control, Pragma: no-cache means no-cache."""
    await stored(scripted, honouring, client, "/r")
    reply = await send(client, honouring.url + "/r", {"Pragma": "no-cache"})
    assert reply.status == 200
    assert not reply.hit
    assert reply.cache["fwd-status"] == "304"
    assert scripted.hits["/r"] == 2


async def test_request_max_age_0_revalidates_a_fresh_entry(
    scripted: Scripted, honouring: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §5.2.1.1: the client will not accept a response older than 0 s."""
    await stored(scripted, honouring, client, "/r")
    reply = await send(client, honouring.url + "/r", {"Cache-Control": "max-age=0"})
    assert reply.status == 200
    assert reply.cache["fwd"] == "request"
    assert scripted.hits["/r"] == 2


async def test_min_fresh_beyond_the_remaining_ttl_forces_a_fetch(
    scripted: Scripted, honouring: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §5.2.1.3: the response must stay fresh at least this long."""
    await stored(scripted, honouring, client, "/r")
    reply = await send(client, honouring.url + "/r", {"Cache-Control": "min-fresh=120"})
    assert not reply.hit
    assert scripted.hits["/r"] == 2


async def test_min_fresh_within_the_remaining_ttl_is_a_hit(
    scripted: Scripted, honouring: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §5.2.1.3."""
    await stored(scripted, honouring, client, "/r")
    reply = await send(client, honouring.url + "/r", {"Cache-Control": "min-fresh=10"})
    assert reply.hit
    assert scripted.hits["/r"] == 1


# ── directives that keep the edge away from the origin ──────────────────────


@pytest.mark.slow
async def test_max_stale_accepts_a_stale_entry_without_contacting_the_origin(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §5.2.1.2, §4.2.4; RFC 9211: a hit with a negative ttl."""
    await stored(scripted, edge, client, "/r", "max-age=1")
    await asyncio.sleep(1.1)
    reply = await send(client, edge.url + "/r", {"Cache-Control": "max-stale=60"})
    assert reply.status == 200
    assert reply.body == b"page"
    assert reply.hit
    assert int(reply.cache["ttl"]) < 0
    assert scripted.hits["/r"] == 1


async def test_only_if_cached_with_nothing_stored_gets_504(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §5.2.1.7."""
    scripted.handle("/r", page("max-age=60"))
    reply = await send(client, edge.url + "/r", {"Cache-Control": "only-if-cached"})
    assert reply.status == 504
    assert scripted.hits["/r"] == 0


async def test_only_if_cached_with_a_fresh_entry_is_a_hit(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §5.2.1.7."""
    await stored(scripted, edge, client, "/r")
    reply = await send(client, edge.url + "/r", {"Cache-Control": "only-if-cached"})
    assert reply.status == 200
    assert reply.hit
    assert scripted.hits["/r"] == 1


# Request no-store (§5.2.1.5) is a row of the not-stored table in test_storing.py.
