"""The admin listener of a one-process node: liveness, readiness, metrics and
purge, on a separate (private) port. A node of several workers has its
supervisor answer instead (supervisor.py), with the same endpoints."""

from __future__ import annotations

from aiohttp import web

from pinedge.edge.node.config import EdgeConfig
from pinedge.edge.pipeline.proxy import Edge
from pinedge.edge.store.owner import StoreOwner
from pinedge.edge.store.purge import PurgeEndpoint


class Admin:
    def __init__(self, edge: Edge, owner: StoreOwner) -> None:
        self.edge = edge
        self.ready = False
        self.purge = purge_endpoint(edge.config, owner)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_post("/purge", self.purge.handle)
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


def purge_endpoint(config: EdgeConfig, owner: StoreOwner) -> PurgeEndpoint:
    """POST /purge, applied by the node's store owner."""
    hosts = [host for site in config.site_list() for host in site.hosts]
    return PurgeEndpoint(config.admin_token, hosts, owner.purge)
