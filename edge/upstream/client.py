"""Requests to an upstream: pooled keep-alive connections (http1.py), timeouts,
errors mapped to 502/504, and interim (1xx) responses reported as they arrive."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass

from pinedge.edge.pipeline.errors import UpstreamError
from pinedge.edge.upstream.http1 import (
    IDEMPOTENT_METHODS,
    INF,
    Interim,
    Origin,
    UpstreamResponse,
)

__all__ = ["Interim", "Timeouts", "Upstream", "UpstreamResponse", "body_error", "split_url"]

LIMIT_PER_UPSTREAM = 256  # connections lent out at once to one upstream
# A failure that a request on a reused connection meets when the upstream closed it
# while it was idle: the request is sent again, once (RFC 9112 §9.3.1).
STALE = frozenset({"upstream-closed", "upstream-error"})


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    first_byte: float
    total: float


class Upstream:
    """The HTTP client the edge uses for every upstream; created inside the event loop."""

    def __init__(
        self,
        timeouts: Timeouts,
        limit: int = LIMIT_PER_UPSTREAM,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """`tls` checks https upstreams' certificates (the system's trust store if None)."""
        self.timeouts = timeouts
        self.limit = limit
        self.tls = tls
        self.loop = asyncio.get_running_loop()
        self.origins: dict[str, Origin] = {}  # by "scheme://authority"

    async def close(self) -> None:
        """Close every connection, and wait (a second at most) for them to be gone."""
        gone = [future for origin in self.origins.values() for future in origin.close()]
        self.origins.clear()
        if gone:
            await asyncio.wait(gone, timeout=1.0)

    def origin(self, prefix: str) -> Origin:
        origin = self.origins.get(prefix)
        if origin is None:
            origin = self.origins[prefix] = Origin(prefix, self.limit, self.loop, self.tls)
        return origin

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: AsyncIterable[bytes] | None = None,
        interim: Interim | None = None,
    ) -> tuple[UpstreamResponse, float, float]:
        """(response, request_time, response_time); the body is left to read.
        `url` is the upstream's scheme://authority[/path], then the target as the
        client sent it (not re-quoted). `interim` is told of interim responses as
        they arrive."""
        request_time = time.time()
        prefix, target = split_url(url)
        origin = self.origins.get(prefix) or self.origin(prefix)
        head = origin.head(method, target, headers, body is not None)
        length = None
        if body is not None and "Content-Length" in headers:
            length = int(headers["Content-Length"])
        timeouts = self.timeouts
        now = self.loop.time()
        total = now + timeouts.total if timeouts.total > 0 else INF
        connect = now + timeouts.connect if timeouts.connect > 0 else INF
        again = body is None and method in IDEMPOTENT_METHODS
        while True:
            connection = await origin.acquire(connect, total)
            try:
                response = await connection.send(
                    method,
                    head,
                    None if body is None else aiter(body),
                    length,
                    interim,
                    total,
                    timeouts.first_byte,
                )
            except UpstreamError as err:
                if again and connection.reused and not connection.received and err.detail in STALE:
                    again = False
                    continue
                raise
            return response, request_time, time.time()


def split_url(url: str) -> tuple[str, str]:
    """An upstream's URL and a target, as (scheme://authority, the target sent): an
    empty query is not sent (as yarl did)."""
    slash = url.find("/", 8)  # past "https://" and a host of one character
    if slash < 0:
        return url, "/"
    target = url[slash:]
    if target[-1] == "?" and target.index("?") == len(target) - 1:
        target = target[:-1]
    return url[:slash], target


def body_error(exc: BaseException) -> UpstreamError:
    """The error for a body that broke off after the response headers arrived."""
    if isinstance(exc, TimeoutError):
        return UpstreamError(504, "the origin stalled mid-body", "upstream-body-timeout", repr(exc))
    return UpstreamError(502, "the origin broke off mid-body", "upstream-body", repr(exc))
