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

The common miss runs without a task: its request goes out from a callback at
the end of the loop turn that read the client's request, and its answer is
written from the exchange future's callback; only what must wait for more (an
error, a body still arriving, a fill's release) goes on in a task, through the
coroutines below.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

from multidict import CIMultiDict, CIMultiDictProxy

from pinedge.edge.http.cachecontrol import Directives
from pinedge.edge.node.metrics import EdgeMetrics
from pinedge.edge.node.ratelimit import RateLimiter
from pinedge.edge.pipeline.collapse import Fill, Head, Once, Outcome, Role
from pinedge.edge.pipeline.deliver import SLICE, FileBody
from pinedge.edge.pipeline.errors import UpstreamError
from pinedge.edge.pipeline.fetch import Fetcher
from pinedge.edge.pipeline.hitpath import UNKNOWN, Buffers, HitPath
from pinedge.edge.pipeline.outgoing import head_of, interim_writer, response_head
from pinedge.edge.pipeline.reader import fields_of, has_field
from pinedge.edge.pipeline.steps import Steps
from pinedge.edge.pipeline.transaction import FetchPlan, Route
from pinedge.edge.store.entry import Entry
from pinedge.edge.store.view import SharedStore
from pinedge.edge.upstream.client import STALE, UpstreamResponse, split_url
from pinedge.edge.upstream.http1 import INF, Connection, Origin
from pinedge.edge.upstream.routes import Target
from pinedge.edge.upstream.sender import RETRYABLE

MISS_BODY_MAX = SLICE  # larger bodies stream to the client as they arrive (general path)
DURATIONS_MAX = 4096  # miss durations kept before they are folded into the metrics
PREPARED_MAX = 1024  # upstream request shapes remembered (by client fields and peer)
KEPT_BACK = frozenset({"vary", "age"})  # a response with these goes the general way

log = logging.getLogger("pinedge.edge")

TransportOf = Callable[[], asyncio.BaseTransport | None]
# Called once with a taken miss's answer: buffers to write, a Handover for the
# general path, or None when the miss path failed (the general path answers).
Answered = Callable[["Buffers | Handover | None"], None]
MissWork = Coroutine[Any, Any, "Answer | Handover"]


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
    """A request the miss path took: its Host, target, route, cache key and fields as
    read, the client's address and its connection's transport."""

    host: str
    target: str
    route: Route
    key: str
    fields: bytes  # its field lines (reader.py)
    peer: str | None
    transport_of: TransportOf
    started: float


# The upstream request's fields after its request line, the client's fields as the
# pipeline reads them, and the upstream request's fields as a plan holds them.
Prepared = tuple[bytes, CIMultiDictProxy[str], CIMultiDict[str]]


class Lean(NamedTuple):
    """A miss's lean exchange, ready to go: the upstream, the connection lent to it,
    the fill led, the request head, and the client's and the upstream's fields."""

    target: Target
    connection: Connection
    fill: Fill
    head: bytes
    received: CIMultiDictProxy[str]
    forwarded: CIMultiDict[str]


class Answer(NamedTuple):
    """A miss the miss path answers itself."""

    buffers: Buffers
    status: int
    body_length: int


class Exchange(NamedTuple):
    """A lean exchange under way: what its answer is made with when it comes."""

    request: PlainGet
    route: Route
    target: Target
    connection: Connection
    fill: Fill
    plan: FetchPlan
    forwarded: CIMultiDict[str]
    request_time: float
    answered: Answered


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
        self.finishing: set[asyncio.Task[None]] = set()  # tasks going on with misses
        self.prepared: dict[tuple[object, ...], Prepared] = {}
        # Answers by status, their body bytes and durations, in plain variables
        # until the metrics are read (count()).
        self.answered: dict[int, int] = {}
        self.bytes = 0
        self.durations: list[float] = []
        metrics.registry.collectors.append(self.count)

    def count(self) -> None:
        """Fold the miss path's plain counters into the metrics (run when they are read)."""
        metrics = self.metrics
        answered, self.answered = self.answered, {}
        metrics.add_answers("miss", answered, self.bytes)
        self.bytes = 0
        durations, self.durations = self.durations, []
        observe = metrics.request_duration.observe
        for duration in durations:
            observe(duration, "miss")

    def start(
        self, data: bytes, peer: str | None, transport_of: TransportOf, answered: Answered
    ) -> bool:
        """Take `data` when it is one plain GET this path takes (no rate limits on its
        site, no image parameters, no Authorization, nothing stored under its key and
        no fetch of it under way in this worker), and call `answered` with its answer,
        later (never before this returns); False: not taken."""
        hits = self.hits
        request = hits.read(data)
        if request is None:
            return False
        head_only, host, target, fields = request
        if head_only:
            return False
        found = hits.keys.get((host, target), UNKNOWN)
        if found is UNKNOWN:
            found = hits.find(host, target)
        if found is None:
            return False
        key, params, site, route = found
        if params or site in self.limiter.budgets:
            return False
        if self.once.table.in_progress(key) or not self.store.absent(key):
            return False
        if has_field(fields, b"authorization"):
            return False
        taken = PlainGet(
            host.decode("latin-1"), target, route, key, fields, peer, transport_of, time.monotonic()
        )
        self.inflight += 1
        # Sent once this turn of the loop has read what came: the requests to the
        # origin that the turn's misses make go out together, and wake it once.
        asyncio.get_running_loop().call_soon(self._begin, taken, answered)
        return True

    def _begin(self, request: PlainGet, answered: Answered) -> None:
        """The lean exchange when it can start at once, else the general path's fill."""
        route = request.route
        try:
            lean = self._lean(request, route)
            if lean is None:
                self._finish_later(request, self._general(request, route), answered)
            else:
                self._send(request, route, lean, answered)
        except Exception:
            log.exception("the miss path failed; the general path answers")
            self.inflight -= 1
            answered(None)

    def _finish_later(self, request: PlainGet, work: MissWork, answered: Answered) -> None:
        """Go on in a task with what must wait for more than the exchange."""
        task = asyncio.get_running_loop().create_task(self._finish(request, work, answered))
        self.finishing.add(task)
        task.add_done_callback(self.finishing.discard)

    async def _finish(self, request: PlainGet, work: MissWork, answered: Answered) -> None:
        answer: Answer | Handover | None
        try:
            answer = await work
        except Exception:
            log.exception("the miss path failed; the general path answers")
            answer = None
        finally:
            self.inflight -= 1
        answered(self._delivered(request, answer))

    def _delivered(
        self, request: PlainGet, answer: Answer | Handover | None
    ) -> Buffers | Handover | None:
        """What the connection is given for `answer`, counted as answered unless its
        client has gone."""
        transport = request.transport_of()
        if transport is None or transport.is_closing():
            self.metrics.requests.inc("miss", "gone")
            if isinstance(answer, Handover):
                answer.close()
            return answer.buffers if isinstance(answer, Answer) else answer
        if isinstance(answer, Answer):
            answered = self.answered
            answered[answer.status] = answered.get(answer.status, 0) + 1
            self.bytes += answer.body_length
            durations = self.durations
            durations.append(time.monotonic() - request.started)
            if len(durations) >= DURATIONS_MAX:
                self.count()
            return answer.buffers
        return answer

    async def _general(self, request: PlainGet, route: Route) -> Answer | Handover:
        """The fill led through Steps, as the general path leads one."""
        headers = fields_of(request.fields)
        interim = interim_writer(request.transport_of)
        plan = self.fetcher.plan_for(
            headers, request.peer, "http", route, request.key, None, interim
        )
        fill, role, passed = await self.steps.lead_fill(plan, headers)
        return await self._led(
            request, Handover(route, request.key, plan, fill, role, passed, request.started)
        )

    def _lean(self, request: PlainGet, route: Route) -> Lean | None:
        """What the lean exchange needs, when it can start at once: the upstream the
        sender would try first, its breaker closed, an idle connection to it, and
        the fetch of the key led in this worker and the node."""
        sender = self.fetcher.sender()
        key = request.key
        target = sender.first(route.site.name, key)
        if target is None or self.once.node is not self.store:
            return None
        prefix, path = split_url(target.url + route.target)
        origin = sender.client.origins.get(prefix)
        if origin is None or not origin.idle or self.once.table.in_progress(key):
            return None
        prepared = self._prepared(request, route, target, origin)
        connection = origin.lend_idle()
        if connection is None:
            return None
        if not self.store.lead_now(key):
            origin.release(connection, True)
            return None
        fill, _ = self.once.table.acquire(key)
        fill.node_lock = True
        head = b"GET " + path.encode("utf-8", "surrogateescape") + b" HTTP/1.1\r\n" + prepared[0]
        return Lean(target, connection, fill, head, prepared[1], prepared[2])

    def _prepared(
        self, request: PlainGet, route: Route, target: Target, origin: Origin
    ) -> Prepared:
        """The upstream request's fields for these client fields, and the parts a
        fetch needs of them, made by the general path's code once per shape."""
        client_host = target.kind == "shield" or route.site.preserve_host
        host = route.host if client_host else target.host
        shape = (target.url, host, route.host, route.site.name, request.peer, request.fields)
        prepared = self.prepared.get(shape)
        if prepared is None:
            received = fields_of(request.fields)
            plan = self.fetcher.plan_for(received, request.peer, "http", route, request.key, None)
            headers = plan.headers
            headers["Host"] = host
            text = origin.head("GET", "/", headers, False)
            prepared = (text[text.index(b"\r\n") + 2 :], received, headers)
            if len(self.prepared) >= PREPARED_MAX:
                self.prepared.clear()
            self.prepared[shape] = prepared
        return prepared

    def _send(self, request: PlainGet, route: Route, lean: Lean, answered: Answered) -> None:
        """Send the led fill's request on the lent connection; _exchanged() goes on
        when its answer comes."""
        target, connection, fill, head, received, forwarded = lean
        timeouts = self.fetcher.sender().client.timeouts
        interim = interim_writer(request.transport_of)
        # The plan's fields are the shape's, shared: before the sender or the general
        # path has the plan (which set Host and drop validators), it gets a copy.
        plan = FetchPlan(request.key, route, route.target, forwarded, received, None, interim)
        plan.upstream = target.label
        deadline = INF if timeouts.total <= 0 else connection.loop.time() + timeouts.total
        request_time = time.time()
        try:
            waiter = connection.exchange(
                head, interim, deadline, timeouts.first_byte, partial(self._accept, received)
            )
        except BaseException:
            connection.cancel()
            self.once.release(fill)
            raise
        exchange = Exchange(
            request, route, target, connection, fill, plan, forwarded, request_time, answered
        )
        waiter.add_done_callback(partial(self._exchanged, exchange))

    def _exchanged(self, exchange: Exchange, waiter: asyncio.Future[Any]) -> None:
        """A response that came whole and is stored as it came is answered here, at
        once; anything else goes on in a task, as the general path's fill would
        settle it."""
        request = exchange.request
        if waiter.cancelled():  # nothing cancels it now; should anything, it is let go
            exchange.connection.cancel()
            self.once.release(exchange.fill)
            self.inflight -= 1
            exchange.answered(None)
            return
        work: MissWork | None = None
        try:
            result = None if waiter.exception() is not None else waiter.result()
            if result is None or isinstance(result, UpstreamResponse):
                work = self._exchange_rest(exchange, waiter)
            else:
                (upstream, directives, lines), body = result
                request_time = exchange.request_time
                self.fetcher.sender().answered(
                    exchange.route.site.name,
                    exchange.target,
                    200,
                    upstream.response_time - request_time,
                )
                answer = self._store_whole(
                    exchange.fill, exchange.plan, upstream, directives, lines, body, request_time
                )
                if answer is None:
                    work = self._led(request, self._handover(exchange, None))
                else:
                    delivered = self._delivered(request, answer)
        except Exception:
            log.exception("the miss path failed; the general path answers")
            self.inflight -= 1
            exchange.answered(None)
            return
        if work is not None:
            self._finish_later(request, work, exchange.answered)
            return
        self.inflight -= 1
        exchange.answered(delivered)

    def _handover(self, exchange: Exchange, passed: UpstreamResponse | None) -> Handover:
        """The led fill, handed to _led() and on to the general path."""
        plan, request = exchange.plan, exchange.request
        if plan.headers is exchange.forwarded:
            plan.headers = CIMultiDict(exchange.forwarded)
        return Handover(
            exchange.route, request.key, plan, exchange.fill, Role.LED, passed, request.started
        )

    async def _exchange_rest(
        self, exchange: Exchange, waiter: asyncio.Future[Any]
    ) -> Answer | Handover:
        """The end of a lean exchange whose response _exchanged() does not answer: an
        error (sent again where the sender would send it again), or a response the
        fill settles as the general path's fill would."""
        sender = self.fetcher.sender()
        fill, plan, target = exchange.fill, exchange.plan, exchange.target
        site = exchange.route.site.name
        connection = exchange.connection
        handed_on = False
        try:
            try:
                result = await waiter  # done: this does not wait
            except BaseException:
                connection.cancel()
                raise
            response_time = time.time()
            sender.answered(site, target, result.status, response_time - exchange.request_time)
            response = response_head(result, response_time)
            passed = await self.fetcher.settle(fill, plan, result, response, exchange.request_time)
            handed_on = fill.outcome is Outcome.STREAM  # fill_body releases it
        except UpstreamError as err:
            if err.detail not in STALE or connection.received:
                sender.failed(site, target, "GET", exchange.route.target, err)
            if err.detail in RETRYABLE:
                # Sent again as the sender would: the upstream closed the idle
                # connection, or it failed before any of its answer came.
                plan.headers = CIMultiDict(exchange.forwarded)
                passed = await self.fetcher.lead(fill, plan)
                handed_on = fill.outcome is Outcome.STREAM
            else:
                fill.settle(Outcome.ERROR, error=err)
                passed = None
        finally:
            if not handed_on:
                self.once.release(fill)
        return await self._led(exchange.request, self._handover(exchange, passed))

    def _store_whole(
        self,
        fill: Fill,
        plan: FetchPlan,
        upstream: Head,
        directives: Directives,
        lines: str,
        body: bytes,
        request_time: float,
    ) -> Answer | None:
        """Settle the fill with a whole response that _accept took and store it; the
        answer when it was stored and the hit path would serve it as it is."""
        fill.request_headers = plan.request_headers
        fill.came_whole = True
        fill.settle(Outcome.STREAM, head=upstream)
        fill.feed(body)
        fill.finish()
        try:
            stored, head = self.fetcher.store_as_it_came(
                plan.key, upstream, body, request_time, directives, lines
            )
            fill.stored = stored
        finally:
            self.once.release(fill)  # after the store: what waits for the key finds it
        if head is None:
            return None
        return Answer([head, body], upstream.status, len(body))

    def _accept(
        self,
        received: CIMultiDictProxy[str],
        status: int,
        reason: str,
        fields: list[tuple[str, str]],
        length: int,
        lines: str,
    ) -> tuple[Head, Directives, str] | None:
        """The head of a whole response this path stores and answers itself, with its
        directives and its field lines: a 200 of at most MISS_BODY_MAX bytes, stored
        as it came (no Vary, no Age, nothing withheld from later clients); None
        leaves it to the fill's general settling."""
        if status != 200 or length > MISS_BODY_MAX:
            return None
        for name, _ in fields:
            if name.lower() in KEPT_BACK:
                return None
        head = head_of(status, reason, CIMultiDict(fields), time.time())
        directives = self.fetcher.stored_as_it_came(head, length, received)
        return None if directives is None else (head, directives, lines)

    async def _led(self, request: PlainGet, handover: Handover) -> Answer | Handover:
        """A fill this request got through Steps or whose response the general path
        settles: answered here when it was stored whole as it came."""
        fill = handover.fill
        key = handover.key
        if handover.role is not Role.LED or fill.outcome is not Outcome.STREAM or fill.head is None:
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
        await fill.wait_released()
        entries = self.store.variants(key) if fill.stored else []
        if len(entries) != 1:
            return handover
        entry = entries[0]
        # Stored as it came (no field withheld from later clients, no Vary): what
        # the hit path would send is what this client is owed.
        if entry.headers is not upstream or entry.vary_names:
            return handover
        return miss_answer(entry) or handover


def miss_answer(entry: Entry) -> Answer | None:
    """A stored entry as the answer to the miss that stored it: the hit path's
    prepared head with a miss's Cache-Status; None when the hit path would not
    serve it as it is."""
    wire = entry.wire
    if wire is None:
        return None
    body = entry.body
    if entry.file is not None:
        return Answer(
            [wire.miss_head(), FileBody(entry.file[0], entry.file[1], body)],
            entry.status,
            len(body),
        )
    return Answer([wire.miss_head(), body], entry.status, len(body))
