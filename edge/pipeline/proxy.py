"""The edge's request pipeline, in the order a request goes through it.

    handle ─ recv ─┬─ GET/HEAD ─ hash ─ lookup ─┬─ fresh ─────────── deliver (hit)
                   │                            ├─ stale, allowed ─── deliver, revalidate
                   │                            └─ miss / validate ── fetch ─ store ─ deliver
                   └─ other methods ─ pass (bodies streamed both ways) ─ invalidate

Each stage is a method whose name says where it stands; Cache-Status is
built from a CacheStatus record the stages fill in, never by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.http import HttpVersion11 as HTTP11
from aiohttp.http_parser import RawRequestMessage
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from pinedge.edge.http.cachecontrol import Directives, request_directives, response_directives
from pinedge.edge.http.forwarding import TrustedPeers, client_address, forward
from pinedge.edge.http.freshness import (
    client_accepts_stale,
    client_requires_validation,
    format_http_date,
    stale_if_error,
)
from pinedge.edge.http.headers import without_hop_by_hop
from pinedge.edge.http.key import check_target, primary_key, split_host
from pinedge.edge.http.negotiate import ACCEPT_CH
from pinedge.edge.http.status import CacheStatus, Fwd
from pinedge.edge.http.storable import fields_not_to_store, no_store_reason
from pinedge.edge.http.validation import not_modified_applies, upstream_validators
from pinedge.edge.http.vary import secondary_key, vary_names
from pinedge.edge.node.clients import ClientTable, client_key
from pinedge.edge.node.config import EdgeConfig, SiteConfig
from pinedge.edge.node.metrics import EdgeMetrics
from pinedge.edge.node.ratelimit import MISSES, QUIET, REQUESTS, RateLimiter
from pinedge.edge.pipeline.collapse import CollapseTable, Fill, Head, Outcome, TruncatedFill
from pinedge.edge.pipeline.deliver import (
    SLICE,
    Delivery,
    FileBody,
    Wire,
    error_bytes,
    error_response,
    send_sliced,
)
from pinedge.edge.pipeline.errors import EdgeError, UpstreamError
from pinedge.edge.store.entry import Entry, FreshnessSettings
from pinedge.edge.store.objectfile import Meta
from pinedge.edge.store.owner import StoreOwner
from pinedge.edge.store.view import SharedStore
from pinedge.edge.upstream.client import Interim, Timeouts, Upstream, body_error
from pinedge.edge.upstream.routes import BreakerState, Target, Upstreams
from pinedge.edge.variants.derive import Variants, derived_key, split_image_params

log = logging.getLogger("pinedge.edge")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
IDEMPOTENT_METHODS = SAFE_METHODS | {"PUT", "DELETE"}
# Content in these has no meaning (RFC 9110 §9.3.1-2): it is read and dropped, never sent on.
BODILESS_METHODS = frozenset({"GET", "HEAD"})
# Connection failures: the request can be sent again to another upstream when it
# is idempotent (RFC 9110 §9.2.2), as nothing of its answer reached the client.
RETRYABLE = frozenset(
    {"upstream-connect", "upstream-connect-timeout", "upstream-closed", "upstream-error"}
)
# Answers that count against an origin's breaker (a shield's 5xx relays its origin's).
BREAKER_STATUSES = frozenset({500, 502, 503, 504})
BROKEN_BODY = (aiohttp.ClientError, TimeoutError, UpstreamError, TruncatedFill)
ERROR_STATUSES = frozenset({500, 502, 503, 504})
CLIENT_VALIDATORS = ("If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since")
VALIDATORS_SENT = ("If-None-Match", "If-Modified-Since")  # what a refresh asks with
RANGE_FIELDS = ("Range", "If-Range")
CLIENT_PREFERENCES = frozenset({"no-cache", "max-age", "min-fresh"})
# A request carrying any of these needs more than "is it stored and fresh?".
FAST_PATH_BLOCKERS = frozenset(
    name.lower().encode()
    for name in (
        "If-None-Match",
        "If-Modified-Since",
        "If-Match",
        "If-Unmodified-Since",
        "If-Range",
        "Range",
        "Cache-Control",
        "Pragma",
        "Content-Length",
        "Transfer-Encoding",
    )
)
# The hit path remembers how it routed this many (Host, target) pairs, about 350
# bytes each; when full it starts again: the URLs that repeat are soon back.
FAST_KEYS_MAX = 8192
OVERSIZED_WINDOW = 4 * 1024 * 1024  # bytes a too-large body may run ahead of its reader
FAST_TARGET_MAX = 1024  # longer targets are not remembered (bounds the memo's bytes)
PLAIN_MAX = 4096  # larger requests go to the general parser and its limits
FAST_CLASS = {code: f"{code // 100}xx" for code in range(100, 600)}
UNKNOWN = object()  # a fast_keys miss, distinct from None (known not to be fast-servable)
PLAIN_HEAD = re.compile(
    rb"(GET|HEAD) (/[!-~]*) HTTP/1\.1\r\n((?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t -~]*\r\n){0,15})\r\n"
)
PLAIN_FIELD = re.compile(
    rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[\t ]*([!-~](?:[\t -~]*[!-~])?|)[\t ]*\r\n"
)
PLAIN_REFUSED = FAST_PATH_BLOCKERS | {b"connection", b"expect", b"upgrade", b"te"}


def plain_request(data: bytes) -> tuple[bool, bytes, str, list[tuple[bytes, bytes]]] | None:
    """(HEAD?, Host, target, fields) when `data` is exactly one bodiless GET/HEAD in
    plain HTTP/1.1 (visible ASCII, at most 15 fields, Host exactly once, none that
    changes how the request is answered); None for anything else."""
    if len(data) > PLAIN_MAX:
        return None
    match = PLAIN_HEAD.fullmatch(data)
    if match is None:
        return None
    host = None
    fields = []
    for name, value in PLAIN_FIELD.findall(match.group(3)):
        lowered = name.lower()
        if lowered in PLAIN_REFUSED:
            return None
        if lowered == b"host":
            if host is not None:
                return None
            host = value
        fields.append((name, value))
    if host is None:
        return None  # RFC 9112 §3.2: the general path answers 400
    return match.group(1) == b"HEAD", host, match.group(2).decode("ascii"), fields


class Verdict(Enum):
    """What a stored response can do for this request."""

    FRESH = "fresh"
    STALE_ALLOWED = "stale-allowed"  # the client's max-stale accepts it
    STALE_REVALIDATE = "stale-while-revalidate"
    VALIDATE = "validate"


@dataclass(frozen=True, slots=True)
class Route:
    """Where recv sends a request: its site, normalised host and origin-form target."""

    site: SiteConfig
    host: str
    target: str
    params: dict[str, str] = field(default_factory=dict)  # the edge's own image parameters


@dataclass(slots=True)
class FetchPlan:
    """An upstream fetch that fills the cache, prepared before any waiting."""

    key: str
    route: Route
    target: str  # path and query sent upstream
    headers: CIMultiDict[str]
    request_headers: CIMultiDictProxy[str]
    stale: Entry | None
    interim: Interim | None = None  # passes interim responses on to the client who asked
    upstream: str = ""  # the label of the upstream that answered


class Edge:
    """One edge node's state and its request handler."""

    def __init__(
        self,
        config: EdgeConfig,
        store: SharedStore,
        owner: StoreOwner | None,
        clients: ClientTable,
    ) -> None:
        """`owner` is the store's owner when it lives in this process (its figures
        go into this node's metrics); with workers, the supervisor reports them.
        `clients` is the node's shared table of client connections and budgets."""
        self.config = config
        self.name = config.name
        self.sites = {host: site for site in config.site_list() for host in site.hosts}
        self.trusted = TrustedPeers.parse(config.trusted_proxies)
        self.upstreams = Upstreams(
            config.shield,
            {site.name: site.pool() for site in config.site_list()},
            config.shield_fallback == "origin",
            config.breaker_failures,
            config.breaker_cooldown,
        )
        self.store = store
        self.fills = CollapseTable(on_release=self.release_node_fetch)
        self.settings = FreshnessSettings(
            tuple(config.targeted_fields), config.heuristic_fraction, config.heuristic_max
        )
        self.delivery = Delivery(
            self.name,
            tuple(config.targeted_fields),
            ACCEPT_CH if config.images else None,
            shield=config.role == "shield",
        )
        self.variants = Variants(self, config)
        self.inflight = 0
        self.metrics = EdgeMetrics(owner, inflight=lambda: self.inflight)
        self.upstream: Upstream | None = None
        self.background: set[asyncio.Task[None]] = set()
        self.fast_keys: dict[tuple[bytes | None, str], object] = {}
        self.fast_hits: dict[int, int] = {}
        self.fast_bytes = 0
        self.metrics.registry.collectors.append(self.count_fast_hits)
        self.metrics.watch_breakers(self.upstreams.all())
        self.limiter = RateLimiter(
            clients, config.site_list(), config.rate_limit, self.metrics.limited
        )
        self.prefixes = (config.client_ipv4_prefix, config.client_ipv6_prefix)

    async def start(self) -> None:
        config = self.config
        self.upstream = Upstream(
            Timeouts(config.connect_timeout, config.first_byte_timeout, config.total_timeout)
        )
        if config.probe_interval > 0:
            self.run_in_background(self.probe_upstreams())
        if self.limiter.budgets:
            self.run_in_background(self.sweep_limits())

    def run_in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def sweep_limits(self) -> None:
        while True:
            await asyncio.sleep(QUIET)
            self.limiter.sweep()

    async def close(self) -> None:
        self.variants.close()
        for task in list(self.background):
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        if self.upstream is not None:
            await self.upstream.close()

    # ── handle: the whole request ────────────────────────────────────────────

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        status = CacheStatus()
        self.inflight += 1
        try:
            route = self.recv(request)
            self.charge(request, route, REQUESTS)
            if request.method in ("GET", "HEAD"):
                response = await self.lookup_and_deliver(request, route, status)
            else:
                self.charge(request, route, MISSES)
                response = await self.pass_through(request, route, status, Fwd.METHOD)
            label = status.label()
        except EdgeError as err:
            label = "error"
            status.detail = status.detail or err.detail
            status.generated = status.fwd is None
            log_error(request, err)
            response = error_response(self.name, err.status, err.reason, status, err.headers)
            if err.close or (request.body_exists and not request.content.is_eof()):
                # The body was not read: what follows it cannot be trusted to be a request.
                response.force_close()
        finally:
            self.inflight -= 1
        if "Transfer-Encoding" in request.headers:
            # aiohttp's C parser hands a chunked body's last trailer field to the next
            # request's head: nothing more is read from this connection.
            response.force_close()
        self.metrics.requests.inc(label, f"{response.status // 100}xx")
        self.metrics.request_duration.observe(time.monotonic() - started, label)
        body = getattr(response, "body", None)
        if isinstance(body, bytes | bytearray):
            self.metrics.response_bytes.inc(label, amount=len(body))
            if len(body) > SLICE and type(response) is web.Response:
                return await send_sliced(request, response, body)
        return response

    def limiter_refusal_bytes(self, site: str, wait: float) -> bytes:
        """The hit path's 429: the same answer handle() gives, the connection kept."""
        err = self.limiter.refusal(site, REQUESTS, wait)
        self.metrics.requests.inc("error", "4xx")
        return error_bytes(self.name, err.status, err.reason, err.detail, err.headers, False)

    def charge(self, request: web.Request, route: Route, which: int) -> None:
        """Spend one of the client's tokens of the site's `which` budget; over it, 429."""
        site = route.site.name
        if site not in self.limiter.budgets:
            return
        address = client_address(request.remote, request.headers, self.trusted)
        client = client_key(address, *self.prefixes)
        wait = self.limiter.charge(site, client, which)
        if wait:
            raise self.limiter.refusal(site, which, wait)

    # ── the hit path: a parsed request, a fresh stored response, bytes out ─────

    def fast_hit(
        self, message: RawRequestMessage, client: str | None
    ) -> list[bytes | FileBody] | None:
        """The response to a plain GET/HEAD that a fresh stored entry answers as is,
        as buffers to write; None sends the request down handle() instead.

        It decides exactly as recv, lookup and judge would for such a request
        (no preconditions, ranges, request directives or body) and sends the bytes
        deliver would; anything else takes the general path."""
        method = message.method
        if (method != "GET" and method != "HEAD") or message.version != HTTP11:
            return None
        if message.should_close or not message.path.startswith("/"):
            return None
        host = None
        for name, value in message.raw_headers:
            lowered = name.lower()
            if lowered == b"host":
                host = value
            elif lowered in FAST_PATH_BLOCKERS:
                return None
        return self.serve_stored(method == "HEAD", host, message.path, message.headers, client)

    def fast_hit_bytes(self, data: bytes, client: str | None) -> list[bytes | FileBody] | None:
        """fast_hit for a buffer holding exactly one plain request, read without the
        general parser; anything it does not fully understand returns None (and the
        bytes then go to the general parser as they are)."""
        request = plain_request(data)
        if request is None:
            return None
        head_only, host, target, fields = request
        return self.serve_stored(head_only, host, target, fields, client)

    def serve_stored(
        self,
        head_only: bool,
        host: bytes | None,
        target: str,
        headers: CIMultiDictProxy[str] | list[tuple[bytes, bytes]],
        client: str | None,
    ) -> list[bytes | FileBody] | None:
        known = self.fast_keys.get((host, target), UNKNOWN)
        found = self.fast_key(host, target) if known is UNKNOWN else known
        if found is None:
            return None
        key, params, site = found  # type: ignore[misc]
        for entry in self.store.variants(key):
            if entry.vary_names:
                if isinstance(headers, list):
                    headers = CIMultiDictProxy(
                        CIMultiDict((k.decode("latin-1"), v.decode("latin-1")) for k, v in headers)
                    )
                if secondary_key(entry.vary_names, headers) != entry.vary_values:
                    continue
            if entry.kind is not None:
                entry = self.stored_variant(entry, params, headers)  # type: ignore[assignment]
                if entry is None:
                    return None
            wire = entry.wire
            fresh = entry.fresh
            age = fresh.initial_age + time.time() - fresh.response_time
            if wire is None or age >= fresh.lifetime:
                return None
            if site in self.limiter.request_sites:
                if client is None:
                    return None  # behind a trusted peer: the client is in X-Forwarded-For
                wait = self.limiter.charge(site, client, REQUESTS)
                if wait:
                    return [self.limiter_refusal_bytes(site, wait)]
            self.store.hit(entry)
            self.fast_hits[entry.status] = self.fast_hits.get(entry.status, 0) + 1
            head = wire.response_head(age, fresh.lifetime - age)
            if head_only:
                return [head]
            self.fast_bytes += len(entry.body)
            if entry.file is not None:
                return [head, FileBody(entry.file[0], entry.file[1], entry.body)]
            return [head, entry.body]
        return None

    def stored_variant(
        self,
        source: Entry,
        params: tuple[tuple[str, str], ...],
        headers: CIMultiDictProxy[str] | list[tuple[bytes, bytes]],
    ) -> Entry | None:
        """The stored variant of `source` this request gets, if it is in memory and
        the hit path can tell which it is; otherwise None (the general path)."""
        if source.fresh.lifetime <= source.age(time.time()):
            return None
        fields: dict[str, str] = {}
        if isinstance(headers, list):
            for name, value in headers:
                lowered = name.lower()
                if lowered.startswith(b"sec-ch-"):
                    return None
                if lowered in (b"accept", b"accept-encoding"):
                    text = value.decode("latin-1")
                    name_text = lowered.decode()
                    fields[name_text] = (
                        f"{fields[name_text]}, {text}" if name_text in fields else text
                    )
        else:
            if any(name.lower().startswith("sec-ch-") for name in headers):
                return None
            for name in ("accept", "accept-encoding"):
                if name in headers:
                    fields[name] = ", ".join(headers.getall(name))
        suffix = self.variants.fast_suffix(source, params, fields)
        if suffix is None:
            return None
        derived = self.store.variants(derived_key(source, suffix))
        return derived[0] if derived else None

    def count_parse_error(self, status: int) -> None:
        """A request the parser refused is still a request answered (with an error)."""
        self.metrics.requests.inc("error", f"{status // 100}xx")

    def count_fast_hits(self) -> None:
        """Fold the hit path's plain counters into the metrics (run when scraped)."""
        hits, self.fast_hits = self.fast_hits, {}
        for code, count in hits.items():
            self.metrics.requests.inc("hit", FAST_CLASS[code], amount=count)
        if self.fast_bytes:
            self.metrics.response_bytes.inc("hit", amount=self.fast_bytes)
            self.fast_bytes = 0

    def fast_key(
        self, host: bytes | None, raw_target: str
    ) -> tuple[str, tuple[tuple[str, str], ...], str] | None:
        """(cache key, the edge's image parameters, site) for a Host and request
        target as recv would route them, or None where recv would not simply accept
        them; remembered, since the same few URLs repeat."""
        found: tuple[str, tuple[tuple[str, str], ...], str] | None = None
        if host is not None:
            try:
                route = self.route(host.decode("latin-1"), raw_target)
            except EdgeError:
                pass
            else:
                key = primary_key("http", route.host, route.target)
                found = (key, tuple(sorted(route.params.items())), route.site.name)
        if len(raw_target) <= FAST_TARGET_MAX:
            if len(self.fast_keys) >= FAST_KEYS_MAX:
                self.fast_keys.clear()
            self.fast_keys[(host, raw_target)] = found
        return found

    # ── recv: is this a request we serve at all? ─────────────────────────────

    def recv(self, request: web.Request) -> Route:
        if request.method == "CONNECT":
            # RFC 9110 §9.3.6: what follows a CONNECT head is tunnel data to one
            # reader and the next request to another; an edge is no tunnel.
            raise EdgeError(501, "CONNECT is not supported here", "method", close=True)
        if request.version >= aiohttp.HttpVersion11 and "Host" not in request.headers:
            raise EdgeError(400, "an HTTP/1.1 request needs a Host header", "no-host")
        check_framing(request)
        length = request.content_length
        if length is not None and length > self.config.max_request_body:
            raise EdgeError(
                413,
                f"request body of {length} bytes is over the limit of "
                f"{self.config.max_request_body}",
                "body-too-large",
                close=True,
            )
        return self.route(request.host or "", request.raw_path)

    def route(self, host_field: str, raw_target: str) -> Route:
        """The site, host and origin-form target (less the edge's image parameters)
        a request goes to; the same for recv and for the hit path's keys."""
        target = origin_form(raw_target)
        check_target(target)
        host = split_host(host_field)
        site = self.sites.get(host)
        if site is None:
            raise EdgeError(421, f"this node does not serve the host {host!r}", "unknown-host")
        params: dict[str, str] = {}
        if self.config.images:
            target, params = split_image_params(target, self.config.image_presets)
        return Route(site, host, target, params)

    # ── hash + lookup ────────────────────────────────────────────────────────

    def hash(self, request: web.Request, route: Route) -> str:
        return primary_key(request.scheme, route.host, route.target)

    async def lookup(self, key: str, headers: CIMultiDictProxy[str]) -> tuple[Entry | None, bool]:
        """(the stored variant this request selects, whether the URL had other variants)."""
        variants = self.store.variants(key) or await self.store.load(key)
        for entry in variants:
            if secondary_key(entry.vary_names, headers) == entry.vary_values:
                return entry, False
        return None, bool(variants)

    def client_directives(self, request: web.BaseRequest) -> Directives:
        """The request's cache directives this node honours. no-cache, max-age and
        min-fresh only say what the client "prefers" (RFC 9111 §5.2.1) and would let
        any reload bypass the cache, so they count only with client_cache_control."""
        directives = request_directives(request.headers)
        if self.config.client_cache_control or not directives.items:
            return directives
        kept = {k: v for k, v in directives.items.items() if k not in CLIENT_PREFERENCES}
        return Directives(kept) if len(kept) != len(directives.items) else directives

    def judge(self, entry: Entry, request: Directives, now: float) -> Verdict:
        fresh = entry.fresh
        if must_revalidate(entry):
            return Verdict.VALIDATE
        age = entry.age(now)
        if client_requires_validation(request, age, fresh.lifetime):
            return Verdict.VALIDATE
        if age < fresh.lifetime:
            return Verdict.FRESH
        staleness = age - fresh.lifetime
        if not fresh.may_serve_stale:
            return Verdict.VALIDATE
        if client_accepts_stale(request, staleness):
            return Verdict.STALE_ALLOWED
        if staleness <= fresh.stale_while_revalidate and "no-cache" not in request:
            return Verdict.STALE_REVALIDATE
        return Verdict.VALIDATE

    async def lookup_and_deliver(
        self, request: web.Request, route: Route, status: CacheStatus
    ) -> web.StreamResponse:
        if "If-Match" in request.headers or "If-Unmodified-Since" in request.headers:
            # RFC 9111 §4.3.2: these preconditions are for the origin, not a cache.
            status.detail = "origin-precondition"
            self.charge(request, route, MISSES)
            return await self.pass_through(request, route, status, Fwd.REQUEST)
        key = self.hash(request, route)
        directives = self.client_directives(request)
        now = time.time()
        entry, other_variants = await self.lookup(key, request.headers)
        if entry is not None:
            verdict = self.judge(entry, directives, now)
            if verdict is not Verdict.VALIDATE:
                if verdict is Verdict.STALE_REVALIDATE:
                    self.revalidate_in_background(request, route, key, entry)
                    status.detail = "stale-while-revalidate"
                status.ttl = entry.ttl(now)
                self.store.hit(entry)
                return await self.respond(request, route, entry, status, now)
            fwd = Fwd.STALE if entry.ttl(now) <= 0 or must_revalidate(entry) else Fwd.REQUEST
        else:
            fwd = Fwd.VARY_MISS if other_variants else Fwd.MISS
        if "only-if-cached" in directives:
            raise EdgeError(504, "only-if-cached: no usable stored response", "only-if-cached")
        self.charge(request, route, MISSES)
        status.fwd = fwd
        if request.method == "HEAD" and entry is None:
            return await self.pass_through(request, route, status, status.fwd)
        plan = self.plan(request, route, key, entry, interim_to(request))
        return await self.fetch(request, plan, status)

    def deliver(
        self, request: web.Request, entry: Entry, status: CacheStatus, now: float
    ) -> web.Response:
        return self.delivery.from_entry(
            request, entry, status, entry.age(now), entry.fresh.no_cache_fields
        )

    # ── fetch: one upstream request per key ──────────────────────────────────

    def plan(
        self,
        request: web.Request,
        route: Route,
        key: str,
        stale: Entry | None,
        interim: Interim | None = None,
    ) -> FetchPlan:
        headers = self.upstream_headers(request, route, (*CLIENT_VALIDATORS, *RANGE_FIELDS))
        if stale is not None:
            headers.update(upstream_validators(stale.headers))
        return FetchPlan(key, route, route.target, headers, request.headers, stale, interim)

    async def fetch(
        self, request: web.Request, plan: FetchPlan, status: CacheStatus
    ) -> web.StreamResponse:
        alone = "Authorization" in request.headers
        for _attempt in range(3):
            if alone:
                fill, leader = Fill(plan.key), True
            else:
                fill, leader = self.fills.acquire(plan.key)
            if leader:
                passed = None
                try:
                    shared = None if alone else await self.join_node_fetch(fill, plan, request)
                    if shared is not None:
                        status.collapsed = True
                        self.metrics.collapsed.inc()
                        return await self.respond(request, plan.route, shared, status, time.time())
                    passed = await self.lead(fill, plan)
                finally:
                    if fill.outcome is not Outcome.STREAM:
                        self.fills.release(fill)
                return await self.deliver_fill(request, plan, fill, status, True, passed)
            outcome = await fill.wait(self.config.collapse_timeout)
            if outcome is None:
                status.detail = "collapse-timeout"
                return await self.pass_through(request, plan.route, status, status.fwd)
            if outcome is Outcome.ABANDONED:
                continue
            status.collapsed = True
            self.metrics.collapsed.inc()
            return await self.deliver_fill(request, plan, fill, status, False, None)
        raise EdgeError(503, "the upstream fetch for this URL was abandoned", "fetch-abandoned")

    async def join_node_fetch(
        self, fill: Fill, plan: FetchPlan, request: web.Request
    ) -> Entry | None:
        """Collapse across the node's workers: unless this worker may fetch the key
        itself (then the fill holds the node-wide lock until it is released), wait
        for the worker that is fetching it and return what it stored."""
        for _attempt in range(2):
            verdict = await self.store.acquire(plan.key, self.config.collapse_timeout)
            if verdict == "lead":
                fill.node_lock = True
                return None
            if verdict == "stored":
                entry, _ = await self.lookup(plan.key, request.headers)
                if entry is not None and entry.ttl(time.time()) > 0:
                    fill.settle(Outcome.UPDATED, entry=entry)
                    return entry
                return None
            if verdict != "abandoned":
                return None
        return None

    def release_node_fetch(self, fill: Fill) -> None:
        if fill.node_lock:
            fill.node_lock = False
            self.store.release(fill.key, fill.node_outcome())

    async def lead(self, fill: Fill, plan: FetchPlan) -> aiohttp.ClientResponse | None:
        """Send the fill's request and settle it; a response left for the caller to stream
        is returned when it will not be stored (Outcome.PASS)."""
        assert self.upstream is not None
        try:
            response, request_time, response_time, plan.upstream = await self.send(
                plan.route, "GET", plan.target, plan.headers, None, plan.key, plan.interim
            )
            head = response_head(response, response_time)
            stale = plan.stale
            mismatched = head.status == 304 and stale is not None
            if mismatched and not not_modified_applies(stale.headers, head.headers):
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
                response, request_time, response_time, plan.upstream = await self.send(
                    plan.route, "GET", plan.target, plan.headers, None, plan.key
                )
                head = response_head(response, response_time)
        except UpstreamError as err:
            fill.settle(Outcome.ERROR, error=err)
            return None
        fill.request_headers = plan.request_headers
        if head.status == 304 and stale is not None:
            response.release()
            if not not_modified_applies(stale.headers, head.headers):
                err = UpstreamError(
                    502, "the origin answered an unconditional request with 304", "bad-304"
                )
                fill.settle(Outcome.ERROR, error=err)
                return None
            entry = stale.updated(head.headers, request_time, response_time, self.settings)
            entry.wire = self.wire(entry)
            try:
                await self.store.put(entry)  # same variant: replaces the stale one
            except OSError as exc:
                self.metrics.not_stored.inc("store-error")
                log.error("could not store the refreshed %s: %s", plan.key, exc)
            fill.settle(Outcome.UPDATED, head=head, entry=entry)
            return None
        reason = self.why_not_store(plan, head, response.content_length)
        if reason is not None:
            self.metrics.not_stored.inc(reason)
            fill.no_store = reason
            fill.settle(Outcome.PASS, head=head)
            return response
        fill.settle(Outcome.STREAM, head=head)
        task = asyncio.create_task(self.fill_body(fill, plan, head, response, request_time))
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return None

    def why_not_store(self, plan: FetchPlan, head: Head, length: int | None) -> str | None:
        if head.status in ERROR_STATUSES and plan.stale is not None:
            return "error-over-stale"
        entry_directives, _ = response_directives(head.headers, self.settings.targeted_fields)
        reason = no_store_reason(
            "GET",
            head.status,
            plan.request_headers,
            head.headers,
            entry_directives,
            request_directives(plan.request_headers),
            heuristic=self.config.heuristic_fraction > 0,
            cache_set_cookie=self.config.cache_set_cookie,
        )
        if reason is not None:
            return str(reason)
        if length is not None and length > self.config.max_object_size:
            return "too-large"
        return None

    async def fill_body(
        self,
        fill: Fill,
        plan: FetchPlan,
        head: Head,
        response: aiohttp.ClientResponse,
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
            self.fills.release(fill)
            return
        finally:
            response.release()
        fill.finish()
        if storing:
            fill.stored = await self.store_entry(plan, head, b"".join(fill.chunks), request_time)
        self.fills.release(fill)

    # ── store ────────────────────────────────────────────────────────────────

    async def store_entry(
        self, plan: FetchPlan, head: Head, body: bytes, request_time: float
    ) -> bool:
        names = vary_names(head.headers)
        if names is None:
            return False
        directives, _ = response_directives(head.headers, self.settings.targeted_fields)
        private = fields_not_to_store(directives)
        headers = head.headers
        if private:
            headers = CIMultiDictProxy(without_hop_by_hop(headers, also=private))
        vary = (names, secondary_key(names, plan.request_headers))
        times = (request_time, head.response_time)
        entry = Entry.build(
            plan.key, vary, head.status, head.reason, headers, body, times, self.settings
        )
        entry.wire = self.wire(entry)
        try:
            return await self.store.put(entry)
        except OSError as exc:
            self.metrics.not_stored.inc("store-error")
            log.error("could not store %s: %s", plan.key, exc)
            return False

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
        entry.wire = self.wire(entry)
        return entry

    def wire(self, entry: Entry) -> Wire | None:
        """The hit path's prepared head, unless answers from `entry` are variants
        chosen per request (the hit path then looks for the stored variant)."""
        entry.kind = self.variants.kind(entry)
        if entry.kind is not None:
            return None
        return self.delivery.wire(entry)

    async def respond(
        self, request: web.Request, route: Route, entry: Entry, status: CacheStatus, now: float
    ) -> web.StreamResponse:
        """Answer from a usable stored response: itself, or its variant for this request."""
        if request.method in ("GET", "HEAD") and entry.kind is not None:
            return await self.variants.respond(request, route.params, entry, status)
        return self.deliver(request, entry, status, now)

    # ── deliver a fill's outcome ─────────────────────────────────────────────

    async def deliver_fill(
        self,
        request: web.Request,
        plan: FetchPlan,
        fill: Fill,
        status: CacheStatus,
        leader: bool,
        passed: aiohttp.ClientResponse | None,
    ) -> web.StreamResponse:
        if fill.outcome is Outcome.ERROR:
            err = fill.error
            assert isinstance(err, UpstreamError)
            served = self.stale_on_error(request, plan.stale, status)
            if served is not None:
                return served
            raise err
        if fill.outcome is Outcome.UPDATED:
            assert fill.entry is not None
            entry = fill.entry
            if entry.vary_names and (
                secondary_key(entry.vary_names, request.headers) != entry.vary_values
            ):
                # The fill refreshed another Vary variant than this request selects.
                return await self.pass_through(request, plan.route, status, status.fwd)
            now = time.time()
            status.ttl = fill.entry.ttl(now)
            if fill.head is not None:
                status.fwd_status = fill.head.status
            return await self.respond(request, plan.route, fill.entry, status, now)
        head = fill.head
        assert head is not None
        status.fwd_status = head.status
        if head.status in ERROR_STATUSES and plan.stale is not None:
            served = self.stale_on_error(request, plan.stale, status)
            if served is not None:
                if passed is not None:
                    passed.close()
                return served
        if fill.outcome is Outcome.PASS:
            status.detail = fill.no_store
            if passed is None:
                return await self.pass_through(request, plan.route, status, status.fwd)
            if "Range" in request.headers:
                passed.close()
                return await self.pass_through(request, plan.route, status, status.fwd)
            return await self.stream_upstream(request, head, passed, status, conditional=True)
        if not leader and self.variant_differs(head, fill, request):
            return await self.pass_through(request, plan.route, status, status.fwd)
        # Only a known length guarantees the body fits; a chunked body may still
        # outgrow max_object_size after the headers (and this claim) are sent.
        status.stored = leader and "Content-Length" in head.headers
        return await self.stream_fill(request, plan, fill, head, status)

    def variant_differs(self, head: Head, fill: Fill, request: web.Request) -> bool:
        names = vary_names(head.headers)
        if not names:
            return names is None
        return secondary_key(names, request.headers) != secondary_key(names, fill.request_headers)

    def stale_on_error(
        self, request: web.Request, stale: Entry | None, status: CacheStatus
    ) -> web.Response | None:
        """The stored response instead of an upstream failure, where RFC 5861 or grace allow."""
        if stale is None or must_revalidate(stale):
            return None
        now = time.time()
        staleness = -stale.ttl(now)
        if staleness > 0:
            if not stale.fresh.may_serve_stale:
                return None
            directives = self.client_directives(request)
            allowed = max(stale_if_error(stale.fresh.directives, directives), self.config.grace)
            if staleness > allowed:
                return None
        status.detail = "stale-if-error"
        status.ttl = stale.ttl(now)
        return self.deliver(request, stale, status, now)

    async def stream_fill(
        self, request: web.Request, plan: FetchPlan, fill: Fill, head: Head, status: CacheStatus
    ) -> web.StreamResponse:
        code = self.delivery.precondition(request, head.headers, head.status)
        if code is not None:
            return self.delivery.not_modified(code, head.headers, status, upstream_age(head))
        wants_variant = self.variants.kind_of_type(head.headers) is not None
        if head.status == 200 and ("Range" in request.headers or wants_variant):
            # Ranges and variants are cut from the stored source: wait until it is.
            try:
                async for _chunk in fill.body():
                    pass
            except BROKEN_BODY:
                return await self.fetch_again(request, plan, status)
            await fill.released.wait()
            entry, _ = await self.lookup(plan.key, request.headers)
            if entry is not None:
                return await self.respond(request, plan.route, entry, status, time.time())
        chunks = fill.body()
        try:
            # Nothing goes to the client before the first byte of the body has come:
            # an upstream that breaks off before it costs the client nothing.
            first = await anext(chunks, None)
        except BROKEN_BODY:
            await chunks.aclose()
            return await self.fetch_again(request, plan, status)
        out = self.delivery.client_headers(head.headers)
        self.delivery.finish_headers(out, head.headers, status, head.status, upstream_age(head))
        response = web.StreamResponse(status=head.status, reason=head.reason, headers=out)
        await response.prepare(request)
        await self.copy_body(request, response, _after(first, chunks), status)
        return response

    async def fetch_again(
        self, request: web.Request, plan: FetchPlan, status: CacheStatus
    ) -> web.StreamResponse:
        """The fill's upstream broke off before anything reached this client: fetch
        again (the broken upstream's breaker has counted it, and the key's next
        upstream is asked if it is down); a second break goes through as a pass."""
        log.warning("%s %s: the fill broke off; asking upstream again", request.method, plan.target)
        status.stored = False
        if status.detail == "refetched":
            return await self.pass_through(request, plan.route, status, status.fwd)
        status.detail = "refetched"
        return await self.fetch(request, plan, status)

    # ── pass: anything not served from or stored in the cache ───────────────

    async def pass_through(
        self, request: web.Request, route: Route, status: CacheStatus, fwd: Fwd | None
    ) -> web.StreamResponse:
        status.fwd = fwd
        headers = self.upstream_headers(request, route)
        body = None
        if request.body_exists and request.method not in BODILESS_METHODS:
            body = RequestBody(request, self.config.max_request_body, self.config.body_timeout)
            if request.content_length is not None:
                headers["Content-Length"] = str(request.content_length)
        try:
            response, _request_time, response_time, _ = await self.send(
                route,
                request.method,
                route.target,
                headers,
                body,
                self.hash(request, route),
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
        upstream: aiohttp.ClientResponse,
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
                contextlib.aclosing(chunks)  # type: ignore[type-var]
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

    # ── background revalidation (stale-while-revalidate) ────────────────────

    def revalidate_in_background(
        self, request: web.Request, route: Route, key: str, entry: Entry
    ) -> None:
        if self.fills.in_progress(key):
            return
        fill, leader = self.fills.acquire(key)
        if not leader:
            return
        plan = self.plan(request, route, key, entry)
        task = asyncio.create_task(self.revalidate(fill, plan))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def revalidate(self, fill: Fill, plan: FetchPlan) -> None:
        try:
            passed = await self.lead(fill, plan)
            if passed is not None:
                passed.close()
                if fill.head is not None and fill.head.status not in ERROR_STATUSES:
                    await self.store.remove(plan.key)
        finally:
            if fill.outcome is not Outcome.STREAM:
                self.fills.release(fill)

    # ── upstream requests ────────────────────────────────────────────────────

    def upstream_headers(
        self, request: web.Request, route: Route, also: tuple[str, ...] = ()
    ) -> CIMultiDict[str]:
        """The client's end-to-end fields for upstream; send() sets Host per upstream.
        Framing fields are never copied: the upstream request is framed by what is sent."""
        headers = without_hop_by_hop(
            request.headers, also=("Host", "Expect", "Content-Length", *also)
        )
        forward(
            headers,
            request.headers,
            request.remote,
            self.trusted,
            route.host,
            request.scheme,
            self.name,
        )
        return headers

    async def send(
        self,
        route: Route,
        method: str,
        target: str,
        headers: CIMultiDict[str],
        body: RequestBody | None,
        key: str,
        interim: Interim | None = None,
    ) -> tuple[aiohttp.ClientResponse, float, float, str]:
        """Send the request to the first upstream that takes it (shields ranked by
        the cache key, the same for every method, then origins), skipping
        upstreams whose breaker is open.
        Only a request that can be sent again (idempotent, no body) goes on to
        the next upstream, and only when the connection failed: nothing reached
        the upstream, and nothing has been sent to the client. Returns the
        response, when the request was sent and answered, and who answered."""
        assert self.upstream is not None
        site = route.site
        replayable = body is None and method in IDEMPOTENT_METHODS
        tries = self.config.upstream_tries
        failed: UpstreamError | None = None
        for upstream in self.upstreams.order(site.name, key):
            if tries == 0:
                break
            if not upstream.breaker.allows(time.monotonic()):
                continue
            tries -= 1
            client_host = upstream.kind == "shield" or site.preserve_host
            headers["Host"] = route.host if client_host else upstream.host
            try:
                response, request_time, response_time = await self.upstream.request(
                    method,
                    upstream.url + target,
                    headers,
                    body.chunks() if body is not None else None,
                    interim,
                )
            except UpstreamError as err:
                if body is not None and body.error is not None:
                    raise
                upstream.breaker.failed(time.monotonic())
                self.metrics.upstream_errors.inc(site.name, upstream.label, err.detail)
                log.warning(
                    "%s %s%s failed: %s", method, upstream.url, target, err.log or err.reason
                )
                failed = err
                if replayable and err.detail in RETRYABLE:
                    continue
                raise
            if response.status in BREAKER_STATUSES and upstream.kind == "origin":
                upstream.breaker.failed(time.monotonic())
            else:
                upstream.breaker.succeeded()
            code = f"{response.status // 100}xx"
            self.metrics.upstream_requests.inc(site.name, upstream.label, code)
            self.metrics.upstream_latency.observe(response_time - request_time, site.name)
            return response, request_time, response_time, upstream.label
        if failed is not None:
            raise failed
        raise UpstreamError(
            503,
            "every upstream of this site is failing (its circuit breakers are open)",
            "upstream-unavailable",
        )

    async def probe_upstreams(self) -> None:
        """Active health checks: GET each upstream's probe path every probe_interval;
        an answer under 500 is healthy (and closes an open breaker)."""
        assert self.upstream is not None
        interval = self.config.probe_interval
        probes = []
        for site in self.config.site_list():
            for upstream in self.upstreams.origins[site.name]:
                host = site.hosts[0] if site.preserve_host else upstream.host
                probes.append((upstream, site.probe_path, host))
        for upstream in self.upstreams.shields:
            probes.append((upstream, "/", self.config.site_list()[0].hosts[0]))
        while True:
            await asyncio.sleep(interval)
            await asyncio.gather(*(self.probe(*probe) for probe in probes))

    async def probe(self, upstream: Target, path: str, host: str) -> None:
        assert self.upstream is not None
        try:
            response, _, _ = await self.upstream.request("GET", upstream.url + path, {"Host": host})
            response.release()
            healthy = response.status < 500
        except UpstreamError:
            healthy = False
        if healthy:
            if upstream.breaker.state is not BreakerState.CLOSED:
                log.info("%s answers its probe again: closing its breaker", upstream.label)
            upstream.breaker.succeeded()
        else:
            upstream.breaker.failed(time.monotonic())
        self.metrics.probes.inc(upstream.label, "up" if healthy else "down")


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


def check_framing(request: web.BaseRequest) -> None:
    """RFC 9112 §6.1: only `chunked` is understood (501 for any other coding), and an
    HTTP/1.0 request with Transfer-Encoding has faulty framing (400). Either way the
    connection is closed after the answer: what follows cannot be told apart from
    the body."""
    codings = request.headers.getall("Transfer-Encoding", ())
    if not codings:
        return
    if request.version < aiohttp.HttpVersion11:
        raise EdgeError(
            400,
            "an HTTP/1.0 request cannot carry Transfer-Encoding",
            "bad-framing",
            close=True,
        )
    names = [name.strip(" \t").lower() for line in codings for name in line.split(",")]
    if names != ["chunked"]:
        raise EdgeError(
            501,
            f"Transfer-Encoding {', '.join(codings)!r} is not implemented (only chunked)",
            "bad-framing",
            close=True,
        )


def interim_to(request: web.BaseRequest) -> Interim | None:
    """Pass an upstream's interim responses (103 Early Hints) on to this client as
    they arrive: never to an HTTP/1.0 client (RFC 9110 §15.2), never stored."""
    if request.version < aiohttp.HttpVersion11:
        return None

    def write(code: int, reason: str, fields: CIMultiDictProxy[str]) -> None:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        kept = without_hop_by_hop(fields, also=("Content-Length",))
        head = f"HTTP/1.1 {code} {reason or 'Informational'}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in kept.items()
        )
        transport.write(head.encode("latin-1", "replace") + b"\r\n")

    return write


def must_revalidate(entry: Entry) -> bool:
    """Unqualified no-cache: every use needs a successful validation (RFC 9111 §5.2.2.4)."""
    return entry.fresh.directives.field_names("no-cache") == frozenset()


def response_head(response: aiohttp.ClientResponse, response_time: float) -> Head:
    headers = CIMultiDict(response.headers)
    if "Date" not in headers:
        headers["Date"] = format_http_date(response_time)
    return Head(response.status, response.reason or "", CIMultiDictProxy(headers), response_time)


def upstream_age(head: Head) -> float | None:
    value = head.headers.get("Age")
    return float(value) if value and value.isdigit() else None


def origin_form(raw_target: str) -> str:
    """The path and query of a request target; absolute-form (RFC 9112 §3.2.2) is
    accepted, its host having already been taken as the request's host."""
    if raw_target.startswith(("http://", "https://")):
        return URL(raw_target).raw_path_qs
    return raw_target


def log_error(request: web.Request, err: EdgeError) -> None:
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


async def _after(first: bytes | None, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`first`, then the rest of the chunks (closing them when closed)."""
    try:
        if first is not None:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]
