"""Request counters: what reached the origin, by path and by path with query.

Every request to the public listener is counted. Tests read `GET /_origin/stats`
on the control listener (control.py) to see what the edge forwarded ("two
clients, one origin hit") and reset it with `DELETE /_origin/stats`. Paths are
counted as sent (not percent-decoded).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler


@dataclass
class Stats:
    total: int = 0
    paths: Counter[str] = field(default_factory=Counter)
    urls: Counter[str] = field(default_factory=Counter)

    def record(self, raw_path_qs: str) -> None:
        self.total += 1
        self.paths[raw_path_qs.split("?", 1)[0]] += 1
        self.urls[raw_path_qs] += 1

    def clear(self) -> None:
        self.total = 0
        self.paths.clear()
        self.urls.clear()

    def as_json(self) -> dict[str, object]:
        return {"total": self.total, "paths": dict(self.paths), "urls": dict(self.urls)}


STATS = web.AppKey("stats", Stats)


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count the request before anything else can fail or delay it."""
    request.app[STATS].record(request.raw_path)
    return await handler(request)


async def read(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATS].as_json())


async def reset(request: web.Request) -> web.Response:
    request.app[STATS].clear()
    return web.json_response(request.app[STATS].as_json())


def setup(app: web.Application) -> None:
    """Register the counters of the public app; the middleware is added by app.py."""
    app[STATS] = Stats()


def add_routes(control: web.Application, stats: Stats) -> None:
    """Serve `stats` at `/_origin/stats` on the control app."""
    control[STATS] = stats
    control.router.add_get("/_origin/stats", read)
    control.router.add_delete("/_origin/stats", reset)
