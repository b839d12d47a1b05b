"""Raw HTTP/1.1 bytes: how h11 and aiohttp's parsers read them, a recording origin, a raw client."""

from __future__ import annotations

import asyncio
import enum
import re
import socket
from dataclasses import dataclass

import h11
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import HttpRequestParserPy, RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import MAX_MSG_QUEUE_SIZE, RequestPayloadError

try:
    from aiohttp.http_parser import HttpRequestParserC
except ImportError:  # aiohttp without its C extension: the tests say so rather than skip
    HttpRequestParserC = None  # type: ignore[assignment, misc]  # no C parser here

Fields = tuple[tuple[bytes, bytes], ...]
EMPTY_LINES = re.compile(rb"(?:\r?\n)*")


class End(enum.Enum):
    """Where a reader stopped."""

    IDLE = "took every request whole; waits for the next"
    MORE = "stopped inside a request: its head or body goes on past the bytes"
    CLOSE = "a request closed the connection; later bytes are not requests"
    ERROR = "refused the bytes"


@dataclass(frozen=True)
class Message:
    """One request as a reader understood it; names lower-cased, values as read."""

    method: bytes
    target: bytes
    version: bytes
    fields: Fields
    body: bytes | None  # None: the body had not ended when the bytes ran out

    def field(self, name: bytes) -> list[bytes]:
        return [value for found, value in self.fields if found == name]


@dataclass(frozen=True)
class Reading:
    """The requests a reader took from a byte stream, in order, and how it stopped."""

    messages: tuple[Message, ...]
    end: End
    error: str = ""

    @property
    def refused(self) -> bool:
        return self.end is End.ERROR


# ── h11, the reference ───────────────────────────────────────────────────────


def read_with_h11(data: bytes) -> Reading:
    """What h11, as a server, reads from `data`, with two things RFC 9112 lets a
    server do that h11 does not: empty lines before a request line are skipped
    (§2.2), and an HTTP/1.0 request with the keep-alive option keeps the
    connection (§9.3)."""
    messages: list[Message] = []
    rest = data
    while True:
        rest = rest[EMPTY_LINES.match(rest).end() :]  # type: ignore[union-attr]  # it matches the empty string too
        connection = h11.Connection(h11.SERVER)
        connection.receive_data(rest)
        request: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError as exc:
                if request is not None:
                    messages.append(_h11_message(request, None))
                return Reading(tuple(messages), End.ERROR, str(exc))
            if isinstance(event, h11.Request):
                request, body = event, bytearray()
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                messages.append(_h11_message(request, bytes(body)))
                if _closes(messages[-1]):
                    return Reading(tuple(messages), End.CLOSE)
                rest, _closed = connection.trailing_data
                break
            else:  # NEED_DATA
                if request is not None:
                    messages.append(_h11_message(request, None))
                inside = request is not None or connection.trailing_data[0]
                return Reading(tuple(messages), End.MORE if inside else End.IDLE)


def _closes(message: Message) -> bool:
    """Whether the connection ends after this request (RFC 9112 §9.3, §9.6)."""
    options = {
        option.strip().lower()
        for value in message.field(b"connection")
        for option in value.split(b",")
    }
    if b"close" in options:
        return True
    return message.version < b"1.1" and b"keep-alive" not in options


def _h11_message(request: h11.Request, body: bytes | None) -> Message:
    fields = tuple((name.lower(), value) for name, value in request.headers.raw_items())
    return Message(request.method, request.target, request.http_version, fields, body)


# ── aiohttp, as the edge configures it ───────────────────────────────────────

AIOHTTP_PARSERS = {"c": HttpRequestParserC, "py": HttpRequestParserPy}


def read_with_aiohttp(kind: str, data: bytes, max_line: int, max_field: int) -> Reading:
    """What aiohttp's C or pure-Python request parser reads from `data`, fed at
    once as a socket read would, with the settings of the edge's connections. A
    refusal anywhere in it refuses it all, as it does on the edge's connections."""
    parser_class = AIOHTTP_PARSERS[kind]
    assert parser_class is not None, "aiohttp's C parser is not built in this environment"
    loop = asyncio.new_event_loop()
    try:
        parser = parser_class(
            BaseProtocol(loop),
            loop,
            2**16,
            max_line_size=max_line,
            max_field_size=max_field,
            payload_exception=RequestPayloadError,
            auto_decompress=False,
            max_msg_queue_size=MAX_MSG_QUEUE_SIZE,
        )
        try:
            parsed, _upgraded, _tail = parser.feed_data(data)
        except HttpProcessingError as exc:
            return Reading((), End.ERROR, repr(exc))
        messages = []
        for message, payload in parsed:
            body, error = _payload(payload)
            messages.append(_aiohttp_message(message, body))
            if error:
                return Reading(tuple(messages), End.ERROR, error)
            if message.should_close:
                return Reading(tuple(messages), End.CLOSE)
        inside = bool(messages) and messages[-1].body is None  # a partial head is not seen
        return Reading(tuple(messages), End.MORE if inside else End.IDLE)
    finally:
        loop.close()


def _payload(payload: StreamReader) -> tuple[bytes | None, str]:
    """(the body if it ended, the error it ended with)."""
    if payload is EMPTY_PAYLOAD:
        return b"", ""
    if payload.exception() is not None:
        return None, repr(payload.exception())
    if not payload.is_eof():
        return None, ""
    return payload.read_nowait(-1), ""


def _aiohttp_message(message: RawRequestMessage, body: bytes | None) -> Message:
    fields = tuple((name.lower(), value) for name, value in message.raw_headers)
    version = f"{message.version.major}.{message.version.minor}".encode()
    target = message.path.encode("utf-8", "surrogateescape")
    return Message(message.method.encode(), target, version, fields, body)


# ── an origin that records what reaches it ───────────────────────────────────


@dataclass(frozen=True)
class Arrivals:
    """What reached the origin since a mark: whole requests, bytes, and why h11
    refused any."""

    requests: list[Message]
    bytes: int
    errors: list[str]


class RecordingOrigin:
    """A raw TCP origin: it counts every byte it receives, reads requests with h11
    (keeping each complete one in `received`, in arrival order), and answers 200
    with `Cache-Control: no-store`, or with max-age and the body `stored` gives a
    target. Why h11 refused bytes (not cut off by their sender) goes in `errors`."""

    def __init__(self, stored: dict[bytes, bytes] | None = None) -> None:
        self.stored = stored or {}
        self.received: list[Message] = []
        self.received_bytes = 0
        self.errors: list[str] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def mark(self) -> tuple[int, int, int]:
        return len(self.received), self.received_bytes, len(self.errors)

    def since(self, mark: tuple[int, int, int]) -> Arrivals:
        requests, count, errors = mark
        return Arrivals(self.received[requests:], self.received_bytes - count, self.errors[errors:])

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = bytearray()
        ended = False
        try:
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    self.received_bytes += len(data)
                    ended = not data
                    connection.receive_data(data)
                elif isinstance(event, h11.Request):
                    request, body = event, bytearray()
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    assert request is not None
                    self.received.append(_h11_message(request, bytes(body)))
                    for reply in self.reply(request.target):
                        writer.write(connection.send(reply) or b"")
                    if connection.our_state is not h11.DONE:
                        break
                    connection.start_next_cycle()
                else:
                    break
        except h11.RemoteProtocolError as exc:
            if not ended:  # a request cut off by its sender is no error of form
                self.errors.append(str(exc))
        except ConnectionError:
            pass
        finally:
            writer.close()

    def reply(self, target: bytes) -> list[h11.Response | h11.Data | h11.EndOfMessage]:
        body = self.stored.get(target)
        cache_control = "no-store" if body is None else "max-age=600"
        body = b"ok" if body is None else body
        headers = [("Content-Length", str(len(body))), ("Cache-Control", cache_control)]
        return [
            h11.Response(status_code=200, headers=headers),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ]


# ── a client that sends raw bytes and reads the answers ──────────────────────


WAIT = 3.0  # seconds a read may take before the server counts as silent
STATUS_LINE = re.compile(rb"HTTP/(\d\.\d) (\d{3})(?: [^\r\n]*)?")


@dataclass(frozen=True)
class Answer:
    """One response: its HTTP version, status, fields (names lower-cased) and body."""

    version: bytes
    status: int
    fields: Fields
    body: bytes

    @property
    def closes(self) -> bool:
        """Whether the server says it closes the connection after this answer."""
        options = b",".join(v.lower() for n, v in self.fields if n == b"connection")
        return b"close" in options or (self.version == b"1.0" and b"keep-alive" not in options)


@dataclass(frozen=True)
class Exchange:
    """The answers to bytes sent on one connection, and how the connection ended:
    `closed` when the server closed it, `silent` when it kept it open and sent
    nothing more for WAIT seconds."""

    answers: list[Answer]
    closed: bool
    silent: bool


def exchange(port: int, data: bytes, methods: list[bytes]) -> Exchange:
    """Send `data` on a new connection to 127.0.0.1:`port` and read the answers
    (1xx ones left out) until the server closes the connection or falls silent.
    `methods` are the requests' methods in order (a HEAD's answer has no body)."""
    answers: list[Answer] = []
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(data)
        stream = _SocketReader(sock)
        while True:
            head = stream.until(b"\r\n\r\n")
            if head is None:
                break
            lines = head.split(b"\r\n")
            status_line = STATUS_LINE.fullmatch(lines[0])
            assert status_line is not None, f"not a response: {head[:80]!r}"
            version, status = status_line.group(1), int(status_line.group(2))
            fields = tuple(
                (name.strip().lower(), value.strip())
                for name, _, value in (line.partition(b":") for line in lines[1:] if line)
            )
            if status < 200:
                continue
            method = methods[len(answers)] if len(answers) < len(methods) else b"GET"
            length = [int(v) for n, v in fields if n == b"content-length"]
            if method == b"HEAD" or status in (204, 304):
                body = b""
            elif length:
                body = stream.exactly(length[0])
            elif any(n == b"transfer-encoding" for n, _ in fields):
                body = stream.chunked()
            else:
                body = stream.rest()
            answers.append(Answer(version, status, fields, body))
    return Exchange(answers, stream.closed, stream.silent)


class _SocketReader:
    """Blocking, buffered reads from a socket that note how the socket ended."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.closed = False
        self.silent = False

    def _more(self) -> bool:
        if self.closed or self.silent:
            return False
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        except TimeoutError:
            self.silent = True
            return False
        self.closed = not data
        self.buffer += data
        return bool(data)

    def until(self, marker: bytes) -> bytes | None:
        while marker not in self.buffer:
            if not self._more():
                return None
        found, _, self.buffer = self.buffer.partition(marker)
        return found

    def exactly(self, count: int) -> bytes:
        while len(self.buffer) < count and self._more():
            pass
        found, self.buffer = self.buffer[:count], self.buffer[count:]
        return found

    def chunked(self) -> bytes:
        body = b""
        while (line := self.until(b"\r\n")) is not None:
            size = int(line.split(b";")[0], 16)
            body += self.exactly(size)
            self.until(b"\r\n")
            if size == 0:
                break
        return body

    def rest(self) -> bytes:
        while self._more():
            pass
        found, self.buffer = self.buffer, b""
        return found
