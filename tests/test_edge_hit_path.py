"""The hit path answers plain hits straight from the parsed request; it must send
what the general path sends and keep pipelined responses in order."""

from __future__ import annotations

import asyncio

import aiohttp
from conftest import RunningEdge, Scripted, StartEdge, send

IGNORED = {"date", "server"}


async def raw_exchange(edge: RunningEdge, payload: bytes, responses: int) -> list[bytes]:
    """Send `payload` on one connection and read `responses` HTTP responses back."""
    host, port = edge.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(payload)
    await writer.drain()
    out = []
    async with asyncio.timeout(5):
        for _ in range(responses):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            out.append(head + await reader.readexactly(length))
    writer.close()
    return out


async def test_a_hit_has_the_same_headers_on_the_hit_path_and_the_general_path(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    scripted.reply(
        "/same",
        b"body",
        headers={
            "Cache-Control": "max-age=60",
            "ETag": '"v1"',
            "Surrogate-Key": "a b",
            "X-Custom": "kept",
            "Cache-Status": "upstream; hit",
        },
    )
    fast = await start_edge(scripted.url, fast_path=True)
    plain = await start_edge(scripted.url, fast_path=False)
    seen = []
    for edge in (fast, plain):
        await send(client, edge.url + "/same")
        reply = await send(client, edge.url + "/same")
        assert reply.hit and reply.body == b"body"
        seen.append({(k.lower(), v) for k, v in reply.headers.items() if k.lower() not in IGNORED})
    assert seen[0] == seen[1]


async def test_pipelined_requests_are_answered_in_order_across_hits_and_misses(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9112 §9.3.2: responses to pipelined requests go out in request order."""
    scripted.reply("/hot", b"HOT", headers={"Cache-Control": "max-age=60"})
    scripted.reply("/cold", b"COLD", headers={"Cache-Control": "max-age=60"}, delay=0.2)
    await send(client, edge.url + "/hot")
    request = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    payload = request % b"/hot" + request % b"/cold" + request % b"/hot" + request % b"/hot"
    answers = await raw_exchange(edge, payload, 4)
    bodies = [answer.rsplit(b"\r\n\r\n", 1)[1] for answer in answers]
    assert bodies == [b"HOT", b"COLD", b"HOT", b"HOT"]
    assert b"fwd=miss" in answers[1] and b"; hit" in answers[3]


async def test_a_burst_of_pipelined_hits_longer_than_the_parser_queue_is_answered_whole(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    scripted.reply("/hot", b"HOT", headers={"Cache-Control": "max-age=60"})
    await send(client, edge.url + "/hot")
    payload = b"GET /hot HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 100
    answers = await raw_exchange(edge, payload, 100)
    assert all(answer.endswith(b"\r\n\r\nHOT") for answer in answers)
    assert scripted.hits["/hot"] == 1


async def test_a_head_request_on_a_hit_gets_the_headers_and_no_body(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    scripted.reply("/h", b"0123456789", headers={"Cache-Control": "max-age=60"})
    await send(client, edge.url + "/h")
    head = await send(client, edge.url + "/h", method="HEAD")
    assert head.status == 200 and head.hit
    assert head.headers["Content-Length"] == "10" and head.body == b""
    after = await send(client, edge.url + "/h")
    assert after.body == b"0123456789"
