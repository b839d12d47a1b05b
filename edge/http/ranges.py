"""Byte range requests (RFC 9110 §14) and If-Range (§13.1.5). Pure functions, no I/O."""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pinedge.edge.http.freshness import parse_http_date
from pinedge.edge.http.validation import is_entity_tag, strong_match

MAX_RANGES: int = 16

MALFORMED = "malformed Range header"
TOO_MANY = "too many ranges"
BEYOND_END = "range starts beyond the end of the representation"
EMPTY_SUFFIX = "zero-length suffix range"

_OWS = " \t"
# int-range "first-last" / "first-", or suffix-range "-length"; more than 18 digits is absurd.
_RANGE_SPEC = re.compile(r"([0-9]{0,18})-([0-9]{0,18})")


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Inclusive byte positions."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


@dataclass(frozen=True, slots=True)
class RangeRequest:
    kind: Literal["ignore", "satisfiable", "unsatisfiable", "invalid"]
    ranges: tuple[ByteRange, ...] = ()
    reason: str = ""


_IGNORE = RangeRequest("ignore")

# (first-pos, last-pos) of an int-range, or (None, suffix-length) of a suffix-range.
_Spec = tuple[int | None, int | None]


def parse_range(value: str | None, size: int) -> RangeRequest:
    """What to do with a Range field against a representation of `size` bytes (RFC 9110 §14.2)."""
    if value is None or not value.strip(_OWS):
        return _IGNORE
    unit, equals, range_set = value.partition("=")
    if unit.strip(_OWS).lower() != "bytes":
        return _IGNORE
    members = [m.strip(_OWS) for m in range_set.split(",")] if equals else []
    members = [m for m in members if m]  # empty list elements are allowed (§5.6.1)
    if len(members) > MAX_RANGES:
        return RangeRequest("invalid", reason=TOO_MANY)
    specs = _parse_specs(members)
    if not specs:
        return RangeRequest("invalid", reason=MALFORMED)
    return _select(specs, size)


def _parse_specs(members: list[str]) -> list[_Spec]:
    """The parsed range-specs, or [] if any of them is malformed."""
    specs = []
    for member in members:
        spec = _parse_spec(member)
        if spec is None:
            return []
        specs.append(spec)
    return specs


def _parse_spec(member: str) -> _Spec | None:
    match = _RANGE_SPEC.fullmatch(member)
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        return (None, int(last)) if last else None
    if last and int(last) < int(first):
        return None
    return int(first), int(last) if last else None


def _select(specs: list[_Spec], size: int) -> RangeRequest:
    if size == 0 and any(first is None and last for first, last in specs):
        # RFC 9110 §14.1.2 holds a non-zero suffix-range satisfiable even at zero length,
        # so 416 would be wrong, yet no Content-Range can describe it; §14.2 allows ignoring.
        return _IGNORE
    ranges = [r for r in (_resolve(spec, size) for spec in specs) if r is not None]
    if not ranges:
        int_range = any(first is not None for first, _ in specs)
        return RangeRequest("unsatisfiable", reason=BEYOND_END if int_range else EMPTY_SUFFIX)
    return RangeRequest("satisfiable", _coalesce(ranges))


def _resolve(spec: _Spec, size: int) -> ByteRange | None:
    first, last = spec
    if first is None:
        suffix = last or 0
        return ByteRange(max(0, size - suffix), size - 1) if suffix and size else None
    if first >= size:
        return None
    return ByteRange(first, size - 1 if last is None else min(last, size - 1))


def _coalesce(ranges: list[ByteRange]) -> tuple[ByteRange, ...]:
    """Merge overlapping and adjacent ranges (RFC 9110 §14.2).

    Each merged range keeps the place of its earliest member in the request, since parts
    SHOULD come in the requested order (RFC 9110 §15.3.7.2).
    """
    by_start = sorted(range(len(ranges)), key=lambda i: ranges[i].start)
    groups: list[tuple[int, ByteRange]] = []
    for i in by_start:
        current = ranges[i]
        if groups and current.start <= groups[-1][1].end + 1:
            place, merged = groups[-1]
            end = max(merged.end, current.end)
            groups[-1] = (min(place, i), ByteRange(merged.start, end))
        else:
            groups.append((i, current))
    return tuple(r for _, r in sorted(groups, key=lambda group: group[0]))


def if_range_allows(
    if_range: str | None, etag: str | None, last_modified: float | None, date: float | None
) -> bool:
    """Whether a Range may be honoured given If-Range (RFC 9110 §13.1.5)."""
    if if_range is None:
        return True
    value = if_range.strip(_OWS)
    if value.startswith(('"', 'W/"')):
        return is_entity_tag(value) and etag is not None and strong_match(value, etag)
    validator = parse_http_date(value)
    return (
        validator is not None
        and last_modified is not None
        and date is not None
        and last_modified == validator
        # A Last-Modified is strong only if at least a second older than Date (§8.8.2.2).
        and last_modified <= date - 1
    )


def content_range(r: ByteRange, size: int) -> str:
    return f"bytes {r.start}-{r.end}/{size}"


def unsatisfied_range(size: int) -> str:
    return f"bytes */{size}"


def multipart_content_type(boundary: str) -> str:
    return f"multipart/byteranges; boundary={boundary}"


def multipart_byteranges(
    ranges: Sequence[ByteRange],
    body: bytes | memoryview,
    content_type: str | None,
    size: int,
    boundary: str,
) -> bytes:
    """A multipart/byteranges body (RFC 9110 §14.6) for `ranges` of the full `body`."""
    view = memoryview(body)
    chunks: list[bytes | memoryview] = []
    for r in ranges:
        head = f"--{boundary}\r\n"
        if content_type:
            head += f"Content-Type: {content_type}\r\n"
        head += f"Content-Range: {content_range(r, size)}\r\n\r\n"
        chunks += [head.encode("utf-8", "surrogateescape"), view[r.start : r.end + 1], b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode("utf-8", "surrogateescape"))
    return b"".join(chunks)
