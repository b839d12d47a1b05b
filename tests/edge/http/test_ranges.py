import pytest

from pinedge.edge.http.ranges import (
    MAX_RANGES,
    ByteRange,
    RangeRequest,
    content_range,
    if_range_allows,
    multipart_byteranges,
    multipart_content_type,
    parse_range,
    unsatisfied_range,
)

LM_TEXT = "Sun, 06 Nov 1994 08:49:37 GMT"
LM = 784111777.0

IGNORE = RangeRequest("ignore")
MALFORMED = RangeRequest("invalid", reason="malformed Range header")
TOO_MANY = RangeRequest("invalid", reason="too many ranges")
BEYOND_END = RangeRequest(
    "unsatisfiable", reason="range starts beyond the end of the representation"
)
EMPTY_SUFFIX = RangeRequest("unsatisfiable", reason="zero-length suffix range")


def ok(*ranges: tuple[int, int]) -> RangeRequest:
    return RangeRequest("satisfiable", tuple(ByteRange(s, e) for s, e in ranges))


def singles(count: int) -> str:
    return "bytes=" + ",".join(f"{i}-{i}" for i in range(count))


@pytest.mark.parametrize(
    ("value", "size", "expected"),
    [
        pytest.param(None, 1000, IGNORE, id="9110-14.2-absent"),
        pytest.param("", 1000, IGNORE, id="9110-14.2-empty"),
        pytest.param("items=0-1", 1000, IGNORE, id="9110-14.2-other-unit-ignored"),
        pytest.param("bytes=0-499", 10000, ok((0, 499)), id="9110-14.1.2-first-500"),
        pytest.param("Bytes=0-1", 10, ok((0, 1)), id="9110-14.1-unit-case-insensitive"),
        pytest.param("bytes=500-999", 10000, ok((500, 999)), id="9110-14.1.2-second-500"),
        pytest.param("bytes=-500", 10000, ok((9500, 9999)), id="9110-14.1.2-suffix"),
        pytest.param("bytes=-2000", 1000, ok((0, 999)), id="9110-14.1.2-suffix-longer-than-size"),
        pytest.param("bytes=9500-", 10000, ok((9500, 9999)), id="9110-14.1.2-open-ended"),
        pytest.param("bytes=900-5000", 1000, ok((900, 999)), id="9110-14.1.2-last-pos-clamped"),
        pytest.param("bytes=0-0", 1, ok((0, 0)), id="9110-14.1.2-first-byte-of-one-byte-body"),
        pytest.param(
            "bytes=0-0,-1", 10000, ok((0, 0), (9999, 9999)), id="9110-14.1.2-first-and-last"
        ),
        pytest.param(
            "bytes=500-600,601-999", 10000, ok((500, 999)), id="9110-14.2-adjacent-coalesced"
        ),
        pytest.param(
            "bytes=500-700,601-999", 10000, ok((500, 999)), id="9110-14.2-overlapping-coalesced"
        ),
        pytest.param(
            "bytes=0-1, 10-11", 100, ok((0, 1), (10, 11)), id="9110-14.2-disjoint-kept-apart"
        ),
        pytest.param(
            "bytes=10-11,0-1", 100, ok((10, 11), (0, 1)), id="9110-15.3.7.2-request-order-kept"
        ),
        pytest.param(
            "bytes=10-20,0-1,5-12",
            100,
            ok((5, 20), (0, 1)),
            id="9110-15.3.7.2-merged-range-takes-earliest-place",
        ),
        pytest.param(singles(MAX_RANGES), 100, ok((0, 15)), id="9110-14.2-sixteen-ranges-allowed"),
        pytest.param(
            " bytes=0-1 ,, 3-4 ", 100, ok((0, 1), (3, 4)), id="9110-5.6.1-ows-and-empty-members"
        ),
        pytest.param("bytes=1000-", 1000, BEYOND_END, id="9110-14.1.2-first-pos-at-size"),
        pytest.param("bytes=2000-3000", 1000, BEYOND_END, id="9110-14.1.2-beyond-end"),
        pytest.param("bytes=-0", 1000, EMPTY_SUFFIX, id="9110-14.1.2-zero-suffix"),
        pytest.param(
            "bytes=1000-2000,-0", 1000, BEYOND_END, id="9110-14.1.2-no-member-satisfiable"
        ),
        pytest.param(
            "bytes=1000-2000,0-1", 1000, ok((0, 1)), id="9110-14.1.2-unsatisfiable-member-dropped"
        ),
        pytest.param("bytes=0-", 0, BEYOND_END, id="9110-14.1.2-zero-length-int-range"),
        pytest.param("bytes=0-0", 0, BEYOND_END, id="9110-14.1.2-zero-length-first-byte"),
        pytest.param("bytes=-5", 0, IGNORE, id="9110-14.1.2-zero-length-suffix-ignored"),
        pytest.param("bytes=5-1", 1000, MALFORMED, id="9110-14.1.1-last-before-first"),
        pytest.param("bytes=a-b", 1000, MALFORMED, id="9110-14.1.1-non-digits"),
        pytest.param("bytes=0x1-2", 1000, MALFORMED, id="9110-14.1.1-hex"),
        pytest.param("bytes=\u0661-\u0662", 1000, MALFORMED, id="9110-14.1.1-non-ascii-digits"),
        pytest.param("bytes=1-2-3", 1000, MALFORMED, id="9110-14.1.1-two-dashes"),
        pytest.param("bytes=1 - 2", 1000, MALFORMED, id="9110-14.1.1-space-inside"),
        pytest.param("bytes=-", 1000, MALFORMED, id="9110-14.1.1-dash-only"),
        pytest.param("bytes=0-1,x", 1000, MALFORMED, id="9110-14.1.1-one-bad-member"),
        pytest.param("bytes=", 1000, MALFORMED, id="9110-14.1.1-empty-range-set"),
        pytest.param("bytes", 1000, MALFORMED, id="9110-14.1.1-no-equals"),
        pytest.param(
            "bytes=0-123456789012345678",
            1000,
            ok((0, 999)),
            id="9110-14.1.1-18-digits-accepted",
        ),
        pytest.param(
            "bytes=0-1234567890123456789", 1000, MALFORMED, id="9110-14.1.1-19-digits-rejected"
        ),
        pytest.param(singles(MAX_RANGES + 1), 100, TOO_MANY, id="9110-14.2-too-many-ranges"),
    ],
)
def test_parse_range(value: str | None, size: int, expected: RangeRequest) -> None:
    assert parse_range(value, size) == expected


@pytest.mark.parametrize(
    ("if_range", "etag", "last_modified", "date", "expected"),
    [
        pytest.param(None, None, None, None, True, id="9110-13.1.5-absent"),
        pytest.param('"v1"', '"v1"', LM, LM + 60, True, id="9110-13.1.5-strong-etag-match"),
        pytest.param('"v1"', '"v2"', LM, LM + 60, False, id="9110-13.1.5-strong-etag-mismatch"),
        pytest.param('"v1"', None, LM, LM + 60, False, id="9110-13.1.5-no-stored-etag"),
        pytest.param('W/"v1"', 'W/"v1"', LM, LM + 60, False, id="9110-13.1.5-weak-etag-never"),
        pytest.param('"v1"', 'W/"v1"', LM, LM + 60, False, id="9110-13.1.5-weak-stored-etag"),
        pytest.param('"v1", "v2"', '"v1"', LM, LM + 60, False, id="9110-13.1.5-list-not-allowed"),
        pytest.param(LM_TEXT, '"v1"', LM, LM + 60, True, id="9110-13.1.5-date-exact-and-strong"),
        pytest.param(LM_TEXT, None, LM, LM + 1, True, id="9110-8.8.2.2-date-one-second-after"),
        pytest.param(LM_TEXT, None, LM, LM + 0.5, False, id="9110-8.8.2.2-date-too-close-weak"),
        pytest.param(LM_TEXT, None, LM, None, False, id="9110-8.8.2.2-no-date-weak"),
        pytest.param(LM_TEXT, None, None, LM + 60, False, id="9110-13.1.5-no-last-modified"),
        pytest.param(LM_TEXT, None, LM - 1, LM + 60, False, id="9110-13.1.5-date-later"),
        pytest.param(LM_TEXT, None, LM + 1, LM + 60, False, id="9110-13.1.5-date-earlier"),
        pytest.param("yesterday", '"v1"', LM, LM + 60, False, id="9110-13.1.5-neither-form"),
    ],
)
def test_if_range_allows(
    if_range: str | None,
    etag: str | None,
    last_modified: float | None,
    date: float | None,
    expected: bool,
) -> None:
    assert if_range_allows(if_range, etag, last_modified, date) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(content_range(ByteRange(0, 99), 1000), "bytes 0-99/1000", id="9110-14.4"),
        pytest.param(unsatisfied_range(1000), "bytes */1000", id="9110-14.4-unsatisfied"),
        pytest.param(
            multipart_content_type("B1"),
            "multipart/byteranges; boundary=B1",
            id="9110-14.6-content-type",
        ),
    ],
)
def test_field_values(value: str, expected: str) -> None:
    assert value == expected


def test_byte_range_length() -> None:
    assert ByteRange(5, 5).length == 1
    assert ByteRange(0, 99).length == 100


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        pytest.param(
            b"abcdefghij",
            "text/plain",
            b"--B\r\n"
            b"Content-Type: text/plain\r\n"
            b"Content-Range: bytes 0-1/10\r\n"
            b"\r\n"
            b"ab\r\n"
            b"--B\r\n"
            b"Content-Type: text/plain\r\n"
            b"Content-Range: bytes 8-9/10\r\n"
            b"\r\n"
            b"ij\r\n"
            b"--B--\r\n",
            id="9110-14.6-with-content-type",
        ),
        pytest.param(
            memoryview(b"abcdefghij"),
            None,
            b"--B\r\n"
            b"Content-Range: bytes 0-1/10\r\n"
            b"\r\n"
            b"ab\r\n"
            b"--B\r\n"
            b"Content-Range: bytes 8-9/10\r\n"
            b"\r\n"
            b"ij\r\n"
            b"--B--\r\n",
            id="9110-14.6-without-content-type-memoryview",
        ),
    ],
)
def test_multipart_byteranges(
    body: bytes | memoryview, content_type: str | None, expected: bytes
) -> None:
    ranges = (ByteRange(0, 1), ByteRange(8, 9))
    assert multipart_byteranges(ranges, body, content_type, 10, "B") == expected
