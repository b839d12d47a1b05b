"""The upstream client on its own (edge/upstream/client.py, http1.py), against origins
on raw sockets: what reaches the origin byte for byte, which connections are kept
alive and which are not, the deadlines, the errors (502/504 and their details),
interim responses, request bodies, the limit per upstream, names and TLS."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict
from recorder import RecordingOrigin, response
from support import free_port

from pinedge.edge.pipeline.errors import UpstreamError
from pinedge.edge.upstream.client import Timeouts

HERE = Path(__file__).parent
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def answer_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer every request of the connection with OK (requests without bodies)."""
    while True:
        await read_head(reader)
        writer.write(OK)
        await writer.drain()


async def body_of(response) -> bytes:
    try:
        return b"".join([chunk async for chunk in response.content.iter_any()])
    finally:
        response.release()


async def get(client, url: str, **headers: str) -> tuple[int, bytes]:
    response, _, _ = await client.request("GET", url, CIMultiDict(Host="example.com", **headers))
    return response.status, await body_of(response)


async def chunks(*parts: bytes):
    for part in parts:
        yield part


# ── what the origin receives ─────────────────────────────────────────────────

# Each as aiohttp's client sent it before issue 14, recorded on the wire.
HEADS = [
    pytest.param(
        "GET",
        "/a/b?c=1",
        [("User-Agent", "x"), ("Accept", "text/html"), ("Via", "1.1 n"), ("Host", "ex.com")],
        None,
        b"GET /a/b?c=1 HTTP/1.1\r\nHost: ex.com\r\nUser-Agent: x\r\nAccept: text/html\r\n"
        b"Via: 1.1 n\r\n\r\n",
        id="host-first-then-the-fields-in-order",
    ),
    pytest.param(
        "GET",
        "/n",
        [("X-Forwarded-For", "192.0.2.1"), ("Host", "ex.com")],
        None,
        b"GET /n HTTP/1.1\r\nHost: ex.com\r\nX-Forwarded-For: 192.0.2.1\r\nAccept: */*\r\n\r\n",
        id="accept-when-the-client-sent-none",
    ),
    pytest.param(
        "GET",
        "/empty?",
        [("Host", "h")],
        None,
        b"GET /empty HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n",
        id="no-empty-query",
    ),
    pytest.param(
        "GET",
        "/caf\u00e9?q=\u00e9",
        [("Host", "h"), ("X-Utf", "\u00e9t\u00e9")],
        None,
        b"GET /caf\xc3\xa9?q=\xc3\xa9 HTTP/1.1\r\nHost: h\r\nX-Utf: \xc3\xa9t\xc3\xa9\r\n"
        b"Accept: */*\r\n\r\n",
        id="utf8",
    ),
    pytest.param(
        "GET",
        "/d",
        [("Cookie", "a=1"), ("Cookie", "b=2"), ("host", "lower.example")],
        None,
        b"GET /d HTTP/1.1\r\nhost: lower.example\r\nCookie: a=1\r\nCookie: b=2\r\n"
        b"Accept: */*\r\n\r\n",
        id="repeated-fields-and-the-host-as-spelt",
    ),
    pytest.param(
        "HEAD",
        "/h",
        [("Host", "h")],
        None,
        b"HEAD /h HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n",
        id="head",
    ),
    pytest.param(
        "OPTIONS",
        "/o",
        [("Host", "h")],
        None,
        b"OPTIONS /o HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n",
        id="options-without-a-body",
    ),
    pytest.param(
        "DELETE",
        "/d",
        [("Host", "h")],
        None,
        b"DELETE /d HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nContent-Length: 0\r\n\r\n",
        id="delete-without-a-body-says-so",
    ),
    pytest.param(
        "POST",
        "/p",
        [("Host", "h")],
        None,
        b"POST /p HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nContent-Length: 0\r\n\r\n",
        id="post-without-a-body-says-so",
    ),
    pytest.param(
        "POST",
        "/p",
        [("Host", "h"), ("Content-Type", "text/plain"), ("Content-Length", "11")],
        [b"hello", b" world"],
        b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n"
        b"Accept: */*\r\n\r\nhello world",
        id="a-body-of-known-length",
    ),
    pytest.param(
        "PUT",
        "/p",
        [("Host", "h")],
        [b"hello", b"", b" world"],
        b"PUT /p HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        id="a-body-of-unknown-length-is-chunked",
    ),
]


@pytest.mark.parametrize(("method", "target", "fields", "body", "expected"), HEADS)
async def test_the_origin_receives_the_request_as_aiohttps_client_sent_it(
    upstream, method, target, fields, body, expected
) -> None:
    origin = await RecordingOrigin(
        answer=lambda got: response(body=b"" if got.method == "HEAD" else b"ok")
    ).start()
    try:
        client = upstream()
        sent, _, _ = await client.request(
            method,
            origin.url + target,
            CIMultiDict(fields),
            chunks(*body) if body is not None else None,
        )
        await body_of(sent)
        assert origin.all_bytes() == expected
        assert origin.errors == []
    finally:
        await origin.stop()


async def test_without_a_host_field_the_upstreams_own_authority_is_sent(upstream) -> None:
    origin = await RecordingOrigin().start()
    try:
        response, _, _ = await upstream().request("GET", origin.url + "/x", {})
        await body_of(response)
        authority = origin.url.removeprefix("http://").encode()
        assert origin.all_bytes().startswith(b"GET /x HTTP/1.1\r\nHost: " + authority + b"\r\n")
    finally:
        await origin.stop()


async def test_field_bytes_that_are_not_utf8_go_upstream_as_they_came(upstream) -> None:
    """aiohttp's server reads them as surrogates; before issue 14 its client dropped
    them, so an ETag of such bytes never matched on revalidation."""
    origin = await RecordingOrigin().start()
    try:
        value = b'W/"caf\xe9"'.decode("utf-8", "surrogateescape")
        response, _, _ = await upstream().request(
            "GET", origin.url + "/x", CIMultiDict({"Host": "h", "If-None-Match": value})
        )
        await body_of(response)
        assert b'\r\nIf-None-Match: W/"caf\xe9"\r\n' in origin.all_bytes()
    finally:
        await origin.stop()


@pytest.mark.parametrize(
    "fields",
    [
        {"Host": "h", "X-A": "a\r\nX-Injected: 1"},
        {"Host": "h", "X-A": "a\nb"},
        {"Host": "h", "X-A": "a\rb"},
        {"Host": "h", "X-A": "a\x00b"},
        {"Host": "h\r\nX-Injected: 1"},
        {"Host": "h", "X-A\r\nX-B": "1"},
    ],
    ids=["crlf", "lf", "cr", "nul", "in-host", "in-a-name"],
)
async def test_a_control_character_in_a_field_is_refused_before_anything_is_sent(
    upstream, raw_origin, fields
) -> None:
    """RFC 9110 §5.5: no field line may be split or carry control characters."""
    origin = await raw_origin(lambda reader, writer, n: answer_each(reader, writer))
    with pytest.raises(ValueError, match="Forbidden control character"):
        await upstream().request("GET", origin.url + "/x", CIMultiDict(fields))
    assert origin.connections == 0


# ── keep-alive ───────────────────────────────────────────────────────────────

REUSABLE = {
    "content-length": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "chunked-with-trailers": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
    "204": b"HTTP/1.1 204 No Content\r\n\r\n",
    "304": b'HTTP/1.1 304 Not Modified\r\nETag: "a"\r\n\r\n',
    "empty": b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
}


@pytest.mark.parametrize("kind", sorted(REUSABLE))
async def test_a_response_read_to_its_end_leaves_its_connection_for_the_next_request(
    upstream, raw_origin, kind
) -> None:
    async def answer(reader, writer, n):
        while True:
            await read_head(reader)
            writer.write(REUSABLE[kind])
            await writer.drain()

    origin = await raw_origin(answer)
    client = upstream()
    for _ in range(3):
        response, _, _ = await client.request("GET", origin.url + "/x", {"Host": "h"})
        body = await body_of(response)
        assert body == (b"hello" if kind in ("content-length", "chunked") else b"") or (
            kind == "chunked-with-trailers" and body == b"hello"
        )
    assert origin.connections == 1


async def test_a_trailer_field_stays_with_its_response(upstream, raw_origin) -> None:
    """aiohttp's C parser can hand a message's last trailer field to the next head it
    parses (docs/security.md); each response here is read by a parser of its own."""

    async def answer(reader, writer, n):
        await read_head(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nok\r\n0\r\nSet-Cookie: planted=1\r\n\r\n"
        )
        await read_head(reader)
        writer.write(OK)
        await reader.read()

    origin = await raw_origin(answer)
    client = upstream()
    for path in ("/a", "/b"):
        response, _, _ = await client.request("GET", origin.url + path, {"Host": "h"})
        assert await body_of(response) == b"ok"
        assert "Set-Cookie" not in response.headers
    assert origin.connections == 1


async def test_a_head_response_has_no_body_whatever_its_length_says(upstream, raw_origin) -> None:
    async def answer(reader, writer, n):
        while True:
            head = await read_head(reader)
            if head.startswith(b"HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            else:
                writer.write(OK)

    origin = await raw_origin(answer)
    client = upstream()
    response, _, _ = await client.request("HEAD", origin.url + "/x", {"Host": "h"})
    assert (response.status, response.content_length) == (200, 1000)
    assert await body_of(response) == b""
    assert await get(client, origin.url + "/y") == (200, b"ok")
    assert origin.connections == 1


NOT_REUSABLE = {
    "connection-close": (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 0),
    "http-1.0": (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 0),
    "extra-bytes-after-it": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200", 0),
    "a-second-response": (OK + OK, 0),
}


@pytest.mark.parametrize("kind", sorted(NOT_REUSABLE))
async def test_a_connection_that_cannot_carry_another_request_is_not_reused(
    upstream, raw_origin, kind
) -> None:
    data, _ = NOT_REUSABLE[kind]

    async def answer(reader, writer, n):
        await read_head(reader)
        writer.write(data if n == 1 else OK)
        await writer.drain()
        await reader.read()  # until the client closes

    origin = await raw_origin(answer)
    client = upstream()
    assert await get(client, origin.url + "/a") == (200, b"ok")
    assert await get(client, origin.url + "/b") == (200, b"ok")
    assert origin.connections == 2


async def test_a_body_delimited_by_the_close_is_read_whole_and_its_connection_closed(
    upstream, raw_origin
) -> None:
    """RFC 9112 §6.3, rule 8."""

    async def answer(reader, writer, n):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil ")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"the end")
        await writer.drain()
        writer.close()

    origin = await raw_origin(answer)
    client = upstream()
    assert await get(client, origin.url + "/a") == (200, b"until the end")
    assert await get(client, origin.url + "/b") == (200, b"until the end")
    assert origin.connections == 2


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\nonly this",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ],
    ids=["content-length", "in-a-chunk", "no-last-chunk"],
)
async def test_a_body_that_breaks_off_fails_its_reader_and_the_next_request_gets_a_new_connection(
    upstream, raw_origin, data
) -> None:
    """RFC 9112 §8: an incomplete message must not pass for a complete one."""

    async def answer(reader, writer, n):
        await read_head(reader)
        if n == 1:
            writer.write(data)
            await writer.drain()
            writer.transport.abort()
        else:
            writer.write(OK)
            await writer.drain()
            await reader.read()

    origin = await raw_origin(answer)
    client = upstream()
    response, _, _ = await client.request("GET", origin.url + "/a", {"Host": "h"})
    with pytest.raises(aiohttp.ClientPayloadError):
        await body_of(response)
    assert await get(client, origin.url + "/b") == (200, b"ok")
    assert origin.connections == 2


async def test_a_malformed_chunk_fails_the_reader_with_a_payload_error(
    upstream, raw_origin
) -> None:
    async def answer(reader, writer, n):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)  # after the head has been read
        writer.write(b"zz\r\n")
        await writer.drain()
        await reader.read()

    origin = await raw_origin(answer)
    response, _, _ = await upstream().request("GET", origin.url + "/a", {"Host": "h"})
    with pytest.raises(aiohttp.ClientPayloadError):
        await body_of(response)


async def test_a_response_let_go_of_before_its_end_closes_its_connection(
    upstream, raw_origin
) -> None:
    async def answer(reader, writer, n):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000)
        await writer.drain()
        await reader.read()  # until the client closes

    origin = await raw_origin(answer)
    client = upstream(limit=1)
    for _ in range(3):  # and its place goes to the next request
        response, _, _ = await client.request("GET", origin.url + "/a", {"Host": "h"})
        assert await response.content.readany()
        response.release()
        with pytest.raises(aiohttp.ClientConnectionError):  # no wait for what will not come
            await response.content.read()
    await asyncio.wait_for(origin.closed.wait(), 2)
    assert origin.connections == 3


# ── bodies as they arrive ────────────────────────────────────────────────────


async def test_a_body_reaches_its_reader_chunk_by_chunk_as_the_origin_sends_it(
    upstream, raw_origin
) -> None:
    more = asyncio.Event()

    async def answer(reader, writer, n):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await more.wait()
        writer.write(b"4\r\nlast\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    origin = await raw_origin(answer)
    response, _, _ = await upstream().request("GET", origin.url + "/a", {"Host": "h"})
    assert await response.content.readany() == b"first"
    more.set()
    assert await body_of(response) == b"last"


async def test_a_large_body_arrives_whole_however_slowly_it_is_read(upstream, raw_origin) -> None:
    payload = bytes(range(256)) * 16 * 1024  # 4 MiB: reading pauses and resumes many times

    async def answer(reader, writer, n):
        while True:
            await read_head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload))
            for at in range(0, len(payload), 100_000):
                writer.write(payload[at : at + 100_000])
                await writer.drain()

    origin = await raw_origin(answer)
    client = upstream()
    response, _, _ = await client.request("GET", origin.url + "/a", {"Host": "h"})
    received = bytearray()
    async for chunk in response.content.iter_chunked(300_000):
        received += chunk
        await asyncio.sleep(0.001)
    response.release()
    assert received == payload
    assert await get(client, origin.url + "/b") == (200, payload)
    assert origin.connections == 1


# ── interim responses ────────────────────────────────────────────────────────


async def test_interim_responses_are_told_as_they_arrive_and_100_continue_is_not(
    upstream, raw_origin
) -> None:
    """RFC 9110 §15.2; RFC 8297 (103 Early Hints)."""
    told = []
    final = asyncio.Event()

    async def answer(reader, writer, n):
        await read_head(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
        await writer.drain()
        await final.wait()
        writer.write(b"HTTP/1.1 102 Processing\r\n\r\n" + OK)
        await writer.drain()
        await reader.read()

    def interim(code, reason, fields):
        told.append((code, reason, dict(fields)))
        final.set()

    origin = await raw_origin(answer)
    response, _, _ = await upstream().request(
        "GET", origin.url + "/a", {"Host": "h"}, interim=interim
    )
    assert (response.status, await body_of(response)) == (200, b"ok")
    assert told == [
        (103, "Early Hints", {"Link": "</a.css>; rel=preload"}),
        (102, "Processing", {}),
    ]


# ── errors and deadlines ─────────────────────────────────────────────────────


async def test_an_origin_that_refuses_the_connection_gives_502_upstream_connect(upstream) -> None:
    with pytest.raises(UpstreamError) as raised:
        await upstream().request("GET", f"http://127.0.0.1:{free_port()}/a", {"Host": "h"})
    assert (raised.value.status, raised.value.detail) == (502, "upstream-connect")


async def test_an_origin_given_by_name_is_found(upstream, raw_origin) -> None:
    """`localhost` resolves to ::1 and 127.0.0.1 here; the origin listens on the second."""
    origin = await raw_origin(lambda reader, writer, n: answer_each(reader, writer))
    url = origin.url.replace("127.0.0.1", "localhost")
    client = upstream()
    assert await get(client, url + "/a") == (200, b"ok")
    assert await get(client, url + "/b") == (200, b"ok")
    assert origin.connections == 1


async def test_a_name_that_does_not_resolve_gives_502_upstream_connect(upstream) -> None:
    with pytest.raises(UpstreamError) as raised:
        await upstream().request("GET", "http://no-such-host.invalid/a", {"Host": "h"})
    assert (raised.value.status, raised.value.detail) == (502, "upstream-connect")


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
        b"NOT HTTP\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: 1\r\n" % n for n in range(129)) + b"\r\n",
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
    ],
    ids=["bad-length", "not-http", "too-many-fields", "field-too-long"],
)
async def test_a_malformed_response_head_gives_502_upstream_malformed(
    upstream, raw_origin, data
) -> None:
    """RFC 9112 §6.3: a response whose framing cannot be read is unusable."""

    async def answer(reader, writer, n):
        await read_head(reader)
        writer.write(data)
        await writer.drain()
        await reader.read()

    origin = await raw_origin(answer)
    with pytest.raises(UpstreamError) as raised:
        await upstream().request("GET", origin.url + "/a", {"Host": "h"})
    assert (raised.value.status, raised.value.detail) == (502, "upstream-malformed")


async def test_an_origin_that_closes_without_answering_gives_502_upstream_closed_once(
    upstream, raw_origin
) -> None:
    """Not sent again on a connection of its own: that is the sender's to decide."""

    async def answer(reader, writer, n):
        await read_head(reader)

    origin = await raw_origin(answer)
    with pytest.raises(UpstreamError) as raised:
        await upstream().request("GET", origin.url + "/a", {"Host": "h"})
    assert (raised.value.status, raised.value.detail) == (502, "upstream-closed")
    assert origin.connections == 1


@pytest.mark.parametrize(
    ("method", "body", "sent_again"),
    [("GET", None, True), ("HEAD", None, True), ("POST", None, False), ("PUT", b"b", False)],
)
async def test_a_request_on_a_kept_connection_the_origin_closed_is_sent_again_once_if_it_may_be(
    upstream, raw_origin, method, body, sent_again
) -> None:
    """RFC 9112 §9.3.1: the origin may close an idle connection as a request is sent
    on it; an idempotent request without a body can go again on a new one."""

    async def answer(reader, writer, n):
        await read_head(reader)
        if n == 1:
            writer.write(OK)
            await writer.drain()
            await read_head(reader)  # the second request: closed unanswered
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            await reader.read()

    origin = await raw_origin(answer)
    client = upstream()
    assert await get(client, origin.url + "/a") == (200, b"ok")
    fields = CIMultiDict({"Host": "h"})
    if body is not None:
        fields["Content-Length"] = str(len(body))
    sending = client.request(method, origin.url + "/b", fields, chunks(body) if body else None)
    if sent_again:
        response, _, _ = await sending
        assert response.status == 200
        await body_of(response)
        assert origin.connections == 2
    else:
        with pytest.raises(UpstreamError) as raised:
            await sending
        assert raised.value.detail in ("upstream-closed", "upstream-error")
        assert origin.connections == 1


async def test_an_origin_that_does_not_answer_within_first_byte_gives_504_upstream_timeout(
    upstream, raw_origin
) -> None:
    async def answer(reader, writer, n):
        await read_head(reader)
        await reader.read()  # until the client closes

    origin = await raw_origin(answer)
    client = upstream(Timeouts(connect=2, first_byte=0.2, total=10))
    with pytest.raises(UpstreamError) as raised:
        await client.request("GET", origin.url + "/a", {"Host": "h"})
    assert (raised.value.status, raised.value.detail) == (504, "upstream-timeout")
    await asyncio.wait_for(origin.closed.wait(), 2)  # and its connection is closed


async def test_a_body_that_stalls_for_longer_than_first_byte_fails_its_reader_with_a_timeout(
    upstream, raw_origin
) -> None:
    async def answer(reader, writer, n):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        await writer.drain()
        await asyncio.sleep(10)

    origin = await raw_origin(answer)
    client = upstream(Timeouts(connect=2, first_byte=0.2, total=10))
    response, _, _ = await client.request("GET", origin.url + "/a", {"Host": "h"})
    with pytest.raises(TimeoutError):
        await body_of(response)


async def test_a_response_longer_than_total_fails_though_its_bytes_keep_coming(
    upstream, raw_origin
) -> None:
    async def answer(reader, writer, n):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(100):
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
            await asyncio.sleep(0.02)

    origin = await raw_origin(answer)
    client = upstream(Timeouts(connect=2, first_byte=0.2, total=0.3))
    response, _, _ = await client.request("GET", origin.url + "/a", {"Host": "h"})
    with pytest.raises(TimeoutError):
        await body_of(response)


async def test_a_body_its_reader_holds_back_is_not_timed_out_for_it(upstream, raw_origin) -> None:
    """The silence while reading is paused is the reader's, not the origin's."""
    payload = b"x" * (2 * 1024 * 1024)

    async def answer(reader, writer, n):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
        await writer.drain()
        await reader.read()

    origin = await raw_origin(answer)
    client = upstream(Timeouts(connect=2, first_byte=0.1, total=10))
    response, _, _ = await client.request("GET", origin.url + "/a", {"Host": "h"})
    await asyncio.sleep(0.35)
    assert await body_of(response) == payload


# ── the limit per upstream ───────────────────────────────────────────────────


async def test_no_more_connections_than_the_limit_and_the_other_requests_wait_their_turn(
    upstream, raw_origin
) -> None:
    async def answer(reader, writer, n):
        while True:
            await read_head(reader)
            await asyncio.sleep(0.02)
            writer.write(OK)
            await writer.drain()

    origin = await raw_origin(answer)
    client = upstream(limit=2)
    results = await asyncio.gather(*(get(client, origin.url + f"/{n}") for n in range(8)))
    assert results == [(200, b"ok")] * 8
    assert (origin.connections, origin.most_open) == (2, 2)


async def test_waiting_for_a_connection_longer_than_connect_gives_504_connect_timeout(
    upstream, raw_origin
) -> None:
    async def answer(reader, writer, n):
        while True:
            await read_head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nha")
            await writer.drain()
            await asyncio.sleep(0.15)
            writer.write(b"lf")
            await writer.drain()

    origin = await raw_origin(answer)
    client = upstream(Timeouts(connect=0.05, first_byte=2, total=10), limit=1)
    held, _, _ = await client.request("GET", origin.url + "/a", {"Host": "h"})
    with pytest.raises(UpstreamError) as raised:
        await client.request("GET", origin.url + "/b", {"Host": "h"})
    assert (raised.value.status, raised.value.detail) == (504, "upstream-connect-timeout")
    assert await body_of(held) == b"half"
    assert await get(client, origin.url + "/c") == (200, b"half")
    assert origin.connections == 1


async def test_a_request_given_up_while_it_waits_for_its_answer_frees_its_place(
    upstream, raw_origin
) -> None:
    async def answer(reader, writer, n):
        await read_head(reader)
        if n == 1:
            await reader.read()  # never answers the first
        else:
            writer.write(OK)
            await writer.drain()
            await reader.read()

    origin = await raw_origin(answer)
    client = upstream(limit=1)
    waiting = asyncio.create_task(client.request("GET", origin.url + "/a", {"Host": "h"}))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await get(client, origin.url + "/b") == (200, b"ok")
    assert origin.connections == 2


# ── request bodies ───────────────────────────────────────────────────────────


async def test_a_request_body_that_fails_midway_fails_the_request_and_drops_the_connection(
    upstream, raw_origin
) -> None:
    received = bytearray()

    async def answer(reader, writer, n):
        await read_head(reader)
        received.extend(await reader.read())  # until the client drops the connection

    async def breaking():
        yield b"first part"
        await asyncio.sleep(0.02)
        raise OSError("the client went away")

    origin = await raw_origin(answer)
    with pytest.raises(UpstreamError) as raised:
        await upstream().request("POST", origin.url + "/a", {"Host": "h"}, breaking())
    assert (raised.value.status, raised.value.detail) == (502, "upstream-error")
    await asyncio.wait_for(origin.closed.wait(), 2)
    assert bytes(received) == b"a\r\nfirst part\r\n"  # no last chunk: not a whole request


async def test_an_answer_before_the_body_is_sent_is_read_and_its_connection_not_reused(
    upstream, raw_origin
) -> None:
    """RFC 9112 §9.5: an origin may answer (413, say) before the request body ends."""
    gone = asyncio.Event()

    async def answer(reader, writer, n):
        await read_head(reader)
        if n == 1:
            writer.write(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\n\r\nbig")
            await writer.drain()
            await reader.read()
            gone.set()
        else:
            writer.write(OK)
            await writer.drain()
            await reader.read()

    async def endless():
        while True:
            yield b"x" * 1000
            await asyncio.sleep(0.01)

    origin = await raw_origin(answer)
    client = upstream()
    response, _, _ = await client.request("PUT", origin.url + "/a", {"Host": "h"}, endless())
    assert (response.status, await body_of(response)) == (413, b"big")
    await asyncio.wait_for(gone.wait(), 2)
    assert await get(client, origin.url + "/b") == (200, b"ok")
    assert origin.connections == 2


async def test_a_body_is_never_sent_past_its_content_length(upstream) -> None:
    origin = await RecordingOrigin().start()
    try:
        response, _, _ = await upstream().request(
            "POST",
            origin.url + "/p",
            CIMultiDict({"Host": "h", "Content-Length": "5"}),
            chunks(b"hel", b"lo and more"),
        )
        await body_of(response)
        assert origin.all_bytes().endswith(b"\r\n\r\nhello")
        assert [got.body for got in origin.requests] == [b"hello"]
    finally:
        await origin.stop()


# ── TLS ──────────────────────────────────────────────────────────────────────


@pytest.fixture
async def tls_origin():
    """An aiohttp server on https://localhost:PORT with a certificate of the test CA."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(body=b"over tls " + request.path.encode())

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(HERE / "localhost.pem")
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    yield f"https://localhost:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_an_https_origin_is_reached_over_tls_with_its_certificate_checked(
    upstream, tls_origin
) -> None:
    trusted = ssl.create_default_context(cafile=HERE / "test-ca.pem")
    client = upstream(tls=trusted)
    assert await get(client, tls_origin + "/a") == (200, b"over tls /a")
    assert await get(client, tls_origin + "/b") == (200, b"over tls /b")
    assert len(client.origins[tls_origin].connections) == 1


async def test_an_https_origin_whose_certificate_is_not_trusted_gives_502_upstream_connect(
    upstream, tls_origin
) -> None:
    with pytest.raises(UpstreamError) as raised:
        await upstream().request("GET", tls_origin + "/a", {"Host": "h"})
    assert (raised.value.status, raised.value.detail) == (502, "upstream-connect")
    assert "certificate" in (raised.value.log or "")
