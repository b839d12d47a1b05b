"""Where a miss's CPU goes: user and system time per miss of nginx `proxy_cache` and
pinedge, beside two floors that do almost nothing but a miss's system calls.

    .venv/bin/python bench/missfloor.py [--rounds 3] [--duration 8] [--quick]

Every request is a new URL (1 KiB, `max-age=3600`: misses that are stored), sent
by wrk (-t1 -c50) on CPU 1 to one proxy at a time on CPU 0, against the nginx
origin of `misspath.py` (also on CPU 1). The four proxies, started fresh for each
run, in an order that rotates from round to round:

- nginx: `proxy_cache` as `misspath.py` configures it (one worker);
- pinedge: `edge --workers 1 --cache-mem 2GiB` (its supervisor and worker counted);
- relay: this script as a bare uvloop relay: one upstream connection per client
  connection, each response passed on as it comes once its Content-Length is in;
- relay+file: the relay writing each response to a new file in /dev/shm
  (open, write, close), as a store of one file per object would.

The floors say what a miss costs a Python process that does nothing else: what
remains above them in pinedge's figure is the work of its miss path. CPU is read
from /proc (user and system ticks of every process of the proxy) over the wrk run.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import misspath
import uvloop
from harness import session
from harness.errors import BenchError
from harness.machine import TICK, code_state, neighbours, user_system_ticks
from harness.nginx import origin_requests
from harness.report import Report, run_line
from harness.servers import Server, free_ports, wait_http
from harness.stats import median

KINDS = ("nginx", "pinedge", "relay", "relay+file")


# ---------------------------------------------------------------------------- the relay


class Upstream(asyncio.Protocol):
    """The relay's connection to the origin for one client connection."""

    def __init__(self, client: asyncio.Transport, store: str) -> None:
        self.client = client
        self.store = store
        self.buffer = b""
        self.end = -1  # where the response in the buffer ends, once its head is in
        self.stored = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.end < 0:
                head_end = self.buffer.find(b"\r\n\r\n")
                if head_end < 0:
                    return
                head = self.buffer[:head_end].lower()
                at = head.find(b"\r\ncontent-length:")
                if at < 0:
                    raise BenchError("the relay takes only responses with a Content-Length")
                line_end = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : line_end if line_end > 0 else None])
                self.end = head_end + 4 + length
            if len(self.buffer) < self.end:
                return
            response, self.buffer = self.buffer[: self.end], self.buffer[self.end :]
            self.end = -1
            if self.store:
                self.stored += 1
                fd = os.open(f"{self.store}/{id(self)}-{self.stored}", os.O_WRONLY | os.O_CREAT)
                try:
                    os.write(fd, response)
                finally:
                    os.close(fd)
            self.client.write(response)


class Client(asyncio.Protocol):
    """A client connection of the relay: its requests go upstream as they come."""

    def __init__(self, upstream_port: int, store: str) -> None:
        self.upstream_port = upstream_port
        self.store = store
        self.upstream: asyncio.Transport | None = None
        self.waiting: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        self.connecting = loop.create_task(self.connect(cast("asyncio.Transport", transport)))

    async def connect(self, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        upstream, _ = await loop.create_connection(
            lambda: Upstream(transport, self.store), "127.0.0.1", self.upstream_port
        )
        self.upstream = upstream
        for data in self.waiting:
            upstream.write(data)
        self.waiting = []

    def data_received(self, data: bytes) -> None:
        if self.upstream is None:
            self.waiting.append(data)
        else:
            self.upstream.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


def serve_relay(upstream_port: int, port: int, store: str) -> int:
    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: Client(upstream_port, store), "127.0.0.1", port, backlog=1024
        )
        await server.serve_forever()

    uvloop.run(serve())
    return 0


# ---------------------------------------------------------------------------- the runs


@dataclass
class Run:
    round: int
    kind: str
    misses_per_s: float
    requests: int
    origin_requests: int
    errors: str
    user_us: float  # CPU per request, all the proxy's processes
    system_us: float

    @property
    def total_us(self) -> float:
        return self.user_us + self.system_us


def ticks(pids: list[int]) -> tuple[int, int]:
    """The user and system ticks of these processes, added up."""
    each = [user_system_ticks(pid) for pid in pids]
    return sum(user for user, _ in each), sum(system for _, system in each)


def start_relay(lab: misspath.Lab, tmp: Path, name: str, store: str) -> tuple[Server, int]:
    (port,) = free_ports(1)
    argv = ["taskset", "-c", str(misspath.SERVER_CPU), sys.executable, __file__]
    argv += ["--serve-relay", str(lab.origin_port), str(port), "--store", store]
    server = Server(name, argv, tmp)
    server.start()
    wait_http(server, port, "/o/1k/relay-check", timeout=15)
    return server, port


def one_run(lab: misspath.Lab, tmp: Path, kind: str, index: int) -> Run:
    name = f"{kind.replace('+', '-')}-{index}"
    if kind in ("nginx", "pinedge"):
        proxy = lab.start(kind)
        server, port, pids = proxy.server, proxy.port, list(proxy.processes().values())
        stop = proxy.stop
    else:
        store = ""
        if kind == "relay+file":
            store = str(lab.shm / name)
            os.makedirs(store)
        server, port = start_relay(lab, tmp, name, store)
        pids, stop = [server.pid], server.stop
    try:
        script = misspath.lua(tmp, "miss", misspath.MISS_LUA)
        time.sleep(lab.args.pause)
        before_origin = origin_requests(lab.origin_port)
        user, system = ticks(pids)
        result, _ = lab.load(misspath.Proxy(kind, server, port), script, lab.args.duration)
        user_after, system_after = ticks(pids)
        fetched = origin_requests(lab.origin_port) - before_origin - 1
        if server.exited() is not None:
            raise BenchError(f"{name} exited during the run:\n{server.output()}")
    finally:
        stop()
    per = 1e6 / TICK / max(result.requests, 1)
    return Run(
        index,
        kind,
        result.rps,
        result.requests,
        fetched,
        str(result.errors),
        (user_after - user) * per,
        (system_after - system) * per,
    )


def report_runs(report: Report, runs: list[Run], kinds: tuple[str, ...]) -> None:
    rows = []
    nginx = median(r.misses_per_s for r in runs if r.kind == "nginx")
    for kind in kinds:
        mine = [r for r in runs if r.kind == kind]
        rate = median(r.misses_per_s for r in mine)
        user = median(r.user_us for r in mine)
        system = median(r.system_us for r in mine)
        rows.append(
            [
                kind,
                f"{rate:,.0f}",
                f"{rate / nginx:.2f}x" if nginx == nginx else "-",  # NaN: nginx not run
                f"{user:,.0f}",
                f"{system:,.0f}",
                f"{user + system:,.0f}",
            ]
        )
    report.table(
        "proxy | misses/s | / nginx | user µs per miss | system µs per miss | CPU µs per miss",
        rows,
        "lrrrrr",
    )
    report.add("Medians of the rounds. Each run:", "")
    report.table(
        "round | proxy | misses/s | origin requests / requests | user µs | system µs | wrk errors",
        [
            [
                str(r.round + 1),
                r.kind,
                f"{r.misses_per_s:,.0f}",
                f"{r.origin_requests / max(r.requests, 1):.3f}",
                f"{r.user_us:,.0f}",
                f"{r.system_us:,.0f}",
                r.errors or "none",
            ]
            for r in runs
        ],
        "llrrrrl",
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--rounds", type=int, default=0, help="rounds of the four runs (3; --quick 1)")
    add("--duration", type=float, default=0, help="seconds per wrk run (8; --quick 3)")
    add("--connections", type=int, default=50, help="wrk connections (50)")
    add("--proxies", default=",".join(KINDS), help=f"of {','.join(KINDS)} (all)")
    add("--quick", action="store_true", help="one short round: proves the set-up works")
    add("--md", metavar="FILE", help="also write the report to FILE")
    add("--json", metavar="FILE", help="every run as JSON to FILE")
    add("--keep", action="store_true", help="keep the temp dir")
    add("--serve-relay", nargs=2, type=int, metavar=("UPSTREAM", "PORT"), help=argparse.SUPPRESS)
    add("--store", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (3 if args.quick else 8)
    args.kinds = tuple(kind for kind in KINDS if kind in args.proxies.split(","))
    unknown = set(args.proxies.split(",")) - set(KINDS)
    if unknown or not args.kinds:
        parser.error(f"--proxies: of {', '.join(KINDS)}, not {args.proxies}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_relay:
        upstream_port, port = args.serve_relay
        return serve_relay(upstream_port, port, args.store)
    report = Report()
    runs: list[Run] = []
    lab_args = misspath.parse_args(
        ["--quick", "--duration", str(args.duration), "--connections", str(args.connections)]
    )

    def body(tmp: Path) -> None:
        shm = Path(tempfile_dir())
        try:
            lab = misspath.Lab(lab_args, tmp, shm)
            report.add(
                run_line("missfloor.py", argv)
                + ": "
                + f"{args.rounds} round(s), wrk -t1 -c{args.connections} for {args.duration:g} s "
                f"per run, proxies on CPU {misspath.SERVER_CPU}, wrk and the origin on CPU "
                f"{misspath.LOAD_CPU}; pinedge at {code_state()}. {neighbours()}",
                "",
            )
            lab.start_origin()
            for index in range(args.rounds):
                kinds = args.kinds
                order = kinds[index % len(kinds) :] + kinds[: index % len(kinds)]
                for kind in order:
                    run = one_run(lab, tmp, kind, index)
                    runs.append(run)
                    print(
                        f"round {index + 1} {kind}: {run.misses_per_s:,.0f} misses/s, "
                        f"user {run.user_us:.0f} µs, system {run.system_us:.0f} µs per miss",
                        file=sys.stderr,
                        flush=True,
                    )
            report_runs(report, runs, args.kinds)
        finally:
            shutil.rmtree(shm, ignore_errors=True)

    return session.run(
        body,
        prefix="missfloor-",
        keep=args.keep,
        report=report,
        md=args.md,
        json_path=args.json,
        results=lambda: [asdict(run) | {"total_us": run.total_us} for run in runs],
    )


def tempfile_dir() -> str:
    """A directory of our own in /dev/shm (tmpfs, as pinedge's store and nginx's cache)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    return tempfile.mkdtemp(prefix="missfloor-", dir=base)


if __name__ == "__main__":
    raise SystemExit(main())
