"""The miss path answers plain misses that store straight from the request's bytes,
and hands everything else to the general path: it must send what the general path
sends, ask the origin once, and keep a connection's requests in order."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web
from edge_support import (
    VARIED_FIELDS,
    RunningEdge,
    Scripted,
    StartEdge,
    comparable,
    raw_exchange,
    send,
)
from support import sample

from pinedge.core.config import build
from pinedge.edge.node.config import EdgeConfig
from pinedge.edge.node.server import EdgeServer

REQUEST = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def test_a_miss_has_the_same_answer_on_the_miss_path_and_the_general_path(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    scripted.reply(
        "/same",
        b"body",
        headers={**VARIED_FIELDS, "Server": "origin"},
    )
    fast = await start_edge(scripted.url, fast_path=True)
    plain = await start_edge(scripted.url, fast_path=False)
    seen = []
    for edge in (fast, plain):
        # The bytes path takes plain requests only: aiohttp's client adds no field it refuses.
        reply = await send(client, edge.url + "/same")
        assert reply.status == 200 and reply.body == b"body"
        assert reply.cache["fwd"] == "miss" and reply.cache["stored"] is True
        assert reply.headers["Cache-Status"].startswith("upstream; hit, ")
        assert "Surrogate-Key" not in reply.headers
        seen.append(comparable(reply.headers))
        assert (await send(client, edge.url + "/same")).hit
    assert seen[0] == seen[1]
    assert scripted.hits["/same"] == 2  # once per edge


async def test_misses_the_miss_path_hands_on_are_answered_as_the_general_path_answers(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    """Not stored, an upstream error, a field kept from later clients, an upstream
    Age, a body too large to wait for: each fetched once, answered in full."""
    big = bytes(range(256)) * 2048  # 512 KiB
    scripted.reply("/nostore", b"private", headers={"Cache-Control": "no-store"})
    scripted.reply("/error", b"broken", status=503)
    scripted.reply(
        "/withheld",
        b"shared",
        headers={"Cache-Control": 'private="X-User", max-age=60', "X-User": "a"},
    )
    scripted.reply("/aged", b"aged", headers={"Cache-Control": "max-age=60", "Age": "7"})
    scripted.reply("/big", big, headers={"Cache-Control": "max-age=60"})
    fast = await start_edge(scripted.url, fast_path=True)
    plain = await start_edge(scripted.url, fast_path=False)
    for path, status, body in (
        ("/nostore", 200, b"private"),
        ("/error", 503, b"broken"),
        ("/withheld", 200, b"shared"),
        ("/aged", 200, b"aged"),
        ("/big", 200, big),
    ):
        seen = []
        for edge in (fast, plain):
            reply = await send(client, edge.url + path)
            assert (reply.status, reply.body) == (status, body), path
            assert reply.cache["fwd"] == "miss", path
            seen.append(comparable(reply.headers))
        assert seen[0] == seen[1], path
        assert scripted.hits[path] == 2, path  # once per edge: nothing was fetched twice
    assert (await send(client, fast.url + "/withheld")).headers.get("X-User") is None
    assert (await send(client, fast.url + "/aged")).hit


async def test_requests_that_come_while_a_miss_is_fetched_are_answered_after_it(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9112 §9.3.2: a client that sends its next requests before the answer to a
    miss (pipelining, in separate writes) gets the answers in request order."""
    scripted.reply("/hot", b"HOT", headers={"Cache-Control": "max-age=60"})
    scripted.reply("/slow", b"SLOW", headers={"Cache-Control": "max-age=60"}, delay=0.3)
    await send(client, edge.url + "/hot")
    host, port = edge.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(REQUEST % b"/slow")
        await writer.drain()
        await asyncio.sleep(0.1)  # the miss is under way
        writer.write(REQUEST % b"/hot")
        await writer.drain()
        writer.write(REQUEST % b"/slow")
        bodies = []
        async with asyncio.timeout(5):
            for _ in range(3):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                bodies.append((head, await reader.readexactly(length)))
    finally:
        writer.close()
    assert [body for _, body in bodies] == [b"SLOW", b"HOT", b"SLOW"]
    assert b"fwd=miss" in bodies[0][0] and b"; hit" in bodies[2][0]
    assert scripted.hits["/slow"] == 1


async def test_a_miss_slower_than_the_keepalive_timeout_is_answered(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    """The idle timeout is for connections waiting for a request, not for one whose
    answer is being fetched."""
    scripted.reply("/slow", b"SLOW", headers={"Cache-Control": "max-age=60"}, delay=2.5)
    edge = await start_edge(scripted.url, keepalive_timeout="1s")
    answers = await raw_exchange(edge, REQUEST % b"/slow", 1)
    assert answers[0].startswith(b"HTTP/1.1 200") and answers[0].endswith(b"SLOW")


async def test_a_miss_under_way_when_the_node_stops_is_answered(
    scripted: Scripted, client: aiohttp.ClientSession
) -> None:
    """A node told to stop drains: the answers being fetched still go out, the one
    the miss path gives and the one it hands to the general path (not stored)."""
    scripted.reply("/slow", b"SLOW", headers={"Cache-Control": "max-age=60"}, delay=0.5)
    scripted.reply("/passed", b"PASSED", headers={"Cache-Control": "no-store"}, delay=0.5)
    values = {"listen": "127.0.0.1:0", "admin": "127.0.0.1:0", "origin": scripted.url}
    server = EdgeServer(build(EdgeConfig, {**values, "drain_time": "2s", "probe_interval": "0s"}))
    await server.start()
    edge = RunningEdge(server, f"http://127.0.0.1:{server.port}", "")
    exchanges = [
        asyncio.create_task(raw_exchange(edge, REQUEST % path, 1))
        for path in (b"/slow", b"/passed")
    ]
    await asyncio.sleep(0.2)
    await server.stop()
    stored, passed = [(await exchange)[0] for exchange in exchanges]
    assert stored.startswith(b"HTTP/1.1 200") and stored.endswith(b"\r\n\r\nSLOW")
    assert passed.startswith(b"HTTP/1.1 200") and passed.endswith(b"\r\n\r\nPASSED")


async def test_a_client_that_leaves_during_a_miss_costs_nothing_and_the_response_is_stored(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    released = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await released.wait()
        return web.Response(body=b"KEPT", headers={"Cache-Control": "max-age=60"})

    scripted.handle("/left", slow)
    scripted.reply("/nostore", b"gone", headers={"Cache-Control": "no-store"}, delay=0.3)
    host, port = edge.url.removeprefix("http://").split(":")
    for path in (b"/left", b"/nostore"):
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(REQUEST % path)
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.close()
    released.set()
    await asyncio.sleep(0.5)
    stored = await send(client, edge.url + "/left")
    assert stored.hit and stored.body == b"KEPT"
    again = await send(client, edge.url + "/nostore")
    assert again.status == 200 and again.body == b"gone"
    assert scripted.hits["/left"] == 1 and scripted.hits["/nostore"] == 2


async def test_the_head_of_a_body_still_arriving_is_not_held_back_for_it(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """A slow origin's response head reaches the client while its body trickles in,
    as on the general path: the miss path waits only for bodies that came whole."""
    body = b"x" * 20_000
    release = asyncio.Event()

    async def slow_body(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Cache-Control": "max-age=60", "Content-Length": str(len(body))}
        )
        await response.prepare(request)
        await response.write(body[:100])
        await release.wait()
        await response.write(body[100:])
        return response

    scripted.handle("/trickle", slow_body)
    host, port = edge.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(REQUEST % b"/trickle")
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"fwd=miss" in head
        release.set()
        async with asyncio.timeout(5):
            assert await reader.readexactly(len(body)) == body
    finally:
        release.set()
        writer.close()
    assert (await send(client, edge.url + "/trickle")).hit


async def test_a_handed_on_miss_is_timed_from_its_arrival_not_from_the_hand_over(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """pinedge_request_duration_seconds counts the wait for the origin of a miss the
    miss path hands on (here one not to be stored) as it does on the general path."""
    scripted.reply("/slow-nostore", b"late", headers={"Cache-Control": "no-store"}, delay=0.4)
    reply = await send(client, edge.url + "/slow-nostore")
    assert reply.body == b"late"
    text = await edge.metrics(client)
    assert sample(text, "pinedge_request_duration_seconds_sum", cache="miss") >= 0.4
