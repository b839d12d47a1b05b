"""`pinedge dns`: the GeoDNS server is not built yet (issue #6); the command says so."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", metavar="HOST:PORT")
    parser.add_argument("--control", metavar="URL")


def run(args: argparse.Namespace) -> int:
    print("pinedge dns: the GeoDNS server is not available in this version yet", file=sys.stderr)
    return 2
