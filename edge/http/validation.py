"""Conditional requests (RFC 9110 §13) and updating stored responses (RFC 9111 §3.2, §4.3).

Pure functions of header blocks and timestamps (seconds since the epoch); no I/O.
"""

import re
from collections.abc import Callable
from typing import Literal

from multidict import CIMultiDict

from pinedge.edge.http.freshness import parse_http_date
from pinedge.edge.http.headers import HOP_BY_HOP, Headers, connection_nominated

_OWS = " \t"
_SAFE_METHODS = ("GET", "HEAD")

# entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE ; etagc = %x21 / %x23-7E / obs-text (RFC 9110 §8.8.3)
_ENTITY_TAG = re.compile(r'(?:W/)?"[\x21\x23-\x7e\x80-\U0010ffff]*"')

# The three HTTP-date forms (RFC 9110 §5.6.7): IMF-fixdate, rfc850-date, asctime-date.
_HTTP_DATE = re.compile(
    r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT"
    r"|[A-Z][a-z]{5,8}, \d{2}-[A-Z][a-z]{2}-\d{2} \d{2}:\d{2}:\d{2} GMT"
    r"|[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2} \d{4}"
)

# Fields a 304 must not change in the stored response (RFC 9111 §3.1, §3.2): the stored
# content is kept as it is, so its framing and coding stay those of the stored response.
_NOT_UPDATED = HOP_BY_HOP | {
    "content-length",
    "content-range",
    "content-encoding",
    "transfer-encoding",
    "proxy-authentication-info",
}


def _joined(headers: Headers, name: str) -> str | None:
    """All lines of a list-valued field as one value, or None when the field is absent."""
    lines = headers.getall(name, [])
    return ", ".join(lines) if lines else None


def _single_date(headers: Headers, name: str) -> float | None:
    """The date in a field that must hold exactly one HTTP-date; None if absent or invalid."""
    lines = headers.getall(name, [])
    return parse_http_date(lines[0]) if len(lines) == 1 else None


def _first(headers: Headers, name: str) -> str | None:
    value = headers.get(name)
    return None if value is None else value.strip(_OWS)


def parse_etags(value: str) -> list[str] | Literal["*"]:
    """The entity tags of an If-Match / If-None-Match value (RFC 9110 §13.1.1), or "*".

    Malformed members are skipped.
    """
    if value.strip(_OWS) == "*":
        return "*"
    tags: list[str] = []
    pos, end = 0, len(value)
    while pos < end:
        if value[pos] in ", \t":
            pos += 1
            continue
        match = _ENTITY_TAG.match(value, pos)
        after = _skip_ows(value, match.end()) if match else pos
        if match and (after == end or value[after] == ","):
            tags.append(match.group())
            pos = after
        else:
            comma = value.find(",", pos)
            pos = end if comma < 0 else comma + 1
    return tags


def _skip_ows(value: str, pos: int) -> int:
    while pos < len(value) and value[pos] in _OWS:
        pos += 1
    return pos


def is_entity_tag(value: str) -> bool:
    """Whether `value` is exactly one well-formed entity-tag."""
    return _ENTITY_TAG.fullmatch(value) is not None


def strong_match(a: str, b: str) -> bool:
    """Strong comparison (RFC 9110 §8.8.3.2): both strong and identical."""
    return a == b and a.startswith('"')


def weak_match(a: str, b: str) -> bool:
    """Weak comparison (RFC 9110 §8.8.3.2): opaque-tags identical, either may be weak."""
    opaque = a.removeprefix("W/")
    return opaque == b.removeprefix("W/") and opaque.startswith('"')


def _any_match(field: str, etag: str | None, compare: Callable[[str, str], bool]) -> bool:
    tags = parse_etags(field)
    if tags == "*":
        return True  # a selected representation exists: the caller evaluates a stored one
    return etag is not None and any(compare(tag, etag) for tag in tags)


def evaluate_preconditions(
    method: str,
    request_headers: Headers,
    etag: str | None,
    last_modified: float | None,
    date: float | None,
) -> int | None:
    """412, 304 or None (serve normally) for a request against a stored representation.

    RFC 9110 §13.2.2 steps 1-4; If-Range (step 5) is ranges.if_range_allows. The caller
    only evaluates against a stored 2xx response (RFC 9110 §13.2.1).
    """
    if_match = _joined(request_headers, "If-Match")
    if if_match is not None:
        if not _any_match(if_match, etag, strong_match):
            return 412
    else:
        since = _single_date(request_headers, "If-Unmodified-Since")
        if since is not None and last_modified is not None and last_modified > since:
            return 412

    safe = method in _SAFE_METHODS
    if_none_match = _joined(request_headers, "If-None-Match")
    if if_none_match is not None:
        if _any_match(if_none_match, etag, weak_match):
            return 304 if safe else 412
        return None

    if safe:
        since = _single_date(request_headers, "If-Modified-Since")
        # RFC 9111 §4.3.2: without Last-Modified, the stored response's Date stands in.
        reference = last_modified if last_modified is not None else date
        if since is not None and reference is not None and reference <= since:
            return 304
    return None


def upstream_validators(stored_headers: Headers) -> dict[str, str]:
    """Conditional request fields to revalidate one stored response (RFC 9111 §4.3.1)."""
    validators: dict[str, str] = {}
    etag = _first(stored_headers, "ETag")
    if etag is not None and is_entity_tag(etag):
        validators["If-None-Match"] = etag
    last_modified = _first(stored_headers, "Last-Modified")
    if last_modified is not None and parse_http_date(last_modified) is not None:
        validators["If-Modified-Since"] = last_modified
    return validators


def not_modified_applies(stored_headers: Headers, not_modified_headers: Headers) -> bool:
    """Whether a 304 selects this stored response for update (RFC 9111 §4.3.4)."""
    new_etag = _first(not_modified_headers, "ETag")
    new_last_modified = _first(not_modified_headers, "Last-Modified")
    old_etag = _first(stored_headers, "ETag")
    old_last_modified = _first(stored_headers, "Last-Modified")

    if new_etag is not None and new_etag.startswith('"'):
        return old_etag is not None and strong_match(old_etag, new_etag)
    if new_etag is None and new_last_modified is None:
        return old_etag is None and old_last_modified is None
    if new_etag is not None and (old_etag is None or not weak_match(old_etag, new_etag)):
        return False
    return new_last_modified is None or _same_date(old_last_modified, new_last_modified)


def _same_date(a: str | None, b: str) -> bool:
    if a is None:
        return False
    if a == b:
        return True
    parsed = parse_http_date(a)
    return parsed is not None and parsed == parse_http_date(b)


def merge_not_modified(stored_headers: Headers, not_modified_headers: Headers) -> CIMultiDict[str]:
    """The stored header block updated with a 304's fields (RFC 9111 §3.2).

    A field in the 304 replaces all stored lines of that name, at the first one's place;
    fields new to the stored response are appended in the 304's order.
    """
    skip = _NOT_UPDATED | connection_nominated(not_modified_headers)
    updates: dict[str, list[tuple[str, str]]] = {}
    for name, value in not_modified_headers.items():
        if name.lower() not in skip:
            updates.setdefault(name.lower(), []).append((name, value))

    merged: CIMultiDict[str] = CIMultiDict()
    for name, value in stored_headers.items():
        key = name.lower()
        if key not in updates:
            merged.add(name, value)
        elif key not in merged:
            merged.extend(updates[key])
    for key, lines in updates.items():
        if key not in merged:
            merged.extend(lines)
    return merged


def not_modified_response_headers(stored_headers: Headers) -> CIMultiDict[str]:
    """The fields of a 304 generated from a stored response (RFC 9110 §15.4.5).

    Everything but content metadata (Content-Location excepted) and hop-by-hop fields.
    """
    drop = HOP_BY_HOP | connection_nominated(stored_headers)
    return CIMultiDict(
        [
            (name, value)
            for name, value in stored_headers.items()
            if _kept_in_304(name.lower(), drop)
        ]
    )


def _kept_in_304(key: str, drop: frozenset[str]) -> bool:
    if key in drop:
        return False
    return key == "content-location" or not key.startswith("content-")
