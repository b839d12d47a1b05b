"""Variants under one URL (RFC 9111 §4.1), seen from outside."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from edge_support import RunningEdge, Scripted, send


async def by_language(request: web.Request) -> web.StreamResponse:
    """A page in the language asked for (or `default`), varying on Accept-Language."""
    language = request.headers.get("Accept-Language", "default")
    return web.Response(
        body=f"page in {language}".encode(),
        headers={"Cache-Control": "max-age=60", "Vary": "Accept-Language"},
    )


EN = {"Accept-Language": "en"}
FR = {"Accept-Language": "fr"}


async def test_two_variants_are_stored_under_one_url(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §4.1: each stored response is selected by the fields its Vary nominates."""
    scripted.handle("/page", by_language)
    await send(client, edge.url + "/page", EN)
    await send(client, edge.url + "/page", FR)
    english = await send(client, edge.url + "/page", EN)
    french = await send(client, edge.url + "/page", FR)
    assert english.hit
    assert english.body == b"page in en"
    assert french.hit
    assert french.body == b"page in fr"
    assert scripted.hits["/page"] == 2


async def test_equivalent_accept_encoding_values_select_the_same_variant(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §4.1: values may be normalised (list OWS, case of codings) before matching."""
    scripted.reply(
        "/bin",
        b"\x00\x01bytes",
        headers={
            "Cache-Control": "max-age=60",
            "Vary": "Accept-Encoding",
            "Content-Type": "application/octet-stream",
        },
    )
    await send(client, edge.url + "/bin", {"Accept-Encoding": "gzip, br"})
    second = await send(client, edge.url + "/bin", {"Accept-Encoding": "GZIP,br"})
    assert second.hit
    assert second.body == b"\x00\x01bytes"
    assert scripted.hits["/bin"] == 1


async def test_a_request_without_the_varied_field_is_a_different_variant(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §4.1: a field absent from one request and present in the other does not match."""
    scripted.handle("/page", by_language)
    await send(client, edge.url + "/page", EN)
    without = await send(client, edge.url + "/page")
    again = await send(client, edge.url + "/page")
    assert not without.hit
    assert without.body == b"page in default"
    assert again.hit
    assert again.body == b"page in default"
    assert scripted.hits["/page"] == 2


# Vary: * (never matches) is a row of the not-stored table in test_storing.py.


async def test_cache_status_says_vary_miss_when_only_another_variant_is_stored(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9211 §2.2: fwd=vary-miss — the URL is stored, but not for this request's variant."""
    scripted.handle("/page", by_language)
    first = await send(client, edge.url + "/page", EN)
    other = await send(client, edge.url + "/page", FR)
    assert first.cache["fwd"] == "miss"
    assert other.cache["fwd"] == "vary-miss"
    assert other.body == b"page in fr"
