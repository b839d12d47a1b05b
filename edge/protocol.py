"""The edge's HTTP connections: aiohttp's protocol with two changes.

- Plain GETs that a fresh stored response answers are written straight from
  the parsed request (Edge.fast_hit): no request object, task or response
  object. Anything else — and anything behind a request still in progress, so
  responses keep their order — goes through aiohttp to Edge.handle.
- Requests aiohttp cannot parse get the edge's own answer (reason,
  Cache-Status, Via) and an INFO line instead of a traceback.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from aiohttp.web_request import BaseRequest
from multidict import CIMultiDict

from pinedge.edge.deliver import FileBody

log = logging.getLogger("pinedge.edge")

FastHit = Callable[[RawRequestMessage], list[bytes | FileBody] | None]


class EdgeConnection(RequestHandler):
    node_name = "pinedge"
    limits = ""
    line_limit = 0  # the parser's limit on the request target, told apart from a field's
    fast_hit: FastHit | None = None
    fast_hit_bytes: Callable[[bytes], list[bytes | FileBody] | None] | None = None
    count_error: Callable[[int], None] | None = None
    _parser_used = False
    _socket_fd = -1
    _socket: socket.socket | None = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.fast_hit_bytes is not None and not self._parser_used:
            buffers = self.fast_hit_bytes(data)  # type: ignore[misc]
            if buffers is not None:
                self._request_count += 1
                self._write(buffers)
                if self._keepalive_timeout > 0:
                    self._next_keepalive_close_time = self._loop.time() + self._keepalive_timeout
                return
            # From now on this connection's bytes go through the full parser, which
            # must see every byte from here on.
            self._parser_used = True
        waiter = self._waiter
        if (
            self.fast_hit is None
            or self._payload_parser is not None
            or self._upgraded
            or self._force_close
            or self._close
            or self._messages
            or waiter is None
            or waiter.done()
        ):
            super().data_received(data)
            return
        assert self._parser is not None and self.transport is not None
        try:
            messages, upgraded, tail = self._parser.feed_data(data)
        except HttpProcessingError as exc:
            messages = [(_ErrInfo(status=400, exc=exc, message=exc.message), EMPTY_PAYLOAD)]
            upgraded, tail = False, b""
        served = 0
        for message, payload in messages:
            if payload is not EMPTY_PAYLOAD or not isinstance(message, RawRequestMessage):
                break
            buffers = self.fast_hit(message)  # type: ignore[misc]
            if buffers is None:
                break
            self._parser.message_consumed()
            self._request_count += 1
            self._write(buffers)
            served += 1
        if served and self._keepalive_timeout > 0:
            self._next_keepalive_close_time = self._loop.time() + self._keepalive_timeout
        for queued in messages[served:]:
            self._request_count += 1
            self._messages.append(queued)
        if served < len(messages):
            waiter.set_result(None)
            if not self._buffer_paused and len(self._messages) >= self._max_msg_queue_size:
                self._pause_reading_for_buffer()
        self._upgraded = upgraded
        if upgraded and tail:
            self._message_tail = tail
        elif served == len(messages) >= self._max_msg_queue_size:
            # The parser paused at its queue limit; what it holds back is parsed now.
            self.data_received(b"")

    def _write(self, buffers: list[bytes | FileBody]) -> None:
        if type(buffers[-1]) is FileBody:
            self._send_file(buffers[0], buffers[-1])  # type: ignore[arg-type]
        else:
            self.transport.writelines(buffers)  # type: ignore[union-attr, arg-type]

    def _send_file(self, head: bytes, body: FileBody) -> None:
        """The head, then the body by sendfile(2) from the page cache, when nothing
        is queued on the transport; whatever the socket does not take goes through
        the transport as usual."""
        transport = self.transport
        assert transport is not None
        if transport.get_write_buffer_size():
            transport.writelines([head, body.data])
            return
        if self._socket is None:
            self._socket = socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))
            self._socket_fd = self._socket.fileno()
        try:
            # MSG_MORE holds the head back to share a segment with the body's start.
            written = self._socket.send(head, socket.MSG_MORE)
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

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400 or not isinstance(exc, BadHttpMessage):
            return super().handle_error(request, status, exc, message)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send the parse error")
        if isinstance(exc, LineTooLong):
            if exc.args[1] == self.line_limit:
                status, reason = 414, f"the request target is too long ({self.limits})"
            else:
                status, reason = 431, f"a header field is too long ({self.limits})"
        elif "Too many headers" in str(exc):
            status, reason = 431, "too many header fields"
        else:
            reason = "malformed request: " + str(exc.message).splitlines()[0][:120]
        log.info("%s: %d %s", request.remote, status, reason)
        if self.count_error is not None:
            self.count_error(status)
        headers = CIMultiDict(
            {
                "Content-Type": "text/plain; charset=utf-8",
                "Cache-Status": f"{self.node_name}; detail=bad-request",
                "Via": f"1.1 {self.node_name}",
            }
        )
        response = web.Response(status=status, text=f"{status} {reason}\n", headers=headers)
        response.force_close()
        return response


class EdgeHTTPServer(web.Server):
    """A low-level aiohttp server (no router: every request goes to one handler)
    whose connections are EdgeConnections."""

    def __init__(
        self,
        handler: Callable[..., object],
        name: str,
        limits: str,
        fast_hit: FastHit | None,
        fast_hit_bytes: Callable[[bytes], list[bytes | FileBody] | None] | None = None,
        count_error: Callable[[int], None] | None = None,
        *,
        max_request_line: int,
        max_header_size: int,
        **kwargs: object,
    ) -> None:
        # aiohttp's LineTooLong carries the limit it broke: with the two limits equal,
        # a field is let one byte longer so that a long target (414) and a long field
        # (431) stay apart.
        field_limit = max_header_size + (max_header_size == max_request_line)
        super().__init__(
            handler,  # type: ignore[arg-type]
            max_line_size=max_request_line,
            max_field_size=field_limit,
            **kwargs,  # type: ignore[arg-type]
        )
        attributes = {
            "node_name": name,
            "limits": limits,
            "line_limit": max_request_line,
            "fast_hit": staticmethod(fast_hit),
            "fast_hit_bytes": staticmethod(fast_hit_bytes) if fast_hit_bytes else None,
            "count_error": staticmethod(count_error) if count_error else None,
        }
        self.connection_class = type("Connection", (EdgeConnection,), attributes)

    def __call__(self) -> RequestHandler:
        return self.connection_class(self, loop=self._loop, **self._kwargs)
