"""Collapsed forwarding through a real edge: one upstream request per key, however many
clients ask at once (RFC 9111 §4, "collapsed" in RFC 9211 §2.6)."""

from __future__ import annotations

import asyncio
import hashlib
import re

import aiohttp
import pytest
from aiohttp import web
from edge_support import RunningEdge, Scripted, our_entry, send

CACHEABLE = {"Cache-Control": "max-age=60", "Content-Type": "application/octet-stream"}


async def fetch(
    client: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, list[str]]:
    """(status, body, our Cache-Status parameters) of one GET."""
    async with client.get(url, headers=headers) as response:
        body = await response.read()
        return response.status, body, our_entry(response.headers)


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{name} not in /metrics"
    return float(match.group(1))


@pytest.mark.slow
async def test_a_hundred_concurrent_misses_make_one_upstream_request(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """One fetch per key: one client stores, the other 99 wait on it (collapsed)."""
    body = b"pin " * 1000
    scripted.reply("/hot", body, headers=CACHEABLE, delay=0.3)
    results = await asyncio.gather(*(fetch(client, edge.url + "/hot") for _ in range(100)))
    assert scripted.hits["/hot"] == 1
    assert all(status == 200 for status, _, _ in results)
    assert all(got == body for _, got, _ in results)
    entries = [entry for _, _, entry in results]
    assert sum("stored" in e for e in entries) == 1
    assert sum("collapsed" in e for e in entries) == 99
    assert all("fwd=miss" in e for e in entries)
    assert metric(await edge.metrics(client), "pinedge_collapsed_requests_total") == 99


async def test_collapsed_clients_receive_a_large_streamed_body_intact(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """Followers read the leader's body as it arrives, every byte in order."""
    chunk = bytes(range(256)) * 256  # 64 KiB
    body = b"".join(bytes([i]) + chunk[1:] for i in range(16))  # 1 MiB, chunks differ
    expected = hashlib.sha256(body).hexdigest()

    async def slow_large(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.2)
        response = web.StreamResponse(headers=CACHEABLE)
        response.content_length = len(body)
        await response.prepare(request)
        for start in range(0, len(body), len(chunk)):
            await response.write(body[start : start + len(chunk)])
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response

    scripted.handle("/large", slow_large)
    results = await asyncio.gather(*(fetch(client, edge.url + "/large") for _ in range(10)))
    assert scripted.hits["/large"] == 1
    assert [status for status, _, _ in results] == [200] * 10
    assert [hashlib.sha256(got).hexdigest() for _, got, _ in results] == [expected] * 10
    assert sum("collapsed" in entry for _, _, entry in results) == 9


@pytest.mark.slow
@pytest.mark.parametrize("cache_control", ["private", "no-store"])
async def test_clients_waiting_on_an_uncacheable_response_go_upstream_on_their_own(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession, cache_control: str
) -> None:
    """RFC 9111 §4: a response that may not be stored cannot be shared, so each
    waiting client gets its own upstream response."""
    scripted.reply("/mine", "yours only", headers={"Cache-Control": cache_control}, delay=0.3)
    results = await asyncio.gather(*(fetch(client, edge.url + "/mine") for _ in range(10)))
    assert scripted.hits["/mine"] == 10
    assert [status for status, _, _ in results] == [200] * 10
    assert all(got == b"yours only" for _, got, _ in results)
    assert not any("stored" in entry for _, _, entry in results)


@pytest.mark.slow
async def test_every_client_gets_the_origins_error_when_the_origin_fails(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """An uncacheable 500 is passed on to every waiting client, with Cache-Status."""
    scripted.reply("/broken", "origin broke", status=500, delay=0.3)
    results = await asyncio.gather(*(fetch(client, edge.url + "/broken") for _ in range(10)))
    assert [status for status, _, _ in results] == [500] * 10
    assert all(got == b"origin broke" for _, got, _ in results)
    assert all(entry[1] == "fwd=miss" for _, _, entry in results)
    assert not any("stored" in entry for _, _, entry in results)


@pytest.mark.slow
async def test_concurrent_requests_for_different_variants_each_get_their_own(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §4.1: a collapsed response is reused only for requests its Vary matches."""

    async def by_language(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.3)
        language = request.headers.get("Accept-Language", "none")
        return web.Response(
            text=f"hello in {language}", headers={**CACHEABLE, "Vary": "Accept-Language"}
        )

    scripted.handle("/greeting", by_language)
    languages = ["en", "fr"] * 10
    results = await asyncio.gather(
        *(
            fetch(client, edge.url + "/greeting", {"Accept-Language": language})
            for language in languages
        )
    )
    assert [status for status, _, _ in results] == [200] * 20
    bodies = [got.decode() for _, got, _ in results]
    assert bodies == [f"hello in {language}" for language in languages]


async def test_requests_with_authorization_are_not_collapsed_onto_another_clients_fetch(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §3.5: a response to one user's credentials is not another user's."""

    async def whoami(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.3)
        return web.Response(
            text=request.headers.get("Authorization", "anonymous"),
            headers={"Cache-Control": "private"},
        )

    scripted.handle("/me", whoami)
    tokens = [f"Bearer user-{i}" for i in range(5)]
    results = await asyncio.gather(
        *(fetch(client, edge.url + "/me", {"Authorization": token}) for token in tokens)
    )
    assert [status for status, _, _ in results] == [200] * 5
    assert [got.decode() for _, got, _ in results] == tokens
    assert not any("collapsed" in entry for _, _, entry in results)
    assert scripted.hits["/me"] == 5


@pytest.mark.slow
async def test_a_collapsed_follower_never_gets_another_vary_variant_after_a_304(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """Before: an 'fr' reader waiting on an 'en' revalidation was handed 'en'."""

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.5)
        language = request.headers.get("Accept-Language", "none")
        headers = {
            "Cache-Control": "max-age=1",
            "Vary": "Accept-Language",
            "ETag": f'"{language}"',
        }
        if request.headers.get("If-None-Match") == f'"{language}"':
            return web.Response(status=304, headers=headers)
        return web.Response(body=f"LANG={language}".encode(), headers=headers)

    scripted.handle("/slowvary", slow)
    await send(client, edge.url + "/slowvary", {"Accept-Language": "en"})
    await asyncio.sleep(1.2)
    en = asyncio.create_task(send(client, edge.url + "/slowvary", {"Accept-Language": "en"}))
    await asyncio.sleep(0.1)
    fr = await send(client, edge.url + "/slowvary", {"Accept-Language": "fr"})
    assert fr.body == b"LANG=fr"
    assert (await en).body == b"LANG=en"
