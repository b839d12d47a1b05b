"""The sample origin reads validators and ranges with the edge's grammar
(pinedge.edge.http): what the edge would not take as an HTTP-date, an
entity-tag or a byte range, the origin does not either."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from pinedge.origin import OriginConfig, start

PAGE = "/pin/2"


@pytest.fixture
async def origin() -> AsyncIterator[str]:
    running = await start(OriginConfig(listen="127.0.0.1:0", admin="127.0.0.1:0"))
    yield running.url
    await running.cleanup()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def status(client: aiohttp.ClientSession, url: str, **headers: str) -> int:
    async with client.get(url, headers=headers) as response:
        await response.read()
        return response.status


async def test_an_if_modified_since_that_is_not_an_http_date_is_ignored(origin, client):
    # RFC 9110 §13.1.3: a recipient MUST ignore a value that is not a valid HTTP-date.
    later = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(time.time() + 86400))
    assert await status(client, origin + PAGE, **{"If-Modified-Since": later}) == 200
    imf_later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 86400))
    assert await status(client, origin + PAGE, **{"If-Modified-Since": imf_later}) == 304


async def test_a_range_request_of_several_ranges_gets_the_whole_representation(origin, client):
    async with client.get(origin + "/img/horse.png") as response:
        whole = await response.read()
    async with client.get(origin + "/img/horse.png", headers={"Range": "bytes=0-9,20-29"}) as r:
        assert r.status == 200 and await r.read() == whole
