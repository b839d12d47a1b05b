"""The edge's Prometheus metrics."""

from __future__ import annotations

from collections.abc import Callable

from pinedge.core.metrics import Counter, Gauge, Histogram, Registry
from pinedge.edge.node.clients import ClientTable
from pinedge.edge.store.owner import StoreOwner
from pinedge.edge.upstream.routes import Target

# The `class` label of a status, for every status aiohttp reads (three digits).
STATUS_CLASS = {code: f"{code // 100}xx" for code in range(100, 1000)}
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class EdgeMetrics:
    def __init__(self, owner: StoreOwner | None, inflight: Callable[[], float]) -> None:
        self.registry = Registry()
        add = self.registry.add
        self.requests = add(
            Counter(
                "pinedge_requests_total",
                "Client requests by cache outcome and status class (gone: the client left "
                "before its answer was written).",
                ("cache", "code"),
            )
        )
        self.response_bytes = add(
            Counter(
                "pinedge_response_body_bytes_total",
                "Response body bytes sent to clients, by cache outcome.",
                ("cache",),
            )
        )
        self.request_duration = add(
            Histogram(
                "pinedge_request_duration_seconds",
                "Time to answer a client request, by cache outcome.",
                LATENCY_BUCKETS,
                ("cache",),
            )
        )
        self.upstream_requests = add(
            Counter(
                "pinedge_upstream_requests_total",
                "Requests answered upstream, by site, upstream (origin or shield URL) and "
                "response status class.",
                ("site", "upstream", "code"),
            )
        )
        self.upstream_errors = add(
            Counter(
                "pinedge_upstream_errors_total",
                "Upstream requests that failed (connect, timeout, broken body), by upstream "
                "and kind.",
                ("site", "upstream", "kind"),
            )
        )
        self.upstream_latency = add(
            Histogram(
                "pinedge_upstream_response_seconds",
                "Time from sending an upstream request to its response headers.",
                LATENCY_BUCKETS,
                ("site",),
            )
        )
        self.probes = add(
            Counter(
                "pinedge_upstream_probes_total",
                "Active health probes of upstreams, by upstream and result (up, down).",
                ("upstream", "result"),
            )
        )
        self.breakers = add(
            Gauge(
                "pinedge_upstream_breaker_state",
                "Each upstream's circuit breaker: 0 closed, 1 half-open, 2 open.",
                labels=("upstream",),
            )
        )
        self.breaker_opens = add(
            Gauge(
                "pinedge_upstream_breaker_opens_total",
                "Times each upstream's circuit breaker opened.",
                labels=("upstream",),
                kind="counter",
            )
        )
        self.collapsed = add(
            Counter(
                "pinedge_collapsed_requests_total",
                "Requests that waited on another request's upstream fetch.",
            )
        )
        self.not_stored = add(
            Counter(
                "pinedge_responses_not_stored_total",
                "Cacheable-method responses not stored, by reason.",
                ("reason",),
            )
        )
        self.invalidations = add(
            Counter(
                "pinedge_invalidations_total",
                "Stored responses removed after unsafe requests.",
            )
        )
        self.variants = add(
            Counter(
                "pinedge_variants_total",
                "Variants derived from stored sources, by kind (image, text) and result "
                "(made, busy when the pool was full, or the error's detail).",
                ("kind", "result"),
            )
        )
        self.transform_duration = add(
            Histogram(
                "pinedge_transform_seconds",
                "Time to make one variant on the transform pool, waiting included.",
                LATENCY_BUCKETS,
                ("kind",),
            )
        )
        self.image_decodes = add(
            Counter(
                "pinedge_image_decodes_total",
                "Image variants by where their pixels came from: source (decoded from "
                "its bytes), kept (this worker's decoded copy), shared (another worker's).",
                ("source",),
            )
        )
        self.connections_closed = add(
            Counter(
                "pinedge_connections_closed_total",
                "Client connections the node closed, by reason (header-timeout, idle-timeout, "
                "send-timeout).",
                ("reason",),
            )
        )
        self.connections_refused = add(
            Counter(
                "pinedge_connections_refused_total",
                "Client connections refused at once, by reason (node-limit, client-limit).",
                ("reason",),
            )
        )
        self.limited = add(
            Counter(
                "pinedge_requests_limited_total",
                "Requests answered 429 because their client was over a budget, by site and "
                "budget (requests, misses).",
                ("site", "budget"),
            )
        )
        self.body_timeouts = add(
            Counter(
                "pinedge_request_body_timeouts_total",
                "Request bodies that paused longer than body_timeout (408).",
            )
        )
        if owner is not None:
            add_store_metrics(self.registry, owner)
        add(Gauge("pinedge_inflight_requests", "Client requests in progress.", inflight))

    def watch_breakers(self, upstreams: list[Target]) -> None:
        def read() -> None:
            for upstream in upstreams:
                self.breakers.set(int(upstream.breaker.state), upstream.label)
                self.breaker_opens.set(upstream.breaker.opens, upstream.label)

        self.registry.collectors.append(read)

    def add_answers(self, cache: str, by_status: dict[int, int], body_bytes: int) -> None:
        """Answers a fast path counted in plain variables: how many of each status,
        and their body bytes, under the `cache` label."""
        for status, count in by_status.items():
            self.requests.inc(cache, STATUS_CLASS[status], amount=count)
        if body_bytes:
            self.response_bytes.inc(cache, amount=body_bytes)

    def render(self) -> str:
        return self.registry.render()


def add_store_metrics(registry: Registry, owner: StoreOwner) -> None:
    """The store's figures, read from its owner when scraped."""
    index = owner.index
    add = registry.add
    add(
        Gauge(
            "pinedge_store_bytes",
            "Bytes the store takes: its files, in whole pages, and an inode for each.",
            lambda: index.size,
        )
    )
    add(
        Gauge(
            "pinedge_store_objects",
            "Responses held by the store (not counting hard-purged ones).",
            lambda: max(0, len(index.records) - index.purged.pending_removal),
        )
    )
    add(
        Gauge(
            "pinedge_store_purged_pending",
            "Hard-purged responses whose files are not removed yet (done when CPU is idle "
            "or their space is needed).",
            lambda: index.purged.pending_removal,
        )
    )
    add(Gauge("pinedge_store_budget_bytes", "The store's byte budget.", lambda: index.budget))
    add(
        Gauge(
            "pinedge_store_loading",
            "1 while the files a restarted node found are still being indexed, else 0. "
            "Meanwhile a request finds its response's file by its key; a response with "
            "Vary is a miss until the loader reaches it.",
            lambda: int(index.loading),
        )
    )
    add(
        Gauge(
            "pinedge_store_loaded_on_demand_total",
            "Files a restarted node indexed when a request asked for their key, before "
            "the loader reached them.",
            lambda: index.loaded_on_demand,
            kind="counter",
        )
    )
    add(
        Gauge(
            "pinedge_store_evictions_total",
            "Responses evicted to stay within the budget.",
            lambda: index.evictions,
            kind="counter",
        )
    )
    add(
        Gauge(
            "pinedge_store_segments_removed_total",
            "Finished segments removed: with nothing live left in them, or compacted (their "
            "live records copied out) to keep dead bytes (evicted, purged, replaced) bounded.",
            lambda: index.space.removed,
            kind="counter",
        )
    )
    add(
        Gauge(
            "pinedge_store_segment_moved_bytes_total",
            "Bytes of live records copied by segment compaction.",
            lambda: index.space.moved,
            kind="counter",
        )
    )
    add(
        Gauge(
            "pinedge_store_segment_live_bytes",
            "Bytes of the records indexed in segments (small responses packed many to a file).",
            lambda: index.space.live_bytes,
        )
    )
    purges = add(
        Gauge(
            "pinedge_purges_total",
            "Purges applied, by what they named (tag, url, prefix, all) and mode (hard, soft).",
            labels=("kind", "mode"),
            kind="counter",
        )
    )
    purged = add(
        Gauge(
            "pinedge_purged_objects_total",
            "Stored responses covered by purges, by mode (hard: removed, soft: made stale).",
            labels=("mode",),
            kind="counter",
        )
    )

    def count_purges() -> None:
        for (kind, mode), count in index.purged.purges.items():
            purges.set(count, kind, mode)
        for mode, count in index.purged.covered.items():
            purged.set(count, mode)

    registry.collectors.append(count_purges)
    add(
        Gauge(
            "pinedge_store_dropped_total",
            "Stored files found damaged (truncated or corrupt) and dropped, never served.",
            lambda: index.dropped,
            kind="counter",
        )
    )


def add_client_metrics(registry: Registry, clients: ClientTable) -> None:
    """The node's figures from the shared client table, read when scraped."""
    registry.add(
        Gauge(
            "pinedge_connections_open",
            "Client connections open on the node.",
            clients.node_connections,
        )
    )
    registry.add(
        Gauge(
            "pinedge_clients_limited",
            "Clients over one of their request budgets now.",
            clients.limited_clients,
        )
    )
