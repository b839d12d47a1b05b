"""Byte ranges through a real edge (RFC 9110 §14), answered from the stored full response.

Each test stores one object (origin sees one request), then asks for parts of it.
"""

from __future__ import annotations

import aiohttp
from edge_support import RunningEdge, Scripted, our_entry

BODY = b"0123456789abcdefghijklmnopqrstuvwxyz"
SIZE = len(BODY)
ETAG = '"v1"'
LAST_MODIFIED = "Sun, 06 Nov 1994 08:49:37 GMT"
CACHEABLE = {
    "Cache-Control": "max-age=60",
    "Content-Type": "text/plain",
    "ETag": ETAG,
    "Last-Modified": LAST_MODIFIED,
}


async def store(
    client: aiohttp.ClientSession,
    edge: RunningEdge,
    scripted: Scripted,
    path: str = "/obj",
    headers: dict[str, str] | None = None,
) -> str:
    """Script `path`, fetch it once in full so it is stored, and return its edge URL."""
    scripted.reply(path, BODY, headers=headers or CACHEABLE)
    url = edge.url + path
    async with client.get(url) as response:
        assert response.status == 200
        assert await response.read() == BODY
        assert "stored" in our_entry(response.headers)
    return url


async def get(
    client: aiohttp.ClientSession, url: str, **headers: str
) -> tuple[aiohttp.ClientResponse, bytes]:
    async with client.get(url, headers=headers) as response:
        return response, await response.read()


async def assert_still_served(client: aiohttp.ClientSession, url: str) -> None:
    """The next plain request is a 200 hit with the whole stored body."""
    response, body = await get(client, url)
    assert response.status == 200
    assert body == BODY
    assert our_entry(response.headers)[1] == "hit"


def multipart_parts(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """(part headers, part body) for each part of a multipart/byteranges body."""
    boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
    parts = []
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        fields = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        parts.append((fields, data.removesuffix(b"\r\n")))
    return parts


async def test_a_range_of_a_stored_object_is_a_206_with_exactly_those_bytes(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9110 §14.1.2, §15.3.7."""
    url = await store(client, edge, scripted)
    response, body = await get(client, url, Range="bytes=0-9")
    assert response.status == 206
    assert body == BODY[:10]
    assert response.headers["Content-Range"] == f"bytes 0-9/{SIZE}"
    assert our_entry(response.headers)[1] == "hit"
    assert scripted.hits["/obj"] == 1


async def test_a_suffix_range_gives_the_last_bytes(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9110 §14.1.2: suffix-range."""
    url = await store(client, edge, scripted)
    response, body = await get(client, url, Range="bytes=-5")
    assert response.status == 206
    assert body == BODY[-5:]
    assert response.headers["Content-Range"] == f"bytes {SIZE - 5}-{SIZE - 1}/{SIZE}"
    assert scripted.hits["/obj"] == 1


async def test_an_open_ended_range_gives_the_rest_of_the_object(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9110 §14.1.2: a range without last-pos runs to the end."""
    url = await store(client, edge, scripted)
    response, body = await get(client, url, Range="bytes=10-")
    assert response.status == 206
    assert body == BODY[10:]
    assert response.headers["Content-Range"] == f"bytes 10-{SIZE - 1}/{SIZE}"
    assert scripted.hits["/obj"] == 1


async def test_several_ranges_come_back_as_multipart_byteranges_with_every_part(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9110 §14.6: multipart/byteranges, each part with its Content-Range."""
    url = await store(client, edge, scripted)
    response, body = await get(client, url, Range="bytes=0-1,10-12")
    assert response.status == 206
    content_type = response.headers["Content-Type"]
    assert content_type.startswith("multipart/byteranges; boundary=")
    assert "Content-Range" not in response.headers
    parts = multipart_parts(content_type, body)
    assert [(p["Content-Range"], data) for p, data in parts] == [
        (f"bytes 0-1/{SIZE}", BODY[0:2]),
        (f"bytes 10-12/{SIZE}", BODY[10:13]),
    ]
    assert all(p["Content-Type"] == "text/plain" for p, _ in parts)
    assert scripted.hits["/obj"] == 1


async def test_a_range_starting_at_the_end_is_416_with_the_size(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9110 §15.5.17: 416 carries Content-Range: bytes */SIZE."""
    url = await store(client, edge, scripted)
    response, _ = await get(client, url, Range=f"bytes={SIZE}-")
    assert response.status == 416
    assert response.headers["Content-Range"] == f"bytes */{SIZE}"
    await assert_still_served(client, url)


async def test_a_malformed_range_is_416_with_a_reason_and_the_object_stays_cached(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9110 §14.2: bad input gets a clear 4xx; nothing stored is lost."""
    url = await store(client, edge, scripted)
    for bad in ("bytes=abc", "bytes=5-1"):
        response, body = await get(client, url, Range=bad)
        assert response.status == 416, bad
        assert response.headers["Content-Range"] == f"bytes */{SIZE}"
        assert b"malformed" in body, bad
    await assert_still_served(client, url)
    assert scripted.hits["/obj"] == 1


async def test_two_hundred_ranges_are_refused_and_the_node_keeps_serving(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9110 §14.2: a server may refuse many small ranges (a denial-of-service vector)."""
    url = await store(client, edge, scripted)
    many = "bytes=" + ",".join(f"{i % SIZE}-{i % SIZE}" for i in range(200))
    response, body = await get(client, url, Range=many)
    assert response.status == 416
    assert b"too many ranges" in body
    await assert_still_served(client, url)


async def test_a_thirty_digit_range_position_is_refused_and_the_node_keeps_serving(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9110 §14.2; absurd numbers are bad input, not a reason to fail."""
    url = await store(client, edge, scripted)
    response, body = await get(client, url, Range="bytes=0-" + "9" * 30)
    assert response.status == 416
    assert body
    await assert_still_served(client, url)


async def test_a_range_in_another_unit_is_ignored_and_the_whole_object_sent(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9110 §14.2: a recipient ignores a Range with a unit it does not understand."""
    url = await store(client, edge, scripted)
    response, body = await get(client, url, Range="items=0-5")
    assert response.status == 200
    assert body == BODY
    assert "Content-Range" not in response.headers


async def test_if_range_with_the_stored_strong_etag_gives_the_range(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9110 §13.1.5: the validator matches, so the Range applies."""
    url = await store(client, edge, scripted)
    response, body = await get(client, url, Range="bytes=0-9", **{"If-Range": ETAG})
    assert response.status == 206
    assert body == BODY[:10]


async def test_if_range_with_another_etag_gives_the_whole_object(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9110 §13.1.5: the representation changed, so send all of it."""
    url = await store(client, edge, scripted)
    response, body = await get(client, url, Range="bytes=0-9", **{"If-Range": '"v0"'})
    assert response.status == 200
    assert body == BODY
    assert "Content-Range" not in response.headers


async def test_if_range_with_a_weak_etag_gives_the_whole_object(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9110 §13.1.5: If-Range uses the strong comparison; weak tags never match."""
    headers = {**CACHEABLE, "ETag": 'W/"v1"'}
    url = await store(client, edge, scripted, headers=headers)
    response, body = await get(client, url, Range="bytes=0-9", **{"If-Range": 'W/"v1"'})
    assert response.status == 200
    assert body == BODY


async def test_if_range_with_the_exact_last_modified_date_gives_the_range(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9110 §13.1.5, §8.8.2.2: Last-Modified a second or more before Date is strong."""
    url = await store(client, edge, scripted)
    response, body = await get(client, url, Range="bytes=0-9", **{"If-Range": LAST_MODIFIED})
    assert response.status == 206
    assert body == BODY[:10]
    assert response.headers["Content-Range"] == f"bytes 0-9/{SIZE}"


async def test_a_range_request_on_a_miss_stores_the_whole_object_and_answers_206(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """RFC 9111 §3.3: the cache fetches the full representation; the client gets its part."""
    scripted.reply("/cold", BODY, headers=CACHEABLE)
    response, body = await get(client, edge.url + "/cold", Range="bytes=0-9")
    assert response.status == 206
    assert body == BODY[:10]
    assert response.headers["Content-Range"] == f"bytes 0-9/{SIZE}"
    assert "Range" not in scripted.last("/cold").headers
    assert "If-Range" not in scripted.last("/cold").headers
    response, body = await get(client, edge.url + "/cold")
    assert response.status == 200
    assert body == BODY
    assert our_entry(response.headers)[1] == "hit"
    assert scripted.hits["/cold"] == 1
