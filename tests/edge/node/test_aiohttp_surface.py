"""The private parts of aiohttp the edge relies on are there, in the shape it expects."""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
from typing import Any

import aiohttp
import pytest
from aiohttp import StreamReader, web
from aiohttp.http import (
    HttpProcessingError,
    HttpResponseParser,
    RawRequestMessage,
    RawResponseMessage,
)
from support import REPO

from pinedge.edge.node import aiohttp_private as private
from pinedge.edge.node.protocol import EdgeConnection

ROOT = REPO
INSTALLED = f"installed aiohttp {aiohttp.__version__}"


async def answer(request: web.BaseRequest) -> web.StreamResponse:
    return web.Response()


@pytest.fixture
async def handler() -> private.RequestHandler:
    """A connection handler as aiohttp makes it, before any connection."""
    return private.RequestHandler(web.Server(answer), loop=asyncio.get_running_loop())


def test_the_installed_aiohttp_is_the_release_the_private_names_were_read_from() -> None:
    minor = ".".join(aiohttp.__version__.split(".")[:2])
    assert minor == private.READ_FROM, (
        f"{INSTALLED}: aiohttp_private.py was read from {private.READ_FROM}; "
        "check every name in it against this release, then update READ_FROM"
    )


@pytest.mark.parametrize("name", sorted(private.CONNECTION_STATE))
async def test_a_connection_holds_the_state_the_hit_path_reads(
    handler: private.RequestHandler, name: str
) -> None:
    kind, reason = private.CONNECTION_STATE[name]
    assert hasattr(handler, name), f"{INSTALLED}: RequestHandler.{name} is gone ({reason})"
    value = getattr(handler, name)
    assert isinstance(value, kind), (
        f"{INSTALLED}: RequestHandler.{name} holds {type(value).__name__}, not {kind} ({reason})"
    )


@pytest.mark.parametrize("name", sorted(private.CONNECTION_METHODS))
def test_a_connection_has_the_methods_the_edge_overrides_or_calls(name: str) -> None:
    parameters, reason = private.CONNECTION_METHODS[name]
    method = getattr(private.RequestHandler, name, None)
    assert callable(method), f"{INSTALLED}: RequestHandler.{name} is gone ({reason})"
    found = tuple(inspect.signature(method).parameters)[1:]
    assert found == parameters, (
        f"{INSTALLED}: RequestHandler.{name} takes {found}, not {parameters} ({reason})"
    )


async def test_the_parser_gives_a_bodiless_request_as_the_hit_path_reads_it(
    handler: private.RequestHandler,
) -> None:
    parser = handler._parser
    assert parser is not None
    result = parser.feed_data(b"GET /a.png HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert isinstance(result, tuple) and len(result) == 3, (
        f"{INSTALLED}: parser.feed_data gives {result!r}, not (messages, upgraded, tail)"
    )
    messages, upgraded, tail = result
    assert (len(messages), upgraded, tail) == (1, False, b"")
    message, payload = messages[0]
    assert isinstance(message, RawRequestMessage), f"{INSTALLED}: parsed {type(message)}"
    assert payload is private.EMPTY_PAYLOAD, (
        f"{INSTALLED}: a bodiless request's payload is not EMPTY_PAYLOAD "
        f"({private.PARSER_METHODS['feed_data']})"
    )
    for field in private.PARSED_REQUEST_FIELDS:
        assert hasattr(message, field), f"{INSTALLED}: RawRequestMessage.{field} is gone"
    assert (message.method, message.path, message.headers["Host"]) == (
        "GET",
        "/a.png",
        "example.com",
    )
    parser.message_consumed()


async def test_the_parser_names_the_limit_a_long_request_line_broke(
    handler: private.RequestHandler,
) -> None:
    parser = handler._parser
    assert parser is not None
    with pytest.raises(private.LineTooLong) as raised:
        parser.feed_data(b"GET /" + b"a" * handler.max_line_size + b" HTTP/1.1\r\n\r\n")
    assert raised.value.args[1] == handler.max_line_size, (
        f"{INSTALLED}: LineTooLong.args is {raised.value.args!r}; "
        f"{private.PARSE_ERRORS['LineTooLong']}"
    )


async def test_the_parser_says_too_many_headers_in_its_words(
    handler: private.RequestHandler,
) -> None:
    parser = handler._parser
    assert parser is not None
    fields = b"".join(b"X-%d: 1\r\n" % n for n in range(handler.max_headers + 1))
    with pytest.raises(private.BadHttpMessage) as raised:
        parser.feed_data(b"GET / HTTP/1.1\r\n" + fields + b"\r\n")
    assert "Too many headers" in str(raised.value), (
        f"{INSTALLED}: the error is {raised.value!r}; {private.PARSE_ERRORS['Too many headers']}"
    )


def test_a_parse_error_can_be_queued_in_place_of_a_request() -> None:
    error = private.BadHttpMessage("bad")
    assert issubclass(private.BadHttpMessage, HttpProcessingError)
    queued = private.ErrInfo(status=400, exc=error, message=error.message)
    assert (queued.status, queued.exc, queued.message) == (400, error, error.message)


class FlowControl:
    """What upstream/http1.py's Connection offers a body's StreamReader, recorded."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.connected = True
        self.parser: Any = None

    def pause_reading(self) -> None:
        self.calls.append("pause")
        self.parser.pause_reading()

    def resume_reading(self, resume_parser: bool = True) -> None:
        self.calls.append(f"resume parser={resume_parser}")


def response_parser(protocol: FlowControl, limit: int = 2**16, head: bool = False) -> Any:
    """The parser as upstream/http1.py makes one, for one request's response."""
    parser = HttpResponseParser(
        protocol,  # type: ignore[arg-type]  # as http1.Connection is
        asyncio.get_running_loop(),
        limit,
        max_line_size=8190,
        max_field_size=8190,
        max_headers=128,
        payload_exception=aiohttp.ClientPayloadError,
        response_with_body=not head,
        read_until_eof=True,
        auto_decompress=False,
    )
    protocol.parser = parser
    return parser


def test_the_compiled_response_parser_is_in_use() -> None:
    assert private.C_RESPONSE_PARSER, f"{INSTALLED}: the upstream client would parse in Python"


async def test_the_response_parser_gives_interim_and_final_heads_and_a_chunked_body() -> None:
    parser = response_parser(FlowControl())
    data = (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    )
    messages = []
    for at in range(len(data)):  # a byte at a time: heads and chunks split anywhere
        found, upgraded, tail = parser.feed_data(data[at : at + 1])
        assert (upgraded, tail) == (False, b""), private.RESPONSE_PARTS["feed_data"]
        messages.extend(found)
    assert [type(message) for message, _ in messages] == [RawResponseMessage] * 2
    (interim, _), (final, body) = messages
    assert (interim.code, interim.reason, interim.headers["Link"]) == (
        103,
        "Early Hints",
        "</a.css>; rel=preload",
    )
    assert (final.code, final.reason, final.headers["X-A"], final.should_close) == (
        200,
        "OK",
        "1",
        False,
    ), private.RESPONSE_PARTS["RawResponseMessage"]
    assert isinstance(body, StreamReader) and body.is_eof()
    assert b"".join([chunk async for chunk in body.iter_any()]) == b"hello"


async def test_a_response_without_a_body_gets_the_empty_payload() -> None:
    parser = response_parser(FlowControl(), head=True)
    [(message, body)], _, _ = parser.feed_data(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n")
    assert message.code == 200
    assert body is private.EMPTY_PAYLOAD, private.RESPONSE_PARTS["feed_data"]


async def test_feed_eof_ends_a_body_delimited_by_the_close_and_refuses_a_short_one() -> None:
    parser = response_parser(FlowControl())
    [(_, body)], _, _ = parser.feed_data(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
    assert not body.is_eof()
    parser.feed_eof()
    assert body.is_eof(), private.RESPONSE_PARTS["feed_eof"]
    parser = response_parser(FlowControl())
    parser.feed_data(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
    with pytest.raises(Exception, match="Not enough data"):
        parser.feed_eof()


async def test_a_malformed_body_is_an_error_of_feed_data() -> None:
    parser = response_parser(FlowControl())
    [(_, body)], _, _ = parser.feed_data(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    )
    with pytest.raises(HttpProcessingError):  # http1.Connection fails the body with it
        parser.feed_data(b"zz\r\n")
    assert not body.is_eof()


async def test_a_body_reader_pauses_and_resumes_its_protocol_and_the_parser_holds_on() -> None:
    protocol = FlowControl()
    parser = response_parser(protocol, limit=16)
    chunks = b"".join(b"14\r\n" + b"x" * 20 + b"\r\n" for _ in range(5)) + b"0\r\n\r\n"
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
    [(_, body)], _, _ = parser.feed_data(data)
    # Past twice the limit the reader pauses its protocol, and the parser keeps the
    # rest of what it was fed.
    assert protocol.calls == ["pause"], private.RESPONSE_PARTS["StreamReader.protocol"]
    assert body.total_bytes == 40 and not body.is_eof(), private.RESPONSE_PARTS["pause_reading"]
    received = await body.readany()
    assert protocol.calls[-1] == "resume parser=True"
    while not body.at_eof():
        parser.feed_data(b"")  # what http1.Connection.resume_reading does
        received += await body.readany()
    assert received == b"x" * 100
    assert "resume parser=False" in protocol.calls  # at the end of the body


def private_names_used_by_the_connection() -> set[str]:
    """The `self._x` names EdgeConnection reads, sets, calls or overrides that aiohttp's
    RequestHandler defines."""
    tree = ast.parse((ROOT / "edge/node/protocol.py").read_text())
    [connection] = [
        node
        for node in tree.body
        if isinstance(node, ast.ClassDef) and node.name == EdgeConnection.__name__
    ]
    own = {name for name in vars(EdgeConnection) if not hasattr(private.RequestHandler, name)}
    used = {
        node.attr
        for node in ast.walk(connection)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
    }
    overridden = {
        node.name
        for node in connection.body
        if isinstance(node, ast.FunctionDef)
        and node.name.startswith("_")
        and not node.name.startswith("__")
        and hasattr(private.RequestHandler, node.name)
    }
    return (used - own) | overridden


def test_every_private_name_the_connection_uses_is_declared_and_every_declared_one_used() -> None:
    declared = set(private.CONNECTION_STATE) | {
        name for name in private.CONNECTION_METHODS if name.startswith("_")
    }
    used = private_names_used_by_the_connection()
    assert used - declared == set(), "protocol.py uses these without aiohttp_private.py naming them"
    assert declared - used == set(), (
        "aiohttp_private.py names these but protocol.py does not use them"
    )


def test_only_aiohttp_private_imports_what_aiohttp_does_not_export() -> None:
    product = ["core", "edge", "origin", "geodns", "control"]
    reaching_in = []
    for path in sorted(p for folder in product for p in (ROOT / folder).rglob("*.py")):
        if path == ROOT / "edge/node/aiohttp_private.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.module is None:
                continue
            if not node.module.startswith("aiohttp."):
                continue
            module = importlib.import_module(node.module)
            exported = getattr(module, "__all__", None)
            for alias in node.names:
                public = alias.name in exported if exported is not None else alias.name[0] != "_"
                if not public:
                    reaching_in.append(f"{path.relative_to(ROOT)}: {node.module}.{alias.name}")
    assert reaching_in == [], f"{INSTALLED}: import these through aiohttp_private.py"
