"""Secondary cache keys from Vary: RFC 9111 §4.1, RFC 9110 §12.5.5, §5.3, §5.6.1."""

import pytest
from multidict import CIMultiDict

from pinedge.edge.http.vary import normalize, secondary_key, vary_names


def headers(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param([], (), id="9111-4.1-no-vary"),
        pytest.param([""], (), id="9111-4.1-empty-vary"),
        pytest.param(["Accept"], ("accept",), id="9110-12.5.5-one-name"),
        pytest.param(
            ["Accept-Encoding, Accept"], ("accept", "accept-encoding"), id="9110-12.5.5-sorted"
        ),
        pytest.param(
            ["Accept", "accept, Origin"], ("accept", "origin"), id="9110-5.3-lines-deduplicated"
        ),
        pytest.param([" , Accept ,,"], ("accept",), id="9110-5.6.1-ows-and-empty-members"),
        pytest.param(["*"], None, id="9111-4.1-star"),
        pytest.param(["Accept, *"], None, id="9111-4.1-star-among-names"),
        pytest.param(["Accept", "*"], None, id="9111-4.1-star-on-second-line"),
    ],
)
def test_vary_names(lines: list[str], expected: tuple[str, ...] | None) -> None:
    assert vary_names(headers(*(("Vary", line) for line in lines))) == expected


@pytest.mark.parametrize(
    ("name", "pairs", "expected"),
    [
        pytest.param("accept", [], None, id="9111-4.1-absent"),
        pytest.param(
            "accept-encoding", [("Accept-Encoding", "")], "", id="9111-4.1-empty-not-absent"
        ),
        pytest.param(
            "accept-encoding",
            [("Accept-Encoding", "gzip, deflate, br")],
            "gzip,deflate,br",
            id="9111-4.1-list-ows-removed",
        ),
        pytest.param(
            "accept-encoding",
            [("Accept-Encoding", "GZIP,\tDeflate ")],
            "gzip,deflate",
            id="9111-4.1-coding-case-folded",
        ),
        pytest.param(
            "accept",
            [("Accept", "text/html ; q=0.9, */*")],
            "text/html;q=0.9,*/*",
            id="9110-12.5.1-parameter-ows-removed",
        ),
        pytest.param(
            "accept",
            [("Accept", "text/html"), ("Accept", "image/webp")],
            "text/html,image/webp",
            id="9110-5.3-lines-combined",
        ),
        pytest.param(
            "accept", [("Accept", ", text/html,,")], "text/html", id="9110-5.6.1-empty-members"
        ),
        pytest.param(
            "accept",
            [("Accept", 'Text/HTML;Level="ABC"')],
            'text/html;level="ABC"',
            id="9110-5.6.4-quoted-string-keeps-case",
        ),
        pytest.param(
            "accept",
            [("Accept", 'text/x;a="1,2", image/png')],
            'text/x;a="1,2",image/png',
            id="9110-5.6.4-quoted-comma-not-split",
        ),
        pytest.param(
            "Accept", [("accept", "Text/HTML")], "text/html", id="9111-4.1-name-case-insensitive"
        ),
        pytest.param(
            "accept-language",
            [("Accept-Language", "en-US, fr;q=0.5")],
            "en-us,fr;q=0.5",
            id="9110-12.5.4-language-case-folded",
        ),
        pytest.param(
            "accept-charset",
            [("Accept-Charset", "UTF-8, iso-8859-1;q=0.5")],
            "utf-8,iso-8859-1;q=0.5",
            id="9110-12.5.2-charset-case-folded",
        ),
        pytest.param(
            "cache-control",
            [("Cache-Control", "No-Cache,  max-age=0")],
            "No-Cache,max-age=0",
            id="9110-5.6.1-other-list-keeps-case",
        ),
        pytest.param(
            "te", [("TE", "trailers , gzip")], "trailers,gzip", id="9110-10.1.4-te-is-a-list"
        ),
        pytest.param(
            "user-agent",
            [("User-Agent", "  Mozilla/5.0   (X11;\tLinux)  ")],
            "Mozilla/5.0 (X11; Linux)",
            id="9111-4.1-whitespace-collapsed",
        ),
        pytest.param(
            "origin",
            [("Origin", "https://A.example")],
            "https://A.example",
            id="9111-4.1-non-list-keeps-case",
        ),
        pytest.param(
            "x-device", [("X-Device", "a"), ("X-Device", "b")], "a, b", id="9110-5.3-non-list-lines"
        ),
    ],
)
def test_normalize(name: str, pairs: list[tuple[str, str]], expected: str | None) -> None:
    assert normalize(name, headers(*pairs)) == expected


@pytest.mark.parametrize(
    ("names", "pairs", "expected"),
    [
        pytest.param((), [("Accept", "text/html")], (), id="9111-4.1-no-names"),
        pytest.param(
            ("accept-encoding", "origin"),
            [("Accept-Encoding", "GZIP, br")],
            ("gzip,br", None),
            id="9111-4.1-in-order-with-absent",
        ),
    ],
)
def test_secondary_key(
    names: tuple[str, ...], pairs: list[tuple[str, str]], expected: tuple[str | None, ...]
) -> None:
    assert secondary_key(names, headers(*pairs)) == expected


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        pytest.param(
            [("Accept-Encoding", "gzip, br")],
            [("accept-encoding", "GZIP,br")],
            True,
            id="9111-4.1-whitespace-and-case-match",
        ),
        pytest.param(
            [("Accept-Encoding", "gzip"), ("Accept-Encoding", "br")],
            [("Accept-Encoding", "gzip, br")],
            True,
            id="9111-4.1-combined-lines-match",
        ),
        pytest.param(
            [("Accept-Encoding", "gzip, br")],
            [("Accept-Encoding", "br, gzip")],
            False,
            id="9111-4.1-order-matters",
        ),
        pytest.param(
            [("Accept-Encoding", "")], [], False, id="9111-4.1-empty-does-not-match-absent"
        ),
    ],
)
def test_secondary_keys_match(
    first: list[tuple[str, str]], second: list[tuple[str, str]], same: bool
) -> None:
    names = ("accept-encoding",)
    assert (secondary_key(names, headers(*first)) == secondary_key(names, headers(*second))) is same
