"""Variants made at the edge from one stored source: image formats and widths by
Accept and ?w=, text by Accept-Encoding. Each test asks a real edge in front of
the scripted origin and looks at the bytes the client receives."""

from __future__ import annotations

import asyncio
import gzip
import io
import logging
import struct
import zlib

import aiohttp
import brotli
import pytest
import zstandard
from aiohttp import web
from edge_support import RunningEdge, Scripted, StartEdge, send
from PIL import Image
from support import PHOTOS

from pinedge.edge.images import Format, Limits, Settings, Variant, transform

PAGE = b"<p>" + b"pins " * 800 + b"</p>"  # large enough to be compressed
CHROME_ACCEPT = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
MAGIC = {
    "avif": lambda b: b[4:12] in (b"ftypavif", b"ftypavis"),
    "webp": lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP",
    "jpeg": lambda b: b[:3] == b"\xff\xd8\xff",
    "png": lambda b: b[:8] == b"\x89PNG\r\n\x1a\n",
}


def serve_photo(scripted: Scripted, name: str, content_type: str = "image/jpeg") -> bytes:
    data = (PHOTOS / name).read_bytes()
    scripted.reply(
        f"/img/{name}",
        data,
        headers={
            "Content-Type": content_type,
            "Cache-Control": "public, max-age=3600",
            "ETag": '"photo-v1"',
        },
    )
    return data


def width_of(body: bytes) -> int:
    return Image.open(io.BytesIO(body)).size[0]


async def test_a_browser_asking_for_a_width_gets_avif_at_that_breakpoint(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    source = serve_photo(scripted, "The_Poppet.jpg")
    reply = await send(client, edge.url + "/img/The_Poppet.jpg?w=200", {"Accept": CHROME_ACCEPT})
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "image/avif"
    assert MAGIC["avif"](reply.body)
    assert width_of(reply.body) == 236  # snapped up to the first breakpoint
    assert "Accept" in reply.headers["Vary"]
    assert len(reply.body) < len(source)
    # The origin was asked once, for the original, without the edge's parameters.
    assert scripted.hits["/img/The_Poppet.jpg"] == 1
    assert "w" not in scripted.last("/img/The_Poppet.jpg").query


async def test_each_variant_is_made_once_and_then_served_as_a_hit(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    serve_photo(scripted, "hubble_deep_field.jpg")
    url = edge.url + "/img/hubble_deep_field.jpg?w=474"
    first = await send(client, url, {"Accept": CHROME_ACCEPT})
    second = await send(client, url, {"Accept": CHROME_ACCEPT})
    assert first.body == second.body
    assert second.hit
    assert first.cache.get("detail") == "transformed"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (CHROME_ACCEPT, "avif"),
        ("image/webp,*/*", "webp"),
        ("image/avif;q=0.5,image/webp;q=0.9", "webp"),
        ("image/*", "jpeg"),
    ],
    ids=["chrome-avif", "webp-only", "q-values-prefer-webp", "legacy-jpeg"],
)
async def test_the_format_follows_the_accept_header_with_q_values(
    scripted: Scripted,
    edge: RunningEdge,
    client: aiohttp.ClientSession,
    accept: str,
    expected: str,
) -> None:
    serve_photo(scripted, "hubble_deep_field.jpg")
    reply = await send(client, edge.url + "/img/hubble_deep_field.jpg?w=236", {"Accept": accept})
    assert MAGIC[expected](reply.body), reply.headers.get("Content-Type")
    assert width_of(reply.body) == 236


async def test_fm_forces_a_format_and_many_variants_share_one_origin_fetch(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    serve_photo(scripted, "retina.jpg")
    for width in (236, 474, 736):
        for fmt in ("webp", "jpeg"):
            reply = await send(client, f"{edge.url}/img/retina.jpg?w={width}&fm={fmt}")
            assert MAGIC[fmt](reply.body)
            assert width_of(reply.body) == width
    assert scripted.hits["/img/retina.jpg"] == 1


async def test_the_configured_engine_makes_the_variant(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    data = serve_photo(scripted, "retina.jpg")
    edge = await start_edge(scripted.url, image_engines={"resize.webp": "pillow"})
    reply = await send(client, f"{edge.url}/img/retina.jpg?w=474&fm=webp")
    by_engine = {
        engine: transform(
            data,
            Variant(Format.WEBP, 474),
            Limits(),
            Settings(engines={("resize", Format.WEBP): engine}),
        ).body
        for engine in ("pillow", "vips")
    }
    assert by_engine["pillow"] != by_engine["vips"]
    assert reply.body == by_engine["pillow"]


async def test_an_image_is_never_upscaled(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    serve_photo(scripted, "horse.png", "image/png")  # 400 px wide
    reply = await send(client, edge.url + "/img/horse.png?w=1200&fm=webp")
    assert width_of(reply.body) <= 400


async def test_an_image_with_alpha_never_becomes_jpeg(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    serve_photo(scripted, "horse.png", "image/png")
    reply = await send(client, edge.url + "/img/horse.png?w=236", {"Accept": "image/jpeg"})
    assert not MAGIC["jpeg"](reply.body)
    assert Image.open(io.BytesIO(reply.body)).mode in ("RGBA", "LA", "PA", "P")


async def test_a_bad_width_is_a_400_with_a_reason(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    serve_photo(scripted, "retina.jpg")
    reply = await send(client, edge.url + "/img/retina.jpg?w=abc")
    assert reply.status == 400
    assert b"w" in reply.body


async def test_bytes_that_are_not_an_image_are_served_as_the_source(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    scripted.reply(
        "/img/fake.jpg",
        b"this is not a jpeg" * 10,
        headers={"Content-Type": "image/jpeg", "Cache-Control": "max-age=600"},
    )
    reply = await send(client, edge.url + "/img/fake.jpg?w=236", {"Accept": CHROME_ACCEPT})
    assert reply.status == 200
    assert reply.body == b"this is not a jpeg" * 10
    assert reply.cache.get("detail", "").startswith("image-")  # type: ignore[union-attr]  # a str


async def test_concurrent_requests_for_one_variant_make_it_once(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    serve_photo(scripted, "Cerkiew.jpg")
    await send(client, edge.url + "/img/Cerkiew.jpg", {"Accept": "image/jpeg"})
    url = edge.url + "/img/Cerkiew.jpg?w=736"
    replies = await asyncio.gather(
        *(send(client, url, {"Accept": CHROME_ACCEPT}) for _ in range(10))
    )
    assert len({r.body for r in replies}) == 1
    assert sum(1 for r in replies if r.cache.get("detail") == "transformed") == 1


TEXT = ("<!doctype html><p>" + "pins and boards " * 600 + "</p>").encode()


@pytest.mark.parametrize(
    ("accept_encoding", "coding", "decode"),
    [
        ("gzip, deflate, br, zstd", "br", brotli.decompress),
        ("zstd, gzip", "zstd", lambda b: zstandard.ZstdDecompressor().decompress(b)),
        ("gzip", "gzip", gzip.decompress),
        ("br;q=0, gzip;q=0.5", "gzip", gzip.decompress),
    ],
    ids=["br-preferred", "zstd", "gzip", "q-zero-excludes"],
)
async def test_text_is_compressed_by_accept_encoding(
    scripted: Scripted,
    edge: RunningEdge,
    client: aiohttp.ClientSession,
    accept_encoding: str,
    coding: str,
    decode: object,
) -> None:
    scripted.reply(
        "/page",
        TEXT,
        headers={
            "Content-Type": "text/html; charset=utf-8",
            "Cache-Control": "max-age=60",
            "ETag": '"page-1"',
        },
    )
    reply = await send(client, edge.url + "/page", {"Accept-Encoding": accept_encoding})
    assert reply.headers["Content-Encoding"] == coding
    assert decode(reply.body) == TEXT  # type: ignore[operator]  # every coding here has a decoder
    assert "Accept-Encoding" in reply.headers["Vary"]
    assert reply.headers["ETag"] != '"page-1"'
    assert len(reply.body) < len(TEXT) / 5


async def test_text_for_a_client_without_accept_encoding_is_sent_as_is_with_vary(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    scripted.reply(
        "/page", TEXT, headers={"Content-Type": "text/html", "Cache-Control": "max-age=60"}
    )
    reply = await send(client, edge.url + "/page", {"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in reply.headers
    assert reply.body == TEXT
    assert "Accept-Encoding" in reply.headers["Vary"]


async def test_already_compressed_types_are_never_compressed_again(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    body = bytes(range(256)) * 40
    scripted.reply(
        "/file.zip",
        body,
        headers={"Content-Type": "application/zip", "Cache-Control": "max-age=60"},
    )
    reply = await send(client, edge.url + "/file.zip", {"Accept-Encoding": "br, gzip"})
    assert "Content-Encoding" not in reply.headers and reply.body == body


async def test_a_path_preset_asks_for_a_width_like_w_does(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    serve_photo(scripted, "retina.jpg")
    reply = await send(client, edge.url + "/474x/img/retina.jpg", {"Accept": "image/webp"})
    assert MAGIC["webp"](reply.body) and width_of(reply.body) == 474
    assert scripted.hits["/img/retina.jpg"] == 1


async def test_pages_ask_browsers_for_client_hints_and_hints_pick_the_width(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    scripted.reply(
        "/", b"<!doctype html><title>pins</title>", headers={"Content-Type": "text/html"}
    )
    page = await send(client, edge.url + "/")
    assert "Sec-CH-Width" in page.headers["Accept-CH"]
    serve_photo(scripted, "retina.jpg")
    reply = await send(
        client,
        edge.url + "/img/retina.jpg",
        {"Accept": "image/webp", "Sec-CH-Width": "600", "Sec-CH-DPR": "2"},
    )
    assert width_of(reply.body) == 736  # 600 physical pixels, snapped up
    assert "Sec-CH-Width" in reply.headers["Vary"]


async def test_a_placeholder_is_tiny_and_fit_to_inline(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    serve_photo(scripted, "Cerkiew.jpg")
    reply = await send(client, edge.url + "/img/Cerkiew.jpg?lqip=1", {"Accept": CHROME_ACCEPT})
    assert reply.status == 200 and len(reply.body) < 1024
    assert reply.headers["Content-Type"].startswith("image/")


# ── sources over the image limits ────────────────────────────────────────────

BOMB_SIDE = 30_000


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """A valid 30000x30000 PNG of one colour: 900 megapixels (over 3 GB for a
    browser to decode) in about half a megabyte. Written row by row with zlib,
    since libvips takes about 6 s to encode it on this machine."""
    row = b"\0" + b"\xff" * (BOMB_SIDE // 8)  # filter type 0, then 1-bit grey pixels
    deflate = zlib.compressobj(1)
    pixels = b"".join([deflate.compress(row) for _ in range(BOMB_SIDE)] + [deflate.flush()])
    header = struct.pack(">IIBBBBB", BOMB_SIDE, BOMB_SIDE, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", pixels)
        + png_chunk(b"IEND", b"")
    )


def serve_bomb(scripted: Scripted, bomb: bytes) -> None:
    scripted.reply(
        "/img/bomb.png",
        bomb,
        headers={"Content-Type": "image/png", "Cache-Control": "public, max-age=3600"},
    )


async def test_a_width_asked_of_an_image_over_the_pixel_limit_is_a_422_not_the_bomb(
    scripted: Scripted,
    edge: RunningEdge,
    client: aiohttp.ClientSession,
    bomb: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    serve_bomb(scripted, bomb)
    with caplog.at_level(logging.INFO, logger="pinedge"):
        replies = [
            await send(client, edge.url + "/img/bomb.png?w=236", {"Accept": CHROME_ACCEPT})
            for _ in range(2)
        ]
    for reply in replies:
        assert reply.status == 422
        assert b"resolution" in reply.body
        assert reply.cache["detail"] == "image-pixels-over-limit"
        assert reply.headers["Cache-Control"] == "no-store"
        assert not reply.body.startswith(b"\x89PNG") and len(reply.body) < 200
    assert any(
        "422" in record.getMessage() and f"{BOMB_SIDE}x{BOMB_SIDE}" in record.getMessage()
        for record in caplog.records
    )
    assert scripted.hits["/img/bomb.png"] == 1


async def test_an_image_over_the_limits_is_still_served_at_its_own_url(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession, bomb: bytes
) -> None:
    """Only a variant the URL names (?w=, ?fm=, ?lqip=, a preset) is refused; the URL
    itself, even when Accept would have made it AVIF, is the source as stored."""
    serve_bomb(scripted, bomb)
    named = await send(client, edge.url + "/img/bomb.png?fm=webp")
    assert named.status == 422
    own = await send(client, edge.url + "/img/bomb.png", {"Accept": CHROME_ACCEPT})
    assert own.status == 200
    assert own.body == bomb
    assert own.cache["detail"] == "image-pixels-over-limit"
    assert "Accept" in own.headers["Vary"]


async def test_concurrent_requests_for_a_variant_of_a_bomb_all_get_the_422(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession, bomb: bytes
) -> None:
    serve_bomb(scripted, bomb)
    await send(client, edge.url + "/img/bomb.png", {"Accept": "image/png"})
    replies = await asyncio.gather(
        *(
            send(client, edge.url + "/img/bomb.png?w=474", {"Accept": CHROME_ACCEPT})
            for _ in range(8)
        )
    )
    assert [reply.status for reply in replies] == [422] * 8
    assert all(reply.body != bomb for reply in replies)


async def test_a_site_may_choose_to_pass_an_image_over_the_limits_through(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession, bomb: bytes
) -> None:
    serve_bomb(scripted, bomb)
    site = {
        "name": "legacy",
        "hosts": ["127.0.0.1"],
        "origin": scripted.url,
        "image_over_limits": "source",
    }
    edge = await start_edge(sites=[site])
    url = edge.url + "/img/bomb.png?w=236"
    replies = [await send(client, url, {"Accept": CHROME_ACCEPT}) for _ in range(2)]
    for reply in replies:
        assert reply.status == 200
        assert reply.body == bomb
        assert reply.headers["Content-Type"] == "image/png"
        assert reply.cache["detail"] == "image-pixels-over-limit"
    assert scripted.hits["/img/bomb.png"] == 1


async def test_a_single_site_node_may_pass_an_image_over_the_limits_through(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession, bomb: bytes
) -> None:
    serve_bomb(scripted, bomb)
    edge = await start_edge(scripted.url, image_over_limits="source")
    reply = await send(client, edge.url + "/img/bomb.png?w=236", {"Accept": CHROME_ACCEPT})
    assert reply.status == 200
    assert reply.body == bomb


async def test_a_width_asked_of_a_source_over_the_byte_limit_is_a_422(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    source = serve_photo(scripted, "Cerkiew.jpg")  # 1.7 MB
    edge = await start_edge(scripted.url, image_max_bytes="1MiB")
    reply = await send(client, edge.url + "/img/Cerkiew.jpg?w=236", {"Accept": CHROME_ACCEPT})
    assert reply.status == 422
    assert reply.cache["detail"] == "image-bytes-over-limit"
    assert len(reply.body) < len(source) and b"larger" in reply.body


async def test_a_compressed_variant_follows_the_sources_vary(
    scripted: Scripted, edge: RunningEdge, client: aiohttp.ClientSession
) -> None:
    """Before: the gzip variant of the 'en' page was served to 'fr' readers."""

    async def by_language(request: web.Request) -> web.Response:
        language = request.headers.get("Accept-Language", "none")
        return web.Response(
            body=f"LANG={language}".encode() + PAGE,
            headers={
                "Content-Type": "text/html",
                "Cache-Control": "max-age=600",
                "Vary": "Accept-Language",
            },
        )

    scripted.handle("/lang", by_language)
    for language in ("en", "fr", "en", "fr"):
        reply = await send(
            client,
            edge.url + "/lang",
            {"Accept-Language": language, "Accept-Encoding": "identity"},
        )
        assert reply.body.startswith(f"LANG={language}".encode())
        gz = await send(
            client, edge.url + "/lang", {"Accept-Language": language, "Accept-Encoding": "gzip"}
        )
        assert gzip.decompress(gz.body).startswith(f"LANG={language}".encode())
