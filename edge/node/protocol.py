"""The edge's HTTP connections: aiohttp's protocol, with the hit path and the
connection rules an edge facing the internet needs.

- Plain GETs that a fresh stored response answers are written straight from
  the parsed request (Edge.fast_hit): no request object, task or response
  object. Anything else — and anything behind a request still in progress, so
  responses keep their order — goes through aiohttp to Edge.handle; once that
  request's response is written, the hit path answers again.
- A body larger than a slice goes out a slice at a time, each written when the
  client has taken the last: a client that stops reading holds at most a slice
  of this worker's memory, and requests behind it wait their turn.
- Timeouts: a request head must arrive whole within `header_timeout` of its
  first byte (408, close); an idle connection closes after `keepalive_timeout`;
  a response the client takes nothing of for `send_timeout` is cut off.
- Limits: connections per node and per client, counted across the workers in
  shared memory (clients.py); beyond them the connection gets 503 or 429.
- Requests aiohttp cannot parse get the edge's own answer (reason,
  Cache-Status, Via) and an INFO line instead of a traceback.

The private parts of aiohttp this module relies on (RequestHandler's state and
methods, its parser's) are named, with their reasons, in aiohttp_private.py, which
a test checks against the installed aiohttp.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web
from aiohttp.http import HttpProcessingError, RawRequestMessage
from multidict import CIMultiDict

from pinedge.core.metrics import Counter
from pinedge.edge.http.forwarding import TrustedPeers
from pinedge.edge.node.aiohttp_private import (
    EMPTY_PAYLOAD,
    BadHttpMessage,
    ErrInfo,
    LineTooLong,
    RequestHandler,
)
from pinedge.edge.node.clients import ClientTable, client_key
from pinedge.edge.pipeline.deliver import SLICE, FileBody, error_bytes
from pinedge.edge.pipeline.reader import one_bodiless_request

if TYPE_CHECKING:
    from pinedge.edge.pipeline.misspath import Handover

log = logging.getLogger("pinedge.edge")

HELD_MAX = 64 * 1024  # request bytes held while a body goes out, before reading pauses
REFUSAL_LOG_EVERY = 60.0  # seconds between log lines about one client's refused connections

FastHit = Callable[[RawRequestMessage, str | None], list[bytes | FileBody] | None]
FastHitBytes = Callable[[bytes, str | None], list[bytes | FileBody] | None]
# The miss path's start (misspath.MissPath.start): request bytes, peer address, the
# connection's transport and what to call with the answer → whether it took them.
FastMiss = Callable[
    [
        bytes,
        str | None,
        Callable[[], asyncio.BaseTransport | None],
        Callable[["list[bytes | FileBody] | Handover | None"], None],
    ],
    bool,
]


@dataclass(frozen=True, slots=True)
class ConnectionPolicy:
    """The limits and timeouts every client connection of a node is held to."""

    node_name: str
    max_request_line: int
    max_header_size: int
    header_timeout: float
    send_timeout: float
    max_connections: int
    max_client_connections: int
    trusted: TrustedPeers
    ipv4_prefix: int
    ipv6_prefix: int

    @property
    def limits(self) -> str:
        return (
            f"request line {self.max_request_line} bytes, header field {self.max_header_size} bytes"
        )


@dataclass(slots=True)
class ConnectionEvents:
    """What connections report: counters, and the parse errors answered."""

    closed: Counter  # by reason: header-timeout, idle-timeout, send-timeout
    refused: Counter  # by reason: node-limit, client-limit
    parse_error: Callable[[int], None]


class EdgeConnection(RequestHandler):
    policy: ConnectionPolicy
    events: ConnectionEvents
    clients: ClientTable | None = None
    fast_hit: FastHit | None = None
    fast_hit_bytes: FastHitBytes | None = None
    fast_miss: FastMiss | None = None
    refusals_logged: dict[str, float]
    handover: Handover | None = None  # a miss the miss path hands on, for Edge.handle
    _miss = False  # the miss path is answering this connection's request
    _miss_data = b""  # that request's bytes, for aiohttp should the miss path hand it on
    _miss_done: asyncio.Future[None] | None = None  # for shutdown() to wait on
    _handover_taken: asyncio.Future[None] | None = None  # for shutdown() to wait on
    _peer: str | None = None
    _parser_used = False  # the parser was fed bytes that may leave it within a request
    _reusable = True  # the last response aiohttp wrote leaves the connection open
    _socket_fd = -1
    _socket: socket.socket | None = None
    _client: str | None = None  # the client's key for limits; None behind a trusted peer
    _slot = -1  # its connection slot, once counted
    _refused = False
    _head_started = False  # a request head has begun arriving and is not complete
    _send_timer: asyncio.TimerHandle | None = None
    _send_left = 0
    _outgoing: memoryview | None = None  # the rest of a large body going out
    _outgoing_at = 0
    _held: list[bytes] | None = None  # request bytes that came while it went
    _held_messages: tuple[list[Any], bool, bytes] | None = None

    # ── a connection's start and end: the limits ─────────────────────────────

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        policy = self.policy
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) else None
        self._peer = address
        if address is not None and address not in policy.trusted:
            self._client = client_key(address, policy.ipv4_prefix, policy.ipv6_prefix)
        table = self.clients
        if table is not None:
            slot = table.connection_slot(self._client or address or "")
            if table.node_connections() >= policy.max_connections:
                self._refuse(transport, 503, "the node is at its connection limit", "node-limit")
                return
            limit = policy.max_client_connections
            if self._client is not None and limit and table.connections(slot) >= limit:
                self._refuse(
                    transport,
                    429,
                    f"this client has {limit} connections open, the most it may",
                    "client-limit",
                )
                return
            table.opened(slot)
            self._slot = slot
        super().connection_made(transport)

    def _refuse(self, transport: asyncio.BaseTransport, code: int, reason: str, kind: str) -> None:
        self._refused = True
        self.events.refused.inc(kind)
        client = self._client or "?"
        now = time.monotonic()
        if now - self.refusals_logged.get(client, -REFUSAL_LOG_EVERY) >= REFUSAL_LOG_EVERY:
            if len(self.refusals_logged) > 4096:
                self.refusals_logged.clear()
            self.refusals_logged[client] = now
            log.warning("connection from %s refused: %s", client, reason)
        answer = error_bytes(
            self.policy.node_name, code, reason, f"connection-{kind}", {"Retry-After": "1"}
        )
        cast(asyncio.Transport, transport).write(answer)
        transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        if self._slot >= 0 and self.clients is not None:
            self.clients.closed(self._slot)
            self._slot = -1
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        self._outgoing = None
        self._held = self._held_messages = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        handover = self.take_handover()
        if handover is not None:
            handover.close()
        super().connection_lost(exc)

    # ── requests in ──────────────────────────────────────────────────────────

    def data_received(self, data: bytes) -> None:
        if self._outgoing is not None or self._miss:
            self._hold(data)
            return
        idle = self._idle()
        if self.fast_hit_bytes is not None and not self._parser_used:
            if idle:
                buffers = self.fast_hit_bytes(data, self._client)
                if buffers is not None:
                    self._request_count += 1
                    self._write(buffers)
                    self._idle_from_now()
                    return
                if self.fast_miss is not None and self.fast_miss(
                    data, self._peer, self._transport_now, self._answer_miss
                ):
                    self._miss = True
                    self._miss_data = data
                    return
            # The parser stays between requests, and the bytes path usable, while what it
            # is fed is one whole bodiless request at a time; otherwise it must see every
            # byte from here on.
            if not one_bodiless_request(data):
                self._parser_used = True
        if self.fast_hit is None or not idle:
            self._to_aiohttp(data)
            return
        assert self._parser is not None and self.transport is not None
        try:
            messages, upgraded, tail = self._parser.feed_data(data)
        except HttpProcessingError as exc:
            messages = [(ErrInfo(status=400, exc=exc, message=exc.message), EMPTY_PAYLOAD)]
            upgraded, tail = False, b""
        self._note_head(data, bool(messages))
        self._serve([only_http1(item) for item in messages], upgraded, tail)

    def _to_aiohttp(self, data: bytes) -> None:
        """Parse `data` and queue what it holds for aiohttp's handler."""
        count = self._request_count
        super().data_received(data)
        added = self._request_count - count
        if added:
            queued = self._messages
            for index in range(len(queued) - added, len(queued)):
                queued[index] = only_http1(queued[index])
        self._note_head(data, added > 0)

    def _transport_now(self) -> asyncio.BaseTransport | None:
        return self.transport

    def _answer_miss(self, answer: list[bytes | FileBody] | Handover | None) -> None:
        """Write the miss path's answer to the request it took, or hand the request to
        aiohttp's handler (with what the miss path did, for Edge.handle; None: it
        did nothing); then go on with what came in meanwhile."""
        data, self._miss_data = self._miss_data, b""
        self._miss = False
        try:
            self._answered_miss(data, answer)
        finally:
            waiter, self._miss_done = self._miss_done, None
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _answered_miss(self, data: bytes, answer: list[bytes | FileBody] | Handover | None) -> None:
        if self.transport is None or self.transport.is_closing():
            if answer is not None and not isinstance(answer, list):
                answer.close()
            return
        if isinstance(answer, list):
            self._request_count += 1
            self._write(answer)
            self._idle_from_now()
        else:
            self.handover = answer
            closing, self._close = self._close, False  # aiohttp reads nothing once closing
            self._to_aiohttp(data)
            self._close = closing
        if self._close:
            super().close()
            return
        if self._outgoing is None:
            held, self._held = self._held, None
            if self._buffer_paused and not self._messages:
                self._resume_reading_for_buffer()
            if held:
                self.data_received(b"".join(held))

    def close(self) -> None:
        """aiohttp's close (on shutdown): no more requests after the one being answered;
        while the miss path answers one, the connection closes once it has."""
        if self._miss:
            self._close = True
            return
        super().close()

    def take_handover(self) -> Handover | None:
        """The miss path's handover for the request aiohttp now hands to Edge.handle."""
        handover, self.handover = self.handover, None
        if self._handover_taken is not None and not self._handover_taken.done():
            self._handover_taken.set_result(None)
        return handover

    async def shutdown(self, timeout: float | None = 15.0) -> None:
        # aiohttp counts only its own handler's request as in progress: let the miss
        # path's answer out first, and its handover reach the handler.
        deadline = None if timeout is None else self._loop.time() + timeout
        if self._miss:
            self._miss_done = self._loop.create_future()
            await asyncio.wait({self._miss_done}, timeout=timeout)
        if self.handover is not None and self.transport is not None:
            self._handover_taken = self._loop.create_future()
            await asyncio.wait({self._handover_taken}, timeout=_left(deadline, self._loop))
        await super().shutdown(_left(deadline, self._loop))

    def _idle(self) -> bool:
        """Whether a request may be answered now: none is queued or being answered
        (its response written whole and the connection kept open counts as
        answered, even before aiohttp's start() comes back for the next)."""
        return not (
            self._request_in_progress
            or self._messages
            or not self._reusable
            or self._payload_parser is not None
            or self._upgraded
            or self._force_close
            or self._close
        )

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        answered = await super().finish_response(request, resp, start_time)
        self._reusable = bool(answered[0].keep_alive) and not answered[1]
        return answered

    def _serve(self, messages: list[Any], upgraded: bool, tail: bytes) -> None:
        """Answer what the hit path can, in order; the rest goes to aiohttp."""
        assert self._parser is not None
        served = 0
        for message, payload in messages:
            if payload is not EMPTY_PAYLOAD or not isinstance(message, RawRequestMessage):
                break
            buffers = self.fast_hit(message, self._client)  # type: ignore[misc]  # set: checked before
            if buffers is None:
                break
            self._parser.message_consumed()
            self._request_count += 1
            self._write(buffers)
            served += 1
            if self._outgoing is not None:  # a large body is going out: the rest waits
                self._held_messages = (messages[served:], upgraded, tail)
                self._idle_from_now()
                return
        if served:
            self._idle_from_now()
        for queued in messages[served:]:
            self._request_count += 1
            self._messages.append(queued)
        if served < len(messages):
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            if not self._buffer_paused and len(self._messages) >= self._max_msg_queue_size:
                self._pause_reading_for_buffer()
        self._upgraded = upgraded
        if upgraded and tail:
            self._message_tail = tail
        elif served == len(messages) >= self._max_msg_queue_size:
            # The parser paused at its queue limit; what it holds back is parsed now.
            self.data_received(b"")

    def _idle_from_now(self) -> None:
        self._head_started = False
        if self._keepalive_timeout > 0:
            self._next_keepalive_close_time = self._loop.time() + self._keepalive_timeout

    def _note_head(self, data: bytes, produced: bool) -> None:
        """The first bytes of a request head start its clock (header_timeout)."""
        if produced:
            self._head_started = False
            return
        waiter = self._waiter
        if not data or self._head_started or waiter is None or waiter.done() or self._messages:
            return
        self._head_started = True
        deadline = self._loop.time() + self.policy.header_timeout
        self._next_keepalive_close_time = deadline
        handle = self._keepalive_handle
        if handle is None or handle.when() > deadline:  # type: ignore[attr-defined]  # by call_at
            if handle is not None:
                handle.cancel()
            self._keepalive_handle = self._loop.call_at(deadline, self._process_keepalive)

    def _process_keepalive(self) -> None:
        if self._miss:  # a request is being answered: not idle
            self._keepalive_handle = None
            self._idle_from_now()
            if self._keepalive_timeout > 0:
                self._keepalive_handle = self._loop.call_at(
                    self._next_keepalive_close_time, self._process_keepalive
                )
            return
        waiter = self._waiter
        transport = self.transport
        if (
            not self._force_close
            and self._keepalive
            and transport is not None
            and waiter is not None
            and not waiter.done()
            and self._loop.time() >= self._next_keepalive_close_time
        ):
            if self._head_started:
                self.events.closed.inc("header-timeout")
                log.info("%s: request head not complete in time; closing", self._client)
                transport.write(
                    error_bytes(
                        self.policy.node_name,
                        408,
                        f"the request head did not arrive within {self.policy.header_timeout:g} s",
                        "header-timeout",
                    )
                )
            else:
                self.events.closed.inc("idle-timeout")
        super()._process_keepalive()

    # ── responses out ────────────────────────────────────────────────────────

    def _write(self, buffers: list[bytes | FileBody]) -> None:
        body = buffers[-1]
        if type(body) is FileBody:
            self._send_file(buffers[0], body)  # type: ignore[arg-type]  # a head is bytes
        elif len(buffers) == 2 and len(body) > SLICE:  # type: ignore[arg-type]  # bytes here
            self._send_large(buffers[0], memoryview(body))  # type: ignore[arg-type]  # bytes here
        else:
            self.transport.writelines(buffers)  # type: ignore[union-attr, arg-type]  # open; bytes

    def _send_large(self, head: bytes, body: memoryview) -> None:
        """Head and body in one writev(2) straight from the stored bytes, when nothing
        is queued on the transport (a reader keeping up takes it all at once, and
        nothing is copied); what the socket does not take goes out a slice at a time."""
        transport = self.transport
        assert transport is not None
        sent = 0
        if not transport.get_write_buffer_size():
            try:
                sent = self._raw_socket().sendmsg([head, body])
            except BlockingIOError:
                sent = 0
            except OSError:
                transport.abort()
                return
        if sent < len(head):
            transport.write(head[sent:])
            sent = 0
        else:
            sent -= len(head)
        self._outgoing = body
        self._outgoing_at = sent
        self._send_more()

    def _raw_socket(self) -> socket.socket:
        """A socket object on the connection's descriptor, for calls the transport
        does not offer (writev of stored bytes, sendfile)."""
        if self._socket is None:
            transport = self.transport
            assert transport is not None
            self._socket = socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))
            self._socket_fd = self._socket.fileno()
        return self._socket

    def _send_more(self) -> None:
        """Write slices of the outgoing body while the transport takes them; when
        all is written, go on with the requests that waited."""
        view = self._outgoing
        transport = self.transport
        if view is None or transport is None:
            return
        at, end = self._outgoing_at, len(view)
        while at < end and not self._paused:
            transport.write(view[at : at + SLICE])
            at += SLICE
        if at < end:
            self._outgoing_at = at
            return
        self._outgoing = None
        held, self._held = self._held, None
        waiting, self._held_messages = self._held_messages, None
        if self._buffer_paused and not self._messages:
            self._resume_reading_for_buffer()
        if waiting is not None:
            self._serve(*waiting)
        if held:
            self.data_received(b"".join(held))

    def _hold(self, data: bytes) -> None:
        if self._held is None:
            self._held = []
        self._held.append(data)
        if sum(map(len, self._held)) > HELD_MAX and not self._buffer_paused:
            self._pause_reading_for_buffer()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.policy.send_timeout > 0 and self._send_timer is None and self.transport:
            self._send_left = self.transport.get_write_buffer_size()
            self._send_timer = self._loop.call_later(self.policy.send_timeout, self._send_stalled)

    def resume_writing(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        super().resume_writing()
        self._send_more()

    def _send_stalled(self) -> None:
        """send_timeout after writing paused: cut the client off unless it took
        something since (then it gets another period)."""
        self._send_timer = None
        transport = self.transport
        if transport is None or not self._paused:
            return
        left = transport.get_write_buffer_size()
        if left < self._send_left:
            self._send_left = left
            self._send_timer = self._loop.call_later(self.policy.send_timeout, self._send_stalled)
            return
        self.events.closed.inc("send-timeout")
        log.info(
            "%s took nothing of its response for %g s; closing",
            self._client,
            self.policy.send_timeout,
        )
        transport.abort()

    def _send_file(self, head: bytes, body: FileBody) -> None:
        """The head, then the body by sendfile(2) from the page cache, when nothing
        is queued on the transport; whatever the socket does not take goes through
        the transport as usual."""
        transport = self.transport
        assert transport is not None
        if transport.get_write_buffer_size():
            transport.writelines([head, body.data])
            return
        sock = self._raw_socket()
        try:
            # MSG_MORE holds the head back to share a segment with the body's start.
            written = sock.send(head, socket.MSG_MORE)
        except BlockingIOError:
            written = 0
        except OSError:
            transport.abort()
            return
        if written < len(head):
            transport.writelines([head[written:], body.data])
            return
        size = len(body.data)
        sent = 0
        try:
            while sent < size:
                count = os.sendfile(self._socket_fd, body.fd, body.offset + sent, size - sent)
                if count == 0:
                    break
                sent += count
        except BlockingIOError:
            pass
        except OSError:
            transport.abort()
            return
        if sent < size:
            transport.write(memoryview(body.data)[sent:])

    # ── requests aiohttp could not parse ─────────────────────────────────────

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400 or not isinstance(exc, BadHttpMessage):
            return super().handle_error(request, status, exc, message)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send the parse error")
        policy = self.policy
        if isinstance(exc, UnsupportedVersion):
            status, reason = 505, f"{exc.message} is not supported here; use HTTP/1.1"
        elif isinstance(exc, LineTooLong):
            if exc.args[1] == policy.max_request_line:
                status, reason = 414, f"the request target is too long ({policy.limits})"
            else:
                status, reason = 431, f"a header field is too long ({policy.limits})"
        elif "Too many headers" in str(exc):
            status, reason = 431, "too many header fields"
        else:
            reason = "malformed request: " + str(exc.message).splitlines()[0][:120]
        log.info("%s: %d %s", request.remote, status, reason)
        self.events.parse_error(status)
        headers = CIMultiDict(
            {
                "Content-Type": "text/plain; charset=utf-8",
                "Cache-Status": f"{policy.node_name}; detail=bad-request",
                "Via": f"1.1 {policy.node_name}",
            }
        )
        response = web.Response(status=status, text=f"{status} {reason}\n", headers=headers)
        response.force_close()
        return response


def _left(deadline: float | None, loop: asyncio.AbstractEventLoop) -> float | None:
    """Seconds until `deadline` (loop time), none below zero; None for no deadline."""
    return None if deadline is None else max(0.0, deadline - loop.time())


class UnsupportedVersion(BadHttpMessage):
    """A request line naming an HTTP version other than 1.x."""

    code = 505


def only_http1(item: tuple[Any, Any]) -> tuple[Any, Any]:
    """A parsed request, or in place of one whose major version is not 1 (aiohttp
    takes "HTTP/2.0" or "HTTP/0.9" in an HTTP/1 request line), the parse error that
    answers it with 505 and closes (RFC 9110 §15.6.6)."""
    message = item[0]
    if not isinstance(message, RawRequestMessage) or message.version.major == 1:
        return item
    error = UnsupportedVersion(f"HTTP/{message.version.major}.{message.version.minor}")
    return ErrInfo(status=400, exc=error, message=error.message), EMPTY_PAYLOAD


class EdgeHTTPServer(web.Server):
    """A low-level aiohttp server (no router: every request goes to one handler)
    whose connections are EdgeConnections; `kwargs` are their settings (those of
    aiohttp's RequestHandler)."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        policy: ConnectionPolicy,
        events: ConnectionEvents,
        clients: ClientTable | None,
        fast_hit: FastHit | None,
        fast_hit_bytes: FastHitBytes | None,
        fast_miss: FastMiss | None = None,
        **kwargs: Any,
    ) -> None:
        # aiohttp's LineTooLong carries the limit it broke: with the two limits equal,
        # a field is let one byte longer so that a long target (414) and a long field
        # (431) stay apart.
        line_limit = policy.max_request_line
        field_limit = policy.max_header_size + (policy.max_header_size == line_limit)
        self.connection_loop = asyncio.get_running_loop()
        self.connection_settings: dict[str, Any] = dict(
            kwargs, max_line_size=line_limit, max_field_size=field_limit
        )
        super().__init__(handler, loop=self.connection_loop, **self.connection_settings)
        attributes = {
            "policy": policy,
            "events": events,
            "clients": clients,
            "fast_hit": staticmethod(fast_hit) if fast_hit else None,
            "fast_hit_bytes": staticmethod(fast_hit_bytes) if fast_hit_bytes else None,
            "fast_miss": staticmethod(fast_miss) if fast_miss else None,
            "refusals_logged": {},
        }
        self.connection_class = type("Connection", (EdgeConnection,), attributes)

    def __call__(self) -> RequestHandler:
        return self.connection_class(self, loop=self.connection_loop, **self.connection_settings)
