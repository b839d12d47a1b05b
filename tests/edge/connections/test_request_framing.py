"""Request framing across the edge: what a client sends is never read differently by
the origin (RFC 9112 §6-§7, RFC 9110 §9.3.1), so no request can be smuggled through.

The origin here records the exact bytes it receives; clients are raw sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from recorder import RawClient, RawResponse, RecordingOrigin, exchange, response

HOST = b"Host: 127.0.0.1\r\n"


@pytest.fixture
async def origin() -> AsyncIterator[RecordingOrigin]:
    recording = await RecordingOrigin().start()
    yield recording
    await recording.stop()


async def refused(url: str, data: bytes) -> RawResponse:
    """The answer to `data` on a new connection, which the edge then closes."""
    client = await RawClient.connect(url)
    try:
        await client.send(data)
        answer = await client.response()
        assert await client.closed(), "the edge reads on after refusing"
        return answer
    finally:
        await client.close()


async def test_a_get_with_a_body_reaches_the_origin_without_it_and_nothing_rides_inside(
    origin, start_edge
):
    """A GET's content has no meaning (RFC 9110 §9.3.1): the edge reads and drops it.
    The upstream request is framed exactly as sent (no Content-Length for a body that
    is not sent), so the request hidden in the body never reaches the origin."""
    edge = await start_edge(origin.url)
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    client = await RawClient.connect(edge.url)
    await client.send(
        b"GET /a HTTP/1.1\r\n" + HOST + b"Content-Length: %d\r\n\r\n" % len(smuggled) + smuggled
    )
    first = await client.response()
    assert (first.status, first.body) == (200, b"/a")
    # The body was the client's to send: the same connection goes on with a new request.
    await client.send(b"GET /b HTTP/1.1\r\n" + HOST + b"\r\n")
    second = await client.response()
    assert (second.status, second.body) == (200, b"/b")
    await client.close()
    # Another client's request on the pooled upstream connection gets its own answer.
    third = await exchange(edge.url, b"GET /c HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n")
    assert (third.status, third.body) == (200, b"/c")
    assert origin.targets() == ["/a", "/b", "/c"]
    assert origin.errors == []
    sent_a = origin.requests[0]
    assert not sent_a.has("Content-Length") and not sent_a.has("Transfer-Encoding")
    assert sent_a.body == b""
    assert b"/smuggled" not in origin.all_bytes()


async def test_a_chunked_get_body_is_dropped_too(origin, start_edge):
    edge = await start_edge(origin.url)
    inner = b"GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    client = await RawClient.connect(edge.url)
    await client.send(
        b"GET /a HTTP/1.1\r\n"
        + HOST
        + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(inner), inner)
    )
    first = await client.response()
    assert (first.status, first.body) == (200, b"/a")
    assert await client.closed(), "nothing more is read after a chunked body"
    await client.close()
    assert origin.targets() == ["/a"]
    assert not origin.requests[0].has("Transfer-Encoding")
    assert b"/smuggled" not in origin.all_bytes()


async def test_a_get_with_a_body_that_passes_the_cache_is_sent_without_it(origin, start_edge):
    """Requests that bypass the cache (here: If-Match, RFC 9111 §4.3.2) are framed the same way."""
    edge = await start_edge(origin.url)
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    reply = await exchange(
        edge.url,
        b"GET /a HTTP/1.1\r\n"
        + HOST
        + b'If-Match: "x"\r\nConnection: close\r\nContent-Length: %d\r\n\r\n' % len(smuggled)
        + smuggled,
    )
    assert reply.status == 200
    assert origin.targets() == ["/a"]
    assert not origin.requests[0].has("Content-Length")
    assert b"/smuggled" not in origin.all_bytes()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_post_body_reaches_the_origin_whole_and_framed_exactly(origin, start_edge, framing):
    edge = await start_edge(origin.url)
    body = b'{"pin": 1}' + b"GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    if framing == "chunked":
        framed = b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    else:
        framed = b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    client = await RawClient.connect(edge.url)
    await client.send(b"POST /pins HTTP/1.1\r\n" + HOST + framed)
    assert (await client.response()).status == 200
    if framing == "chunked":  # nothing more is read after a chunked body
        assert await client.closed()
        await client.close()
        client = await RawClient.connect(edge.url)
    await client.send(b"GET /after HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n")
    assert (await client.response()).body == b"/after"
    await client.close()
    assert origin.targets() == ["/pins", "/after"]
    assert origin.errors == []
    posted = origin.requests[0]
    assert posted.body == body
    assert posted.has("Content-Length") != posted.has("Transfer-Encoding")
    if posted.has("Content-Length"):
        assert posted.header("Content-Length") == str(len(body))


@pytest.mark.slow
async def test_an_upstream_connection_whose_request_body_was_cut_short_is_not_reused(
    origin, start_edge
):
    """The client declares 1,000 bytes, sends 10 and goes away: the upstream connection
    carrying the unfinished body is closed, never handed to the next request."""
    edge = await start_edge(origin.url)
    client = await RawClient.connect(edge.url)
    await client.send(
        b"POST /upload HTTP/1.1\r\n" + HOST + b"Content-Length: 1000\r\n\r\n0123456789"
    )
    await asyncio.sleep(0.3)
    await client.close()
    await asyncio.sleep(0.3)
    reply = await exchange(
        edge.url, b"GET /next HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n"
    )
    assert (reply.status, reply.body) == (200, b"/next")
    assert origin.targets() == ["/next"]
    assert origin.errors == []
    # The cut request's upstream connection was closed with its body unfinished.
    cut = [number for number, data in origin.raw.items() if b"POST /upload" in data]
    assert len(cut) == 1 and cut[0] in origin.closed
    assert origin.requests[0].connection != cut[0]


# ── Transfer-Encoding the edge must refuse (RFC 9112 §6.1) ──────────────────


@pytest.mark.parametrize(
    ("coding", "answer"),
    [
        pytest.param(b"identity, chunked", 501, id="identity-chunked"),
        pytest.param(b"gzip, chunked", 501, id="gzip-chunked"),
        pytest.param(b"chunked, chunked", 400, id="chunked-twice"),
    ],
)
async def test_a_transfer_coding_the_edge_does_not_implement_is_refused_and_the_connection_closes(
    origin, start_edge, coding, answer
):
    """RFC 9112 §6.1: a server that receives a transfer coding it does not understand
    responds 501 and closes; chunked applied twice is faulty framing (400). What
    follows the body must never be read as a request."""
    edge = await start_edge(origin.url)
    reply = await refused(
        edge.url,
        b"POST /a HTTP/1.1\r\n"
        + HOST
        + b"Transfer-Encoding: "
        + coding
        + b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        + b"GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    )
    assert reply.status == answer
    assert b"Transfer-Encoding" in reply.body or b"chunked" in reply.body.lower()
    assert origin.requests == []


async def test_a_trailer_field_never_reaches_the_next_request(origin, start_edge):
    """aiohttp's C parser hands a chunked body's last trailer field to the next
    request's head; the edge reads nothing after a chunked request, so a client
    cannot plant a field (a Cookie, an Authorization) in the request behind it."""
    edge = await start_edge(origin.url)
    reply = await refused(
        edge.url,
        b"POST /a HTTP/1.1\r\n"
        + HOST
        + b"Transfer-Encoding: chunked\r\n\r\n0\r\nCookie: planted=1\r\n\r\n"
        + b"GET /next HTTP/1.1\r\n"
        + HOST
        + b"\r\n",
    )
    assert reply.status == 200
    assert b"planted" not in origin.all_bytes()


async def test_connect_gets_501_and_what_follows_is_never_read(origin, start_edge):
    edge = await start_edge(origin.url)
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    reply = await refused(
        edge.url,
        b"CONNECT 127.0.0.1:80 HTTP/1.1\r\n"
        + HOST
        + b"Content-Length: %d\r\n\r\n" % len(smuggled)
        + smuggled,
    )
    assert reply.status == 501
    assert origin.requests == []


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/0.9"])
async def test_a_request_line_naming_another_http_version_gets_505_and_the_connection_closes(
    origin, start_edge, version
):
    """RFC 9110 §15.6.6; the answer is in HTTP/1.x whatever the request said."""
    edge = await start_edge(origin.url)
    client = await RawClient.connect(edge.url)
    await client.send(b"GET /a " + version + b"\r\n" + HOST + b"\r\n")
    head = await client.reader.readuntil(b"\r\n")
    assert head.startswith((b"HTTP/1.0 505 ", b"HTTP/1.1 505 "))
    assert await client.closed()
    await client.close()
    # With a request behind it, aiohttp refuses the whole stream (400): never read on.
    reply = await refused(
        edge.url,
        b"GET /a " + version + b"\r\n" + HOST + b"\r\n" + b"GET /b HTTP/1.1\r\n" + HOST + b"\r\n",
    )
    assert reply.status in (400, 505)
    assert origin.requests == []


async def test_a_content_length_over_the_limit_gets_413_and_the_connection_closes(
    origin, start_edge
):
    """2**64 - 1 bytes of body: nothing after the head can be told apart from it."""
    edge = await start_edge(origin.url)
    reply = await refused(
        edge.url, b"POST /a HTTP/1.1\r\n" + HOST + b"Content-Length: 18446744073709551615\r\n\r\n"
    )
    assert reply.status == 413
    assert reply.header("Connection") == "close"
    assert origin.requests == []


async def test_an_http10_request_with_transfer_encoding_gets_400_and_the_connection_closes(
    origin, start_edge
):
    """RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing."""
    edge = await start_edge(origin.url)
    reply = await refused(
        edge.url,
        b"POST /a HTTP/1.0\r\n"
        + HOST
        + b"Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        + b"GET /smuggled HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
    )
    assert reply.status == 400
    assert b"Transfer-Encoding" in reply.body
    assert origin.requests == []


# ── interim responses (RFC 9110 §15.2) ──────────────────────────────────────

EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload; as=style\r\n\r\n"


def hinted(received):
    return response(
        body=b"page",
        headers={"Cache-Control": "max-age=60", "Content-Type": "text/html"},
        interim=[EARLY_HINTS],
    )


async def test_103_early_hints_reach_the_client_before_the_response_and_are_never_stored(
    start_edge,
):
    origin = await RecordingOrigin(hinted).start()
    try:
        edge = await start_edge(origin.url)
        client = await RawClient.connect(edge.url)
        await client.send(b"GET /page HTTP/1.1\r\n" + HOST + b"\r\n")
        hints = await client.response()
        assert hints.status == 103
        assert hints.header("Link") == "</app.css>; rel=preload; as=style"
        final = await client.response()
        assert (final.status, final.body) == (200, b"page")
        await client.send(b"GET /page HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n")
        again = await client.response()
        assert again.status == 200, "a hit is the stored final response alone"
        assert "hit" in (again.header("Cache-Status") or "")
        await client.close()
    finally:
        await origin.stop()


async def test_103_early_hints_on_a_pass_reach_the_client(start_edge):
    origin = await RecordingOrigin(hinted).start()
    try:
        edge = await start_edge(origin.url)
        client = await RawClient.connect(edge.url)
        await client.send(b"POST /page HTTP/1.1\r\n" + HOST + b"Content-Length: 2\r\n\r\nhi")
        assert (await client.response()).status == 103
        assert (await client.response()).status == 200
        await client.close()
    finally:
        await origin.stop()


async def test_an_http10_client_never_gets_an_interim_response(start_edge):
    """RFC 9110 §15.2: a server must not send a 1xx response to an HTTP/1.0 client."""
    origin = await RecordingOrigin(hinted).start()
    try:
        edge = await start_edge(origin.url)
        reply = await exchange(edge.url, b"GET /page HTTP/1.0\r\n" + HOST + b"\r\n")
        assert (reply.status, reply.body) == (200, b"page")
    finally:
        await origin.stop()
