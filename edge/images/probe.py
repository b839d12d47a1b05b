"""What a source is, from its first bytes and its header, before any pixel is decoded.

The security check (imgproxy's `checker`): bytes, format, pixels and frames are
within the limits, or the source is refused here, so a decompression bomb costs
the time to read its header.
"""

from __future__ import annotations

from pinedge.edge.images import vips
from pinedge.edge.images.model import Format, Limits, SourceInfo, over_limits, unsupported

_AVIF_BRANDS = (b"avif", b"avis")


def probe(data: bytes, limits: Limits) -> SourceInfo:
    """The source's format, displayed size, frames and alpha; ImageError if refused."""
    if len(data) > limits.max_source_bytes:
        raise over_limits(
            "bytes",
            "the source image is larger than this node transforms",
            log=f"{len(data)} bytes > {limits.max_source_bytes}",
        )
    fmt = sniff(data)
    if fmt is None:
        raise unsupported("the body is not an image in a supported format")
    image = vips.header(data, fmt)
    animated = fmt in (Format.GIF, Format.WEBP) and image.get_typeof("n-pages")
    frames = image.get("n-pages") if animated else 1  # HEIF's pages are not frames
    orientation = image.get("orientation") if image.get_typeof("orientation") else 1
    if not 1 <= orientation <= 8:
        orientation = 1
    width, height = image.width, image.height
    if frames > limits.max_frames:
        raise over_limits(
            "frames",
            "the source animation has more frames than this node transforms",
            log=f"{frames} frames > {limits.max_frames}",
        )
    if width * height * frames > limits.max_pixels:
        raise over_limits(
            "pixels",
            "the source image's resolution is over this node's limit",
            log=f"{width}x{height}x{frames} > {limits.max_pixels} pixels",
        )
    if orientation >= 5:
        width, height = height, width
    cmyk = image.interpretation == "cmyk"
    return SourceInfo(fmt, width, height, frames, bool(image.hasalpha()), orientation, cmyk)


def sniff(data: bytes) -> Format | None:
    """The format the magic bytes announce, among those served; None otherwise."""
    if data.startswith(b"\xff\xd8\xff"):
        return Format.JPEG
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return Format.PNG
    if data.startswith((b"GIF87a", b"GIF89a")):
        return Format.GIF
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return Format.WEBP
    if data[4:8] == b"ftyp" and _is_avif(data):
        return Format.AVIF
    return None


def _is_avif(data: bytes) -> bool:
    """An ISO-BMFF file whose ftyp box lists an AVIF brand (not HEIC, not video)."""
    size = int.from_bytes(data[:4], "big")
    box = data[8 : min(size, 256)]
    brands = [box[i : i + 4] for i in range(0, len(box), 4) if i != 4]  # skip minor_version
    return any(brand in _AVIF_BRANDS for brand in brands)
