"""Answering from a stored representation: validators, 304, Range, 206 and 416.

Pure functions of header values (`not_modified`, `byte_range`, `if_range_holds`)
and one `respond()` that turns a `Representation` into the response RFC 9110
asks for. Order, as in RFC 9110 §13.2.2: If-None-Match (or, without it,
If-Modified-Since) first, then If-Range and Range.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from typing import Final

from aiohttp import web

_ENTITY_TAG = re.compile(r'\s*((?:W/)?"[^"]*")\s*(?:,|$)')
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
UNSATISFIABLE: Final = "unsatisfiable"

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
            headers["Last-Modified"] = http_date(self.last_modified)
        if self.surrogate_key:
            headers["Surrogate-Key"] = self.surrogate_key
        if self.ranges:
            headers["Accept-Ranges"] = "bytes"
        headers.update(self.headers)
        return headers


def http_date(seconds: float) -> str:
    return formatdate(seconds, usegmt=True)


def parse_http_date(value: str) -> int | None:
    """Seconds since the epoch, or None for a value that is not an HTTP date."""
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None or parsed.tzinfo is None:
        return None
    return int(parsed.timestamp())


def entity_tags(header: str) -> list[str] | None:
    """The entity-tags of an If-None-Match / If-Match value; ["*"] for `*`; None if malformed."""
    if header.strip() == "*":
        return ["*"]
    tags, position = [], 0
    while position < len(header):
        match = _ENTITY_TAG.match(header, position)
        if not match:
            return None
        tags.append(match.group(1))
        position = match.end()
    return tags


def weak_match(a: str, b: str) -> bool:
    """RFC 9110 §8.8.3.2 weak comparison: the opaque tags are equal."""
    return a.removeprefix("W/") == b.removeprefix("W/")


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
        tags = entity_tags(if_none_match)
        if not tags:
            return False
        if tags == ["*"]:
            return True
        return etag is not None and any(weak_match(tag, etag) for tag in tags)
    if if_modified_since is not None and last_modified is not None:
        since = parse_http_date(if_modified_since)
        return since is not None and last_modified <= since
    return False


def if_range_holds(if_range: str | None, etag: str | None, last_modified: int | None) -> bool:
    """Whether an If-Range precondition lets the Range apply (strong comparison)."""
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith('"'):
        return etag is not None and not etag.startswith("W/") and value == etag
    if value.startswith("W/"):
        return False
    since = parse_http_date(value)
    return since is not None and last_modified is not None and since == last_modified


def byte_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """(first, last) byte of a single `bytes=` range, UNSATISFIABLE, or None to send all.

    None covers no Range, other units, syntax errors and multiple ranges (which
    this origin answers with the whole representation, as RFC 9110 allows).
    """
    if header is None:
        return None
    match = _RANGE.match(header)
    if not match:
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:  # suffix: the final N bytes
        length = int(last)
        if length == 0 or size == 0:
            return UNSATISFIABLE
        return max(0, size - length), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        return UNSATISFIABLE
    return start, min(end, size - 1)


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
        and if_range_holds(request.headers.get("If-Range"), rep.etag, rep.last_modified)
    ):
        chosen = byte_range(request.headers.get("Range"), len(rep.body))
        size = len(rep.body)
        if chosen == UNSATISFIABLE:
            headers.update(
                {
                    "Content-Range": f"bytes */{size}",
                    "Content-Type": "text/plain; charset=utf-8",
                    "Cache-Control": "no-store",
                }
            )
            return web.Response(status=416, body=b"range not satisfiable\n", headers=headers)
        if isinstance(chosen, tuple):
            first, last = chosen
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
            return web.Response(status=206, body=rep.body[first : last + 1], headers=headers)
    return web.Response(status=rep.status, body=rep.body, headers=headers)
