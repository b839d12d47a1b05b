"""Photos (`/img/…`), static assets (`/static/…`) and `/favicon.ico`, from memory.

Every file is read once at start; its validators are computed then, so a
request costs a dict lookup. The query string is ignored (`?w=236` is for the
edge), except `?v=` on static files: the version the pages link to, which
makes that URL immutable.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from pinedge.origin.catalog import Catalog
from pinedge.origin.conditional import Representation, respond

STATIC_DIR = Path(__file__).resolve().parent / "static"
YEAR = 365 * 24 * 3600
IMMUTABLE = f"public, max-age={YEAR}, immutable"
UNVERSIONED = "public, max-age=86400"
NOT_FOUND_CACHE = "public, max-age=30"
STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".ico": "image/vnd.microsoft.icon",
}


@dataclass(frozen=True)
class Asset:
    name: str
    body: bytes
    content_type: str
    etag: str
    version: str
    last_modified: int

    @property
    def url(self) -> str:
        """The versioned URL pages link to."""
        return f"/static/{self.name}?v={self.version}"

    def representation(self, cache_control: str) -> Representation:
        return Representation(
            body=self.body,
            content_type=self.content_type,
            cache_control=cache_control,
            etag=self.etag,
            last_modified=self.last_modified,
            surrogate_key=f"static static-{self.name}",
            ranges=True,
        )


def load_static(directory: Path = STATIC_DIR) -> dict[str, Asset]:
    """The static assets by file name."""
    assets = {}
    for path in sorted(directory.iterdir()):
        content_type = STATIC_TYPES.get(path.suffix)
        if content_type is None or not path.is_file():
            continue
        body = path.read_bytes()
        digest = hashlib.sha256(body).hexdigest()
        assets[path.name] = Asset(
            name=path.name,
            body=body,
            content_type=content_type,
            etag=f'"{digest[:32]}"',
            version=digest[:12],
            last_modified=int(path.stat().st_mtime),
        )
    return assets


def photo_representations(catalog: Catalog) -> dict[str, Representation]:
    return {
        photo.file: Representation(
            body=photo.data,
            content_type=photo.content_type,
            cache_control=IMMUTABLE,
            etag=photo.etag,
            last_modified=photo.last_modified,
            surrogate_key=f"img photo-{photo.name}",
            ranges=True,
            headers={"X-Content-Type-Options": "nosniff"},
        )
        for photo in catalog.photos.values()
    }


def not_found(what: str) -> web.Response:
    return web.Response(
        status=404,
        text=f"{what} not found\n",
        headers={"Cache-Control": NOT_FOUND_CACHE, "Surrogate-Key": "not-found"},
    )


PHOTOS = web.AppKey("photos", dict[str, Representation])
ASSETS = web.AppKey("assets", dict[str, Asset])


async def image(request: web.Request) -> web.Response:
    rep = request.app[PHOTOS].get(request.match_info["file"])
    return respond(request, rep) if rep else not_found("photo")


async def static(request: web.Request) -> web.Response:
    asset = request.app[ASSETS].get(request.match_info["name"])
    if asset is None:
        return not_found("file")
    versioned = request.query.get("v") == asset.version
    return respond(request, asset.representation(IMMUTABLE if versioned else UNVERSIONED))


async def favicon(request: web.Request) -> web.Response:
    asset = request.app[ASSETS].get("favicon.ico")
    return respond(request, asset.representation(UNVERSIONED)) if asset else not_found("icon")


def setup(app: web.Application, catalog: Catalog, assets: dict[str, Asset]) -> None:
    """Register the file routes and their in-memory content on `app`."""
    app[PHOTOS] = photo_representations(catalog)
    app[ASSETS] = assets
    app.router.add_get("/img/{file}", image)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/favicon.ico", favicon)
