"""Process and HTTP helpers the benchmarks share: free ports, servers started in
their own session (so they and their children stop together), plain GETs."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import textwrap
import time
from pathlib import Path
from typing import ClassVar

REPO = Path(__file__).resolve().parent.parent


class BenchError(Exception):
    """A set-up step failed: a server did not start, or a response was not what was
    asked (a warmed object that is not a hit, say)."""


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


def wait_http(
    server: Server, port: int, target: str, timeout: float = 30.0, any_status: bool = False
) -> None:
    """Until GET target answers 200 (or anything, with any_status), the server exits,
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
        try:
            status, _, _ = http_get(port, target, timeout=2.0)
            if status == 200 or any_status:
                return
            last = f"status {status}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise BenchError(
        f"{server.name} not ready on port {port} after {timeout:.0f}s ({last}):\n"
        + textwrap.indent(server.output() or "(no output)", "    ")
    )
