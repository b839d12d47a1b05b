"""The miss path: a plain GET for a URL with nothing stored, fetched and answered
without a request object, aiohttp's handler or the step machine.

It takes the fill as FETCH does (Steps.lead_fill: collapsed within the worker
and across the node) and answers itself when the fill it led stored, as it came,
a response of at most MISS_BODY_MAX bytes that arrived whole with its head and
that the hit path would serve as it is: the answer is the hit path's prepared
head with a miss's Cache-Status. Anything else (a body still arriving, not
stored, an upstream error, a variant, a fill another request led) is handed to
the general path, which goes on at JOINED with the fill and any response still
to stream (a Handover).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, NamedTuple

from multidict import CIMultiDict, CIMultiDictProxy

from pinedge.edge.node.metrics import EdgeMetrics
from pinedge.edge.node.ratelimit import RateLimiter
from pinedge.edge.pipeline.collapse import Fill, Once, Outcome, Role
from pinedge.edge.pipeline.deliver import SLICE, FileBody
from pinedge.edge.pipeline.fetch import Fetcher
from pinedge.edge.pipeline.hitpath import FAST_CLASS, UNKNOWN, Buffers, HitPath
from pinedge.edge.pipeline.outgoing import interim_writer
from pinedge.edge.pipeline.reader import plain_request
from pinedge.edge.pipeline.steps import Steps
from pinedge.edge.pipeline.transaction import FetchPlan, Route
from pinedge.edge.store.view import SharedStore
from pinedge.edge.upstream.client import UpstreamResponse

MISS_BODY_MAX = SLICE  # larger bodies stream to the client as they arrive (general path)

TransportOf = Callable[[], asyncio.BaseTransport | None]
MissWork = Coroutine[Any, Any, "Buffers | Handover"]


@dataclass(slots=True)
class Handover:
    """A miss the general path answers: where it was routed and how far its fetch got."""

    route: Route
    key: str
    plan: FetchPlan
    fill: Fill
    role: Role
    passed: UpstreamResponse | None  # the led fill's response, not to be stored
    started: float  # when the request came (time.monotonic), for its duration
    holding: bool = False  # the fill keeps its body from the start for this request

    def close(self) -> None:
        """Done with (its body's reader has started), or nobody will answer it (the
        client left): let go of what was kept for it."""
        if self.holding:
            self.fill.release_start()
            self.holding = False
        if self.passed is not None:
            self.passed.close()
            self.passed = None


class PlainGet(NamedTuple):
    """A request the miss path took: its Host, target, cache key and fields as read,
    the client's address and its connection's transport."""

    host: str
    target: str
    key: str
    fields: list[tuple[bytes, bytes]]
    peer: str | None
    transport_of: TransportOf
    started: float


class Answer(NamedTuple):
    """A miss the miss path answers itself."""

    buffers: Buffers
    status: int
    body_length: int


class MissPath:
    """A worker's miss path; `inflight` counts the misses it is answering."""

    def __init__(
        self,
        hits: HitPath,
        store: SharedStore,
        once: Once,
        steps: Steps,
        fetcher: Fetcher,
        limiter: RateLimiter,
        metrics: EdgeMetrics,
    ) -> None:
        self.hits = hits
        self.store = store
        self.once = once
        self.steps = steps
        self.fetcher = fetcher
        self.limiter = limiter
        self.metrics = metrics
        self.inflight = 0

    def start(self, data: bytes, peer: str | None, transport_of: TransportOf) -> MissWork | None:
        """The work of answering `data` when it is one plain GET this path takes: no
        rate limits on its site, no image parameters, no Authorization, nothing
        stored under its key and no fetch of it under way in this worker."""
        request = plain_request(data)
        if request is None:
            return None
        head_only, host, target, fields = request
        if head_only:
            return None
        hits = self.hits
        found = hits.keys.get((host, target), UNKNOWN)
        if found is UNKNOWN:
            found = hits.find(host, target)
        if found is None:
            return None
        key, params, site = found
        if params or site in self.limiter.budgets:
            return None
        if self.once.table.in_progress(key) or not self.store.absent(key):
            return None
        for name, _value in fields:
            if name.lower() == b"authorization":
                return None
        return self.fetch(
            PlainGet(
                host.decode("latin-1"), target, key, fields, peer, transport_of, time.monotonic()
            )
        )

    async def fetch(self, request: PlainGet) -> Buffers | Handover:
        self.inflight += 1
        try:
            answer = await self._answer(request)
        finally:
            self.inflight -= 1
        transport = request.transport_of()
        if transport is None or transport.is_closing():
            self.metrics.requests.inc("miss", "gone")
            if isinstance(answer, Handover):
                answer.close()
            return answer.buffers if isinstance(answer, Answer) else answer
        elif isinstance(answer, Answer):
            metrics = self.metrics
            metrics.requests.inc("miss", FAST_CLASS[answer.status])
            metrics.response_bytes.inc("miss", amount=answer.body_length)
            metrics.request_duration.observe(time.monotonic() - request.started, "miss")
            return answer.buffers
        return answer

    async def _answer(self, request: PlainGet) -> Answer | Handover:
        key = request.key
        route = self.hits.route(request.host, request.target)
        headers = CIMultiDictProxy(
            CIMultiDict(
                (name.decode("latin-1"), value.decode("latin-1")) for name, value in request.fields
            )
        )
        interim = interim_writer(request.transport_of)
        plan = self.fetcher.plan_for(headers, request.peer, "http", route, key, None, interim)
        fill, role, passed = await self.steps.lead_fill(plan, headers)
        handover = Handover(route, key, plan, fill, role, passed, request.started)
        if role is not Role.LED or fill.outcome is not Outcome.STREAM or fill.head is None:
            return handover
        upstream = fill.head.headers
        length = upstream.get("Content-Length", "")
        if (
            not fill.came_whole
            or not length.isdigit()
            or int(length) > MISS_BODY_MAX
            or "Age" in upstream
        ):
            # The general path streams the body as it comes (a slow body's head is not
            # held back): none of it may be let go before its reader starts.
            fill.hold_start()
            handover.holding = True
            return handover
        await fill.released.wait()
        entries = self.store.variants(key) if fill.stored else []
        if len(entries) != 1:
            return handover
        entry = entries[0]
        wire = entry.wire
        # Stored as it came (no field withheld from later clients, no Vary): what
        # the hit path would send is what this client is owed.
        if wire is None or entry.headers is not upstream or entry.vary_names:
            return handover
        body = entry.body
        if entry.file is not None:
            buffers = [wire.miss_head(), FileBody(entry.file[0], entry.file[1], body)]
        else:
            buffers = [wire.miss_head(), body]
        return Answer(buffers, entry.status, len(body))
