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

from pinedge.core.config import ConfigError, build
from pinedge.edge.config import EdgeConfig
from pinedge.edge.server import EdgeServer, asyncio_run, run_until_signalled

log = logging.getLogger("pinedge.demo")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    parser.add_argument("--port", type=int, default=8080, help="edge port (next free if taken)")


def free_port(host: str, wanted: int) -> int:
    """`wanted` if it can be bound, otherwise any free port."""
    for port in (wanted, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise OSError(f"no free port on {host}")


class OriginServer:
    def __init__(self, listen: str) -> None:
        from pinedge.origin import OriginConfig

        self.config = OriginConfig(listen=listen)
        self.runner = None

    async def start(self) -> None:
        from pinedge.origin import start

        self.runner = await start(self.config)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


class Announcer:
    """Prints the URLs once everything is listening."""

    def __init__(self, edge: EdgeServer, origin_url: str) -> None:
        self.edge = edge
        self.origin_url = origin_url

    async def start(self) -> None:
        edge_url = f"http://{self.edge.config.listen}/"
        admin = f"http://{self.edge.config.admin}"
        print(f"\n  Open {edge_url}  (the pin grid, served through the edge)\n", flush=True)
        print(f"  edge metrics:  {admin}/metrics", flush=True)
        print(f"  origin:        {self.origin_url}/  (stats: {self.origin_url}/_origin/stats)")
        print("  Ctrl-C stops the demo.\n", flush=True)

    async def stop(self) -> None:
        await asyncio.sleep(0)


def run(args: argparse.Namespace) -> int:
    host = args.host
    edge_port = free_port(host, args.port)
    admin_port = free_port(host, edge_port + 1)
    origin_port = free_port(host, 8090)
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
        return 2
    edge = EdgeServer(config)
    asyncio_run(
        run_until_signalled(
            OriginServer(f"{host}:{origin_port}"), edge, Announcer(edge, origin_url)
        )
    )
    return 0
