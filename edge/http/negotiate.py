"""Variant negotiation: which image and which content coding a request gets.

Pure functions of the query and request headers, no I/O. The image side turns
`?fm`, `?w`, `?lqip`, a path preset, `Accept` (RFC 9110 §12.5.1) and Client
Hints (RFC 8942; Sec-CH-Width, Sec-CH-DPR and Sec-CH-Viewport-Width from the
WICG Responsive Image Client Hints draft) into a small `ImageRequest`, the
normalised variant that goes into the cache key (never the raw `Accept`), and
says which `Vary` the response needs. The text side picks `br`, `zstd` or `gzip`
from `Accept-Encoding` (RFC 9110 §12.5.3). q-values are honoured throughout.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from multidict import MultiMapping

from pinedge.edge.http.cachecontrol import split_list
from pinedge.edge.http.tokens import MEDIA_NAME_CHAR
from pinedge.edge.http.tokens import TOKEN as _TOKEN
from pinedge.edge.images.model import Format

DEFAULT_BREAKPOINTS: tuple[int, ...] = (236, 474, 736, 1200)
DEFAULT_PREFERENCE: tuple[Format, ...] = (Format.AVIF, Format.WEBP, Format.JPEG)
MAX_WIDTH = 10_000  # the largest ?w accepted

MEDIA_TYPES: Mapping[Format, str] = {
    Format.AVIF: "image/avif",
    Format.WEBP: "image/webp",
    Format.JPEG: "image/jpeg",
    Format.PNG: "image/png",
    Format.GIF: "image/gif",
}
# Formats that browsers name explicitly when they decode them: image/* and */*
# in an Accept field do not promise them (old browsers send image/* without).
_EXPLICIT_ONLY: frozenset[Format] = frozenset({Format.AVIF, Format.WEBP})
FORCEABLE: Mapping[str, Format] = {
    fmt.value: fmt for fmt in (Format.AVIF, Format.WEBP, Format.JPEG, Format.PNG)
}

# Client Hints (RFC 8942). Sec-CH-Width is the image's width in physical pixels
# (CSS width x DPR, already); Sec-CH-Viewport-Width is the layout viewport in
# CSS pixels, which Sec-CH-DPR turns into physical pixels.
ACCEPT_CH = "Sec-CH-Width, Sec-CH-DPR, Sec-CH-Viewport-Width"
VARY_IMAGE = "Accept"
_VARY_HINTED = f"{VARY_IMAGE}, {ACCEPT_CH}"
VARY_TEXT = "Accept-Encoding"

_MEDIA_RANGE = re.compile(rf"(?:\*/\*|[{MEDIA_NAME_CHAR}]+/(?:\*|[{MEDIA_NAME_CHAR}]+))")
_QVALUE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_SF_INTEGER = re.compile(r"[0-9]{1,15}")  # RFC 8941 §3.3.1, non-negative
_SF_NUMBER = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,3})?|[0-9]{13,15}")  # RFC 8941 §3.3.1-2
_WIDTH_PARAM = re.compile(r"[0-9]{1,6}")


class NegotiationError(ValueError):
    """A `?w`, `?fm` or `?lqip` value the edge cannot serve: answered 400 with `reason`."""

    status: ClassVar[int] = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """The normalised variant a request asks for; `key_suffix()` goes into the cache key.

    `format` None keeps the source's format family (the pipeline decides);
    `width` None keeps the original width. `uses_hints` is True when Client
    Hints chose the width, or would have had the browser sent them (no `?w`,
    no preset): the response must then Vary on them. It is not part of the
    variant's identity (equality, hash, key).
    """

    format: Format | None
    width: int | None
    lqip: bool = False
    uses_hints: bool = field(default=False, compare=False)

    def key_suffix(self) -> str:
        """`fm=webp;w=736`, `fm=keep;w=orig`, `lqip`: stable, short, one per variant."""
        if self.lqip and self.format is None and self.width is None:
            return "lqip"
        fm = self.format.value if self.format is not None else "keep"
        w = str(self.width) if self.width is not None else "orig"
        return f"fm={fm};w={w};lqip" if self.lqip else f"fm={fm};w={w}"


# ---------------------------------------------------------------- weighted lists


def _weighted(value: str, valid: re.Pattern[str]) -> list[tuple[str, float]]:
    """Members of a `#( item *( OWS ";" OWS parameter ) )` list with their q (default 1).

    Items are lower-cased and must fully match `valid`; parameters other than q
    are ignored; q is clamped to 0..1; a member with a malformed item or q is
    skipped; order is kept.
    """
    out: list[tuple[str, float]] = []
    for member in split_list(value):
        item, *params = split_list(member, ";")
        item = item.strip(" \t").lower()
        if not valid.fullmatch(item):
            continue
        q: float | None = 1.0
        for param in params:
            name, eq, arg = param.partition("=")
            if name.strip(" \t").lower() == "q":
                arg = arg.strip(" \t")
                q = min(1.0, max(0.0, float(arg))) if eq and _QVALUE.fullmatch(arg) else None
                break
        if q is not None:
            out.append((item, q))
    return out


def parse_accept(value: str | None) -> list[tuple[str, float]]:
    """Media ranges with their q (RFC 9110 §12.5.1), lower-cased, in the field's order.

    Parameters other than q are ignored, q is clamped to 0..1, malformed
    members (`text`, `*/html`, `q=abc`) are skipped.
    """
    return _weighted(value, _MEDIA_RANGE) if value else []


def accepted_format(
    accept: str | None, preference: Sequence[Format] = DEFAULT_PREFERENCE
) -> Format | None:
    """The format of `preference` the client rates highest; ties go to the preference order.

    The most specific matching range gives a format its q (§12.5.1): the exact
    type, then `image/*`, then `*/*`; wildcards count for JPEG, PNG and GIF but
    not for AVIF and WebP. q=0 excludes. None (keep the source's family) when
    there is no Accept, or nothing in `preference` is acceptable.
    """
    ranges = parse_accept(accept)
    best, best_q = None, 0.0
    for fmt in preference:
        q = _format_q(fmt, ranges)
        if q > best_q:
            best, best_q = fmt, q
    return best


def _format_q(fmt: Format, ranges: list[tuple[str, float]]) -> float:
    candidates: tuple[str, ...] = (MEDIA_TYPES[fmt],)
    if fmt not in _EXPLICIT_ONLY:
        candidates += ("image/*", "*/*")
    for candidate in candidates:
        for media_range, q in ranges:
            if media_range == candidate:
                return q
    return 0.0


# ---------------------------------------------------------------- widths


def snap_width(
    requested: int | None, breakpoints: Sequence[int] = DEFAULT_BREAKPOINTS
) -> int | None:
    """The smallest breakpoint ≥ `requested`; the largest above them all; None stays None.

    No breakpoints: no snapping. Never upscaling past the source is the pipeline's job.
    """
    if requested is None or not breakpoints:
        return requested
    ordered = sorted(breakpoints)
    return next((b for b in ordered if b >= requested), ordered[-1])


def hinted_width(
    sec_ch_width: str | None, sec_ch_dpr: str | None, viewport: str | None = None
) -> int | None:
    """The width in physical pixels that Client Hints ask for; None when they say nothing.

    Sec-CH-Width is already physical (CSS width x DPR), so DPR is not applied to
    it again. Without it, Sec-CH-Viewport-Width (CSS px) x Sec-CH-DPR (1 when
    absent) bounds any image on the page. DPR alone says nothing about width.
    Malformed or zero values count as absent (RFC 8941 integers and decimals).
    """
    width = _sf_int(sec_ch_width)
    if width:
        return width
    css = _sf_int(viewport)
    if not css:
        return None
    dpr = _sf_number(sec_ch_dpr) or 1.0
    return math.ceil(css * dpr)


def _sf_int(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip(" \t")
    return int(value) if _SF_INTEGER.fullmatch(value) else None


def _sf_number(value: str | None) -> float | None:
    if value is None:
        return None
    value = value.strip(" \t")
    return float(value) if _SF_NUMBER.fullmatch(value) else None


def image_vary(used_hints: bool) -> str:
    """Vary for an image response: Accept, plus the Client Hints when they could pick the width.

    RFC 8942 §3.2: a response selected with hints lists them in Vary, so that
    a cache does not give a 236 px variant to a browser that asked for 1200.
    """
    return _VARY_HINTED if used_hints else VARY_IMAGE


# ---------------------------------------------------------------- the request


def image_request(
    query: Mapping[str, str],
    headers: Mapping[str, str],
    breakpoints: Sequence[int] = DEFAULT_BREAKPOINTS,
    preference: Sequence[Format] = DEFAULT_PREFERENCE,
    presets: Mapping[str, int] | None = None,
    path: str = "",
) -> tuple[ImageRequest, str]:
    """The variant this request asks for, and `path` without its preset segment.

    Width: `?w` (snapped), else a preset (`/236x/img/a.jpg`, taken as is), else
    Client Hints (snapped), else the original. Format: `?fm`, else `Accept`.
    `?lqip=1` asks for the placeholder, one per source whatever the rest says.
    Invalid `?w`, `?fm` or `?lqip` raise NegotiationError, even when unused.
    """
    forced = _forced_format(query.get("fm"))
    width = _width_param(query.get("w"))
    lqip = _lqip_param(query.get("lqip"))
    path, preset = _strip_preset(path, presets)
    if lqip:
        return ImageRequest(None, None, lqip=True), path
    fmt = forced if forced is not None else accepted_format(_field(headers, "accept"), preference)
    if width is not None:
        return ImageRequest(fmt, snap_width(width, breakpoints)), path
    if preset is not None:
        return ImageRequest(fmt, preset), path
    hinted = hinted_width(
        _last(headers, "sec-ch-width"),
        _last(headers, "sec-ch-dpr"),
        _last(headers, "sec-ch-viewport-width"),
    )
    return ImageRequest(fmt, snap_width(hinted, breakpoints), uses_hints=True), path


def _forced_format(value: str | None) -> Format | None:
    if value is None:
        return None
    try:
        return FORCEABLE[value]
    except KeyError:
        raise NegotiationError(f"fm must be one of {', '.join(FORCEABLE)}") from None


def _width_param(value: str | None) -> int | None:
    if value is None:
        return None
    width = int(value) if _WIDTH_PARAM.fullmatch(value) else 0
    if not 0 < width <= MAX_WIDTH:
        raise NegotiationError(f"w must be a whole number of pixels from 1 to {MAX_WIDTH}")
    return width


def _lqip_param(value: str | None) -> bool:
    if value is None or value == "0":
        return False
    if value == "1":
        return True
    raise NegotiationError("lqip must be 1 or 0")


def _strip_preset(path: str, presets: Mapping[str, int] | None) -> tuple[str, int | None]:
    """`/236x/img/a.jpg` -> (`/img/a.jpg`, 236) when `236x` is a preset; else unchanged."""
    if not presets or not path.startswith("/"):
        return path, None
    segment, slash, rest = path[1:].partition("/")
    if slash and segment in presets:
        return "/" + rest, presets[segment]
    return path, None


def _field(headers: Mapping[str, str], name: str) -> str | None:
    """A list field's lines joined with commas (RFC 9110 §5.3); None when absent."""
    if isinstance(headers, MultiMapping):
        lines = headers.getall(name, ())
        return ", ".join(lines) if lines else None
    return headers.get(name)


def _last(headers: Mapping[str, str], name: str) -> str | None:
    """A Client Hint's value: the last line wins when it is repeated."""
    if isinstance(headers, MultiMapping):
        lines = headers.getall(name, ())
        return lines[-1] if lines else None
    return headers.get(name)


# ---------------------------------------------------------------- text

# Compressible besides text/* and the +json / +xml suffixes (RFC 6839 §3.1, §4.1).
# Not: images other than SVG/ICO/BMP, audio, video, woff/woff2, archives —
# already compressed, where a coding only costs CPU.
COMPRESSIBLE: frozenset[str] = frozenset(
    {
        "application/javascript",
        "application/ecmascript",
        "application/x-javascript",
        "application/json",
        "application/xml",
        "application/wasm",
        "application/vnd.ms-fontobject",
        "application/x-font-ttf",
        "application/x-font-otf",
        "image/svg+xml",
        "image/x-icon",
        "image/vnd.microsoft.icon",
        "image/bmp",
        "font/ttf",
        "font/otf",
        "font/collection",
    }
)
# text/* that must stream unbuffered.
_NOT_COMPRESSIBLE_TEXT: frozenset[str] = frozenset({"text/event-stream"})


def compressible(content_type: str | None) -> bool:
    """Whether a response of this Content-Type gains from br, zstd or gzip."""
    if not content_type:
        return False
    media_type = content_type.partition(";")[0].strip(" \t").lower()
    if media_type.startswith("text/"):
        return media_type not in _NOT_COMPRESSIBLE_TEXT
    return media_type in COMPRESSIBLE or media_type.endswith(("+json", "+xml"))


def accepted_encoding(
    accept_encoding: str | None, available: Sequence[str] = ("br", "zstd", "gzip")
) -> str | None:
    """The content coding to send, or None for identity (RFC 9110 §12.5.3).

    A coding's q is its own entry's, else `*`'s, else 0; `x-gzip` is `gzip`
    (§8.4.1.3). The highest q wins, ties go to the order of `available`, q=0
    excludes. Identity wins only when the field rates it above every coding
    (`br;q=0.5, identity`); unlisted, it is the fallback. No field, an empty
    one, or nothing acceptable -> None (when identity is refused too, sending
    it anyway is what §12.5.3 allows, rather than a 406).
    """
    if not accept_encoding:
        return None
    explicit: dict[str, float] = {}
    for coding, q in _weighted(accept_encoding, _TOKEN):
        explicit.setdefault("gzip" if coding == "x-gzip" else coding, q)
    star = explicit.get("*")
    identity_q = explicit.get("identity", star if star is not None else 0.0)
    best, best_q = None, 0.0
    for coding in available:
        q = explicit.get(coding, star if star is not None else 0.0)
        if q > best_q:
            best, best_q = coding, q
    return best if best_q >= identity_q else None
