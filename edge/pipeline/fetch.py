"""The fetch side, apart from the client's request (as Varnish keeps its fetch
state machine apart): send the fill's request, settle the fill with what came
back, read the body into it and store the response.

    send ─┬─ 304 for the stale entry ──── refresh it ── UPDATED
          ├─ failed ──────────────────── ERROR
          ├─ not storable ────────────── PASS (the response is the leader's to stream)
          └─ storable ─ STREAM ─ body ── store ── release
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any, cast

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from pinedge.edge.http.cachecontrol import Directives, request_directives, response_directives
from pinedge.edge.http.forwarding import TrustedPeers
from pinedge.edge.http.headers import without_hop_by_hop
from pinedge.edge.http.storable import fields_not_to_store, no_store_reason
from pinedge.edge.http.validation import not_modified_applies, upstream_validators
from pinedge.edge.http.vary import secondary_key, vary_names
from pinedge.edge.node.config import EdgeConfig
from pinedge.edge.node.metrics import EdgeMetrics
from pinedge.edge.pipeline.collapse import Fill, Head, Once, Outcome
from pinedge.edge.pipeline.errors import UpstreamError
from pinedge.edge.pipeline.outgoing import forwarded_fields, response_head
from pinedge.edge.pipeline.transaction import FetchPlan, Route
from pinedge.edge.store.entry import Entry, FreshnessSettings, tags_in
from pinedge.edge.store.objectfile import Meta
from pinedge.edge.store.view import SharedStore
from pinedge.edge.upstream.client import Interim, UpstreamResponse, body_error
from pinedge.edge.upstream.sender import FAILING_STATUSES, Sender

log = logging.getLogger("pinedge.edge")

CLIENT_VALIDATORS = ("If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since")
VALIDATORS_SENT = ("If-None-Match", "If-Modified-Since")  # what a refresh asks with
RANGE_FIELDS = ("Range", "If-Range")
OVERSIZED_WINDOW = 4 * 1024 * 1024  # bytes a too-large body may run ahead of its reader


class Fetcher:
    """A worker's fills: what they send, how they settle, and what they store."""

    def __init__(
        self,
        config: EdgeConfig,
        settings: FreshnessSettings,
        store: SharedStore,
        sender: Callable[[], Sender],
        once: Once,
        prepare: Callable[[Entry], None],
        miss_head_for: Callable[[str, Head, int, Directives, str], bytes | None],
        trusted: TrustedPeers,
        metrics: EdgeMetrics,
        run_in_background: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        """`sender` gives the node's sender once it has started; `prepare` readies an
        entry for serving (its variant kind and the hit path's head); `miss_head_for`
        is the head of the answer to a miss that stored a response as it came
        without Vary, before its entry is made (Edge.miss_head_for)."""
        self.config = config
        self.settings = settings
        self.store = store
        self.sender = sender
        self.once = once
        self.prepare = prepare
        self.miss_head_for = miss_head_for
        self.trusted = trusted
        self.metrics = metrics
        self.run_in_background = run_in_background

    def plan(
        self,
        request: web.Request,
        route: Route,
        key: str,
        stale: Entry | None,
        interim: Interim | None = None,
    ) -> FetchPlan:
        return self.plan_for(
            request.headers, request.remote, request.scheme, route, key, stale, interim
        )

    def plan_for(
        self,
        request_headers: CIMultiDictProxy[str],
        peer: str | None,
        scheme: str,
        route: Route,
        key: str,
        stale: Entry | None,
        interim: Interim | None = None,
    ) -> FetchPlan:
        """The fill's request for a client's request, known by its fields, its peer's
        address and its scheme."""
        headers = forwarded_fields(
            request_headers,
            peer,
            scheme,
            route.host,
            self.trusted,
            self.config.name,
            (*CLIENT_VALIDATORS, *RANGE_FIELDS),
        )
        if stale is not None:
            headers.update(upstream_validators(stale.headers))
        return FetchPlan(key, route, route.target, headers, request_headers, stale, interim)

    async def send(
        self, plan: FetchPlan, interim: Interim | None
    ) -> tuple[UpstreamResponse, float, float]:
        route = plan.route
        response, request_time, response_time, plan.upstream = await self.sender().send(
            route.site, route.host, "GET", plan.target, plan.headers, None, plan.key, interim
        )
        return response, request_time, response_time

    async def lead(self, fill: Fill, plan: FetchPlan) -> UpstreamResponse | None:
        """Send the fill's request and settle it; a response left for the caller to stream
        is returned when it will not be stored (Outcome.PASS)."""
        stale = plan.stale
        try:
            response, request_time, response_time = await self.send(plan, plan.interim)
            head = response_head(response, response_time)
            if (
                head.status == 304
                and stale is not None
                and not not_modified_applies(stale.headers, head.headers)
            ):
                # RFC 9111 §4.3.4: a 304 that selects no stored response updates
                # nothing; the request is still owed an answer, so ask again
                # without conditions.
                response.release()
                log.warning(
                    "%s: the 304 from %s matches no stored response; fetching again",
                    plan.key,
                    plan.upstream,
                )
                for name in VALIDATORS_SENT:
                    plan.headers.popall(name, None)
                response, request_time, response_time = await self.send(plan, None)
                head = response_head(response, response_time)
        except UpstreamError as err:
            fill.settle(Outcome.ERROR, error=err)
            return None
        return await self.settle(fill, plan, response, head, request_time)

    async def settle(
        self,
        fill: Fill,
        plan: FetchPlan,
        response: UpstreamResponse,
        head: Head,
        request_time: float,
    ) -> UpstreamResponse | None:
        """Settle the fill with the response `plan`'s request got (lead's, after
        the send)."""
        stale = plan.stale
        fill.request_headers = plan.request_headers
        if head.status == 304 and stale is not None:
            response.release()
            if not not_modified_applies(stale.headers, head.headers):
                bad = UpstreamError(
                    502, "the origin answered an unconditional request with 304", "bad-304"
                )
                fill.settle(Outcome.ERROR, error=bad)
                return None
            await self.refresh(fill, plan, stale, head, request_time)
            return None
        reason = self.why_not_store(head, response.content_length, plan.request_headers, stale)
        if reason is not None:
            self.metrics.not_stored.inc(reason)
            fill.no_store = reason
            fill.settle(Outcome.PASS, head=head)
            return response
        fill.came_whole = response.content.is_eof()
        fill.settle(Outcome.STREAM, head=head)
        self.run_in_background(self.fill_body(fill, plan, head, response, request_time))
        return None

    async def refresh(
        self, fill: Fill, plan: FetchPlan, stale: Entry, head: Head, request_time: float
    ) -> None:
        """A 304 for the stored response: update it and store it in place (RFC 9111 §4.3.4)."""
        entry = stale.updated(head.headers, request_time, head.response_time, self.settings)
        self.prepare(entry)
        try:
            await self.store.put(entry)  # same variant: replaces the stale one
        except OSError as exc:
            self.metrics.not_stored.inc("store-error")
            log.error("could not store the refreshed %s: %s", plan.key, exc)
        fill.settle(Outcome.UPDATED, head=head, entry=entry)

    def why_not_store(
        self,
        head: Head,
        length: int | None,
        request_headers: CIMultiDictProxy[str],
        stale: Entry | None = None,
        entry_directives: Directives | None = None,
    ) -> str | None:
        """Why a response with this head and body length is not stored, or None;
        `entry_directives`: its directives, when the caller has read them."""
        if head.status in FAILING_STATUSES and stale is not None:
            return "error-over-stale"
        if entry_directives is None:
            entry_directives, _ = response_directives(head.headers, self.settings.targeted_fields)
        reason = no_store_reason(
            "GET",
            head.status,
            request_headers,
            head.headers,
            entry_directives,
            request_directives(request_headers),
            heuristic=self.config.heuristic_fraction > 0,
            cache_set_cookie=self.config.cache_set_cookie,
        )
        if reason is not None:
            return str(reason)
        if length is not None and length > self.config.max_object_size:
            return "too-large"
        return None

    def stored_as_it_came(
        self, head: Head, length: int, request_headers: CIMultiDictProxy[str]
    ) -> Directives | None:
        """The response's directives when a response with this head and a body of
        `length` bytes, the answer to a request with these fields and nothing
        stored, is stored with every field it came with (why_not_store says yes; no
        field is withheld); else None."""
        directives, _ = response_directives(head.headers, self.settings.targeted_fields)
        if fields_not_to_store(directives):
            return None
        if self.why_not_store(head, length, request_headers, None, directives) is not None:
            return None
        return directives

    async def fill_body(
        self,
        fill: Fill,
        plan: FetchPlan,
        head: Head,
        response: UpstreamResponse,
        request_time: float,
    ) -> None:
        """Read the upstream body into the fill, then store it (in the background, so
        the fill completes for followers and the store even if the leader's client left)."""
        limit = self.config.max_object_size
        storing = True
        try:
            async for chunk in response.content.iter_any():
                fill.feed(chunk)
                if storing and fill.received > limit:
                    storing = False
                    self.metrics.not_stored.inc("too-large")
                if not storing:
                    # Too large to store: keep only what the readers still need,
                    # and read no faster than the slowest of them.
                    fill.let_go()
                    await fill.until_read(OVERSIZED_WINDOW)
                    if not fill.positions:
                        break  # nobody is reading and nothing will be stored
        except (aiohttp.ClientError, TimeoutError, asyncio.IncompleteReadError) as exc:
            err = body_error(exc)
            self.metrics.upstream_errors.inc(plan.route.site.name, plan.upstream, err.detail)
            log.warning("upstream body for %s broke off: %s", plan.target, err.log)
            fill.finish(err)
            self.once.release(fill)
            return
        finally:
            response.release()
        fill.finish()
        if storing:
            body = b"".join(cast("list[bytes]", fill.chunks))  # kept whole while storing
            fill.stored = await self.store_response(
                plan.key, plan.request_headers, head, body, request_time
            )
        self.once.release(fill)

    async def store_response(
        self,
        key: str,
        request_headers: CIMultiDictProxy[str],
        head: Head,
        body: bytes,
        request_time: float,
    ) -> bool:
        """Store a response whose body came whole: whether it was stored."""
        names = vary_names(head.headers)
        if names is None:
            return False
        directives, _ = response_directives(head.headers, self.settings.targeted_fields)
        private = fields_not_to_store(directives)
        headers = head.headers
        if private:
            headers = CIMultiDictProxy(without_hop_by_hop(headers, also=private))
        vary = (names, secondary_key(names, request_headers))
        times = (request_time, head.response_time)
        entry = Entry.build(
            key, vary, head.status, head.reason, headers, body, times, self.settings
        )
        self.prepare(entry)
        try:
            return await self.store.put(entry)
        except OSError as exc:
            self._not_stored(key, exc)
            return False

    def store_as_it_came(
        self,
        key: str,
        head: Head,
        body: bytes,
        request_time: float,
        directives: Directives,
        lines: str,
    ) -> tuple[bool, bytes | None]:
        """Store a whole response that stored_as_it_came() took (no Vary, no field
        withheld, a body the loop writes) without making its entry: the first
        request that asks for it again reads it back. Whether it was stored, and
        the head of the miss's answer, the hit path's with a miss's Cache-Status
        (None where the hit path would not send it as it is); `lines`: its field
        lines as they came (whole.py's)."""
        headers = head.headers
        times = (request_time, head.response_time)
        try:
            self.store.put_as_it_came(
                key, head.status, head.reason, headers, body, times, tags_in(headers)
            )
        except OSError as exc:
            self._not_stored(key, exc)
            return False, None
        return True, self.miss_head_for(key, head, len(body), directives, lines)

    def _not_stored(self, key: str, exc: OSError) -> None:
        self.metrics.not_stored.inc("store-error")
        log.error("could not store %s: %s", key, exc)

    def entry_from_file(self, meta: Meta, body: bytes) -> Entry:
        """An Entry for a stored file (another worker's, or from before a restart)."""
        headers = CIMultiDictProxy(CIMultiDict(meta.headers))
        vary = (meta.vary_names, meta.vary_values)
        times = (meta.request_time, meta.response_time)
        entry = Entry.build(
            meta.key, vary, meta.status, meta.reason, headers, body, times, self.settings
        )
        if meta.purged_at is not None:  # soft-purged: stale from that moment on
            entry.fresh = replace(
                entry.fresh,
                lifetime=min(entry.fresh.lifetime, entry.age(meta.purged_at)),
            )
        self.prepare(entry)
        return entry

    def revalidate_in_background(
        self, request: web.Request, route: Route, key: str, entry: Entry
    ) -> None:
        """stale-while-revalidate: refresh `entry` unless this worker already fetches it."""
        fill = self.once.lead_if_idle(key)
        if fill is None:
            return
        self.run_in_background(self.revalidate(fill, self.plan(request, route, key, entry)))

    async def revalidate(self, fill: Fill, plan: FetchPlan) -> None:
        try:
            passed = await self.lead(fill, plan)
            if passed is not None:
                passed.close()
                if fill.head is not None and fill.head.status not in FAILING_STATUSES:
                    await self.store.remove(plan.key)
        finally:
            if fill.outcome is not Outcome.STREAM:
                self.once.release(fill)
