"""nginx as the benchmarks run it: the head of its config, and its process."""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

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
