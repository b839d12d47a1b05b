"""What a stored response can do for a request: one decision for the hit path and
the general path alike (RFC 9111 §4.2, §4.2.4, §5.2; RFC 5861)."""

from __future__ import annotations

from enum import Enum

from pinedge.edge.http.cachecontrol import Directives
from pinedge.edge.http.freshness import client_accepts_stale, client_requires_validation
from pinedge.edge.store.entry import Freshness

NO_DIRECTIVES = Directives({})


class Verdict(Enum):
    FRESH = "fresh"
    STALE_ALLOWED = "stale-allowed"  # the client's max-stale accepts it
    STALE_REVALIDATE = "stale-while-revalidate"  # served, and refreshed in the background
    VALIDATE = "validate"  # only after the origin says it is still good


def judge(fresh: Freshness, now: float, request: Directives = NO_DIRECTIVES) -> Verdict:
    """The verdict at `now` on a stored response for a request whose cache
    directives are `request` (those this node honours)."""
    if fresh.must_validate:
        return Verdict.VALIDATE
    age = now - fresh.born
    lifetime = fresh.lifetime
    if request.items and client_requires_validation(request, age, lifetime):
        return Verdict.VALIDATE
    if age < lifetime:
        return Verdict.FRESH
    if not fresh.may_serve_stale:
        return Verdict.VALIDATE
    staleness = age - lifetime
    if client_accepts_stale(request, staleness):
        return Verdict.STALE_ALLOWED
    if staleness <= fresh.stale_while_revalidate and "no-cache" not in request:
        return Verdict.STALE_REVALIDATE
    return Verdict.VALIDATE
