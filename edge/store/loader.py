"""Indexing what a warm store directory holds at start, while the node serves (as
nginx's cache loader does).

The segments (segments.py) are read first, oldest first and each in order, then
the files of their own, listed with their modification times and read oldest
first, so that a smaller budget than before keeps the newest. Of two records of
one response, the later response is kept and the other marked dead. The node spends up to
`store_load_wait` on this before it is ready (a store of some thousands of files
is then whole); the rest goes on in the owner's event loop, SLICE seconds at a time, with
the node serving. Meanwhile workers ask the owner about every key (the presence
counters are not whole yet), and the owner indexes at once the file a key names
(its response without Vary: Index.lookup); a key with no such file, or whose
response varies, is a miss, its fetch stores it again, and the loader leaves it
be when it comes to the file. Purges and invalidations meanwhile stay in force
for the files still to come (purges' bans are kept, and invalidated keys
remembered, until the end).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from array import array
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pinedge.edge.store import objectfile
from pinedge.edge.store.index import VID_BYTES, Index
from pinedge.edge.store.segments import place_of, read_segment, scan, segment_of_name

if TYPE_CHECKING:
    from pinedge.edge.store.owner import StoreOwner

log = logging.getLogger("pinedge.store")

SLICE = 0.005  # seconds of loading per turn of the owner's loop, once ready
PAUSE = 0.005  # seconds between two slices


class StoreLoader:
    """Indexes the files under an index's root: `run_for(seconds)` before the node is
    ready, then `run_rest()` as a task."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.started = time.monotonic()
        self.loaded = 0
        self.done = False
        self.work = self._load()
        index.purged.keep_bans = True
        index.removed_since_start = set()
        index.loading = True

    def run_for(self, seconds: float) -> bool:
        """Load for up to `seconds`; True once everything is loaded."""
        if self.done:
            return True
        deadline = time.monotonic() + seconds
        for _ in self.work:
            if time.monotonic() >= deadline:
                return False
        self.finish()
        log.info(
            "store %s: %d stored responses loaded in %.1f s",
            self.index.root,
            self.loaded,
            time.monotonic() - self.started,
        )
        return True

    async def run_rest(self) -> None:
        """The rest, SLICE seconds at a time with PAUSE between: the owner's lookups
        wait at most a slice, and the loading takes at most half the owner's CPU."""
        try:
            while not self.run_for(SLICE):
                await asyncio.sleep(PAUSE)
        except Exception:
            log.exception("store %s: loading stopped; what is not indexed is lost", self.index.root)
            self.finish()
            raise

    def finish(self) -> None:
        """Loading is over (done, stopped or failed): purges and invalidations go back
        to covering only what is indexed."""
        self.done = True
        self.index.purged.keep_bans = False
        self.index.removed_since_start = None
        self.index.loading = False

    def _load(self) -> Iterator[None]:
        """The loading, a file at a time. What it holds per file until all are read is
        24 bytes (the time and the variant id): ten million files are a restart, not
        an out-of-memory kill."""
        index = self.index
        objects = index.root / "objects"
        objects.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(index.root / "tmp", ignore_errors=True)
        (index.root / "tmp").mkdir(parents=True, exist_ok=True)
        yield from self._load_segments()
        times = array("q")
        vids = bytearray()
        for folder in os.scandir(objects):
            if not folder.is_dir(follow_symlinks=False):
                continue
            for item in os.scandir(folder.path):
                try:
                    vid = bytes.fromhex(item.name)
                    written = item.stat(follow_symlinks=False).st_mtime_ns
                except (ValueError, OSError):
                    vid, written = b"", 0
                if len(vid) != VID_BYTES or item.name != vid.hex() or folder.name != item.name[:2]:
                    index.drop_damaged(item.path)
                    continue
                times.append(written)
                vids += vid
                yield
        order = sorted(range(len(times)), key=times.__getitem__)
        del times
        records = index.records
        for number in order:
            name = vids[number * VID_BYTES : (number + 1) * VID_BYTES].hex()
            found = records.find(name)
            if found >= 0 and not records.places[found]:
                continue  # stored again since the node started: the index has the newer
            path = objectfile.object_path_text(index.root, name)
            meta = objectfile.read_meta(path)
            if (
                found >= 0
                and meta is not None
                and (meta.response_time <= records.response_times[found])
            ):
                # The index holds a later version of it in a segment.
                with contextlib.suppress(OSError):
                    os.unlink(path)
                yield
                continue
            if meta is None or meta.variant_id != name:
                if os.path.exists(path):  # else stored and removed again since the start
                    index.drop_damaged(path)
            elif index.removed_while_loading(meta.key):
                # Invalidated since the start (it or the response it was derived from).
                with contextlib.suppress(OSError):
                    os.unlink(path)
            else:
                index.admit(objectfile.Admission.of(meta))
                self.loaded += 1
            yield

    def _load_segments(self) -> Iterator[None]:
        """The records of the segments, oldest segment first, a record at a time."""
        index = self.index
        folder = index.root / "segments"
        folder.mkdir(parents=True, exist_ok=True)
        found = []
        for item in os.scandir(folder):
            segment = segment_of_name(item.name)
            try:
                written = item.stat(follow_symlinks=False).st_mtime_ns
            except OSError:
                continue
            if segment is None:
                index.drop_damaged(item.path)
                continue
            found.append((written, segment))
        found.sort()
        records, space = index.records, index.space
        for _, segment in found:
            data = read_segment(index.root, segment)
            if data is None:
                continue
            for offset, _, live in scan(data):
                if not live:
                    continue
                place = place_of(segment, offset)
                meta = objectfile.parse_meta(data, offset)
                if meta is None:
                    index.dropped += 1
                    space.mark_dead(place)
                    continue
                record = records.find(meta.variant_id)
                if index.removed_while_loading(meta.key) or (
                    record >= 0 and records.response_times[record] >= meta.response_time
                ):
                    space.mark_dead(place)  # invalidated since, or a later version indexed
                    continue
                index.admit(objectfile.Admission.of(meta, place=place))
                self.loaded += 1
                yield


def start_loading(owner: StoreOwner, wait: float) -> asyncio.Task[None] | None:
    """Load what the owner's directory holds for up to `wait` seconds; the task that
    loads the rest, if anything is left."""
    loader = owner.loader()
    if loader.run_for(wait):
        return None
    log.info(
        "store %s: %d stored responses loaded; loading the rest while serving",
        owner.root,
        loader.loaded,
    )

    return asyncio.create_task(loader.run_rest())


async def stop_loading(task: asyncio.Task[None] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await task
