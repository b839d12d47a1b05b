"""The upstream client's cost per request: pinedge's own (edge/upstream/client.py) next
to aiohttp's ClientSession set up as the edge had it before issue 14, both against the
same nginx origin on loopback.

    .venv/bin/python bench/upstream.py [--rounds 3] [--requests 20000]
                                       [--concurrency 1,32] [--quick]

What it does:

1. starts nginx, one worker, pinned to CPU 0, answering every path with one 1 KiB
   file and `Cache-Control: public, max-age=3600` (a miss's fill, as issue 14 sets it);
2. per round and concurrency, runs each client in a process of its own on uvloop,
   pinned to CPU 1 (which goes first alternates): 500 requests to warm up, then
   `--requests` GETs, each to a new URL, with the fields an edge sends, every body
   read through `content.iter_any()` and released;
3. prints the client process's CPU time per request (what a miss costs the worker),
   the wall time per request, per round and as medians, and their ratio.

Nothing is asserted. Other tenants of the machine move the wall time more than the
CPU time; the report says what else was running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import session
from harness.machine import REPO, ensure_tool, neighbours
from harness.nginx import nginx_common, nginx_temp_paths
from harness.servers import Server, free_ports, wait_http
from harness.stats import median

NGINX = "/usr/sbin/nginx"
CLIENTS = ("pinedge", "aiohttp")
WARM_UP = 500


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=20000, help="per client per round")
    parser.add_argument("--concurrency", default="1,32", help="requests in flight, a list")
    parser.add_argument("--quick", action="store_true", help="1 round of 2000: a smoke run")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument(
        "--child", nargs=4, metavar=("CLIENT", "URL", "N", "CONC"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.requests = 1, 2000
    args.levels = [int(level) for level in args.concurrency.split(",")]
    return args


# ---------------------------------------------------------------------------- the client side


def edge_fields(host: str) -> Any:
    """The fields an edge sends upstream for a plain browser GET."""
    from multidict import CIMultiDict

    return CIMultiDict(
        [
            ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) bench"),
            ("Accept", "*/*"),
            ("Forwarded", "for=127.0.0.1;host=pins.example.com;proto=http"),
            ("X-Forwarded-For", "127.0.0.1"),
            ("X-Forwarded-Host", "pins.example.com"),
            ("X-Forwarded-Proto", "http"),
            ("Via", "1.1 pinedge-bench"),
            ("Host", host),
        ]
    )


def aiohttp_as_before() -> Any:
    """aiohttp's ClientSession with the settings edge/upstream/client.py had until issue 14."""
    import aiohttp

    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=256, ttl_dns_cache=60),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=300, connect=5, sock_read=30),
    )


async def measure(client: str, url: str, count: int, concurrency: int) -> dict[str, float]:
    from yarl import URL

    from pinedge.edge.upstream.client import Timeouts, Upstream

    host = url.removeprefix("http://")
    numbers = iter(range(10**9))
    received = 0
    if client == "pinedge":
        upstream = Upstream(Timeouts(connect=5, first_byte=30, total=300))

        async def one() -> None:
            nonlocal received
            response, _, _ = await upstream.request(
                "GET", f"{url}/miss/{next(numbers)}", edge_fields(host)
            )
            async for chunk in response.content.iter_any():
                received += len(chunk)
            response.release()

        close = upstream.close
    else:
        session = aiohttp_as_before()

        async def one() -> None:
            nonlocal received
            response = await session.request(
                "GET",
                URL(f"{url}/miss/{next(numbers)}", encoded=True),
                headers=edge_fields(host),
                allow_redirects=False,
            )
            async for chunk in response.content.iter_any():
                received += len(chunk)
            response.release()

        close = session.close

    async def worker(n: int) -> None:
        for _ in range(n):
            await one()

    await asyncio.gather(*(worker(WARM_UP // concurrency + 1) for _ in range(concurrency)))
    each = count // concurrency
    received = 0
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(each) for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await close()
    done = each * concurrency
    return {
        "requests": done,
        "bytes": received,
        "cpu_us": 1e6 * cpu / done,
        "wall_us": 1e6 * wall / done,
    }


def child(args: argparse.Namespace) -> int:
    import uvloop

    client, url, count, concurrency = args.child
    result = uvloop.run(measure(client, url, int(count), int(concurrency)))
    print(json.dumps(result))
    return 0


def pinned(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if (os.cpu_count() or 1) > 1 else []


def run_client(client: str, url: str, count: int, concurrency: int) -> dict[str, float]:
    argv = [*pinned(1), sys.executable, __file__, "--child", client, url, str(count)]
    done = subprocess.run(
        [*argv, str(concurrency)], capture_output=True, text=True, cwd=REPO, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{client} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- the origin


def origin_conf(home: Path, port: int) -> str:
    return f"""\
{nginx_common(home, 1)}http {{
    access_log off;
{nginx_temp_paths(home)}
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{port};
        root {home};
        location / {{
            try_files /1k =404;
            default_type application/octet-stream;
            add_header Cache-Control "public, max-age=3600";
        }}
    }}
}}
"""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args)
    rows: list[dict[str, Any]] = []

    def body(tmp: Path) -> None:
        nginx = ensure_tool(NGINX, "nginx")
        (tmp / "tmp").mkdir()
        (tmp / "1k").write_bytes(os.urandom(1024))
        (port,) = free_ports(1)
        (tmp / "nginx.conf").write_text(origin_conf(tmp, port))
        origin = Server(
            "nginx-origin",
            [
                *pinned(0),
                nginx,
                "-p",
                str(tmp),
                "-e",
                str(tmp / "error.log"),
                "-c",
                str(tmp / "nginx.conf"),
            ],
            tmp,
        )
        origin.start()
        wait_http(origin, port, "/warm", timeout=15)
        url = f"http://127.0.0.1:{port}"
        print(
            f"upstream client benchmark: {args.rounds} round(s) of {args.requests} GETs "
            f"(1 KiB bodies) per client and concurrency; nginx on CPU 0, clients on CPU 1",
            flush=True,
        )
        print(neighbours(), flush=True)
        for level in args.levels:
            for round_ in range(args.rounds):
                order = CLIENTS if round_ % 2 == 0 else CLIENTS[::-1]
                for client in order:
                    result = run_client(client, url, args.requests, level)
                    rows.append(
                        {"client": client, "concurrency": level, "round": round_ + 1, **result}
                    )
                    print(
                        f"  {client:8} concurrency {level:3} round {round_ + 1}: "
                        f"{result['cpu_us']:6.1f} us CPU, "
                        f"{result['wall_us']:6.1f} us wall per request",
                        flush=True,
                    )
        print()
        print("| concurrency | client | CPU us/request (median) | wall us/request (median) |")
        print("|---:|---|---:|---:|")
        for level in args.levels:
            cpu = {}
            for client in CLIENTS:
                mine = [
                    row for row in rows if row["client"] == client and row["concurrency"] == level
                ]
                cpu[client] = median(row["cpu_us"] for row in mine)
                wall = median(row["wall_us"] for row in mine)
                print(f"| {level} | {client} | {cpu[client]:.1f} | {wall:.1f} |")
            print(f"| {level} | aiohttp / pinedge | {cpu['aiohttp'] / cpu['pinedge']:.2f}x | |")
        print(neighbours(), flush=True)

    return session.run(body, prefix="pinedge-upstream-", keep=args.keep, failed="bench/upstream.py")


if __name__ == "__main__":
    sys.exit(main())
