"""Running an edge node: the client listener, the admin listener and a graceful stop."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
import shutil
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from pinedge.core.config import parse_hostport
from pinedge.core.listener import Listener
from pinedge.edge.http.forwarding import TrustedPeers
from pinedge.edge.images.pipeline import share_decodes
from pinedge.edge.node.admin import Admin
from pinedge.edge.node.aiohttp_private import C_PARSER
from pinedge.edge.node.clients import ClientTable
from pinedge.edge.node.config import EdgeConfig
from pinedge.edge.node.metrics import add_client_metrics
from pinedge.edge.node.protocol import ConnectionEvents, ConnectionPolicy, EdgeHTTPServer
from pinedge.edge.pipeline.proxy import Edge
from pinedge.edge.store.entry import Entry
from pinedge.edge.store.generations import Generations
from pinedge.edge.store.leftovers import memory_root
from pinedge.edge.store.link import LocalLink, OwnerLink
from pinedge.edge.store.loader import start_loading, stop_loading
from pinedge.edge.store.objectfile import Meta
from pinedge.edge.store.owner import StoreOwner
from pinedge.edge.store.view import SharedStore

log = logging.getLogger("pinedge.edge")

SHM_RESERVE = 8 * 1024 * 1024  # the generation table and other shared memory
LINGERING_TIME = 10.0  # aiohttp's default


@dataclass(frozen=True, slots=True)
class WorkerContext:
    """What a worker gets from its supervisor: the store and the way to its owner."""

    root: Path
    link: OwnerLink
    generations: Generations
    clients: ClientTable  # attached with this worker's row of connection counts
    decodes: tuple[Path, int] | None = None  # where workers share decoded images, and budget


def store_location(config: EdgeConfig, reserve: int = 0) -> tuple[Path, int, bool]:
    """(directory, byte budget, persistent) of the node's store; a store in
    memory leaves `reserve` bytes of the memory filesystem to other uses."""
    if config.cache_dir is not None:
        return Path(config.cache_dir), config.cache_disk, True
    root = memory_root(config.name)
    return root, memory_budget(root, config.cache_mem, "cache_mem", reserve), False


def decodes_location(config: EdgeConfig) -> tuple[Path, int] | None:
    """(directory, byte budget) in memory where a node's workers share decoded
    image sources; None when they cannot (no images, or turned off). At most a
    quarter of the memory filesystem, so that the store keeps the rest."""
    if not config.images or config.image_shared_decodes <= 0:
        return None
    root = memory_root(f"{config.name}-decodes")
    room = memory_room(root)
    budget = memory_budget(root, config.image_shared_decodes, "image_shared_decodes", room * 3 // 4)
    return (root, budget) if budget > 0 else None


def memory_room(root: Path) -> int:
    """What the memory filesystem under `root` can be given, beside SHM_RESERVE."""
    stats = os.statvfs(root.parent)
    return int(stats.f_blocks * stats.f_frsize * 0.9) - SHM_RESERVE


def memory_budget(root: Path, wanted: int, setting: str, reserve: int = 0) -> int:
    """`wanted`, or what the memory filesystem can hold if that is less (a
    container's /dev/shm is 64 MB unless it is given more), with a warning."""
    room = memory_room(root) - reserve
    if room >= wanted:
        return wanted
    log.warning(
        "%s is %d bytes but %s holds only %d for it: using %d (give the container "
        "more with --shm-size, or use --cache-dir)",
        setting,
        wanted,
        root.parent,
        max(room, 0),
        max(room, 0),
    )
    return max(room, 0)


class EdgeServer:
    """An Edge behind its listeners. `start()`, then `stop()` drains and closes.

    Alone (a one-process node) it owns its store and runs the admin listener; as
    a worker it shares the supervisor's store and the supervisor answers admin."""

    def __init__(self, config: EdgeConfig, worker: WorkerContext | None = None) -> None:
        self.config = config
        self.owner: StoreOwner | None = None
        if worker is None:
            root, budget, self.persistent = store_location(config)
            self.owner = StoreOwner(root, budget, config.eviction)
            link: OwnerLink = LocalLink(self.owner)
            generations = self.owner.generations
            self.clients = ClientTable()
        else:
            root, link, generations = worker.root, worker.link, worker.generations
            self.clients = worker.clients
            self.persistent = True
            if worker.decodes is not None and config.workers > 1:
                share_decodes(*worker.decodes)
        self.clients.claim_row()
        alone = self.owner is not None or config.workers <= 1
        self.store = SharedStore(
            root, link, generations, config.hot_memory, self._entry, alone=alone
        )
        self.edge = Edge(config, self.store, self.owner, self.clients)
        self.admin = Admin(self.edge, self.owner) if self.owner is not None else None
        if self.owner is not None:
            add_client_metrics(self.edge.metrics.registry, self.clients)
        self._proxy_runner: web.ServerRunner | None = None
        self.loading: asyncio.Task[None] | None = None
        self._admin_listener: Listener | None = None
        self.port = 0
        self.admin_port = 0

    def _entry(self, meta: Meta, body: bytes) -> Entry:
        return self.edge.entry_from_file(meta, body)

    async def start(self) -> None:
        config = self.config
        if not C_PARSER:
            log.warning(
                "aiohttp runs without its C parser (AIOHTTP_NO_EXTENSIONS, or no compiled "
                "wheel here): requests are read more slowly, and methods are upper-cased"
            )
        if self.owner is not None:
            self.loading = start_loading(self.owner, self.config.store_load_wait)
            self.owner.start()
        self.store.start()
        await self.edge.start()
        metrics = self.edge.metrics
        server = EdgeHTTPServer(
            self.edge.handle,  # type: ignore[arg-type]  # aiohttp types its handler on BaseRequest; the server makes web.Request
            connection_policy(config, self.edge.trusted),
            ConnectionEvents(
                metrics.connections_closed,
                metrics.connections_refused,
                self.edge.count_parse_error,
            ),
            self.clients,
            self.edge.fast_hit if config.fast_path else None,
            self.edge.fast_hit_bytes if config.fast_path else None,
            self.edge.fast_miss if config.fast_path else None,
            keepalive_timeout=config.keepalive_timeout,
            # A body left unread (a GET's, or after an early answer) is read and
            # dropped before the connection closes, for at most this long.
            lingering_time=min(LINGERING_TIME, config.body_timeout),
            auto_decompress=False,
            access_log=None,
        )
        allow_open_files(config.max_connections // max(config.workers, 1) + 1024)
        proxy_runner = web.ServerRunner(server, shutdown_timeout=config.drain_time)
        await proxy_runner.setup()
        host, port = parse_hostport(config.listen)
        # What start-up allocated lives as long as the process: keep the collector
        # from walking it again and again while requests are served.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20000, 20, 20)
        reuse_port = self.admin is None
        site = web.TCPSite(proxy_runner, host, port, backlog=1024, reuse_port=reuse_port)
        await site.start()
        self.port = _bound_port(proxy_runner, port)
        self._proxy_runner = proxy_runner
        if self.admin is not None:
            listener = Listener(self.admin.app())
            await listener.start(config.admin)
            self.admin_port = listener.port
            self._admin_listener = listener
            self.admin.ready = True
            log.info(
                "edge %s listening on http://%s:%d (admin http://%s:%d), %d site(s)",
                config.name,
                host,
                self.port,
                parse_hostport(config.admin)[0],
                self.admin_port,
                len(config.site_list()),
            )

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish within drain_time, then close."""
        if self.admin is not None:
            self.admin.ready = False
        runner, self._proxy_runner = self._proxy_runner, None
        if runner is not None:
            log.info("draining (up to %.0fs)", self.config.drain_time)
            await runner.cleanup()
        await self.edge.close()
        await self.store.close()
        listener, self._admin_listener = self._admin_listener, None
        if listener is not None:
            await listener.stop()
        if self.owner is not None:
            await stop_loading(self.loading)
            self.owner.close(keep_files=self.persistent)
            if not self.persistent:
                shutil.rmtree(self.owner.root, ignore_errors=True)
            self.clients.close()


def connection_policy(config: EdgeConfig, trusted: TrustedPeers) -> ConnectionPolicy:
    return ConnectionPolicy(
        node_name=config.name,
        max_request_line=config.max_request_line,
        max_header_size=config.max_header_size,
        header_timeout=config.header_timeout,
        send_timeout=config.send_timeout,
        max_connections=config.max_connections,
        max_client_connections=config.max_client_connections,
        trusted=trusted,
        ipv4_prefix=config.client_ipv4_prefix,
        ipv6_prefix=config.client_ipv6_prefix,
    )


def allow_open_files(wanted: int) -> None:
    """Raise this process's open-file limit toward `wanted` (as far as the hard
    limit allows), so that max_connections, not the default of 1024, decides."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        log.debug("open files: %d -> %d", soft, target)


def _bound_port(runner: web.BaseRunner, asked: int) -> int:
    if asked:
        return asked
    for address in runner.addresses:
        return int(address[1])
    return asked
