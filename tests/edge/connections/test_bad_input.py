"""Bad input from clients: a clear 4xx with the reason, nothing cached from it, and
the node goes on serving what it already stored (RFC 9110 §15.5, RFC 9112 §2-§3).

Each test first stores `/ok`, sends its bad request, then asks for `/ok` again on
a new connection and expects a hit: bad input costs the node nothing.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web
from edge_support import RunningEdge, Scripted, raw_head, send
from yarl import URL

NODE = "pinedge-test"
PAGE = b"<p>" + b"pins " * 800 + b"</p>"  # large enough to be compressed


# ── helpers ──────────────────────────────────────────────────────────────────


async def raw_exchange(url: str, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `data` as-is on a new connection; (status, headers, body) of the answer."""
    target = URL(url)
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        writer.write(data)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
        else:
            body = await asyncio.wait_for(reader.read(), 5)
        return status, headers, body
    finally:
        writer.close()


def get(target: str, host: str = "127.0.0.1") -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


async def store_ok(client, edge, scripted) -> None:
    """Store `/ok` so the test can show it survives the bad request."""
    scripted.reply("/ok", b"still here", headers={"Cache-Control": "max-age=60"})
    async with client.get(edge.url + "/ok") as response:
        assert response.status == 200
        assert "stored" in response.headers["Cache-Status"]


async def assert_still_served(edge) -> None:
    """A normal request on a new connection is served from the cache."""
    async with aiohttp.ClientSession() as fresh, fresh.get(edge.url + "/ok") as response:
        assert response.status == 200
        assert await response.read() == b"still here"
        assert response.headers["Cache-Status"].startswith(f"{NODE}; hit")


def origin_saw_only_ok(scripted) -> bool:
    return sum(scripted.hits.values()) == scripted.hits["/ok"] == 1


# ── malformed requests ───────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("request_line", "answer"),
    [
        pytest.param(b"GARBAGE", 400, id="garbage"),
        pytest.param(b"GET /x HTTP/9.9", 400, id="unknown-version"),
        pytest.param(b"GET /x", 505, id="missing-version"),  # HTTP/0.9's form
    ],
)
async def test_a_malformed_request_line_gets_4xx_or_505_and_the_node_keeps_serving(
    client, edge, scripted, request_line, answer
):
    """RFC 9112 §3: a request line that does not parse is answered with 400; one in
    HTTP/0.9's form (no version) names a version this node does not speak (505)."""
    await store_ok(client, edge, scripted)
    status, _headers, body = await raw_exchange(edge.url, request_line + b"\r\n\r\n")
    assert status == answer
    assert body.strip(), "the 400 says why"
    assert origin_saw_only_ok(scripted)
    await assert_still_served(edge)


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("/" + "a" * 9000, id="origin-form"),
        pytest.param("http://127.0.0.1/" + "a" * 9000, id="absolute-form"),
    ],
)
async def test_a_request_target_over_max_request_line_gets_414(client, edge, scripted, target):
    """RFC 9112 §3: a server receiving a request-target longer than any it wishes to
    parse responds 414 (URI Too Long)."""
    await store_ok(client, edge, scripted)
    status, _headers, body = await raw_exchange(edge.url, get(target))
    assert status == 414
    assert body.strip()
    assert origin_saw_only_ok(scripted)
    await assert_still_served(edge)


async def test_one_header_over_max_header_size_is_refused(client, edge, scripted):
    """RFC 6585 §5: a header field that is too large gets 431."""
    await store_ok(client, edge, scripted)
    request = (
        b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
        + b"b" * 9000
        + b"\r\nConnection: close\r\n\r\n"
    )
    status, _headers, body = await raw_exchange(edge.url, request)
    assert status == 431
    assert body.strip()
    assert scripted.hits["/ok"] == 1
    await assert_still_served(edge)


@pytest.mark.parametrize("value", [b"/" + b"p" * 9000, b"http://x/" + b"p" * 9000])
async def test_a_long_header_value_that_looks_like_a_path_gets_431_not_414(
    client, edge, scripted, value
):
    await store_ok(client, edge, scripted)
    request = b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\nReferer: " + value + b"\r\n\r\n"
    status, _headers, _body = await raw_exchange(edge.url, request)
    assert status == 431
    await assert_still_served(edge)


async def test_too_many_headers_are_refused(client, edge, scripted):
    """RFC 6585 §5: a header section that is too large gets a 4xx."""
    await store_ok(client, edge, scripted)
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(200))
    request = b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\n" + many + b"Connection: close\r\n\r\n"
    status, _headers, body = await raw_exchange(edge.url, request)
    assert 400 <= status < 500
    assert body.strip()
    assert scripted.hits["/ok"] == 1
    await assert_still_served(edge)


async def test_requests_the_parser_refuses_are_counted_as_errors(
    edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """Before: malformed requests got their 400 but never showed in the metrics."""
    head = await raw_head(edge, b"GARBAGE\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") or head.startswith(b"HTTP/1.0 400")
    metrics = await edge.metrics(client)
    assert 'pinedge_requests_total{cache="error",code="4xx"} 1' in metrics


# ── request targets that try to escape the origin's path space ──────────────


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("/static/../secret", id="dot-dot"),
        pytest.param("/static/%2e%2e/secret", id="encoded-dot-dot"),
        pytest.param("/static/%2E./secret", id="mixed-encoded-dot-dot"),
        pytest.param("/static/a%00b", id="encoded-nul"),
        pytest.param("/static/%252e%252e/secret", id="double-encoded-dot-dot"),
        pytest.param("/static/..%5csecret", id="encoded-backslash"),
        pytest.param("/static\\..\\secret", id="raw-backslash"),
    ],
)
async def test_a_path_that_escapes_or_confuses_the_origin_gets_400_and_never_reaches_it(
    client, edge, scripted, target
):
    """RFC 3986 §5.2.4 / RFC 9110 §17.2: dot-segments and their encodings are refused."""
    await store_ok(client, edge, scripted)
    scripted.reply("/secret", b"secret")
    status, _headers, body = await raw_exchange(edge.url, get(target))
    assert status == 400
    assert body.strip()
    assert origin_saw_only_ok(scripted)
    await assert_still_served(edge)


@pytest.mark.parametrize(
    ("target", "host"),
    [
        pytest.param("/static/%2e%2e/secret", "127.0.0.1", id="refused-path"),
        pytest.param("/ok", "elsewhere.test", id="unknown-host"),
    ],
)
async def test_an_error_the_edge_makes_itself_is_not_reported_as_a_hit(
    client, edge, scripted, target, host
):
    """RFC 9211 §2.1: `hit` means the response was satisfied from the cache."""
    await store_ok(client, edge, scripted)
    status, headers, _body = await raw_exchange(edge.url, get(target, host))
    assert 400 <= status < 500
    parameters = [p.strip() for p in headers["cache-status"].split(";")]
    assert parameters[0] == NODE
    assert "hit" not in parameters[1:]


async def test_a_fragment_in_the_target_is_refused_and_cannot_take_a_variants_key(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """Before: GET /page#enc=gzip stored the plain page under the gzip variant's key."""
    scripted.reply(
        "/frag", PAGE, headers={"Content-Type": "text/html", "Cache-Control": "max-age=60"}
    )
    head = await raw_head(edge, b"GET /frag#enc=gzip HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    reply = await send(client, edge.url + "/frag", {"Accept-Encoding": "gzip"})
    assert reply.headers.get("Content-Encoding") == "gzip"


# ── Host ─────────────────────────────────────────────────────────────────────


async def test_an_unknown_host_gets_421_naming_the_host(client, edge, scripted):
    """RFC 9110 §15.5.20: a request for a host this node does not serve is misdirected."""
    await store_ok(client, edge, scripted)
    async with client.get(edge.url + "/ok", headers={"Host": "elsewhere.test"}) as response:
        assert response.status == 421
        assert "elsewhere.test" in await response.text()
        assert response.headers["Cache-Status"].startswith(NODE)
    assert scripted.hits["/ok"] == 1
    await assert_still_served(edge)


async def test_an_http11_request_without_host_gets_400(client, edge, scripted):
    """RFC 9112 §3.2: a server responds 400 to an HTTP/1.1 request that lacks Host."""
    await store_ok(client, edge, scripted)
    status, _headers, body = await raw_exchange(
        edge.url, b"GET /ok HTTP/1.1\r\nConnection: close\r\n\r\n"
    )
    assert status == 400
    assert b"Host" in body
    assert scripted.hits["/ok"] == 1
    await assert_still_served(edge)


# ── request bodies ───────────────────────────────────────────────────────────


async def test_a_body_over_max_request_body_gets_413_before_the_origin_sees_it(
    client, scripted, start_edge
):
    """RFC 9110 §15.5.14: Content Too Large, decided from Content-Length."""
    edge = await start_edge(scripted.url, max_request_body="1KiB")
    await store_ok(client, edge, scripted)
    scripted.reply("/upload", b"accepted")
    async with client.post(edge.url + "/upload", data=b"x" * 2048) as response:
        assert response.status == 413
        assert "limit" in await response.text()
    assert scripted.hits["/upload"] == 0
    await assert_still_served(edge)


async def test_a_chunked_body_over_max_request_body_never_reaches_the_origin_whole(
    client, scripted, start_edge
):
    """RFC 9110 §15.5.14: a chunked body is cut off once it passes the limit."""
    edge = await start_edge(scripted.url, max_request_body="1KiB")
    await store_ok(client, edge, scripted)
    complete_bodies: list[int] = []

    async def upload(request):
        body = await request.read()
        complete_bodies.append(len(body))
        return aiohttp.web.Response(text="accepted")

    scripted.handle("/upload", upload)

    async def chunks():
        for _ in range(8):
            yield b"y" * 512
            await asyncio.sleep(0)

    try:
        async with client.post(edge.url + "/upload", data=chunks()) as response:
            assert response.status == 413
    except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
        pass  # a closed connection is an acceptable answer too
    await asyncio.sleep(0.1)
    assert all(size <= 1024 for size in complete_bodies)
    await assert_still_served(edge)


# ── query strings ────────────────────────────────────────────────────────────


async def test_query_parameter_order_does_not_split_the_cache(client, edge, scripted):
    scripted.reply("/q", b"query", headers={"Cache-Control": "max-age=60"})
    async with client.get(URL(edge.url + "/q?b=2&a=1", encoded=True)) as response:
        assert "stored" in response.headers["Cache-Status"]
    async with client.get(URL(edge.url + "/q?a=1&b=2", encoded=True)) as response:
        assert response.status == 200
        assert response.headers["Cache-Status"].startswith(f"{NODE}; hit")
    assert scripted.hits["/q"] == 1


async def test_different_query_values_are_different_cache_entries(client, edge, scripted):
    scripted.reply("/q", b"query", headers={"Cache-Control": "max-age=60"})
    async with client.get(URL(edge.url + "/q?a=1&b=2", encoded=True)) as response:
        assert "stored" in response.headers["Cache-Status"]
    async with client.get(URL(edge.url + "/q?a=1&b=3", encoded=True)) as response:
        assert "fwd=miss" in response.headers["Cache-Status"]
    assert scripted.hits["/q"] == 2


async def test_the_request_target_is_forwarded_to_the_origin_unchanged(client, edge, scripted):
    """RFC 9110 §7.1: a proxy forwards the target as received (the key is normalised, not it)."""
    scripted.reply("/q", b"query", headers={"Cache-Control": "max-age=60"})
    async with client.get(URL(edge.url + "/q?b=2&a=1", encoded=True)) as response:
        assert response.status == 200
    assert scripted.last("/q").raw_path == "/q?b=2&a=1"


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
    head = await raw_head(edge, b"GET /a%28b%29%3Bc?x=%40 HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert seen == ["/a%28b%29%3Bc?x=%40"]
