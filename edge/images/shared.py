"""Decoded sources shared by a node's workers: raw pixels in files in shared memory.

Each worker keeps its own decoded copies (pipeline.PREPARED), but a node's
workers take requests at random, so without this each would decode every
popular source again. A worker that decodes a source for keeping writes its
pixels here; the others map the file and start from it. A lock file per source
makes the second worker to want a source wait for the first one's decode rather
than repeat it (the lock is only an economy: whoever cannot take it in time
decodes alone). Files are few and large, so the budget is kept by removing the
least recently used whole files; a worker that has one mapped keeps its pages
until it lets go of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import mmap
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("pinedge.edge.images")

MAGIC = b"PINEDGE-DECODED1"
HEADER = 4096  # the pixels start on a page boundary
LOCK_POLL = 0.002

ToRaw = Callable[[Any], tuple[dict[str, Any], bytes]]
FromRaw = Callable[[dict[str, Any], memoryview], Any]


class SharedDecodes:
    """Decoded images under `root`, within `budget` bytes, by a string key."""

    def __init__(self, root: Path, budget: int) -> None:
        self.root = root
        self.budget = budget
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str, suffix: str = ".px") -> Path:
        return self.root / f"{key}{suffix}"

    def get(self, key: str, from_raw: FromRaw) -> Any:
        """The image stored under `key` (its pixels mapped, not copied), or None."""
        path = self._path(key)
        try:
            with open(path, "rb") as file:
                mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        except (FileNotFoundError, ValueError):
            return None
        except OSError as exc:
            log.warning("decoded source %s unreadable: %s", path.name, exc)
            return None
        view = memoryview(mapped)
        try:
            if view[: len(MAGIC)] != MAGIC:
                return None
            length = int.from_bytes(view[len(MAGIC) : len(MAGIC) + 4], "little")
            meta = json.loads(bytes(view[len(MAGIC) + 4 : len(MAGIC) + 4 + length]))
            pixels = view[HEADER:]
            if len(pixels) != meta["bytes"]:
                return None
            with contextlib.suppress(OSError):
                os.utime(path)
            return from_raw(meta, pixels)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("decoded source %s damaged, ignored: %s", path.name, exc)
            return None

    def put(self, key: str, image: Any, to_raw: ToRaw) -> bool:
        """Store `image` under `key`, replacing what was there; False if it
        does not fit the budget or cannot be written."""
        meta, pixels = to_raw(image)
        meta["bytes"] = len(pixels)
        head = json.dumps(meta).encode()
        if len(MAGIC) + 4 + len(head) > HEADER or HEADER + len(pixels) > self.budget:
            return False
        path = self._path(key)
        temporary = self._path(key, f".{os.getpid()}.tmp")
        try:
            with open(temporary, "wb") as file:
                file.write(MAGIC + len(head).to_bytes(4, "little") + head)
                file.seek(HEADER)
                file.write(pixels)
            os.replace(temporary, path)
        except OSError as exc:
            log.warning("could not share the decoded source %s: %s", path.name, exc)
            with contextlib.suppress(OSError):
                temporary.unlink()
            return False
        self._trim(keep=path)
        return True

    @contextlib.contextmanager
    def turn(self, key: str, deadline: float) -> Iterator[bool]:
        """Hold `key`'s lock while decoding it; yields False (go on alone) if it
        could not be taken before `deadline`."""
        try:
            fd = os.open(self._path(key, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            yield False
            return
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        yield False
                        return
                    time.sleep(LOCK_POLL)
            yield True
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _trim(self, keep: Path) -> None:
        """Remove the least recently used files until the rest fit the budget."""
        files = []
        total = 0
        with os.scandir(self.root) as entries:
            for entry in entries:
                if not entry.name.endswith(".px"):
                    continue
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue
                total += stat.st_size
                files.append((stat.st_mtime, stat.st_size, entry.path))
        files.sort()
        for _, size, path in files:
            if total <= self.budget:
                break
            if path == str(keep):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                os.unlink(path[: -len(".px")] + ".lock")
            total -= size
