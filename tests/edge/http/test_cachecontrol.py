"""Cache-Control-style field parsing: RFC 9111 §5.2, §1.2.2, §5.4 and RFC 9213 targeted fields."""

import pytest
from multidict import CIMultiDict

from pinedge.edge.http.cachecontrol import (
    EMPTY,
    parse_directives,
    request_directives,
    response_directives,
)


def headers(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param(["no-store"], {"no-store": None}, id="9111-5.2-bare-directive"),
        pytest.param(["max-age=60"], {"max-age": "60"}, id="9111-5.2-token-argument"),
        pytest.param(['max-age="60"'], {"max-age": "60"}, id="9111-5.2-quoted-argument-unquoted"),
        pytest.param(
            ["Max-Age=60, NO-STORE"],
            {"max-age": "60", "no-store": None},
            id="9111-5.2-names-case-insensitive",
        ),
        pytest.param(
            ['no-cache="Set-Cookie"'], {"no-cache": "Set-Cookie"}, id="9111-5.2-argument-case-kept"
        ),
        pytest.param(
            ['no-cache="Set-Cookie, X-A", max-age=5'],
            {"no-cache": "Set-Cookie, X-A", "max-age": "5"},
            id="9110-5.6.4-quoted-comma-does-not-split",
        ),
        pytest.param(
            [r'x-ext="a\"b,c", public'],
            {"x-ext": 'a"b,c', "public": None},
            id="9110-5.6.4-quoted-pair-unescaped",
        ),
        pytest.param(
            ["max-age=60, max-age=10"], {"max-age": "60"}, id="9111-4.2.1-duplicate-first-wins"
        ),
        pytest.param(
            ["max-age=60", "max-age=10, public"],
            {"max-age": "60", "public": None},
            id="9111-4.2.1-duplicate-across-lines-first-wins",
        ),
        pytest.param(
            ["public", "s-maxage=30"],
            {"public": None, "s-maxage": "30"},
            id="9110-5.3-all-field-lines",
        ),
        pytest.param([", ,public,,"], {"public": None}, id="9110-5.6.1-empty-members-skipped"),
        pytest.param(
            ["  public ,\tmax-age=5  "],
            {"public": None, "max-age": "5"},
            id="9110-5.6.3-ows-stripped",
        ),
        pytest.param(
            ['"max-age"=1, no store, =5, public'],
            {"public": None},
            id="9111-5.2-junk-names-skipped",
        ),
        pytest.param(
            ["private=a b, max-age=5"],
            {"private": "a b", "max-age": "5"},
            id="9111-5.2-junk-argument-keeps-directive",
        ),
        pytest.param(["max-age="], {"max-age": ""}, id="9111-5.2-empty-argument"),
        pytest.param(
            ['no-cache="a, max-age=5'],
            {"no-cache": "a, max-age=5"},
            id="9110-5.6.4-unterminated-quote-runs-to-end",
        ),
        pytest.param(["community=UCI"], {"community": "UCI"}, id="9111-5.2.3-extension-kept"),
        pytest.param([""], {}, id="9111-5.2-empty-field"),
        pytest.param([], {}, id="9111-5.2-no-field"),
        pytest.param("max-age=5", {"max-age": "5"}, id="9111-5.2-single-string-not-iterated"),
    ],
)
def test_parse_directives(lines: list[str], expected: dict[str, str | None]) -> None:
    assert dict(parse_directives(lines).items) == expected


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        pytest.param("max-age=60", 60, id="9111-1.2.2-delta-seconds"),
        pytest.param("max-age=0", 0, id="9111-1.2.2-zero"),
        pytest.param("max-age=007", 7, id="9111-1.2.2-leading-zeros"),
        pytest.param('max-age="60"', 60, id="9111-5.2-quoted-form-accepted"),
        pytest.param("max-age = 60", 60, id="9111-5.2-bws-tolerated"),
        pytest.param("max-age=abc", None, id="9111-1.2.2-not-a-number"),
        pytest.param("max-age=-1", None, id="9111-1.2.2-negative"),
        pytest.param("max-age=+5", None, id="9111-1.2.2-plus-sign"),
        pytest.param("max-age=1.5", None, id="9111-1.2.2-decimal"),
        pytest.param("max-age=\u0663", None, id="9111-1.2.2-non-ascii-digit"),
        pytest.param("max-age=", None, id="9111-1.2.2-empty"),
        pytest.param("max-age", None, id="9111-1.2.2-bare"),
        pytest.param("public", None, id="9111-1.2.2-absent"),
        pytest.param("max-age=2147483647", 2147483647, id="9111-1.2.2-just-under-2-31"),
        pytest.param("max-age=2147483648", 2**31, id="9111-1.2.2-exactly-2-31"),
        pytest.param("max-age=2147483649", 2**31, id="9111-1.2.2-over-2-31-clamped"),
        pytest.param("max-age=99999999999999999999", 2**31, id="9111-1.2.2-huge-clamped"),
    ],
)
def test_delta_seconds(field: str, expected: int | None) -> None:
    assert parse_directives([field]).delta_seconds("max-age") == expected


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        pytest.param(
            'no-cache="Set-Cookie, X-A"',
            frozenset({"set-cookie", "x-a"}),
            id="9111-5.2.2.4-quoted-list-lower-cased",
        ),
        pytest.param(
            "no-cache=Set-Cookie", frozenset({"set-cookie"}), id="9111-5.2.2.4-token-form"
        ),
        pytest.param(
            'no-cache=" a ,, B "', frozenset({"a", "b"}), id="9110-5.6.1-list-ows-and-empties"
        ),
        pytest.param(
            'no-cache="a, b c, D"', frozenset({"a", "d"}), id="9110-5.1-non-field-names-dropped"
        ),
        pytest.param("no-cache=a b", frozenset(), id="9110-5.1-malformed-reads-as-bare"),
        pytest.param("no-cache", frozenset(), id="9111-5.2.2.4-bare"),
        pytest.param('no-cache=""', frozenset(), id="9111-5.2.2.4-empty-list"),
        pytest.param("public", None, id="9111-5.2.2.4-absent"),
    ],
)
def test_field_names(field: str, expected: frozenset[str] | None) -> None:
    assert parse_directives([field]).field_names("no-cache") == expected


@pytest.mark.parametrize(
    ("field", "name", "expected"),
    [
        pytest.param("no-store", "no-store", True, id="9111-5.2-contains-bare"),
        pytest.param("max-age=5", "max-age", True, id="9111-5.2-contains-with-argument"),
        pytest.param("No-Store", "no-store", True, id="9111-5.2-contains-case-folded"),
        pytest.param("no-store", "public", False, id="9111-5.2-not-contained"),
        pytest.param("", "no-store", False, id="9111-5.2-empty"),
    ],
)
def test_contains(field: str, name: str, expected: bool) -> None:
    assert (name in parse_directives([field])) is expected


def test_empty_has_no_directives() -> None:
    assert dict(EMPTY.items) == {}
    assert "no-store" not in EMPTY
    assert EMPTY.delta_seconds("max-age") is None
    assert EMPTY.field_names("private") is None


CDN = "CDN-Cache-Control"
SURROGATE = "Surrogate-Control"
CC = "Cache-Control"


@pytest.mark.parametrize(
    ("pairs", "targeted", "expected", "used"),
    [
        pytest.param(
            [(CC, "max-age=60")], None, {"max-age": "60"}, None, id="9111-5.2-cache-control"
        ),
        pytest.param([], None, {}, None, id="9111-5.2-no-fields"),
        pytest.param(
            [(CC, "no-store"), (CDN, "max-age=600")],
            None,
            {"max-age": "600"},
            "cdn-cache-control",
            id="9213-2.2-cdn-cache-control-replaces-cache-control",
        ),
        pytest.param(
            [(CC, "max-age=60"), (SURROGATE, "max-age=300")],
            None,
            {"max-age": "300"},
            "surrogate-control",
            id="9213-2.2-surrogate-control-replaces-cache-control",
        ),
        pytest.param(
            [(SURROGATE, "max-age=300"), (CDN, "max-age=600")],
            None,
            {"max-age": "600"},
            "cdn-cache-control",
            id="9213-2.2-first-in-target-list-wins",
        ),
        pytest.param(
            [(SURROGATE, "max-age=300"), (CDN, "max-age=600")],
            (SURROGATE, CDN),
            {"max-age": "300"},
            "surrogate-control",
            id="9213-2.2-target-list-order-is-the-callers",
        ),
        pytest.param(
            [(CC, "max-age=60"), (CDN, "max-age=600")],
            (),
            {"max-age": "60"},
            None,
            id="9213-2.2-empty-target-list",
        ),
        pytest.param(
            [(CDN, "max-age=600")],
            ("cdn-cache-control",),
            {"max-age": "600"},
            "cdn-cache-control",
            id="9213-2.2-target-names-case-insensitive",
        ),
        pytest.param(
            [(CC, "max-age=60"), (CDN, "")],
            None,
            {"max-age": "60"},
            None,
            id="9213-2.1-empty-targeted-field-ignored",
        ),
        pytest.param(
            [(CC, "max-age=60"), (CDN, "Max-Age=600")],
            None,
            {"max-age": "60"},
            None,
            id="9213-2.1-upper-case-key-is-parse-error",
        ),
        pytest.param(
            [(CC, "max-age=60"), (CDN, 'private="x')],
            None,
            {"max-age": "60"},
            None,
            id="9213-2.1-unterminated-string-is-parse-error",
        ),
        pytest.param(
            [(CC, "max-age=60"), (CDN, "max-age=600 no-store")],
            None,
            {"max-age": "60"},
            None,
            id="9213-2.1-missing-comma-is-parse-error",
        ),
        pytest.param(
            [(CDN, "max-age=600,"), (SURROGATE, "max-age=300")],
            None,
            {"max-age": "300"},
            "surrogate-control",
            id="9213-2.1-parse-error-falls-to-next-target",
        ),
        pytest.param(
            [(CDN, "max-age=600;foo=bar, no-transform;x")],
            None,
            {"max-age": "600", "no-transform": None},
            "cdn-cache-control",
            id="9213-2.1-parameters-ignored",
        ),
        pytest.param(
            [(CDN, "no-store=?0, max-age=60")],
            None,
            {"max-age": "60"},
            "cdn-cache-control",
            id="9213-2.1-boolean-false-is-absent",
        ),
        pytest.param(
            [(CDN, "no-store=?1")],
            None,
            {"no-store": None},
            "cdn-cache-control",
            id="9213-2.1-boolean-true-is-bare",
        ),
        pytest.param(
            [(CDN, 'private="Set-Cookie, X-A"')],
            None,
            {"private": "Set-Cookie, X-A"},
            "cdn-cache-control",
            id="9213-2.1-string-argument",
        ),
        pytest.param(
            [(CC, "max-age=60"), (CDN, "max-age=1.5")],
            None,
            {"max-age": "60"},
            None,
            id="9213-2.1-decimal-max-age-not-coerced-field-ignored",
        ),
        pytest.param(
            [(CC, "max-age=60"), (CDN, 's-maxage="abc"')],
            None,
            {"max-age": "60"},
            None,
            id="9213-2.1-string-s-maxage-field-ignored",
        ),
        pytest.param(
            [(CC, "max-age=60"), (CDN, 'max-age="600"')],
            None,
            {"max-age": "60"},
            None,
            id="9213-2.1-digits-in-a-string-are-not-an-integer",
        ),
        pytest.param(
            [(CC, "max-age=60"), (CDN, "max-age=?1")],
            None,
            {"max-age": "60"},
            None,
            id="9213-2.1-boolean-max-age-field-ignored",
        ),
        pytest.param(
            [(CC, "max-age=60"), (CDN, "max-age=-1")],
            None,
            {"max-age": "60"},
            None,
            id="9111-1.2.2-negative-max-age-field-ignored",
        ),
        pytest.param(
            [(CC, "max-age=60"), (CDN, "stale-while-revalidate=ten, max-age=600")],
            None,
            {"max-age": "60"},
            None,
            id="9213-2.1-one-bad-directive-invalidates-the-field",
        ),
        pytest.param(
            [(CC, "max-age=60"), (CDN, "stale-if-error=(1 2)")],
            None,
            {"max-age": "60"},
            None,
            id="9213-2.1-inner-list-stale-if-error-field-ignored",
        ),
        pytest.param(
            [(CC, "max-age=60"), (CDN, "no-store=1")],
            None,
            {"max-age": "60"},
            None,
            id="9213-2.1-integer-no-store-field-ignored",
        ),
        pytest.param(
            [(CC, "no-store"), (CDN, "private=5")],
            None,
            {"no-store": None},
            None,
            id="9213-2.1-integer-private-field-ignored",
        ),
        pytest.param(
            [(CDN, "max-age=?1"), (SURROGATE, "max-age=300")],
            None,
            {"max-age": "300"},
            "surrogate-control",
            id="9213-2.1-wrong-type-falls-to-next-target",
        ),
        pytest.param(
            [(CDN, "max-age=60, max-age=120")],
            None,
            {"max-age": "120"},
            "cdn-cache-control",
            id="8941-4.2.2-duplicate-key-last-wins",
        ),
        pytest.param(
            [(CDN, "max-age=60"), (CDN, "no-transform")],
            None,
            {"max-age": "60", "no-transform": None},
            "cdn-cache-control",
            id="9213-2.1-field-lines-combined",
        ),
        pytest.param(
            [(CC, "no-store"), (CDN, "none")],
            None,
            {"none": None},
            "cdn-cache-control",
            id="9213-3.1-unknown-directive-still-replaces",
        ),
        pytest.param(
            [(SURROGATE, 'content="ESI/1.0", max-age=60')],
            None,
            {"max-age": "60"},
            "surrogate-control",
            id="surrogate-content-ignored",
        ),
        pytest.param(
            [(CC, "max-age=5"), (SURROGATE, 'content="ESI/1.0"')],
            None,
            {"max-age": "5"},
            None,
            id="surrogate-only-content-falls-back",
        ),
        pytest.param(
            [(SURROGATE, "max-age=60, no-store;edge1")],
            None,
            {"max-age": "60"},
            "surrogate-control",
            id="surrogate-device-targeted-member-dropped",
        ),
        pytest.param(
            [(SURROGATE, 'Max-Age="60", stale-while-revalidate=30')],
            None,
            {"max-age": "60", "stale-while-revalidate": "30"},
            "surrogate-control",
            id="surrogate-parses-like-cache-control",
        ),
    ],
)
def test_response_directives(
    pairs: list[tuple[str, str]],
    targeted: tuple[str, ...] | None,
    expected: dict[str, str | None],
    used: str | None,
) -> None:
    h = headers(*pairs)
    directives, name = (
        response_directives(h) if targeted is None else response_directives(h, targeted)
    )
    assert (dict(directives.items), name) == (expected, used)
    assert directives.targeted is (used is not None)


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        pytest.param([(CC, "max-age=0")], {"max-age": "0"}, id="9111-5.2.1-cache-control"),
        pytest.param(
            [("Pragma", "no-cache")], {"no-cache": None}, id="9111-5.4-pragma-without-cache-control"
        ),
        pytest.param(
            [("Pragma", "x-foo, No-Cache")],
            {"no-cache": None},
            id="9111-5.4-pragma-list-case-insensitive",
        ),
        pytest.param([("Pragma", "x-foo")], {}, id="9111-5.4-pragma-other-directive"),
        pytest.param(
            [(CC, "max-stale"), ("Pragma", "no-cache")],
            {"max-stale": None},
            id="9111-5.4-pragma-ignored-with-cache-control",
        ),
        pytest.param(
            [(CC, ""), ("Pragma", "no-cache")],
            {},
            id="9111-5.4-empty-cache-control-still-present",
        ),
        pytest.param([], {}, id="9111-5.2.1-no-fields"),
    ],
)
def test_request_directives(pairs: list[tuple[str, str]], expected: dict[str, str | None]) -> None:
    assert dict(request_directives(headers(*pairs)).items) == expected
