"""A node of several workers: the supervisor process and what each worker runs.

The supervisor owns the store (owner.py) and serves it to the workers over a
Unix socket, answers the admin listener (adding up the workers' metrics), and
keeps N workers sharing the client port (core.workers: a dead one is replaced,
one that keeps dying at start-up ends the node). SIGTERM drains every worker;
SIGHUP re-reads the config file and replaces the workers one by one with
workers running the new settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sys
import tempfile
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path

from aiohttp import web

from pinedge.core import logs
from pinedge.core.admin import Readiness, admin_app
from pinedge.core.config import ConfigError
from pinedge.core.listener import Listener
from pinedge.core.metrics import Counter, Gauge, Registry, merge, snapshot
from pinedge.core.runner import EXIT_FAILED, Stop, watch
from pinedge.core.runner import run as run_services
from pinedge.core.workers import CHECK_EVERY, SPAWN, WorkerPool
from pinedge.edge.node.admin import purge_endpoint
from pinedge.edge.node.clients import ROWS, ClientTable
from pinedge.edge.node.config import EdgeConfig
from pinedge.edge.node.malloc import tune_malloc
from pinedge.edge.node.metrics import add_client_metrics, add_store_metrics
from pinedge.edge.node.server import (
    EdgeServer,
    WorkerContext,
    decodes_location,
    store_location,
)
from pinedge.edge.store.generations import Generations
from pinedge.edge.store.link import OwnerServer, RemoteLink
from pinedge.edge.store.loader import start_loading, stop_loading
from pinedge.edge.store.owner import StoreOwner

log = logging.getLogger("pinedge.supervisor")

REPORT_EVERY = 1.0


def worker_main(
    config: EdgeConfig,
    root: str,
    socket_path: str,
    generations: str,
    clients: tuple[str, int],
    decodes: tuple[Path, int] | None,
    log_level: str | None,
) -> None:
    """A worker process: one EdgeServer on the shared port and the shared store."""
    logs.setup(log_level)
    tune_malloc()
    stop = Stop()
    worker = EdgeWorker(config, Path(root), Path(socket_path), generations, clients, decodes, stop)
    sys.exit(run_services([worker], stop=stop, deadline=config.drain_time + 5))


class EdgeWorker:
    """What a worker runs: an EdgeServer on the supervisor's store, reporting its metrics."""

    def __init__(
        self,
        config: EdgeConfig,
        root: Path,
        socket_path: Path,
        generations: str,
        clients: tuple[str, int],
        decodes: tuple[Path, int] | None,
        stop: Stop,
    ) -> None:
        self.config = config
        self.root = root
        self.link = RemoteLink(socket_path, eager=config.workers > 1)
        self.generations = generations
        self.clients = clients
        self.decodes = decodes
        self.stop_run = stop
        self.parts: tuple[EdgeServer, Generations, ClientTable] | None = None
        self.reporter: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.link.connect()
        self.link.on_lost = self.stop_run.request  # the supervisor is gone: stop too
        shared = Generations(self.generations)
        table = ClientTable(*self.clients)
        context = WorkerContext(self.root, self.link, shared, table, self.decodes)
        server = EdgeServer(self.config, context)
        self.parts = (server, shared, table)
        await server.start()
        self.reporter = asyncio.create_task(self.report(server))

    async def report(self, server: EdgeServer) -> None:
        while True:
            self.link.report({"metrics": snapshot(server.edge.metrics.registry)})
            await asyncio.sleep(REPORT_EVERY)

    async def stop(self) -> None:
        if self.reporter is not None:
            self.reporter.cancel()
        if self.parts is None:
            return
        server, shared, table = self.parts
        await server.stop()
        shared.counters.release()
        shared.memory.close()
        table.close()


class Supervisor:
    """The node's first process: the store owner, the admin listener and the workers."""

    def __init__(
        self,
        config: EdgeConfig,
        reload: Callable[[], EdgeConfig],
        log_level: str | None,
        stop: Stop,
    ) -> None:
        self.config = config
        self.reload_config = reload
        self.log_level = log_level
        self.stop_run = stop
        # Workers share their decoded images only when there are several of them.
        self.decodes = decodes_location(config) if config.workers > 1 else None
        reserve = self.decodes[1] if self.decodes is not None else 0
        root, budget, self.persistent = store_location(config, reserve)
        self.owner = StoreOwner(root, budget, config.eviction)
        self.clients = ClientTable()
        self.socket_dir = Path(tempfile.mkdtemp(prefix="pinedge-"))
        self.link_server = OwnerServer(self.owner, self.socket_dir / "owner.sock")
        self.pool = WorkerPool(self.start_worker, ROWS, config.drain_time + 5)
        self.admin: Listener | None = None
        self.reload_asked = asyncio.Event()
        self.wake = asyncio.Event()
        self.watcher: asyncio.Task[None] | None = None
        self.loading: asyncio.Task[None] | None = None

    # ── lifetime ─────────────────────────────────────────────────────────────

    async def start(self) -> None:
        self.loading = start_loading(self.owner, self.config.store_load_wait)
        self.owner.start()
        await self.link_server.start()
        self.admin = Listener(self.admin_app())
        await self.admin.start(self.config.admin)
        self.pool.start(self.config.workers)
        log.info(
            "edge %s: %d workers on http://%s, admin http://%s",
            self.config.name,
            self.config.workers,
            self.config.listen,
            self.config.admin,
        )
        self.watcher = watch(self.watch(), self.stop_run)

    def ask_reload(self) -> None:
        """SIGHUP: the watcher reloads between two checks of the workers."""
        self.reload_asked.set()
        self.wake.set()

    async def watch(self) -> None:
        """Replace dead workers and carry out reloads until the node stops."""
        while not self.pool.stopping:
            if self.reload_asked.is_set():
                self.reload_asked.clear()
                await self.reload()
            if not self.pool.replace_dead():
                self.stop_run.request(EXIT_FAILED, "workers keep dying at start-up")
                return
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), CHECK_EVERY)

    def start_worker(self, row: int) -> BaseProcess:
        """A worker process in `row` of the client table."""
        process = SPAWN.Process(
            target=worker_main,
            args=(
                self.config,
                str(self.owner.root),
                str(self.link_server.path),
                self.owner.generations.name,
                (self.clients.name, row),
                self.decodes,
                self.log_level,
            ),
            name="pinedge-worker",
            daemon=False,
        )
        process.start()
        return process

    async def reload(self) -> None:
        """Replace the workers one by one with workers running the new configuration."""
        try:
            config = self.reload_config()
        except ConfigError as exc:
            log.error("SIGHUP: the new configuration is refused, keeping the old: %s", exc)
            return
        unchangeable = ("listen", "admin", "cache_dir", "cache_mem", "cache_disk", "eviction")
        changed = [k for k in unchangeable if getattr(config, k) != getattr(self.config, k)]
        if changed:
            log.error("SIGHUP: %s cannot change without a restart; keeping the old", changed)
            return
        pool = self.pool
        log.info("SIGHUP: replacing %d workers with the new configuration", len(pool.workers))
        self.config = config
        pool.stop_timeout = config.drain_time + 5
        old, pool.workers = pool.workers, []
        for index, worker in enumerate(old):
            if pool.stopping:  # SIGTERM meanwhile: the old ones left are stopped with the rest
                pool.workers.extend(old[index:])
                return
            pool.workers.append(pool.spawn())
            await asyncio.sleep(0.5)
            await pool.stop_worker(worker)
        while len(pool.workers) < config.workers:
            pool.workers.append(pool.spawn())
        for worker in pool.workers[config.workers :]:
            await pool.stop_worker(worker)
        del pool.workers[config.workers :]

    async def stop(self) -> None:
        self.pool.stopping = True
        self.wake.set()
        if self.watcher is not None:  # a reload under way ends: no worker is left behind
            await asyncio.gather(self.watcher, return_exceptions=True)
        log.info("stopping: draining %d workers", len(self.pool.workers))
        await self.pool.stop()
        if self.admin is not None:
            await self.admin.stop()
        await self.link_server.close()
        await stop_loading(self.loading)
        self.owner.close(keep_files=self.persistent)
        self.clients.close()
        shutil.rmtree(self.socket_dir, ignore_errors=True)
        if not self.persistent:
            shutil.rmtree(self.owner.root, ignore_errors=True)
        if self.decodes is not None:
            shutil.rmtree(self.decodes[0], ignore_errors=True)

    # ── admin ────────────────────────────────────────────────────────────────

    def admin_app(self) -> web.Application:
        app = admin_app(self.readiness, self.metrics)
        purge = purge_endpoint(self.config, self.owner, self.link_server.gather_held)
        app.router.add_post("/purge", purge.handle)
        return app

    def readiness(self) -> Readiness:
        alive = self.pool.alive()
        reporting = len(self.link_server.snapshots)
        if self.pool.stopping or not alive or not reporting:
            return Readiness(False, f"not ready: {alive} workers alive, {reporting} serving")
        return Readiness(True, f"ready: {reporting} of {len(self.pool.workers)} workers serving")

    def metrics(self) -> str:
        shots = [s["metrics"] for s in self.link_server.snapshots.values()]
        registry: Registry = merge(shots)
        add_store_metrics(registry, self.owner)
        add_client_metrics(registry, self.clients)
        registry.add(Gauge("pinedge_workers", "Worker processes alive.", self.pool.alive))
        restarts = registry.add(
            Counter("pinedge_worker_restarts_total", "Workers that died and were replaced.")
        )
        restarts.inc(amount=self.pool.restarts)
        return registry.render()


def run(config: EdgeConfig, reload: Callable[[], EdgeConfig], log_level: str | None) -> int:
    """Run the node until SIGTERM or SIGINT; the exit code."""
    stop = Stop()
    supervisor = Supervisor(config, reload, log_level, stop)
    # Workers drain at once, each killed past drain_time + 5s; the rest is quick.
    deadline = config.drain_time + 15
    return run_services([supervisor], stop=stop, reload=supervisor.ask_reload, deadline=deadline)
