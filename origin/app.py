"""Assembling the origin: catalog, routes, middlewares; `create_app` and `start`.

A request to the public listener passes, outermost first: the counters
(stats), fault injection, then the router's error pages, then a handler. Just
before headers go out, `finish_headers` names the server and makes sure every
response says how it may be cached (`no-store` unless the handler said
otherwise). `start` also serves the control listener (control.py) on its own port.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from pinedge.core.listener import Listener
from pinedge.origin import api, catalog, faults, files, pages, stats
from pinedge.origin.config import OriginConfig
from pinedge.origin.control import create_control_app

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


async def finish_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = request.app[SERVER_NAME]
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


@dataclass
class RunningOrigin:
    """The origin serving: its public listener and its control listener."""

    public: web.AppRunner
    control: web.AppRunner

    @property
    def url(self) -> str:
        """The public listener's URL, e.g. ``http://127.0.0.1:8090``."""
        return url_of(self.public.addresses[0])

    @property
    def admin_url(self) -> str:
        """The control listener's URL (`/_origin/stats`, `/_origin/faults` are under it)."""
        return url_of(self.control.addresses[0])

    async def cleanup(self) -> None:
        await self.control.cleanup()
        await self.public.cleanup()


async def start(config: OriginConfig) -> RunningOrigin:
    """Serve the origin on `config.listen` and its control endpoints on
    `config.admin`; the caller awaits `cleanup()`."""
    app = create_app(config)
    control = create_control_app(app, config.name, config.admin_token)
    public_runner = await _serve(app, config.listen, config.access_log)
    try:
        control_runner = await _serve(control, config.admin, config.access_log)
    except BaseException:
        await public_runner.cleanup()
        raise
    return RunningOrigin(public_runner, control_runner)


async def _serve(app: web.Application, listen: str, access_log: bool) -> web.AppRunner:
    listener = Listener(app, access_log)
    await listener.start(listen)
    return listener.runner


def url_of(address: tuple[str, int] | tuple[str, int, int, int]) -> str:
    """``http://HOST:PORT`` for a listening socket's address (IPv6 in brackets)."""
    host, port = address[0], address[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
