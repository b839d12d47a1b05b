"""The admin listener: liveness, readiness and metrics, on a separate (private) port."""

from __future__ import annotations

from aiohttp import web

from pinedge.edge.proxy import Edge


class Admin:
    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.ready = False

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n", headers={"Cache-Control": "no-store"})

    async def readyz(self, request: web.Request) -> web.Response:
        if not self.ready:
            return web.Response(
                status=503,
                text="not ready: starting or draining\n",
                headers={"Cache-Control": "no-store"},
            )
        return web.Response(text="ready\n", headers={"Cache-Control": "no-store"})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            text=self.edge.metrics.render(),
            content_type="text/plain",
            charset="utf-8",
            headers={"Cache-Control": "no-store"},
        )
