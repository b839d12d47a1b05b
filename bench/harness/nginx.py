"""nginx as the benchmarks run it: the head of its config, and its process."""

from __future__ import annotations

import grp
import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from harness.errors import BenchError
from harness.servers import Server, http_get


def nginx_common(home: Path, workers: int) -> str:
    """The config's lines before `http {`. As root, nginx workers would switch to
    `nobody` and lose access to the temp dir: they run as root's user and group."""
    user = ""
    if os.geteuid() == 0:
        user = f"user {pwd.getpwuid(0).pw_name} {grp.getgrgid(0).gr_name};"
    return f"""\
{user}
worker_processes {workers};
daemon off;
pid {home}/nginx.pid;
error_log {home}/error.log warn;
events {{ worker_connections 4096; }}
"""


def nginx_temp_paths(home: Path) -> str:
    """The `http` block's temp paths, all under `home`/tmp."""
    return "\n".join(
        f"    {kind}_temp_path {home}/tmp/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )


def nginx_server(name: str, nginx: str, home: Path, conf_text: str) -> Server:
    """An nginx with `conf_text` as its config, in `home`, not started yet."""
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    conf = home / "nginx.conf"
    conf.write_text(conf_text)
    return Server(
        name, [nginx, "-p", str(home), "-e", str(home / "error.log"), "-c", str(conf)], home
    )


def origin_requests(port: int) -> int:
    """nginx stub_status 'requests' total on an origin (the stub request included)."""
    _, _, body = http_get(port, "/_stub")
    return int(body.decode().splitlines()[2].split()[2])


def fill_through(
    argv: list[str],
    origin_port: int,
    total: int,
    progress: Callable[[int], None] | None = None,
    poll: float = 0.1,
) -> tuple[float, str]:
    """Run wrk (`argv`, whose script asks for `total` new objects and then repeats
    one) until the nginx origin on `origin_port` has been asked for all of them,
    then stop it (SIGINT). Seconds taken and wrk's output; `progress` is told how
    many the origin has been asked for at every poll. BenchError if wrk ended
    before the origin saw them all."""
    before = origin_requests(origin_port)
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    polls = 0  # each reading of the origin's counter is a request it counts
    try:
        while proc.poll() is None:
            polls += 1
            fetched = origin_requests(origin_port) - before - polls
            if fetched >= total:
                break
            if progress is not None:
                progress(fetched)
            time.sleep(poll)
        seconds = time.monotonic() - started
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    fetched = origin_requests(origin_port) - before - polls - 1
    if fetched < total:
        raise BenchError(f"fill: the origin saw {fetched:,} of {total:,} objects:\n{out}\n{err}")
    return seconds, out
