"""Where a request goes upstream: shields, then a site's origins, each behind a
circuit breaker.

An edge with shields sends each cache key to one shield, chosen by rendezvous
(highest-random-weight) hashing over the shields' URLs, so that the shields'
caches do not hold the same objects; the key's next shield in that ranking
takes over when it fails, then the origins (unless `shield_fallback = "none"`).
A site's origins are its primaries, in a weighted random order, then its backups.

Each upstream has a breaker (closed, open, half-open): `breaker_failures`
failures in a row open it and requests skip the upstream; after
`breaker_cooldown` one request (or an active probe) tries it again, and its
success closes the breaker. Failures are connection errors, timeouts and 5xx
responses; the active probe GETs a path every `probe_interval` and counts any
answer under 500 as healthy.
"""

from __future__ import annotations

import enum
import hashlib
import random
from dataclasses import dataclass, field

from yarl import URL

from pinedge.core.health import RiseFall


class BreakerState(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(slots=True)
class Breaker:
    """Closed, open or half-open, from the upstream's health: `failures_to_open`
    failures in a row take it down (core's rise/fall counter, rising on one success)."""

    failures_to_open: int
    cooldown: float
    state: BreakerState = BreakerState.CLOSED
    health: RiseFall = field(init=False)
    opened_at: float = 0.0
    trial: bool = False  # a half-open trial request is out
    opens: int = 0  # times it opened, for metrics

    def __post_init__(self) -> None:
        self.health = RiseFall(rise=1, fall=self.failures_to_open)

    def allows(self, now: float) -> bool:
        """Whether a request may go to the upstream now (claims the half-open trial)."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if now - self.opened_at < self.cooldown:
                return False
            self.state = BreakerState.HALF_OPEN
            self.trial = False
        if self.trial:
            return False
        self.trial = True
        return True

    def succeeded(self) -> None:
        if self.state is BreakerState.CLOSED and self.health.streak > 0:
            return  # closed, and the last answer a success: another changes nothing
        self.health.record(True)
        self.state = BreakerState.CLOSED
        self.trial = False

    def failed(self, now: float) -> None:
        self.health.record(False)
        self.trial = False
        if self.state is BreakerState.HALF_OPEN or (
            self.state is BreakerState.CLOSED and not self.health.up
        ):
            if self.state is not BreakerState.OPEN:
                self.opens += 1
            self.state = BreakerState.OPEN
            self.opened_at = now


@dataclass(slots=True)
class Target:
    """One upstream: an origin of a site, or a shield node."""

    kind: str  # "origin" or "shield"
    url: str  # scheme://host[:port], no trailing slash
    breaker: Breaker
    weight: int = 1
    backup: bool = False
    host: str = field(init=False)  # the Host an origin expects
    label: str = field(init=False)  # how metrics and Cache-Status name it: kind and URL

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        self.host = URL(self.url).raw_authority or ""
        self.label = f"{self.kind} {self.url}"


def rendezvous(targets: list[Target], key: str) -> list[Target]:
    """`targets` ranked for `key`, highest random weight first: the same order on
    every edge, and removing one target moves only its own keys."""

    def score(target: Target) -> int:
        digest = hashlib.blake2b(f"{target.url}\0{key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big")

    return sorted(targets, key=score, reverse=True)


def weighted_order(targets: list[Target], chance: random.Random) -> list[Target]:
    """Primaries in a random order weighted by `weight` (weighted sampling
    without replacement), then backups in their configured order."""
    primaries = [t for t in targets if not t.backup]
    keyed = sorted(primaries, key=lambda t: chance.random() ** (1.0 / max(t.weight, 1)))
    return [*reversed(keyed), *(t for t in targets if t.backup)]


class Upstreams:
    """A node's upstreams: its shields and each site's origins, with their breakers."""

    def __init__(
        self,
        shields: list[str],
        origins: dict[str, list[tuple[str, int, bool]]],
        fallback_to_origin: bool,
        failures_to_open: int,
        cooldown: float,
    ) -> None:
        def breaker() -> Breaker:
            return Breaker(failures_to_open, cooldown)

        self.shields = [Target("shield", url, breaker()) for url in shields]
        self.origins = {
            site: [Target("origin", url, breaker(), weight, backup) for url, weight, backup in pool]
            for site, pool in origins.items()
        }
        self.fallback_to_origin = fallback_to_origin
        self.chance = random.Random()

    def order(self, site: str, key: str) -> list[Target]:
        """The upstreams to try for `key` of `site`, in order."""
        ranked = rendezvous(self.shields, key) if self.shields else []
        if not self.shields or self.fallback_to_origin:
            ranked += weighted_order(self.origins[site], self.chance)
        return ranked

    def all(self) -> list[Target]:
        return [*self.shields, *(t for pool in self.origins.values() for t in pool)]
