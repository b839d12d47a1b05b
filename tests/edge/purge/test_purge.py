"""Purge on the admin listener: by tag, URL, prefix or everything; hard or soft;
only with the admin token. Seen from outside: the origin's counts, Cache-Status,
the node's answers and its metrics."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiohttp
import pytest
from edge_support import RunningEdge, Scripted, StartEdge, send, serve_photo
from purge_support import AUTH, TOKEN, fill, purge, tagged
from support import running_node
from yarl import URL

from pinedge.edge.store.purge import MAX_BODY


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PINEDGE_ADMIN_TOKEN", TOKEN)
    return TOKEN


async def test_a_tag_purge_refetches_what_carries_the_tag_and_keeps_the_rest(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession, token: str
) -> None:
    edge = await start_edge(scripted.url)
    tagged(scripted, "/a", "pins")
    tagged(scripted, "/b", "pins boards")
    tagged(scripted, "/c", "boards")
    await fill(client, edge.url, "/a", "/b", "/c")

    status, answer = await purge(client, edge.admin_url, {"tags": ["pins"]})

    assert status == 200 and answer["purged"] == 2 and answer["mode"] == "hard"
    for path in ("/a", "/b"):
        again = await send(client, edge.url + path)
        assert not again.hit and again.cache.get("fwd") == "miss"
        assert again.body == f"body of {path}".encode()
    assert (await send(client, edge.url + "/c")).hit
    assert scripted.hits == {"/a": 2, "/b": 2, "/c": 1}


async def test_a_tag_purge_reaches_what_a_miss_stored_that_no_request_has_used_yet(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession, token: str
) -> None:
    """A miss stores its response without making its entry or keeping a copy (read
    back at its next use): a purge in between still drops it, and what it did not
    cover is a hit."""
    edge = await start_edge(scripted.url)
    tagged(scripted, "/first", "other")
    tagged(scripted, "/a", "pins")
    tagged(scripted, "/b", "boards")
    for path in ("/first", "/a", "/b"):
        assert not (await send(client, edge.url + path)).hit
    if edge.server.config.fast_path:  # the miss path stored it and kept no copy
        assert edge.server.store.local["http://127.0.0.1/a"].entries is None

    status, answer = await purge(client, edge.admin_url, {"tags": ["pins"]})

    assert status == 200 and answer["purged"] == 1
    again = await send(client, edge.url + "/a")
    assert not again.hit and again.body == b"body of /a"
    assert (await send(client, edge.url + "/b")).hit
    assert scripted.hits == {"/first": 1, "/a": 2, "/b": 1}


async def test_tags_never_reach_clients(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    tagged(scripted, "/a", "pins", {"Cache-Tag": "pin-1, pin-2"})
    for _ in range(2):
        reply = await send(client, edge.url + "/a")
        assert "Surrogate-Key" not in reply.headers and "Cache-Tag" not in reply.headers


async def test_a_url_purge_removes_every_variant_of_the_url(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession, token: str
) -> None:
    edge = await start_edge(scripted.url)
    serve_photo(scripted, "retina.jpg")
    for query in ("", "?w=236&fm=webp", "?w=474&fm=jpeg"):
        await send(client, edge.url + "/img/retina.jpg" + query)
    scripted.reply(
        "/text", "x" * 4000, headers={"Cache-Control": "max-age=600", "Content-Type": "text/plain"}
    )
    await send(client, edge.url + "/text", {"Accept-Encoding": "br"})
    await send(client, edge.url + "/text", {"Accept-Encoding": "gzip"})

    status, answer = await purge(
        client, edge.admin_url, {"urls": ["/img/retina.jpg", f"{edge.url}/text"]}
    )

    assert status == 200 and answer["purged"] == 6  # 2 sources, 2 images, 2 codings
    variant = await send(client, edge.url + "/img/retina.jpg?w=236&fm=webp")
    assert variant.cache.get("detail") == "transformed"
    coded = await send(client, edge.url + "/text", {"Accept-Encoding": "br"})
    assert coded.cache.get("detail") == "compressed"
    assert scripted.hits == {"/img/retina.jpg": 2, "/text": 2}


async def test_a_prefix_purge_and_a_purge_of_everything(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession, token: str
) -> None:
    edge = await start_edge(scripted.url)
    for path in ("/pins/1", "/pins/2", "/boards/1"):
        tagged(scripted, path, "t")
    await fill(client, edge.url, "/pins/1", "/pins/2", "/boards/1")

    assert (await purge(client, edge.admin_url, {"prefixes": ["/pins/"]}))[1]["purged"] == 2
    assert (await send(client, edge.url + "/boards/1")).hit
    assert not (await send(client, edge.url + "/pins/2")).hit

    assert (await purge(client, edge.admin_url, {"all": True}))[1]["purged"] == 2
    assert not (await send(client, edge.url + "/boards/1")).hit
    assert scripted.hits == {"/pins/1": 1, "/pins/2": 2, "/boards/1": 2}


async def test_a_soft_purge_serves_stale_while_it_revalidates(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession, token: str
) -> None:
    edge = await start_edge(scripted.url)
    revalidations: list[str | None] = []

    async def origin(request: aiohttp.web.Request) -> aiohttp.web.Response:
        headers = {
            "Cache-Control": "max-age=600, stale-while-revalidate=60",
            "ETag": '"v1"',
            "Surrogate-Key": "pins",
        }
        revalidations.append(request.headers.get("If-None-Match"))
        if request.headers.get("If-None-Match") == '"v1"':
            return aiohttp.web.Response(status=304, headers=headers)
        return aiohttp.web.Response(text="pin", headers=headers)

    scripted.handle("/soft", origin)
    await fill(client, edge.url, "/soft")

    status, answer = await purge(client, edge.admin_url, {"tags": ["pins"], "soft": True})
    assert status == 200 and answer == {**answer, "purged": 1, "mode": "soft"}

    stale = await send(client, edge.url + "/soft")
    assert stale.hit and stale.body == b"pin"
    assert float(stale.cache["ttl"]) <= 0  # served stale, not fresh
    async with asyncio.timeout(5):
        while len(revalidations) < 2:
            await asyncio.sleep(0.02)
    assert revalidations == [None, '"v1"']  # revalidated, not refetched
    await asyncio.sleep(0.1)
    fresh = await send(client, edge.url + "/soft")
    assert fresh.hit and float(fresh.cache["ttl"]) > 500


async def test_a_soft_purge_without_stale_while_revalidate_revalidates_before_answering(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession, token: str
) -> None:
    edge = await start_edge(scripted.url)
    tagged(scripted, "/a", "pins")
    await fill(client, edge.url, "/a")
    await purge(client, edge.admin_url, {"urls": ["/a"], "soft": True})
    reply = await send(client, edge.url + "/a")
    assert reply.cache.get("fwd") == "stale" and reply.body == b"body of /a"
    assert scripted.last("/a").headers.get("If-None-Match") == '"/a"'


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        pytest.param({}, 401, id="no-token"),
        pytest.param({"Authorization": "Bearer wrong"}, 401, id="wrong-token"),
        pytest.param({"Authorization": f"Basic {TOKEN}"}, 401, id="not-bearer"),
    ],
)
async def test_a_purge_without_the_right_token_is_refused_and_removes_nothing(
    scripted: Scripted,
    start_edge: StartEdge,
    client: aiohttp.ClientSession,
    token: str,
    headers: dict[str, str],
    code: int,
) -> None:
    edge = await start_edge(scripted.url)
    tagged(scripted, "/a", "pins")
    await fill(client, edge.url, "/a")
    status, answer = await purge(client, edge.admin_url, {"all": True}, headers)
    assert status == code and "token" in answer["error"]
    assert (await send(client, edge.url + "/a")).hit
    assert scripted.hits["/a"] == 1


async def test_a_node_without_a_token_refuses_purges_saying_how_to_set_one(
    scripted: Scripted,
    start_edge: StartEdge,
    client: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PINEDGE_ADMIN_TOKEN", raising=False)
    edge = await start_edge(scripted.url)
    status, answer = await purge(client, edge.admin_url, {"all": True})
    assert status == 403 and "PINEDGE_ADMIN_TOKEN" in answer["error"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param("not json", "not JSON", id="not-json"),
        pytest.param([], "JSON object", id="not-object"),
        pytest.param({}, "name what to purge", id="empty"),
        pytest.param({"tag": ["a"]}, "unknown field", id="unknown-field"),
        pytest.param({"tags": "a"}, "list of non-empty strings", id="tags-not-list"),
        pytest.param({"urls": ["ftp://x/a"]}, "not an http", id="bad-url"),
        pytest.param({"urls": ["a/b"]}, "neither an absolute URL nor a path", id="relative"),
        pytest.param({"all": "yes"}, "true or false", id="all-not-bool"),
    ],
)
async def test_a_bad_purge_request_gets_400_with_its_reason(
    scripted: Scripted,
    start_edge: StartEdge,
    client: aiohttp.ClientSession,
    token: str,
    body: object,
    reason: str,
) -> None:
    edge = await start_edge(scripted.url)
    data = body if isinstance(body, str) else None
    async with client.post(
        edge.admin_url + "/purge", data=data, json=None if data else body, headers=AUTH
    ) as response:
        answer = await response.json()
    assert response.status == 400 and reason in answer["error"]


@pytest.mark.slow
async def test_a_response_in_flight_when_its_tag_is_purged_is_not_stored(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession, token: str
) -> None:
    edge = await start_edge(scripted.url)
    scripted.reply(
        "/slow",
        "old",
        headers={"Cache-Control": "max-age=600", "Surrogate-Key": "pins"},
        delay=0.5,
    )
    in_flight = asyncio.create_task(send(client, edge.url + "/slow"))
    await asyncio.sleep(0.2)  # the origin has the request, not yet answered
    assert (await purge(client, edge.admin_url, {"tags": ["pins"]}))[0] == 200
    assert (await in_flight).body == b"old"
    again = await send(client, edge.url + "/slow")
    assert not again.hit
    assert scripted.hits["/slow"] == 2


@pytest.mark.slow
async def test_a_response_in_flight_when_its_tag_is_soft_purged_is_stale_once_stored(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession, token: str
) -> None:
    edge = await start_edge(scripted.url)
    scripted.reply(
        "/slow-soft",
        "old",
        headers={"Cache-Control": "max-age=600", "Surrogate-Key": "pins"},
        delay=0.5,
    )
    in_flight = asyncio.create_task(send(client, edge.url + "/slow-soft"))
    await asyncio.sleep(0.2)  # the origin has the request, not yet answered
    assert (await purge(client, edge.admin_url, {"tags": ["pins"], "soft": True}))[0] == 200
    assert (await in_flight).body == b"old"
    again = await send(client, edge.url + "/slow-soft")
    assert not again.hit and again.cache.get("fwd") == "stale"
    assert scripted.hits["/slow-soft"] == 2


async def test_purges_are_counted_in_the_metrics(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession, token: str
) -> None:
    edge = await start_edge(scripted.url)
    tagged(scripted, "/a", "pins")
    tagged(scripted, "/b", "pins")
    await fill(client, edge.url, "/a", "/b")
    await purge(client, edge.admin_url, {"tags": ["pins"], "soft": True})
    await purge(client, edge.admin_url, {"tags": ["pins"], "urls": ["/a"]})
    text = await edge.metrics(client)
    counts = dict(re.findall(r'^pinedge_purges_total{(kind="\w+",mode="\w+")} (\S+)$', text, re.M))
    assert counts == {
        'kind="tag",mode="soft"': "1",
        'kind="tag",mode="hard"': "1",
        'kind="url",mode="hard"': "1",
    }
    objects = dict(re.findall(r'^pinedge_purged_objects_total{mode="(\w+)"} (\S+)$', text, re.M))
    assert objects == {"soft": "2", "hard": "2"}


@pytest.mark.slow
async def test_a_purge_on_a_node_of_two_workers_applies_to_both(
    scripted: Scripted, client: aiohttp.ClientSession, token: str, tmp_path: Path
) -> None:
    paths = [f"/w/{index}" for index in range(6)]
    for path in paths:
        tagged(scripted, path, "pins")
    async with running_node(client, scripted.url, workers=2) as node:
        connector = aiohttp.TCPConnector(force_close=True)  # new connections: both workers
        async with aiohttp.ClientSession(connector=connector) as fresh:
            for _ in range(4):
                for path in paths:
                    await send(fresh, node.url + path)
            status, answer = await purge(client, node.admin, {"tags": ["pins"]})
            assert status == 200 and answer["purged"] == len(paths)
            for path in paths:
                first = await send(fresh, node.url + path)
                assert not first.hit, path
                for _ in range(3):
                    assert (await send(fresh, node.url + path)).hit
    assert all(scripted.hits[path] == 2 for path in paths)


# ── the body as it comes over the wire ───────────────────────────────────────


def purge_head(framing: str, authorization: bytes = f"Bearer {TOKEN}".encode()) -> bytes:
    return (
        b"POST /purge HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: %s\r\n"
        b"Content-Type: application/json\r\n%s\r\nConnection: close\r\n\r\n"
    ) % (authorization, framing.encode())


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def exchange_in_parts(url: str, *parts: bytes) -> tuple[int, dict]:
    """Send each part on one new connection with a pause between them (so that
    the node gets them as separate segments); the answer's status and JSON body."""
    target = URL(url)
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        for index, part in enumerate(parts):
            if index:
                await asyncio.sleep(0.2)
            writer.write(part)
            await writer.drain()
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            body = await reader.read()
        status = int(head.split(b" ", 2)[1])
        if b"application/json" not in head.lower():
            return status, {"not JSON": body.decode(errors="replace")}
        return status, json.loads(body)
    finally:
        writer.close()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="arrays"),
        pytest.param(b'{"tags": ' * 100_000 + b"[]" + b"}" * 100_000, id="objects"),
    ],
)
async def test_a_deeply_nested_purge_body_gets_400_and_the_node_keeps_serving(
    scripted: Scripted,
    start_edge: StartEdge,
    client: aiohttp.ClientSession,
    token: str,
    body: bytes,
) -> None:
    edge = await start_edge(scripted.url)
    tagged(scripted, "/a", "pins")
    await fill(client, edge.url, "/a")

    head = purge_head(f"Content-Length: {len(body)}")
    status, answer = await exchange_in_parts(edge.admin_url, head + body)

    assert status == 400 and "too deeply" in answer.get("error", ""), answer
    assert (await send(client, edge.url + "/a")).hit
    assert (await purge(client, edge.admin_url, {"tags": ["pins"]}))[1]["purged"] == 1


@pytest.mark.parametrize("framing", ["chunked", "length"])
async def test_a_purge_whose_body_arrives_in_two_segments_is_carried_out(
    scripted: Scripted,
    start_edge: StartEdge,
    client: aiohttp.ClientSession,
    token: str,
    framing: str,
) -> None:
    edge = await start_edge(scripted.url)
    tagged(scripted, "/a", "pins")
    await fill(client, edge.url, "/a")
    body = json.dumps({"tags": ["pins"], "urls": ["/never-stored"]}).encode()
    first, rest = body[:10], body[10:]
    if framing == "chunked":
        parts = [purge_head("Transfer-Encoding: chunked") + chunk(first), chunk(rest) + chunk(b"")]
    else:
        parts = [purge_head(f"Content-Length: {len(body)}") + first, rest]

    status, answer = await exchange_in_parts(edge.admin_url, *parts)

    assert status == 200 and answer.get("purged") == 1, answer
    assert not (await send(client, edge.url + "/a")).hit


async def test_a_chunked_purge_body_over_the_limit_gets_413_and_purges_nothing(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession, token: str
) -> None:
    edge = await start_edge(scripted.url)
    tagged(scripted, "/a", "pins")
    await fill(client, edge.url, "/a")
    # a valid purge of "pins", padded with spaces past MAX_BODY, sent in 64 KiB chunks
    body = b'{"tags": ["pins"]}' + b" " * MAX_BODY
    pieces = [chunk(body[at : at + 65536]) for at in range(0, len(body), 65536)]

    status, answer = await exchange_in_parts(
        edge.admin_url, purge_head("Transfer-Encoding: chunked") + b"".join(pieces) + chunk(b"")
    )

    assert status == 413 and str(MAX_BODY) in answer.get("error", ""), answer
    assert (await send(client, edge.url + "/a")).hit


@pytest.mark.slow
async def test_a_purge_in_two_segments_works_on_a_node_of_two_workers(
    scripted: Scripted, client: aiohttp.ClientSession, token: str
) -> None:
    tagged(scripted, "/a", "pins")
    async with running_node(client, scripted.url, workers=2) as node:
        await send(client, node.url + "/a")
        body = b'{"tags": ["pins"]}'
        parts = [purge_head("Transfer-Encoding: chunked") + chunk(body[:5]), chunk(body[5:])]
        status, answer = await exchange_in_parts(node.admin, *parts, chunk(b""))
        assert status == 200 and answer.get("purged") == 1, answer


async def test_a_token_that_is_not_utf8_is_refused_with_401_and_purges_nothing(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession, token: str
) -> None:
    edge = await start_edge(scripted.url)
    tagged(scripted, "/a", "pins")
    await fill(client, edge.url, "/a")
    body = b'{"all": true}'
    head = purge_head(f"Content-Length: {len(body)}", authorization=b"Bearer \xff\xfe")

    status, answer = await exchange_in_parts(edge.admin_url, head + body)

    assert status == 401 and "token" in answer.get("error", ""), answer
    assert (await send(client, edge.url + "/a")).hit
