"""Assembling the origin: catalog, routes, middlewares; `create_app` and `start`.

A request passes, outermost first: the counters (stats), fault injection,
then the router's error pages, then a handler. Just before headers go out,
`finish_headers` names the server and makes sure every response says how it
may be cached (`no-store` unless the handler said otherwise, always on
`/_origin/…`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from pinedge.core.config import parse_hostport
from pinedge.origin import api, catalog, faults, files, pages, stats
from pinedge.origin.config import OriginConfig

SERVER_NAME = web.AppKey("server_name", str)


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Unknown URLs get the 404 page (JSON under /api/); other HTTP errors are not stored."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        if request.path.startswith("/api/"):
            return api.error(404, f"no such API path {request.path!r}")
        return pages.not_found_page(request)
    except web.HTTPException as exc:
        exc.headers.setdefault("Cache-Control", "no-store")
        raise


async def finish_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    response.headers["Server"] = request.app[SERVER_NAME]
    if stats.is_control(request.path):
        response.headers["Cache-Control"] = "no-store"
    else:
        response.headers.setdefault("Cache-Control", "no-store")


def create_app(config: OriginConfig) -> web.Application:
    """The origin application for `config` (reads the photos; does not listen)."""
    photos = catalog.load(Path(config.photos) if config.photos else None)
    assets = files.load_static()
    app = web.Application(middlewares=[stats.middleware, faults.middleware, error_pages])
    app[SERVER_NAME] = config.name
    stats.setup(app)
    faults.setup(app)
    files.setup(app, photos, assets)
    pages.setup(app, pages.build_site(photos, assets, config.page_size, config.html_ttl))
    api_cache = f"public, max-age={int(config.api_ttl)}"
    if config.api_stale:
        api_cache += f", stale-while-revalidate={int(config.api_stale)}"
    api.setup(app, api.Api(photos, config.page_size, config.max_per_page, api_cache, Counter()))
    app.on_response_prepare.append(finish_headers)
    return app


async def start(config: OriginConfig) -> web.AppRunner:
    """Serve the origin on `config.listen`; the caller awaits `runner.cleanup()`."""
    host, port = parse_hostport(config.listen)
    app = create_app(config)
    runner = web.AppRunner(app) if config.access_log else web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
