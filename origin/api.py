"""The JSON API: `/api/pins` (paginated), `/api/pins/{id}`, and likes.

Likes live in memory, so API bodies are built per request; their ETag is a
hash of the bytes, so a like changes it. Responses are short-lived
(`max-age`, `stale-while-revalidate`) and tagged like the pin pages.
`POST /api/pins/{id}/likes` answers with the pin's new representation and
`Content-Location: /api/pins/{id}`, which tells caches to drop that URL.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from pinedge.origin.catalog import Catalog, Pin
from pinedge.origin.conditional import Representation, respond

JSON = "application/json"
_NUMBER = re.compile(r"[0-9]{1,9}")


@dataclass
class Api:
    catalog: Catalog
    page_size: int
    max_per_page: int
    cache_control: str
    likes: Counter[int]

    def pin_json(self, pin: Pin) -> dict[str, Any]:
        photo = pin.photo
        return {
            "id": pin.id,
            "title": pin.title,
            "description": pin.description,
            "url": pin.url,
            "likes": self.likes[pin.id],
            "board": {"id": pin.board.id, "title": pin.board.title, "url": pin.board.url},
            "user": {"id": pin.user.id, "name": pin.user.name, "url": pin.user.url},
            "photo": {
                "file": photo.file,
                "url": photo.url,
                "title": photo.title,
                "width": photo.width,
                "height": photo.height,
                "content_type": photo.content_type,
                "bytes": len(photo.data),
                "color": photo.color,
                "frames": photo.frames,
                "credit": photo.credit,
                "licence": photo.licence,
            },
        }

    def representation(self, document: object, surrogate_key: str) -> Representation:
        body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        return Representation(
            body=body,
            content_type=JSON,
            cache_control=self.cache_control,
            etag=f'"{hashlib.sha256(body).hexdigest()[:32]}"',
            surrogate_key=surrogate_key,
        )

    def pin_representation(self, pin: Pin) -> Representation:
        return self.representation(self.pin_json(pin), " ".join(["api", *pin.tags]))


API = web.AppKey("api", Api)


def error(status: int, reason: str) -> web.Response:
    """A JSON error; never stored by caches."""
    name = {400: "bad request", 404: "not found"}.get(status, "error")
    body = {"status": status, "error": name, "reason": reason}
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


def _whole_number(query: Any, name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not _NUMBER.fullmatch(raw) or int(raw) < 1:
        raise ValueError(f"{name} must be a whole number from 1, got {raw!r}")
    return int(raw)


async def list_pins(request: web.Request) -> web.Response:
    api = request.app[API]
    try:
        page = _whole_number(request.query, "page", 1)
        per_page = min(_whole_number(request.query, "per_page", api.page_size), api.max_per_page)
    except ValueError as exc:
        return error(400, str(exc))
    pins = api.catalog.pins
    start = (page - 1) * per_page
    chosen = pins[start : start + per_page]
    last_page = max(1, -(-len(pins) // per_page))

    def link(number: int) -> str | None:
        if 1 <= number <= last_page:
            return f"/api/pins?page={number}&per_page={per_page}"
        return None

    document = {
        "items": [api.pin_json(p) for p in chosen],
        "page": page,
        "per_page": per_page,
        "total": len(pins),
        "pages": last_page,
        "next": link(page + 1),
        "prev": link(min(page - 1, last_page)),
    }
    key = " ".join(["api", "pins", *(f"pin-{p.id}" for p in chosen)])
    return respond(request, api.representation(document, key))


async def get_pin(request: web.Request) -> web.Response:
    api = request.app[API]
    pin = api.catalog.pin(request.match_info["id"])
    if pin is None:
        return error(404, f"no pin {request.match_info['id']!r}")
    return respond(request, api.pin_representation(pin))


async def like_pin(request: web.Request) -> web.Response:
    api = request.app[API]
    pin = api.catalog.pin(request.match_info["id"])
    if pin is None:
        return error(404, f"no pin {request.match_info['id']!r}")
    api.likes[pin.id] += 1
    rep = api.pin_representation(pin)
    return web.Response(
        body=rep.body,
        headers={
            "Content-Type": JSON,
            "Content-Location": pin_path(pin),
            "ETag": rep.etag or "",
            "Cache-Control": "no-store",
        },
    )


def pin_path(pin: Pin) -> str:
    return f"/api/pins/{pin.id}"


def setup(app: web.Application, api: Api) -> None:
    """Register the API routes on `app`."""
    app[API] = api
    app.router.add_get("/api/pins", list_pins)
    app.router.add_get("/api/pins/{id}", get_pin)
    app.router.add_post("/api/pins/{id}/likes", like_pin)
