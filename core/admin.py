"""The admin listener every service runs: liveness, readiness and Prometheus metrics.

`admin_app(ready, metrics)` answers `GET /healthz` (the process answers),
`GET /readyz` (200 or 503 with the service's own words) and `GET /metrics`;
the service adds its own routes (purge, verdicts, reloads) and guards them
with `core.auth.BearerToken`. Nothing it answers may be cached.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

from aiohttp import web
from aiohttp.typedefs import Middleware

NO_STORE = {"Cache-Control": "no-store"}


class Readiness(NamedTuple):
    ready: bool
    text: str  # one line, e.g. "ready: 2 of 2 workers serving"


def admin_app(
    ready: Callable[[], Readiness],
    metrics: Callable[[], str],
    middlewares: Iterable[Middleware] = (),
) -> web.Application:
    """An application with /healthz, /readyz and /metrics; add the service's routes to it."""

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n", headers=NO_STORE)

    async def readyz(request: web.Request) -> web.Response:
        answer = ready()
        return web.Response(
            status=200 if answer.ready else 503, text=answer.text + "\n", headers=NO_STORE
        )

    async def metrics_text(request: web.Request) -> web.Response:
        return web.Response(
            text=metrics(), content_type="text/plain", charset="utf-8", headers=NO_STORE
        )

    app = web.Application(middlewares=list(middlewares))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_text)
    return app
