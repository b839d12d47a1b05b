"""The Pillow engine: an image is its decoded frames, each step maps over them.

Shrink-on-load is JPEG draft mode (DCT scaling to no less than twice the
target, as libvips does) and, for animations, resizing each frame as it is
decoded so that only small frames are ever held. Colour management is
LittleCMS through ImageCms; a CMYK source without a profile is read with
libvips' built-in CMYK profile, so both engines give the same colours.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache, lru_cache, wraps
from typing import Any, ParamSpec, TypeVar

import pyvips
from PIL import Image, ImageCms, ImageFilter, ImageSequence

from pinedge.edge.images.model import Format, Settings, SourceInfo, corrupt, over_limits

NAME = "pillow"

_OPENERS = ["JPEG", "PNG", "GIF", "WEBP", "AVIF"]
_COPYRIGHT = 0x8298
_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_RESAMPLE = Image.Resampling.LANCZOS
_REDUCING_GAP = 3.0
_PALETTE_COLOURS = 16
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Frames:
    """Decoded frames (one for a still image) and what the steps need of the source."""

    images: list[Image.Image]
    durations: list[int]
    loop: int
    orientation: int
    icc: bytes | None
    copyright: str | None

    def each(self, fn: Callable[[Image.Image], Image.Image]) -> Frames:
        return replace(self, images=[fn(image) for image in self.images])


def _translated(fn: Callable[P, R]) -> Callable[P, R]:
    """Pillow's errors for bad input as ImageErrors (422; OverLimits for a bomb)."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except Image.DecompressionBombError as exc:
            raise over_limits(
                "pixels",
                "the source image's resolution is over this node's limit",
                f"pillow: {exc}",
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError, ImageCms.PyCMSError) as exc:
            raise corrupt(log=f"pillow: {type(exc).__name__}: {exc}") from None

    return wrapper


@_translated
def load(data: bytes, info: SourceInfo, width: int, pages: int) -> Frames:
    source = Image.open(io.BytesIO(data), formats=_OPENERS)
    size = _stored_size(info, width)
    exif = source.getexif()
    copyright = exif.get(_COPYRIGHT)
    if pages > 1:
        images, durations = [], []
        for frame in ImageSequence.Iterator(source):
            durations.append(int(frame.info.get("duration", 100)))
            image = frame.convert("RGBA")
            images.append(image if image.size == size else image.resize(size, _RESAMPLE))
        loop = int(source.info.get("loop", 0))
    else:
        if source.format == "JPEG" and size[0] < source.width:
            source.draft(source.mode, (size[0] * 2, size[1] * 2))
        source.load()
        images, durations, loop = [source], [], 0
    return Frames(
        images,
        durations,
        loop,
        info.orientation,
        source.info.get("icc_profile") or None,
        copyright if isinstance(copyright, str) else None,
    )


def _stored_size(info: SourceInfo, width: int) -> tuple[int, int]:
    """The target size as the pixels are stored, before EXIF orientation."""
    height = max(1, round(info.height * width / info.width))
    return (height, width) if info.orientation in (5, 6, 7, 8) else (width, height)


def autorotate(frames: Frames) -> Frames:
    method = _TRANSPOSE.get(frames.orientation)
    if method is None:
        return frames
    return replace(frames.each(lambda image: image.transpose(method)), orientation=1)


@_translated
def to_srgb(frames: Frames) -> Frames:
    return frames.each(lambda image: _to_srgb(image, frames.icc))


def _to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    if image.mode == "CMYK":
        if not (icc and icc[16:20] == b"CMYK" and _usable(icc, "CMYK", "RGB")):
            icc = _fallback_cmyk()
        return ImageCms.applyTransform(image, _transform(icc, "CMYK", "RGB"))  # type: ignore[return-value]  # not in place: an image
    rgb = image.mode in ("RGB", "RGBA")
    if rgb and icc and icc[16:20] == b"RGB " and _usable(icc, image.mode, image.mode):
        return ImageCms.applyTransform(image, _transform(icc, image.mode, image.mode))  # type: ignore[return-value]  # not in place: an image
    return image


def _usable(icc: bytes, mode_in: str, mode_out: str) -> bool:
    """Whether LittleCMS accepts the embedded profile; a broken one is ignored, as libvips does."""
    try:
        _transform(icc, mode_in, mode_out)
    except (ImageCms.PyCMSError, OSError):
        return False
    return True


@cache
def _fallback_cmyk() -> bytes:
    return pyvips.Image.profile_load("cmyk")


@lru_cache(maxsize=16)
def _transform(icc: bytes, mode_in: str, mode_out: str) -> ImageCms.ImageCmsTransform:
    # NOCACHE: LittleCMS's one-pixel cache is not safe when threads share a transform.
    return ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(io.BytesIO(icc)),
        _SRGB,
        mode_in,
        mode_out,
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
        flags=ImageCms.Flags.NOCACHE,
    )


@_translated
def to_8bit(frames: Frames) -> Frames:
    return frames.each(_to_8bit)


def _to_8bit(image: Image.Image) -> Image.Image:
    if image.mode in ("L", "RGB", "RGBA"):
        return image
    if image.mode == "1":
        return image.convert("L")
    if image.mode.startswith("I"):
        return image.convert("I").point(lambda value: value / 257).convert("L")
    if image.mode in ("LA", "PA", "La", "RGBa") or image.has_transparency_data:
        return image.convert("RGBA")
    return image.convert("RGB")


@_translated
def resize(frames: Frames, width: int) -> Frames:
    def one(image: Image.Image) -> Image.Image:
        if image.width == width:
            return image
        height = max(1, round(image.height * width / image.width))
        return image.resize((width, height), _RESAMPLE, reducing_gap=_REDUCING_GAP)

    return frames.each(one)


def prepare(frames: Frames, width: int) -> Frames:
    """The frames at most `width` wide, without the source's metadata (the
    fields the steps need are kept beside them)."""
    ready = shrink(frames, width)
    for image in ready.images:
        image.info.clear()
    return ready


def bytes_of(frames: Frames) -> int:
    return sum(image.width * image.height * len(image.getbands()) for image in frames.images)


def shrink(frames: Frames, width: int) -> Frames:
    """Frames made `width` wide (never wider than they are)."""
    return frames if width_of(frames) <= width else resize(frames, width)


def width_of(frames: Frames) -> int:
    return frames.images[0].width


def to_raw(frames: Frames) -> tuple[dict[str, Any], bytes]:
    """A prepared still image as its pixels and what it takes to read them back."""
    image = frames.images[0]
    meta = {"mode": image.mode, "width": image.width, "height": image.height}
    return meta | {"copyright": frames.copyright}, image.tobytes()


@_translated
def from_raw(meta: dict[str, Any], pixels: memoryview) -> Frames:
    mode, size = meta["mode"], (meta["width"], meta["height"])
    image = Image.frombuffer(mode, size, pixels, "raw", mode, 0, 1)  # type: ignore[arg-type]  # any buffer
    return Frames([image], [], 0, 1, None, meta.get("copyright"))


def blur(frames: Frames, sigma: float) -> Frames:
    return frames.each(lambda image: image.filter(ImageFilter.GaussianBlur(sigma)))


def strip(frames: Frames, keep_copyright: bool) -> Frames:
    def one(image: Image.Image) -> Image.Image:
        image.info.clear()  # savers fall back to info's exif and icc_profile
        return image

    stripped = frames.each(one)
    return stripped if keep_copyright else replace(stripped, copyright=None)


@_translated
def encode(
    frames: Frames, fmt: Format, settings: Settings, deadline: float, palette: bool = False
) -> tuple[bytes, int, int]:
    del deadline  # Pillow cannot stop an encoder midway; the pipeline checks after
    first, *rest = frames.images
    exif = b""
    if frames.copyright:
        tags = Image.Exif()
        tags[_COPYRIGHT] = frames.copyright
        exif = tags.tobytes()
    out = io.BytesIO()
    if fmt is Format.JPEG:
        if first.mode not in ("L", "RGB"):
            first = first.convert("RGB")
        first.save(out, "JPEG", quality=settings.jpeg_quality, optimize=True, exif=exif)
    elif fmt is Format.WEBP:
        options: dict[str, object] = {}
        if rest:
            options = {"save_all": True, "append_images": rest}
            options |= {"duration": frames.durations, "loop": frames.loop}
        first.save(
            out,
            "WEBP",
            quality=settings.webp_quality,
            alpha_quality=settings.webp_alpha_quality,
            method=settings.webp_effort,
            exif=exif,
            **options,
        )
    elif fmt is Format.AVIF:
        speed = 9 - settings.avif_effort
        first.save(out, "AVIF", quality=settings.avif_quality, speed=speed, exif=exif)
    elif fmt is Format.PNG:
        if palette:
            first = first.quantize(_PALETTE_COLOURS)
        first.save(out, "PNG", compress_level=6, exif=exif)
    else:
        raise AssertionError(f"the pillow engine does not encode {fmt}")
    return out.getvalue(), first.width, first.height
