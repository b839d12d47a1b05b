"""A stored response and what the cache precomputes about it when it is stored."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from pinedge.edge.http import freshness
from pinedge.edge.http.cachecontrol import Directives, response_directives
from pinedge.edge.http.storable import fields_needing_validation
from pinedge.edge.http.validation import merge_not_modified
from pinedge.edge.store.objectfile import variant_id
from pinedge.edge.store.tags import TAG_FIELDS, tags_of

HEADER_OVERHEAD = 64  # per stored field line, for the byte budget


@dataclass(frozen=True, slots=True)
class Freshness:
    """What the stored headers say about freshness, computed once per header block."""

    directives: Directives
    targeted: str | None
    lifetime: float
    initial_age: float
    born: float  # when its age was 0 (RFC 9111 §4.2.3): its age at `now` is now - born
    request_time: float
    response_time: float
    may_serve_stale: bool
    stale_while_revalidate: int
    no_cache_fields: frozenset[str]
    must_validate: bool  # unqualified no-cache: every use needs a validation (RFC 9111 §5.2.2.4)
    etag: str | None
    last_modified: float | None
    date: float | None


@dataclass(slots=True)
class Entry:
    """One stored response: a variant of its primary key, selected by `vary_values`."""

    key: str
    vary_names: tuple[str, ...]
    vary_values: tuple[str | None, ...]
    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    body: bytes
    fresh: Freshness
    tags: frozenset[str]
    size: int = field(init=False)
    vid: str = field(init=False)
    wire: Any = field(default=None, init=False)  # deliver.Wire, set when stored
    # An open descriptor of the stored file and the body's offset in it, for
    # sendfile on the hit path; set by the store for bodies worth it, for a
    # response this worker stored at its first hit (`file_at`, the body's offset
    # and the file's size, until then).
    file: tuple[int, int] | None = field(default=None, init=False)
    file_at: tuple[int, int] | None = field(default=None, init=False)
    # "image" or "text" when answers are variants of this entry (variants.py)
    kind: str | None = field(default=None, init=False)
    used: bool = field(default=False, init=False)  # hit since the worker last looked

    def __post_init__(self) -> None:
        self.vid = variant_id(self.key, self.vary_names, self.vary_values)
        header_bytes = sum(len(k) + len(v) + HEADER_OVERHEAD for k, v in self.headers.items())
        self.size = len(self.body) + header_bytes + len(self.key) + 256

    def age(self, now: float) -> float:
        return now - self.fresh.born

    def ttl(self, now: float) -> float:
        """Seconds of freshness left; negative once stale."""
        return self.fresh.lifetime - self.age(now)

    @classmethod
    def build(
        cls,
        key: str,
        vary: tuple[tuple[str, ...], tuple[str | None, ...]],
        status: int,
        reason: str,
        headers: CIMultiDictProxy[str],
        body: bytes,
        times: tuple[float, float],
        settings: FreshnessSettings,
    ) -> Entry:
        """An entry with its freshness and tags worked out from its headers;
        `times` are the request and response times of the response it stores."""
        return cls(
            key=key,
            vary_names=vary[0],
            vary_values=vary[1],
            status=status,
            reason=reason,
            headers=headers,
            body=body,
            fresh=compute_freshness(status, headers, times[0], times[1], settings),
            tags=tags_in(headers),
        )

    def derive(self, key: str, headers: CIMultiDictProxy[str], body: bytes) -> Entry:
        """An entry made from this one (another format, width or coding): its own
        key, headers and body; this one's freshness and tags, which its headers
        (this one's, with another ETag, Vary and type) would give again."""
        return Entry(
            key=key,
            vary_names=(),
            vary_values=(),
            status=self.status,
            reason=self.reason,
            headers=headers,
            body=body,
            fresh=replace(self.fresh, etag=headers.get("ETag")),
            tags=self.tags,
        )

    def updated(
        self,
        not_modified: CIMultiDictProxy[str],
        request_time: float,
        response_time: float,
        settings: FreshnessSettings,
    ) -> Entry:
        """A copy with headers refreshed from a 304 (RFC 9111 §3.2, §4.3.4)."""
        headers = CIMultiDictProxy(merge_not_modified(self.headers, not_modified))
        vary = (self.vary_names, self.vary_values)
        times = (request_time, response_time)
        return Entry.build(
            self.key, vary, self.status, self.reason, headers, self.body, times, settings
        )


@dataclass(frozen=True, slots=True)
class FreshnessSettings:
    targeted_fields: tuple[str, ...]
    heuristic_fraction: float
    heuristic_max: float


def compute_freshness(
    status: int,
    headers: CIMultiDictProxy[str] | CIMultiDict[str],
    request_time: float,
    response_time: float,
    settings: FreshnessSettings,
) -> Freshness:
    directives, targeted = response_directives(headers, settings.targeted_fields)
    lifetime = freshness.freshness_lifetime(
        status,
        headers,
        directives,
        heuristic_fraction=settings.heuristic_fraction,
        heuristic_max=settings.heuristic_max,
        now=response_time,
    )
    initial_age = freshness.corrected_initial_age(headers, request_time, response_time)
    remaining = upstream_ttl(headers)
    if remaining is not None:
        # A cache upstream (a shield) said how long this stays fresh; it may know
        # better (it served it stale, or it was purged there), so it can only
        # shorten the lifetime, never lengthen it.
        lifetime = min(lifetime, initial_age + remaining)
    return Freshness(
        directives=directives,
        targeted=targeted,
        lifetime=lifetime,
        initial_age=initial_age,
        born=response_time - freshness.current_age(initial_age, response_time, response_time),
        request_time=request_time,
        response_time=response_time,
        may_serve_stale=freshness.may_serve_stale(directives),
        stale_while_revalidate=freshness.stale_while_revalidate(directives),
        no_cache_fields=fields_needing_validation(directives),
        must_validate=directives.field_names("no-cache") == frozenset(),
        etag=headers.get("ETag"),
        last_modified=freshness.parse_http_date(headers.get("Last-Modified")),
        date=freshness.parse_http_date(headers.get("Date")),
    )


def tags_in(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    """The tags a response's fields give it."""
    if any(name in headers for name in TAG_FIELDS):
        return tags_of(headers.items())
    return frozenset()


def upstream_ttl(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> float | None:
    """The `ttl` of the last Cache-Status entry (RFC 9211: the cache nearest to
    this one), or None."""
    values = headers.getall("Cache-Status", ())
    if not values:
        return None
    last = values[-1].rsplit(",", 1)[-1]
    for parameter in last.split(";")[1:]:
        name, _, value = parameter.strip().partition("=")
        if name.lower() == "ttl":
            try:
                return float(value)
            except ValueError:
                return None
    return None
