"""Helpers every test file may use: paths, ports, metrics text, `pinedge edge` as a process."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

TESTS = Path(__file__).parent
REPO = TESTS.parent
PHOTOS = REPO / "origin" / "photos"  # the sample origin's photos
GEOIP = TESTS / "geoip"  # MaxMind's test databases
IMAGES = TESTS / "edge" / "images"  # images the photos do not cover


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` in Prometheus text whose labels include
    `labels` (0 if none)."""
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


@contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections for as long as this lasts: bound and
    never listening, so that no other test's server can take it meanwhile (as one
    may take a port free_port() found free)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])


def free_port(*, udp: bool = False) -> int:
    """A loopback port nothing listens on (bound, then released); with `udp`, one
    free for both TCP and UDP."""
    while True:
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
        if not udp:
            return port
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as datagram:
            try:
                datagram.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


@dataclass
class Node:
    process: asyncio.subprocess.Process
    url: str
    admin: str

    async def metric(self, client: aiohttp.ClientSession, name: str) -> float:
        async with client.get(self.admin + "/metrics") as response:
            text = await response.text()
        values = re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
        return sum(float(v) for v in values)

    def worker_pids(self) -> list[int]:
        """The supervisor's worker processes (not its other helpers)."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                command = (stat.parent / "cmdline").read_bytes()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid and b"spawn_main" in command:
                pids.append(int(stat.parent.name))
        return pids


async def wait_ready(client: aiohttp.ClientSession, node: Node, workers: int = 1) -> None:
    async with asyncio.timeout(20):
        while True:
            assert node.process.returncode is None, "pinedge edge exited"
            try:
                async with client.get(node.admin + "/readyz") as response:
                    text = await response.text()
                    if response.status == 200 and text.startswith(f"ready: {workers} of"):
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)


@asynccontextmanager
async def running_node(
    client: aiohttp.ClientSession, origin: str, *flags: str, workers: int = 1, config: str = ""
) -> AsyncIterator[Node]:
    port, admin = free_port(), free_port()
    args = [
        "edge",
        "--listen",
        f"127.0.0.1:{port}",
        "--admin",
        f"127.0.0.1:{admin}",
        "--origin",
        origin,
        "--name",
        "pinedge-test",
        "--workers",
        str(workers),
        *flags,
    ]
    if config:
        args += ["--config", config]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pinedge",
        *args,
        env={**os.environ, "PINEDGE_CONFIG": ""},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    node = Node(process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}")
    try:
        await wait_ready(client, node, workers)
        yield node
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                await process.wait()
