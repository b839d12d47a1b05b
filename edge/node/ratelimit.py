"""Per-client request budgets of each site (`rate_limit`): one for every request and
one for requests that go to the origin (misses, validations, passes), each a token
bucket with bursts; beyond a budget the client gets 429 with Retry-After.

Hits never spend the second budget, so a client that sends a stream of new query
strings to force misses (cache busting) is held back while its hits are served.
A log line says when a client starts being limited and when it stops.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from pinedge.core.metrics import Counter
from pinedge.edge.node.clients import KEY, MISS_TIME, MISSES, REQ_TIME, REQUESTS, ClientTable
from pinedge.edge.node.clients import stable_hash as _hash
from pinedge.edge.node.config import RateLimitConfig, SiteConfig
from pinedge.edge.pipeline.errors import EdgeError

log = logging.getLogger("pinedge.limits")

BUDGETS = ("requests", "misses")  # by REQUESTS, MISSES
DETAILS = ("rate-limited", "miss-rate-limited")
QUIET = 5.0  # a limited client that sent nothing for this long is no longer limited
MEMO_MAX = 65536


@dataclass(frozen=True, slots=True)
class Budget:
    rate: float  # tokens a second
    burst: float  # tokens at most


@dataclass(slots=True)
class Episode:
    """A client being limited, as this worker saw it start."""

    client: str
    site: str
    which: int
    since: float


def site_budgets(config: RateLimitConfig) -> tuple[Budget | None, Budget | None]:
    requests = misses = None
    if config.requests > 0:
        requests = Budget(config.requests, config.burst(config.requests, config.requests_burst))
    if config.misses > 0:
        misses = Budget(config.misses, config.burst(config.misses, config.misses_burst))
    return requests, misses


class RateLimiter:
    def __init__(
        self,
        table: ClientTable,
        sites: list[SiteConfig],
        default: RateLimitConfig,
        limited: Counter,
    ) -> None:
        self.table = table
        self.limited = limited
        self.budgets: dict[str, tuple[Budget | None, Budget | None]] = {}
        for site in sites:
            budgets = site_budgets(site.rate_limit or default)
            if budgets != (None, None):
                self.budgets[site.name] = budgets
        # Sites where every request is charged: the hit path must ask.
        self.request_sites = frozenset(
            name for name, (requests, _) in self.budgets.items() if requests is not None
        )
        self.buckets: dict[tuple[str, str], tuple[int, int]] = {}  # -> (bucket, key hash)
        self.episodes: dict[tuple[int, int], Episode] = {}

    def charge(self, site: str, client: str, which: int) -> float:
        """Spend one of the client's `which` tokens on `site`: 0.0 when it had one
        (or the site has no such budget), else the seconds until it will."""
        budgets = self.budgets.get(site)
        budget = budgets[which] if budgets is not None else None
        if budget is None:
            return 0.0
        now = time.monotonic()
        table = self.table
        bucket = self.bucket(site, client, now)
        wait = table.take(bucket, which, budget.rate, budget.burst, now)
        if wait:
            table.refused(bucket, 1)
            self.limited.inc(site, BUDGETS[which])
            if not table.flagged(bucket, which):
                table.flag(bucket, which, True)
                self.episodes[(bucket, which)] = Episode(client, site, which, now)
                log.warning(
                    "client %s on site %s: over its %s budget (%g/s, burst %g); answering 429",
                    client,
                    site,
                    BUDGETS[which],
                    budget.rate,
                    budget.burst,
                )
        elif table.flagged(bucket, which):
            self.end(bucket, which, now, client, site)
        return wait

    def refusal(self, site: str, which: int, wait: float) -> EdgeError:
        retry = max(1, math.ceil(wait))
        what = "requests" if which == REQUESTS else "requests that reach the origin"
        return EdgeError(
            429,
            f"too many {what} from this client; retry after {retry} s",
            DETAILS[which],
            headers={"Retry-After": str(retry)},
        )

    def bucket(self, site: str, client: str, now: float) -> int:
        known = self.buckets.get((site, client))
        if known is not None and self.table.ints[known[0] + KEY] == known[1]:
            return known[0]
        text = f"{site}\0{client}"
        bucket = self.table.bucket(text, now)
        if len(self.buckets) >= MEMO_MAX:
            self.buckets.clear()
        self.buckets[(site, client)] = (bucket, _hash(text))
        return bucket

    def end(self, bucket: int, which: int, now: float, client: str, site: str) -> None:
        table = self.table
        table.flag(bucket, which, False)
        refused = table.refused(bucket)
        table.reset_refused(bucket)
        episode = self.episodes.pop((bucket, which), None)
        lasted = f" after {now - episode.since:.0f} s" if episode is not None else ""
        log.info(
            "client %s on site %s: back within its %s budget%s, %d refused",
            client,
            site,
            BUDGETS[which],
            lasted,
            refused,
        )

    def sweep(self) -> None:
        """End the episodes of clients that went quiet (nothing sent for QUIET s)."""
        now = time.monotonic()
        floats = self.table.floats
        for (bucket, which), episode in list(self.episodes.items()):
            if not self.table.flagged(bucket, which):  # another worker saw it end
                del self.episodes[(bucket, which)]
                continue
            last = floats[bucket + (REQ_TIME if which == REQUESTS else MISS_TIME)]
            if now - last >= QUIET:
                self.end(bucket, which, now, episode.client, episode.site)


__all__ = ["MISSES", "REQUESTS", "Budget", "RateLimiter"]
