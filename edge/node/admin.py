"""The admin listener of a one-process node: liveness, readiness, metrics and
purge, on a separate (private) port. A node of several workers has its
supervisor answer instead (supervisor.py), with the same endpoints."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from pinedge.core.admin import Readiness, admin_app
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
        app = admin_app(self.readiness, self.edge.metrics.render)
        app.router.add_post("/purge", self.purge.handle)
        return app

    def readiness(self) -> Readiness:
        if not self.ready:
            return Readiness(False, "not ready: starting or draining")
        return Readiness(True, "ready")


def purge_endpoint(
    config: EdgeConfig, owner: StoreOwner, before: Callable[[], Awaitable[None]] | None = None
) -> PurgeEndpoint:
    """POST /purge, applied by the node's store owner (after `before`)."""
    hosts = [host for site in config.site_list() for host in site.hosts]
    return PurgeEndpoint(config.admin_token, hosts, owner.purge, before)
