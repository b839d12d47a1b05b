"""Decoded sources shared by a node's workers (edge/images/shared.py), on real
photos, real files and real processes: a variant made from another process's
decode is the variant a fresh decode makes, and the share keeps its budget,
ignores damaged files and makes a second decoder wait for the first.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from decode_support import transform_in_child
from support import PHOTOS

from pinedge.edge.images import Format, Limits, Settings, Variant, pipeline, transform
from pinedge.edge.images.shared import SharedDecodes

WIDE_JPEG = PHOTOS / "The_Poppet.jpg"  # 3996x2140: libvips
CMYK_JPEG = PHOTOS / "Giunchedi_Filippo_January_2015_01-cmyk.jpg"  # 800x533: Pillow
ALPHA_PNG = PHOTOS / "alpha-premultiply-2048x1536-paper.png"  # RGBA


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Path]:
    """This process shares its decodes under a fresh directory, with empty caches."""
    root = tmp_path / "decodes"
    pipeline.PREPARED.clear()
    pipeline.share_decodes(root, 64 * 1024 * 1024)
    yield root
    pipeline.share_decodes(None, 0)
    pipeline.PREPARED.clear()


def decode_in_another_process(root: Path, photo: Path, width: int) -> str:
    """What a second worker does: transform `photo` with the share on."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(transform_in_child, (str(root), str(photo), width))


@pytest.mark.slow
@pytest.mark.parametrize("photo", [WIDE_JPEG, CMYK_JPEG, ALPHA_PNG], ids=["jpeg", "cmyk", "alpha"])
def test_a_variant_made_from_another_process_decode_is_the_one_a_fresh_decode_makes(
    shared: Path, photo: Path
) -> None:
    data = photo.read_bytes()
    wanted = [Variant(Format.WEBP, 736), Variant(Format.JPEG, 474), Variant(Format.PNG, 236)]
    pipeline.share_decodes(None, 0)
    fresh = []
    for variant in wanted:
        pipeline.PREPARED.clear()
        fresh.append(transform(data, variant, Limits(), Settings()))
    pipeline.share_decodes(shared, 64 * 1024 * 1024)
    pipeline.PREPARED.clear()

    assert decode_in_another_process(shared, photo, 736) == "source"
    made = [transform(data, variant, Limits(), Settings()) for variant in wanted]

    assert [result.decoded for result in made] == ["shared", "kept", "kept"]
    for mine, reference in zip(made, fresh, strict=True):
        assert (mine.format, mine.width, mine.height) == (
            reference.format,
            reference.width,
            reference.height,
        )
        assert mine.body == reference.body


@pytest.mark.slow
def test_a_wider_variant_than_the_shared_decode_decodes_the_source_again(shared: Path) -> None:
    assert decode_in_another_process(shared, WIDE_JPEG, 474) == "source"
    data = WIDE_JPEG.read_bytes()
    assert transform(data, Variant(Format.WEBP, 236), Limits(), Settings()).decoded == "shared"
    wider = transform(data, Variant(Format.WEBP, 1200), Limits(), Settings())
    assert wider.decoded == "source" and wider.width == 1200


def test_a_damaged_shared_file_is_ignored_and_the_source_decoded(shared: Path) -> None:
    data = WIDE_JPEG.read_bytes()
    first = transform(data, Variant(Format.WEBP, 736), Limits(), Settings())
    (file,) = shared.glob("*.px")
    file.write_bytes(file.read_bytes()[:10_000])  # cut short
    pipeline.PREPARED.clear()
    again = transform(data, Variant(Format.WEBP, 736), Limits(), Settings())
    assert again.decoded == "source"
    assert again.body == first.body


def test_the_shared_files_stay_within_their_budget_keeping_the_newest(tmp_path: Path) -> None:
    root = tmp_path / "decodes"
    pipeline.PREPARED.clear()
    pipeline.share_decodes(root, 8 * 1024 * 1024)  # one 1200x643 RGB decode is 2.3 MB
    try:
        data = WIDE_JPEG.read_bytes()
        for copy in range(1, 6):
            pipeline.PREPARED.clear()
            # Each source is different bytes, so each decode is a different file.
            variant = Variant(Format.JPEG, 1200)
            transform(data + bytes(copy), variant, Limits(), Settings())
            held = sum(f.stat().st_size for f in root.glob("*.px"))
            assert held <= 8 * 1024 * 1024
        kept = {f.name.rsplit("-", 1)[1] for f in root.glob("*.px")}
        assert 1 <= len(kept) < 5
        assert str(len(data) + 5) + ".px" in kept  # the last one made
    finally:
        pipeline.share_decodes(None, 0)
        pipeline.PREPARED.clear()


def test_a_second_decoder_waits_for_the_first_and_gives_up_at_its_deadline(tmp_path: Path) -> None:
    share = SharedDecodes(tmp_path, 1024 * 1024)
    taken = threading.Event()
    release = threading.Event()

    def first() -> None:
        with share.turn("photo", time.monotonic() + 5) as mine:
            assert mine
            taken.set()
            release.wait(5)

    holder = threading.Thread(target=first)
    holder.start()
    assert taken.wait(5)
    started = time.monotonic()
    with share.turn("photo", time.monotonic() + 0.2) as second:
        assert not second  # the deadline passed while the first still held it
    assert time.monotonic() - started >= 0.2
    waited: list[bool] = []

    def later() -> None:
        with share.turn("photo", time.monotonic() + 5) as mine:
            waited.append(mine)

    waiter = threading.Thread(target=later)
    waiter.start()
    time.sleep(0.1)
    assert waited == []  # still waiting for the first
    release.set()
    holder.join(5)
    waiter.join(5)
    assert waited == [True]
