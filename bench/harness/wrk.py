"""wrk runs: the command, its summary parsed, and the latency tail a Lua `done()` prints."""

from __future__ import annotations

import re
import shlex
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

from harness.errors import BenchError

UNIT_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}
TIME_RE = re.compile(r"^([\d.]+)(us|ms|s|m|h)$")

# A script for `wrk -s`: the tail of the latency distribution, which --latency does not print.
TAIL_LUA = """\
-- bench/harness/wrk.py: the tail of the latency distribution, which --latency does not print
function done(summary, latency, requests)
  io.write(string.format("TAIL p99.9=%d max=%d\\n", latency:percentile(99.9), latency.max))
end
"""


# What Chromium 120 sends for an <img> beside wrk's Host (12 fields, about 500
# bytes): the request a CDN's hit path reads most, where wrk alone sends 40 bytes.
BROWSER_FIELDS = (
    "Connection: keep-alive",
    'sec-ch-ua: "Chromium";v="120", "Not?A_Brand";v="8"',
    "sec-ch-ua-mobile: ?0",
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    'sec-ch-ua-platform: "Linux"',
    "Accept: image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",
    "Sec-Fetch-Site: same-origin",
    "Sec-Fetch-Mode: no-cors",
    "Sec-Fetch-Dest: image",
    "Referer: http://127.0.0.1/gallery.html",
    "Accept-Encoding: gzip, deflate, br",
    "Accept-Language: en-US,en;q=0.9",
)


def parse_time_us(text: str) -> float:
    match = TIME_RE.match(text)
    if not match:
        raise ValueError(f"wrk time not understood: {text!r}")
    return float(match.group(1)) * UNIT_US[match.group(2)]


@dataclass
class WrkResult:
    rps: float
    latency_us: dict[str, float]  # "50", "75", "90", "99" -> microseconds
    requests: int
    errors: str = ""  # socket errors / non-2xx, as wrk printed them
    origin_requests: int = 0  # requests that reached the origin during the run


def parse_wrk(output: str) -> WrkResult:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in", output, re.MULTILINE)
    if not rps or not total:
        raise BenchError("wrk output not understood:\n" + textwrap.indent(output, "    "))
    latency = {
        pct: parse_time_us(value)
        for pct, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", output, re.MULTILINE)
    }
    errors = []
    sock = re.search(r"Socket errors: (.*)", output)
    if sock:
        errors.append("socket errors: " + sock.group(1).strip())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        errors.append(f"non-2xx/3xx: {non2xx.group(1)}")
    return WrkResult(float(rps.group(1)), latency, int(total.group(1)), "; ".join(errors))


def run_wrk(
    wrk: str,
    url: str,
    *,
    connections: int,
    duration: float,
    threads: int = 1,
    script: Path | None = None,
    fields: tuple[str, ...] = (),
) -> tuple[WrkResult, str]:
    """`wrk -tT -cC -dDs --latency [-H FIELD]... [-s SCRIPT] URL`: the parsed summary
    and the raw output. A script's wrk.format() sends the `fields` too."""
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency"]
    for field in fields:
        argv += ["-H", field]
    if script is not None:
        argv += ["-s", str(script)]
    argv.append(url)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    if done.returncode != 0:
        raise BenchError(f"{shlex.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    return parse_wrk(done.stdout), done.stdout


def tail_us(output: str) -> dict[str, float]:
    """p99.9 and max latency in microseconds, from a run with TAIL_LUA; {} without."""
    tail = re.search(r"TAIL p99.9=(\d+) max=(\d+)", output)
    return {"99.9": float(tail.group(1)), "max": float(tail.group(2))} if tail else {}


def wrk_version(wrk: str) -> str:
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    found = re.search(r"wrk (\S+)", done.stdout + done.stderr)
    return found.group(1) if found else "?"
