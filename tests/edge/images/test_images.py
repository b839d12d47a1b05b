"""The image transform layer, on real photos: what a browser would receive.

Outputs are judged by what they are (magic bytes, pixels decoded by Pillow),
never by what the code says it did. Every behaviour an engine takes part in
runs on both engines (`engine` fixture), as settings.engines would pick them.
"""

from __future__ import annotations

import asyncio
import io
import random
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageCms, ImageOps, ImageStat
from support import IMAGES, PHOTOS

from pinedge.edge.images import (
    CONTENT_TYPES,
    Format,
    ImageError,
    Limits,
    OverLimits,
    PoolFull,
    Settings,
    SourceInfo,
    TransformPool,
    Variant,
    choose_format,
    format_of_content_type,
    probe,
    transform,
)

BIG_JPEG = PHOTOS / "Cerkiew.jpg"  # 1914x2565, 1.7 MB, progressive, EXIF with Copyright
WIDE_JPEG = PHOTOS / "The_Poppet.jpg"  # 3996x2140, 156 kB
CMYK_JPEG = PHOTOS / "Giunchedi_Filippo_January_2015_01-cmyk.jpg"  # 800x533, no ICC profile
ALPHA_PNG = PHOTOS / "alpha-premultiply-2048x1536-paper.png"  # RGBA, transparent around
ANIMATED_GIF = IMAGES / "rotating-squares.gif"  # 80x80, 30 frames

ENGINES = ("vips", "pillow")


def read(path: Path) -> bytes:
    return path.read_bytes()


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


def settings_for(engine: str, **changes: object) -> Settings:
    table = {(op, fmt): engine for op in ("resize", "animate") for fmt in Format}
    return Settings(engines=table, **changes)  # type: ignore[arg-type]  # `changes` are Settings fields


def make(
    data: bytes, engine: str, fmt: Format | None, width: int | None, **changes: object
) -> tuple[bytes, Image.Image]:
    """The variant's body and the image a browser would decode from it."""
    result = transform(data, Variant(fmt, width), Limits(), settings_for(engine, **changes))
    assert result.engine == engine
    return result.body, Image.open(io.BytesIO(result.body))


def magic(body: bytes) -> Format | None:
    """What a browser would sniff the body as."""
    if body[4:12] == b"ftypavif":
        return Format.AVIF
    if body[:4] == b"RIFF" and body[8:12] == b"WEBP":
        return Format.WEBP
    if body[:3] == b"\xff\xd8\xff":
        return Format.JPEG
    if body[:4] == b"\x89PNG":
        return Format.PNG
    if body[:4] == b"GIF8":
        return Format.GIF
    return None


def png(width: int, height: int, depth: int, colour_type: int, rows: list[bytes]) -> bytes:
    """A PNG written by hand (so the engines under test do not make their own input)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\0" + row for row in rows))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


# ── formats and widths ───────────────────────────────────────────────────────


@pytest.mark.parametrize("fmt", [Format.AVIF, Format.WEBP, Format.JPEG, Format.PNG])
def test_output_is_the_format_asked_for_by_its_magic_bytes(engine: str, fmt: Format) -> None:
    body, image = make(read(WIDE_JPEG), engine, fmt, 236)
    assert magic(body) is fmt
    assert image.size == (236, round(2140 * 236 / 3996))


@pytest.mark.parametrize("width", [236, 474, 736, 1200])
def test_width_is_the_width_asked_for_and_height_keeps_the_aspect(engine: str, width: int) -> None:
    result = transform(read(WIDE_JPEG), Variant(Format.WEBP, width), Limits(), settings_for(engine))
    image = Image.open(io.BytesIO(result.body))
    assert image.size == (result.width, result.height) == (width, round(2140 * width / 3996))


def test_a_width_beyond_the_source_is_never_upscaled(engine: str) -> None:
    result = transform(read(CMYK_JPEG), Variant(Format.WEBP, 1200), Limits(), settings_for(engine))
    assert Image.open(io.BytesIO(result.body)).size == (800, 533)
    assert (result.width, result.height) == (800, 533)


def test_avif_beyond_its_maximum_width_is_served_as_webp(engine: str) -> None:
    settings = settings_for(engine, avif_max_width=474)
    result = transform(read(WIDE_JPEG), Variant(Format.AVIF, 736), Limits(), settings)
    assert magic(result.body) is Format.WEBP is result.format


@pytest.mark.slow
def test_the_variant_of_a_big_jpeg_is_much_smaller_than_the_source(engine: str) -> None:
    source = read(BIG_JPEG)
    for fmt in (Format.JPEG, Format.WEBP):
        body, image = make(source, engine, fmt, 736)
        assert image.width == 736
        assert len(body) < len(source) / 10


def one_bit_png() -> bytes:
    """A 1-bit PNG: any 8-bit re-encoding of it is larger."""
    noise = Image.frombytes("1", (256, 256), random.Random(4).randbytes(256 * 256 // 8))
    out = io.BytesIO()
    noise.save(out, "PNG")
    return out.getvalue()


def test_a_variant_larger_than_its_source_in_the_same_format_serves_the_source(
    engine: str,
) -> None:
    source = one_bit_png()
    result = transform(source, Variant(None, 128), Limits(), settings_for(engine))
    assert result.served_source
    assert result.body == source
    assert (result.format, result.width, result.height) == (Format.PNG, 256, 256)


def test_a_variant_in_another_format_is_served_even_when_larger(engine: str) -> None:
    result = transform(one_bit_png(), Variant(Format.JPEG), Limits(), settings_for(engine))
    assert not result.served_source
    assert magic(result.body) is Format.JPEG


# ── correctness: orientation, colour, depth, alpha, animation, metadata ─────


def upright() -> Image.Image:
    """60x80, as it should be displayed: top-left red, top-right green, bottom blue."""
    image = Image.new("RGB", (60, 80), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 30, 40))
    image.paste((0, 255, 0), (30, 0, 60, 40))
    return image


def stored_with_orientation(orientation: int) -> bytes:
    """The upright image stored as a camera would, with EXIF saying how to turn it."""
    inverse = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_90,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_270,
    }[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    upright().transpose(inverse).save(out, "JPEG", quality=95, exif=exif.tobytes())
    data = out.getvalue()
    shown = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    assert shown.size == (60, 80) and shown.getpixel((5, 5))[0] > 200  # type: ignore[index]  # RGB
    return data


def colour_at(image: Image.Image, x: float, y: float) -> tuple[int, int, int]:
    rgb = image.convert("RGB")
    return rgb.getpixel((int(x * rgb.width), int(y * rgb.height)))  # type: ignore[return-value]  # an RGB pixel is a tuple


def near(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 40) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_an_exif_rotated_jpeg_comes_out_upright(engine: str, orientation: int) -> None:
    data = stored_with_orientation(orientation)
    info = probe(data, Limits())
    assert (info.width, info.height, info.orientation) == (60, 80, orientation)
    _, image = make(data, engine, Format.WEBP, 30)
    assert image.size == (30, 40)
    assert near(colour_at(image, 0.2, 0.2), (255, 0, 0))
    assert near(colour_at(image, 0.8, 0.2), (0, 255, 0))
    assert near(colour_at(image, 0.5, 0.8), (0, 0, 255))


def cmyk_reference_mean() -> list[float]:
    """The CMYK photo's mean sRGB colour, converted at full size by LittleCMS.

    The file has no embedded profile, so a CMYK profile must be assumed: the
    one libvips falls back to (and the Pillow engine borrows). Relative
    colorimetric, as both engines use. A transform that forgot the profile
    (Pillow's plain convert("RGB")) is about 25 units darker per channel; the
    variant must be within 3 of the reference on each channel.
    """
    import pyvips

    profile = ImageCms.ImageCmsProfile(io.BytesIO(pyvips.Image.profile_load("cmyk")))
    source = Image.open(CMYK_JPEG)
    srgb = ImageCms.profileToProfile(
        source,
        profile,
        ImageCms.createProfile("sRGB"),
        outputMode="RGB",
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
    )
    assert srgb is not None
    reference = ImageStat.Stat(srgb).mean
    naive = ImageStat.Stat(source.convert("RGB")).mean
    assert max(abs(r - n) for r, n in zip(reference, naive, strict=True)) > 10
    return reference


def test_a_cmyk_jpeg_keeps_its_colours_in_srgb(engine: str) -> None:
    reference = cmyk_reference_mean()
    for fmt in (Format.JPEG, Format.WEBP):
        _, image = make(read(CMYK_JPEG), engine, fmt, 474)
        assert image.mode == "RGB"
        mean = ImageStat.Stat(image).mean
        assert all(abs(m - r) <= 3 for m, r in zip(mean, reference, strict=True)), (mean, reference)


def test_an_embedded_display_p3_profile_is_converted_to_srgb(engine: str) -> None:
    import pyvips

    p3 = pyvips.Image.profile_load("p3")
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (60, 160, 90)).save(out, "JPEG", quality=95, icc_profile=p3)
    reference = ImageCms.profileToProfile(
        Image.open(io.BytesIO(out.getvalue())),
        ImageCms.ImageCmsProfile(io.BytesIO(p3)),
        ImageCms.createProfile("sRGB"),
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
    )
    assert reference is not None
    _, image = make(out.getvalue(), engine, Format.WEBP, 32)
    assert not image.info.get("icc_profile")  # stripped: the pixels are sRGB now
    assert near(colour_at(image, 0.5, 0.5), reference.getpixel((32, 24)), tolerance=6)  # type: ignore[arg-type]  # RGB
    assert not near(colour_at(image, 0.5, 0.5), (60, 160, 90), tolerance=20)


def test_a_broken_colour_profile_is_ignored(engine: str) -> None:
    broken = bytearray(200)
    broken[16:20], broken[36:40] = b"RGB ", b"acsp"
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(out, "JPEG", icc_profile=bytes(broken))
    _, image = make(out.getvalue(), engine, Format.WEBP, 32)
    assert near(colour_at(image, 0.5, 0.5), (200, 30, 30), tolerance=8)


@pytest.mark.parametrize("source", [Format.AVIF, Format.WEBP, Format.PNG, Format.JPEG])
def test_every_served_format_is_read(engine: str, source: Format) -> None:
    made = transform(read(WIDE_JPEG), Variant(source, 474), Limits(), Settings())
    assert probe(made.body, Limits()).format is source
    body, image = make(made.body, engine, Format.JPEG, 236)
    assert magic(body) is Format.JPEG and image.width == 236


@pytest.mark.parametrize("fmt", [Format.WEBP, Format.PNG, Format.AVIF, Format.JPEG, None])
def test_a_png_with_alpha_keeps_it_and_never_becomes_jpeg(engine: str, fmt: Format | None) -> None:
    body, image = make(read(ALPHA_PNG), engine, fmt, 236)
    expected = Format.PNG if fmt in (Format.JPEG, None) else fmt
    assert magic(body) is expected
    assert image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    alpha = image.convert("RGBA").getchannel("A")
    assert alpha.getextrema() == (0, 255)
    assert alpha.getpixel((1, 1)) == 0  # the corner stays transparent


def test_webp_alpha_is_within_a_level_of_the_lossless_png_alpha(engine: str) -> None:
    # WebP's alpha plane is quantised (webp_alpha_quality 80) to halve encoding time:
    # no pixel's transparency may move by more than one level of 255.
    _, webp = make(read(ALPHA_PNG), engine, Format.WEBP, 736)
    _, lossless = make(read(ALPHA_PNG), engine, Format.PNG, 736)
    alpha = webp.convert("RGBA").getchannel("A")
    reference = lossless.convert("RGBA").getchannel("A")
    _, high = ImageChops.difference(alpha, reference).getextrema()
    assert high <= 1  # type: ignore[operator]  # one band: an int


@pytest.mark.parametrize(("colour_type", "channels"), [(2, 3), (0, 1)], ids=["rgb", "grey"])
def test_a_16_bit_png_becomes_8_bit(engine: str, colour_type: int, channels: int) -> None:
    # 0x40nn of 0xffff is 64 of 255: a scaled value, not one clipped to 255. The
    # random low bytes make the source too large to be served instead.
    noise = random.Random(16).randbytes
    rows = [b"".join(b"\x40" + noise(1) for _ in range(40 * channels)) for _ in range(30)]
    data = png(40, 30, 16, colour_type, rows)
    body, image = make(data, engine, Format.PNG, 20)
    assert body[24] == 8  # IHDR bit depth
    assert image.size == (20, 15)
    assert all(abs(value - 64) <= 1 for value in colour_at(image, 0.5, 0.5))


@pytest.mark.parametrize("fmt", [Format.WEBP, Format.AVIF])
def test_an_animated_gif_becomes_an_animated_webp(engine: str, fmt: Format) -> None:
    body, image = make(read(ANIMATED_GIF), engine, fmt, 40)
    assert magic(body) is Format.WEBP
    assert getattr(image, "is_animated", False)
    assert image.n_frames > 1  # type: ignore[attr-defined]  # an animated image has it
    assert image.size == (40, 40)


@pytest.mark.parametrize("fmt", [Format.JPEG, None])
def test_an_animated_gif_asked_as_jpeg_or_as_is_passes_through(fmt: Format | None) -> None:
    source = read(ANIMATED_GIF)
    result = transform(source, Variant(fmt, 40), Limits(), Settings())
    assert result.served_source and result.body == source and result.format is Format.GIF


@pytest.mark.parametrize("fmt", [Format.JPEG, Format.WEBP, Format.AVIF])
def test_metadata_is_stripped(engine: str, fmt: Format) -> None:
    assert b"Exif" in read(BIG_JPEG)[:100_000]
    body, image = make(read(BIG_JPEG), engine, fmt, 236)
    assert not image.getexif()
    assert not image.info.get("icc_profile")
    assert b"Exif" not in body and b"JDX" not in body


def test_copyright_is_kept_when_configured_and_nothing_else(engine: str) -> None:
    _, image = make(read(BIG_JPEG), engine, Format.JPEG, 236, keep_copyright=True)
    exif = image.getexif()
    assert exif[0x8298].startswith("JDX")
    assert 0x010F not in exif and 0x0110 not in exif  # camera make and model are gone
    assert exif.get(0x0112, 1) == 1


def test_kept_copyright_carries_no_location_or_camera(engine: str) -> None:
    exif = Image.Exif()
    exif[0x8298], exif[0x010F] = "Jane Doe", "Canon"
    exif.get_ifd(0x8825).update({1: "N", 2: (51.0, 30.0, 0.0)})  # GPS latitude
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(out, "JPEG", exif=exif.tobytes())
    _, image = make(out.getvalue(), engine, Format.WEBP, 32, keep_copyright=True)
    kept = image.getexif()
    assert kept[0x8298] == "Jane Doe"
    assert 0x010F not in kept and not kept.get_ifd(0x8825)


@pytest.mark.parametrize("fmt", [Format.WEBP, Format.JPEG, None])
@pytest.mark.parametrize("path", [BIG_JPEG, ALPHA_PNG], ids=["jpeg", "alpha-png"])
def test_a_placeholder_is_tiny_blurred_and_under_1_kb(
    engine: str, fmt: Format | None, path: Path
) -> None:
    result = transform(read(path), Variant(fmt, lqip=True), Limits(), settings_for(engine))
    assert len(result.body) < 1024
    assert magic(result.body) is result.format is not Format.AVIF
    image = Image.open(io.BytesIO(result.body))
    assert 16 <= image.width <= 24
    assert result.format is not Format.JPEG or path is BIG_JPEG


# ── hostile input ────────────────────────────────────────────────────────────


def test_a_pixel_bomb_is_refused_from_its_header_before_any_decoding(engine: str) -> None:
    # A valid PNG whose header claims 100000 x 100000 (10 gigapixels, 30 GB decoded).
    bomb = png(100_000, 100_000, 8, 2, [b"\0" * 30])
    started = time.perf_counter()
    with pytest.raises(ImageError) as refused:
        transform(bomb, Variant(Format.WEBP, 236), Limits(), settings_for(engine))
    assert time.perf_counter() - started < 0.5
    assert (refused.value.status, refused.value.detail) == (422, "image-pixels-over-limit")
    assert isinstance(refused.value, OverLimits)


def test_a_truncated_jpeg_is_corrupt(engine: str) -> None:
    data = read(WIDE_JPEG)
    with pytest.raises(ImageError) as refused:
        transform(
            data[: len(data) * 2 // 3], Variant(Format.WEBP, 236), Limits(), settings_for(engine)
        )
    assert (refused.value.status, refused.value.detail) == (422, "image-corrupt")


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>not found</body></html>",
        b"",
        b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",
    ],
    ids=["html-named-jpg", "empty", "heic"],
)
def test_bytes_that_are_not_a_served_image_are_unsupported(body: bytes) -> None:
    with pytest.raises(ImageError) as refused:
        transform(body, Variant(Format.WEBP, 236), Limits(), Settings())
    assert (refused.value.status, refused.value.detail) == (415, "image-unsupported")


def test_a_source_over_the_byte_limit_is_over_the_limits() -> None:
    with pytest.raises(OverLimits) as refused:
        probe(read(BIG_JPEG), Limits(max_source_bytes=1_000_000))
    assert (refused.value.status, refused.value.detail) == (422, "image-bytes-over-limit")


def test_an_animation_over_the_frame_limit_is_over_the_limits() -> None:
    with pytest.raises(OverLimits) as refused:
        probe(read(ANIMATED_GIF), Limits(max_frames=10))
    assert (refused.value.status, refused.value.detail) == (422, "image-frames-over-limit")


def test_a_transform_over_its_time_budget_is_a_timeout(engine: str) -> None:
    with pytest.raises(ImageError) as refused:
        transform(
            read(BIG_JPEG),
            Variant(Format.AVIF, 1200),
            Limits(time_budget=1e-6),
            settings_for(engine),
        )
    assert (refused.value.status, refused.value.detail) == (504, "image-timeout")


def test_vips_stops_decoding_once_the_budget_is_spent() -> None:
    from pinedge.edge.images import vips

    # Baseline JPEG: a progressive one yields no row before all its scans are read.
    data = read(WIDE_JPEG)
    source = probe(data, Limits())
    # The work done is this process's CPU time, which other processes on a busy
    # machine do not stretch as they stretch the wall clock's.
    started = time.process_time()
    vips.encode(vips.load(data, source, 1200, 1), Format.JPEG, Settings(), time.monotonic() + 60)
    whole = time.process_time() - started
    started = time.process_time()
    with pytest.raises(ImageError) as refused:
        vips.encode(vips.load(data, source, 1200, 1), Format.JPEG, Settings(), time.monotonic())
    assert (refused.value.status, refused.value.detail) == (504, "image-timeout")
    assert "killed" in refused.value.log
    assert time.process_time() - started < whole / 2


# ── decisions (no pixels) ────────────────────────────────────────────────────


def info(fmt: Format, frames: int = 1, alpha: bool = False) -> SourceInfo:
    return SourceInfo(fmt, 2000, 1500, frames, alpha, 1)


@pytest.mark.parametrize(
    ("source", "wanted", "width", "expected"),
    [
        pytest.param(info(Format.JPEG), None, 736, Format.JPEG, id="jpeg-stays-jpeg"),
        pytest.param(info(Format.PNG), None, 736, Format.PNG, id="png-stays-png"),
        pytest.param(info(Format.GIF), None, 736, Format.PNG, id="still-gif-becomes-png"),
        pytest.param(info(Format.JPEG), Format.AVIF, 736, Format.AVIF, id="avif"),
        pytest.param(info(Format.JPEG), Format.AVIF, 1201, Format.WEBP, id="avif-too-wide"),
        pytest.param(
            info(Format.PNG, alpha=True), Format.JPEG, 736, Format.PNG, id="alpha-no-jpeg"
        ),
        pytest.param(info(Format.WEBP, alpha=True), None, 736, Format.WEBP, id="alpha-webp"),
        pytest.param(info(Format.GIF, 30), Format.AVIF, 736, Format.WEBP, id="anim-avif-webp"),
        pytest.param(info(Format.GIF, 30), Format.WEBP, 736, Format.WEBP, id="anim-webp"),
        pytest.param(info(Format.GIF, 30), Format.JPEG, 736, Format.GIF, id="anim-jpeg-gif"),
        pytest.param(info(Format.GIF, 30), None, 736, Format.GIF, id="anim-kept"),
        pytest.param(info(Format.WEBP, 30), Format.JPEG, 736, Format.WEBP, id="anim-webp-kept"),
    ],
)
def test_choose_format(
    source: SourceInfo, wanted: Format | None, width: int, expected: Format
) -> None:
    assert choose_format(source, wanted, Settings(), width) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("image/jpeg", Format.JPEG),
        ("IMAGE/JPG; q=1", Format.JPEG),
        ("image/avif", Format.AVIF),
        ("image/webp", Format.WEBP),
        ("image/png", Format.PNG),
        ("image/gif", Format.GIF),
        ("image/svg+xml", None),
        ("text/html", None),
        ("", None),
        (None, None),
    ],
)
def test_format_of_content_type(value: str | None, expected: Format | None) -> None:
    assert format_of_content_type(value) is expected
    if expected is not None:
        assert format_of_content_type(CONTENT_TYPES[expected]) is expected


# ── the pool ─────────────────────────────────────────────────────────────────


async def test_the_pool_runs_jobs_side_by_side() -> None:
    pool = TransformPool(threads=2, queue=0)
    both = threading.Barrier(2, timeout=5)
    try:
        results = await asyncio.gather(pool.run(both.wait), pool.run(both.wait))
    finally:
        pool.close()
    assert sorted(results) == [0, 1]  # each saw the other arrive: they ran at once


async def test_a_full_pool_refuses_at_once_and_takes_work_again_when_free() -> None:
    pool = TransformPool(threads=1, queue=1)
    gate = threading.Event()
    try:
        running = asyncio.ensure_future(pool.run(gate.wait, 5))
        waiting = asyncio.ensure_future(pool.run(gate.wait, 5))
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        with pytest.raises(PoolFull) as full:
            await pool.run(gate.wait, 5)
        assert time.perf_counter() - started < 0.05
        assert full.value.retry_after >= 1
        gate.set()
        assert await asyncio.gather(running, waiting) == [True, True]
        assert pool.in_flight == 0
        assert await pool.run(sum, [1, 2]) == 3
    finally:
        gate.set()
        pool.close()


async def test_a_cancelled_request_keeps_its_place_until_its_job_ends() -> None:
    pool = TransformPool(threads=1, queue=0)
    gate = threading.Event()
    try:
        task = asyncio.ensure_future(pool.run(gate.wait, 5))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.sleep(0.01)
        with pytest.raises(PoolFull):
            await pool.run(sum, [1])
        gate.set()
        for _ in range(100):
            if pool.in_flight == 0:
                break
            await asyncio.sleep(0.01)
        assert await pool.run(sum, [1, 2]) == 3
    finally:
        gate.set()
        pool.close()


async def test_transforms_run_on_the_pool() -> None:
    pool = TransformPool(threads=2, queue=4)
    try:
        jobs = [
            pool.run(transform, read(WIDE_JPEG), Variant(fmt, 236), Limits(), Settings())
            for fmt in (Format.WEBP, Format.JPEG, Format.AVIF)
        ]
        results = await asyncio.gather(*jobs)
    finally:
        pool.close()
    assert [magic(r.body) for r in results] == [Format.WEBP, Format.JPEG, Format.AVIF]


@pytest.mark.parametrize("orientation", [3, 6])
def test_further_widths_of_a_source_reuse_its_decoded_copy_and_stay_correct(
    orientation: int,
) -> None:
    """A second and third variant of one source start from the upright, sRGB,
    8-bit copy the first one kept; they must look exactly as if decoded afresh."""
    data = stored_with_orientation(orientation)
    for width, fmt in ((60, Format.PNG), (30, Format.WEBP), (20, Format.JPEG)):
        result = transform(data, Variant(format=fmt, width=width), Limits(), Settings())
        image = Image.open(io.BytesIO(result.body))
        assert image.size == (width, round(width * 4 / 3))
        assert near(colour_at(image, 0.2, 0.2), (255, 0, 0))
        assert near(colour_at(image, 0.8, 0.2), (0, 255, 0))
        assert near(colour_at(image, 0.5, 0.8), (0, 0, 255))
