"""Regressions found in review; each test names what went wrong before."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web
from edge_support import RunningEdge, Scripted, StartEdge, send

PAGE = b"<p>" + b"pins " * 800 + b"</p>"


async def raw(edge: RunningEdge, payload: bytes) -> bytes:
    host, port = edge.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(payload)
    await writer.drain()
    head = b""
    async with asyncio.timeout(3):
        head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    return head


async def test_a_compressed_variant_follows_the_sources_vary(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """Before: the gzip variant of the 'en' page was served to 'fr' readers."""

    async def by_language(request: web.Request) -> web.Response:
        language = request.headers.get("Accept-Language", "none")
        return web.Response(
            body=f"LANG={language}".encode() + PAGE,
            headers={
                "Content-Type": "text/html",
                "Cache-Control": "max-age=600",
                "Vary": "Accept-Language",
            },
        )

    scripted.handle("/lang", by_language)
    for language in ("en", "fr", "en", "fr"):
        reply = await send(
            client,
            edge.url + "/lang",
            {"Accept-Language": language, "Accept-Encoding": "identity"},
        )
        assert reply.body.startswith(f"LANG={language}".encode())
        gz = await send(
            client, edge.url + "/lang", {"Accept-Language": language, "Accept-Encoding": "gzip"}
        )
        import gzip

        assert gzip.decompress(gz.body).startswith(f"LANG={language}".encode())


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
    import gzip

    first = await send(client, edge.url + "/mutable", {"Accept-Encoding": "gzip"})
    assert gzip.decompress(first.body).startswith(b"VERSION=1")
    await send(client, edge.url + "/mutable", method="POST", data=b"x")
    after = await send(client, edge.url + "/mutable", {"Accept-Encoding": "gzip"})
    assert gzip.decompress(after.body).startswith(b"VERSION=2")


async def test_a_fragment_in_the_target_is_refused_and_cannot_take_a_variants_key(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """Before: GET /page#enc=gzip stored the plain page under the gzip variant's key."""
    scripted.reply(
        "/frag", PAGE, headers={"Content-Type": "text/html", "Cache-Control": "max-age=60"}
    )
    head = await raw(edge, b"GET /frag#enc=gzip HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    reply = await send(client, edge.url + "/frag", {"Accept-Encoding": "gzip"})
    assert reply.headers.get("Content-Encoding") == "gzip"


async def test_a_hit_on_a_response_that_came_with_age_carries_one_age(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """Before: the hit path sent the upstream Age and its own (RFC 9111 §5.1)."""
    scripted.reply("/aged", b"x", headers={"Cache-Control": "max-age=600", "Age": "5"})
    await send(client, edge.url + "/aged")
    reply = await send(client, edge.url + "/aged")
    assert reply.hit
    assert len(reply.headers.getall("Age")) == 1 and int(reply.headers["Age"]) >= 5


async def test_an_absolute_form_target_is_routed_by_its_authority_on_every_path(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """Before: the hit path keyed on Host and served a hit the general path refuses."""
    scripted.reply("/abs", b"x", headers={"Cache-Control": "max-age=600"})
    await send(client, edge.url + "/abs")
    head = await raw(edge, b"GET http://elsewhere.test/abs HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 421")


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


async def test_a_body_too_large_to_store_reaches_a_slow_reader_whole_and_is_not_kept(
    scripted: Scripted, start_edge: object, client: aiohttp.ClientSession
) -> None:
    """Before: a body past max_object_size was still buffered whole in memory, as fast
    as the origin sent it. Now it streams at the slowest reader's pace; every byte
    still arrives, and nothing is stored."""
    import hashlib
    import os

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
    edge = await start_edge(scripted.url, max_object_size="1MiB")  # type: ignore[operator]  # the fixture is a callable
    digest = hashlib.sha256()
    async with client.get(edge.url + "/huge") as response:
        async for part in response.content.iter_chunked(512 * 1024):
            digest.update(part)
            await asyncio.sleep(0.005)
    assert digest.digest() == hashlib.sha256(payload).digest()
    again = await send(client, edge.url + "/huge")
    assert not again.hit and len(again.body) == len(payload)
    assert scripted.hits["/huge"] == 2


async def test_requests_the_parser_refuses_are_counted_as_errors(
    edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """Before: malformed requests got their 400 but never showed in the metrics."""
    head = await raw(edge, b"GARBAGE\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") or head.startswith(b"HTTP/1.0 400")
    metrics = await edge.metrics(client)
    assert 'pinedge_requests_total{cache="error",code="4xx"} 1' in metrics


async def test_the_target_reaches_the_origin_byte_for_byte(
    scripted: Scripted, edge: RunningEdge
) -> None:
    """Before: the upstream client re-quoted the path (%28 arrived as '(')."""
    seen: list[str] = []

    async def origin(request: web.Request) -> web.Response:
        seen.append(request.raw_path)
        return web.Response(text="ok", headers={"Cache-Control": "no-store"})

    scripted.handle("/a%28b%29%3Bc", origin)
    scripted.handle("/a(b);c", origin)
    head = await raw(edge, b"GET /a%28b%29%3Bc?x=%40 HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert seen == ["/a%28b%29%3Bc?x=%40"]


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
