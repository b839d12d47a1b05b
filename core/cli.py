"""The `pinedge` command: one subcommand per component.

Each component's `cli` module adds its own flags and runs it; the command only
dispatches, importing the chosen component by name so that `core` depends on
none of them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from pinedge import __version__
from pinedge.core import logs
from pinedge.core.runner import EXIT_USAGE

SUBCOMMANDS = {
    "origin": ("pinedge.origin.cli", "run the sample origin (pin catalog, pages, API, faults)"),
    "edge": ("pinedge.edge.node.cli", "run a caching edge (or shield) node"),
    "dns": ("pinedge.geodns.cli", "run the authoritative GeoDNS server"),
    "control": ("pinedge.control.cli", "run the control plane"),
    "demo": ("pinedge.edge.node.demo", "run an origin and an edge on loopback for a browser"),
}


def build_parser(chosen: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pinedge", description="pinedge: a CDN edge node for image-heavy sites"
    )
    parser.add_argument("--version", action="version", version=f"pinedge {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, summary) in SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        sub.add_argument(
            "--config",
            metavar="FILE",
            default=os.environ.get("PINEDGE_CONFIG") or None,
            help="TOML file; flags override it (default $PINEDGE_CONFIG)",
        )
        sub.add_argument(
            "--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR (default INFO)"
        )
        if name == chosen:
            importlib.import_module(module_name).add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in args_list if a in SUBCOMMANDS), None)
    args = build_parser(chosen).parse_args(args_list)
    try:
        logs.setup(args.log_level)
    except ValueError as exc:
        print(f"pinedge {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    return int(module.run(args) or 0)
