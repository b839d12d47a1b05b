"""Whether a shared cache may store a response (RFC 9111 §3, §3.5, §5.2.2)."""

from __future__ import annotations

from enum import StrEnum

from pinedge.edge.http.cachecontrol import Directives, Headers
from pinedge.edge.http.freshness import HEURISTICALLY_CACHEABLE, has_explicit_expiration
from pinedge.edge.http.vary import vary_names

# Final status codes defined by RFC 9110 whose caching rules this cache
# implements: a response with any other code is never stored (RFC 9110 §15
# lets a cache refuse what it does not recognise), and these are what
# must-understand asks about (RFC 9111 §5.2.2.3). 206 and 304 are excluded:
# partial content is not stored and 304 only updates a stored response.
UNDERSTOOD_STATUSES: frozenset[int] = frozenset(
    {200, 201, 202, 203, 204, 205}
    | {300, 301, 302, 303, 307, 308}
    | set(range(400, 418))
    | {421, 422, 426}
    | set(range(500, 506))
)


class NoStoreReason(StrEnum):
    """Why a response was not stored; the value goes in Cache-Status `detail=`."""

    METHOD = "method"
    STATUS = "status"
    PARTIAL = "partial"
    REQUEST_NO_STORE = "request-no-store"
    NO_STORE = "no-store"
    PRIVATE = "private"
    AUTHORIZATION = "authorization"
    NO_FRESHNESS = "no-freshness"
    VARY_STAR = "vary-star"
    SET_COOKIE = "set-cookie"


def no_store_reason(
    method: str,
    status: int,
    request_headers: Headers,
    response_headers: Headers,
    response: Directives,
    request: Directives,
    *,
    heuristic: bool = False,
    cache_set_cookie: bool = False,
) -> NoStoreReason | None:
    """The first rule that forbids storing the response, or None when it is storable.

    `heuristic` says heuristic freshness is enabled; `cache_set_cookie` allows
    storing responses that carry Set-Cookie.
    """
    if method != "GET":
        return NoStoreReason.METHOD
    if status == 206:
        return NoStoreReason.PARTIAL
    if status not in UNDERSTOOD_STATUSES:
        return NoStoreReason.STATUS
    if "no-store" in request:
        return NoStoreReason.REQUEST_NO_STORE
    # The status is understood here, so must-understand overrides no-store (§5.2.2.3).
    if "no-store" in response and "must-understand" not in response:
        return NoStoreReason.NO_STORE
    if response.field_names("private") == frozenset():
        return NoStoreReason.PRIVATE
    if "authorization" in request_headers and not _allows_authorized(response):
        return NoStoreReason.AUTHORIZATION
    if vary_names(response_headers) is None:
        return NoStoreReason.VARY_STAR
    if (
        "set-cookie" in response_headers
        and not cache_set_cookie
        and "set-cookie" not in fields_not_to_store(response)
    ):
        return NoStoreReason.SET_COOKIE
    if not _has_freshness(status, response_headers, response, heuristic):
        return NoStoreReason.NO_FRESHNESS
    return None


def _allows_authorized(response: Directives) -> bool:
    """§3.5: directives that let a shared cache store a response to an authorized request."""
    return "public" in response or "s-maxage" in response or "must-revalidate" in response


def _has_freshness(status: int, headers: Headers, response: Directives, heuristic: bool) -> bool:
    if has_explicit_expiration(headers, response) or "public" in response:
        return True
    if status not in HEURISTICALLY_CACHEABLE:
        return False
    return heuristic or "etag" in headers or "last-modified" in headers


def fields_not_to_store(directives: Directives) -> frozenset[str]:
    """Field names from a qualified `private="..."` (§5.2.2.7), to strip before storing."""
    return directives.field_names("private") or frozenset()


def fields_needing_validation(directives: Directives) -> frozenset[str]:
    """Field names from a qualified `no-cache="..."` (§5.2.2.4): not served without validation."""
    return directives.field_names("no-cache") or frozenset()
