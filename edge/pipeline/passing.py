"""Pass: a request answered by the upstream alone, nothing stored, bodies streamed
both ways; and what an unsafe method's success invalidates."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web
from yarl import URL

from pinedge.edge.http.forwarding import TrustedPeers
from pinedge.edge.http.key import primary_key, split_host
from pinedge.edge.http.status import CacheStatus
from pinedge.edge.node.config import EdgeConfig
from pinedge.edge.node.metrics import EdgeMetrics
from pinedge.edge.pipeline.collapse import Head, TruncatedFill
from pinedge.edge.pipeline.deliver import Delivery
from pinedge.edge.pipeline.errors import EdgeError, UpstreamError
from pinedge.edge.pipeline.outgoing import interim_to, response_head, upstream_age, upstream_headers
from pinedge.edge.pipeline.transaction import Route
from pinedge.edge.store.view import SharedStore
from pinedge.edge.upstream.client import UpstreamResponse
from pinedge.edge.upstream.sender import Sender

log = logging.getLogger("pinedge.edge")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Content in these has no meaning (RFC 9110 §9.3.1-2): it is read and dropped, never sent on.
BODILESS_METHODS = frozenset({"GET", "HEAD"})


class Passer:
    """Requests that go upstream and back as they are."""

    def __init__(
        self,
        config: EdgeConfig,
        sender: Callable[[], Sender],
        store: SharedStore,
        delivery: Delivery,
        trusted: TrustedPeers,
        metrics: EdgeMetrics,
    ) -> None:
        self.config = config
        self.sender = sender
        self.store = store
        self.delivery = delivery
        self.trusted = trusted
        self.metrics = metrics

    async def pass_through(
        self, request: web.Request, route: Route, status: CacheStatus
    ) -> web.StreamResponse:
        headers = upstream_headers(request, route.host, self.trusted, self.config.name)
        body = None
        if request.body_exists and request.method not in BODILESS_METHODS:
            body = RequestBody(request, self.config.max_request_body, self.config.body_timeout)
            if request.content_length is not None:
                headers["Content-Length"] = str(request.content_length)
        key = primary_key(request.scheme, route.host, route.target)
        try:
            response, _request_time, response_time, _ = await self.sender().send(
                route.site,
                route.host,
                request.method,
                route.target,
                headers,
                body,
                key,
                interim_to(request),
            )
        except UpstreamError:
            if body is not None and body.error is not None:
                if body.error.detail == "body-timeout":
                    self.metrics.body_timeouts.inc()
                raise body.error from None
            raise
        head = response_head(response, response_time)
        status.fwd_status = head.status
        if request.method not in SAFE_METHODS and head.status < 400:
            await self.invalidate(request, route, head)
        return await self.stream_upstream(request, head, response, status, conditional=False)

    async def stream_upstream(
        self,
        request: web.Request,
        head: Head,
        upstream: UpstreamResponse,
        status: CacheStatus,
        conditional: bool,
    ) -> web.StreamResponse:
        if conditional:
            code = self.delivery.precondition(request, head.headers, head.status)
            if code is not None:
                upstream.close()
                return self.delivery.not_modified(code, head.headers, status, upstream_age(head))
        out = self.delivery.client_headers(head.headers)
        self.delivery.finish_headers(out, head.headers, status, head.status, upstream_age(head))
        response = web.StreamResponse(status=head.status, reason=head.reason, headers=out)
        try:
            await response.prepare(request)
            await self.copy_body(request, response, upstream.content.iter_any(), status)
        finally:
            upstream.release()
        return response

    async def copy_body(
        self,
        request: web.Request,
        response: web.StreamResponse,
        chunks: AsyncIterator[bytes],
        status: CacheStatus,
    ) -> None:
        """Stream to the client; a body that breaks off upstream breaks off here too,
        so the client sees a truncated response rather than a complete wrong one."""
        sent = 0
        try:
            # A fill's body is an async generator: close it, so the fill sees its
            # reader leave even when the client went away mid-body.
            closing = (
                contextlib.aclosing(chunks)  # type: ignore[type-var]  # has aclose: checked below
                if hasattr(chunks, "aclose")
                else contextlib.nullcontext()
            )
            async with closing:
                async for chunk in chunks:
                    await response.write(chunk)
                    sent += len(chunk)
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        except (aiohttp.ClientError, TimeoutError, UpstreamError, TruncatedFill) as exc:
            log.warning(
                "%s %s: upstream body broke off after %d bytes: %r",
                request.method,
                request.path,
                sent,
                exc,
            )
            if request.transport is not None:
                request.transport.abort()
        finally:
            self.metrics.response_bytes.inc(status.label(), amount=sent)

    async def invalidate(self, request: web.Request, route: Route, head: Head) -> None:
        """RFC 9111 §4.4: an unsafe request's target, and same-origin Location and
        Content-Location, are no longer fresh."""
        host = route.host
        base = URL(route.target)
        paths = [route.target]
        for name in ("Location", "Content-Location"):
            value = head.headers.get(name)
            if not value:
                continue
            target = URL(value)
            if target.is_absolute():
                if split_host(target.raw_authority or "") != host:
                    continue
            else:
                target = base.join(target)
            paths.append(target.raw_path_qs)
        removed = 0
        for path in paths:
            removed += await self.store.remove(primary_key(request.scheme, host, path))
        self.metrics.invalidations.inc(amount=removed)


class RequestBody:
    """A client's request body streamed upstream: cut off past `limit` bytes (413),
    or when the client pauses longer than `timeout` between two reads (408). The
    answer it then owes the client is kept in `error`, since the upstream client
    sees only a broken send. A body that ends short of its Content-Length fails the
    send too, so the upstream connection is closed instead of being left to read
    the next request as the rest of this one."""

    def __init__(self, request: web.BaseRequest, limit: int, timeout: float) -> None:
        self.request = request
        self.limit = limit
        self.timeout = timeout
        self.declared = request.content_length
        self.error: EdgeError | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        received = 0
        content = self.request.content
        while True:
            try:
                async with asyncio.timeout(self.timeout or None):
                    chunk = await content.readany()
            except TimeoutError:
                self.error = EdgeError(
                    408,
                    f"the request body paused for over {self.timeout:g} s",
                    "body-timeout",
                    close=True,
                )
                raise self.error from None
            if not chunk:
                break
            received += len(chunk)
            if received > self.limit:
                self.error = EdgeError(
                    413, f"request body is over the limit of {self.limit} bytes", "body-too-large"
                )
                raise self.error
            yield chunk
        if self.declared is not None and received != self.declared:
            self.error = EdgeError(
                400,
                f"the request body ended after {received} of {self.declared} bytes",
                "body-incomplete",
                close=True,
            )
            raise self.error
