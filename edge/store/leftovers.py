"""Shared memory a node names after its process id, and removing what a node that
died without cleaning up left behind."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftover_segments(prefix: str) -> None:
    """Unlink /dev/shm segments named `prefix` + PID + ... whose process is gone."""
    for segment in Path("/dev/shm").glob(f"{prefix}*"):
        pid = segment.name.removeprefix(prefix).split("-")[0]
        if pid.isdigit() and not process_alive(int(pid)):
            segment.unlink(missing_ok=True)


def memory_root(name: str) -> Path:
    """Where a node without --cache-dir keeps its objects: shared memory if the
    system has it, so workers share the pages and nothing touches a disk. The
    directories of nodes that died without cleaning up are removed first."""
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    for leftover in base.glob("pinedge-store-*"):
        pid = leftover.name.split("-")[2]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return base / f"pinedge-store-{os.getpid()}-{secrets.token_hex(4)}-{safe}"
