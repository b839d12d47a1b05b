"""The image layer's vocabulary: formats, what is asked, the limits, the encoder
settings, what a source is, what comes out, and the errors that carry their answer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Literal


class Format(StrEnum):
    AVIF = "avif"
    WEBP = "webp"
    JPEG = "jpeg"
    PNG = "png"
    GIF = "gif"


CONTENT_TYPES: dict[Format, str] = {fmt: f"image/{fmt.value}" for fmt in Format}

_CONTENT_TYPE_ALIASES = {
    **{media: fmt for fmt, media in CONTENT_TYPES.items()},
    "image/jpg": Format.JPEG,
    "image/pjpeg": Format.JPEG,
    "image/x-png": Format.PNG,
}


def format_of_content_type(value: str | None) -> Format | None:
    """The format a Content-Type names (parameters and case ignored), or None."""
    if not value:
        return None
    media = value.split(";", 1)[0].strip().lower()
    return _CONTENT_TYPE_ALIASES.get(media)


@dataclass(frozen=True, slots=True)
class Variant:
    """What a request wants made of a source.

    `format` None keeps the source's format family; `width` None keeps its width;
    `lqip` asks for a tiny blurred placeholder instead.
    """

    format: Format | None = None
    width: int | None = None
    lqip: bool = False


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on one transform. `max_pixels` counts every frame of an animation."""

    max_source_bytes: int = 40 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_frames: int = 200
    time_budget: float = 5.0


# Which engine does what. Measured on this machine (2 cores, libvips 8.18 from
# pyvips-binary, Pillow 13.0): transform() to 736 px wide, median of 15 runs, wall
# ms (CPU ms). "2000x1500" is a baseline q90 JPEG (557 kB) cut from Cerkiew.jpg;
# Cerkiew.jpg itself is 1914x2565, progressive, 1.7 MB (its decoding dominates).
#                  2000x1500 baseline      Cerkiew.jpg
#   output         vips       pillow       vips        pillow
#   JPEG q80       24 (29)    46 (46)      97 (104)    137 (137)
#   WebP q78 e2    33 (37)    54 (54)      108 (115)   141 (141)
#   AVIF q55 e1    57 (87)    77 (104)     154 (184)   182 (220)
#   PNG            36 (47)    196 (196)    112 (131)   403 (403)
# Through a 2-thread TransformPool (2000x1500 -> 736 px, variants/s): JPEG vips 62,
# pillow 45; WebP 46, 38; AVIF 23, 20. libvips wins every row, so it does all of it;
# Pillow is the plain engine beside it, for configurations and tests.
DEFAULT_ENGINES: Mapping[tuple[str, Format], str] = MappingProxyType(
    {
        ("resize", Format.JPEG): "vips",
        ("resize", Format.WEBP): "vips",
        ("resize", Format.AVIF): "vips",
        ("resize", Format.PNG): "vips",
        ("animate", Format.WEBP): "vips",
        # CMYK sources: libvips rebuilds its CMYK-to-sRGB transform on every call
        # (about 47 of 60 ms for a 236 px variant); Pillow keeps it (bench/IMAGES.md).
        ("cmyk", Format.JPEG): "pillow",
        ("cmyk", Format.WEBP): "pillow",
        ("cmyk", Format.AVIF): "pillow",
        ("cmyk", Format.PNG): "pillow",
    }
)


@dataclass(frozen=True, slots=True)
class Settings:
    """Encoder settings for serving on the fly, and which engine does what.

    Qualities are on each encoder's own 0-100 scale; for the same number both
    engines make files of the same size within 1%. `avif_effort` is libvips'
    effort (0 fastest .. 9); Pillow is given speed = 9 - effort, which made the
    same sizes as libvips at efforts 0, 1 and 2 (both drive libaom).
    `webp_effort` is libwebp's method (0 fastest .. 6). `webp_alpha_quality`
    below 100 quantises the alpha plane before its lossless coding. Measured
    (2048x1536 alpha PNG -> 1200 px, vips, effort 2): alpha quality 100/95/90/80/70
    took 123/130/61/60/63 ms for 151/151/164/144/78 kB, alpha off by at most
    1/1/1/1/12 levels (PSNR inf/65/62/59/44 dB), so 80: half the time, no
    visible change.
    Measured (2000x1500 JPEG -> 736 px, vips): WebP effort 0/1/2/3 took
    31/30/33/52 ms for 32.5/30.2/26.4/25.5 kB, so 2; AVIF effort 0/1/2 took
    34/55/76 ms for 20.4/18.3/18.1 kB, so 1. `engines` maps (operation, output
    format) to "vips" or "pillow"; operations are "resize" and "animate".
    """

    jpeg_quality: int = 80
    webp_quality: int = 78
    avif_quality: int = 55
    avif_effort: int = 1
    webp_effort: int = 2
    webp_alpha_quality: int = 80
    avif_max_width: int = 1200
    keep_copyright: bool = False
    engines: Mapping[tuple[str, Format], str] = field(
        default_factory=lambda: DEFAULT_ENGINES, hash=False
    )


class ImageError(Exception):
    """A transform that cannot be done, with the HTTP answer it deserves.

    `reason` is public and one line; `detail` is a short token for logs,
    metrics and Cache-Status; `log` is extra context never shown to clients.
    """

    def __init__(self, status: int, reason: str, detail: str, log: str = "") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.log = log


class OverLimits(ImageError):
    """A source beyond this node's limits (bytes, pixels or frames), refused before
    any pixel is decoded. Its variants are not made: the answer is the error or,
    where a site prefers it, the source as it is."""


def over_limits(limit: Literal["bytes", "pixels", "frames"], reason: str, log: str) -> OverLimits:
    # 422, as imgproxy answers: the request is well formed, what it names cannot
    # be processed here. 413 would blame the request's own content (it has none);
    # a 5xx would count as the node failing and invite retries no retry can help.
    return OverLimits(422, reason, f"image-{limit}-over-limit", log)


def unsupported(reason: str, log: str = "") -> ImageError:
    return ImageError(415, reason, "image-unsupported", log)


def corrupt(log: str = "") -> ImageError:
    return ImageError(422, "the image is corrupt or truncated", "image-corrupt", log)


def timeout(log: str = "") -> ImageError:
    return ImageError(504, "the image took too long to transform", "image-timeout", log)


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """A source as its header describes it; width and height are as displayed
    (after EXIF orientation), per frame."""

    format: Format
    width: int
    height: int
    frames: int
    has_alpha: bool
    orientation: int
    cmyk: bool = False


@dataclass(frozen=True, slots=True)
class Result:
    """A made variant. `served_source`: `body` is the source, unchanged, because
    the variant would not have been smaller or there was nothing to make.
    `decoded`: where its pixels came from: "source" (decoded from the bytes),
    "kept" (this process's decoded copy), "shared" (another worker's), "none"."""

    body: bytes
    format: Format
    width: int
    height: int
    engine: str
    served_source: bool = False
    decoded: str = "none"
