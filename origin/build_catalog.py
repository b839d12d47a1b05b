"""Build `photos/catalog.json` (and `static/favicon.ico`) from the bundled photos.

Build time only: this script needs Pillow, the origin server does not. Run it
after adding or replacing a photo, then commit the result:

    .venv/bin/python origin/build_catalog.py

Each photo's `last_modified` is kept from the previous catalog while its bytes
are unchanged, so rebuilding gives the same file and validators stay stable.
Sources and licences are recorded in /NOTICE; keep both in step.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time
from pathlib import Path
from typing import cast

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
PHOTOS = HERE / "photos"
STATIC = HERE / "static"
CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif"}
SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that turn the picture a quarter

# file: (title, credit, licence, source). Credits and licences as recorded in
# the data set's MANIFEST.tsv; see /NOTICE for the full wording.
SOURCES: dict[str, tuple[str, str, str, str]] = {
    "The_Poppet.jpg": (
        "1950s baby bath, “The Poppet”",
        "© 2015 Batternut, Wikimedia Commons",
        "CC BY-SA",
        "wikimedia/operations-software-thumbor-plugins:tests/integration/originals/The_Poppet.jpg",
    ),
    "Cerkiew.jpg": (
        "Cerkiew, a white church with a bell tower",
        "JDX",
        "CC BY-SA 3.0 / GFDL 1.3",
        "wikimedia/operations-software-thumbor-plugins:tests/integration/originals/Cerkiew.jpg",
    ),
    "Giunchedi_Filippo_January_2015_01-cmyk.jpg": (
        "Filippo Giunchedi, January 2015",
        "Myleen Hollero / Wikimedia Foundation",
        "CC BY-SA 3.0",
        "thumbor/thumbor:tests/fixtures/images/Giunchedi%2C_Filippo_January_2015_01-cmyk.jpg",
    ),
    "horse.png": (
        "Horse silhouette",
        "openclipart, via scikit-image",
        "CC0",
        "scikit-image 0.26.0 wheel:skimage/data/horse.png",
    ),
    "retina.jpg": (
        "Human retina, fundus photograph",
        "Häggström, Wikimedia, via scikit-image",
        "CC0",
        "scikit-image 0.26.0 wheel:skimage/data/retina.jpg",
    ),
    "coffee.png": (
        "Espresso on a wooden table",
        "Rachel Michetti, via scikit-image",
        "CC0",
        "scikit-image 0.26.0 wheel:skimage/data/coffee.png",
    ),
    "astronaut.png": (
        "Astronaut Eileen Collins",
        "NASA, via scikit-image",
        "Public domain",
        "scikit-image 0.26.0 wheel:skimage/data/astronaut.png",
    ),
    "hubble_deep_field.jpg": (
        "Hubble Deep Field",
        "NASA, via scikit-image",
        "Public domain",
        "scikit-image 0.26.0 wheel:skimage/data/hubble_deep_field.jpg",
    ),
    "alpha-premultiply-2048x1536-paper.png": (
        "Paint strokes on transparent paper",
        "sharp project test fixture",
        "Apache-2.0",
        "lovell/sharp:test/fixtures/alpha-premultiply-2048x1536-paper.png",
    ),
    "rotating-squares.gif": (
        "Rotating squares, a loading animation",
        "loading.io, via sharp test fixtures",
        "CC0",
        "lovell/sharp:test/fixtures/rotating-squares.gif",
    ),
    "Rotating_earth_large.gif": (
        "Rotating Earth",
        "Marvel, via thumbor test fixtures",
        "CC BY-SA 3.0",
        "thumbor/thumbor:tests/fixtures/images/Rotating_earth_(large).gif",
    ),
}


def describe(path: Path, previous: dict | None) -> dict:
    """One catalog entry: what a page needs to lay the photo out, and validators."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    with Image.open(path) as image:
        width, height = image.size
        if image.getexif().get(0x0112) in SWAPS_AXES:
            width, height = height, width
        content_type = CONTENT_TYPES[image.format]  # type: ignore[index]  # opened: it has one
        frames = getattr(image, "n_frames", 1)
        pixel = image.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
        red, green, blue = cast(tuple[int, int, int], pixel)
    unchanged = previous is not None and previous.get("sha256") == digest
    title, credit, licence, source = SOURCES[path.name]
    return {
        "file": path.name,
        "title": title,
        "width": width,
        "height": height,
        "content_type": content_type,
        "bytes": len(data),
        "sha256": digest,
        "etag": f'"{digest[:32]}"',
        "frames": frames,
        "color": f"#{red:02x}{green:02x}{blue:02x}",
        "credit": credit,
        "licence": licence,
        "source": source,
        "last_modified": previous["last_modified"] if previous and unchanged else int(time.time()),
    }


def build(photos: Path) -> dict:
    catalog_path = photos / "catalog.json"
    previous: dict[str, dict] = {}
    if catalog_path.exists():
        previous = {p["file"]: p for p in json.loads(catalog_path.read_text())["photos"]}
    entries = [describe(photos / name, previous.get(name)) for name in SOURCES]
    return {"version": 1, "photos": entries}


def write_if_changed(target: Path, data: bytes) -> None:
    """Leave an unchanged file alone, so its mtime (a Last-Modified) stays put."""
    if not target.exists() or target.read_bytes() != data:
        target.write_bytes(data)


def favicon() -> bytes:
    """A 32×32 and 16×16 icon: a white pin on a red disc, like static/icon.svg."""
    size = 64
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse((0, 0, size - 1, size - 1), fill=(200, 30, 45, 255))
    draw.ellipse((20, 12, 44, 36), fill=(255, 255, 255, 255))
    draw.polygon([(24, 32), (40, 32), (32, 54)], fill=(255, 255, 255, 255))
    out = io.BytesIO()
    image.save(out, format="ICO", sizes=[(32, 32), (16, 16)])
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=PHOTOS, help="photo directory")
    args = parser.parse_args(argv)
    missing = [name for name in SOURCES if not (args.photos / name).is_file()]
    if missing:
        print(f"build_catalog: missing photos: {', '.join(missing)}", file=sys.stderr)
        return 1
    catalog = build(args.photos)
    text = json.dumps(catalog, indent=2, ensure_ascii=False) + "\n"
    write_if_changed(args.photos / "catalog.json", text.encode())
    write_if_changed(STATIC / "favicon.ico", favicon())
    print(f"wrote {args.photos / 'catalog.json'} ({len(catalog['photos'])} photos)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
