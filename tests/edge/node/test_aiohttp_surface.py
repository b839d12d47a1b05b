"""The private parts of aiohttp the edge relies on are there, in the shape it expects."""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect

import aiohttp
import pytest
from aiohttp import StreamReader, web
from aiohttp.http import HttpProcessingError, RawRequestMessage, RawResponseMessage
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


def test_the_client_parts_the_interim_reports_rely_on_are_there() -> None:
    start = inspect.signature(aiohttp.ClientResponse.start)
    assert tuple(start.parameters) == ("self", "connection"), (
        f"{INSTALLED}: ClientResponse.start takes {tuple(start.parameters)} "
        f"({private.CLIENT_PARTS['ClientResponse.start']})"
    )
    assert isinstance(private.Connection.protocol, property), (
        f"{INSTALLED}: Connection.protocol is gone ({private.CLIENT_PARTS['Connection.protocol']})"
    )
    assert inspect.iscoroutinefunction(private.ResponseHandler.read), (
        f"{INSTALLED}: ResponseHandler.read is not a coroutine "
        f"({private.CLIENT_PARTS['ResponseHandler.read']})"
    )


async def test_a_client_connection_lets_its_read_be_wrapped_for_one_response() -> None:
    protocol = private.ResponseHandler(asyncio.get_running_loop())
    read = protocol.read

    async def wrapped() -> tuple[RawResponseMessage, StreamReader]:
        return await read()

    protocol.read = wrapped  # type: ignore[method-assign]  # what upstream.client does
    assert protocol.read is wrapped
    del protocol.read
    assert protocol.read == read


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
