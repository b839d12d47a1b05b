"""A client that leaves before its answer is written: counted, not logged as an error."""

from __future__ import annotations

import asyncio
import logging
import re

import aiohttp
import pytest
from edge_support import Scripted, StartEdge, send


async def test_a_client_that_leaves_before_its_answer_is_counted_and_not_logged_as_an_error(
    scripted: Scripted,
    start_edge: StartEdge,
    client: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    scripted.reply("/slow", b"x" * 1000, headers={"Cache-Control": "max-age=60"}, delay=0.3)
    edge = await start_edge(scripted.url)
    host, port = edge.url.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /slow HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.1)  # the origin has the request, not yet answered
    writer.close()
    gone = 0.0
    async with asyncio.timeout(5):
        while not gone:
            await asyncio.sleep(0.05)
            text = await edge.metrics(client)
            gone = sum(
                float(value)
                for value in re.findall(
                    r'^pinedge_requests_total{.*code="gone"} (\S+)$', text, re.M
                )
            )
    assert gone == 1
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert (await send(client, edge.url + "/slow")).hit  # the fill went on and stored it
    assert scripted.hits["/slow"] == 1
