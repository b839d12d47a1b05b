"""Running an edge node: the client listener, the admin listener and a graceful stop."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from pinedge.core.config import parse_hostport
from pinedge.edge.admin import Admin
from pinedge.edge.config import EdgeConfig
from pinedge.edge.protocol import EdgeHTTPServer
from pinedge.edge.proxy import Edge

log = logging.getLogger("pinedge.edge")


class EdgeServer:
    """An Edge behind its two listeners. `start()`, then `stop()` drains and closes."""

    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.edge = Edge(config)
        self.admin = Admin(self.edge)
        self._runners: list[web.BaseRunner] = []
        self.port = 0
        self.admin_port = 0

    async def start(self) -> None:
        config = self.config
        await self.edge.start()
        server = EdgeHTTPServer(
            self.edge.handle,  # type: ignore[arg-type]
            config.name,
            f"request line {config.max_request_line} bytes, header field "
            f"{config.max_header_size} bytes",
            self.edge.fast_hit if config.fast_path else None,
            max_line_size=config.max_request_line,
            max_field_size=config.max_header_size,
            auto_decompress=False,
            access_log=None,
        )
        proxy_runner = web.ServerRunner(server, shutdown_timeout=config.drain_time)
        await proxy_runner.setup()
        host, port = parse_hostport(config.listen)
        site = web.TCPSite(proxy_runner, host, port, backlog=1024)
        await site.start()
        self.port = _bound_port(proxy_runner, port)
        admin_runner = web.AppRunner(self.admin.app(), access_log=None)
        await admin_runner.setup()
        admin_host, admin_port = parse_hostport(config.admin)
        await web.TCPSite(admin_runner, admin_host, admin_port).start()
        self.admin_port = _bound_port(admin_runner, admin_port)
        self._runners = [proxy_runner, admin_runner]
        self.admin.ready = True
        log.info(
            "edge %s listening on http://%s:%d (admin http://%s:%d), %d site(s)",
            config.name,
            host,
            self.port,
            admin_host,
            self.admin_port,
            len(config.site_list()),
        )

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish within drain_time, then close."""
        self.admin.ready = False
        proxy_runner, admin_runner = self._runners or (None, None)
        if proxy_runner is not None:
            log.info("draining (up to %.0fs)", self.config.drain_time)
            await proxy_runner.cleanup()
        await self.edge.close()
        if admin_runner is not None:
            await admin_runner.cleanup()
        self._runners = []


def _bound_port(runner: web.BaseRunner, asked: int) -> int:
    if asked:
        return asked
    for address in runner.addresses:
        return int(address[1])
    return asked


async def run_until_signalled(*servers: object) -> None:
    """Start the given servers, wait for SIGINT or SIGTERM, then stop them in reverse."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    started = []
    try:
        for server in servers:
            await server.start()  # type: ignore[attr-defined]
            started.append(server)
        await stop.wait()
        log.info("signal received, shutting down")
    finally:
        for server in reversed(started):
            await server.stop()  # type: ignore[attr-defined]


def run(config: EdgeConfig) -> None:
    asyncio_run(run_until_signalled(EdgeServer(config)))


def asyncio_run(coro: object) -> None:
    """Run with uvloop where it is installed."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]
        return
    uvloop.run(coro)  # type: ignore[arg-type]
