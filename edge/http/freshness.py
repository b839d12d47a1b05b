"""Freshness and age (RFC 9111 §4.2, §5.2; RFC 5861 stale extensions).

No I/O. Instants are seconds since the epoch, passed in; the clock is read
only as a default where a caller gives no `now`.
"""

from __future__ import annotations

import calendar
import functools
import re
import time

from pinedge.edge.http.cachecontrol import DELTA_SECONDS_MAX, Directives, Headers

# RFC 9110 §15.1: status codes defined as heuristically cacheable.
HEURISTICALLY_CACHEABLE: frozenset[int] = frozenset(
    {200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501}
)

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {name.lower(): number for number, name in enumerate(_MONTHS, start=1)}
_DAY = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAY = "(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH = "(?P<month>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = r"(?P<hour>\d\d):(?P<minute>\d\d):(?P<second>\d\d)"
_FLAGS = re.ASCII | re.IGNORECASE
_IMF_FIXDATE = re.compile(rf"{_DAY}, (?P<day>\d\d) {_MONTH} (?P<year>\d{{4}}) {_TIME} GMT", _FLAGS)
_RFC850_DATE = re.compile(
    rf"{_LONG_DAY}, (?P<day>\d\d)-{_MONTH}-(?P<year>\d\d) {_TIME} GMT", _FLAGS
)
_ASCTIME_DATE = re.compile(rf"{_DAY} {_MONTH} (?P<day>[ \d]\d) {_TIME} (?P<year>\d{{4}})", _FLAGS)
DATE_MEMO_LENGTH = 64  # longer values are parsed but not remembered (bounds the memo's bytes)


def parse_http_date(value: str | None, *, now: float | None = None) -> float | None:
    """An HTTP-date (RFC 9110 §5.6.7) as a timestamp; None when it is not one.

    `now` (default: the clock) places an RFC 850 two-digit year: one more than
    50 years ahead of it means the previous century.
    """
    if value is None:
        return None
    parsed = _remembered_date(value) if len(value) <= DATE_MEMO_LENGTH else _read_date(value)
    if isinstance(parsed, tuple):
        year = _two_digit_year(parsed[0], time.time() if now is None else now)
        return _timestamp(year, *parsed[1:])
    return parsed


def _read_date(value: str) -> float | tuple[int, int, int, int, int, int] | None:
    """The timestamp of an IMF-fixdate or asctime-date; the fields of an RFC 850
    date, whose century depends on the clock; None for anything else."""
    value = value.strip()
    for pattern in (_IMF_FIXDATE, _RFC850_DATE, _ASCTIME_DATE):
        found = pattern.fullmatch(value)
        if found is not None:
            break
    else:
        return None
    fields = (
        int(found["year"]),
        _MONTH_NUMBER[found["month"].lower()],
        int(found["day"]),
        int(found["hour"]),
        int(found["minute"]),
        int(found["second"]),
    )
    if pattern is _RFC850_DATE:
        return fields
    return _timestamp(*fields)


# A response's Date is the same for a whole second, and every date is read several
# times (freshness, preconditions, If-Range): recent ones are remembered.
_remembered_date = functools.lru_cache(maxsize=256)(_read_date)


def _two_digit_year(yy: int, now: float) -> int:
    this_year = time.gmtime(now).tm_year
    year = this_year - this_year % 100 + yy
    return year - 100 if year > this_year + 50 else year


def _timestamp(
    year: int, month: int, day: int, hour: int, minute: int, second: int
) -> float | None:
    if year < 1 or hour > 23 or minute > 59 or second > 60:
        return None
    if not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def format_http_date(timestamp: float) -> str:
    """IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`."""
    t = time.gmtime(timestamp)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def _age_value(headers: Headers) -> int:
    """Age (§5.1): the first value; 0 when absent or not delta-seconds."""
    lines = headers.getall("age", ())
    if not lines:
        return 0
    first = lines[0].split(",", 1)[0].strip()
    if not first.isascii() or not first.isdigit():
        return 0
    return min(int(first), DELTA_SECONDS_MAX)


def _date_value(headers: Headers, fallback: float) -> float:
    date = parse_http_date(headers.get("date"))
    return fallback if date is None else date


def corrected_initial_age(headers: Headers, request_time: float, response_time: float) -> float:
    """The age of a response when it arrived (§4.2.3)."""
    apparent_age = max(0.0, response_time - _date_value(headers, response_time))
    response_delay = response_time - request_time
    corrected_age_value = _age_value(headers) + response_delay
    return max(apparent_age, corrected_age_value)


def current_age(initial_age: float, response_time: float, now: float) -> float:
    """§4.2.3: the initial age plus the time resident in this cache."""
    return initial_age + (now - response_time)


def freshness_lifetime(
    status: int,
    headers: Headers,
    directives: Directives,
    *,
    heuristic_fraction: float = 0.0,
    heuristic_max: float = 86400.0,
    now: float | None = None,
) -> float:
    """Seconds a shared cache may serve the response without validation (§4.2.1).

    A present s-maxage or max-age whose argument is invalid gives 0: §4.2.1
    treats invalid freshness information as stale, and §5.3 says a present
    max-age overrides Expires. `now` (default: the clock) stands in for a
    missing Date. Heuristic freshness (§4.2.2) is off unless `heuristic_fraction` > 0.
    """
    for name in ("s-maxage", "max-age"):
        if name in directives:
            return float(directives.delta_seconds(name) or 0)
    date = _date_value(headers, time.time() if now is None else now)
    expires = headers.getall("expires", ())
    if expires and not directives.targeted:
        expires_at = parse_http_date(expires[0])
        return 0.0 if expires_at is None else max(0.0, expires_at - date)
    return _heuristic_lifetime(status, headers, directives, date, heuristic_fraction, heuristic_max)


def _heuristic_lifetime(
    status: int,
    headers: Headers,
    directives: Directives,
    date: float,
    fraction: float,
    cap: float,
) -> float:
    if fraction <= 0 or (status not in HEURISTICALLY_CACHEABLE and "public" not in directives):
        return 0.0
    last_modified = parse_http_date(headers.get("last-modified"))
    if last_modified is None:
        return 0.0
    return min(cap, max(0.0, fraction * (date - last_modified)))


def has_explicit_expiration(headers: Headers, directives: Directives) -> bool:
    """s-maxage, max-age, or (outside a targeted field, RFC 9213 §2.2) Expires."""
    return (
        "s-maxage" in directives
        or "max-age" in directives
        or (not directives.targeted and "expires" in headers)
    )


def may_serve_stale(directives: Directives) -> bool:
    """Whether the response allows serving it stale at all (§4.2.4, §5.2.2)."""
    return not (
        "must-revalidate" in directives
        or "proxy-revalidate" in directives
        # s-maxage implies proxy-revalidate for a shared cache (§5.2.2.10).
        or "s-maxage" in directives
        or directives.field_names("no-cache") == frozenset()
    )


def stale_while_revalidate(directives: Directives) -> int:
    """RFC 5861 §3: seconds a stale response may be served while it is revalidated."""
    return directives.delta_seconds("stale-while-revalidate") or 0


def stale_if_error(response: Directives, request: Directives) -> int:
    """RFC 5861 §4: seconds a stale response may stand in for an error; the request's wins."""
    from_request = request.delta_seconds("stale-if-error")
    if from_request is not None:
        return from_request
    return response.delta_seconds("stale-if-error") or 0


def client_requires_validation(request: Directives, age: float, lifetime: float) -> bool:
    """Whether the request's own directives rule out serving this entry unvalidated (§5.2.1)."""
    if "no-cache" in request:
        return True
    max_age = request.delta_seconds("max-age")
    if max_age is not None and age > max_age:
        return True
    min_fresh = request.delta_seconds("min-fresh")
    return min_fresh is not None and lifetime - age < min_fresh


def client_accepts_stale(request: Directives, staleness: float) -> bool:
    """max-stale (§5.2.1.2): bare accepts any staleness; max-stale=N up to N seconds."""
    if "max-stale" not in request:
        return False
    if request.items["max-stale"] is None:
        return True
    limit = request.delta_seconds("max-stale")
    return limit is not None and staleness <= limit
