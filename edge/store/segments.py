"""Small stored responses packed many to a file, in segments (as Varnish's and
ATS's storages pack objects), rather than one file each.

A response whose body is under SEGMENT_BODY_MAX is not written as a file of its
own: its writer (each worker, and the owner when it compacts) appends it, in
the same record format as a file (objectfile.py), to the segment it is filling
under `root/segments/`, with one pwrite(2) on a descriptor it keeps open. A
writer fills a segment to SEGMENT_BYTES, then starts another; one it has not
written to for IDLE_SEAL seconds it leaves too, so that every segment is
finished within SEALED_AFTER seconds of its last write.

A record's place is one number: its segment's id (32 bits, named in hex) and
its offset. The owner's index (index.py) keeps the place of each record; when
the record is evicted, purged or replaced, the owner marks it dead in place
(its magic overwritten, so that a restart skips it) and counts the segment's
live bytes down. Pages of a segment stay allocated while any record in it
lives: the owner's compactor (compactor.py) copies the live records of the
emptiest finished segments to a segment of its own and removes them, keeping
the dead bytes under DEAD_SHARE of what the segments hold.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

from pinedge.edge.store.objectfile import HEADER, MAGIC, META_LIMIT

SEGMENT_BYTES = 1 << 20
# Bodies under this go to segments. The same bound as where the hit path starts
# to send bodies by sendfile(2) from their file: a body in a segment is always
# sent from memory.
SEGMENT_BODY_MAX = 16 * 1024
RECORD_MAX = 64 * 1024  # a record longer than this (a long meta) keeps a file of its own
DEAD = b"DEAD"  # a dead record's magic
IDLE_SEAL = 30.0
SEALED_AFTER = 2 * IDLE_SEAL
READ_DESCRIPTORS = 256  # segments a reader keeps open at most


def place_of(segment: int, offset: int) -> int:
    return segment << 32 | offset


def split(place: int) -> tuple[int, int]:
    """(segment, offset) of a place."""
    return place >> 32, place & 0xFFFFFFFF


def segment_path(root: Path | str, segment: int) -> str:
    return f"{root}/segments/{segment:08x}"


def segment_of_name(name: str) -> int | None:
    """The id a segment's file name stands for, or None for another file."""
    if len(name) != 8:
        return None
    try:
        segment = int(name, 16)
    except ValueError:
        return None
    return segment if segment and f"{segment:08x}" == name else None


class SegmentWriter:
    """Appends records to the segment this process is filling."""

    def __init__(self, root: Path | str) -> None:
        self.root = str(root)
        self.fd = -1
        self.segment = 0
        self.offset = 0
        self.last_write = 0.0

    def append(self, data: bytes) -> int:
        """Write one record; its place."""
        if self.fd < 0 or self.offset >= SEGMENT_BYTES:
            self._start()
        at = self.offset
        try:
            written = os.pwrite(self.fd, data, at)
        except OSError:
            self.seal()  # a record cut short is not followed by another
            raise
        if written != len(data):
            self.seal()
            raise OSError(f"short write to a segment: {written} of {len(data)} bytes")
        self.offset = at + written
        self.last_write = time.monotonic()
        return self.segment << 32 | at

    def _start(self) -> None:
        self.seal()
        while True:
            segment = random.getrandbits(32)
            if not segment:
                continue
            path = segment_path(self.root, segment)
            try:
                self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            except FileNotFoundError:
                os.makedirs(f"{self.root}/segments", exist_ok=True)
                continue
            self.segment, self.offset = segment, 0
            return

    def seal_if_idle(self) -> None:
        if self.fd >= 0 and time.monotonic() - self.last_write > IDLE_SEAL:
            self.seal()

    def seal(self) -> None:
        """Leave the segment being filled; the next record starts another."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


class OpenSegments:
    """Segments kept open, by id, for reading or for marking records (`flags`), at
    most `most` at a time; close() lets go of all of them."""

    def __init__(self, root: Path | str, flags: int, most: int) -> None:
        self.root = str(root)
        self.flags = flags
        self.most = most
        self.descriptors: dict[int, int] = {}

    def descriptor(self, segment: int) -> int | None:
        """A descriptor of `segment`, or None when it is gone."""
        fd = self.descriptors.get(segment)
        if fd is None:
            try:
                fd = os.open(segment_path(self.root, segment), self.flags)
            except OSError:
                return None
            if len(self.descriptors) >= self.most:
                self.close()
            self.descriptors[segment] = fd
        return fd

    def forget(self, segment: int) -> None:
        fd = self.descriptors.pop(segment, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        for fd in self.descriptors.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.descriptors.clear()


class SegmentReader(OpenSegments):
    """Reads records by place, keeping segments open between reads. Closed now and
    then (close()), so that a segment removed by the compactor is not held."""

    def __init__(self, root: Path | str) -> None:
        super().__init__(root, os.O_RDONLY, READ_DESCRIPTORS)

    def read(self, place: int, size: int) -> bytes | None:
        """The `size` bytes at `place`, or None when its segment is gone."""
        fd = self.descriptor(place >> 32)
        if fd is None:
            return None
        try:
            return os.pread(fd, size, place & 0xFFFFFFFF)
        except OSError:
            return None


def scan(data: bytes) -> Iterator[tuple[int, int, bool]]:
    """(offset, length, live) of each record in a segment's bytes, in order, up to
    the end or to the first that is not whole (a write cut short by a crash)."""
    offset, end = 0, len(data)
    while offset + HEADER.size <= end:
        magic, meta_length, body_length, _, _ = HEADER.unpack_from(data, offset)
        if magic not in (MAGIC, DEAD) or meta_length > META_LIMIT:
            return
        length = HEADER.size + meta_length + body_length
        if offset + length > end:
            return
        yield offset, length, magic == MAGIC
        offset += length


def read_segment(root: Path | str, segment: int) -> bytes | None:
    try:
        with open(segment_path(root, segment), "rb") as file:
            return file.read()
    except OSError:
        return None
