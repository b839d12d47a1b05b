"""Invalidation by unsafe methods (RFC 9111 §4.4), and bodies streamed through the edge
in both directions, seen from outside."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import os

import aiohttp
import pytest
from aiohttp import web
from edge_support import Handler, RunningEdge, Scripted, send

PAGE = b"<p>" + b"pins " * 800 + b"</p>"  # large enough to be compressed


def resource(unsafe_status: int = 200, **unsafe_headers: str) -> Handler:
    """GET: a cacheable page; any other method: `unsafe_status` with `unsafe_headers`."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            return web.Response(body=b"page", headers={"Cache-Control": "max-age=60"})
        headers = {k.replace("_", "-"): v for k, v in unsafe_headers.items()}
        return web.Response(status=unsafe_status, body=b"done", headers=headers)

    return handler


async def stored(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession, path: str
) -> None:
    """`path` is stored at the edge: a second GET is a hit."""
    if path not in scripted.routes:
        scripted.handle(path, resource())
    await send(client, edge.url + path)
    assert (await send(client, edge.url + path)).hit


# ── the target of an unsafe request ──────────────────────────────────────────


@pytest.mark.parametrize(
    ("method", "status"),
    [("POST", 200), ("POST", 303), ("PUT", 201), ("DELETE", 204), ("PATCH", 200)],
)
async def test_a_successful_unsafe_request_invalidates_its_target(
    scripted: Scripted,
    edge: RunningEdge,
    client: aiohttp.ClientSession,
    method: str,
    status: int,
) -> None:
    """RFC 9111 §4.4: a non-error response to an unsafe method invalidates the target URI."""
    scripted.handle("/item", resource(status))
    await stored(scripted, edge, client, "/item")
    changed = await send(client, edge.url + "/item", method=method, data=b"new")
    after = await send(client, edge.url + "/item")
    assert changed.status == status
    assert not after.hit
    assert after.cache["fwd"] == "miss"
    assert scripted.hits["/item"] == 3


@pytest.mark.parametrize("status", [400, 404, 409, 500, 503])
async def test_an_error_response_to_a_post_does_not_invalidate(
    scripted: Scripted,
    edge: RunningEdge,
    client: aiohttp.ClientSession,
    status: int,
) -> None:
    """RFC 9111 §4.4: only a non-error status code invalidates."""
    scripted.handle("/item", resource(status))
    await stored(scripted, edge, client, "/item")
    failed = await send(client, edge.url + "/item", method="POST", data=b"new")
    after = await send(client, edge.url + "/item")
    assert failed.status == status
    assert after.hit
    assert scripted.hits["/item"] == 2


async def test_an_unsafe_request_also_retires_the_sources_variants(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """Before: after a POST, the old gzip variant was still served as a fresh hit."""
    version = {"n": 1}

    async def mutable(request: web.Request) -> web.Response:
        if request.method == "POST":
            version["n"] += 1
            return web.Response(text="ok")
        return web.Response(
            body=f"VERSION={version['n']}".encode() + PAGE,
            headers={"Content-Type": "text/html", "Cache-Control": "max-age=600"},
        )

    scripted.handle("/mutable", mutable)
    first = await send(client, edge.url + "/mutable", {"Accept-Encoding": "gzip"})
    assert gzip.decompress(first.body).startswith(b"VERSION=1")
    await send(client, edge.url + "/mutable", method="POST", data=b"x")
    after = await send(client, edge.url + "/mutable", {"Accept-Encoding": "gzip"})
    assert gzip.decompress(after.body).startswith(b"VERSION=2")


# ── Location and Content-Location ────────────────────────────────────────────


@pytest.mark.parametrize("field", ["Location", "Content-Location"])
@pytest.mark.parametrize("form", ["absolute", "relative-path", "relative-reference"])
async def test_a_same_origin_location_is_invalidated(
    scripted: Scripted,
    edge: RunningEdge,
    client: aiohttp.ClientSession,
    field: str,
    form: str,
) -> None:
    """RFC 9111 §4.4: same-origin URIs in Location and Content-Location are invalidated."""
    value = {
        "absolute": edge.url + "/items/42",
        "relative-path": "/items/42",
        "relative-reference": "42",  # resolved against /items/new
    }[form]
    scripted.handle("/items/new", resource(201, **{field.replace("-", "_"): value}))
    await stored(scripted, edge, client, "/items/42")
    created = await send(client, edge.url + "/items/new", method="POST", data=b"{}")
    after = await send(client, edge.url + "/items/42")
    assert created.status == 201
    assert not after.hit
    assert scripted.hits["/items/42"] == 2


@pytest.mark.parametrize("field", ["Location", "Content-Location"])
async def test_a_cross_origin_location_is_not_invalidated(
    scripted: Scripted,
    edge: RunningEdge,
    client: aiohttp.ClientSession,
    field: str,
) -> None:
    """RFC 9111 §4.4: a URI with a different origin must not be invalidated (here the same
    path on another host)."""
    value = "http://other.example/items/42"
    scripted.handle("/items/new", resource(201, **{field.replace("-", "_"): value}))
    await stored(scripted, edge, client, "/items/42")
    await send(client, edge.url + "/items/new", method="POST", data=b"{}")
    after = await send(client, edge.url + "/items/42")
    assert after.hit
    assert scripted.hits["/items/42"] == 1


# ── bodies stream through ────────────────────────────────────────────────────


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_a_request_body_passes_through_to_the_origin_intact(
    scripted: Scripted,
    edge: RunningEdge,
    client: aiohttp.ClientSession,
    method: str,
) -> None:
    """RFC 9110 §9.3: the edge forwards every method with its content (here 5 MiB)."""
    payload = os.urandom(5 * 1024 * 1024)

    async def digest(request: web.Request) -> web.StreamResponse:
        # Read the stream: request.read() stops at aiohttp's 1 MiB client_max_size.
        sha, size = hashlib.sha256(), 0
        async for part in request.content.iter_any():
            sha.update(part)
            size += len(part)
        text = f"{request.method} {size} {sha.hexdigest()}"
        return web.Response(text=text)

    scripted.handle("/upload", digest)
    reply = await send(client, edge.url + "/upload", method=method, data=payload)
    assert reply.status == 200
    expected = f"{method} {len(payload)} {hashlib.sha256(payload).hexdigest()}"
    assert reply.body.decode() == expected


@pytest.mark.parametrize(
    "cache_control", ["max-age=60", "no-store"], ids=["storable", "not-storable"]
)
async def test_a_large_response_streams_to_the_client_before_the_origin_finishes(
    scripted: Scripted,
    edge: RunningEdge,
    client: aiohttp.ClientSession,
    cache_control: str,
) -> None:
    """The edge does not buffer a whole body before sending it (DESIGN: stream, bounded
    memory). The origin holds back its last chunk until the client has seen the first —
    or gives up after a while; an edge that buffers shows `last_chunk_written` set by then."""
    chunk = os.urandom(256 * 1024)
    chunks = 16  # 4 MiB
    client_saw_first = asyncio.Event()
    last_chunk_written = asyncio.Event()

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Cache-Control": cache_control})
        response.content_length = len(chunk) * chunks
        await response.prepare(request)
        for _ in range(chunks - 1):
            await response.write(chunk)
            await asyncio.sleep(0.01)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(client_saw_first.wait(), 2.0)
        last_chunk_written.set()
        await response.write(chunk)
        await response.write_eof()
        return response

    scripted.handle("/big", big)
    async with client.get(edge.url + "/big") as response:
        first = await response.content.readany()
        origin_finished_first = last_chunk_written.is_set()
        client_saw_first.set()
        rest = await response.read()
    assert first
    assert not origin_finished_first
    assert first + rest == chunk * chunks
