"""The HTML pages: home grid (paginated), pin, board and user pages, 404.

Pages depend only on the catalog, so all of them are rendered once at start
and served from memory with an ETag of their bytes. Rendering is plain
functions returning strings; every value from the catalog goes through `esc`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from html import escape

from aiohttp import web

from pinedge.origin.catalog import Catalog, Pin
from pinedge.origin.conditional import Representation, respond
from pinedge.origin.files import Asset

WIDTHS = (236, 474, 736, 1200)
GRID_WIDTH = 236
GRID_SIZES = "(max-width: 600px) 50vw, 236px"
PIN_WIDTH = 736
PIN_SIZES = "(max-width: 800px) 100vw, 736px"
HTML = "text/html; charset=utf-8"
_PAGE_NUMBER = re.compile(r"[1-9][0-9]{0,5}")


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def srcset(url: str) -> str:
    return ", ".join(f"{url}?w={w} {w}w" for w in WIDTHS)


def grid_image(pin: Pin) -> str:
    photo = pin.photo
    return (
        f'<img src="{esc(photo.url)}?w={GRID_WIDTH}" srcset="{esc(srcset(photo.url))}" '
        f'sizes="{GRID_SIZES}" width="{GRID_WIDTH}" height="{photo.height_at(GRID_WIDTH)}" '
        f'loading="lazy" alt="{esc(pin.title)}" '
        # A blurred placeholder (made by the edge, under 1 KB) shows until the image loads.
        f"style=\"background-image: url('{esc(photo.url)}?lqip=1')\">"
    )


def grid(pins: list[Pin]) -> str:
    items = "\n".join(
        f'<li class="pin"><a href="{pin.url}">{grid_image(pin)}'
        f'<span class="pin-title">{esc(pin.title)}</span></a></li>'
        for pin in pins
    )
    return f'<ul class="grid">\n{items}\n</ul>'


def layout(title: str, body: str, catalog: Catalog, assets: Mapping[str, Asset]) -> str:
    boards = " ".join(f'<a href="{b.url}">{esc(b.title)}</a>' for b in catalog.boards.values())
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · pinedge</title>
<link rel="stylesheet" href="{esc(assets["app.css"].url)}">
<link rel="icon" href="{esc(assets["icon.svg"].url)}" type="image/svg+xml">
<script src="{esc(assets["app.js"].url)}" defer></script>
</head>
<body>
<header class="top">
<a class="brand" href="/"><img src="{esc(assets["icon.svg"].url)}" width="28" height="28" \
alt="">pinedge</a>
<nav aria-label="Boards">{boards}</nav>
<span id="loaded" class="loaded" aria-live="polite"></span>
</header>
<main>
{body}
</main>
<footer>Sample origin for pinedge. Each pin names its photo's author and licence.</footer>
</body>
</html>
"""


def home_body(pins: list[Pin], page: int, pages: int) -> str:
    links = []
    if page > 1:
        previous = "/" if page == 2 else f"/?page={page - 1}"
        links.append(f'<a rel="prev" href="{previous}">← Newer</a>')
    links.append(f"<span>Page {page} of {pages}</span>")
    if page < pages:
        links.append(f'<a rel="next" href="/?page={page + 1}">Older →</a>')
    pager = f'<nav class="pager" aria-label="Pages">{" ".join(links)}</nav>'
    return f"<h1>Latest pins</h1>\n{grid(pins)}\n{pager}"


def pin_body(pin: Pin, more: list[Pin]) -> str:
    photo = pin.photo
    width = min(PIN_WIDTH, photo.width)
    figure = (
        f'<figure><img src="{esc(photo.url)}?w={PIN_WIDTH}" srcset="{esc(srcset(photo.url))}" '
        f'sizes="{PIN_SIZES}" width="{width}" height="{photo.height_at(width)}" '
        f'fetchpriority="high" alt="{esc(pin.title)}">\n'
        f"<figcaption>{esc(photo.title)}. Photo: {esc(photo.credit)}. "
        f"Licence: {esc(photo.licence)}.</figcaption></figure>"
    )
    info = (
        f'<div class="pin-info">\n<h1>{esc(pin.title)}</h1>\n<p>{esc(pin.description)}</p>\n'
        f'<p>Saved by <a href="{pin.user.url}">{esc(pin.user.name)}</a> to '
        f'<a href="{pin.board.url}">{esc(pin.board.title)}</a></p>\n'
        f'<p><button type="button" class="like" data-api="/api/pins/{pin.id}">Like</button> '
        f'<span id="likes"></span></p>\n'
        f'<p class="credit"><a href="{esc(photo.url)}">Original</a>: {photo.width}×'
        f"{photo.height}, {esc(photo.content_type)}, {len(photo.data):,} bytes</p>\n</div>"
    )
    related = f"<h2>More from {esc(pin.board.title)}</h2>\n{grid(more)}" if more else ""
    return f'<article class="pin-page">\n{figure}\n{info}\n</article>\n{related}'


def board_body(catalog: Catalog, board_id: str) -> str:
    board = catalog.boards[board_id]
    byline = f'<p>A board by <a href="{board.user.url}">{esc(board.user.name)}</a></p>'
    return f"<h1>{esc(board.title)}</h1>\n{byline}\n{grid(catalog.on_board(board))}"


def user_body(catalog: Catalog, user_id: str) -> str:
    user = catalog.users[user_id]
    boards = ", ".join(
        f'<a href="{b.url}">{esc(b.title)}</a>' for b in catalog.boards.values() if b.user is user
    )
    return f"<h1>{esc(user.name)}</h1>\n<p>Boards: {boards}</p>\n{grid(catalog.by_user(user))}"


NOT_FOUND_BODY = '<h1>Not found</h1>\n<p>No pin here. <a href="/">Back to the pins</a>.</p>'


def tags(*groups: list[str] | str) -> str:
    words: list[str] = []
    for group in groups:
        words.extend(group.split() if isinstance(group, str) else group)
    return " ".join(dict.fromkeys(words))


@dataclass(frozen=True)
class Site:
    """Every page, rendered: home pages by number, pins, boards and users by id."""

    home: list[Representation]
    pins: dict[str, Representation]
    boards: dict[str, Representation]
    users: dict[str, Representation]
    not_found: Representation
    bad_page: Representation


def build_site(catalog: Catalog, assets: Mapping[str, Asset], page_size: int, ttl: float) -> Site:
    """Render all pages. Last-Modified is the newest of the photos and assets."""
    last_modified = max([catalog.last_modified, *(a.last_modified for a in assets.values())])
    cache = f"public, max-age={int(ttl)}"

    def page(title: str, body: str, key: str, status: int = 200, cc: str = cache) -> Representation:
        data = layout(title, body, catalog, assets).encode()
        ok = status == 200
        return Representation(
            body=data,
            content_type=HTML,
            cache_control=cc,
            etag=f'"{hashlib.sha256(data).hexdigest()[:32]}"' if ok else None,
            last_modified=last_modified if ok else None,
            surrogate_key=key,
            status=status,
        )

    chunks = [catalog.pins[i : i + page_size] for i in range(0, len(catalog.pins), page_size)]
    home = [
        page(
            "Latest pins" if n == 1 else f"Latest pins, page {n}",
            home_body(chunk, n, len(chunks)),
            tags("html home", f"page-{n}", [f"pin-{p.id}" for p in chunk]),
        )
        for n, chunk in enumerate(chunks or [[]], start=1)
    ]
    pins = {
        str(pin.id): page(
            pin.title,
            pin_body(pin, [p for p in catalog.on_board(pin.board) if p is not pin][:page_size]),
            tags("html", pin.tags),
        )
        for pin in catalog.pins
    }
    boards = {
        board_id: page(
            board.title,
            board_body(catalog, board_id),
            tags(
                "html",
                f"board-{board_id} user-{board.user.id}",
                [f"pin-{p.id}" for p in catalog.on_board(board)],
            ),
        )
        for board_id, board in catalog.boards.items()
    }
    users = {
        user_id: page(
            user.name,
            user_body(catalog, user_id),
            tags("html", f"user-{user_id}", [f"pin-{p.id}" for p in catalog.by_user(user)]),
        )
        for user_id, user in catalog.users.items()
    }
    not_found = page("Not found", NOT_FOUND_BODY, "html not-found", 404, "public, max-age=30")
    bad_page = page(
        "Bad request",
        "<h1>Bad request</h1>\n<p>page must be a whole number from 1.</p>",
        "",
        400,
        "no-store",
    )
    return Site(home, pins, boards, users, not_found, bad_page)


SITE = web.AppKey("site", Site)


def not_found_page(request: web.Request) -> web.Response:
    return respond(request, request.app[SITE].not_found)


async def home(request: web.Request) -> web.Response:
    site = request.app[SITE]
    raw = request.query.get("page", "1")
    if not _PAGE_NUMBER.fullmatch(raw):
        return respond(request, site.bad_page)
    number = int(raw)
    if number > len(site.home):
        return respond(request, site.not_found)
    return respond(request, site.home[number - 1])


def _lookup(table: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A handler answering from `Site.<table>` by the `{id}` in the path."""

    async def handler(request: web.Request) -> web.Response:
        site = request.app[SITE]
        rep = getattr(site, table).get(request.match_info["id"])
        return respond(request, rep or site.not_found)

    return handler


def setup(app: web.Application, site: Site) -> None:
    """Register the page routes on `app`."""
    app[SITE] = site
    app.router.add_get("/", home)
    app.router.add_get("/pin/{id}", _lookup("pins"))
    app.router.add_get("/board/{id}", _lookup("boards"))
    app.router.add_get("/user/{id}", _lookup("users"))
