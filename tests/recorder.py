"""A raw-socket origin that records exactly the bytes it receives, and a raw client.

The origin parses what it gets the way a strict HTTP/1.1 server would (RFC 9112:
Content-Length or chunked framing, keep-alive), answers each request with a scripted
response, and keeps both the bytes of every connection and the requests it read from
them. Where framing matters, tests read what reached the origin from here, not from a
server library that might smooth it over.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

Answer = Callable[["Received"], bytes]


@dataclass
class Received:
    """One request as the origin framed it."""

    connection: int
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        return ", ".join(values) if values else None

    def has(self, name: str) -> bool:
        return any(key.lower() == name.lower() for key, _ in self.headers)


class FramingError(Exception):
    """What the origin received cannot be read as HTTP/1.1 requests."""


def response(
    status: int = 200,
    body: bytes = b"ok",
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    interim: list[bytes] | None = None,
) -> bytes:
    """A complete response with Content-Length, optionally after interim (1xx) heads."""
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    lines = [f"HTTP/1.1 {status} X\r\n"] + [f"{name}: {value}\r\n" for name, value in pairs]
    lines.append(f"Content-Length: {len(body)}\r\n\r\n")
    return b"".join(interim or []) + "".join(lines).encode("latin-1") + body


def cacheable(received: Received) -> bytes:
    """The default answer: the path as the body, storable for a minute."""
    return response(body=received.target.encode(), headers={"Cache-Control": "max-age=60"})


@dataclass
class RecordingOrigin:
    answer: Answer = cacheable
    url: str = ""
    raw: dict[int, bytearray] = field(default_factory=dict)  # connection -> every byte
    requests: list[Received] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # framing the origin could not read
    closed: set[int] = field(default_factory=set)  # connections that were closed
    _server: asyncio.Server | None = None
    _connections: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> RecordingOrigin:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def targets(self) -> list[str]:
        return [received.target for received in self.requests]

    def all_bytes(self) -> bytes:
        return b"".join(bytes(data) for data in self.raw.values())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._connections += 1
        number = self._connections
        recorded = self.raw.setdefault(number, bytearray())
        stream = _Recorded(reader, recorded)
        try:
            while True:
                received = await _read_request(stream, number)
                if received is None:
                    break
                self.requests.append(received)
                writer.write(self.answer(received))
                await writer.drain()
                if (received.header("Connection") or "").lower() == "close":
                    break
        except FramingError as exc:
            self.errors.append(str(exc))
            with contextlib.suppress(ConnectionError):
                writer.write(response(400, b"bad framing\n", {"Connection": "close"}))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed.add(number)
            writer.close()
            self._tasks.discard(task)


class _Recorded:
    """A StreamReader that keeps a copy of every byte read."""

    def __init__(self, reader: asyncio.StreamReader, copy: bytearray) -> None:
        self.reader = reader
        self.copy = copy

    async def readline(self) -> bytes:
        line = await self.reader.readuntil(b"\n")
        self.copy += line
        return line

    async def readexactly(self, size: int) -> bytes:
        data = await self.reader.readexactly(size)
        self.copy += data
        return data


async def _read_request(stream: _Recorded, connection: int) -> Received | None:
    try:
        line = await stream.readline()
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            stream.copy += exc.partial
            raise FramingError(f"closed inside a request line: {exc.partial!r}") from None
        return None
    parts = line.rstrip(b"\r\n").split(b" ")
    if not line.endswith(b"\r\n") or len(parts) != 3:
        raise FramingError(f"not a request line: {line!r}")
    method, target, version = (part.decode("latin-1") for part in parts)
    headers = await _read_fields(stream)
    received = Received(connection, method, target, version, headers, b"")
    lengths = [value for name, value in headers if name.lower() == "content-length"]
    codings = [value for name, value in headers if name.lower() == "transfer-encoding"]
    if codings:
        if lengths or [c.strip().lower() for c in ",".join(codings).split(",")] != ["chunked"]:
            raise FramingError(f"framing in doubt: {headers!r}")
        received.body = await _read_chunked(stream)
    elif lengths:
        if len(lengths) != 1 or not lengths[0].isdigit():
            raise FramingError(f"bad Content-Length: {lengths!r}")
        received.body = await stream.readexactly(int(lengths[0]))
    return received


async def _read_fields(stream: _Recorded) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    while True:
        line = await stream.readline()
        if line == b"\r\n":
            return fields
        if not line.endswith(b"\r\n") or line[:1] in (b" ", b"\t") or b":" not in line:
            raise FramingError(f"not a header field: {line!r}")
        name, _, value = line[:-2].decode("latin-1").partition(":")
        if name != name.strip() or not name:
            raise FramingError(f"bad field name: {line!r}")
        fields.append((name, value.strip(" \t")))


async def _read_chunked(stream: _Recorded) -> bytes:
    body = bytearray()
    while True:
        line = await stream.readline()
        size_text = line.rstrip(b"\r\n").split(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise FramingError(f"bad chunk size: {line!r}") from None
        if size == 0:
            await _read_fields(stream)  # trailers
            return bytes(body)
        body += await stream.readexactly(size)
        if await stream.readexactly(2) != b"\r\n":
            raise FramingError("chunk data not followed by CRLF")


# ── a raw client ─────────────────────────────────────────────────────────────


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        return ", ".join(values) if values else None


class RawClient:
    """One client connection: send bytes as they are, read responses as they come."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, url: str) -> RawClient:
        host, _, port = url.removeprefix("http://").partition(":")
        reader, writer = await asyncio.open_connection(host, int(port.rstrip("/")))
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, timeout: float = 5.0, head_only: bool = False) -> RawResponse:
        """The next response (an interim 1xx is returned on its own)."""
        return await asyncio.wait_for(self._response(head_only), timeout)

    async def _response(self, head_only: bool) -> RawResponse:
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        _version, status, reason = [*lines[0].split(" ", 2), ""][:3]
        headers = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.append((name.strip(), value.strip()))
        result = RawResponse(int(status), reason, headers, b"")
        code = int(status)
        if head_only or 100 <= code < 200 or code in (204, 304):
            return result
        length = result.header("Content-Length")
        if result.header("Transfer-Encoding"):
            body = bytearray()
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                body += await self.reader.readexactly(size)
                await self.reader.readexactly(2)
            result.body = bytes(body)
        elif length is not None:
            result.body = await self.reader.readexactly(int(length))
        else:
            result.body = await self.reader.read()
        return result

    async def closed(self, timeout: float = 5.0) -> bool:
        """Whether the server closes the connection (EOF) within `timeout`, reading past
        anything else it sends."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def exchange(url: str, data: bytes, timeout: float = 5.0) -> RawResponse:
    """Send `data` on a new connection and read one response."""
    client = await RawClient.connect(url)
    try:
        await client.send(data)
        return await client.response(timeout)
    finally:
        await client.close()
