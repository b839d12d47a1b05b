"""Variant negotiation: RFC 9110 §12.5.1 (Accept), §12.5.3 (Accept-Encoding), RFC 8942 and
the Responsive Image Client Hints draft (Sec-CH-Width, Sec-CH-DPR, Sec-CH-Viewport-Width)."""

import pytest
from multidict import CIMultiDict, MultiDict

from pinedge.edge.http.negotiate import (
    ACCEPT_CH,
    DEFAULT_BREAKPOINTS,
    DEFAULT_PREFERENCE,
    ImageRequest,
    NegotiationError,
    accepted_encoding,
    accepted_format,
    compressible,
    hinted_width,
    image_request,
    image_vary,
    parse_accept,
    snap_width,
)
from pinedge.edge.images.model import Format

AVIF, WEBP, JPEG, PNG, GIF = Format.AVIF, Format.WEBP, Format.JPEG, Format.PNG, Format.GIF

# Accept values browsers send for <img> (MDN "List of default Accept values" and captures).
CHROME = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
FIREFOX_92 = "image/avif,image/webp,*/*"
FIREFOX_128 = "image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5"
FIREFOX_65 = "image/webp,*/*"
FIREFOX_46 = "image/png,image/*;q=0.8,*/*;q=0.5"
SAFARI_14 = "image/webp,image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5"
SAFARI_17 = (
    "image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,"
    "image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5"
)
CURL = "*/*"


def headers(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


# ---------------------------------------------------------------- parse_accept


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, [], id="9110-12.5.1-absent"),
        pytest.param("", [], id="9110-5.6.1-empty-list"),
        pytest.param("text/html", [("text/html", 1.0)], id="9110-12.5.1-default-q-is-1"),
        pytest.param(
            "image/webp;q=0.5, */*;q=0.1",
            [("image/webp", 0.5), ("*/*", 0.1)],
            id="9110-12.5.1-q-and-order-kept",
        ),
        pytest.param("TEXT/HTML;Q=0.5", [("text/html", 0.5)], id="9110-12.5.1-case-insensitive"),
        pytest.param("text/html ; q=0.5", [("text/html", 0.5)], id="9110-12.5.1-ows-around-semi"),
        pytest.param(
            "text/html;level=1;q=0.4;ext=x",
            [("text/html", 0.4)],
            id="9110-12.5.1-other-params-ignored",
        ),
        pytest.param(
            'text/html;foo="a,b;q=0";q=0.3, image/png',
            [("text/html", 0.3), ("image/png", 1.0)],
            id="9110-5.6.4-quoted-comma-and-semi",
        ),
        pytest.param("image/*;q=2", [("image/*", 1.0)], id="9110-12.4.2-q-clamped-high"),
        pytest.param("image/*;q=-1", [("image/*", 0.0)], id="9110-12.4.2-q-clamped-low"),
        pytest.param("image/*;q=0", [("image/*", 0.0)], id="9110-12.4.2-q-zero-kept"),
        pytest.param(
            "image/avif;q=abc, image/webp;q=, image/png;q, image/gif;q=nan, image/jpeg",
            [("image/jpeg", 1.0)],
            id="9110-12.4.2-malformed-q-skipped",
        ),
        pytest.param(
            "text, */html, text/, /html, image / png, , image/png",
            [("image/png", 1.0)],
            id="9110-12.5.1-malformed-ranges-skipped",
        ),
    ],
)
def test_parse_accept(value: str | None, expected: list[tuple[str, float]]) -> None:
    assert parse_accept(value) == expected


# ---------------------------------------------------------------- accepted_format


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        pytest.param(CHROME, AVIF, id="9110-12.5.1-chrome"),
        pytest.param(FIREFOX_92, AVIF, id="9110-12.5.1-firefox-92"),
        pytest.param(FIREFOX_128, AVIF, id="9110-12.5.1-firefox-128"),
        pytest.param(FIREFOX_65, WEBP, id="9110-12.5.1-firefox-65-no-avif"),
        pytest.param(FIREFOX_46, JPEG, id="9110-12.5.1-firefox-46-image-star-q0.8"),
        pytest.param(SAFARI_14, WEBP, id="9110-12.5.1-safari-14-webp-no-avif"),
        pytest.param(SAFARI_17, AVIF, id="9110-12.5.1-safari-17-webp-avif-tie-to-preference"),
        pytest.param(CURL, JPEG, id="9110-12.5.1-curl-star-star-is-jpeg"),
        pytest.param(None, None, id="9110-12.5.1-no-accept-keeps-source"),
        pytest.param("", None, id="9110-12.5.1-empty-accept-keeps-source"),
        pytest.param("text/html", None, id="9110-12.5.1-nothing-acceptable-keeps-source"),
        pytest.param("image/png", None, id="9110-12.5.1-only-png-not-in-preference"),
        pytest.param("image/*", JPEG, id="9110-12.5.1-image-star-not-avif-or-webp"),
        pytest.param("image/webp;q=0.9, image/jpeg", JPEG, id="9110-12.5.1-q-beats-preference"),
        pytest.param("image/avif;q=0.5, image/webp;q=0.5", AVIF, id="9110-12.5.1-tie-preference"),
        pytest.param("image/avif;q=0, image/webp, */*", WEBP, id="9110-12.4.2-avif-q0-excluded"),
        pytest.param("image/*, image/jpeg;q=0", None, id="9110-12.5.1-specific-q0-beats-wildcard"),
        pytest.param("*/*;q=0.1, image/*;q=0", None, id="9110-12.5.1-image-star-beats-star-star"),
        pytest.param("image/*;q=0.2, */*", JPEG, id="9110-12.5.1-image-star-q-used-over-star"),
        pytest.param("IMAGE/AVIF", AVIF, id="9110-12.5.1-media-type-case-insensitive"),
        pytest.param("image/avif;q=abc, image/webp", WEBP, id="9110-12.4.2-malformed-skipped"),
        pytest.param("image/avif;q=0.001", AVIF, id="9110-12.4.2-tiny-q-still-acceptable"),
    ],
)
def test_accepted_format(accept: str | None, expected: Format | None) -> None:
    assert accepted_format(accept) == expected


@pytest.mark.parametrize(
    ("accept", "preference", "expected"),
    [
        pytest.param(CHROME, (WEBP, AVIF, JPEG), WEBP, id="config-preference-order"),
        pytest.param("image/png", (AVIF, WEBP, JPEG, PNG), PNG, id="config-png-exact"),
        pytest.param("*/*", (PNG, JPEG), PNG, id="config-png-by-wildcard"),
        pytest.param("image/gif, image/*;q=0.5", (JPEG, GIF), GIF, id="config-gif-by-q"),
        pytest.param("*/*", (AVIF, WEBP), None, id="config-modern-only-wildcard-keeps-source"),
        pytest.param(CHROME, (), None, id="config-empty-preference"),
    ],
)
def test_accepted_format_preference(
    accept: str, preference: tuple[Format, ...], expected: Format | None
) -> None:
    assert accepted_format(accept, preference) == expected


def test_default_preference() -> None:
    assert DEFAULT_PREFERENCE == (AVIF, WEBP, JPEG)


# ---------------------------------------------------------------- widths


@pytest.mark.parametrize(
    ("requested", "breakpoints", "expected"),
    [
        pytest.param(None, DEFAULT_BREAKPOINTS, None, id="none-is-original"),
        pytest.param(1, DEFAULT_BREAKPOINTS, 236, id="up-to-smallest"),
        pytest.param(236, DEFAULT_BREAKPOINTS, 236, id="exact-breakpoint"),
        pytest.param(237, DEFAULT_BREAKPOINTS, 474, id="up-to-next"),
        pytest.param(736, DEFAULT_BREAKPOINTS, 736, id="exact-middle"),
        pytest.param(1199, DEFAULT_BREAKPOINTS, 1200, id="up-to-largest"),
        pytest.param(10_000, DEFAULT_BREAKPOINTS, 1200, id="above-largest-is-largest"),
        pytest.param(300, (1200, 236), 1200, id="unsorted-breakpoints"),
        pytest.param(300, (), 300, id="no-breakpoints-no-snapping"),
    ],
)
def test_snap_width(requested: int | None, breakpoints: tuple[int, ...], expected: int) -> None:
    assert snap_width(requested, breakpoints) == expected


def test_default_breakpoints() -> None:
    assert DEFAULT_BREAKPOINTS == (236, 474, 736, 1200)


@pytest.mark.parametrize(
    ("width", "dpr", "viewport", "expected"),
    [
        pytest.param(None, None, None, None, id="8942-no-hints"),
        pytest.param("472", None, None, 472, id="rich-sec-ch-width-physical"),
        pytest.param("472", "2", None, 472, id="rich-sec-ch-width-dpr-not-applied-twice"),
        pytest.param("472", "2", "390", 472, id="rich-sec-ch-width-beats-viewport"),
        pytest.param(" 472 ", None, None, 472, id="8941-ows-trimmed"),
        pytest.param(None, "2", None, None, id="rich-dpr-alone-says-no-width"),
        pytest.param(None, None, "390", 390, id="rich-viewport-css-px-dpr-1"),
        pytest.param(None, "2", "390", 780, id="rich-viewport-times-dpr"),
        pytest.param(None, "2.625", "412", 1082, id="rich-viewport-times-dpr-rounded-up"),
        pytest.param(None, "2x", "390", 390, id="8941-malformed-dpr-is-1"),
        pytest.param(None, "2.6255", "400", 400, id="8941-decimal-over-3-digits-malformed"),
        pytest.param("abc", None, None, None, id="8941-non-numeric-width"),
        pytest.param("abc", "2", "390", 780, id="8941-malformed-width-falls-to-viewport"),
        pytest.param("-472", None, None, None, id="8941-negative-width"),
        pytest.param("0", None, None, None, id="rich-zero-width-absent"),
        pytest.param("472.5", None, None, None, id="8941-width-is-integer"),
        pytest.param("1" * 16, None, None, None, id="8941-integer-over-15-digits"),
        pytest.param("", None, "", None, id="8941-empty"),
    ],
)
def test_hinted_width(
    width: str | None, dpr: str | None, viewport: str | None, expected: int | None
) -> None:
    assert hinted_width(width, dpr, viewport) == expected


def test_image_vary_plain_is_accept() -> None:
    assert image_vary(False) == "Accept"


def test_image_vary_names_every_hint_it_offers() -> None:
    """RFC 8942 §3.2: hints that can change the response are listed in Vary."""
    vary = [name.strip() for name in image_vary(True).split(",")]
    assert vary[0] == "Accept"
    assert vary[1:] == [name.strip() for name in ACCEPT_CH.split(",")]
    assert {"Sec-CH-Width", "Sec-CH-DPR"} <= set(vary)


# ---------------------------------------------------------------- image_request


def request(
    query: dict[str, str] | None = None,
    *pairs: tuple[str, str],
    path: str = "/img/a.jpg",
    presets: dict[str, int] | None = None,
) -> tuple[ImageRequest, str]:
    return image_request(MultiDict(query or {}), headers(*pairs), presets=presets, path=path)


@pytest.mark.parametrize(
    ("query", "pairs", "expected"),
    [
        pytest.param({}, [("Accept", CHROME)], ImageRequest(AVIF, None), id="accept-only"),
        pytest.param({}, [], ImageRequest(None, None), id="no-accept-keeps-source"),
        pytest.param(
            {},
            [("accept", "image/webp"), ("ACCEPT", "image/avif")],
            ImageRequest(AVIF, None),
            id="9110-5.3-accept-lines-combined",
        ),
        pytest.param({"w": "300"}, [("Accept", CHROME)], ImageRequest(AVIF, 474), id="w-snapped"),
        pytest.param({"w": "10000"}, [], ImageRequest(None, 1200), id="w-max-to-largest"),
        pytest.param({"w": "0236"}, [], ImageRequest(None, 236), id="w-leading-zero"),
        pytest.param({"fm": "webp"}, [("Accept", CHROME)], ImageRequest(WEBP, None), id="fm-webp"),
        pytest.param({"fm": "avif"}, [("Accept", CURL)], ImageRequest(AVIF, None), id="fm-avif"),
        pytest.param({"fm": "jpeg"}, [], ImageRequest(JPEG, None), id="fm-jpeg-no-accept"),
        pytest.param(
            {"fm": "png"}, [("Accept", "image/png;q=0")], ImageRequest(PNG, None), id="fm-png"
        ),
        pytest.param(
            {"fm": "webp", "w": "800"}, [], ImageRequest(WEBP, 1200), id="fm-and-w-together"
        ),
        pytest.param({"lqip": "0"}, [], ImageRequest(None, None), id="lqip-0-is-off"),
        pytest.param({"lqip": "1"}, [], ImageRequest(None, None, lqip=True), id="lqip"),
        pytest.param(
            {"lqip": "1", "w": "800", "fm": "webp"},
            [("Accept", CHROME)],
            ImageRequest(None, None, lqip=True),
            id="lqip-one-per-source",
        ),
        pytest.param(
            {},
            [("Sec-CH-Width", "300")],
            ImageRequest(None, 474),
            id="rich-sec-ch-width-snapped",
        ),
        pytest.param(
            {},
            [("sec-ch-dpr", "3"), ("sec-ch-viewport-width", "390")],
            ImageRequest(None, 1200),
            id="rich-viewport-dpr-snapped",
        ),
        pytest.param(
            {},
            [("Sec-CH-Width", "1200"), ("Sec-CH-Width", "200")],
            ImageRequest(None, 236),
            id="rich-repeated-hint-last-wins",
        ),
        pytest.param(
            {"w": "200"},
            [("Sec-CH-Width", "1200")],
            ImageRequest(None, 236),
            id="rich-w-beats-hints",
        ),
        pytest.param(
            {},
            [("Sec-CH-Width", "huge")],
            ImageRequest(None, None),
            id="rich-malformed-hint-original",
        ),
    ],
)
def test_image_request(
    query: dict[str, str], pairs: list[tuple[str, str]], expected: ImageRequest
) -> None:
    variant, path = request(query, *pairs)
    assert variant == expected
    assert path == "/img/a.jpg"


@pytest.mark.parametrize(
    ("query", "uses_hints"),
    [
        pytest.param({}, True, id="8942-3.2-no-w-hints-could-choose"),
        pytest.param({"w": "300"}, False, id="8942-3.2-w-fixed"),
        pytest.param({"lqip": "1"}, False, id="8942-3.2-lqip-fixed"),
    ],
)
def test_image_request_uses_hints(query: dict[str, str], uses_hints: bool) -> None:
    """Whether the width was open to hints, sent or not: a later request's may differ."""
    assert request(query)[0].uses_hints is uses_hints
    assert request(query, ("Sec-CH-Width", "300"))[0].uses_hints is uses_hints


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        pytest.param({"w": "0"}, "w must", id="w-zero"),
        pytest.param({"w": "-1"}, "w must", id="w-negative"),
        pytest.param({"w": "10001"}, "w must", id="w-over-max"),
        pytest.param({"w": "9" * 100}, "w must", id="w-huge"),
        pytest.param({"w": "abc"}, "w must", id="w-non-numeric"),
        pytest.param({"w": "1e3"}, "w must", id="w-exponent"),
        pytest.param({"w": "300.0"}, "w must", id="w-decimal"),
        pytest.param({"w": "+300"}, "w must", id="w-sign"),
        pytest.param({"w": " 300"}, "w must", id="w-space"),
        pytest.param({"w": "３００"}, "w must", id="w-non-ascii-digits"),
        pytest.param({"w": ""}, "w must", id="w-empty"),
        pytest.param({"fm": "gif"}, "fm must", id="fm-gif-not-forceable"),
        pytest.param({"fm": "jpg"}, "fm must", id="fm-jpg-alias-not-accepted"),
        pytest.param({"fm": "WEBP"}, "fm must", id="fm-case-sensitive"),
        pytest.param({"fm": ""}, "fm must", id="fm-empty"),
        pytest.param({"lqip": "yes"}, "lqip must", id="lqip-not-0-or-1"),
        pytest.param({"lqip": "1", "w": "abc"}, "w must", id="lqip-still-validates-w"),
    ],
)
def test_image_request_rejects(query: dict[str, str], reason: str) -> None:
    with pytest.raises(NegotiationError) as caught:
        request(query, ("Accept", CHROME))
    assert caught.value.reason.startswith(reason)
    assert caught.value.status == 400
    assert isinstance(caught.value, ValueError)


PRESETS = {"236x": 236, "474x": 474, "thumb": 150}


@pytest.mark.parametrize(
    ("path", "query", "expected_path", "expected_width", "uses_hints"),
    [
        pytest.param("/236x/img/a.jpg", {}, "/img/a.jpg", 236, False, id="preset-stripped"),
        pytest.param("/thumb/a.jpg", {}, "/a.jpg", 150, False, id="preset-not-snapped"),
        pytest.param("/236x/", {}, "/", 236, False, id="preset-empty-rest"),
        pytest.param("/474x/img/a.jpg", {"w": "1000"}, "/img/a.jpg", 1200, False, id="w-wins"),
        pytest.param("/img/236x/a.jpg", {}, "/img/236x/a.jpg", None, True, id="only-first-segment"),
        pytest.param("/236x", {}, "/236x", None, True, id="segment-without-slash-is-a-file"),
        pytest.param("/999x/a.jpg", {}, "/999x/a.jpg", None, True, id="unknown-preset"),
        pytest.param("236x/a.jpg", {}, "236x/a.jpg", None, True, id="relative-path-untouched"),
    ],
)
def test_image_request_presets(
    path: str,
    query: dict[str, str],
    expected_path: str,
    expected_width: int | None,
    uses_hints: bool,
) -> None:
    variant, rest = request(query, ("Accept", CHROME), path=path, presets=PRESETS)
    assert (rest, variant.width, variant.format) == (expected_path, expected_width, AVIF)
    assert variant.uses_hints is uses_hints


def test_image_request_without_presets_keeps_path() -> None:
    assert request({}, path="/236x/img/a.jpg")[1] == "/236x/img/a.jpg"


def test_image_request_lqip_strips_preset() -> None:
    assert request({"lqip": "1"}, path="/236x/a.jpg", presets=PRESETS) == (
        ImageRequest(None, None, lqip=True),
        "/a.jpg",
    )


def test_image_request_plain_mappings() -> None:
    """Any Mapping works; a plain dict's header names must then be lower-case."""
    variant, _ = image_request({"w": "500"}, {"accept": SAFARI_14, "sec-ch-width": "100"})
    assert variant == ImageRequest(WEBP, 736)


def test_image_request_custom_breakpoints_and_preference() -> None:
    variant, _ = image_request(
        {"w": "500"}, headers(("Accept", CHROME)), breakpoints=(320, 640), preference=(WEBP,)
    )
    assert variant == ImageRequest(WEBP, 640)


# ---------------------------------------------------------------- key_suffix


@pytest.mark.parametrize(
    ("variant", "suffix"),
    [
        pytest.param(ImageRequest(WEBP, 736), "fm=webp;w=736", id="format-width"),
        pytest.param(ImageRequest(None, None), "fm=keep;w=orig", id="keep-orig"),
        pytest.param(ImageRequest(AVIF, None), "fm=avif;w=orig", id="format-orig"),
        pytest.param(ImageRequest(None, 236), "fm=keep;w=236", id="keep-width"),
        pytest.param(ImageRequest(None, None, lqip=True), "lqip", id="lqip"),
        pytest.param(ImageRequest(JPEG, 236, lqip=True), "fm=jpeg;w=236;lqip", id="lqip-built"),
        pytest.param(
            ImageRequest(PNG, 474, uses_hints=True), "fm=png;w=474", id="hints-not-in-key"
        ),
    ],
)
def test_key_suffix(variant: ImageRequest, suffix: str) -> None:
    assert variant.key_suffix() == suffix


def test_key_suffix_one_per_variant() -> None:
    variants = [
        ImageRequest(fmt, width, lqip)
        for fmt in (None, *Format)
        for width in (None, *DEFAULT_BREAKPOINTS)
        for lqip in (False, True)
    ]
    assert len({v.key_suffix() for v in variants}) == len(variants)


def test_browsers_share_keys_by_variant_not_by_accept() -> None:
    """Many Accept strings, few keys: Chrome, Firefox 92+, Safari 17 share one AVIF entry."""
    keys = {
        accept: request({"w": "300"}, ("Accept", accept))[0].key_suffix()
        for accept in (CHROME, FIREFOX_92, FIREFOX_128, SAFARI_17, FIREFOX_65, SAFARI_14, CURL)
    }
    assert set(keys.values()) == {"fm=avif;w=474", "fm=webp;w=474", "fm=jpeg;w=474"}


def test_image_request_is_frozen_and_hashable() -> None:
    variant = ImageRequest(WEBP, 736)
    with pytest.raises(AttributeError):
        variant.width = 1200  # type: ignore[misc]  # the assignment the test expects to fail
    assert variant == ImageRequest(WEBP, 736, uses_hints=True)
    assert hash(variant) == hash(ImageRequest(WEBP, 736, uses_hints=True))


# ---------------------------------------------------------------- text


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        pytest.param("text/html; charset=utf-8", True, id="html-with-charset"),
        pytest.param("text/css", True, id="css"),
        pytest.param("text/javascript", True, id="js-text"),
        pytest.param("text/plain", True, id="plain"),
        pytest.param("TEXT/CSV", True, id="case-insensitive"),
        pytest.param("application/javascript", True, id="js-application"),
        pytest.param("application/json", True, id="json"),
        pytest.param("application/xml", True, id="xml"),
        pytest.param("application/manifest+json", True, id="6839-json-suffix"),
        pytest.param("application/atom+xml", True, id="6839-xml-suffix"),
        pytest.param("application/ld+json;profile=x", True, id="6839-suffix-with-params"),
        pytest.param("image/svg+xml", True, id="svg"),
        pytest.param("image/x-icon", True, id="ico"),
        pytest.param("application/wasm", True, id="wasm"),
        pytest.param("font/ttf", True, id="ttf"),
        pytest.param("font/otf", True, id="otf"),
        pytest.param("text/event-stream", False, id="sse-streams"),
        pytest.param("font/woff2", False, id="woff2-compressed"),
        pytest.param("font/woff", False, id="woff-compressed"),
        pytest.param("image/jpeg", False, id="jpeg"),
        pytest.param("image/webp", False, id="webp"),
        pytest.param("image/avif", False, id="avif"),
        pytest.param("image/png", False, id="png"),
        pytest.param("video/mp4", False, id="video"),
        pytest.param("application/zip", False, id="zip"),
        pytest.param("application/gzip", False, id="gzip"),
        pytest.param("application/octet-stream", False, id="unknown-binary"),
        pytest.param("", False, id="empty"),
        pytest.param(None, False, id="absent"),
    ],
)
def test_compressible(content_type: str | None, expected: bool) -> None:
    assert compressible(content_type) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, None, id="9110-12.5.3-absent-identity"),
        pytest.param("", None, id="9110-12.5.3-empty-identity"),
        pytest.param("gzip, deflate, br, zstd", "br", id="9110-12.5.3-chrome-tie-to-available"),
        pytest.param("gzip, deflate, br", "br", id="9110-12.5.3-safari"),
        pytest.param("gzip, deflate", "gzip", id="9110-12.5.3-gzip-only"),
        pytest.param("deflate", None, id="9110-12.5.3-nothing-available"),
        pytest.param("br;q=0, gzip", "gzip", id="9110-12.5.3-br-q0-excluded"),
        pytest.param("br;q=0", None, id="9110-12.5.3-only-br-q0"),
        pytest.param("gzip;q=0.5, br;q=0.8", "br", id="9110-12.5.3-higher-q"),
        pytest.param("gzip;q=1.0, br;q=0.8", "gzip", id="9110-12.5.3-q-beats-available-order"),
        pytest.param("zstd;q=0.9, br;q=0.9", "br", id="9110-12.5.3-q-tie-available-order"),
        pytest.param("*", "br", id="9110-12.5.3-star"),
        pytest.param("*;q=0.5", "br", id="9110-12.5.3-star-q0.5"),
        pytest.param("*, br;q=0", "zstd", id="9110-12.5.3-star-but-br-refused"),
        pytest.param("gzip;q=0.9, *;q=0.1", "gzip", id="9110-12.5.3-listed-beats-star"),
        pytest.param("*;q=0", None, id="9110-12.5.3-star-q0"),
        pytest.param("identity;q=0", None, id="9110-12.5.3-identity-q0-alone"),
        pytest.param("gzip, identity;q=0", "gzip", id="9110-12.5.3-identity-q0-with-gzip"),
        pytest.param("br;q=0.5, identity", None, id="9110-12.5.3-identity-preferred"),
        pytest.param("gzip, identity", "gzip", id="9110-12.5.3-identity-tie-compresses"),
        pytest.param("br;q=0.5, *;q=0.9", "zstd", id="9110-12.5.3-star-rates-identity-too"),
        pytest.param("x-gzip", "gzip", id="9110-8.4.1.3-x-gzip-is-gzip"),
        pytest.param("GZIP, BR", "br", id="9110-8.4.1-codings-case-insensitive"),
        pytest.param("br;q=abc, gzip", "gzip", id="9110-12.4.2-malformed-q-skipped"),
        pytest.param("br;q=0.001", "br", id="9110-12.4.2-tiny-q-acceptable"),
        pytest.param("br ; q=0.5 , ,gzip;q=0.4", "br", id="9110-5.6.1-ows-and-empty-members"),
        pytest.param("b r, gzip", "gzip", id="9110-5.6.2-malformed-token-skipped"),
    ],
)
def test_accepted_encoding(value: str | None, expected: str | None) -> None:
    assert accepted_encoding(value) == expected


@pytest.mark.parametrize(
    ("value", "available", "expected"),
    [
        pytest.param("gzip, deflate, br, zstd", ("zstd", "br", "gzip"), "zstd", id="order"),
        pytest.param("gzip, br", ("gzip",), "gzip", id="only-gzip-available"),
        pytest.param("br", ("gzip",), None, id="nothing-in-common"),
        pytest.param("gzip, br", (), None, id="none-available"),
    ],
)
def test_accepted_encoding_available(
    value: str, available: tuple[str, ...], expected: str | None
) -> None:
    assert accepted_encoding(value, available) == expected
