"""The machine a benchmark runs on: processes from /proc, CPU shares, other tenants, tools."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness.errors import BenchError
from harness.report import note

KiB = 1024
TICK = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parent.parent.parent


# ---------------------------------------------------------------------------- processes


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after "pid (comm)" (comm may hold spaces and
    parentheses): [state, ppid, ...]; None when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """Every live process under pid, found through the parent pid in /proc/*/stat."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = proc_stat(int(entry))
            if fields is not None:
                parents.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for kid in parents.get(todo.pop(), []):
            found.append(kid)
            todo.append(kid)
    return sorted(found)


def children(pid: int) -> list[int]:
    parents = {p: proc_stat(p) for p in descendants(pid)}
    return sorted(p for p, fields in parents.items() if fields and int(fields[1]) == pid)


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def worker_pids(supervisor: int) -> list[int]:
    """A pinedge supervisor's workers (multiprocessing children: `spawn_main`)."""
    return [p for p in descendants(supervisor) if "spawn_main" in cmdline(p)]


def proc_ticks(pid: int) -> int:
    """utime + stime + cutime + cstime of a process (its reaped children included)."""
    fields = proc_stat(pid)
    return sum(int(v) for v in fields[11:15]) if fields else 0


def user_system_ticks(pid: int) -> tuple[int, int]:
    """A process's user and system time (utime, stime) in clock ticks; (0, 0) once
    it is gone."""
    fields = proc_stat(pid)
    return (int(fields[11]), int(fields[12])) if fields is not None else (0, 0)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (all their threads)."""
    total = 0
    for pid in pids:
        fields = proc_stat(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total / TICK


def proc_memory(pid: int) -> dict[str, int]:
    """VmHWM (peak RSS), VmRSS, RssAnon, RssFile, RssShmem of a process, in bytes."""
    wanted = ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem")
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in wanted:
            out[name] = int(value.split()[0]) * KiB  # the kernel reports kB (KiB)
    return out


def rss_mib(pid: int) -> float:
    rss = proc_memory(pid).get("VmRSS")
    return rss / (1024 * KiB) if rss is not None else float("nan")


# ---------------------------------------------------------------------------- CPU shares


def machine_cpu() -> tuple[float, float, float]:
    """(busy, steal, all) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
    busy = user + nice + system + irq + softirq
    return busy / TICK, steal / TICK, (busy + idle + iowait + steal) / TICK


@dataclass
class CpuSample:
    at: float
    busy: int  # ticks all CPUs spent not idle
    ours: int  # ticks of this script and everything it started

    @classmethod
    def now(cls) -> CpuSample:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        busy = sum(values[:8]) - idle
        me = os.getpid()
        ours = proc_ticks(me) + sum(proc_ticks(p) for p in descendants(me))
        return cls(time.monotonic(), busy, ours)


def others_share(start: CpuSample, end: CpuSample) -> float:
    """The share of the machine's CPUs that processes this script did not start used
    between two samples (another tenant, another benchmark)."""
    span = (end.at - start.at) * TICK * (os.cpu_count() or 1)
    others = (end.busy - start.busy) - (end.ours - start.ours)
    return max(0.0, others / span) if span > 0 else float("nan")


QUIET_SHARE = 0.10  # others' CPU share below which the machine counts as quiet


def wait_for_quiet(limit: float) -> float:
    """Before a measurement: wait, up to `limit` seconds, for a one-second window in
    which processes this script did not start use under QUIET_SHARE of the CPUs; the
    last window's share."""
    deadline = time.monotonic() + limit
    while True:
        start = CpuSample.now()
        time.sleep(1.0)
        share = others_share(start, CpuSample.now())
        if share < QUIET_SHARE or time.monotonic() >= deadline:
            if share >= QUIET_SHARE:
                note(f"the machine is busy: others use {share:.0%} of the CPUs; measuring anyway")
            return share


# ---------------------------------------------------------------------------- neighbours


def other_benchmarks() -> list[str]:
    """Command lines of other bench/*.py runs on this machine (not this one, nor
    anything it started)."""
    mine = {os.getpid(), *descendants(os.getpid())}
    me = Path(sys.argv[0]).name
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in mine:
            continue
        text = cmdline(int(entry))
        if re.search(r"bench/\w+\.py", text) and f"bench/{me}" not in text:
            found.append(f"pid {entry}: {text[:120]}")
    return found


def busy_processes(seconds: float = 3.0, floor: float = 0.05) -> list[str]:
    """Processes other than ours that used more than `floor` of a core over `seconds`."""

    def sample() -> dict[int, tuple[float, str]]:
        out = {}
        for entry in os.listdir("/proc"):
            fields = proc_stat(int(entry)) if entry.isdigit() else None
            if fields is not None:
                with contextlib.suppress(OSError):
                    comm = Path(f"/proc/{entry}/comm").read_text().strip()
                    out[int(entry)] = ((int(fields[11]) + int(fields[12])) / TICK, comm)
        return out

    before = sample()
    time.sleep(seconds)
    after = sample()
    mine = {os.getpid(), *descendants(os.getpid())}
    rows = []
    for pid, (cpu, comm) in after.items():
        used = (cpu - before.get(pid, (cpu, ""))[0]) / seconds
        if pid not in mine and used > floor:
            rows.append(f"{comm} (pid {pid}) {used:.0%} of a core")
    return rows


def loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def neighbours() -> str:
    """One sentence on what else this machine is doing: load average, other
    benchmarks, busy processes in a 3 s sample."""
    others, busy = other_benchmarks(), busy_processes()
    return (
        f"{os.cpu_count()} CPUs seen, load average {' '.join(loadavg())}; "
        + ("other benchmarks running: " + "; ".join(others) if others else "no other benchmark")
        + "; processes not ours over 5% of a core in a 3 s sample: "
        + (", ".join(busy) if busy else "none")
    )


@dataclass
class Machine:
    """What a report says of the machine and the software it ran."""

    cpus: int | None
    cpu: str
    loadavg: list[str]
    python: str
    pinedge: str
    packages: dict[str, str]  # Debian package -> version
    other_benchmarks: list[str]
    busy: list[str]


def machine_facts(*packages: str) -> Machine:
    """The CPU model, load, Python, pinedge's version and commit, the versions of
    `packages`, other benchmarks and busy processes (a 3 s sample)."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    version = subprocess.run([*pinedge_argv(), "--version"], capture_output=True, text=True)
    return Machine(
        cpus=os.cpu_count(),
        cpu=names[0] if names else "?",
        loadavg=loadavg(),
        python=sys.version.split()[0],
        pinedge=f"{version.stdout.strip()} (git {git('rev-parse', '--short', 'HEAD')}, "
        "uncommitted changes included)",
        packages={name: package_version(name) for name in packages},
        other_benchmarks=other_benchmarks(),
        busy=busy_processes(),
    )


def pinedge_argv() -> list[str]:
    """The project's `pinedge` command: the venv's, else one on PATH, else the module."""
    exe = REPO / ".venv" / "bin" / "pinedge"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("pinedge")
    return [found] if found else [sys.executable, "-m", "pinedge"]


def package_version(package: str) -> str:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True
    )
    return done.stdout.strip() or "?"


# ---------------------------------------------------------------------------- code and tools


def git(*argv: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *argv], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def code_state() -> str:
    """The last commit that changed pinedge (anything outside bench/), and which files
    outside bench/ differ from HEAD: a commit to bench/ alone does not change the node."""
    commit = git("log", "-1", "--format=%h", "--", ".", ":(exclude)bench") or "?"
    dirty = git("diff", "--name-only", "HEAD", "--", ".", ":(exclude)bench").split()
    return commit + (f" with uncommitted changes to {', '.join(dirty)}" if dirty else "")


def which(name: str) -> str | None:
    """An executable path as given, on PATH, or in /usr/sbin (off a plain user's PATH)."""
    if os.path.isabs(name):
        return name if os.access(name, os.X_OK) else None
    sbin = f"/usr/sbin/{name}"
    return shutil.which(name) or (sbin if os.access(sbin, os.X_OK) else None)


def ensure_tool(name: str, package: str) -> str:
    """The tool's path, after `apt-get install -y PACKAGE` if it is missing."""
    found = which(name)
    if found:
        return found
    print(f"{name} not found; installing Debian package {package} ...", flush=True)
    subprocess.run(["apt-get", "install", "-y", package], check=False)
    found = which(name)
    if not found:
        raise BenchError(f"{name} is missing and `apt-get install -y {package}` failed")
    return found
