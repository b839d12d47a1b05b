"""The hit path: a plain GET/HEAD that a fresh stored response answers as it is,
from a parsed head or straight from the bytes, with no request object made.

It decides exactly as recv, lookup and judge would for such a request (no
preconditions, ranges, request directives or body) and sends the bytes deliver
would; anything else returns None and takes the general path."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import cast

from aiohttp.http import HttpVersion11 as HTTP11
from aiohttp.http_parser import RawRequestMessage
from multidict import CIMultiDictProxy

from pinedge.edge.http.key import primary_key
from pinedge.edge.http.vary import secondary_key
from pinedge.edge.node.metrics import EdgeMetrics
from pinedge.edge.node.ratelimit import REQUESTS, RateLimiter
from pinedge.edge.pipeline.deliver import FileBody
from pinedge.edge.pipeline.errors import EdgeError
from pinedge.edge.pipeline.judge import Verdict, judge
from pinedge.edge.pipeline.reader import (
    FAST_PATH_BLOCKERS,
    PlainRequest,
    fields_of,
    plain_request,
    variant_fields,
)
from pinedge.edge.pipeline.transaction import Route
from pinedge.edge.store.entry import Entry
from pinedge.edge.store.view import SharedStore
from pinedge.edge.variants.derive import Variants, derived_key

# The hit path remembers how it routed this many (Host, target) pairs, about 600
# bytes each, and as many before them: when full, they become the older ones, and
# those that repeat come back from there without being routed again (a flood of
# new URLs does not send the hot ones through routing all at once).
FAST_KEYS_MAX = 4096
FAST_TARGET_MAX = 1024  # longer targets are not remembered (bounds the memo's bytes)
FRESH = Verdict.FRESH

# key, image parameters, site, and the route (the miss path's, for a key not stored)
Found = tuple[str, tuple[tuple[str, str], ...], str, Route]
# A memo miss, distinct from None (known not to be served here).
UNKNOWN = cast(Found, ("", (), "", None))
# aiohttp's reading of a request's fields, or a plain request's field lines (reader.py)
Fields = CIMultiDictProxy[str] | bytes
Buffers = list[bytes | FileBody]


class HitPath:
    """A worker's hit path; its counters are folded into the metrics when scraped."""

    def __init__(
        self,
        store: SharedStore,
        route: Callable[[str, str], Route],
        limiter: RateLimiter,
        variants: Variants,
        refusal: Callable[[str, float], bytes],
        metrics: EdgeMetrics,
    ) -> None:
        """`route` is recv's routing of a Host and target; `refusal` the bytes of a
        429 for a site and a wait."""
        self.store = store
        self.route = route
        self.limiter = limiter
        self.variants = variants
        self.refusal = refusal
        self.metrics = metrics
        self.keys: dict[tuple[bytes | None, str], Found | None] = {}
        self.older_keys: dict[tuple[bytes | None, str], Found | None] = {}
        # The last buffer from_bytes() read, and what it read there: the miss path
        # reads the same buffer next when the hit path does not answer it.
        self.last_data = b""
        self.last_request: PlainRequest | None = None
        self.hits: dict[int, int] = {}
        self.bytes = 0
        metrics.registry.collectors.append(self.count)

    def from_message(self, message: RawRequestMessage, client: str | None) -> Buffers | None:
        """The answer to a request aiohttp's parser read, as buffers to write."""
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
        return self.serve(method == "HEAD", host, message.path, message.headers, client)

    def from_bytes(self, data: bytes, client: str | None) -> Buffers | None:
        """The answer to a buffer holding exactly one plain request (reader.py)."""
        request = plain_request(data)
        self.last_data, self.last_request = data, request
        if request is None:
            return None
        head_only, host, target, fields = request
        return self.serve(head_only, host, target, fields, client)

    def read(self, data: bytes) -> PlainRequest | None:
        """plain_request(data), as from_bytes() read it when `data` was its last buffer."""
        return self.last_request if self.last_data is data else plain_request(data)

    def serve(
        self, head_only: bool, host: bytes | None, target: str, headers: Fields, client: str | None
    ) -> Buffers | None:
        known = self.keys.get((host, target), UNKNOWN)
        found = self.find(host, target) if known is UNKNOWN else known
        if found is None:
            return None
        key, params, site, _ = found
        store = self.store
        for entry in store.variants(key) or store.reread(key):
            if entry.vary_names:
                if isinstance(headers, bytes):
                    headers = fields_of(headers)
                if secondary_key(entry.vary_names, headers) != entry.vary_values:
                    continue
            now = time.time()
            if entry.kind is not None:
                variant = self.stored_variant(entry, params, headers, now)
                if variant is None:
                    return None
                entry = variant
            wire = entry.wire
            fresh = entry.fresh
            age = now - fresh.born
            # judge(fresh, now) is FRESH, inline (it is asked on every hit): a request
            # without directives gets FRESH while the age is under the lifetime and no
            # unqualified no-cache asks for validation.
            if wire is None or fresh.must_validate or age >= fresh.lifetime:
                return None
            if site in self.limiter.request_sites:
                if client is None:
                    return None  # behind a trusted peer: the client is in X-Forwarded-For
                wait = self.limiter.charge(site, client, REQUESTS)
                if wait:
                    return [self.refusal(site, wait)]
            self.store.hit(entry)
            self.hits[entry.status] = self.hits.get(entry.status, 0) + 1
            head = wire.response_head(age, fresh.lifetime - age)
            if head_only:
                return [head]
            self.bytes += len(entry.body)
            file = entry.file if entry.file_at is None else self.store.sendable(entry)
            if file is not None:
                return [head, FileBody(file[0], file[1], entry.body)]
            return [head, entry.body]
        return None

    def stored_variant(
        self, source: Entry, params: tuple[tuple[str, str], ...], headers: Fields, now: float
    ) -> Entry | None:
        """The stored variant of `source` this request gets, if it is in memory and
        the hit path can tell which it is; otherwise None (the general path)."""
        if judge(source.fresh, now) is not FRESH:
            return None
        if isinstance(headers, bytes):
            found = variant_fields(headers)
            if found is None:
                return None
            fields = found
        else:
            if any(name.lower().startswith("sec-ch-") for name in headers):
                return None
            fields = {}
            for field_name in ("accept", "accept-encoding"):
                if field_name in headers:
                    fields[field_name] = ", ".join(headers.getall(field_name))
        suffix = self.variants.fast_suffix(source, params, fields)
        if suffix is None:
            return None
        derived = self.store.variants(derived_key(source, suffix))
        return derived[0] if derived else None

    def find(self, host: bytes | None, raw_target: str) -> Found | None:
        """(cache key, the edge's image parameters, site) for a Host and request
        target as recv would route them, or None where recv would not simply accept
        them; remembered, since the same few URLs repeat."""
        pair = (host, raw_target)
        found = self.older_keys.get(pair, UNKNOWN)
        if found is UNKNOWN:
            found = None
            if host is not None:
                try:
                    route = self.route(host.decode("latin-1"), raw_target)
                except EdgeError:
                    pass
                else:
                    key = primary_key("http", route.host, route.target)
                    found = (key, tuple(sorted(route.params.items())), route.site.name, route)
        if len(raw_target) <= FAST_TARGET_MAX:
            if len(self.keys) >= FAST_KEYS_MAX:
                self.older_keys, self.keys = self.keys, {}
            self.keys[pair] = found
        return found

    def count(self) -> None:
        """Fold the hit path's plain counters into the metrics (run when scraped)."""
        hits, self.hits = self.hits, {}
        self.metrics.add_answers("hit", hits, self.bytes)
        self.bytes = 0
