"""Freshness and age: RFC 9111 §4.2, §5.1, §5.2, §5.3; RFC 9110 §5.6.7; RFC 5861; RFC 9213."""

import pytest
from multidict import CIMultiDict

from pinedge.edge.http.cachecontrol import parse_directives, request_directives, response_directives
from pinedge.edge.http.freshness import (
    HEURISTICALLY_CACHEABLE,
    client_accepts_stale,
    client_requires_validation,
    corrected_initial_age,
    current_age,
    format_http_date,
    freshness_lifetime,
    has_explicit_expiration,
    may_serve_stale,
    parse_http_date,
    stale_if_error,
    stale_while_revalidate,
)

T = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT
NOW_2025 = 1_748_736_000.0  # Sun, 01 Jun 2025 00:00:00 GMT
NOV_6_1994 = 784_111_777.0  # Sun, 06 Nov 1994 08:49:37 GMT


def headers(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


def http_date(timestamp: float) -> str:
    return format_http_date(timestamp)


def test_heuristically_cacheable_codes() -> None:
    assert frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501}) == (
        HEURISTICALLY_CACHEABLE
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("Sun, 06 Nov 1994 08:49:37 GMT", NOV_6_1994, id="9110-5.6.7-imf-fixdate"),
        pytest.param("Sunday, 06-Nov-94 08:49:37 GMT", NOV_6_1994, id="9110-5.6.7-rfc850"),
        pytest.param("Sun Nov  6 08:49:37 1994", NOV_6_1994, id="9110-5.6.7-asctime"),
        pytest.param(
            "Wed Nov 16 08:49:37 1994", NOV_6_1994 + 10 * 86400, id="9110-5.6.7-asctime-2-digit-day"
        ),
        pytest.param(
            "Thursday, 01-Jan-70 00:00:00 GMT",
            3_155_760_000.0,
            id="9110-5.6.7-rfc850-45-years-ahead",
        ),
        pytest.param(
            "Wednesday, 01-Jan-75 00:00:00 GMT",
            3_313_526_400.0,
            id="9110-5.6.7-rfc850-50-years-ahead",
        ),
        pytest.param(
            "Thursday, 01-Jan-76 00:00:00 GMT",
            189_302_400.0,
            id="9110-5.6.7-rfc850-over-50-years-ahead-is-past-century",
        ),
        pytest.param("Thu, 01 Jan 1970 00:00:00 GMT", 0.0, id="9110-5.6.7-epoch"),
        pytest.param("Thu, 29 Feb 2024 00:00:00 GMT", 1_709_164_800.0, id="9110-5.6.7-leap-day"),
        pytest.param("Sat, 31 Dec 2016 23:59:60 GMT", 1_483_228_800.0, id="9110-5.6.7-leap-second"),
        pytest.param(
            "  Sun, 06 Nov 1994 08:49:37 GMT ", NOV_6_1994, id="9110-5.6.7-surrounding-whitespace"
        ),
        pytest.param(
            "sun, 06 nov 1994 08:49:37 gmt", NOV_6_1994, id="9110-5.6.7-robust-to-letter-case"
        ),
        pytest.param(None, None, id="9110-5.6.7-absent"),
        pytest.param("", None, id="9110-5.6.7-empty"),
        pytest.param("0", None, id="9110-5.6.7-zero"),
        pytest.param("-1", None, id="9110-5.6.7-negative"),
        pytest.param("784111777", None, id="9110-5.6.7-epoch-seconds"),
        pytest.param("1994-11-06T08:49:37Z", None, id="9110-5.6.7-iso-8601"),
        pytest.param("Sun, 06 Nov 1994 08:49:37 UTC", None, id="9110-5.6.7-not-gmt"),
        pytest.param("Sun, 06 Nov 1994 08:49:37 +0000", None, id="9110-5.6.7-numeric-zone"),
        pytest.param("Sun, 06 Nov 1994 08:49:37", None, id="9110-5.6.7-no-zone"),
        pytest.param("Sun, 6 Nov 1994 08:49:37 GMT", None, id="9110-5.6.7-one-digit-day"),
        pytest.param("Sun, 06 Nov 94 08:49:37 GMT", None, id="9110-5.6.7-imf-two-digit-year"),
        pytest.param("Sun, 06 Foo 1994 08:49:37 GMT", None, id="9110-5.6.7-bad-month"),
        pytest.param("Sun, 31 Feb 1994 08:49:37 GMT", None, id="9110-5.6.7-no-such-day"),
        pytest.param("Wed, 29 Feb 2023 00:00:00 GMT", None, id="9110-5.6.7-not-a-leap-year"),
        pytest.param("Sun, 06 Nov 1994 24:00:00 GMT", None, id="9110-5.6.7-hour-24"),
        pytest.param("Sun, 06 Nov 1994 08:60:00 GMT", None, id="9110-5.6.7-minute-60"),
        pytest.param("Sun, 06 Nov 1994 08:49:61 GMT", None, id="9110-5.6.7-second-61"),
        pytest.param("Sun, 06 Nov 0000 08:49:37 GMT", None, id="9110-5.6.7-year-zero"),
        pytest.param("Sun, \uff10\uff16 Nov 1994 08:49:37 GMT", None, id="9110-5.6.7-wide-digits"),
        pytest.param("Sun, 06 Nov 1994 08:49:37 GMT junk", None, id="9110-5.6.7-trailing-junk"),
    ],
)
def test_parse_http_date(value: str | None, expected: float | None) -> None:
    assert parse_http_date(value, now=NOW_2025) == expected


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        pytest.param(NOV_6_1994, "Sun, 06 Nov 1994 08:49:37 GMT", id="9110-5.6.7-imf-fixdate"),
        pytest.param(0.0, "Thu, 01 Jan 1970 00:00:00 GMT", id="9110-5.6.7-epoch"),
        pytest.param(NOV_6_1994 + 0.9, "Sun, 06 Nov 1994 08:49:37 GMT", id="9110-5.6.7-fraction"),
        pytest.param(1_709_164_800.0, "Thu, 29 Feb 2024 00:00:00 GMT", id="9110-5.6.7-leap-day"),
        pytest.param(T, "Tue, 14 Nov 2023 22:13:20 GMT", id="9110-5.6.7-recent"),
    ],
)
def test_format_http_date(timestamp: float, expected: str) -> None:
    assert format_http_date(timestamp) == expected
    assert parse_http_date(expected) == float(int(timestamp))


@pytest.mark.parametrize(
    ("pairs", "request_time", "response_time", "expected"),
    [
        pytest.param([("Date", http_date(T))], T, T, 0.0, id="9111-4.2.3-fresh-from-origin"),
        pytest.param(
            [("Date", http_date(T))], T, T + 2, 2.0, id="9111-4.2.3-response-delay-counts"
        ),
        pytest.param(
            [("Date", http_date(T)), ("Age", "100")],
            T,
            T + 3,
            103.0,
            id="9111-4.2.3-upstream-age-plus-response-delay",
        ),
        pytest.param(
            [("Date", http_date(T - 600)), ("Age", "10")],
            T - 1,
            T,
            600.0,
            id="9111-4.2.3-apparent-age-wins",
        ),
        pytest.param(
            [("Date", http_date(T + 60))], T, T, 0.0, id="9111-4.2.3-date-in-future-clamped"
        ),
        pytest.param([("Age", "5")], T, T + 1, 6.0, id="9111-4.2.3-date-absent"),
        pytest.param(
            [("Date", "yesterday"), ("Age", "5")], T, T + 1, 6.0, id="9111-4.2.3-date-invalid"
        ),
        pytest.param(
            [("Date", http_date(T)), ("Age", "abc")], T, T + 1, 1.0, id="9111-5.1-age-invalid"
        ),
        pytest.param(
            [("Date", http_date(T)), ("Age", "-5")], T, T + 1, 1.0, id="9111-5.1-age-negative"
        ),
        pytest.param(
            [("Date", http_date(T)), ("Age", "1.5")], T, T + 1, 1.0, id="9111-5.1-age-decimal"
        ),
        pytest.param(
            [("Date", http_date(T)), ("Age", "30"), ("Age", "50")],
            T,
            T + 1,
            31.0,
            id="9111-5.1-age-first-line",
        ),
        pytest.param(
            [("Date", http_date(T)), ("Age", "30, 50")],
            T,
            T + 1,
            31.0,
            id="9111-5.1-age-first-member",
        ),
        pytest.param(
            [("Date", http_date(T)), ("Age", "99999999999")],
            T,
            T + 1,
            2.0**31 + 1,
            id="9111-1.2.2-age-clamped",
        ),
    ],
)
def test_corrected_initial_age(
    pairs: list[tuple[str, str]], request_time: float, response_time: float, expected: float
) -> None:
    assert corrected_initial_age(headers(*pairs), request_time, response_time) == expected


@pytest.mark.parametrize(
    ("initial_age", "response_time", "now", "expected"),
    [
        pytest.param(0.0, T, T, 0.0, id="9111-4.2.3-just-stored"),
        pytest.param(10.0, T, T + 5, 15.0, id="9111-4.2.3-resident-time-added"),
        pytest.param(103.0, T, T + 60, 163.0, id="9111-4.2.3-upstream-age-and-resident"),
    ],
)
def test_current_age(initial_age: float, response_time: float, now: float, expected: float) -> None:
    assert current_age(initial_age, response_time, now) == expected


DATE = ("Date", http_date(T))
LAST_MODIFIED = ("Last-Modified", http_date(T - 100_000))
CC = "Cache-Control"
CDN = "CDN-Cache-Control"
HEURISTIC = {"heuristic_fraction": 0.1}


@pytest.mark.parametrize(
    ("status", "pairs", "options", "expected"),
    [
        pytest.param(200, [DATE, (CC, "max-age=60")], {}, 60.0, id="9111-5.2.2.1-max-age"),
        pytest.param(200, [DATE, (CC, "max-age=0")], {}, 0.0, id="9111-5.2.2.1-max-age-zero"),
        pytest.param(
            200, [DATE, (CC, 'max-age="60"')], {}, 60.0, id="9111-5.2-max-age-quoted-form"
        ),
        pytest.param(
            200,
            [DATE, (CC, "max-age=60, s-maxage=120")],
            {},
            120.0,
            id="9111-5.2.2.10-s-maxage-over-max-age",
        ),
        pytest.param(
            200,
            [DATE, (CC, "s-maxage=0, max-age=60")],
            {},
            0.0,
            id="9111-5.2.2.10-s-maxage-zero-over-max-age",
        ),
        pytest.param(
            200,
            [DATE, (CC, "max-age=60"), ("Expires", http_date(T + 3600))],
            {},
            60.0,
            id="9111-5.3-max-age-overrides-expires",
        ),
        pytest.param(
            200,
            [DATE, (CC, "s-maxage=30"), ("Expires", http_date(T + 3600))],
            {},
            30.0,
            id="9111-5.3-s-maxage-overrides-expires",
        ),
        pytest.param(
            200,
            [DATE, (CC, "max-age=abc"), ("Expires", http_date(T + 3600))],
            {},
            0.0,
            id="9111-4.2.1-invalid-max-age-is-stale",
        ),
        pytest.param(
            200, [DATE, (CC, "max-age=-1")], {}, 0.0, id="9111-4.2.1-negative-max-age-is-stale"
        ),
        pytest.param(
            200,
            [DATE, (CC, "s-maxage=abc, max-age=60")],
            {},
            0.0,
            id="9111-4.2.1-invalid-s-maxage-is-stale",
        ),
        pytest.param(
            200,
            [DATE, (CC, "max-age=99999999999")],
            {},
            2.0**31,
            id="9111-1.2.2-huge-max-age-clamped",
        ),
        pytest.param(
            200,
            [DATE, (CC, "max-age=60, max-age=10")],
            {},
            60.0,
            id="9111-4.2.1-duplicate-max-age-first-wins",
        ),
        pytest.param(
            200,
            [DATE, ("Expires", http_date(T + 3600))],
            {},
            3600.0,
            id="9111-5.3-expires-minus-date",
        ),
        pytest.param(
            200,
            [DATE, ("Expires", "Tue Nov 14 22:23:20 2023")],
            {},
            600.0,
            id="9111-5.3-expires-asctime",
        ),
        pytest.param(
            200, [DATE, ("Expires", http_date(T - 3600))], {}, 0.0, id="9111-5.3-expires-past"
        ),
        pytest.param(
            200, [DATE, ("Expires", http_date(T))], {}, 0.0, id="9111-5.3-expires-equals-date"
        ),
        pytest.param(
            200,
            [DATE, LAST_MODIFIED, ("Expires", "0")],
            HEURISTIC,
            0.0,
            id="9111-5.3-expires-zero-is-past-not-heuristic",
        ),
        pytest.param(
            200, [DATE, ("Expires", "soon")], {}, 0.0, id="9111-5.3-expires-garbage-is-past"
        ),
        pytest.param(
            200,
            [DATE, ("Expires", http_date(T + 60)), ("Expires", http_date(T + 3600))],
            {},
            60.0,
            id="9111-4.2.1-multiple-expires-first-wins",
        ),
        pytest.param(
            200,
            [("Expires", http_date(T + 100))],
            {"now": T},
            100.0,
            id="9111-5.3-expires-without-date-uses-now",
        ),
        pytest.param(200, [DATE, LAST_MODIFIED], {}, 0.0, id="9111-4.2.2-heuristic-off-by-default"),
        pytest.param(
            200, [DATE, LAST_MODIFIED], HEURISTIC, 10_000.0, id="9111-4.2.2-heuristic-fraction"
        ),
        pytest.param(
            200,
            [DATE, ("Last-Modified", http_date(T - 10_000_000))],
            HEURISTIC,
            86_400.0,
            id="9111-4.2.2-heuristic-default-cap",
        ),
        pytest.param(
            200,
            [DATE, LAST_MODIFIED],
            {"heuristic_fraction": 0.1, "heuristic_max": 3600.0},
            3600.0,
            id="9111-4.2.2-heuristic-cap",
        ),
        pytest.param(
            200,
            [DATE, ("Last-Modified", http_date(T + 100))],
            HEURISTIC,
            0.0,
            id="9111-4.2.2-heuristic-last-modified-in-future",
        ),
        pytest.param(200, [DATE], HEURISTIC, 0.0, id="9111-4.2.2-heuristic-needs-last-modified"),
        pytest.param(
            200,
            [DATE, ("Last-Modified", "yesterday")],
            HEURISTIC,
            0.0,
            id="9111-4.2.2-heuristic-invalid-last-modified",
        ),
        pytest.param(
            404, [DATE, LAST_MODIFIED], HEURISTIC, 10_000.0, id="9111-4.2.2-heuristic-404"
        ),
        pytest.param(
            302, [DATE, LAST_MODIFIED], HEURISTIC, 0.0, id="9111-4.2.2-heuristic-not-for-302"
        ),
        pytest.param(
            302,
            [DATE, LAST_MODIFIED, (CC, "public")],
            HEURISTIC,
            10_000.0,
            id="9111-4.2.2-heuristic-public-on-302",
        ),
        pytest.param(
            200,
            [LAST_MODIFIED],
            {"heuristic_fraction": 0.1, "now": T},
            10_000.0,
            id="9111-4.2.2-heuristic-without-date-uses-now",
        ),
        pytest.param(200, [DATE], {}, 0.0, id="9111-4.2.1-nothing-explicit"),
        pytest.param(
            200,
            [DATE, (CC, "max-age=60"), (CDN, "max-age=600")],
            {},
            600.0,
            id="9213-2.2-targeted-max-age",
        ),
        pytest.param(
            200,
            [DATE, (CC, "max-age=60"), (CDN, "none"), ("Expires", http_date(T + 3600))],
            {},
            0.0,
            id="9213-2.2-targeted-ignores-cache-control-and-expires",
        ),
        pytest.param(
            200,
            [DATE, LAST_MODIFIED, (CDN, "none"), ("Expires", http_date(T + 3600))],
            HEURISTIC,
            10_000.0,
            id="9213-2.2-targeted-without-expiry-falls-to-heuristic",
        ),
        pytest.param(
            200,
            [DATE, (CDN, "Max-Age=600"), ("Expires", http_date(T + 3600))],
            {},
            3600.0,
            id="9213-2.1-invalid-targeted-keeps-expires",
        ),
    ],
)
def test_freshness_lifetime(
    status: int, pairs: list[tuple[str, str]], options: dict[str, float], expected: float
) -> None:
    h = headers(*pairs)
    directives, _ = response_directives(h)
    assert freshness_lifetime(status, h, directives, **options) == expected


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        pytest.param([(CC, "max-age=60")], True, id="9111-5.2.2.1-max-age"),
        pytest.param([(CC, "s-maxage=60")], True, id="9111-5.2.2.10-s-maxage"),
        pytest.param([(CC, "max-age=abc")], True, id="9111-3-invalid-max-age-still-present"),
        pytest.param([("Expires", http_date(T))], True, id="9111-5.3-expires"),
        pytest.param([("Expires", "0")], True, id="9111-5.3-invalid-expires-still-present"),
        pytest.param([(CC, "public")], False, id="9111-5.2.2.9-public-is-not-expiration"),
        pytest.param([LAST_MODIFIED], False, id="9111-4.2.2-last-modified-is-not-expiration"),
        pytest.param([], False, id="9111-4.2.1-nothing"),
        pytest.param(
            [(CDN, "none"), ("Expires", http_date(T))],
            False,
            id="9213-2.2-targeted-ignores-expires",
        ),
        pytest.param(
            [(CDN, "max-age=5"), ("Expires", http_date(T))],
            True,
            id="9213-2.2-targeted-max-age",
        ),
    ],
)
def test_has_explicit_expiration(pairs: list[tuple[str, str]], expected: bool) -> None:
    h = headers(*pairs)
    directives, _ = response_directives(h)
    assert has_explicit_expiration(h, directives) is expected


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        pytest.param("", True, id="9111-4.2.4-no-directives"),
        pytest.param("max-age=60, public", True, id="9111-4.2.4-max-age"),
        pytest.param("stale-while-revalidate=30", True, id="5861-3-stale-while-revalidate"),
        pytest.param("max-age=60, must-revalidate", False, id="9111-5.2.2.2-must-revalidate"),
        pytest.param("proxy-revalidate", False, id="9111-5.2.2.8-proxy-revalidate"),
        pytest.param("s-maxage=60", False, id="9111-5.2.2.10-s-maxage-implies-proxy-revalidate"),
        pytest.param("no-cache", False, id="9111-5.2.2.4-unqualified-no-cache"),
        pytest.param('no-cache=""', False, id="9111-5.2.2.4-empty-list-no-cache"),
        pytest.param('no-cache="Set-Cookie"', True, id="9111-5.2.2.4-qualified-no-cache"),
    ],
)
def test_may_serve_stale(field: str, expected: bool) -> None:
    assert may_serve_stale(parse_directives([field])) is expected


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        pytest.param("stale-while-revalidate=30", 30, id="5861-3-seconds"),
        pytest.param('stale-while-revalidate="30"', 30, id="5861-3-quoted-form"),
        pytest.param("max-age=60", 0, id="5861-3-absent"),
        pytest.param("stale-while-revalidate", 0, id="5861-3-bare"),
        pytest.param("stale-while-revalidate=abc", 0, id="5861-3-invalid"),
        pytest.param("stale-while-revalidate=-1", 0, id="5861-3-negative"),
        pytest.param("stale-while-revalidate=99999999999", 2**31, id="9111-1.2.2-clamped"),
    ],
)
def test_stale_while_revalidate(field: str, expected: int) -> None:
    assert stale_while_revalidate(parse_directives([field])) == expected


@pytest.mark.parametrize(
    ("response", "request_", "expected"),
    [
        pytest.param("stale-if-error=60", "", 60, id="5861-4-response"),
        pytest.param("", "stale-if-error=30", 30, id="5861-4-request"),
        pytest.param("stale-if-error=60", "stale-if-error=30", 30, id="5861-4-request-lowers"),
        pytest.param("stale-if-error=60", "stale-if-error=600", 600, id="5861-4-request-raises"),
        pytest.param("stale-if-error=60", "stale-if-error=0", 0, id="5861-4-request-zero"),
        pytest.param(
            "stale-if-error=60", "stale-if-error=abc", 60, id="5861-4-invalid-request-ignored"
        ),
        pytest.param("stale-if-error=abc", "", 0, id="5861-4-invalid-response"),
        pytest.param("", "", 0, id="5861-4-absent"),
    ],
)
def test_stale_if_error(response: str, request_: str, expected: int) -> None:
    assert stale_if_error(parse_directives([response]), parse_directives([request_])) == expected


@pytest.mark.parametrize(
    ("pairs", "age", "lifetime", "expected"),
    [
        pytest.param([], 10.0, 60.0, False, id="9111-5.2.1-no-directives"),
        pytest.param([(CC, "no-cache")], 0.0, 60.0, True, id="9111-5.2.1.4-no-cache"),
        pytest.param([("Pragma", "no-cache")], 0.0, 60.0, True, id="9111-5.4-pragma-no-cache"),
        pytest.param([(CC, "max-age=30")], 31.0, 60.0, True, id="9111-5.2.1.1-max-age-exceeded"),
        pytest.param([(CC, "max-age=30")], 30.0, 60.0, False, id="9111-5.2.1.1-max-age-equal"),
        pytest.param(
            [(CC, "max-age=0")], 0.0, 60.0, False, id="9111-5.2.1.1-max-age-zero-age-zero"
        ),
        pytest.param([(CC, "max-age=0")], 0.5, 60.0, True, id="9111-5.2.1.1-max-age-zero"),
        pytest.param(
            [(CC, "max-age=abc")], 1000.0, 60.0, False, id="9111-5.2.1.1-invalid-max-age-ignored"
        ),
        pytest.param(
            [(CC, "min-fresh=20")], 30.0, 60.0, False, id="9111-5.2.1.3-min-fresh-satisfied"
        ),
        pytest.param([(CC, "min-fresh=20")], 40.0, 60.0, False, id="9111-5.2.1.3-min-fresh-equal"),
        pytest.param([(CC, "min-fresh=20")], 45.0, 60.0, True, id="9111-5.2.1.3-min-fresh-short"),
        pytest.param(
            [(CC, "max-stale")], 100.0, 60.0, False, id="9111-5.2.1.2-max-stale-unrelated"
        ),
    ],
)
def test_client_requires_validation(
    pairs: list[tuple[str, str]], age: float, lifetime: float, expected: bool
) -> None:
    request = request_directives(headers(*pairs))
    assert client_requires_validation(request, age, lifetime) is expected


@pytest.mark.parametrize(
    ("field", "staleness", "expected"),
    [
        pytest.param("", 10.0, False, id="9111-5.2.1.2-absent"),
        pytest.param("max-stale", 99_999.0, True, id="9111-5.2.1.2-bare-any-staleness"),
        pytest.param("max-stale=60", 60.0, True, id="9111-5.2.1.2-within-limit"),
        pytest.param("max-stale=60", 61.0, False, id="9111-5.2.1.2-over-limit"),
        pytest.param('max-stale="60"', 30.0, True, id="9111-5.2-quoted-form"),
        pytest.param("max-stale=0", 0.5, False, id="9111-5.2.1.2-zero"),
        pytest.param("max-stale=abc", 1.0, False, id="9111-5.2.1.2-invalid"),
    ],
)
def test_client_accepts_stale(field: str, staleness: float, expected: bool) -> None:
    assert client_accepts_stale(parse_directives([field]), staleness) is expected
