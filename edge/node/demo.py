"""`pinedge demo`: a sample origin and an edge in front of it, on loopback.

The first URL printed is the page to open in a browser; it is served through
the edge, so a reload comes from the cache (see the Cache-Status header).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from typing import TYPE_CHECKING

from pinedge.core.config import ConfigError, build
from pinedge.core.runner import EXIT_USAGE
from pinedge.core.runner import run as run_services
from pinedge.edge.node.config import EdgeConfig
from pinedge.edge.node.server import EdgeServer

if TYPE_CHECKING:
    from pinedge.origin import RunningOrigin

log = logging.getLogger("pinedge.demo")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    parser.add_argument("--port", type=int, default=8080, help="edge port (next free if taken)")


def free_port(host: str, wanted: int, taken: set[int]) -> int:
    """`wanted` if it can be bound and no earlier pick took it, otherwise any free
    port; the pick goes into `taken` (probing does not hold the port, so without
    it two picks could meet on one port)."""
    for port in (wanted, 0):
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                continue
            found = int(probe.getsockname()[1])
            if found not in taken:
                taken.add(found)
                return found
    raise OSError(f"no free port on {host}")


class OriginServer:
    def __init__(self, listen: str, admin: str) -> None:
        from pinedge.origin import OriginConfig

        self.config = OriginConfig(listen=listen, admin=admin)
        self.running: RunningOrigin | None = None

    async def start(self) -> None:
        from pinedge.origin import start

        self.running = await start(self.config)

    async def stop(self) -> None:
        if self.running is not None:
            await self.running.cleanup()


class Announcer:
    """Prints the URLs once everything is listening."""

    def __init__(self, edge: EdgeServer, origin_url: str, origin_admin_url: str) -> None:
        self.edge = edge
        self.origin_url = origin_url
        self.origin_admin_url = origin_admin_url

    async def start(self) -> None:
        edge_url = f"http://{self.edge.config.listen}/"
        admin = f"http://{self.edge.config.admin}"
        print(f"\n  Open {edge_url}  (the pin grid, served through the edge)\n", flush=True)
        print(f"  edge metrics:  {admin}/metrics", flush=True)
        stats = f"{self.origin_admin_url}/_origin/stats"
        print(f"  origin:        {self.origin_url}/  (stats: {stats})", flush=True)
        print("  Ctrl-C stops the demo.\n", flush=True)

    async def stop(self) -> None:
        await asyncio.sleep(0)


def run(args: argparse.Namespace) -> int:
    host = args.host
    taken: set[int] = set()
    edge_port = free_port(host, args.port, taken)
    admin_port = free_port(host, edge_port + 1, taken)
    origin_port = free_port(host, 8090, taken)
    origin_admin_port = free_port(host, 8091, taken)
    origin_url = f"http://{host}:{origin_port}"
    try:
        config = build(
            EdgeConfig,
            {
                "listen": f"{host}:{edge_port}",
                "admin": f"{host}:{admin_port}",
                "origin": origin_url,
                "name": "pinedge-demo",
                "grace": "1h",
            },
        )
    except ConfigError as exc:
        print(f"pinedge demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    edge = EdgeServer(config)
    origin = OriginServer(f"{host}:{origin_port}", f"{host}:{origin_admin_port}")
    announcer = Announcer(edge, origin_url, f"http://{host}:{origin_admin_port}")
    return run_services([origin, edge, announcer], deadline=config.drain_time + 10)
