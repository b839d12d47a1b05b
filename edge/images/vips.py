"""The libvips engine (pyvips): one image is one lazy pipeline, computed once by `encode`.

`load` is libvips' `thumbnail`, which shrinks on load (JPEG DCT scaling, WebP
scaled decode), rotates by EXIF orientation, resizes to the width with alpha
premultiplied and reduces 16-bit to 8-bit, all streaming; the later steps only
finish what it leaves (an embedded RGB profile, metadata) and mostly pass
through. Importing this module sets libvips up for untrusted input, process-wide:
no operation cache, untrusted loaders blocked, and only the five loaders we serve.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import pyvips

from pinedge.edge.images.model import Format, Settings, SourceInfo, corrupt, timeout

NAME = "vips"

LOADERS: dict[Format, str] = {
    Format.JPEG: "jpegload_buffer",
    Format.PNG: "pngload_buffer",
    Format.GIF: "gifload_buffer",
    Format.WEBP: "webpload_buffer",
    Format.AVIF: "heifload_buffer",
}
_LOADER_CLASSES = (
    "VipsForeignLoadJpegBuffer",
    "VipsForeignLoadPngBuffer",
    "VipsForeignLoadNsgifBuffer",
    "VipsForeignLoadWebpBuffer",
    "VipsForeignLoadHeifBuffer",
)
_MAX_COORD = 10_000_000
_PALETTE_BITDEPTH = 4

pyvips.cache_set_max(0)
pyvips.block_untrusted_set(True)
# The edge runs several transforms at once in its own pool; libvips' threads
# inside each only compete with them (measured: 2-thread pool throughput +10-15%).
pyvips.concurrency_set(1)
pyvips.operation_block_set("VipsForeignLoad", True)
for _loader in _LOADER_CLASSES:
    pyvips.operation_block_set(_loader, False)

P = ParamSpec("P")
R = TypeVar("R")


def _translated(fn: Callable[P, R]) -> Callable[P, R]:
    """libvips errors as ImageErrors: killed by the deadline (504) or bad input (422)."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except pyvips.Error as exc:
            message = " ".join(str(exc).split())
            if "killed" in message:
                raise timeout(log=f"vips: {message}") from None
            raise corrupt(log=f"vips: {message}") from None

    return wrapper


@_translated
def header(data: bytes, fmt: Format) -> pyvips.Image:
    """The source opened by the loader for `fmt` alone; reads the header, no pixels."""
    loader = getattr(pyvips.Image, LOADERS[fmt])
    return loader(data, access="sequential", fail_on="error")


@_translated
def load(data: bytes, info: SourceInfo, width: int, pages: int) -> pyvips.Image:
    options = "fail_on=error,n=-1" if pages > 1 else "fail_on=error"
    return pyvips.Image.thumbnail_buffer(
        data, width, height=_MAX_COORD, size="down", option_string=options
    )


def autorotate(image: pyvips.Image) -> pyvips.Image:
    return image  # thumbnail has rotated it and dropped the orientation tag


@_translated
def to_srgb(image: pyvips.Image) -> pyvips.Image:
    # thumbnail converts CMYK (with the embedded or libvips' fallback CMYK
    # profile) but leaves pixels of an embedded RGB profile in that profile's space.
    if not image.get_typeof("icc-profile-data"):
        return image
    profile = image.get("icc-profile-data")
    if profile[16:20] == b"RGB " and image.bands >= 3:
        image = image.icc_transform("srgb", embedded=True, intent="relative", depth=8)
    image = image.copy()
    image.remove("icc-profile-data")
    return image


@_translated
def to_8bit(image: pyvips.Image) -> pyvips.Image:
    if image.format == "uchar":
        return image
    return image.colourspace("b-w" if image.bands < 3 else "srgb").cast("uchar")


@_translated
def prepare(image: pyvips.Image, width: int) -> pyvips.Image:
    """The image decoded into memory, at most `width` wide (a damaged source
    fails here, as ImageError)."""
    return shrink(image, width).copy_memory()


def width_of(image: pyvips.Image) -> int:
    return image.width


def bytes_of(image: pyvips.Image) -> int:
    return image.width * image.height * image.bands


@_translated
def to_raw(image: pyvips.Image) -> tuple[dict[str, Any], bytes]:
    """A prepared image as its pixels and what it takes to read them back."""
    meta = {
        "width": image.width,
        "height": image.height,
        "bands": image.bands,
        "interpretation": image.interpretation,
        "xres": image.xres,
        "yres": image.yres,
    }
    return meta, image.write_to_memory()


@_translated
def from_raw(meta: dict[str, Any], pixels: memoryview) -> pyvips.Image:
    image = pyvips.Image.new_from_memory(
        pixels, meta["width"], meta["height"], meta["bands"], "uchar"
    )
    return image.copy(interpretation=meta["interpretation"], xres=meta["xres"], yres=meta["yres"])


def shrink(image: pyvips.Image, width: int) -> pyvips.Image:
    """A decoded image made `width` wide (never wider than it is)."""
    if image.width <= width:
        return image
    return image.resize(width / image.width)


def resize(image: pyvips.Image, width: int) -> pyvips.Image:
    return image  # thumbnail has resized it to `width`


@_translated
def blur(image: pyvips.Image, sigma: float) -> pyvips.Image:
    return image.gaussblur(sigma)


@_translated
def strip(image: pyvips.Image, keep_copyright: bool) -> pyvips.Image:
    keep = {"exif-data", "exif-ifd0-Copyright"} if keep_copyright else set()
    if not image.get_typeof("exif-ifd0-Copyright"):
        keep = set()
    image = image.copy()
    for name in image.get_fields():
        metadata = name.startswith(("exif-", "xmp-", "iptc-", "png-comment-", "icc-"))
        if metadata and name not in keep:
            image.remove(name)
    # libvips rebuilds the EXIF block from the exif-* fields left: Copyright only.
    return image


@_translated
def encode(
    image: pyvips.Image, fmt: Format, settings: Settings, deadline: float, palette: bool = False
) -> tuple[bytes, int, int]:
    if fmt is Format.JPEG and image.hasalpha():
        image = image.flatten(background=255)
    _kill_at(image, deadline)
    keep = pyvips.enums.ForeignKeep.EXIF if image.get_typeof("exif-data") else 0
    if fmt is Format.JPEG:
        body = image.jpegsave_buffer(Q=settings.jpeg_quality, optimize_coding=True, keep=keep)
    elif fmt is Format.WEBP:
        body = image.webpsave_buffer(
            Q=settings.webp_quality,
            alpha_q=settings.webp_alpha_quality,
            effort=settings.webp_effort,
            keep=keep,
        )
    elif fmt is Format.AVIF:
        body = image.heifsave_buffer(
            Q=settings.avif_quality,
            effort=settings.avif_effort,
            compression="av1",
            bitdepth=8,
            keep=keep,
        )
    elif fmt is Format.PNG:
        # bitdepth always: pngsave defaults to the source's, from its metadata
        bitdepth = _PALETTE_BITDEPTH if palette else 8
        body = image.pngsave_buffer(compression=6, palette=palette, bitdepth=bitdepth, keep=keep)
    else:
        raise AssertionError(f"the vips engine does not encode {fmt}")
    height = image.get("page-height") if image.get_typeof("page-height") else image.height
    return body, image.width, height


def _kill_at(image: pyvips.Image, deadline: float) -> None:
    """Stop computing `image` once the deadline passes (checked as tiles complete)."""

    def on_eval(target: pyvips.Image, _progress: object) -> None:
        if time.monotonic() > deadline:
            target.set_kill(True)

    image.set_progress(True)
    image.signal_connect("eval", on_eval)
