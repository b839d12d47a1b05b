"""Sending a request upstream: to the first upstream that takes it, past open
breakers, and on to the next one only when nothing could have reached the first."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Protocol

from multidict import CIMultiDict

from pinedge.edge.node.config import SiteConfig
from pinedge.edge.node.metrics import STATUS_CLASS, EdgeMetrics
from pinedge.edge.pipeline.errors import EdgeError, UpstreamError
from pinedge.edge.upstream.client import Interim, Upstream, UpstreamResponse
from pinedge.edge.upstream.routes import BreakerState, Target, Upstreams

log = logging.getLogger("pinedge.edge")

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# Connection failures: the request can be sent again to another upstream when it
# is idempotent (RFC 9110 §9.2.2), as nothing of its answer reached the client.
RETRYABLE = frozenset(
    {"upstream-connect", "upstream-connect-timeout", "upstream-closed", "upstream-error"}
)
# Answers that say an upstream is failing: they count against an origin's breaker
# (a shield's relay its origin's), and a stored response may be served instead.
FAILING_STATUSES = frozenset({500, 502, 503, 504})


class RequestBody(Protocol):
    """A client's body on its way upstream; `error` is the answer the client is owed
    when reading it failed (the upstream client sees only a broken send)."""

    error: EdgeError | None

    def chunks(self) -> AsyncIterator[bytes]: ...


class Sender:
    """One node's way to its upstreams: the pooled client, the routes and breakers."""

    def __init__(
        self, client: Upstream, upstreams: Upstreams, tries: int, metrics: EdgeMetrics
    ) -> None:
        self.client = client
        self.upstreams = upstreams
        self.tries = tries
        self.metrics = metrics

    async def send(
        self,
        site: SiteConfig,
        host: str,
        method: str,
        target: str,
        headers: CIMultiDict[str],
        body: RequestBody | None,
        key: str,
        interim: Interim | None = None,
    ) -> tuple[UpstreamResponse, float, float, str]:
        """Send the request to the first upstream that takes it (shields ranked by
        the cache key, the same for every method, then origins), skipping
        upstreams whose breaker is open.
        Only a request that can be sent again (idempotent, no body) goes on to
        the next upstream, and only when the connection failed: nothing reached
        the upstream, and nothing has been sent to the client. Returns the
        response, when the request was sent and answered, and who answered."""
        name = site.name
        replayable = body is None and method in IDEMPOTENT_METHODS
        tries = self.tries
        failed: UpstreamError | None = None
        for upstream in self.upstreams.order(name, key):
            if tries == 0:
                break
            if not upstream.breaker.allows(time.monotonic()):
                continue
            tries -= 1
            client_host = upstream.kind == "shield" or site.preserve_host
            headers["Host"] = host if client_host else upstream.host
            try:
                response, request_time, response_time = await self.client.request(
                    method,
                    upstream.url + target,
                    headers,
                    body.chunks() if body is not None else None,
                    interim,
                )
            except UpstreamError as err:
                if body is not None and body.error is not None:
                    raise
                self.failed(name, upstream, method, target, err)
                failed = err
                if replayable and err.detail in RETRYABLE:
                    continue
                raise
            self.answered(name, upstream, response.status, response_time - request_time)
            return response, request_time, response_time, upstream.label
        if failed is not None:
            raise failed
        raise UpstreamError(
            503,
            "every upstream of this site is failing (its circuit breakers are open)",
            "upstream-unavailable",
        )

    def first(self, site: str, key: str) -> Target | None:
        """The upstream send() would try first for `key`, when its breaker is closed
        (one that is open or half-open is left to send())."""
        upstreams = self.upstreams
        pool = upstreams.origins[site]
        if self.tries < 1:
            return None
        if not upstreams.shields and len(pool) == 1:
            first = pool[0]
        else:
            order = upstreams.order(site, key)
            if not order:
                return None
            first = order[0]
        return first if first.breaker.state is BreakerState.CLOSED else None

    def answered(self, site: str, upstream: Target, status: int, took: float) -> None:
        """An upstream's response head came: its breaker and metrics hear of it."""
        if status in FAILING_STATUSES and upstream.kind == "origin":
            upstream.breaker.failed(time.monotonic())
        else:
            upstream.breaker.succeeded()
        self.metrics.upstream_requests.inc(site, upstream.label, STATUS_CLASS[status])
        self.metrics.upstream_latency.observe(took, site)

    def failed(
        self, site: str, upstream: Target, method: str, target: str, err: UpstreamError
    ) -> None:
        """An upstream could not be reached or did not answer in time."""
        upstream.breaker.failed(time.monotonic())
        self.metrics.upstream_errors.inc(site, upstream.label, err.detail)
        log.warning("%s %s%s failed: %s", method, upstream.url, target, err.log or err.reason)
