"""When the origin fails: 502/504 with a reason, broken bodies stay broken and are
never stored, and responses too large to store still reach the client whole
(RFC 9110 §15.6.3, §15.6.5; RFC 9111 §3.3)."""

from __future__ import annotations

import asyncio
import hashlib
import os

import aiohttp
import pytest
from aiohttp import web
from edge_support import Scripted, StartEdge, send
from support import free_port

NODE = "pinedge-test"

# ── helpers: origins that misbehave below HTTP ───────────────────────────────


async def read_head(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


# ── no answer at all ─────────────────────────────────────────────────────────


async def test_an_origin_that_refuses_connections_gives_502_with_a_reason(client, start_edge):
    """RFC 9110 §15.6.3: Bad Gateway when the upstream cannot be reached."""
    edge = await start_edge(f"http://127.0.0.1:{free_port()}")
    async with client.get(edge.url + "/photo.jpg") as response:
        assert response.status == 502
        assert "origin" in await response.text()
        assert response.headers["Cache-Status"].startswith(f"{NODE}; fwd=miss")


@pytest.mark.slow
async def test_an_origin_that_never_answers_gives_504_after_first_byte_timeout(
    client, start_edge, raw_origin
):
    """RFC 9110 §15.6.5: Gateway Timeout when the upstream does not answer in time."""

    async def silent(reader, writer):
        await read_head(reader)
        await asyncio.sleep(30)

    edge = await start_edge(await raw_origin(silent), first_byte_timeout="0.5s")
    async with client.get(edge.url + "/photo.jpg") as response:
        assert response.status == 504
        assert "time" in await response.text()
        assert response.headers["Cache-Status"].startswith(NODE)


@pytest.mark.slow
async def test_an_origin_slower_than_total_timeout_gives_504(client, scripted, start_edge):
    """RFC 9110 §15.6.5: the whole upstream response has a deadline too."""
    scripted.reply("/slow", b"late", delay=1.0)
    edge = await start_edge(scripted.url, total_timeout="0.3s")
    async with client.get(edge.url + "/slow") as response:
        assert response.status == 504
        assert response.headers["Cache-Status"].startswith(NODE)


async def test_a_malformed_origin_response_gives_502(client, start_edge, raw_origin):
    """RFC 9112 §6.3: an invalid Content-Length is an unrecoverable framing error."""

    async def malformed(reader, writer):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n")
        await writer.drain()

    edge = await start_edge(await raw_origin(malformed))
    async with client.get(edge.url + "/photo.jpg") as response:
        assert response.status == 502
        assert "origin" in await response.text()
        assert response.headers["Cache-Status"].startswith(NODE)


# ── a body that breaks off ───────────────────────────────────────────────────


async def breaks_off(request: web.Request) -> web.StreamResponse:
    """Promise 100000 bytes, send 1000, drop the connection."""
    response = web.StreamResponse(
        headers={"Content-Length": "100000", "Cache-Control": "max-age=60"}
    )
    await response.prepare(request)
    await response.write(b"x" * 1000)
    assert request.transport is not None
    request.transport.abort()
    return response


async def test_a_body_that_breaks_off_upstream_reaches_the_client_broken(client, edge, scripted):
    """RFC 9112 §6.3: an incomplete message must not look complete to the client."""
    scripted.handle("/photo.jpg", breaks_off)
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async with client.get(edge.url + "/photo.jpg") as response:
            assert response.status == 200
            async for chunk in response.content.iter_any():
                received += chunk
    assert len(received) < 100000


async def test_a_body_that_broke_off_is_not_stored_and_the_next_request_succeeds(
    client, edge, scripted
):
    """RFC 9111 §3.3: an incomplete response is not stored as if it were complete."""
    scripted.handle("/photo.jpg", breaks_off)
    with pytest.raises(aiohttp.ClientPayloadError):
        async with client.get(edge.url + "/photo.jpg") as response:
            await response.read()
    scripted.reply("/photo.jpg", b"p" * 100000, headers={"Cache-Control": "max-age=60"})
    async with client.get(edge.url + "/photo.jpg") as response:
        assert response.status == 200
        assert await response.read() == b"p" * 100000
        assert "fwd=miss" in response.headers["Cache-Status"]
    assert scripted.hits["/photo.jpg"] == 2


# ── responses too large to store ─────────────────────────────────────────────


async def test_a_body_too_large_to_store_reaches_a_slow_reader_whole_and_is_not_kept(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    """Before: a body past max_object_size was still buffered whole in memory, as fast
    as the origin sent it. Now it streams at the slowest reader's pace; every byte
    still arrives, and nothing is stored."""
    payload = os.urandom(6 * 1024 * 1024)

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Cache-Control": "max-age=600"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(payload), 256 * 1024):
            await response.write(payload[start : start + 256 * 1024])
        await response.write_eof()
        return response

    scripted.handle("/huge", chunked)
    edge = await start_edge(scripted.url, max_object_size="1MiB")
    digest = hashlib.sha256()
    async with client.get(edge.url + "/huge") as response:
        async for part in response.content.iter_chunked(512 * 1024):
            digest.update(part)
            await asyncio.sleep(0.005)
    assert digest.digest() == hashlib.sha256(payload).digest()
    again = await send(client, edge.url + "/huge")
    assert not again.hit and len(again.body) == len(payload)
    assert scripted.hits["/huge"] == 2
