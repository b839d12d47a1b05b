"""A worker's edge: the pipeline's parts wired together, and what the server calls
(`handle` for the general path, the hit path's two readers).

The parts, each in its own module: recv.py routes, steps.py is the request state
machine, judge.py its one freshness decision, fetch.py the fetch side, passing.py
pass and invalidation, hitpath.py the hit path, misspath.py the miss path,
collapse.py one make per key."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

from pinedge.edge.http.cachecontrol import Directives
from pinedge.edge.http.forwarding import TrustedPeers
from pinedge.edge.http.negotiate import ACCEPT_CH
from pinedge.edge.http.status import Fwd
from pinedge.edge.http.storable import fields_needing_validation
from pinedge.edge.node.clients import ClientTable
from pinedge.edge.node.config import EdgeConfig
from pinedge.edge.node.metrics import STATUS_CLASS, EdgeMetrics
from pinedge.edge.node.ratelimit import QUIET, REQUESTS, RateLimiter
from pinedge.edge.pipeline.collapse import Head, Once
from pinedge.edge.pipeline.deliver import SLICE, Delivery, error_bytes, send_sliced
from pinedge.edge.pipeline.fetch import Fetcher
from pinedge.edge.pipeline.hitpath import HitPath
from pinedge.edge.pipeline.misspath import MissPath
from pinedge.edge.pipeline.passing import Passer
from pinedge.edge.pipeline.recv import Router
from pinedge.edge.pipeline.steps import Steps
from pinedge.edge.pipeline.transaction import Step, Transaction
from pinedge.edge.store.entry import Entry, FreshnessSettings
from pinedge.edge.store.owner import StoreOwner
from pinedge.edge.store.view import SharedStore
from pinedge.edge.upstream.client import Timeouts, Upstream
from pinedge.edge.upstream.probes import probe_forever
from pinedge.edge.upstream.routes import Upstreams
from pinedge.edge.upstream.sender import Sender
from pinedge.edge.variants.derive import Variants, Workshop

if TYPE_CHECKING:
    from pinedge.edge.node.protocol import EdgeConnection

log = logging.getLogger("pinedge.edge")


class Edge:
    """One worker's edge: its parts, its background tasks and its entry points."""

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
        self.store = store
        self.trusted = TrustedPeers.parse(config.trusted_proxies)
        self.upstreams = Upstreams(
            config.shield,
            {site.name: site.pool() for site in config.site_list()},
            config.shield_fallback == "origin",
            config.breaker_failures,
            config.breaker_cooldown,
        )
        self.settings = FreshnessSettings(
            tuple(config.targeted_fields), config.heuristic_fraction, config.heuristic_max
        )
        self.delivery = Delivery(
            self.name,
            tuple(config.targeted_fields),
            ACCEPT_CH if config.images else None,
            shield=config.role == "shield",
        )
        self.inflight = 0
        self.metrics = EdgeMetrics(owner, inflight=lambda: self.inflight + self.misses.inflight)
        self.metrics.watch_breakers(self.upstreams.all())
        self.background: set[asyncio.Task[None]] = set()
        self.upstream: Upstream | None = None
        self.sender: Sender | None = None
        self.limiter = RateLimiter(
            clients, config.site_list(), config.rate_limit, self.metrics.limited
        )
        self.router = Router(config)
        once = Once(store, config.collapse_timeout)
        self.variants = Variants(
            config,
            Workshop(
                store, once, self.delivery, self.metrics, self.prepare, self.run_in_background
            ),
            self.router.sites,
        )
        self.fetcher = Fetcher(
            config,
            self.settings,
            store,
            self.started_sender,
            once,
            self.prepare,
            self.miss_head_for,
            self.trusted,
            self.metrics,
            self.run_in_background,
        )
        passer = Passer(
            config, self.started_sender, store, self.delivery, self.trusted, self.metrics
        )
        self.steps = Steps(
            config,
            self.router,
            store,
            once,
            self.fetcher,
            passer,
            self.variants,
            self.delivery,
            self.limiter,
            self.trusted,
            self.metrics,
        )
        self.hits = HitPath(
            store, self.router.route, self.limiter, self.variants, self.refusal, self.metrics
        )
        self.misses = MissPath(
            self.hits, store, once, self.steps, self.fetcher, self.limiter, self.metrics
        )
        self.fast_hit = self.hits.from_message
        self.fast_hit_bytes = self.hits.from_bytes
        self.fast_miss = self.misses.start
        self.entry_from_file = self.fetcher.entry_from_file

    async def start(self) -> None:
        config = self.config
        self.upstream = Upstream(
            Timeouts(config.connect_timeout, config.first_byte_timeout, config.total_timeout)
        )
        self.sender = Sender(self.upstream, self.upstreams, config.upstream_tries, self.metrics)
        if config.probe_interval > 0:
            self.run_in_background(
                probe_forever(self.upstream, self.upstreams, config, self.metrics)
            )
        if self.limiter.budgets:
            self.run_in_background(self.sweep_limits())

    def started_sender(self) -> Sender:
        assert self.sender is not None, "Edge.start() sets up the sender"
        return self.sender

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

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The general path: one transaction driven through the steps."""
        started = time.monotonic()
        tx = Transaction(request)
        step = Step.RECV
        handover = cast("EdgeConnection", request.protocol).take_handover()
        if handover is not None:
            started = handover.started  # its fetch began on the miss path
            tx.route, tx.key, tx.plan = handover.route, handover.key, handover.plan
            tx.fill, tx.role, tx.passed = handover.fill, handover.role, handover.passed
            tx.handed_over = handover.holding
            handover.passed = None  # the steps' to stream or close now
            tx.directives = self.steps.client_directives(request)
            tx.status.fwd = Fwd.MISS
            step = Step.JOINED
        self.inflight += 1
        try:
            response = await self.steps.drive(tx, step)
        except ConnectionError:
            # The client went away while its answer was being written (a browser
            # that moved on, a load generator closing its connections): nobody to
            # answer, and nothing for the log to report as an error.
            log.debug("%s %s: the client went away", request.method, request.path)
            self.metrics.requests.inc(tx.status.label(), "gone")
            return tx.response if tx.response is not None else web.Response()
        finally:
            self.inflight -= 1
            if handover is not None:
                handover.close()
        label = "error" if tx.error is not None else tx.status.label()
        if "Transfer-Encoding" in request.headers:
            # aiohttp's C parser hands a chunked body's last trailer field to the next
            # request's head: nothing more is read from this connection.
            response.force_close()
        self.metrics.requests.inc(label, STATUS_CLASS[response.status])
        self.metrics.request_duration.observe(time.monotonic() - started, label)
        body = getattr(response, "body", None)
        if isinstance(body, bytes | bytearray):
            self.metrics.response_bytes.inc(label, amount=len(body))
            if len(body) > SLICE and type(response) is web.Response:
                return await send_sliced(request, response, body)
        return response

    def prepare(self, entry: Entry) -> None:
        """Ready a stored entry for serving: whether answers from it are variants
        chosen per request, and if not, the hit path's prepared head."""
        entry.kind = self.variants.kind(entry)
        entry.wire = None if entry.kind is not None else self.delivery.wire(entry)

    def miss_head_for(
        self, key: str, head: Head, length: int, directives: Directives, lines: str
    ) -> bytes | None:
        """The head of the answer to the miss that stored a response as it came without
        Vary (`directives`: its response_directives(); `lines`: its field lines as
        they came): the hit path's head (prepare()'s) with a miss's Cache-Status,
        None where prepare() would give its entry none. Made from the lines where
        leaving some out is all it takes (Delivery.miss_head)."""
        headers = head.headers
        if self.variants.kind_of(key, head.status, headers, (), length) is not None:
            return None
        no_cache_fields = fields_needing_validation(directives)
        return self.delivery.miss_head(
            head.status, head.reason, headers, length, directives, no_cache_fields, lines
        )

    def refusal(self, site: str, wait: float) -> bytes:
        """The hit path's 429: the same answer the general path gives, the connection kept."""
        err = self.limiter.refusal(site, REQUESTS, wait)
        self.metrics.requests.inc("error", "4xx")
        return error_bytes(self.name, err.status, err.reason, err.detail, err.headers, False)

    def count_parse_error(self, status: int) -> None:
        """A request the parser refused is still a request answered (with an error)."""
        self.metrics.requests.inc("error", STATUS_CLASS[status])
