"""`pinedge dns --config FILE [--listen HOST:PORT] [--workers N]`: the GeoDNS server.

One process answers, probes the POPs and serves the admin listener; with
`--workers N` it starts N-1 more that answer on the same port (SO_REUSEPORT)
and probe on their own, send it their figures every second, and take the
control plane's verdicts and reloads from it; one that dies is replaced
(core.workers). SIGHUP reloads the config file (zones, POPs, the GeoIP
database) without a restart; SIGTERM stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from pinedge.core import logs
from pinedge.core.admin import Readiness
from pinedge.core.config import ConfigError, load, parse_hostport
from pinedge.core.listener import Listener
from pinedge.core.runner import EXIT_FAILED, EXIT_USAGE, Stop, watch
from pinedge.core.runner import run as run_services
from pinedge.core.workers import CHECK_EVERY, SPAWN, WorkerPool
from pinedge.geodns.admin import Admin, figures
from pinedge.geodns.config import DnsConfig
from pinedge.geodns.server import DnsServer
from pinedge.geodns.steer import OverrideError

log = logging.getLogger("pinedge.dns")

REPORT_EVERY = 1.0
WORKER_DRAIN = 5.0  # a worker has this long to stop after SIGTERM, then it is killed
REFUSED = (ConfigError, OverrideError, ValueError, OSError)

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
        return EXIT_USAGE
    path = getattr(args, "config", None)
    if not path:
        print("pinedge dns: give --config FILE (zones and POPs)", file=sys.stderr)
        return EXIT_USAGE
    overrides = {dest: getattr(args, dest, None) for dest, _, _ in FLAGS.values()}

    def read() -> DnsConfig:
        return load(DnsConfig, path, overrides)

    try:
        config = read()
        DnsServer(config)  # builds zones, reads the database and overrides: fail early
    except REFUSED as exc:
        print(f"pinedge dns: {exc}", file=sys.stderr)
        return EXIT_USAGE
    stop = Stop()
    node = DnsNode(config, read, getattr(args, "log_level", None), (path, overrides), stop)
    try:
        return run_services([node], stop=stop, reload=node.reload, deadline=WORKER_DRAIN + 10)
    except OSError as exc:
        print(f"pinedge dns: {exc}", file=sys.stderr)
        return EXIT_FAILED


Source = tuple[str, dict[str, Any]]  # the config file and the flags over it


class DnsNode:
    """The first process: a DnsServer, the admin listener, and N-1 workers beside it."""

    def __init__(
        self,
        config: DnsConfig,
        read: Callable[[], DnsConfig],
        log_level: str | None,
        source: Source,
        stop: Stop,
    ) -> None:
        self.read = read
        self.log_level = log_level
        self.source = source
        self.stop_run = stop
        self.server = DnsServer(config, reuse_port=config.workers > 1)
        self.listen = config.listen  # with the port bound once started
        self.extra = config.workers - 1
        self.pool = WorkerPool(self.start_worker, config.workers, WORKER_DRAIN)
        self.conns: dict[int, Connection] = {}  # by slot: the pipe to that worker
        self.reports: dict[int, dict[str, Any]] = {}  # by slot: its last figures
        self.admin: Listener | None = None
        self.watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        server = self.server
        await server.start()
        self.listen = f"{parse_hostport(server.state.config.listen)[0]}:{server.port}"
        self.pool.start(self.extra)
        admin = Admin(
            server.state.config.admin_token,
            lambda: [figures(server), *self.reports.values()],
            self.verdict,
            self.reload,
            lambda: [p.name for p in server.state.config.pops],
            self.readiness,
        )
        self.admin = Listener(admin.app())
        await self.admin.start(server.state.config.admin)
        config = server.state.config
        log.info(
            "dns %s: %d process(es), admin http://%s", self.listen, config.workers, config.admin
        )
        if self.extra:
            self.watcher = watch(self.watch(), self.stop_run)

    async def watch(self) -> None:
        while not self.pool.stopping:
            if not self.pool.replace_dead():
                self.stop_run.request(EXIT_FAILED, "dns workers keep dying at start-up")
                return
            await asyncio.sleep(CHECK_EVERY)

    async def stop(self) -> None:
        self.pool.stopping = True
        if self.watcher is not None:
            self.watcher.cancel()
            await asyncio.gather(self.watcher, return_exceptions=True)
        await self.pool.stop()
        for slot in list(self.conns):
            self.forget(slot)
        if self.admin is not None:
            await self.admin.stop()
        await self.server.stop()

    def start_worker(self, slot: int) -> BaseProcess:
        """A worker answering on our port, told the control plane's verdicts so far."""
        self.forget(slot)
        ours, theirs = SPAWN.Pipe()
        config = self.server.state.config
        process = SPAWN.Process(
            target=worker_main,
            args=(config, self.listen, theirs, self.log_level, self.source),
            daemon=True,
        )
        process.start()
        theirs.close()
        self.conns[slot] = ours
        asyncio.get_running_loop().add_reader(ours.fileno(), self.receive, slot)
        for pop, up in self.server.health.forced.items():
            ours.send(("verdict", pop, up))
        return process

    def forget(self, slot: int) -> None:
        """Close the pipe to the worker that was in `slot`, and drop its figures."""
        conn = self.conns.pop(slot, None)
        self.reports.pop(slot, None)
        if conn is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(conn.fileno())
            conn.close()

    def receive(self, slot: int) -> None:
        conn = self.conns[slot]
        try:
            self.reports[slot] = conn.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(conn.fileno())

    def tell(self, message: tuple[Any, ...]) -> None:
        for conn in self.conns.values():
            with contextlib.suppress(OSError):
                conn.send(message)

    def verdict(self, pop: str, up: bool | None) -> None:
        self.server.force(pop, up)
        self.tell(("verdict", pop, up))

    def reload(self) -> str | None:
        """Read the config file again (SIGHUP, POST /reload); what is wrong with it, or None."""
        server = self.server
        try:
            new = self.read()
            new.listen = server.state.config.listen  # the port stays until a restart
            server.reload(new)
        except REFUSED as exc:
            log.error("reload refused, the old configuration stays: %s", exc)
            return str(exc)
        self.tell(("reload",))
        return None

    def readiness(self) -> Readiness:
        answering = 1 + self.pool.alive()
        wanted = 1 + self.extra
        ready = answering == wanted and not self.pool.stopping
        verdict = "ready" if ready else "not ready"
        return Readiness(ready, f"{verdict}: {answering} of {wanted} processes answering")


def worker_main(
    config: DnsConfig, listen: str, conn: Connection, log_level: str | None, source: Source
) -> None:
    logs.setup(log_level)
    config.listen = listen
    stop = Stop()
    # SIGHUP is not ours to act on: the first process reloads us.
    code = run_services([DnsWorker(config, conn, source, stop)], stop=stop, reload=lambda: None)
    sys.exit(code)


class DnsWorker:
    """Another process answering on the port: it takes verdicts, reloads and stop
    from the first process over a pipe, and sends it its figures every second."""

    def __init__(self, config: DnsConfig, conn: Connection, source: Source, stop: Stop) -> None:
        self.server = DnsServer(config, reuse_port=True)
        self.conn = conn
        self.source = source
        self.stop_run = stop
        self.reporter: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.server.start()
        asyncio.get_running_loop().add_reader(self.conn.fileno(), self.command)
        self.reporter = asyncio.create_task(self.report())

    async def report(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                self.conn.send(figures(self.server))
            await asyncio.sleep(REPORT_EVERY)

    def command(self) -> None:
        server = self.server
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(self.conn.fileno())
            self.stop_run.request()
            return
        if message[0] == "verdict":
            server.force(message[1], message[2])
        elif message[0] == "reload":
            try:
                new = load(DnsConfig, *self.source)
            except REFUSED as exc:
                log.error("reload refused in a worker: %s", exc)
                return
            new.listen = server.state.config.listen
            server.reload(new)
        elif message[0] == "stop":
            self.stop_run.request()

    async def stop(self) -> None:
        if self.reporter is not None:
            self.reporter.cancel()
        await self.server.stop()
