"""HTTP/1.1 to an upstream, kept lean for the miss path: a pool of keep-alive
connections per upstream (scheme, host and port), each an asyncio.Protocol; the
request head written as one bytes object; responses read by aiohttp's compiled
parser into aiohttp's StreamReader, which the fill and the pass read as before.

One timer per request in flight does for both deadlines: the whole response within
`total` of the request, and no silence longer than `first_byte` from the moment the
request is sent until its body is whole (while the reader holds reading back, the
silence is not the upstream's and is not counted). The timer fires at the earlier
deadline; bytes that arrive only move a timestamp, and the timer, when it fires
early, sets itself again.

A connection goes back to its pool only after a response read to its end, with
keep-alive, nothing after it and the request body sent whole; anything else
closes it. The private parts of aiohttp relied on are named in
aiohttp_private.RESPONSE_PARTS and checked by tests/edge/node/test_aiohttp_surface.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, cast

import aiohappyeyeballs
from aiohttp import ClientConnectionError, ClientPayloadError
from aiohttp.http import HttpResponseParser, RawResponseMessage
from aiohttp.streams import StreamReader
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from pinedge.edge.node.aiohttp_private import EMPTY_PAYLOAD
from pinedge.edge.pipeline.errors import UpstreamError
from pinedge.edge.upstream.whole import Accept, whole_response

log = logging.getLogger("pinedge.edge")

# Told of each interim response (1xx other than 100 and 101): (status, reason, fields).
Interim = Callable[[int, str, CIMultiDictProxy[str]], None]

INF = float("inf")
READ_BUFFER = 2**16  # bytes a body may hold unread before reading pauses (twice this)
MAX_LINE = 8190  # the longest status line, and the longest field line, of a response head
MAX_FIELDS = 128  # response fields beyond this are a malformed response
KEEPALIVE = 15.0  # seconds an idle connection is kept
DNS_TTL = 60.0  # seconds a name's addresses are kept
HAPPY_EYEBALLS_DELAY = 0.25  # RFC 8305: the next address is tried after this
# Methods whose content has no defined meaning: without a body, no Content-Length: 0.
NO_CONTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# RFC 9110 §6.5, §9.2.2: a request on a reused connection that the upstream closed
# before answering may be sent again, once, on another.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# RFC 9110 §5.5, RFC 9112 §4: no control character but HTAB in a field line.
FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

_tls: ssl.SSLContext | None = None


def tls_context() -> ssl.SSLContext:
    """The system's trust store, certificates and host names checked, HTTP/1.1 by ALPN."""
    global _tls
    if _tls is None:
        _tls = ssl.create_default_context()
        _tls.set_alpn_protocols(["http/1.1"])
    return _tls


class UpstreamResponse:
    """A response head from upstream, its body left to read from `content` (a
    StreamReader: iter_any() gives the chunks as they arrive; a body that breaks off
    raises aiohttp.ClientPayloadError, one that stalls TimeoutError). A connection
    goes back to its pool as soon as the body has come whole; `release()` (or
    `close()`, the same) when done with the response closes it if the body has not,
    and a later read of what did not come raises aiohttp.ClientConnectionError."""

    __slots__ = ("_connection", "content", "headers", "reason", "status")

    def __init__(
        self,
        status: int,
        reason: str,
        headers: CIMultiDictProxy[str],
        content: StreamReader,
        connection: Connection | None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.content = content
        self._connection = connection  # while its body is still arriving

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            return None

    def release(self) -> None:
        """Done with the response: a connection still reading its body is closed."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.abandon(self)

    def close(self) -> None:
        self.release()


class Connection(asyncio.Protocol):
    """One connection to an upstream, one request at a time on it."""

    __slots__ = (
        "_reading_paused",
        "accept",
        "buffer",
        "deadline",
        "drain",
        "gone",
        "interim",
        "last_read",
        "loop",
        "method",
        "origin",
        "parser",
        "payload",
        "read_timeout",
        "received",
        "response",
        "reusable",
        "reused",
        "since",
        "transport",
        "waiter",
        "watch",
        "watch_at",
        "writer",
    )

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.loop = origin.loop
        self.transport: asyncio.Transport | None = None
        self.parser: Any = None  # the response parser of the request in flight
        self.waiter: asyncio.Future[Any] | None = None  # its final head (or exchange's answer)
        self.response: UpstreamResponse | None = None  # whose body is arriving
        self.payload: StreamReader | None = None
        self.interim: Interim | None = None
        self.method = "GET"
        self.reusable = True
        self.received = False  # a byte of the response arrived
        self.reused = False  # it answered a request before this one
        self.since = 0.0  # idle since
        self._reading_paused = False  # the body's reader holds reading back
        self.drain: asyncio.Future[None] | None = None  # a body write waiting for room
        self.writer: asyncio.Task[None] | None = None  # the request body on its way
        self.deadline = INF  # the whole response by then
        self.read_timeout = 0.0  # no silence longer than this (0: none yet)
        self.last_read = 0.0
        self.watch: asyncio.TimerHandle | None = None
        self.watch_at = INF
        self.gone: asyncio.Future[None] | None = None  # for a close that waits for it
        # An exchange (whole.py): what reads the response head, and what came so far.
        self.accept: Accept | None = None
        self.buffer = b""

    # ── asyncio.Protocol ────────────────────────────────────────────────────

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.accept is not None:
            self.whole_received(data)
            return
        parser = self.parser
        if parser is None:  # bytes nobody asked for: the connection is out of step
            self.reusable = False
            if self.transport is not None:
                self.transport.close()
            return
        if data:
            self.last_read = self.loop.time()
            self.received = True
        try:
            messages, upgraded, _ = parser.feed_data(data)
        except Exception as exc:
            self.malformed(exc)
            return
        for message, payload in messages:
            self.message(message, payload)
        if upgraded:
            self.reusable = False
        payload = self.payload
        if payload is not None and payload.is_eof():
            self.complete()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.transport = None
        self.reusable = False
        self.stop_watch()
        self.origin.lost(self)
        self.resume_writing()  # a body write waiting for room finds the connection gone
        if self.gone is not None and not self.gone.done():
            self.gone.set_result(None)
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_exception(closed_error(exc))
            return
        payload = self.payload
        if payload is None:
            return
        if payload.exception() is None:  # not timed out, not malformed
            try:
                self.parser.feed_eof()  # a body delimited by the close ends here
            except Exception as err:
                cause = f". {exc!r}" if exc is not None else ""
                payload.set_exception(
                    ClientPayloadError(f"Response payload is not completed: {err!r}{cause}")
                )
            if not payload.is_eof() and payload.exception() is None:
                payload.set_exception(ClientPayloadError("Response payload is not completed"))
        if payload.is_eof():
            self.complete()
        else:
            self.end(False)

    def pause_writing(self) -> None:
        self.drain = self.loop.create_future()

    def resume_writing(self) -> None:
        drain, self.drain = self.drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    # ── what the body's StreamReader calls (flow control) ───────────────────

    @property
    def connected(self) -> bool:
        return self.transport is not None

    def pause_reading(self) -> None:
        self._reading_paused = True
        if self.parser is not None:
            self.parser.pause_reading()
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self, resume_parser: bool = True) -> None:
        if not self._reading_paused:
            return
        self._reading_paused = False
        if resume_parser and self.parser is not None:
            self.data_received(b"")  # what the parser held back when it paused
        if not self._reading_paused and self.transport is not None:
            self.transport.resume_reading()
            if self.read_timeout:  # the silence is the upstream's again from now
                self.last_read = self.loop.time()
                self.arm()

    # ── one request ─────────────────────────────────────────────────────────

    def exchange(
        self,
        head: bytes,
        interim: Interim | None,
        deadline: float,
        first_byte: float,
        accept: Accept,
    ) -> asyncio.Future[Any]:
        """Send a bodiless GET on this open connection (lent by Origin.lend_idle). The
        future is `accept`'s verdict and the body when the head is one whole.py reads,
        `accept` takes it, and the body came with it; otherwise the response as send()
        gives it. Errors are send()'s; cancel() the exchange if its waiter is let go."""
        self.accept = accept
        waiter = self._begin("GET", head, interim, deadline)
        self._listen(first_byte)
        return waiter

    def _begin(
        self, method: str, head: bytes, interim: Interim | None, deadline: float
    ) -> asyncio.Future[Any]:
        """Send a request's head on this open connection; the future its answer sets."""
        self.method = method
        self.interim = interim
        self.received = False
        waiter = self.waiter = self.loop.create_future()
        self.deadline = deadline
        self.transport.write(head)  # type: ignore[union-attr]  # open: checked by the caller
        return waiter

    def _listen(self, first_byte: float) -> None:
        """From now on, no silence longer than `first_byte` until the response is whole."""
        self.read_timeout = first_byte
        self.last_read = self.loop.time()
        self.arm()

    def cancel(self) -> None:
        """The exchange's waiter was let go: the connection cannot be used again."""
        self.waiter = None
        self.accept = None
        self.buffer = b""
        self.reusable = False
        self.end(False)

    def whole_received(self, data: bytes) -> None:
        if not data:
            return
        self.last_read = self.loop.time()
        self.received = True
        buffer = self.buffer + data if self.buffer else data
        waiter = self.waiter
        accept = self.accept
        assert accept is not None
        if waiter is None or waiter.done():  # bytes nobody asked for: out of step
            self.reusable = False
            if self.transport is not None:
                self.transport.close()
            return
        found = whole_response(buffer, MAX_LINE, MAX_FIELDS)
        if found is None:
            self.buffer = buffer
            return
        verdict = None
        if isinstance(found, tuple):
            status, reason, fields, body, after, close, lines = found
            try:
                verdict = accept(status, reason, fields, len(body), lines)
            except Exception:
                log.exception("reading an upstream response head failed")
        if verdict is None:
            self.to_parser(buffer)
            return
        self.accept = None
        self.buffer = b""
        self.waiter = None
        waiter.set_result((verdict, body))
        self.end(self.reusable and not close and not after)

    def to_parser(self, buffer: bytes) -> None:
        """Read the response as send() does, from what has come of it."""
        self.accept = None
        self.buffer = b""
        self.parser = self.response_parser(True)
        if buffer:
            self.data_received(buffer)

    def response_parser(self, with_body: bool) -> Any:
        """aiohttp's parser for a response, its bodies read into StreamReaders."""
        return HttpResponseParser(
            self,  # type: ignore[arg-type]  # its StreamReaders call what RESPONSE_PARTS names
            self.loop,
            READ_BUFFER,
            max_line_size=MAX_LINE,
            max_field_size=MAX_LINE,
            max_headers=MAX_FIELDS,
            payload_exception=ClientPayloadError,
            response_with_body=with_body,
            read_until_eof=True,
            auto_decompress=False,
        )

    async def send(
        self,
        method: str,
        head: bytes,
        body: AsyncIterator[bytes] | None,
        length: int | None,
        interim: Interim | None,
        deadline: float,
        first_byte: float,
    ) -> UpstreamResponse:
        """Send the request, and wait for the final response head."""
        transport = self.transport
        if transport is None or transport.is_closing():
            self.end(False)
            raise closed_error(None)
        self.parser = self.response_parser(method != "HEAD")
        waiter = self._begin(method, head, interim, deadline)
        if body is None:
            self._listen(first_byte)
        else:
            self.read_timeout = 0.0  # the silence is counted once the body has gone
            self.writer = self.loop.create_task(self.write_body(body, length, first_byte))
            self.arm()
        try:
            response: UpstreamResponse = await waiter
            return response
        except BaseException:
            self.waiter = None
            self.reusable = False
            self.end(False)
            raise

    async def write_body(
        self, chunks: AsyncIterator[bytes], length: int | None, first_byte: float
    ) -> None:
        """The request body: as it is with a Content-Length (never past it), else chunked."""
        left = length
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                if left is not None:
                    chunk = chunk[:left]
                    left -= len(chunk)
                    if not chunk:
                        continue
                transport = self.transport
                if transport is None or transport.is_closing():
                    raise ConnectionResetError("the upstream closed the connection")
                if left is None:
                    transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    transport.write(chunk)
                if self.drain is not None:
                    await self.drain
            if left is None and self.transport is not None:
                self.transport.write(b"0\r\n\r\n")
        except Exception as exc:
            self.body_failed(exc)
            return
        if self.payload is not None or self.waiter is not None:
            self._listen(first_byte)

    def body_failed(self, exc: BaseException) -> None:
        """The request body could not be sent whole: the upstream must not take what
        went as a complete request, so the connection is dropped."""
        self.reusable = False
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(
                UpstreamError(
                    502,
                    "the origin could not be reached",
                    "upstream-error",
                    f"the request body could not be sent: {exc!r}",
                )
            )
        if self.transport is not None:
            self.transport.abort()

    def message(self, message: RawResponseMessage, payload: StreamReader) -> None:
        code = message.code
        if self.waiter is None:  # a response after the final one, or none asked for
            self.reusable = False
            return
        if 100 <= code < 200 and code != 101:
            if code != 100 and self.interim is not None:
                try:
                    self.interim(code, message.reason, message.headers)
                except Exception:
                    log.exception("passing on a %d interim response failed", code)
            return
        if message.should_close or code == 101:
            self.reusable = False
        if code < 200 or code == 204 or code == 304 or self.method == "HEAD":
            payload = EMPTY_PAYLOAD
        response = UpstreamResponse(code, message.reason, message.headers, payload, self)
        self.response = response
        self.payload = payload
        waiter, self.waiter = self.waiter, None
        if not waiter.done():
            waiter.set_result(response)

    def malformed(self, exc: Exception) -> None:
        self.reusable = False
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(
                UpstreamError(
                    502, "the origin sent a malformed response", "upstream-malformed", repr(exc)
                )
            )
        elif self.payload is not None and not self.payload.is_eof():
            self.payload.set_exception(ClientPayloadError(f"malformed response body: {exc!r}"))
        if self.transport is not None:
            self.transport.abort()

    def complete(self) -> None:
        """The body arrived whole."""
        response = self.response
        if response is not None:
            response._connection = None
        writer = self.writer
        if writer is not None and not writer.done():
            self.reusable = False
        parser = self.parser
        if self.reusable and parser is not None:
            # Bytes after the response, the start of another: the parser has begun a
            # message, which ending its input now gives back (or refuses).
            try:
                if parser.feed_eof() is not None:
                    self.reusable = False
            except Exception:
                self.reusable = False
        self.end(self.reusable)

    def abandon(self, response: UpstreamResponse) -> None:
        """The response is let go of before its body arrived whole."""
        if response is self.response:
            self.reusable = False
            self.end(False)

    def end(self, reusable: bool) -> None:
        """The request is over: back to the pool, or closed."""
        if not reusable:
            self.stop_watch()
        # A kept connection keeps its timer: the next request's deadlines come after
        # it, so arm() makes no new one, and on_watch() re-arms for what is under
        # way when it fires (nothing, on an idle connection).
        payload = self.payload
        if payload is not None and not payload.is_eof() and payload.exception() is None:
            payload.set_exception(ClientConnectionError("Connection closed"))  # as aiohttp's
        self.accept = None
        self.buffer = b""
        self.parser = None
        self.payload = None
        self.interim = None
        self.read_timeout = 0.0
        self.deadline = INF
        response, self.response = self.response, None
        if response is not None:
            response._connection = None
        writer, self.writer = self.writer, None
        if writer is not None and not writer.done():
            writer.cancel()
            reusable = False
        if self._reading_paused:
            self._reading_paused = False
            if self.transport is not None:
                self.transport.resume_reading()
        self.origin.release(self, reusable)

    # ── the timer ───────────────────────────────────────────────────────────

    def arm(self) -> None:
        """Set the timer for the earlier deadline, unless it fires sooner already."""
        when = self.deadline
        if self.read_timeout and not self._reading_paused:
            when = min(when, self.last_read + self.read_timeout)
        if when == INF or self.watch_at <= when:
            return
        if self.watch is not None:
            self.watch.cancel()
        self.watch_at = when
        self.watch = self.loop.call_at(when, self.on_watch)

    def stop_watch(self) -> None:
        if self.watch is not None:
            self.watch.cancel()
            self.watch = None
        self.watch_at = INF

    def on_watch(self) -> None:
        self.watch = None
        self.watch_at = INF
        now = self.loop.time()
        if now >= self.deadline:
            self.time_out("the whole response did not arrive in time")
        elif (
            self.read_timeout
            and not self._reading_paused
            and now >= self.last_read + self.read_timeout
        ):
            self.time_out(f"nothing arrived for {self.read_timeout:g} s")
        else:
            self.arm()

    def time_out(self, why: str) -> None:
        self.reusable = False
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(
                UpstreamError(
                    504, "the origin did not send response headers in time", "upstream-timeout", why
                )
            )
        elif self.payload is not None and not self.payload.is_eof():
            self.payload.set_exception(TimeoutError(why))
        if self.transport is not None:
            self.transport.abort()


def closed_error(exc: BaseException | None) -> UpstreamError:
    if exc is None:
        return UpstreamError(
            502,
            "the origin closed the connection without a response",
            "upstream-closed",
            "the connection closed before a response",
        )
    return UpstreamError(502, "the origin could not be reached", "upstream-error", repr(exc))


class Origin:
    """One upstream (scheme, host, port): its idle connections, newest last, and
    how many are lent out; at most `limit` at once, the rest wait their turn."""

    def __init__(
        self,
        url: str,
        limit: int,
        loop: asyncio.AbstractEventLoop,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        parsed = URL(url)
        self.loop = loop
        self.limit = limit
        self.host = (parsed.raw_host or "").strip("[]")
        self.port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.default_host = parsed.host_port_subcomponent or self.host
        self.tls = (tls or tls_context()) if parsed.scheme == "https" else None
        self.server_hostname = self.host.rstrip(".") if self.tls is not None else None
        self.authorization: str | None = None
        if parsed.raw_user is not None:
            token = f"{parsed.user or ''}:{parsed.password or ''}".encode("latin-1")
            self.authorization = "Basic " + base64.b64encode(token).decode("ascii")
        self.idle: list[Connection] = []
        self.active = 0  # connections lent out or being made
        self.waiting: deque[asyncio.Future[None]] = deque()
        self.connections: set[Connection] = set()
        self.sweeper: asyncio.TimerHandle | None = None
        self.addresses: list[Any] = []
        self.resolved_until = 0.0
        self.resolving: asyncio.Task[list[Any]] | None = None
        self.literal = is_ip_literal(self.host)
        self.closed = False

    def head(self, method: str, target: str, headers: Mapping[str, str], body: bool) -> bytes:
        """The request line and fields as aiohttp's client wrote them: Host first (the
        caller's, else the upstream's), the caller's fields in their order, Accept
        when the caller sent none, then framing: chunked for a body of no declared
        length, Content-Length: 0 for a method with content but no body."""
        if not isinstance(headers, CIMultiDict | CIMultiDictProxy):
            headers = CIMultiDict(headers)
        host = f"Host: {self.default_host}\r\n"
        lines = [f"{method} {target} HTTP/1.1\r\n", host]
        authorization = self.authorization
        for name, value in headers.items():
            lower = name.lower()
            if lower == "host":
                lines[1] = f"{name}: {value}\r\n"
            elif lower == "authorization" and authorization is not None:
                lines.append(f"{name}: {authorization}\r\n")
                authorization = None
            else:
                lines.append(f"{name}: {value}\r\n")
        if "Accept" not in headers:
            lines.append("Accept: */*\r\n")
        if authorization is not None:
            lines.append(f"Authorization: {authorization}\r\n")
        if "Content-Length" not in headers:
            if body:
                lines.append("Transfer-Encoding: chunked\r\n")
            elif method not in NO_CONTENT_METHODS:
                lines.append("Content-Length: 0\r\n")
        lines.append("\r\n")
        text = "".join(lines)
        if text.count("\n") != len(lines) or FORBIDDEN.search(text.replace("\r\n", "")):
            raise ValueError(
                "Forbidden control character detected in headers. "
                "Potential header injection attack."
            )
        return text.encode("utf-8", "surrogateescape")

    # ── lending connections ─────────────────────────────────────────────────

    async def acquire(self, deadline: float, total_deadline: float) -> Connection:
        """A connection lent out: an idle one (newest first), or a new one once
        fewer than `limit` are lent out; waiting for either counts to `deadline`."""
        if self.closed:
            raise UpstreamError(502, "the origin could not be reached", "upstream-error", "closed")
        if self.active >= self.limit or self.waiting:
            await self.wait_turn(deadline, total_deadline)  # the slot is handed over
        else:
            self.active += 1
        idle = self.idle
        while idle:
            connection = idle.pop()
            transport = connection.transport
            if transport is not None and not transport.is_closing():
                return connection
        try:
            return await self.connect(deadline, total_deadline)
        except BaseException:
            self.give_back()
            raise

    def lend_idle(self) -> Connection | None:
        """An idle connection lent out now, if one is open and a slot is free (no
        waiting, no connecting); None otherwise."""
        if self.closed or self.active >= self.limit or self.waiting:
            return None
        idle = self.idle
        while idle:
            connection = idle.pop()
            transport = connection.transport
            if transport is not None and not transport.is_closing():
                self.active += 1
                return connection
        return None

    async def wait_turn(self, deadline: float, total_deadline: float) -> None:
        turn = self.loop.create_future()
        self.waiting.append(turn)
        try:
            async with asyncio.timeout_at(min(deadline, total_deadline)):
                await turn
        except TimeoutError:
            if turn.done() and not turn.cancelled():
                self.give_back()  # handed over just as the wait ran out
            raise connect_timeout(deadline, total_deadline, self.loop.time()) from None
        except BaseException:
            if turn.done() and not turn.cancelled():
                self.give_back()
            raise
        finally:
            if not turn.done():
                turn.cancel()
            with contextlib.suppress(ValueError):
                self.waiting.remove(turn)

    def give_back(self) -> None:
        """A lent slot comes back: to the first in line, if anyone waits."""
        waiting = self.waiting
        while waiting:
            turn = waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.active -= 1

    def release(self, connection: Connection, reusable: bool) -> None:
        transport = connection.transport
        if reusable and transport is not None and not transport.is_closing() and not self.closed:
            connection.reused = True
            connection.since = self.loop.time()
            self.idle.append(connection)
            if self.sweeper is None:
                self.sweeper = self.loop.call_later(KEEPALIVE, self.sweep)
        elif transport is not None:
            transport.close()
        self.give_back()

    def lost(self, connection: Connection) -> None:
        self.connections.discard(connection)

    def sweep(self) -> None:
        """Close connections idle for longer than KEEPALIVE."""
        self.sweeper = None
        cutoff = self.loop.time() - KEEPALIVE
        kept = []
        for connection in self.idle:
            transport = connection.transport
            if transport is None or transport.is_closing():
                continue
            if connection.since <= cutoff:
                transport.close()
            else:
                kept.append(connection)
        self.idle = kept
        if kept:
            self.sweeper = self.loop.call_later(KEEPALIVE / 2, self.sweep)

    # ── new connections ─────────────────────────────────────────────────────

    async def connect(self, deadline: float, total_deadline: float) -> Connection:
        loop = self.loop
        try:
            async with asyncio.timeout_at(min(deadline, total_deadline)):
                addresses = await self.resolve()
                sock = await aiohappyeyeballs.start_connection(
                    addresses, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY, loop=loop
                )
                try:
                    _, connection = await loop.create_connection(
                        lambda: Connection(self),
                        sock=sock,
                        ssl=self.tls,
                        server_hostname=self.server_hostname,
                    )
                except BaseException:
                    sock.close()
                    raise
        except TimeoutError as exc:
            if exc.errno is None:  # the deadline, not the system's own connect timeout
                raise connect_timeout(deadline, total_deadline, loop.time()) from None
            raise connect_error(self, exc) from exc
        except (OSError, RuntimeError) as exc:  # refused, unreachable, no such name, TLS
            raise connect_error(self, exc) from exc  # (uvloop's sockets may raise RuntimeError)
        if self.closed:
            connection.reusable = False
            if connection.transport is not None:
                connection.transport.close()
            raise UpstreamError(502, "the origin could not be reached", "upstream-error", "closed")
        self.connections.add(connection)
        return connection

    async def resolve(self) -> list[Any]:
        """The host's addresses (getaddrinfo's), kept for DNS_TTL; one look-up at a time."""
        if self.literal:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (self.host, self.port))]
        if self.addresses and self.loop.time() < self.resolved_until:
            return self.addresses
        if self.resolving is None:
            self.resolving = self.loop.create_task(self.look_up())
            # Read here, so that a look-up whose askers all gave up logs nothing.
            self.resolving.add_done_callback(lambda task: task.cancelled() or task.exception())
        return await asyncio.shield(self.resolving)

    async def look_up(self) -> list[Any]:
        try:
            infos = await self.loop.getaddrinfo(
                self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG
            )
            seen = set()
            addresses = []
            for info in infos:
                if info[4] not in seen:
                    seen.add(info[4])
                    addresses.append(info)
            self.addresses = addresses
            self.resolved_until = self.loop.time() + DNS_TTL
            return addresses
        finally:
            self.resolving = None

    def close(self) -> list[asyncio.Future[None]]:
        """Close every connection; what to wait on for them to be gone."""
        self.closed = True
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        gone = []
        for connection in {*self.connections, *self.idle}:
            if connection.transport is not None:
                connection.gone = self.loop.create_future()
                gone.append(connection.gone)
                connection.transport.close()
        self.idle = []
        while self.waiting:
            turn = self.waiting.popleft()
            if not turn.done():
                turn.cancel()
        return gone


def connect_error(origin: Origin, exc: Exception) -> UpstreamError:
    return UpstreamError(
        502,
        "the origin refused or dropped the connection",
        "upstream-connect",
        f"Cannot connect to host {origin.host}:{origin.port} "
        f"ssl:{'default' if origin.tls else 'False'} [{exc}]",
    )


def connect_timeout(deadline: float, total_deadline: float, now: float) -> UpstreamError:
    if total_deadline < deadline and now >= total_deadline:
        return UpstreamError(
            504, "the origin did not send response headers in time", "upstream-timeout"
        )
    return UpstreamError(
        504,
        "the origin did not accept the connection in time",
        "upstream-connect-timeout",
        "connection timeout",
    )


def is_ip_literal(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True
