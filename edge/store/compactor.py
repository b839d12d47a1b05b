"""The owner's account of the segments (segments.py), and their compaction.

SegmentSpace counts the live bytes the index holds in each segment and marks a
record dead in place when the index lets go of it. The Compactor, a task in the
owner's loop, removes finished segments with nothing live in them, and copies
the live records of the emptiest ones to the owner's own segment until dead
bytes are at most DEAD_SHARE of what all segments hold: the shared memory (or
disk) the store takes is then at most its budget / (1 - DEAD_SHARE), plus the
segment each writer is filling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pinedge.edge.store.objectfile import parse_meta, variant_id
from pinedge.edge.store.segments import (
    DEAD,
    SEALED_AFTER,
    SEGMENT_BYTES,
    OpenSegments,
    SegmentWriter,
    read_segment,
    scan,
    segment_of_name,
    segment_path,
)

if TYPE_CHECKING:
    from pathlib import Path

    from pinedge.edge.store.index import Index

log = logging.getLogger("pinedge.store")

DEAD_SHARE = 0.2
CHECK_EVERY = 1.0  # seconds between two looks at the segments
SETTLED = 2.0  # a full segment not written for this long gets no more admissions
MARKING_DESCRIPTORS = 64


class SegmentSpace:
    """Live bytes by segment, and dead records marked, for the owner's index."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.live: dict[int, int] = {}  # segment -> bytes of the records indexed in it
        self.live_bytes = 0
        self.marking = OpenSegments(root, os.O_WRONLY, MARKING_DESCRIPTORS)
        self.writer = SegmentWriter(root)  # where compaction copies records to
        self.marked = 0  # records marked dead
        self.removed = 0  # segments removed, empty or compacted
        self.compacted = 0  # of them, those whose live records were copied out
        self.moved = 0  # bytes copied out of them

    def add(self, place: int, size: int) -> None:
        segment = place >> 32
        self.live[segment] = self.live.get(segment, 0) + size
        self.live_bytes += size

    def free(self, place: int, size: int) -> None:
        """The index let go of the record at `place`, of `size` bytes."""
        segment = place >> 32
        left = self.live.get(segment, 0) - size
        self.live[segment] = max(left, 0)
        self.live_bytes -= size
        self.mark_dead(place)

    def mark_dead(self, place: int) -> None:
        """Mark the record at `place` dead in its segment, so that a restart skips it."""
        fd = self.marking.descriptor(place >> 32)
        if fd is None:
            return  # its segment is gone
        with contextlib.suppress(OSError):
            os.pwrite(fd, DEAD, place & 0xFFFFFFFF)
        self.marked += 1

    def remove(self, segment: int) -> None:
        self.marking.forget(segment)
        self.live_bytes -= self.live.pop(segment, 0)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(segment_path(self.root, segment))
        self.removed += 1

    def close(self) -> None:
        self.marking.close()
        self.writer.seal()


def finished_segments(root: Path, writing: int) -> tuple[list[tuple[int, int]], bool]:
    """(segment, size) of each segment no writer adds to any more: full and not
    written for SETTLED seconds, or not written for SEALED_AFTER; `writing`, the
    owner's own, is left out. And whether a full one is still settling."""
    found = []
    settling = False
    now = time.time()
    try:
        entries = list(os.scandir(root / "segments"))
    except FileNotFoundError:
        return [], False
    for entry in entries:
        segment = segment_of_name(entry.name)
        if segment is None or segment == writing:
            continue
        try:
            status = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        idle = now - status.st_mtime
        full = status.st_size >= SEGMENT_BYTES
        if idle > SEALED_AFTER or (full and idle > SETTLED):
            found.append((segment, status.st_size))
        elif full:
            settling = True
    return found, settling


def compact(index: Index, segment: int) -> None:
    """Copy the records the index holds in `segment` to the owner's segment, point
    the index at the copies, and remove the segment. A worker holding a copy of a
    moved record is told by its key's generation, and looks it up again."""
    space = index.space
    data = read_segment(index.root, segment)
    if data is None:
        space.remove(segment)
        return
    records = index.records
    places = records.places
    base = segment << 32
    size_of = index.policy.size_of
    for offset, length, live in scan(data):
        if not live:
            continue
        meta = parse_meta(data, offset)
        if meta is None:
            continue
        record = records.find(variant_id(meta.key, meta.vary_names, meta.vary_values))
        if record < 0 or places[record] != base | offset:
            continue  # not what the index holds (replaced, or let go of unmarked)
        place = space.writer.append(data[offset : offset + length])
        places[record] = place
        space.add(place, size_of(record))
        space.moved += length
        index.generations.bump(records.key(record))
    space.remove(segment)  # counts its live bytes out, the moved ones with the rest
    space.compacted += 1


class Compactor:
    """Keeps the segments' dead bytes at most DEAD_SHARE of their size, a segment at
    a time between turns of the owner's loop."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.task: asyncio.Task[None] | None = None
        self.marked_when_looked = -1
        self.looked_at = 0.0

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(CHECK_EVERY)
            try:
                for _ in self.steps():
                    await asyncio.sleep(0)
            except Exception:
                log.exception("store %s: compacting segments failed", self.index.root)

    def run_all(self) -> None:
        """One look at the segments, done at once."""
        for _ in self.steps():
            pass

    def steps(self) -> Iterator[None]:
        """One look at the segments: a step per segment removed. Taken when a record
        was marked dead since the last, or SEALED_AFTER seconds on (a worker that
        died leaves a segment, and records it wrote but did not tell of)."""
        index = self.index
        if index.loading:
            return  # what the loader has not indexed yet is not dead
        space = index.space
        space.writer.seal_if_idle()
        now = time.monotonic()
        if space.marked == self.marked_when_looked and now - self.looked_at < SEALED_AFTER:
            return
        finished, settling = finished_segments(index.root, space.writer.segment)
        # A full segment still settling is looked at again at the next check.
        self.marked_when_looked, self.looked_at = (-1 if settling else space.marked), now
        live = space.live
        candidates = []
        total = dead = 0
        for segment, size in finished:
            held = live.get(segment, 0)
            if held <= 0:
                space.remove(segment)
                yield
                continue
            total += size
            dead += max(size - held, 0)
            candidates.append((held / max(size, 1), segment, size))
        candidates.sort()
        for share, segment, size in candidates:
            if dead <= DEAD_SHARE * total or share >= 1 - DEAD_SHARE / 2:
                return
            compact(index, segment)
            dead -= round(size * (1 - share))
            total -= size
            yield
