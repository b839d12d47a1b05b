"""`pinedge dns --config FILE [--listen HOST:PORT] [--workers N]`: the GeoDNS server.

One process answers, probes the POPs and serves the admin listener; with
`--workers N` it starts N-1 more that answer on the same port (SO_REUSEPORT)
and probe on their own, send it their figures every second, and take the
control plane's verdicts and reloads from it. SIGHUP reloads the config file
(zones, POPs, the GeoIP database) without a restart; SIGTERM stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import signal
import sys
from collections.abc import Callable, Coroutine
from multiprocessing.connection import Connection
from typing import Any

from aiohttp import web

from pinedge.core import logs
from pinedge.core.config import ConfigError, load, parse_hostport
from pinedge.geodns.admin import Admin, figures
from pinedge.geodns.config import DnsConfig
from pinedge.geodns.server import DnsServer
from pinedge.geodns.steer import OverrideError

log = logging.getLogger("pinedge.dns")

SPAWN = multiprocessing.get_context("spawn")
REPORT_EVERY = 1.0

FLAGS = {
    "--listen": ("listen", "HOST:PORT", "address for UDP and TCP queries (default 127.0.0.1:5353)"),
    "--admin": ("admin", "HOST:PORT", "address of the admin listener (default 127.0.0.1:9153)"),
    "--workers": ("workers", "N", "processes answering on the same port (default 1)"),
    "--geoip": ("geoip", "FILE", "a MaxMind-format .mmdb database"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for flag, (dest, metavar, text) in FLAGS.items():
        parser.add_argument(flag, dest=dest, metavar=metavar, default=None, help=text)
    parser.add_argument("--control", metavar="URL", help="the control plane (not built yet)")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "control", None):
        print("pinedge dns: --control: the control plane is not built yet", file=sys.stderr)
        return 2
    path = getattr(args, "config", None)
    if not path:
        print("pinedge dns: give --config FILE (zones and POPs)", file=sys.stderr)
        return 2
    overrides = {dest: getattr(args, dest, None) for dest, _, _ in FLAGS.values()}

    def read() -> DnsConfig:
        return load(DnsConfig, path, overrides)

    try:
        config = read()
        DnsServer(config)  # builds zones, reads the database and overrides: fail early
    except (ConfigError, OverrideError, ValueError, OSError) as exc:
        print(f"pinedge dns: {exc}", file=sys.stderr)
        return 2
    try:
        _run(serve(config, read, getattr(args, "log_level", None), (path, overrides)))
    except OSError as exc:
        print(f"pinedge dns: {exc}", file=sys.stderr)
        return 1
    return 0


def _run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        asyncio.run(main)
        return
    uvloop.run(main)


class Worker:
    def __init__(self, process: Any, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.report: dict[str, Any] | None = None


Source = tuple[str, dict[str, Any]]  # the config file and the flags over it


async def serve(
    config: DnsConfig, read: Callable[[], DnsConfig], log_level: str | None, source: Source
) -> None:
    loop = asyncio.get_running_loop()
    server = DnsServer(config, reuse_port=config.workers > 1)
    await server.start()
    listen = f"{parse_hostport(config.listen)[0]}:{server.port}"
    workers: list[Worker] = []
    for _ in range(config.workers - 1):
        ours, theirs = SPAWN.Pipe()
        process = SPAWN.Process(
            target=worker_main, args=(config, listen, theirs, log_level, source), daemon=True
        )
        process.start()
        workers.append(Worker(process, ours))
        loop.add_reader(ours.fileno(), _receive, workers[-1])

    def tell(message: tuple[Any, ...]) -> None:
        for worker in workers:
            with contextlib.suppress(OSError):
                worker.conn.send(message)

    def verdict(pop: str, up: bool | None) -> None:
        server.force(pop, up)
        tell(("verdict", pop, up))

    def reload() -> str | None:
        try:
            new = read()
            new.listen = server.state.config.listen  # the port stays until a restart
            server.reload(new)
        except (ConfigError, OverrideError, ValueError, OSError) as exc:
            log.error("reload refused, the old configuration stays: %s", exc)
            return str(exc)
        tell(("reload",))
        return None

    def reports() -> list[dict[str, Any]]:
        return [figures(server), *(w.report for w in workers if w.report is not None)]

    admin = Admin(
        config.admin_token,
        reports,
        verdict,
        reload,
        lambda: [p.name for p in server.state.config.pops],
    )
    runner = web.AppRunner(admin.app(), access_log=None)
    await runner.setup()
    admin_host, admin_port = parse_hostport(config.admin)
    await web.TCPSite(runner, admin_host, admin_port).start()
    log.info("dns %s: %d process(es), admin http://%s", listen, config.workers, config.admin)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    await stop.wait()
    tell(("stop",))
    for worker in workers:
        worker.process.join(5)
        if worker.process.is_alive():
            worker.process.kill()
    await runner.cleanup()
    await server.stop()


def _receive(worker: Worker) -> None:
    try:
        worker.report = worker.conn.recv()
    except (EOFError, OSError):
        asyncio.get_running_loop().remove_reader(worker.conn.fileno())


def worker_main(
    config: DnsConfig, listen: str, conn: Connection, log_level: str | None, source: Source
) -> None:
    logs.setup(log_level)
    config.listen = listen
    _run(_worker(config, conn, source))


async def _worker(config: DnsConfig, conn: Connection, source: Source) -> None:
    loop = asyncio.get_running_loop()
    server = DnsServer(config, reuse_port=True)
    await server.start()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)  # the first process reloads us

    def command() -> None:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            stop.set()
            return
        if message[0] == "verdict":
            server.force(message[1], message[2])
        elif message[0] == "reload":
            try:
                new = load(DnsConfig, *source)
            except (ConfigError, OverrideError, ValueError, OSError) as exc:
                log.error("reload refused in a worker: %s", exc)
                return
            new.listen = config.listen
            server.reload(new)
        elif message[0] == "stop":
            stop.set()

    loop.add_reader(conn.fileno(), command)
    while not stop.is_set():
        with contextlib.suppress(OSError):
            conn.send(figures(server))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), REPORT_EVERY)
    await server.stop()
