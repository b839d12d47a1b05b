"""Every private part of aiohttp the edge relies on, named once with its reason."""

from __future__ import annotations

import asyncio
from collections import deque

from aiohttp import http_parser
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import RequestHandler, _ErrInfo

__all__ = [
    "CONNECTION_METHODS",
    "CONNECTION_STATE",
    "C_PARSER",
    "C_RESPONSE_PARSER",
    "EMPTY_PAYLOAD",
    "PARSED_REQUEST_FIELDS",
    "PARSER_METHODS",
    "PARSE_ERRORS",
    "READ_FROM",
    "RESPONSE_PARTS",
    "BadHttpMessage",
    "ErrInfo",
    "LineTooLong",
    "RequestHandler",
]

# The aiohttp release these were read from; pyproject.toml allows only its patch releases.
READ_FROM = "3.14"

# A parse error queued in place of a request: aiohttp's start() answers it by handle_error.
ErrInfo = _ErrInfo

# Whether aiohttp's compiled request parser is in use; the pure-Python one is slower.
C_PARSER: bool = http_parser.HttpRequestParser is not http_parser.HttpRequestParserPy

# RequestHandler's state (its own and BaseProtocol's) that EdgeConnection in protocol.py
# reads or sets as plain attributes (a lookup each, nothing more, on the hit path): the
# type each holds once the handler is made, and why the edge touches it.
CONNECTION_STATE: dict[str, tuple[type | tuple[type, ...], str]] = {
    "_loop": (asyncio.AbstractEventLoop, "the clock and timers for the idle and head deadlines"),
    "_parser": (
        http_parser.HttpRequestParser,
        "the hit path feeds it bytes itself and frees its queue slots",
    ),
    "_payload_parser": (type(None), "a websocket or similar reader: bytes are not requests"),
    "_upgraded": (bool, "an upgraded connection's bytes are not requests"),
    "_force_close": (bool, "a closing connection answers nothing more"),
    "_close": (bool, "a closing connection answers nothing more"),
    "_request_in_progress": (
        bool,
        "a request is in the handler: those behind it wait for its response",
    ),
    "_waiter": ((asyncio.Future, type(None)), "start() awaits it when idle: a request wakes it"),
    "_messages": (deque, "requests queued for start(): those behind them must wait"),
    "_request_count": (int, "counts hits too, so handle_error knows a connection's first"),
    "_message_tail": (bytes, "bytes after an upgrade request, kept for its reader"),
    "_max_msg_queue_size": (int, "the queue length at which reading pauses"),
    "_buffer_paused": (bool, "reading is paused while requests or held bytes queue up"),
    "_paused": (bool, "the client is not taking bytes: large bodies wait, send_timeout runs"),
    "_keepalive": (bool, "the idle timer closes only a keep-alive connection"),
    "_keepalive_timeout": ((int, float), "an answered hit restarts the idle clock"),
    "_next_keepalive_close_time": (float, "the idle or request-head deadline"),
    "_keepalive_handle": ((asyncio.Handle, type(None)), "the timer for that deadline"),
}

# RequestHandler's methods EdgeConnection overrides or calls, with their parameters.
CONNECTION_METHODS: dict[str, tuple[tuple[str, ...], str]] = {
    "data_received": (("data",), "replaced: a request a stored response answers skips aiohttp"),
    "handle_error": (
        ("request", "status", "exc", "message"),
        "extended: requests aiohttp cannot parse get the edge's answer",
    ),
    "_process_keepalive": ((), "extended: counts idle and head timeouts, answers 408"),
    "finish_response": (
        ("request", "resp", "start_time"),
        "extended: notes whether the connection stays open after the response",
    ),
    "_pause_reading_for_buffer": ((), "reading pauses while a large body goes out"),
    "_resume_reading_for_buffer": ((), "and resumes when it has gone"),
}

# What the hit path calls on RequestHandler._parser (compiled: checked by feeding it).
PARSER_METHODS: dict[str, str] = {
    "feed_data": "(messages, upgraded, tail) from bytes; (message, EMPTY_PAYLOAD) if bodiless",
    "message_consumed": "frees the parser's queue slot of a request answered on the hit path",
}

# The parse errors EdgeConnection.handle_error tells apart, and what it reads of each.
PARSE_ERRORS: dict[str, str] = {
    "BadHttpMessage": "a request the parser refused (400); the edge's 505 error is one too",
    "LineTooLong": "args[1] is the limit it broke: the request line's (414) or a field's (431)",
    "Too many headers": "the text of the BadHttpMessage for too many header fields (431)",
}

# The parsed request's fields the hit path reads (Edge.fast_hit).
PARSED_REQUEST_FIELDS = ("method", "path", "version", "headers", "raw_headers", "should_close")

# The client side: upstream/http1.py reads upstream responses with aiohttp's response
# parser (exported by aiohttp.http, but documented nowhere) on a protocol of its own,
# which the parser hands to each body's StreamReader. What it relies on of the two:
C_RESPONSE_PARSER: bool = http_parser.HttpResponseParser is not http_parser.HttpResponseParserPy
RESPONSE_PARTS: dict[str, str] = {
    "HttpResponseParser": "(protocol, loop, limit, max_line_size=, max_field_size=, "
    "max_headers=, payload_exception=, response_with_body=, read_until_eof=, "
    "auto_decompress=): a parser for one request's response",
    "feed_data": "(messages, upgraded, tail) from bytes: (RawResponseMessage, StreamReader) "
    "for each head, interim ones too; EMPTY_PAYLOAD for no body",
    "feed_eof": "ends a body delimited by the close; raises for one cut short",
    "pause_reading": "the parser keeps what it was fed past this point until fed b''",
    "payload_exception": "the error a malformed body's StreamReader raises",
    "StreamReader.protocol": "pause_reading() past twice the limit, resume_reading() below "
    "it (resume_parser=False at the end), and .connected when it must wait",
    "RawResponseMessage": "code, reason, headers (CIMultiDictProxy), should_close",
}
