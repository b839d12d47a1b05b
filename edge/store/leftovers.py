"""Shared memory a node names after its process id, and removing what a node that
died without cleaning up left behind."""

from __future__ import annotations

import os
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
