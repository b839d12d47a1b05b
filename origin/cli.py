"""`pinedge origin`: flags, then serve until SIGINT or SIGTERM (core.runner)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys

from pinedge.core.config import ConfigError, load, parse_hostport
from pinedge.core.runner import EXIT_FAILED, EXIT_USAGE
from pinedge.core.runner import run as run_services
from pinedge.origin.app import RunningOrigin, start, url_of
from pinedge.origin.catalog import CatalogError
from pinedge.origin.config import OriginConfig

log = logging.getLogger("pinedge.origin")

DRAIN_DEADLINE = 65.0  # aiohttp lets in-flight requests finish for up to 60s per listener

# flag: (config key, metavar, help); every default is None so the file's value stands
FLAGS = {
    "--listen": ("listen", "HOST:PORT", "address to serve on (default 127.0.0.1:8090)"),
    "--admin": (
        "admin",
        "HOST:PORT",
        "control listener for /_origin/stats and /_origin/faults (default 127.0.0.1:8091)",
    ),
    "--name": ("name", "NAME", "Server header value (default pinedge-origin)"),
    "--page-size": ("page_size", "N", "pins per HTML page (default 12)"),
    "--photos": ("photos", "DIR", "directory with catalog.json and photos (default: bundled)"),
    "--html-ttl": ("html_ttl", "DURATION", "max-age of HTML pages (default 60s)"),
    "--api-ttl": ("api_ttl", "DURATION", "max-age of API responses (default 10s)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the origin's flags (`--config` is added by the `pinedge` command)."""
    for flag, (dest, metavar, text) in FLAGS.items():
        parser.add_argument(flag, dest=dest, metavar=metavar, default=None, help=text)
    parser.add_argument(
        "--access-log",
        dest="access_log",
        action="store_const",
        const=True,
        default=None,
        help="log every request",
    )


def run(args: argparse.Namespace) -> int:
    """Load the configuration and serve; 2 on a configuration error, 1 if serving fails."""
    keys = [dest for dest, _, _ in FLAGS.values()] + ["access_log"]
    overrides = {key: getattr(args, key, None) for key in keys}
    try:
        config = load(OriginConfig, getattr(args, "config", None), overrides)
    except ConfigError as exc:
        print(f"pinedge origin: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return run_services([OriginService(config)], deadline=DRAIN_DEADLINE)
    except (OSError, CatalogError) as exc:
        print(f"pinedge origin: {exc}", file=sys.stderr)
        return EXIT_FAILED


class OriginService:
    """The origin under the service runner: logs where it listens, warns when its
    control listener is open beyond loopback."""

    def __init__(self, config: OriginConfig) -> None:
        self.config = config
        self.origin: RunningOrigin | None = None

    async def start(self) -> None:
        config = self.config
        origin = self.origin = await start(config)
        for address in origin.public.addresses:
            log.info("origin listening on %s", url_of(address))
        for address in origin.control.addresses:
            log.info(
                "origin control listening on %s (/_origin/stats, /_origin/faults)", url_of(address)
            )
        if config.admin_token is None and not _is_loopback(parse_hostport(config.admin)[0]):
            log.warning(
                "the control listener %s is beyond loopback and open to anyone who reaches it: "
                "set PINEDGE_ORIGIN_TOKEN to ask for a token",
                config.admin,
            )

    async def stop(self) -> None:
        if self.origin is not None:
            log.info("origin shutting down")
            await self.origin.cleanup()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
