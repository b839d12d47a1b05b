"""Servers a benchmark starts (each in its own session), pinedge nodes and origins, GETs."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from harness.errors import BenchError
from harness.machine import (
    REPO,
    code_state,
    descendants,
    pinedge_argv,
    proc_ticks,
    rss_mib,
    worker_pids,
)

NODE_NAME = "pinedge-bench"


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out on loopback; all held open together so they differ."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


class Server:
    """A process started in its own session, so that it and its children stop together."""

    running: ClassVar[list[Server]] = []

    def __init__(
        self, name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = workdir / f"{name}.log"
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env,
                cwd=REPO,
            )
        Server.running.append(self)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def output(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:].strip()
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever outlived the parent
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self in Server.running:
            Server.running.remove(self)

    @classmethod
    def stop_all(cls) -> None:
        for server in reversed(list(cls.running)):
            server.stop()


def http_get(
    port: int, target: str, headers: dict[str, str] | None = None, timeout: float = 30.0
) -> tuple[int, dict[str, str], bytes]:
    """One GET on a new connection (so that with SO_REUSEPORT it may land on any worker)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", target, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def wait_ready(server: Server, check: Callable[[], str], what: str, timeout: float) -> None:
    """Until `check()` returns "" (ready; else it says why not yet), the server exits,
    or time runs out."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        code = server.exited()
        if code is not None:
            raise BenchError(
                f"{server.name} exited with status {code} while starting:\n"
                + textwrap.indent(server.output() or "(no output)", "    ")
            )
        last = check()
        if not last:
            return
        time.sleep(0.1)
    raise BenchError(
        f"{server.name} not ready {what} after {timeout:.0f}s ({last}):\n"
        + textwrap.indent(server.output() or "(no output)", "    ")
    )


def wait_http(
    server: Server, port: int, target: str, timeout: float = 30.0, any_status: bool = False
) -> None:
    """Until GET target answers 200 (or anything, with any_status), the server exits,
    or time runs out."""

    def check() -> str:
        try:
            status, _, _ = http_get(port, target, timeout=2.0)
        except OSError as exc:
            return str(exc)
        return "" if status == 200 or any_status else f"status {status}"

    wait_ready(server, check, f"on port {port}", timeout)


# ---------------------------------------------------------------------------- pinedge


def pinedge_env(**extra: str) -> dict[str, str]:
    """This environment without a config file (every setting from the command line)."""
    return dict(os.environ, PINEDGE_CONFIG="", **extra)


@dataclass
class Edge:
    """A `pinedge edge` node: its process, its listener and admin ports, and the code
    (commit and changed files) it started from."""

    server: Server
    port: int
    admin: int
    code: str = ""

    def cpu_ticks(self) -> tuple[int, int]:
        """CPU ticks so far of the supervisor (the store owner) and of its workers."""
        workers = descendants(self.server.pid)
        return proc_ticks(self.server.pid), sum(proc_ticks(p) for p in workers)

    def rss_mib(self) -> tuple[float, list[float]]:
        """Resident MiB of the supervisor and of each worker (shared pages in each)."""
        return rss_mib(self.server.pid), [rss_mib(p) for p in worker_pids(self.server.pid)]


def start_edge(
    tmp: Path,
    label: str,
    origin_port: int,
    *,
    cache_mem: str,
    workers: int | None = None,
    name: str = NODE_NAME,
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
    ready_timeout: float | None = 60.0,
) -> Edge:
    """`pinedge edge` on two free ports in front of `origin_port`, logging to
    tmp/LABEL.log; waits for `/readyz` on its admin port unless `ready_timeout` is None.
    `workers` None leaves the flag out (the config's default: one worker, supervised)."""
    port, admin = free_ports(2)
    argv = [*pinedge_argv(), "edge", "--listen", f"127.0.0.1:{port}"]
    argv += ["--admin", f"127.0.0.1:{admin}", "--origin", f"http://127.0.0.1:{origin_port}"]
    argv += ["--name", name, "--cache-mem", cache_mem]
    if workers is not None:
        argv += ["--workers", str(workers)]
    argv += ["--log-level", "WARNING", *extra]
    server = Server(label, argv, tmp, env or pinedge_env()).start()
    if ready_timeout is not None:
        wait_http(server, admin, "/readyz", timeout=ready_timeout)
    return Edge(server, port, admin, code_state())


def start_sample_origin(tmp: Path, *extra: str) -> tuple[Server, int]:
    """`pinedge origin` (the sample site: photos, pages, API) on a free port, its
    control listener on another."""
    port, control = free_ports(2)
    argv = [*pinedge_argv(), "origin", "--listen", f"127.0.0.1:{port}"]
    argv += ["--admin", f"127.0.0.1:{control}", "--log-level", "WARNING", *extra]
    origin = Server("origin", argv, tmp, pinedge_env()).start()
    wait_http(origin, port, "/img/horse.png", timeout=30)
    return origin, port


def start_script_origin(
    tmp: Path, name: str, script: str, extra: Sequence[str], ready: str, timeout: float = 60.0
) -> tuple[Server, int]:
    """A benchmark's own origin: `python SCRIPT --serve-origin PORT EXTRA...`, ready
    once GET `ready` answers 200."""
    (port,) = free_ports(1)
    argv = [sys.executable, str(Path(script).resolve()), "--serve-origin", str(port), *extra]
    origin = Server(name, argv, tmp).start()
    wait_http(origin, port, ready, timeout=timeout)
    return origin, port


def cache_status(headers: dict[str, str]) -> list[str]:
    """This node's entry of Cache-Status (RFC 9211: the last one), as its parameters."""
    entry = headers.get("cache-status", "").split(",")[-1]
    return [p.strip() for p in entry.split(";")[1:]]


def metric(admin: int, name: str) -> float:
    """The sum of a metric's samples on the node's /metrics."""
    _, _, body = http_get(admin, "/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def requests_by_cache(admin: int) -> dict[str, float]:
    """A node's requests so far by the `cache` label of pinedge_requests_total."""
    _, _, body = http_get(admin, "/metrics")
    counts: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line.startswith("pinedge_requests_total{"):
            found = re.search(r'cache="([^"]*)"', line)
            label = found.group(1) if found else "?"
            counts[label] = counts.get(label, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def settled(read: Callable[[], float], want: float, timeout: float, poll: float = 0.2) -> float:
    """`read()` once it reaches `want`, stops moving for 3 s, or `timeout` s pass."""
    deadline = time.monotonic() + timeout
    last, since = -1.0, time.monotonic()
    while True:
        count = read()
        if count >= want or time.monotonic() > deadline:
            return count
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since > 3:
            return count
        time.sleep(poll)
