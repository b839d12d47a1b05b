"""Whether a shared cache may store a response: RFC 9111 §3, §3.5, §4.1, §5.2.2; RFC 9213."""

from typing import Any

import pytest
from multidict import CIMultiDict

from pinedge.edge.http.cachecontrol import parse_directives, request_directives, response_directives
from pinedge.edge.http.storable import (
    NoStoreReason,
    fields_needing_validation,
    fields_not_to_store,
    no_store_reason,
)

CC = "Cache-Control"
CDN = "CDN-Cache-Control"
DATE = ("Date", "Tue, 14 Nov 2023 22:13:20 GMT")
FUTURE = "Tue, 14 Nov 2023 23:13:20 GMT"
AUTH = ("Authorization", "Bearer abc")
R = NoStoreReason


def reason(
    status: int = 200,
    response: tuple[tuple[str, str], ...] = ((CC, "max-age=60"),),
    request: tuple[tuple[str, str], ...] = (),
    method: str = "GET",
    **options: Any,
) -> NoStoreReason | None:
    request_headers = CIMultiDict(request)
    response_headers = CIMultiDict((DATE, *response))
    return no_store_reason(
        method,
        status,
        request_headers,
        response_headers,
        response_directives(response_headers)[0],
        request_directives(request_headers),
        **options,
    )


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({}, None, id="9111-3-storable-max-age"),
        pytest.param({"method": "HEAD"}, R.METHOD, id="9111-3-head-not-stored"),
        pytest.param({"method": "POST"}, R.METHOD, id="9111-3-post-not-stored"),
        pytest.param({"method": "get"}, R.METHOD, id="9110-9.1-method-case-sensitive"),
        pytest.param({"status": 100}, R.STATUS, id="9111-3-1xx-not-final"),
        pytest.param({"status": 103}, R.STATUS, id="9111-3-103-not-final"),
        pytest.param({"status": 304}, R.STATUS, id="9111-3-304"),
        pytest.param({"status": 206}, R.PARTIAL, id="9111-3-206-partial"),
        pytest.param({"status": 299}, R.STATUS, id="9110-15-unrecognized-2xx"),
        pytest.param({"status": 429}, R.STATUS, id="9110-15-unrecognized-429"),
        pytest.param({"status": 600}, R.STATUS, id="9110-15-out-of-range"),
        pytest.param({"status": 302}, None, id="9111-3-302-with-max-age"),
        pytest.param({"status": 307}, None, id="9111-3-307-with-max-age"),
        pytest.param({"status": 500}, None, id="9111-3-500-with-max-age"),
        pytest.param(
            {"request": ((CC, "no-store"),)}, R.REQUEST_NO_STORE, id="9111-5.2.1.5-request-no-store"
        ),
        pytest.param(
            {"request": ((CC, "no-store"),), "response": ((CC, "no-store"),)},
            R.REQUEST_NO_STORE,
            id="9111-5.2.1.5-request-no-store-checked-first",
        ),
        pytest.param({"response": ((CC, "no-store"),)}, R.NO_STORE, id="9111-5.2.2.5-no-store"),
        pytest.param(
            {"response": ((CC, "max-age=60, No-Store"),)},
            R.NO_STORE,
            id="9111-5.2.2.5-no-store-beats-max-age",
        ),
        pytest.param(
            {"response": ((CC, "max-age=60, must-understand, no-store"),)},
            None,
            id="9111-5.2.2.3-must-understand-overrides-no-store",
        ),
        pytest.param(
            {"status": 307, "response": ((CC, "max-age=60, must-understand, no-store"),)},
            None,
            id="9111-5.2.2.3-must-understand-307",
        ),
        pytest.param(
            {"status": 299, "response": ((CC, "max-age=60, must-understand, no-store"),)},
            R.STATUS,
            id="9111-5.2.2.3-must-understand-unknown-status",
        ),
        pytest.param(
            {"status": 299, "response": ((CC, "max-age=60, must-understand"),)},
            R.STATUS,
            id="9111-3-must-understand-unknown-status-without-no-store",
        ),
        pytest.param(
            {"response": ((CC, "private, max-age=60"),)}, R.PRIVATE, id="9111-5.2.2.7-private"
        ),
        pytest.param(
            {"response": ((CC, 'private="", max-age=60'),)},
            R.PRIVATE,
            id="9111-5.2.2.7-private-empty-list",
        ),
        pytest.param(
            {"response": ((CC, "private=a b, max-age=60"),)},
            R.PRIVATE,
            id="9111-5.2.2.7-private-junk-argument",
        ),
        pytest.param(
            {"response": ((CC, 'private="X-Secret", max-age=60'),)},
            None,
            id="9111-5.2.2.7-qualified-private-storable",
        ),
        pytest.param({"request": (AUTH,)}, R.AUTHORIZATION, id="9111-3.5-authorization"),
        pytest.param(
            {"request": (AUTH,), "response": ((CC, "public, max-age=60"),)},
            None,
            id="9111-3.5-authorization-public",
        ),
        pytest.param(
            {"request": (AUTH,), "response": ((CC, "s-maxage=60"),)},
            None,
            id="9111-3.5-authorization-s-maxage",
        ),
        pytest.param(
            {"request": (AUTH,), "response": ((CC, "must-revalidate, max-age=60"),)},
            None,
            id="9111-3.5-authorization-must-revalidate",
        ),
        pytest.param(
            {"request": (AUTH,), "response": ((CC, "proxy-revalidate, max-age=60"),)},
            R.AUTHORIZATION,
            id="9111-3.5-authorization-proxy-revalidate-not-enough",
        ),
        pytest.param(
            {"request": (AUTH,), "response": ((CC, "public, private"),)},
            R.PRIVATE,
            id="9111-5.2.2.7-private-beats-public",
        ),
        pytest.param(
            {"request": (AUTH,), "response": ((CC, "public"), (CDN, "max-age=60"))},
            R.AUTHORIZATION,
            id="9213-2.2-authorization-judged-by-targeted-field",
        ),
        pytest.param(
            {"response": ((CC, "max-age=60"), ("Vary", "*"))}, R.VARY_STAR, id="9111-4.1-vary-star"
        ),
        pytest.param(
            {"response": ((CC, "max-age=60"), ("Vary", "Accept"), ("Vary", "*"))},
            R.VARY_STAR,
            id="9111-4.1-vary-star-on-second-line",
        ),
        pytest.param(
            {"response": ((CC, "max-age=60"), ("Vary", "Accept-Encoding"))},
            None,
            id="9111-4.1-vary-names-storable",
        ),
        pytest.param(
            {"response": ((CC, "max-age=60"), ("Set-Cookie", "a=b"))},
            R.SET_COOKIE,
            id="set-cookie-not-stored",
        ),
        pytest.param(
            {"response": ((CC, "max-age=60"), ("Set-Cookie", "a=b")), "cache_set_cookie": True},
            None,
            id="set-cookie-stored-when-allowed",
        ),
        pytest.param({"response": ()}, R.NO_FRESHNESS, id="9111-3-nothing-to-go-on"),
        pytest.param(
            {"response": (("ETag", '"v1"'),)}, None, id="9111-3-heuristic-status-with-etag"
        ),
        pytest.param(
            {"response": (("Last-Modified", "Tue, 14 Nov 2023 20:00:00 GMT"),)},
            None,
            id="9111-3-heuristic-status-with-last-modified",
        ),
        pytest.param({"response": (), "heuristic": True}, None, id="9111-4.2.2-heuristic-enabled"),
        pytest.param(
            {"status": 404, "response": (), "heuristic": True},
            None,
            id="9111-4.2.2-heuristic-enabled-404",
        ),
        pytest.param(
            {"status": 302, "response": (("ETag", '"v1"'),), "heuristic": True},
            R.NO_FRESHNESS,
            id="9111-3-302-not-heuristically-cacheable",
        ),
        pytest.param({"status": 302, "response": ((CC, "public"),)}, None, id="9111-3-public-302"),
        pytest.param({"response": (("Expires", FUTURE),)}, None, id="9111-3-expires"),
        pytest.param({"response": (("Expires", "0"),)}, None, id="9111-3-expires-zero-present"),
        pytest.param({"response": ((CC, "max-age=0"),)}, None, id="9111-3-max-age-zero"),
        pytest.param({"response": ((CC, "s-maxage=10"),)}, None, id="9111-3-s-maxage"),
        pytest.param(
            {"response": ((CC, "no-cache"), ("ETag", '"v1"'))},
            None,
            id="9111-5.2.2.4-no-cache-is-storable",
        ),
        pytest.param(
            {"response": ((CC, "max-age=60"), (CDN, "no-store"))},
            R.NO_STORE,
            id="9213-2.2-targeted-no-store",
        ),
        pytest.param(
            {"response": ((CC, "no-store"), (CDN, "max-age=600"))},
            None,
            id="9213-2.2-targeted-overrides-no-store",
        ),
        pytest.param(
            {"response": ((CDN, "none"), ("Expires", FUTURE))},
            R.NO_FRESHNESS,
            id="9213-2.2-targeted-ignores-expires",
        ),
    ],
)
def test_no_store_reason(kwargs: dict[str, Any], expected: NoStoreReason | None) -> None:
    assert reason(**kwargs) == expected


def test_reason_values_are_cache_status_tokens() -> None:
    assert [r.value for r in NoStoreReason] == [
        "method",
        "status",
        "partial",
        "request-no-store",
        "no-store",
        "private",
        "authorization",
        "no-freshness",
        "vary-star",
        "set-cookie",
    ]


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        pytest.param(
            'private="Set-Cookie, X-Secret"',
            frozenset({"set-cookie", "x-secret"}),
            id="9111-5.2.2.7-qualified",
        ),
        pytest.param("private=X-Secret", frozenset({"x-secret"}), id="9111-5.2.2.7-token-form"),
        pytest.param("private", frozenset(), id="9111-5.2.2.7-unqualified"),
        pytest.param('no-cache="X-Secret"', frozenset(), id="9111-5.2.2.7-absent"),
    ],
)
def test_fields_not_to_store(field: str, expected: frozenset[str]) -> None:
    assert fields_not_to_store(parse_directives([field])) == expected


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        pytest.param(
            'no-cache="Set-Cookie, X-Token"',
            frozenset({"set-cookie", "x-token"}),
            id="9111-5.2.2.4-qualified",
        ),
        pytest.param("no-cache=X-Token", frozenset({"x-token"}), id="9111-5.2.2.4-token-form"),
        pytest.param("no-cache", frozenset(), id="9111-5.2.2.4-unqualified"),
        pytest.param('private="X-Token"', frozenset(), id="9111-5.2.2.4-absent"),
    ],
)
def test_fields_needing_validation(field: str, expected: frozenset[str]) -> None:
    assert fields_needing_validation(parse_directives([field])) == expected
