"""Active health checks: each upstream asked for its probe path every
probe_interval; an answer under 500 is healthy and closes an open breaker."""

from __future__ import annotations

import asyncio
import logging
import time

from pinedge.edge.node.config import EdgeConfig
from pinedge.edge.node.metrics import EdgeMetrics
from pinedge.edge.pipeline.errors import UpstreamError
from pinedge.edge.upstream.client import Upstream
from pinedge.edge.upstream.routes import BreakerState, Target, Upstreams

log = logging.getLogger("pinedge.edge")


async def probe_forever(
    client: Upstream, upstreams: Upstreams, config: EdgeConfig, metrics: EdgeMetrics
) -> None:
    probes = []
    for site in config.site_list():
        for upstream in upstreams.origins[site.name]:
            host = site.hosts[0] if site.preserve_host else upstream.host
            probes.append((upstream, site.probe_path, host))
    for upstream in upstreams.shields:
        probes.append((upstream, "/", config.site_list()[0].hosts[0]))
    while True:
        await asyncio.sleep(config.probe_interval)
        await asyncio.gather(*(probe(client, metrics, *each) for each in probes))


async def probe(
    client: Upstream, metrics: EdgeMetrics, upstream: Target, path: str, host: str
) -> None:
    try:
        response, _, _ = await client.request("GET", upstream.url + path, {"Host": host})
        response.release()
        healthy = response.status < 500
    except UpstreamError:
        healthy = False
    if healthy:
        if upstream.breaker.state is not BreakerState.CLOSED:
            log.info("%s answers its probe again: closing its breaker", upstream.label)
        upstream.breaker.succeeded()
    else:
        upstream.breaker.failed(time.monotonic())
    metrics.probes.inc(upstream.label, "up" if healthy else "down")
