"""upstream/whole.py: a plain response is read from its bytes as aiohttp's parser
reads it (status, reason, fields, body); anything it does not take as it is, it
leaves to that parser, and a head still arriving is waited for."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import HttpResponseParser

from pinedge.edge.upstream.http1 import MAX_FIELDS, MAX_LINE
from pinedge.edge.upstream.whole import whole_response

PLAIN = [
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nCache-Control: max-age=60\r\n\r\nhello",
        id="the-usual",
    ),
    pytest.param(
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n",
        id="another-status-no-body",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 2\r\n\r\nok",
        id="a-field-twice-in-order",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nX-Spaces:   padded\t \r\nX-Empty:\r\nContent-Length: 2\r\n\r\nok",
        id="whitespace-around-values-and-an-empty-value",
    ),
    pytest.param(
        "HTTP/1.1 200 OK\r\nX-Name: caf\u00e9\r\nContent-Length: 2\r\n\r\nok".encode(),
        id="utf-8-in-a-value",
    ),
    pytest.param(
        "HTTP/1.1 200 OK\r\nX-City: \u0130stanbul\r\nContent-Length: 2\r\n\r\nok".encode(),
        id="a-value-that-lowercases-longer-before-the-length",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nX-Length-Of-It: 9\r\nContent-Length:  2 \r\n\r\nok",
        id="the-length-among-look-alikes",
    ),
    pytest.param(b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", id="no-reason"),
]

LEFT_TO_THE_PARSER = [
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", id="chunked"),
    pytest.param(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", id="no-length"),
    pytest.param(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", id="http-1.0"),
    pytest.param(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", id="interim"),
    pytest.param(b"HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\n", id="no-content"),
    pytest.param(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", id="not-modified"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nnot all", id="body-to-come"),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
        id="two-lengths",
    ),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", id="a-signed-length"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n", id="fold"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX A: 1\r\nContent-Length: 0\r\n\r\n", id="space-in-name"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 0\r\n\r\n", id="control"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A: a\nX-B: b\r\nContent-Length: 0\r\n\r\n", id="bare-lf"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n", id="bare-cr"),
    pytest.param(b"HTTP/1.1 200 OK\x01\r\nContent-Length: 0\r\n\r\n", id="control-in-reason"),
    pytest.param(b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", id="four-digit-status"),
    pytest.param(b"HTTP/1.1 200 OK\r\nno colon\r\nContent-Length: 0\r\n\r\n", id="no-colon"),
]


async def aiohttp_reads(data: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
    loop = asyncio.get_running_loop()
    parser = HttpResponseParser(
        BaseProtocol(loop),
        loop,
        2**16,
        max_line_size=MAX_LINE,
        max_field_size=MAX_LINE,
        max_headers=MAX_FIELDS,
        response_with_body=True,
        read_until_eof=True,
        auto_decompress=False,
    )
    messages, _, _ = parser.feed_data(data)
    message, payload = messages[0]
    body = await payload.read() if payload.is_eof() else b""
    return message.code, message.reason, list(message.headers.items()), body


@pytest.mark.parametrize("data", PLAIN)
async def test_a_plain_response_is_read_as_aiohttp_reads_it(data: bytes):
    found = whole_response(data, MAX_LINE, MAX_FIELDS)
    assert isinstance(found, tuple)
    status, reason, fields, body, after, close, lines = found
    assert (status, reason, fields, body) == await aiohttp_reads(data)
    assert (after, close) == (False, False)
    head = data[: data.index(b"\r\n\r\n")].decode()
    assert lines == head[head.index("\r\n") :] if "\r\n" in head else lines == ""


@pytest.mark.parametrize("data", LEFT_TO_THE_PARSER)
def test_anything_else_is_left_to_the_parser(data: bytes):
    assert whole_response(data, MAX_LINE, MAX_FIELDS) is False


def test_a_head_still_arriving_is_waited_for_until_it_is_too_long():
    start = b"HTTP/1.1 200 OK\r\nX-Long: "
    assert whole_response(start, MAX_LINE, MAX_FIELDS) is None
    assert whole_response(start + b"a" * (2 * MAX_LINE), MAX_LINE, MAX_FIELDS) is False


def test_what_follows_the_response_and_a_close_are_told():
    data = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nokHTTP/1.1"
    found = whole_response(data, MAX_LINE, MAX_FIELDS)
    assert isinstance(found, tuple)
    assert found[3:6] == (b"ok", True, True)
    assert found[6] == "\r\nConnection: close\r\nContent-Length: 2"


def test_framing_fields_are_found_in_any_case():
    data = b"HTTP/1.1 200 OK\r\ncontent-LENGTH: 2\r\nCONNECTION: Close\r\n\r\nok"
    found = whole_response(data, MAX_LINE, MAX_FIELDS)
    assert isinstance(found, tuple)
    assert found[3:6] == (b"ok", False, True)
    chunked = b"HTTP/1.1 200 OK\r\nTRANSFER-Encoding: chunked\r\nContent-Length: 2\r\n\r\nok"
    assert whole_response(chunked, MAX_LINE, MAX_FIELDS) is False


def test_a_close_in_any_connection_field_is_told():
    data = (
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nCONNECTION: Close\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    found = whole_response(data, MAX_LINE, MAX_FIELDS)
    assert isinstance(found, tuple)
    assert found[5] is True


def test_more_fields_than_allowed_are_left_to_the_parser():
    fields = b"".join(b"X-%d: v\r\n" % number for number in range(MAX_FIELDS + 1))
    data = b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 0\r\n\r\n"
    assert whole_response(data, MAX_LINE, MAX_FIELDS) is False
