from typing import Literal

import pytest
from multidict import CIMultiDict

from pinedge.edge.http.validation import (
    evaluate_preconditions,
    merge_not_modified,
    not_modified_applies,
    not_modified_response_headers,
    parse_etags,
    strong_match,
    upstream_validators,
    weak_match,
)

Fields = list[tuple[str, str]]

LM_TEXT = "Sun, 06 Nov 1994 08:49:37 GMT"
LM = 784111777.0
EARLIER = "Sun, 06 Nov 1994 08:49:36 GMT"
LATER = "Sun, 06 Nov 1994 08:49:38 GMT"
DATE = LM + 3600
ETAG = '"v1"'


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param('"a", W/"b"', ['"a"', 'W/"b"'], id="9110-8.8.3-list"),
        pytest.param("*", "*", id="9110-13.1.1-star"),
        pytest.param(" * ", "*", id="9110-13.1.1-star-with-ows"),
        pytest.param('"a,b"', ['"a,b"'], id="9110-8.8.3-comma-inside-opaque-tag"),
        pytest.param('""', ['""'], id="9110-8.8.3-empty-opaque-tag"),
        pytest.param('a, "b"', ['"b"'], id="9110-8.8.3-unquoted-member-skipped"),
        pytest.param('w/"a", "b"', ['"b"'], id="9110-8.8.3-lower-case-weak-prefix-skipped"),
        pytest.param('"a" "b", "c"', ['"c"'], id="9110-8.8.3-two-tags-in-one-member-skipped"),
        pytest.param('"a b", "c"', ['"c"'], id="9110-8.8.3-space-in-opaque-tag-skipped"),
        pytest.param('"a", *', ['"a"'], id="9110-13.1.1-star-inside-list-skipped"),
        pytest.param(', ,"a" ,', ['"a"'], id="9110-5.6.1-empty-members-ignored"),
        pytest.param("", [], id="9110-5.6.1-empty-value"),
    ],
)
def test_parse_etags(value: str, expected: list[str] | Literal["*"]) -> None:
    assert parse_etags(value) == expected


@pytest.mark.parametrize(
    ("a", "b", "strong", "weak"),
    [
        pytest.param('W/"1"', 'W/"1"', False, True, id="9110-8.8.3.2-both-weak-same"),
        pytest.param('W/"1"', 'W/"2"', False, False, id="9110-8.8.3.2-both-weak-different"),
        pytest.param('W/"1"', '"1"', False, True, id="9110-8.8.3.2-weak-and-strong"),
        pytest.param('"1"', '"1"', True, True, id="9110-8.8.3.2-both-strong-same"),
        pytest.param('"1"', '"2"', False, False, id="9110-8.8.3.2-both-strong-different"),
    ],
)
def test_entity_tag_comparison(a: str, b: str, strong: bool, weak: bool) -> None:
    assert (strong_match(a, b), weak_match(a, b)) == (strong, weak)
    assert (strong_match(b, a), weak_match(b, a)) == (strong, weak)


@pytest.mark.parametrize(
    ("method", "fields", "etag", "last_modified", "date", "expected"),
    [
        pytest.param("GET", [], ETAG, LM, DATE, None, id="9110-13.2.2-no-preconditions"),
        # Step 1: If-Match
        pytest.param("GET", [("If-Match", ETAG)], ETAG, LM, DATE, None, id="9110-13.1.1-match"),
        pytest.param(
            "GET", [("If-Match", '"v0", "v2"')], ETAG, LM, DATE, 412, id="9110-13.1.1-no-match"
        ),
        pytest.param(
            "GET",
            [("If-Match", '"v0"'), ("If-Match", ETAG)],
            ETAG,
            LM,
            DATE,
            None,
            id="9110-13.1.1-match-in-second-line",
        ),
        pytest.param(
            "GET",
            [("If-Match", 'W/"v1"')],
            'W/"v1"',
            LM,
            DATE,
            412,
            id="9110-13.1.1-strong-comparison-weak-never-matches",
        ),
        pytest.param(
            "PUT", [("If-Match", "*")], None, None, None, None, id="9110-13.1.1-star-exists"
        ),
        pytest.param(
            "GET", [("If-Match", ETAG)], None, LM, DATE, 412, id="9110-13.1.1-no-etag-no-match"
        ),
        pytest.param(
            "GET",
            [("If-Match", '"other"'), ("If-None-Match", ETAG)],
            ETAG,
            LM,
            DATE,
            412,
            id="9110-13.2.2-if-match-false-wins-over-inm",
        ),
        pytest.param(
            "GET",
            [("If-Match", '"other"'), ("If-Modified-Since", LM_TEXT)],
            ETAG,
            LM,
            DATE,
            412,
            id="9110-13.2.2-if-match-wins-over-ims",
        ),
        pytest.param(
            "GET",
            [("If-Match", ETAG), ("If-Unmodified-Since", EARLIER)],
            ETAG,
            LM,
            DATE,
            None,
            id="9110-13.2.2-if-match-present-ius-ignored",
        ),
        pytest.param(
            "GET",
            [("If-Match", ETAG), ("If-None-Match", ETAG)],
            ETAG,
            LM,
            DATE,
            304,
            id="9110-13.2.2-if-match-true-then-inm",
        ),
        # Step 2: If-Unmodified-Since
        pytest.param(
            "GET",
            [("If-Unmodified-Since", EARLIER)],
            ETAG,
            LM,
            DATE,
            412,
            id="9110-13.1.4-modified-since",
        ),
        pytest.param(
            "GET",
            [("If-Unmodified-Since", LM_TEXT)],
            ETAG,
            LM,
            DATE,
            None,
            id="9110-13.1.4-not-modified-since",
        ),
        pytest.param(
            "GET",
            [("If-Unmodified-Since", "yesterday")],
            ETAG,
            LM,
            DATE,
            None,
            id="9110-13.1.4-invalid-date-ignored",
        ),
        pytest.param(
            "GET",
            [("If-Unmodified-Since", EARLIER)],
            ETAG,
            None,
            DATE,
            None,
            id="9110-13.1.4-no-last-modified-ignored",
        ),
        pytest.param(
            "GET",
            [("If-Unmodified-Since", EARLIER), ("If-None-Match", ETAG)],
            ETAG,
            LM,
            DATE,
            412,
            id="9110-13.2.2-ius-false-wins-over-inm",
        ),
        # Step 3: If-None-Match
        pytest.param("GET", [("If-None-Match", ETAG)], ETAG, LM, DATE, 304, id="9110-13.1.2-get"),
        pytest.param("HEAD", [("If-None-Match", ETAG)], ETAG, LM, DATE, 304, id="9110-13.1.2-head"),
        pytest.param(
            "GET",
            [("If-None-Match", '"v0", W/"v1"')],
            ETAG,
            LM,
            DATE,
            304,
            id="9110-13.1.2-weak-comparison-weak-tag-in-request",
        ),
        pytest.param(
            "GET",
            [("If-None-Match", ETAG)],
            'W/"v1"',
            LM,
            DATE,
            304,
            id="9110-13.1.2-weak-comparison-weak-stored-tag",
        ),
        pytest.param(
            "GET", [("If-None-Match", '"v0"')], ETAG, LM, DATE, None, id="9110-13.1.2-no-match"
        ),
        pytest.param(
            "GET", [("If-None-Match", ETAG)], None, LM, DATE, None, id="9110-13.1.2-no-etag"
        ),
        pytest.param("GET", [("If-None-Match", "*")], None, LM, DATE, 304, id="9110-13.1.2-star"),
        pytest.param(
            "PUT", [("If-None-Match", ETAG)], ETAG, LM, DATE, 412, id="9110-13.1.2-put-match-412"
        ),
        pytest.param(
            "PUT", [("If-None-Match", "*")], ETAG, LM, DATE, 412, id="9110-13.1.2-put-star-412"
        ),
        pytest.param(
            "GET",
            [("If-None-Match", '"v0"'), ("If-Modified-Since", LATER)],
            ETAG,
            LM,
            DATE,
            None,
            id="9110-13.2.2-inm-present-ims-ignored",
        ),
        # Step 4: If-Modified-Since
        pytest.param(
            "GET", [("If-Modified-Since", LM_TEXT)], ETAG, LM, DATE, 304, id="9110-13.1.3-equal"
        ),
        pytest.param(
            "HEAD", [("If-Modified-Since", LATER)], ETAG, LM, DATE, 304, id="9110-13.1.3-later"
        ),
        pytest.param(
            "GET",
            [("If-Modified-Since", EARLIER)],
            ETAG,
            LM,
            DATE,
            None,
            id="9110-13.1.3-modified",
        ),
        pytest.param(
            "GET",
            [("If-Modified-Since", "Sunday, 06-Nov-94 08:49:37 GMT")],
            ETAG,
            LM,
            DATE,
            304,
            id="9110-5.6.7-rfc850-date",
        ),
        pytest.param(
            "GET",
            [("If-Modified-Since", "Sun Nov  6 08:49:37 1994")],
            ETAG,
            LM,
            DATE,
            304,
            id="9110-5.6.7-asctime-date",
        ),
        pytest.param(
            "GET",
            [("If-Modified-Since", "Sun, 06 Nov 1994 10:49:37 +0200")],
            ETAG,
            LM,
            DATE,
            None,
            id="9110-5.6.7-numeric-zone-invalid-ignored",
        ),
        pytest.param(
            "GET",
            [("If-Modified-Since", "not a date")],
            ETAG,
            LM,
            DATE,
            None,
            id="9110-13.1.3-invalid-date-ignored",
        ),
        pytest.param(
            "GET",
            [("If-Modified-Since", LATER), ("If-Modified-Since", LATER)],
            ETAG,
            LM,
            DATE,
            None,
            id="9110-13.1.3-more-than-one-member-ignored",
        ),
        pytest.param(
            "POST",
            [("If-Modified-Since", LATER)],
            ETAG,
            LM,
            DATE,
            None,
            id="9110-13.1.3-post-ignored",
        ),
        pytest.param(
            "GET",
            [("If-Modified-Since", LM_TEXT)],
            ETAG,
            None,
            LM,
            304,
            id="9111-4.3.2-no-last-modified-uses-date",
        ),
        pytest.param(
            "GET",
            [("If-Modified-Since", LM_TEXT)],
            ETAG,
            None,
            DATE,
            None,
            id="9111-4.3.2-date-later-than-ims",
        ),
        pytest.param(
            "GET",
            [("If-Modified-Since", LM_TEXT)],
            ETAG,
            None,
            None,
            None,
            id="9111-4.3.2-no-last-modified-no-date",
        ),
    ],
)
def test_evaluate_preconditions(
    method: str,
    fields: Fields,
    etag: str | None,
    last_modified: float | None,
    date: float | None,
    expected: int | None,
) -> None:
    result = evaluate_preconditions(method, CIMultiDict(fields), etag, last_modified, date)
    assert result == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param([("ETag", ETAG)], {"If-None-Match": ETAG}, id="9111-4.3.1-etag"),
        pytest.param(
            [("Last-Modified", LM_TEXT)],
            {"If-Modified-Since": LM_TEXT},
            id="9111-4.3.1-last-modified",
        ),
        pytest.param(
            [("ETag", 'W/"v1"'), ("Last-Modified", LM_TEXT)],
            {"If-None-Match": 'W/"v1"', "If-Modified-Since": LM_TEXT},
            id="9111-4.3.1-both",
        ),
        pytest.param([("Content-Type", "image/jpeg")], {}, id="9111-4.3.1-none"),
        pytest.param(
            [("ETag", "v1"), ("Last-Modified", "yesterday")],
            {},
            id="9111-4.3.1-malformed-validators-not-sent",
        ),
    ],
)
def test_upstream_validators(fields: Fields, expected: dict[str, str]) -> None:
    assert upstream_validators(CIMultiDict(fields)) == expected


@pytest.mark.parametrize(
    ("stored", "not_modified", "expected"),
    [
        pytest.param([("ETag", ETAG)], [("ETag", ETAG)], True, id="9111-4.3.4-strong-match"),
        pytest.param([("ETag", ETAG)], [("ETag", '"v2"')], False, id="9111-4.3.4-strong-mismatch"),
        pytest.param(
            [("ETag", 'W/"v1"')],
            [("ETag", ETAG)],
            False,
            id="9111-4.3.4-strong-needs-strong-stored",
        ),
        pytest.param(
            [("Last-Modified", LM_TEXT)],
            [("ETag", ETAG)],
            False,
            id="9111-4.3.4-strong-etag-stored-has-none",
        ),
        pytest.param(
            [("ETag", ETAG), ("Last-Modified", EARLIER)],
            [("ETag", ETAG), ("Last-Modified", LM_TEXT)],
            True,
            id="9111-4.3.4-strong-etag-decides",
        ),
        pytest.param(
            [("Last-Modified", LM_TEXT)],
            [("Last-Modified", LM_TEXT)],
            True,
            id="9111-4.3.4-last-modified-equal",
        ),
        pytest.param(
            [("Last-Modified", "Sunday, 06-Nov-94 08:49:37 GMT")],
            [("Last-Modified", LM_TEXT)],
            True,
            id="9111-4.3.4-last-modified-same-instant",
        ),
        pytest.param(
            [("Last-Modified", EARLIER)],
            [("Last-Modified", LM_TEXT)],
            False,
            id="9111-4.3.4-last-modified-different",
        ),
        pytest.param(
            [("ETag", ETAG)],
            [("Last-Modified", LM_TEXT)],
            False,
            id="9111-4.3.4-last-modified-stored-has-none",
        ),
        pytest.param(
            [("ETag", 'W/"v1"')],
            [("ETag", 'W/"v1"')],
            True,
            id="9111-4.3.4-weak-match",
        ),
        pytest.param(
            [("ETag", 'W/"v1"')],
            [("ETag", 'W/"v2"')],
            False,
            id="9111-4.3.4-weak-mismatch",
        ),
        pytest.param([], [("Date", LM_TEXT)], True, id="9111-4.3.4-no-validators-either"),
        pytest.param(
            [("ETag", ETAG)],
            [("Date", LM_TEXT)],
            False,
            id="9111-4.3.4-no-validators-stored-has-one",
        ),
    ],
)
def test_not_modified_applies(stored: Fields, not_modified: Fields, expected: bool) -> None:
    assert not_modified_applies(CIMultiDict(stored), CIMultiDict(not_modified)) is expected


@pytest.mark.parametrize(
    ("stored", "not_modified", "expected"),
    [
        pytest.param(
            [("Content-Type", "image/jpeg"), ("Content-Length", "100"), ("ETag", ETAG)],
            [("Content-Length", "0"), ("ETag", ETAG)],
            [("Content-Type", "image/jpeg"), ("Content-Length", "100"), ("ETag", ETAG)],
            id="9111-3.2-content-length-kept-from-stored",
        ),
        pytest.param(
            [("Date", EARLIER), ("Cache-Control", "max-age=60"), ("ETag", ETAG)],
            [("Cache-Control", "max-age=600"), ("Date", LATER)],
            [("Date", LATER), ("Cache-Control", "max-age=600"), ("ETag", ETAG)],
            id="9111-3.2-replaced-in-stored-order",
        ),
        pytest.param(
            [("A", "1"), ("B", "2")],
            [("X-New", "n"), ("Expires", LATER)],
            [("A", "1"), ("B", "2"), ("X-New", "n"), ("Expires", LATER)],
            id="9111-3.2-new-fields-appended",
        ),
        pytest.param(
            [("Link", "<a>"), ("X", "1"), ("link", "<b>"), ("Y", "2")],
            [("Link", "<c>")],
            [("Link", "<c>"), ("X", "1"), ("Y", "2")],
            id="9111-3.2-replaced-field-loses-all-old-lines",
        ),
        pytest.param(
            [("Link", "<a>"), ("X", "1")],
            [("Link", "<c>"), ("Link", "<d>")],
            [("Link", "<c>"), ("Link", "<d>"), ("X", "1")],
            id="9111-3.2-all-new-lines-kept",
        ),
        pytest.param(
            [("cache-control", "max-age=60")],
            [("Cache-Control", "max-age=600")],
            [("Cache-Control", "max-age=600")],
            id="9111-3.2-names-case-insensitive",
        ),
        pytest.param(
            [("Content-Encoding", "br"), ("Content-Range", "bytes 0-9/10")],
            [
                ("Content-Encoding", "gzip"),
                ("Content-Range", "bytes 0-1/10"),
                ("Transfer-Encoding", "chunked"),
                ("Connection", "close, X-Hop"),
                ("Keep-Alive", "timeout=5"),
                ("X-Hop", "1"),
                ("Proxy-Authentication-Info", "x"),
                ("X-Kept", "2"),
            ],
            [
                ("Content-Encoding", "br"),
                ("Content-Range", "bytes 0-9/10"),
                ("X-Kept", "2"),
            ],
            id="9111-3.1-excepted-and-hop-by-hop-fields-not-updated",
        ),
    ],
)
def test_merge_not_modified(stored: Fields, not_modified: Fields, expected: Fields) -> None:
    merged = merge_not_modified(CIMultiDict(stored), CIMultiDict(not_modified))
    assert list(merged.items()) == expected


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        pytest.param(
            [
                ("Date", LATER),
                ("Content-Type", "image/jpeg"),
                ("Content-Length", "100"),
                ("ETag", ETAG),
                ("Content-Encoding", "br"),
                ("Last-Modified", LM_TEXT),
                ("Cache-Control", "max-age=60"),
                ("Content-Location", "/a.jpg"),
                ("Vary", "Accept"),
                ("Expires", LATER),
                ("Content-Range", "bytes 0-99/100"),
            ],
            [
                ("Date", LATER),
                ("ETag", ETAG),
                ("Last-Modified", LM_TEXT),
                ("Cache-Control", "max-age=60"),
                ("Content-Location", "/a.jpg"),
                ("Vary", "Accept"),
                ("Expires", LATER),
            ],
            id="9110-15.4.5-required-fields-no-content-metadata",
        ),
        pytest.param(
            [("X-Served-By", "origin"), ("Content-Language", "en"), ("Accept-Ranges", "bytes")],
            [("X-Served-By", "origin"), ("Accept-Ranges", "bytes")],
            id="9110-15.4.5-extension-fields-kept",
        ),
        pytest.param(
            [
                ("Connection", "X-Hop"),
                ("X-Hop", "1"),
                ("Keep-Alive", "timeout=5"),
                ("Transfer-Encoding", "chunked"),
                ("ETag", ETAG),
            ],
            [("ETag", ETAG)],
            id="9110-7.6.1-hop-by-hop-dropped",
        ),
    ],
)
def test_not_modified_response_headers(stored: Fields, expected: Fields) -> None:
    assert list(not_modified_response_headers(CIMultiDict(stored)).items()) == expected
