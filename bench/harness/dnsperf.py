"""dnsperf runs: the command, its summary parsed, and the CPU each side used meanwhile."""

from __future__ import annotations

import re
import resource
import subprocess
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import BenchError
from harness.machine import cpu_seconds, machine_cpu, other_benchmarks


@dataclass
class Perf:
    qps: float
    sent: int
    completed: int
    lost: int
    latency_avg: float  # seconds
    latency_max: float
    latency_sd: float
    rcodes: dict[str, int]
    runtime: float
    server_cpu: float = 0.0  # cores used, averaged over the run
    dnsperf_cpu: float = 0.0
    machine_busy: float = 0.0  # of all cores, in cores
    steal: float = 0.0
    per_process: list[float] = field(default_factory=list)  # cores, server processes that worked
    others: list[str] = field(default_factory=list)  # other benchmarks seen before or after

    @property
    def rest(self) -> float:
        """Cores busy with neither the server nor dnsperf."""
        return self.machine_busy - self.server_cpu - self.dnsperf_cpu

    @property
    def disturbed(self) -> bool:
        return bool(self.others) or self.rest > REST_LIMIT


REST_LIMIT = 0.25  # cores of "rest" above which a run is marked as disturbed


def parse_dnsperf(output: str) -> Perf:
    def number(label: str) -> str:
        match = re.search(rf"^\s*{re.escape(label)}:\s+([\d.]+)", output, re.MULTILINE)
        if not match:
            raise BenchError("dnsperf output not understood:\n" + textwrap.indent(output, "    "))
        return match.group(1)

    latency = re.search(r"Average Latency \(s\):\s+([\d.]+) \(min [\d.]+, max ([\d.]+)\)", output)
    codes = re.search(r"Response codes:\s+(.*)", output)
    rcodes = {}
    if codes:
        for name, count in re.findall(r"(\w+) (\d+) \(", codes.group(1)):
            rcodes[name] = int(count)
    return Perf(
        qps=float(number("Queries per second")),
        sent=int(number("Queries sent")),
        completed=int(number("Queries completed")),
        lost=int(number("Queries lost")),
        latency_avg=float(latency.group(1)) if latency else float("nan"),
        latency_max=float(latency.group(2)) if latency else float("nan"),
        latency_sd=float(number("Latency StdDev (s)")),
        rcodes=rcodes,
        runtime=float(number("Run time (s)")),
    )


@dataclass(frozen=True)
class Load:
    clients: int
    outstanding: int
    threads: int

    def flags(self) -> list[str]:
        return ["-c", str(self.clients), "-q", str(self.outstanding), "-T", str(self.threads)]

    def label(self) -> str:
        return " ".join(self.flags())


def dnsperf_argv(
    dnsperf: str, data: Path, port: int, load: Load, seconds: float, host: str = "127.0.0.1"
) -> list[str]:
    """dnsperf sending the binary query file `data` (`-B`) to host:port for `seconds`."""
    return [
        dnsperf,
        "-B",
        "-d",
        str(data),
        "-s",
        host,
        "-p",
        str(port),
        *load.flags(),
        "-l",
        f"{seconds:g}",
        "-O",
        "suppress=timeout",
    ]


def run_dnsperf(argv: list[str], server_pids: Callable[[], list[int]], seconds: float) -> Perf:
    """One dnsperf run, with the CPU time the server, dnsperf and the machine used."""
    pids = server_pids()
    others = other_benchmarks()
    each0 = {pid: cpu_seconds([pid]) for pid in pids}
    server0, kids0 = cpu_seconds(pids), resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, steal0, _ = machine_cpu()
    start = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    wall = time.monotonic() - start
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy1, steal1, _ = machine_cpu()
    perf = parse_dnsperf(done.stdout)
    perf.server_cpu = (cpu_seconds(pids) - server0) / wall
    perf.dnsperf_cpu = (kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime) / wall
    perf.machine_busy = (busy1 - busy0) / wall
    perf.steal = (steal1 - steal0) / wall
    each = [(cpu_seconds([pid]) - used) / wall for pid, used in each0.items()]
    perf.per_process = sorted((cores for cores in each if cores >= 0.02), reverse=True)
    perf.others = sorted(set(others) | set(other_benchmarks()))
    return perf
