"""The photos and the pins made of them: read once at start, never changed.

`photos/catalog.json` (written by build_catalog.py with Pillow) describes each
photo; this module reads it with the photo bytes and joins the pins, boards and
users of `pins.py` to it. Nothing here needs Pillow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pinedge.origin import pins as seed

BUNDLED_PHOTOS = Path(__file__).resolve().parent / "photos"


class CatalogError(ValueError):
    """The photo directory or its catalog.json cannot be used."""


@dataclass(frozen=True)
class Photo:
    file: str
    title: str
    width: int
    height: int
    content_type: str
    etag: str
    last_modified: int
    credit: str
    licence: str
    source: str
    color: str
    frames: int
    data: bytes = field(repr=False)

    @property
    def name(self) -> str:
        """The file name without its extension, as used in the `photo-<name>` tag."""
        return self.file.rsplit(".", 1)[0]

    @property
    def url(self) -> str:
        return f"/img/{self.file}"

    def height_at(self, width: int) -> int:
        """The height when shown `width` pixels wide, keeping the aspect ratio."""
        return max(1, round(self.height * width / self.width))


@dataclass(frozen=True)
class User:
    id: str
    name: str

    @property
    def url(self) -> str:
        return f"/user/{self.id}"


@dataclass(frozen=True)
class Board:
    id: str
    title: str
    user: User

    @property
    def url(self) -> str:
        return f"/board/{self.id}"


@dataclass(frozen=True)
class Pin:
    id: int
    title: str
    description: str
    photo: Photo
    board: Board

    @property
    def user(self) -> User:
        return self.board.user

    @property
    def url(self) -> str:
        return f"/pin/{self.id}"

    @property
    def tags(self) -> list[str]:
        return [f"pin-{self.id}", f"board-{self.board.id}", f"user-{self.user.id}"]


@dataclass(frozen=True)
class Catalog:
    photos: dict[str, Photo]
    users: dict[str, User]
    boards: dict[str, Board]
    pins: list[Pin]
    last_modified: int

    def pin(self, pin_id: str) -> Pin | None:
        """The pin with this id as written in a URL, or None."""
        if not pin_id.isdigit() or pin_id.startswith("0"):
            return None
        index = int(pin_id) - 1
        return self.pins[index] if index < len(self.pins) else None

    def on_board(self, board: Board) -> list[Pin]:
        return [p for p in self.pins if p.board is board]

    def by_user(self, user: User) -> list[Pin]:
        return [p for p in self.pins if p.user is user]


def load_photos(directory: Path) -> dict[str, Photo]:
    """The photos listed in `directory/catalog.json`, with their bytes."""
    path = directory / "catalog.json"
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["photos"]
    except FileNotFoundError:
        raise CatalogError(f"{path} does not exist (run origin/build_catalog.py)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CatalogError(f"{path} is not a photo catalog: {exc}") from None
    photos = {}
    for entry in entries:
        try:
            data = (directory / entry["file"]).read_bytes()
        except OSError as exc:
            raise CatalogError(f"{entry['file']}: {exc.strerror}") from None
        if len(data) != entry["bytes"]:
            raise CatalogError(f"{entry['file']} changed since catalog.json was built")
        fields = {k: entry[k] for k in Photo.__dataclass_fields__ if k != "data"}
        photos[entry["file"]] = Photo(**fields, data=data)
    return photos


def load(directory: Path | None = None) -> Catalog:
    """The catalog from `directory` (the bundled photos by default)."""
    photos = load_photos(directory or BUNDLED_PHOTOS)
    users = {uid: User(uid, name) for uid, name in seed.USERS.items()}
    boards = {bid: Board(bid, title, users[uid]) for bid, (title, uid) in seed.BOARDS.items()}
    pins = [
        Pin(number, title, description, photos[file], boards[board_id])
        for number, (file, board_id, title, description) in enumerate(
            seed.derive(list(photos)), start=1
        )
    ]
    last_modified = max((p.last_modified for p in photos.values()), default=0)
    return Catalog(photos, users, boards, pins, last_modified)
