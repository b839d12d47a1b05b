"""A node of several workers: the supervisor process and what each worker runs.

The supervisor owns the store (owner.py) and serves it to the workers over a
Unix socket, answers the admin listener (adding up the workers' metrics),
starts N workers that share the client port with SO_REUSEPORT, and restarts
any that dies. SIGTERM drains every worker; SIGHUP re-reads the config file
and replaces the workers one by one with workers running the new settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path

from aiohttp import web

from pinedge.core import logs
from pinedge.core.config import ConfigError, parse_hostport
from pinedge.core.metrics import Counter, Gauge, Registry, merge, snapshot
from pinedge.edge.node.admin import purge_endpoint
from pinedge.edge.node.clients import ROWS, ClientTable
from pinedge.edge.node.config import EdgeConfig
from pinedge.edge.node.malloc import tune_malloc
from pinedge.edge.node.metrics import add_client_metrics, add_store_metrics
from pinedge.edge.node.server import (
    EdgeServer,
    WorkerContext,
    asyncio_run,
    decodes_location,
    store_location,
)
from pinedge.edge.store.link import OwnerServer, RemoteLink
from pinedge.edge.store.owner import Generations, StoreOwner

log = logging.getLogger("pinedge.supervisor")

SPAWN = multiprocessing.get_context("spawn")
CHECK_EVERY = 0.2
CRASH_BACKOFF = 1.0  # a worker that dies within this long of starting is restarted after it
CRASH_LIMIT = 10  # ... and after this many such deaths in a row the node gives up
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
    asyncio_run(_worker(config, Path(root), Path(socket_path), generations, clients, decodes))


async def _worker(
    config: EdgeConfig,
    root: Path,
    socket_path: Path,
    generations: str,
    clients: tuple[str, int],
    decodes: tuple[Path, int] | None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    link = RemoteLink(socket_path)
    await link.connect()
    link.on_lost = stop.set
    shared = Generations(generations)
    table = ClientTable(*clients)
    server = EdgeServer(config, WorkerContext(root, link, shared, table, decodes))
    await server.start()

    async def report() -> None:
        while True:
            link.report({"metrics": snapshot(server.edge.metrics.registry)})
            await asyncio.sleep(REPORT_EVERY)

    reporter = asyncio.create_task(report())
    await stop.wait()
    reporter.cancel()
    await server.stop()
    shared.counters.release()
    shared.memory.close()
    table.close()


class Worker:
    def __init__(self, process: BaseProcess, row: int) -> None:
        self.process = process
        self.row = row  # its row of connection counts in the client table
        self.started = time.monotonic()
        self.died: float | None = None


class Supervisor:
    def __init__(
        self, config: EdgeConfig, reload: Callable[[], EdgeConfig], log_level: str | None
    ) -> None:
        self.config = config
        self.reload_config = reload
        self.log_level = log_level
        # Workers share their decoded images only when there are several of them.
        self.decodes = decodes_location(config) if config.workers > 1 else None
        reserve = self.decodes[1] if self.decodes is not None else 0
        root, budget, self.persistent = store_location(config, reserve)
        self.owner = StoreOwner(root, budget, config.eviction)
        self.clients = ClientTable()
        self.rows_in_use: set[int] = set()
        self.socket_dir = Path(tempfile.mkdtemp(prefix="pinedge-"))
        self.link_server = OwnerServer(self.owner, self.socket_dir / "owner.sock")
        self.workers: list[Worker] = []
        self.stopping = False
        self.restarts = 0
        self.quick_deaths = 0
        self.exit_code = 0
        self.admin_runner: web.AppRunner | None = None

    # ── lifetime ─────────────────────────────────────────────────────────────

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        reload = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload.set)
        kept = self.owner.scan()
        log.info("store %s: %d stored responses kept", self.owner.root, kept)
        await self.link_server.start()
        await self.start_admin()
        for _ in range(self.config.workers):
            self.workers.append(self.spawn())
        log.info(
            "edge %s: %d workers on http://%s, admin http://%s",
            self.config.name,
            self.config.workers,
            self.config.listen,
            self.config.admin,
        )
        try:
            while not stop.is_set():
                if reload.is_set():
                    reload.clear()
                    await self.reload()
                if not self.replace_dead():
                    self.exit_code = 1
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), CHECK_EVERY)
        finally:
            await self.shutdown()
        return self.exit_code

    def spawn(self, row: int | None = None) -> Worker:
        """A new worker, in `row` of the client table (a dead worker's), or a free one."""
        if row is None:
            row = min(set(range(ROWS)) - self.rows_in_use)
        self.rows_in_use.add(row)
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
        return Worker(process, row)

    def replace_dead(self) -> bool:
        """Start a worker for each that died (after a pause if it died right after
        starting); False once workers keep dying at start, CRASH_LIMIT times in a row."""
        now = time.monotonic()
        for index, worker in enumerate(self.workers):
            if self.stopping or worker.process.is_alive():
                continue
            if worker.died is None:
                worker.died = now
                quick = now - worker.started < CRASH_BACKOFF
                self.quick_deaths = self.quick_deaths + 1 if quick else 0
                log.warning(
                    "worker pid %s exited with code %s; starting another",
                    worker.process.pid,
                    worker.process.exitcode,
                )
                if self.quick_deaths >= CRASH_LIMIT:
                    log.error("workers keep exiting right after they start; giving up")
                    return False
                if quick:
                    continue
            elif now - worker.died < CRASH_BACKOFF:
                continue
            self.restarts += 1
            self.workers[index] = self.spawn(worker.row)
        return True

    async def reload(self) -> None:
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
        log.info("SIGHUP: replacing %d workers with the new configuration", len(self.workers))
        self.config = config
        old, self.workers = self.workers, []
        for worker in old:
            self.workers.append(self.spawn())
            await asyncio.sleep(0.5)
            await self.stop_worker(worker)
        while len(self.workers) < config.workers:
            self.workers.append(self.spawn())
        for worker in self.workers[config.workers :]:
            await self.stop_worker(worker)
        del self.workers[config.workers :]

    async def stop_worker(self, worker: Worker) -> None:
        process = worker.process
        if process.is_alive():
            process.terminate()
        deadline = time.monotonic() + self.config.drain_time + 5
        while process.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if process.is_alive():
            log.warning("worker pid %s did not drain in time; killing it", process.pid)
            process.kill()
        process.join(1)
        if not process.is_alive():
            self.rows_in_use.discard(worker.row)

    async def shutdown(self) -> None:
        self.stopping = True
        log.info("stopping: draining %d workers", len(self.workers))
        await asyncio.gather(*(self.stop_worker(w) for w in self.workers))
        if self.admin_runner is not None:
            await self.admin_runner.cleanup()
        await self.link_server.close()
        self.owner.close(keep_files=self.persistent)
        self.clients.close()
        shutil.rmtree(self.socket_dir, ignore_errors=True)
        if not self.persistent:
            shutil.rmtree(self.owner.root, ignore_errors=True)
        if self.decodes is not None:
            shutil.rmtree(self.decodes[0], ignore_errors=True)

    # ── admin ────────────────────────────────────────────────────────────────

    async def start_admin(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_post("/purge", purge_endpoint(self.config, self.owner).handle)
        self.admin_runner = web.AppRunner(app, access_log=None)
        await self.admin_runner.setup()
        host, port = parse_hostport(self.config.admin)
        await web.TCPSite(self.admin_runner, host, port).start()

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n", headers={"Cache-Control": "no-store"})

    async def readyz(self, request: web.Request) -> web.Response:
        alive = sum(w.process.is_alive() for w in self.workers)
        reporting = len(self.link_server.snapshots)
        if self.stopping or not alive or not reporting:
            return web.Response(
                status=503,
                text=f"not ready: {alive} workers alive, {reporting} serving\n",
                headers={"Cache-Control": "no-store"},
            )
        return web.Response(
            text=f"ready: {reporting} of {len(self.workers)} workers serving\n",
            headers={"Cache-Control": "no-store"},
        )

    async def metrics(self, request: web.Request) -> web.Response:
        shots = [s["metrics"] for s in self.link_server.snapshots.values()]
        registry: Registry = merge(shots)
        add_store_metrics(registry, self.owner)
        add_client_metrics(registry, self.clients)
        registry.add(
            Gauge(
                "pinedge_workers",
                "Worker processes alive.",
                lambda: sum(w.process.is_alive() for w in self.workers),
            )
        )
        restarts = registry.add(
            Counter("pinedge_worker_restarts_total", "Workers that died and were replaced.")
        )
        restarts.inc(amount=self.restarts)
        return web.Response(
            text=registry.render(),
            content_type="text/plain",
            charset="utf-8",
            headers={"Cache-Control": "no-store"},
        )


def run(config: EdgeConfig, reload: Callable[[], EdgeConfig], log_level: str | None) -> int:
    supervisor = Supervisor(config, reload, log_level)
    result = 0

    async def main() -> None:
        nonlocal result
        result = await supervisor.run()

    asyncio_run(main())
    return result
