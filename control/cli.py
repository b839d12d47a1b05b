"""`pinedge control`: the control plane is not built yet; the command says so."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", metavar="HOST:PORT")
    parser.add_argument("--data", metavar="DIR")


def run(args: argparse.Namespace) -> int:
    print(
        "pinedge control: the control plane is not available in this version yet", file=sys.stderr
    )
    return 2
