"""The hit path answers plain hits straight from the parsed request; it must send
what the general path sends and keep pipelined responses in order."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket

import aiohttp
import pytest
from edge_support import (
    NAME,
    VARIED_FIELDS,
    RunningEdge,
    Scripted,
    StartEdge,
    comparable,
    raw_exchange,
    send,
)
from support import PHOTOS, running_node, sample


async def test_a_hit_has_the_same_headers_on_the_hit_path_and_the_general_path(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    scripted.reply(
        "/same",
        b"body",
        headers=VARIED_FIELDS,
    )
    fast = await start_edge(scripted.url, fast_path=True)
    plain = await start_edge(scripted.url, fast_path=False)
    seen = []
    for edge in (fast, plain):
        await send(client, edge.url + "/same")
        reply = await send(client, edge.url + "/same")
        assert reply.hit and reply.body == b"body"
        seen.append(comparable(reply.headers))
    assert seen[0] == seen[1]


ORIGIN_HEADS = {
    "via-from-upstreams": (
        b"body",
        [("Cache-Control", "max-age=60"), ("Via", "1.1 a"), ("X-Mid", "m"), ("Via", "1.0 b")],
    ),
    "nominated-by-connection": (
        b"body",
        [
            ("Cache-Control", "max-age=60"),
            ("Connection", "X-Hop, Via"),
            ("X-Hop", "h"),
            ("Via", "1.1 a"),
            ("Keep-Alive", "timeout=5"),
            ("X-End", "kept"),
        ],
    ),
    "tags-and-hop-by-hop": (
        b"body",
        [
            ("Cache-Control", "max-age=60"),
            ("Surrogate-Key", "a b"),
            ("Keep-Alive", "timeout=5"),
            ("X-End", "kept"),
        ],
    ),
    "small-page": (b"<p>pin</p>", [("Cache-Control", "max-age=60"), ("Content-Type", "text/html")]),
    "page-with-its-accept-ch": (
        b"<p>pin</p>",
        [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Accept-CH", "Sec-CH-DPR"),
            ("Cache-Control", "max-age=60"),
        ],
    ),
}


@pytest.mark.parametrize(("body", "fields"), ORIGIN_HEADS.values(), ids=ORIGIN_HEADS.keys())
async def test_the_prepared_head_has_the_general_paths_fields_on_the_miss_and_the_hit(
    scripted: Scripted,
    start_edge: StartEdge,
    client: aiohttp.ClientSession,
    body: bytes,
    fields: list[tuple[str, str]],
) -> None:
    """The head the miss and hit paths send (made once per stored response) leaves out,
    folds and adds what the general path's does: hop-by-hop and nominated fields
    out, upstream Via lines folded before ours, Accept-CH on pages without one."""
    scripted.reply("/shaped", body, headers=fields)
    scripted.reply("/first", b"first", headers={"Cache-Control": "max-age=60"})
    fast = await start_edge(scripted.url, fast_path=True)
    plain = await start_edge(scripted.url, fast_path=False)
    seen = []
    for edge in (fast, plain):
        # The miss path sends a miss on a kept upstream connection: the first made one.
        await send(client, edge.url + "/first")
        miss = await send(client, edge.url + "/shaped")
        hit = await send(client, edge.url + "/shaped")
        assert hit.hit and miss.body == hit.body == body
        seen.append((comparable(miss.headers), comparable(hit.headers)))
        for reply in (miss, hit):
            assert len(reply.headers.getall("Via")) == 1
            assert "X-Hop" not in reply.headers and "Keep-Alive" not in reply.headers
    assert seen[0] == seen[1]
    via = dict(seen[0][1])["via"]
    upstream = [value for name, value in fields if name == "Via"]
    if "Connection" in dict(fields):
        upstream = []
    assert via == ", ".join([*upstream, f"1.1 {NAME}"])


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


async def test_hits_after_a_miss_on_a_connection_are_answered_by_the_hit_path_again(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    """A keep-alive client alternating misses and hits (the traffic of any page
    that mixes new and known images) keeps the hit path: docs/operations.md says
    its hits are counted but not timed, and only the misses go through aiohttp."""
    scripted.reply("/hot", b"HOT", headers={"Cache-Control": "max-age=60"})
    for number in range(20):
        scripted.reply(f"/new{number}", b"NEW", headers={"Cache-Control": "max-age=60"})
    edge = await start_edge(scripted.url, fast_path=True)
    await send(client, edge.url + "/hot")
    before = await edge.metrics(client)
    request = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n"
    host, port = edge.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        for number in range(20):
            for path, body in ((b"/new%d" % number, b"NEW"), (b"/hot", b"HOT"), (b"/hot", b"HOT")):
                writer.write(request % path)
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200") and await reader.readexactly(3) == body
    finally:
        writer.close()
    after = await edge.metrics(client)
    counted = "pinedge_requests_total", {"cache": "hit"}
    timed = "pinedge_request_duration_seconds_count", {"cache": "hit"}
    assert sample(after, counted[0], **counted[1]) - sample(before, counted[0], **counted[1]) == 40
    assert sample(after, timed[0], **timed[1]) == sample(before, timed[0], **timed[1])
    assert sample(after, "pinedge_requests_total", cache="miss") == 21


def alternate_misses_and_hits(url: str, count: int) -> list[bytes]:
    """On one connection, as fast as the answers come: a new URL, then /hot twice,
    `count` times over; the bodies read."""
    host, port = url.removeprefix("http://").split(":")
    request = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    bodies = []
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        stream = sock.makefile("rb")
        for number in range(count):
            for path in (b"/new%d" % number, b"/hot", b"/hot"):
                sock.sendall(request % path)
                length = 0
                while (line := stream.readline()) != b"\r\n":
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                bodies.append(stream.read(length))
    return bodies


async def test_a_client_that_answers_at_once_keeps_the_hit_path_after_each_miss(
    scripted: Scripted, client: aiohttp.ClientSession
) -> None:
    """The same through a node of its own against a client in another thread, which
    sends its next request the moment a miss's answer arrives, before aiohttp's
    request loop has come back for it."""
    scripted.reply("/hot", b"HOT", headers={"Cache-Control": "max-age=60"})
    for number in range(200):
        scripted.reply(f"/new{number}", b"NEW", headers={"Cache-Control": "max-age=60"})
    async with running_node(client, scripted.url) as node:
        await send(client, node.url + "/hot")
        bodies = await asyncio.to_thread(alternate_misses_and_hits, node.url, 200)
        assert bodies == [b"NEW", b"HOT", b"HOT"] * 200
        await asyncio.sleep(1.2)  # a worker reports its counters once a second
        async with client.get(node.admin + "/metrics") as response:
            text = await response.text()
    assert sample(text, "pinedge_requests_total", cache="hit") == 400
    assert sample(text, "pinedge_request_duration_seconds_count", cache="hit") == 0


async def test_no_request_is_answered_after_a_response_that_closes_the_connection(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    scripted.reply("/hot", b"HOT", headers={"Cache-Control": "max-age=60"})
    scripted.reply("/last", b"LAST", headers={"Cache-Control": "max-age=60"})
    await send(client, edge.url + "/hot")
    host, port = edge.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /last HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"connection: close" in head.lower() and await reader.readexactly(4) == b"LAST"
    writer.write(b"GET /hot HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    async with asyncio.timeout(5):
        assert await reader.read() == b""
    writer.close()


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


async def test_large_stored_bodies_are_sent_whole_on_hits_even_when_the_socket_fills(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """Hits on large bodies go out by sendfile(2) where the socket takes them and by
    the transport for the rest; either way every byte arrives in order."""
    sizes = {"/16k": 16 * 1024, "/200k": 200 * 1024, "/6m": 6 * 1024 * 1024}
    bodies = {path: os.urandom(size) for path, size in sizes.items()}
    for path, body in bodies.items():
        scripted.reply(path, body, headers={"Cache-Control": "max-age=60"})
        await send(client, edge.url + path)
        async with asyncio.timeout(5):  # a large body is stored just after it is sent
            while not (await send(client, edge.url + path)).hit:
                await asyncio.sleep(0.05)

    async def slow_reader(path: str) -> bytes:
        async with client.get(edge.url + path) as response:
            chunks = []
            async for chunk in response.content.iter_chunked(64 * 1024):
                chunks.append(chunk)
                await asyncio.sleep(0.001)
            assert "hit" in response.headers["Cache-Status"]
            return b"".join(chunks)

    for _round in range(2):
        got = await asyncio.gather(*(slow_reader(path) for path in bodies for _ in range(3)))
        expected = [bodies[path] for path in bodies for _ in range(3)]
        assert [hashlib.sha256(b).digest() for b in got] == [
            hashlib.sha256(b).digest() for b in expected
        ]
    assert all(scripted.hits[path] == 1 for path in bodies)


async def test_a_body_sent_by_sendfile_holds_a_descriptor_only_once_it_is_hit(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """Bodies of 16 to 256 KiB go out by sendfile(2) from their stored file on hits;
    the file is opened at the first hit, so responses nobody asks for again (most
    of an image CDN's misses) hold no descriptor in the worker."""
    paths = [f"/once/{number}" for number in range(40)]
    bodies = {path: os.urandom(20 * 1024) for path in paths}
    for path in paths:
        scripted.reply(path, bodies[path], headers={"Cache-Control": "max-age=60"})
    scripted.reply("/warm", b"w", headers={"Cache-Control": "max-age=60"})
    await send(client, edge.url + "/warm")  # the connections every request uses are open

    def open_descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_descriptors()
    for path in paths:
        assert (await send(client, edge.url + path)).body == bodies[path]
    after_misses = open_descriptors()
    hits = [await send(client, edge.url + path) for path in paths]
    after_hits = open_descriptors()
    assert all(hit.hit and hit.body == bodies[path] for hit, path in zip(hits, paths, strict=True))
    assert after_misses - before < 5
    if edge.server.config.fast_path:  # the hit path sends by sendfile; Edge.handle does not
        assert after_hits - after_misses >= len(paths)


ODD_REQUESTS = {
    "plain": b"GET /odd HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "head": b"HEAD /odd HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "two-pipelined": b"GET /odd HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 2,
    "duplicate-host": b"GET /odd HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.test\r\n\r\n",
    "obs-fold": b"GET /odd HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: 1\r\n continued\r\n\r\n",
    "bare-lf": b"GET /odd HTTP/1.1\nHost: 127.0.0.1\n\n",
    "lowercase-method": b"get /odd HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "space-before-colon": b"GET /odd HTTP/1.1\r\nHost : 127.0.0.1\r\n\r\n",
    "http-1.0": b"GET /odd HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
    "content-length-body": b"GET /odd HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Length: 5\r\n\r\nhello",
    "chunked": b"GET /odd HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "absolute-form": b"GET http://127.0.0.1/odd HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "unknown-host": b"GET /odd HTTP/1.1\r\nHost: other.test\r\n\r\n",
    "dot-segment": b"GET /x/../odd HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "nul-in-value": b"GET /odd HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: a\x00b\r\n\r\n",
    "connection-close": b"GET /odd HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
}


async def first_answers(edge: RunningEdge, payload: bytes) -> list[tuple[bytes, bytes]]:
    """(status line, body) of every response the edge sends before it goes quiet."""
    host, port = edge.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(payload)
    await writer.drain()
    answers = []
    try:
        async with asyncio.timeout(0.3):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = b"" if payload.startswith(b"HEAD") else await reader.readexactly(length)
                answers.append((head.split(b"\r\n", 1)[0], body))
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()
    return answers


@pytest.mark.slow
@pytest.mark.parametrize("payload", ODD_REQUESTS.values(), ids=ODD_REQUESTS.keys())
async def test_odd_requests_get_the_same_answers_with_and_without_the_hit_path(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession, payload: bytes
) -> None:
    """The hit path reads only requests it fully understands; any other request is
    answered exactly as the general path answers it."""
    scripted.reply("/odd", b"ODD", headers={"Cache-Control": "max-age=60"})
    fast = await start_edge(scripted.url, fast_path=True)
    plain = await start_edge(scripted.url, fast_path=False)
    for edge in (fast, plain):
        await send(client, edge.url + "/odd")
    assert await first_answers(fast, payload) == await first_answers(plain, payload)


@pytest.mark.parametrize(
    ("path", "content_type", "headers"),
    [
        ("/pic.jpg?w=236", "image/jpeg", {"Accept": "image/avif,image/webp,*/*"}),
        ("/pic.jpg", "image/jpeg", {"Accept": "image/webp"}),
        ("/page", "text/html", {"Accept-Encoding": "gzip, br"}),
    ],
    ids=["image-width-and-format", "image-format", "text-coding"],
)
async def test_a_stored_variant_has_the_same_answer_on_both_paths(
    scripted: Scripted,
    start_edge: StartEdge,
    client: aiohttp.ClientSession,
    path: str,
    content_type: str,
    headers: dict[str, str],
) -> None:
    photo = PHOTOS / "hubble_deep_field.jpg"
    body = photo.read_bytes() if content_type.startswith("image/") else b"<p>pin</p>" * 500
    scripted.reply(
        path.split("?")[0],
        body,
        headers={"Content-Type": content_type, "Cache-Control": "max-age=60", "ETag": '"s"'},
    )
    fast = await start_edge(scripted.url, fast_path=True)
    plain = await start_edge(scripted.url, fast_path=False)
    seen = []
    for edge in (fast, plain):
        await send(client, edge.url + path, headers)
        reply = await send(client, edge.url + path, headers)
        assert reply.hit
        seen.append((comparable(reply.headers), reply.body))
    assert seen[0] == seen[1]
