"""`pinedge edge`: flags, config file and start-up."""

from __future__ import annotations

import argparse
import sys

from pinedge.core.config import ConfigError, load
from pinedge.core.runner import EXIT_USAGE
from pinedge.edge.node.config import EdgeConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--listen", metavar="HOST:PORT", help="client listener (default 127.0.0.1:8080)")
    add("--admin", metavar="HOST:PORT", help="admin listener (default 127.0.0.1:8081)")
    add("--origin", metavar="URL", help="origin of the single site")
    add(
        "--host",
        dest="hosts",
        action="append",
        metavar="NAME",
        help="another host name the single site answers for (repeatable)",
    )
    add("--shield", action="append", metavar="URL", help="a shield node (repeatable)")
    add("--role", choices=("edge", "shield"), help="edge (default) or shield")
    add("--workers", type=int, metavar="N", help="worker processes (default 1)")
    add("--cache-mem", metavar="SIZE", help="memory budget, e.g. 512MiB")
    add("--cache-dir", metavar="DIR", help="on-disk store")
    add("--cache-disk", metavar="SIZE", help="disk budget, e.g. 10GiB")
    add("--name", help="node name in Cache-Status and Via (default pinedge-<hostname>)")
    add("--control", metavar="URL", help="control plane URL")
    add(
        "--grace",
        metavar="DURATION",
        help="serve stale this long when the origin fails (default 0s)",
    )


OVERRIDES = (
    "listen",
    "admin",
    "origin",
    "hosts",
    "shield",
    "role",
    "workers",
    "cache_mem",
    "cache_dir",
    "cache_disk",
    "name",
    "control",
    "grace",
)


def load_config(args: argparse.Namespace) -> EdgeConfig:
    overrides = {name: getattr(args, name, None) for name in OVERRIDES}
    return load(EdgeConfig, args.config, overrides)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args)
    except ConfigError as exc:
        print(f"pinedge edge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from pinedge.edge.node.supervisor import run as supervise

    return supervise(config, lambda: load_config(args), args.log_level)
