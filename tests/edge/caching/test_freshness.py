"""Freshness and age at the edge (RFC 9111 §4.2, §5.1), seen from outside."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from email.utils import formatdate, parsedate_to_datetime

import aiohttp
import pytest
from aiohttp import web
from edge_support import RunningEdge, Scripted, StartEdge, send


def http_date(timestamp: float) -> str:
    return formatdate(timestamp, usegmt=True)


DAY = 86400


# ── freshness lifetime (§4.2.1, §4.2.2) ──────────────────────────────────────


async def test_the_ttl_comes_from_expires_minus_date(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §4.2.1: without max-age, the lifetime is Expires − Date (so an origin
    whose clock runs an hour fast still gets 100 s, not an hour and 100 s)."""

    async def handler(request: web.Request) -> web.Response:
        origin_clock = int(time.time()) + 3600
        headers = {"Date": http_date(origin_clock), "Expires": http_date(origin_clock + 100)}
        return web.Response(body=b"expires", headers=headers)

    scripted.handle("/exp", handler)
    await send(client, edge.url + "/exp")
    hit = await send(client, edge.url + "/exp")
    assert hit.hit
    assert abs(hit.ttl - 100) <= 2
    assert scripted.hits["/exp"] == 1


async def test_an_invalid_expires_means_stale_at_once(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §5.3: an invalid date, e.g. "0", represents a time in the past."""
    scripted.reply("/zero", b"zero", headers={"Expires": "0"})
    await send(client, edge.url + "/zero")
    second = await send(client, edge.url + "/zero")
    assert second.status == 200
    assert not second.hit
    assert scripted.hits["/zero"] == 2


# ── age (§4.2.3, §5.1) ───────────────────────────────────────────────────────


async def test_an_upstream_age_is_counted_against_max_age(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §4.2.3: Age from an upstream cache is part of the corrected initial age."""
    scripted.reply("/aged", b"aged", headers={"Cache-Control": "max-age=60", "Age": "30"})
    await send(client, edge.url + "/aged")
    hit = await send(client, edge.url + "/aged")
    assert hit.hit
    assert hit.ttl <= 30
    assert hit.age >= 30


@pytest.mark.slow
async def test_the_response_delay_counts_toward_age(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §4.2.3: response_delay = response_time − request_time is added to Age."""
    scripted.reply("/slow", b"slow", headers={"Cache-Control": "max-age=10"}, delay=1.1)
    await send(client, edge.url + "/slow")
    hit = await send(client, edge.url + "/slow")
    assert hit.hit
    assert hit.age >= 1


@pytest.mark.slow
async def test_every_hit_carries_an_age_that_grows(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §5.1: a response from cache carries Age, its time in caches."""
    scripted.reply("/grow", b"grow", headers={"Cache-Control": "max-age=60"})
    await send(client, edge.url + "/grow")
    first = await send(client, edge.url + "/grow")
    await asyncio.sleep(1.1)
    later = await send(client, edge.url + "/grow")
    assert first.hit
    assert later.hit
    assert later.age > first.age


async def test_a_hit_on_a_response_that_came_with_age_carries_one_age(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """Before: the hit path sent the upstream Age and its own (RFC 9111 §5.1)."""
    scripted.reply("/aged", b"x", headers={"Cache-Control": "max-age=600", "Age": "5"})
    await send(client, edge.url + "/aged")
    reply = await send(client, edge.url + "/aged")
    assert reply.hit
    assert len(reply.headers.getall("Age")) == 1 and int(reply.headers["Age"]) >= 5


# ── heuristic freshness (§4.2.2) ─────────────────────────────────────────────


async def test_heuristic_freshness_is_off_by_default(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §4.2.2 (a MAY): with Last-Modified only, every request reaches the origin,
    conditionally."""
    modified = http_date(time.time() - 10 * DAY)

    async def handler(request: web.Request) -> web.Response:
        if request.headers.get("If-Modified-Since") == modified:
            return web.Response(status=304, headers={"Last-Modified": modified})
        return web.Response(body=b"old page", headers={"Last-Modified": modified})

    scripted.handle("/lm", handler)
    await send(client, edge.url + "/lm")
    second = await send(client, edge.url + "/lm")
    assert second.status == 200
    assert second.body == b"old page"
    assert not second.hit
    assert scripted.hits["/lm"] == 2
    assert scripted.last("/lm").headers["If-Modified-Since"] == modified


async def test_heuristic_freshness_when_enabled_makes_a_last_modified_response_a_hit(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §4.2.2: a fraction (here 10 %) of the time since Last-Modified."""
    edge = await start_edge(scripted.url, heuristic_fraction=0.1)
    modified = http_date(time.time() - 10 * DAY)
    scripted.reply("/lm", b"old page", headers={"Last-Modified": modified})
    await send(client, edge.url + "/lm")
    second = await send(client, edge.url + "/lm")
    assert second.hit
    assert second.ttl > 0
    assert scripted.hits["/lm"] == 1


# ── Date (RFC 9110 §6.6.1) ───────────────────────────────────────────────────


@pytest.fixture
async def dateless_origin() -> AsyncIterator[str]:
    """An origin that answers every request without a Date field (aiohttp always adds one)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n"
                    b"Cache-Control: max-age=60\r\n\r\nno date"
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.close()
    await server.wait_closed()


@pytest.mark.slow
async def test_a_response_from_a_dateless_origin_still_gets_a_date(
    dateless_origin: str, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9110 §6.6.1: a recipient with a clock records when it received a Date-less
    response and adds that Date; the stored copy keeps it (hits do not get a newer one)."""
    edge = await start_edge(dateless_origin)
    miss = await send(client, edge.url + "/")
    await asyncio.sleep(1.1)
    hit = await send(client, edge.url + "/")
    assert miss.body == b"no date"
    assert hit.hit
    received = parsedate_to_datetime(miss.headers["Date"]).timestamp()
    assert abs(received - time.time()) < 5
    assert hit.headers["Date"] == miss.headers["Date"]
