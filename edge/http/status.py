"""Cache-Status (RFC 9211) built from what happened, never assembled by handlers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class Fwd(StrEnum):
    """Why the request went upstream (RFC 9211 §2.2)."""

    BYPASS = "bypass"
    METHOD = "method"
    MISS = "miss"
    VARY_MISS = "vary-miss"
    REQUEST = "request"
    STALE = "stale"


@dataclass(slots=True)
class CacheStatus:
    """One node's entry: a hit, or the reason and outcome of forwarding."""

    fwd: Fwd | None = None
    fwd_status: int | None = None
    ttl: float | None = None
    stored: bool = False
    collapsed: bool = False
    detail: str | None = None
    generated: bool = False  # the node answered itself (an error), neither hit nor forwarded
    served_stale: bool = False  # a stale stored response answered (while revalidating, on error)

    @property
    def hit(self) -> bool:
        return self.fwd is None and not self.generated

    def render(self, name: str, sent_status: int) -> str:
        parts = [name]
        if self.hit:
            parts.append("hit")
        elif self.fwd is not None:
            parts.append(f"fwd={self.fwd}")
            if self.fwd_status is not None and self.fwd_status != sent_status:
                parts.append(f"fwd-status={self.fwd_status}")
        if self.ttl is not None:
            parts.append(f"ttl={math.floor(self.ttl)}")
        if self.stored:
            parts.append("stored")
        if self.collapsed:
            parts.append("collapsed")
        if self.detail:
            parts.append(f"detail={self.detail}")
        return "; ".join(parts)

    def label(self) -> str:
        """A small, fixed set of values for the requests-by-cache-status metric."""
        if self.fwd is None:
            return "hit" if self.ttl is None or self.ttl >= 0 else "stale"
        if self.served_stale:
            return "stale"
        if self.fwd is Fwd.STALE:
            return "revalidated" if self.fwd_status == 304 else "refreshed"
        if self.collapsed:
            return "collapsed"
        if self.fwd in (Fwd.METHOD, Fwd.BYPASS):
            return "pass"
        return "miss"


def append_entry(upstream_value: str | None, entry: str) -> str:
    """Our entry after those of the caches behind us (the list grows toward the client)."""
    return f"{upstream_value}, {entry}" if upstream_value else entry
