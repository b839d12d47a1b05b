"""Answering from a stored representation: validators, 304, Range, 206 and 416.

The grammar (HTTP-dates, entity-tags, Range) and the comparisons are the edge's
(pinedge.edge.http); only the answer is the origin's own, since it is an origin,
not a cache: If-None-Match (or, without it, If-Modified-Since) first, then
If-Range and a single range, as RFC 9110 §13.2.2 orders them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web

from pinedge.edge.http.freshness import format_http_date, parse_http_date
from pinedge.edge.http.ranges import content_range, if_range_allows, parse_range, unsatisfied_range
from pinedge.edge.http.validation import parse_etags, weak_match

# Headers a 304 repeats (RFC 9110 §15.4.5); representation metadata is left out.
_NOT_MODIFIED_KEEPS = (
    "Cache-Control",
    "ETag",
    "Last-Modified",
    "Surrogate-Key",
    "Content-Location",
    "Vary",
    "Expires",
)


@dataclass(frozen=True)
class Representation:
    """A response body with the metadata needed to answer any GET or HEAD for it."""

    body: bytes
    content_type: str
    cache_control: str
    etag: str | None = None
    last_modified: int | None = None  # seconds since the epoch
    surrogate_key: str | None = None
    ranges: bool = False  # answer Range requests
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)

    def header_block(self) -> dict[str, str]:
        headers = {"Content-Type": self.content_type, "Cache-Control": self.cache_control}
        if self.etag is not None:
            headers["ETag"] = self.etag
        if self.last_modified is not None:
            headers["Last-Modified"] = format_http_date(self.last_modified)
        if self.surrogate_key:
            headers["Surrogate-Key"] = self.surrogate_key
        if self.ranges:
            headers["Accept-Ranges"] = "bytes"
        headers.update(self.headers)
        return headers


def not_modified(
    if_none_match: str | None,
    if_modified_since: str | None,
    etag: str | None,
    last_modified: int | None,
) -> bool:
    """Whether a GET/HEAD with these preconditions should be answered with 304.

    If-None-Match, when present, decides alone (If-Modified-Since is then ignored).
    """
    if if_none_match is not None:
        tags = parse_etags(if_none_match)
        if tags == "*":
            return True
        return etag is not None and any(weak_match(tag, etag) for tag in tags)
    if if_modified_since is not None and last_modified is not None:
        since = parse_http_date(if_modified_since)
        return since is not None and last_modified <= since
    return False


def respond(request: web.BaseRequest, rep: Representation) -> web.Response:
    """The response to a GET or HEAD for `rep`: 200, 304, 206 or 416."""
    headers = rep.header_block()
    cacheable_status = rep.status == 200
    if cacheable_status and not_modified(
        request.headers.get("If-None-Match"),
        request.headers.get("If-Modified-Since"),
        rep.etag,
        rep.last_modified,
    ):
        kept = {k: v for k, v in headers.items() if k in _NOT_MODIFIED_KEEPS}
        return web.Response(status=304, headers=kept)
    if (
        cacheable_status
        and rep.ranges
        and request.method == "GET"
        and if_range_allows(
            request.headers.get("If-Range"), rep.etag, rep.last_modified, time.time()
        )
    ):
        size = len(rep.body)
        asked = parse_range(request.headers.get("Range"), size)
        if asked.kind == "unsatisfiable":
            headers.update(
                {
                    "Content-Range": unsatisfied_range(size),
                    "Content-Type": "text/plain; charset=utf-8",
                    "Cache-Control": "no-store",
                }
            )
            return web.Response(status=416, body=b"range not satisfiable\n", headers=headers)
        # Several ranges get the whole representation, as RFC 9110 §14.2 allows;
        # a malformed Range is ignored.
        if asked.kind == "satisfiable" and len(asked.ranges) == 1:
            chosen = asked.ranges[0]
            headers["Content-Range"] = content_range(chosen, size)
            body = rep.body[chosen.start : chosen.end + 1]
            return web.Response(status=206, body=body, headers=headers)
    return web.Response(status=rep.status, body=rep.body, headers=headers)
