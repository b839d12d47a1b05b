"""Validation (RFC 9111 §4.3; RFC 9110 §13), seen from outside: the edge revalidating
with the origin, and the edge answering its clients' conditional requests."""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate

import aiohttp
import pytest
from aiohttp import web
from edge_support import RunningEdge, Scripted, send

MODIFIED = formatdate(time.time() - 3600, usegmt=True)
EARLIER = formatdate(time.time() - 7200, usegmt=True)
LATER = formatdate(time.time() - 60, usegmt=True)


class Versioned:
    """An origin resource: a body with an ETag and Last-Modified, answering 304 to a
    matching If-None-Match with `not_modified` fields; `body`/`etag` may change."""

    def __init__(self, body: bytes, etag: str, cache_control: str = "max-age=1") -> None:
        self.body = body
        self.etag = etag
        self.headers = {"Cache-Control": cache_control, "Last-Modified": MODIFIED}
        self.not_modified: dict[str, str] = {}

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("If-None-Match") == self.etag:
            return web.Response(status=304, headers={"ETag": self.etag, **self.not_modified})
        return web.Response(body=self.body, headers={"ETag": self.etag, **self.headers})


async def stored_then_stale(
    scripted: Scripted,
    edge: RunningEdge,
    client: aiohttp.ClientSession,
    path: str,
    resource: Versioned,
) -> None:
    """Store `resource` at `path` with max-age=1 and wait until it is stale."""
    scripted.handle(path, resource)
    await send(client, edge.url + path)
    await asyncio.sleep(1.1)


# ── the edge revalidates with the origin (RFC 9111 §4.3.1-§4.3.4) ──────────


@pytest.mark.slow
async def test_a_stale_entry_is_revalidated_with_its_etag_and_last_modified(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §4.3.1: If-None-Match from ETag, If-Modified-Since from Last-Modified."""
    await stored_then_stale(scripted, edge, client, "/v", Versioned(b"one", '"e1"'))
    await send(client, edge.url + "/v")
    seen = scripted.last("/v").headers
    assert scripted.hits["/v"] == 2
    assert seen["If-None-Match"] == '"e1"'
    assert seen["If-Modified-Since"] == MODIFIED


@pytest.mark.slow
async def test_a_304_from_the_origin_serves_the_stored_body_as_a_200(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §4.3.3, RFC 9211 §2.2-2.3: fwd=stale; fwd-status=304."""
    await stored_then_stale(scripted, edge, client, "/v", Versioned(b"one", '"e1"'))
    reply = await send(client, edge.url + "/v")
    assert reply.status == 200
    assert reply.body == b"one"
    assert reply.cache["fwd"] == "stale"
    assert reply.cache["fwd-status"] == "304"


@pytest.mark.slow
async def test_a_304_from_the_origin_refreshes_the_stored_headers(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §3.2, §4.3.4: the 304's fields replace the stored ones; the body stays."""
    resource = Versioned(b"one", '"e1"')
    resource.headers["X-Version"] = "1"
    resource.not_modified = {"Cache-Control": "max-age=60", "X-Version": "2"}
    await stored_then_stale(scripted, edge, client, "/v", resource)
    await send(client, edge.url + "/v")
    hit = await send(client, edge.url + "/v")
    assert hit.hit
    assert hit.headers["Cache-Control"] == "max-age=60"
    assert hit.headers["X-Version"] == "2"
    assert hit.body == b"one"
    assert scripted.hits["/v"] == 2


@pytest.mark.slow
async def test_a_200_on_revalidation_replaces_the_stored_body(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §4.3.3: a full response replaces the stored one."""
    resource = Versioned(b"one", '"e1"')
    await stored_then_stale(scripted, edge, client, "/v", resource)
    resource.body, resource.etag = b"two", '"e2"'
    resource.headers["Cache-Control"] = "max-age=60"
    refreshed = await send(client, edge.url + "/v")
    hit = await send(client, edge.url + "/v")
    assert refreshed.status == 200
    assert refreshed.body == b"two"
    assert refreshed.cache["fwd"] == "stale"
    assert hit.hit
    assert hit.body == b"two"
    assert hit.headers["ETag"] == '"e2"'


@pytest.mark.slow
async def test_a_304_that_matches_no_stored_response_is_followed_by_an_unconditional_fetch(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §4.3.4: a 304 whose validators select no stored response updates
    nothing, and the client still gets an answer: the edge asks again without
    conditions (an origin behind a load balancer answering from another version)."""
    asked: list[str | None] = []

    async def confused(request: web.Request) -> web.Response:
        asked.append(request.headers.get("If-None-Match"))
        if request.headers.get("If-None-Match"):
            return web.Response(status=304, headers={"ETag": '"other"'})
        body = b"one" if len(asked) == 1 else b"two"
        return web.Response(body=body, headers={"ETag": '"e1"', "Cache-Control": "max-age=1"})

    scripted.handle("/v", confused)
    await send(client, edge.url + "/v")
    await asyncio.sleep(1.1)
    reply = await send(client, edge.url + "/v")
    assert reply.status == 200
    assert reply.body == b"two"
    assert asked == [None, '"e1"', None]


# ── the edge answers its clients' conditional requests (RFC 9110 §13.2.2) ───


async def stored(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession, path: str
) -> None:
    scripted.reply(
        path,
        b"stored body",
        headers={
            "Cache-Control": "max-age=60",
            "ETag": '"x"',
            "Last-Modified": MODIFIED,
            "Vary": "Accept-Encoding",
        },
    )
    await send(client, edge.url + path, {"Accept-Encoding": "gzip"})


async def test_a_matching_if_none_match_gets_304_from_the_cache(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §4.3.2, RFC 9110 §13.1.2."""
    await stored(scripted, edge, client, "/c")
    reply = await send(client, edge.url + "/c", {"Accept-Encoding": "gzip", "If-None-Match": '"x"'})
    assert reply.status == 304
    assert reply.hit
    assert scripted.hits["/c"] == 1


async def test_an_if_modified_since_after_last_modified_gets_304_from_the_cache(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §4.3.2, RFC 9110 §13.1.3."""
    await stored(scripted, edge, client, "/c")
    reply = await send(
        client, edge.url + "/c", {"Accept-Encoding": "gzip", "If-Modified-Since": LATER}
    )
    assert reply.status == 304
    assert reply.hit
    assert scripted.hits["/c"] == 1


async def test_an_if_modified_since_before_last_modified_gets_the_full_response(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9110 §13.1.3: modified since then, so the representation is sent."""
    await stored(scripted, edge, client, "/c")
    reply = await send(
        client, edge.url + "/c", {"Accept-Encoding": "gzip", "If-Modified-Since": EARLIER}
    )
    assert reply.status == 200
    assert reply.body == b"stored body"
    assert reply.hit


async def test_if_none_match_takes_precedence_over_if_modified_since(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9110 §13.2.2: with If-None-Match present, If-Modified-Since is ignored."""
    await stored(scripted, edge, client, "/c")
    reply = await send(
        client,
        edge.url + "/c",
        {"Accept-Encoding": "gzip", "If-None-Match": '"other"', "If-Modified-Since": LATER},
    )
    assert reply.status == 200
    assert reply.body == b"stored body"


async def test_if_none_match_uses_the_weak_comparison(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9110 §13.1.2, §8.8.3.2: W/"x" matches "x"."""
    await stored(scripted, edge, client, "/c")
    reply = await send(
        client, edge.url + "/c", {"Accept-Encoding": "gzip", "If-None-Match": 'W/"x"'}
    )
    assert reply.status == 304
    assert scripted.hits["/c"] == 1


async def test_a_304_carries_etag_cache_control_date_and_vary_and_no_body(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9110 §15.4.5."""
    await stored(scripted, edge, client, "/c")
    reply = await send(client, edge.url + "/c", {"Accept-Encoding": "gzip", "If-None-Match": '"x"'})
    assert reply.status == 304
    assert reply.headers["ETag"] == '"x"'
    assert reply.headers["Cache-Control"] == "max-age=60"
    assert reply.headers["Vary"] == "Accept-Encoding"
    assert "Date" in reply.headers
    assert reply.body == b""


async def test_an_if_match_request_is_forwarded_to_the_origin(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §4.3.2: a cache need not evaluate If-Match; the origin does."""
    await stored(scripted, edge, client, "/c")
    reply = await send(client, edge.url + "/c", {"Accept-Encoding": "gzip", "If-Match": '"x"'})
    assert reply.status == 200
    assert scripted.hits["/c"] == 2
    assert scripted.last("/c").headers["If-Match"] == '"x"'


async def test_an_if_unmodified_since_request_is_forwarded_to_the_origin(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §4.3.2: a cache need not evaluate If-Unmodified-Since; the origin does."""
    await stored(scripted, edge, client, "/c")
    reply = await send(
        client, edge.url + "/c", {"Accept-Encoding": "gzip", "If-Unmodified-Since": LATER}
    )
    assert reply.status == 200
    assert scripted.hits["/c"] == 2
    assert scripted.last("/c").headers["If-Unmodified-Since"] == LATER
