"""Logging set-up shared by every component: one line per event, to stderr."""

from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup(level: str | None = None) -> None:
    """Configure the root logger once; `PINEDGE_LOG_LEVEL` sets the default level."""
    chosen = (level or os.environ.get("PINEDGE_LOG_LEVEL") or "INFO").upper()
    if chosen not in logging.getLevelNamesMapping():
        raise ValueError(f"unknown log level {chosen!r} (use DEBUG, INFO, WARNING or ERROR)")
    root = logging.getLogger()
    if not any(getattr(h, "_pinedge", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        handler._pinedge = True  # type: ignore[attr-defined]  # the marker that this handler is ours
        root.addHandler(handler)
    root.setLevel(chosen)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
