"""The request state machine: one step per stage, each returning the next, and
the loop that drives a transaction through them (after Varnish's
cache_req_fsm.c; the fetch side is fetch.py).

    RECV ─┬─ GET/HEAD ─ HASH ─ LOOKUP ─┬─ stored ─ JUDGE ─┬─ fresh/stale allowed ─ DELIVER
          │                            │                  └─ validate ─┐
          │                            └─ none ──────────── FETCH ─ JOINED ─ FETCHED ─┬─ DELIVER
          │                                                    ↑                      ├─ STREAM ─┐
          └─ other methods, origin preconditions ─ PASS         └──────── broke off ───┴──────────┘
    any step ─ EdgeError ─ ERROR

A plain GET for a URL with nothing stored may take the miss path (misspath.py)
instead of RECV to FETCH; what it does not answer itself comes back at JOINED.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable

import aiohttp
from aiohttp import web

from pinedge.edge.http.cachecontrol import Directives, request_directives
from pinedge.edge.http.forwarding import TrustedPeers, client_address
from pinedge.edge.http.freshness import stale_if_error
from pinedge.edge.http.key import primary_key
from pinedge.edge.http.status import Fwd
from pinedge.edge.http.vary import secondary_key, vary_names
from pinedge.edge.node.clients import client_key
from pinedge.edge.node.config import EdgeConfig
from pinedge.edge.node.metrics import EdgeMetrics
from pinedge.edge.node.ratelimit import MISSES, REQUESTS, RateLimiter
from pinedge.edge.pipeline.collapse import Fill, Head, Once, Outcome, Role, TruncatedFill
from pinedge.edge.pipeline.deliver import Delivery, Headers, error_response
from pinedge.edge.pipeline.errors import EdgeError, UpstreamError
from pinedge.edge.pipeline.fetch import Fetcher
from pinedge.edge.pipeline.judge import Verdict, judge
from pinedge.edge.pipeline.outgoing import interim_to, upstream_age
from pinedge.edge.pipeline.passing import Passer
from pinedge.edge.pipeline.recv import Router
from pinedge.edge.pipeline.transaction import FetchPlan, Step, Transaction
from pinedge.edge.store.entry import Entry
from pinedge.edge.store.view import SharedStore
from pinedge.edge.upstream.client import UpstreamResponse
from pinedge.edge.upstream.sender import FAILING_STATUSES
from pinedge.edge.variants.derive import Variants

log = logging.getLogger("pinedge.edge")

BROKEN_BODY = (aiohttp.ClientError, TimeoutError, UpstreamError, TruncatedFill)
CLIENT_PREFERENCES = frozenset({"no-cache", "max-age", "min-fresh"})
FETCH_ATTEMPTS = 3  # a fill whose leader went away is competed for again, this often
SHARED_PAUSES = (0.0, 0.002, 0.01)  # seconds before each look for what another worker stored


class Steps:
    """A worker's request steps and what they share; `drive` runs a transaction."""

    def __init__(
        self,
        config: EdgeConfig,
        router: Router,
        store: SharedStore,
        once: Once,
        fetcher: Fetcher,
        passer: Passer,
        variants: Variants,
        delivery: Delivery,
        limiter: RateLimiter,
        trusted: TrustedPeers,
        metrics: EdgeMetrics,
    ) -> None:
        self.config = config
        self.router = router
        self.store = store
        self.once = once
        self.fetcher = fetcher
        self.passer = passer
        self.variants = variants
        self.delivery = delivery
        self.limiter = limiter
        self.trusted = trusted
        self.metrics = metrics
        self.prefixes = (config.client_ipv4_prefix, config.client_ipv6_prefix)
        self.table: dict[Step, Callable[[Transaction], Awaitable[Step]]] = {
            Step.RECV: self.recv,
            Step.HASH: self.hash,
            Step.LOOKUP: self.lookup,
            Step.JUDGE: self.judge,
            Step.FETCH: self.fetch,
            Step.JOINED: self.joined,
            Step.FETCHED: self.fetched,
            Step.STREAM: self.stream,
            Step.DELIVER: self.deliver,
            Step.PASS: self.pass_,
            Step.ERROR: self.error,
        }

    async def drive(self, tx: Transaction, step: Step = Step.RECV) -> web.StreamResponse:
        while step is not Step.DONE:
            try:
                step = await self.table[step](tx)
            except EdgeError as err:
                tx.error = err
                step = Step.ERROR
        assert tx.response is not None
        return tx.response

    # ── the steps ────────────────────────────────────────────────────────────

    async def recv(self, tx: Transaction) -> Step:
        request = tx.request
        tx.route = self.router.recv(request)
        self.charge(tx, REQUESTS)
        if request.method not in ("GET", "HEAD"):
            self.charge(tx, MISSES)
            tx.status.fwd = Fwd.METHOD
            return Step.PASS
        if "If-Match" in request.headers or "If-Unmodified-Since" in request.headers:
            # RFC 9111 §4.3.2: these preconditions are for the origin, not a cache.
            tx.status.detail = "origin-precondition"
            self.charge(tx, MISSES)
            tx.status.fwd = Fwd.REQUEST
            return Step.PASS
        return Step.HASH

    async def hash(self, tx: Transaction) -> Step:
        assert tx.route is not None
        tx.key = primary_key(tx.request.scheme, tx.route.host, tx.route.target)
        tx.directives = self.client_directives(tx.request)
        return Step.LOOKUP

    async def lookup(self, tx: Transaction) -> Step:
        tx.now = time.time()
        tx.entry, tx.other_variants = await self.find(tx.key, tx.request.headers)
        if tx.entry is None:
            tx.status.fwd = Fwd.VARY_MISS if tx.other_variants else Fwd.MISS
            return Step.FETCH
        return Step.JUDGE

    async def judge(self, tx: Transaction) -> Step:
        entry, now, status = tx.entry, tx.now, tx.status
        assert entry is not None and tx.directives is not None and tx.route is not None
        tx.verdict = judge(entry.fresh, now, tx.directives)
        if tx.verdict is Verdict.VALIDATE:
            stale = entry.ttl(now) <= 0 or entry.fresh.must_validate
            status.fwd = Fwd.STALE if stale else Fwd.REQUEST
            return Step.FETCH
        if tx.verdict is Verdict.STALE_REVALIDATE:
            self.fetcher.revalidate_in_background(tx.request, tx.route, tx.key, entry)
            status.detail = "stale-while-revalidate"
            status.served_stale = True
        status.ttl = entry.ttl(now)
        self.store.hit(entry)
        return Step.DELIVER

    async def fetch(self, tx: Transaction) -> Step:
        request = tx.request
        assert tx.route is not None and tx.directives is not None
        if tx.plan is None:
            if "only-if-cached" in tx.directives:
                raise EdgeError(504, "only-if-cached: no usable stored response", "only-if-cached")
            self.charge(tx, MISSES)
            if request.method == "HEAD" and tx.entry is None:
                return Step.PASS
            tx.plan = self.fetcher.plan(request, tx.route, tx.key, tx.entry, interim_to(request))
        tx.fill, tx.role, tx.passed = await self.lead_fill(
            tx.plan, request.headers, alone="Authorization" in request.headers
        )
        return Step.JOINED

    async def joined(self, tx: Transaction) -> Step:
        """How this request got its fill decides what comes next."""
        role, status = tx.role, tx.status
        tx.led = role is Role.LED
        if role is Role.SHARED:
            assert tx.fill is not None
            status.collapsed = True
            self.metrics.collapsed.inc()
            tx.entry, tx.now = tx.fill.entry, time.time()
            return Step.DELIVER
        if role is Role.TIMED_OUT:
            status.detail = "collapse-timeout"
            return Step.PASS
        if role is Role.ABANDONED:
            raise EdgeError(503, "the upstream fetch for this URL was abandoned", "fetch-abandoned")
        if role is Role.FOLLOWED:
            status.collapsed = True
            self.metrics.collapsed.inc()
        return Step.FETCHED

    async def fetched(self, tx: Transaction) -> Step:
        fill, plan, request, status = tx.fill, tx.plan, tx.request, tx.status
        assert fill is not None and plan is not None
        if fill.outcome is Outcome.ERROR:
            if self.stale_on_error(tx, plan.stale):
                return Step.DELIVER
            assert isinstance(fill.error, UpstreamError)
            raise fill.error
        if fill.outcome is Outcome.UPDATED:
            entry = fill.entry
            assert entry is not None
            if entry.vary_names and (
                secondary_key(entry.vary_names, request.headers) != entry.vary_values
            ):
                # The fill refreshed another Vary variant than this request selects.
                return Step.PASS
            tx.entry, tx.now = entry, time.time()
            status.ttl = entry.ttl(tx.now)
            if fill.head is not None:
                status.fwd_status = fill.head.status
            return Step.DELIVER
        head = fill.head
        assert head is not None
        status.fwd_status = head.status
        failing = head.status in FAILING_STATUSES and plan.stale is not None
        if failing and self.stale_on_error(tx, plan.stale):
            if tx.passed is not None:
                tx.passed.close()
            return Step.DELIVER
        if fill.outcome is Outcome.PASS:
            status.detail = fill.no_store
            passed, tx.passed = tx.passed, None
            if passed is None:
                return Step.PASS
            if "Range" in request.headers:
                passed.close()
                return Step.PASS
            tx.response = await self.passer.stream_upstream(
                request, head, passed, status, conditional=True
            )
            return Step.DONE
        if not tx.led and variant_differs(head, fill, request):
            return Step.PASS
        # Only a known length guarantees the body fits; a chunked body may still
        # outgrow max_object_size after the headers (and this claim) are sent.
        status.stored = tx.led and "Content-Length" in head.headers
        return Step.STREAM

    async def stream(self, tx: Transaction) -> Step:
        """Send the fill's body as it arrives; a fill that breaks off before anything
        reached this client is fetched again."""
        fill, plan, request, status = tx.fill, tx.plan, tx.request, tx.status
        assert fill is not None and plan is not None and fill.head is not None
        head = fill.head
        code = self.delivery.precondition(request, head.headers, head.status)
        if code is not None:
            tx.response = self.delivery.not_modified(code, head.headers, status, upstream_age(head))
            return Step.DONE
        wants_variant = self.variants.kind_of_type(head.headers) is not None
        if head.status == 200 and ("Range" in request.headers or wants_variant):
            # Ranges and variants are cut from the stored source: wait until it is.
            try:
                async for _chunk in fill.body(tx.handed_over):
                    pass
            except BROKEN_BODY:
                return self.refetch(tx)
            await fill.wait_released()
            entry, _ = await self.find(plan.key, request.headers)
            if entry is not None:
                tx.entry, tx.now = entry, time.time()
                return Step.DELIVER
        chunks = fill.body(tx.handed_over)
        try:
            # Nothing goes to the client before the first byte of the body has come:
            # an upstream that breaks off before it costs the client nothing.
            first = await anext(chunks, None)
        except BROKEN_BODY:
            await chunks.aclose()
            return self.refetch(tx)
        out = self.delivery.client_headers(head.headers)
        self.delivery.finish_headers(out, head.headers, status, head.status, upstream_age(head))
        response = web.StreamResponse(status=head.status, reason=head.reason, headers=out)
        await response.prepare(request)
        await self.passer.copy_body(request, response, _after(first, chunks), status)
        tx.response = response
        return Step.DONE

    async def deliver(self, tx: Transaction) -> Step:
        """Answer from a usable stored response: itself, or its variant for this request."""
        entry, request = tx.entry, tx.request
        assert entry is not None and tx.route is not None
        if entry.kind is not None and not tx.as_stored and request.method in ("GET", "HEAD"):
            tx.response = await self.variants.respond(request, tx.route.params, entry, tx.status)
        else:
            tx.response = self.delivery.from_entry(
                request, entry, tx.status, entry.age(tx.now), entry.fresh.no_cache_fields
            )
        return Step.DONE

    async def pass_(self, tx: Transaction) -> Step:
        assert tx.route is not None
        tx.response = await self.passer.pass_through(tx.request, tx.route, tx.status)
        return Step.DONE

    async def error(self, tx: Transaction) -> Step:
        err, request, status = tx.error, tx.request, tx.status
        assert err is not None
        status.detail = status.detail or err.detail
        status.generated = status.fwd is None
        log_error(request, err)
        response = error_response(self.config.name, err.status, err.reason, status, err.headers)
        if err.close or (request.body_exists and not request.content.is_eof()):
            # The body was not read: what follows it cannot be trusted to be a request.
            response.force_close()
        tx.response = response
        return Step.DONE

    # ── what the steps share ─────────────────────────────────────────────────

    async def lead_fill(
        self, plan: FetchPlan, request_headers: Headers, alone: bool = False
    ) -> tuple[Fill, Role, UpstreamResponse | None]:
        """The fill of `plan`'s key, how this request got it, and the response to
        stream when this request led a fill that will not be stored. `alone`: fetch
        without collapsing (a request whose answer is its own)."""
        passed: UpstreamResponse | None = None

        async def make(fill: Fill) -> bool:
            nonlocal passed
            passed = await self.fetcher.lead(fill, plan)
            return fill.outcome is Outcome.STREAM

        async def stored() -> Entry | None:
            # Another worker stored it, and told the owner first; the owner may still
            # have that message to read when this one's question comes.
            for pause in SHARED_PAUSES:
                await asyncio.sleep(pause)
                entry, others = await self.find(plan.key, request_headers, told_stored=True)
                if entry is not None or others:
                    break
            return entry if entry is not None and entry.ttl(time.time()) > 0 else None

        fill, role = await self.once(plan.key, make, stored, attempts=FETCH_ATTEMPTS, alone=alone)
        return fill, role, passed

    def charge(self, tx: Transaction, which: int) -> None:
        """Spend one of the client's tokens of the site's `which` budget; over it, 429."""
        assert tx.route is not None
        site = tx.route.site.name
        if site not in self.limiter.budgets:
            return
        request = tx.request
        address = client_address(request.remote, request.headers, self.trusted)
        wait = self.limiter.charge(site, client_key(address, *self.prefixes), which)
        if wait:
            raise self.limiter.refusal(site, which, wait)

    def client_directives(self, request: web.BaseRequest) -> Directives:
        """The request's cache directives this node honours. no-cache, max-age and
        min-fresh only say what the client "prefers" (RFC 9111 §5.2.1) and would let
        any reload bypass the cache, so they count only with client_cache_control."""
        directives = request_directives(request.headers)
        if self.config.client_cache_control or not directives.items:
            return directives
        kept = {k: v for k, v in directives.items.items() if k not in CLIENT_PREFERENCES}
        return Directives(kept) if len(kept) != len(directives.items) else directives

    async def find(
        self, key: str, request_headers: Headers, told_stored: bool = False
    ) -> tuple[Entry | None, bool]:
        """(the stored variant a request with these fields selects, whether the URL
        had other variants)."""
        variants = self.store.variants(key) or await self.store.load(key, told_stored)
        for entry in variants:
            if secondary_key(entry.vary_names, request_headers) == entry.vary_values:
                return entry, False
        return None, bool(variants)

    def stale_on_error(self, tx: Transaction, stale: Entry | None) -> bool:
        """Serve the stored response instead of an upstream failure, where RFC 5861
        or grace allow: True when `tx` now delivers it."""
        if stale is None or stale.fresh.must_validate:
            return False
        now = time.time()
        staleness = -stale.ttl(now)
        if staleness > 0:
            if not stale.fresh.may_serve_stale:
                return False
            assert tx.directives is not None  # HASH set them before any fetch
            allowed = max(stale_if_error(stale.fresh.directives, tx.directives), self.config.grace)
            if staleness > allowed:
                return False
        tx.status.detail = "stale-if-error"
        tx.status.served_stale = True
        tx.status.ttl = stale.ttl(now)
        tx.entry, tx.now = stale, now
        tx.as_stored = True
        return True

    def refetch(self, tx: Transaction) -> Step:
        """The fill's upstream broke off before anything reached this client: fetch
        again (the broken upstream's breaker has counted it, and the key's next
        upstream is asked if it is down); a second break goes through as a pass."""
        assert tx.plan is not None
        log.warning(
            "%s %s: the fill broke off; asking upstream again", tx.request.method, tx.plan.target
        )
        tx.status.stored = False
        if tx.refetched:
            return Step.PASS
        tx.refetched = True
        tx.status.detail = "refetched"
        return Step.FETCH


def variant_differs(head: Head, fill: Fill, request: web.BaseRequest) -> bool:
    names = vary_names(head.headers)
    if not names:
        return names is None
    return secondary_key(names, request.headers) != secondary_key(names, fill.request_headers)


def log_error(request: web.BaseRequest, err: EdgeError) -> None:
    level = logging.WARNING if err.status >= 500 else logging.INFO
    log.log(
        level,
        "%s %s -> %d %s%s",
        request.method,
        request.raw_path[:200],
        err.status,
        err.reason,
        f" ({err.log})" if err.log else "",
    )


async def _after(
    first: bytes | None, rest: AsyncGenerator[bytes, None]
) -> AsyncGenerator[bytes, None]:
    """`first`, then the rest of the chunks (closing them when closed)."""
    try:
        if first is not None:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()
