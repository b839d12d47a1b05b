"""An aiohttp application served on one HOST:PORT, started and stopped as a unit."""

from __future__ import annotations

from aiohttp import web

from pinedge.core.config import parse_hostport


class Listener:
    """An application served on HOST:PORT (port 0: one the kernel picks, then in `port`)."""

    def __init__(self, app: web.Application, access_log: bool = False) -> None:
        self.runner = web.AppRunner(app) if access_log else web.AppRunner(app, access_log=None)
        self.port = 0

    async def start(self, hostport: str) -> None:
        host, port = parse_hostport(hostport)
        await self.runner.setup()
        try:
            await web.TCPSite(self.runner, host, port).start()
        except BaseException:
            await self.runner.cleanup()
            raise
        self.port = port or int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        await self.runner.cleanup()
