"""One stored response as one file, written atomically and checked when read; a
small one is the same record in a segment (segments.py: record(), parse()).

    magic "PNE2" | meta length (u32) | body length (u64) | meta crc32 | body crc32
    | meta (msgpack) | body

The body starts right after the meta, so its offset and length come from the
header, not the meta. A new file is written under its name, which nobody reads
before the owner indexes it; one that replaces another is renamed into place
when complete. A file cut short by a crash, or damaged later, fails the length
or checksum test and is dropped, never served. Files of the first format
("PNE1", JSON meta) are still read.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import struct
import threading
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as quote
from pathlib import Path
from typing import Any, NamedTuple

import msgpack

from pinedge.edge.store.tags import tags_of

MAGIC = b"PNE2"
MAGIC_JSON = b"PNE1"
HEADER = struct.Struct("<4sIQII")
META_LIMIT = 1 << 24
# What a file costs beside its bytes: tmpfs and most file systems give each file
# whole pages, and the kernel an inode and a directory entry (about 1 KiB).
PAGE = 4096
FILE_OVERHEAD = 1024


@dataclass(frozen=True, slots=True)
class Meta:
    """A stored file's fields but its body, as written and read back."""

    key: str
    vary_names: tuple[str, ...]
    vary_values: tuple[str | None, ...]
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    request_time: float
    response_time: float
    body_length: int
    body_crc: int
    body_offset: int
    # Set by the owner, never written: when a soft purge made this response
    # stale (the worker serves it as stale from then on).
    purged_at: float | None = None
    # variant_id() of the above when the writer had it (a SHA-256: worked out once
    # per stored response and carried to the owner with the rest), else "".
    vid: str = ""

    @property
    def variant_id(self) -> str:
        return self.vid or variant_id(self.key, self.vary_names, self.vary_values)

    @property
    def file_size(self) -> int:
        return self.body_offset + self.body_length

    @property
    def allocated(self) -> int:
        """The memory (or disk) its file really takes: whole pages, and the inode."""
        return allocated(self.file_size)


# Meta's fields as written in a file, in order: key, vary names, vary values, status,
# reason, header fields, request time and response time.
MetaFields = tuple[
    str,
    tuple[str, ...],
    tuple[str | None, ...],
    int,
    str,
    tuple[tuple[str, str], ...],
    float,
    float,
]


def allocated(file_size: int) -> int:
    """What a file of `file_size` bytes really takes: whole pages, and the inode."""
    return -(-file_size // PAGE) * PAGE + FILE_OVERHEAD


class Admission(NamedTuple):
    """What the owner indexes of a file a worker wrote (the owner link's ADMIT): its
    key and variant id, its tags, its request and response times, and what it takes
    (Meta.allocated). The fields stay in the file: the writer has worked out the tags."""

    key: str
    vid: str
    tags: tuple[str, ...]
    request_time: float
    response_time: float
    allocated: int
    # Where it is: 0 for a file of its own, else its place in a segment (segments.py),
    # where it takes `allocated` bytes exactly.
    place: int = 0

    @classmethod
    def of(cls, meta: Meta, tags: Iterable[str] | None = None, place: int = 0) -> Admission:
        """`tags` as the writer found them in the fields, else read from the meta's;
        `place`: where in a segment the record is, if it is in one."""
        found = tags_of(meta.headers) if tags is None else tags
        return cls(
            meta.key,
            meta.variant_id,
            tuple(found),
            meta.request_time,
            meta.response_time,
            meta.file_size if place else meta.allocated,
            place,
        )


class Stored(NamedTuple):
    """A stored response as the owner's index answers a lookup: which file (or place
    in a segment) to read, what it takes (Meta.allocated, as the budget counts it),
    which version of it the index holds (a file written over since has another
    response time), and when a soft purge made it stale."""

    vid: str
    size: int
    response_time: float
    purged_at: float | None
    place: int = 0  # as Admission.place

    @classmethod
    def of(cls, meta: Meta) -> Stored:
        """A response in a file of its own, as the index answers for it."""
        return cls(meta.variant_id, meta.allocated, meta.response_time, meta.purged_at)


def _own_sha256() -> Callable[[bytes], hashlib._Hash]:
    """CPython's own SHA-256 (the same digests as OpenSSL's): a miss amid hits finds
    OpenSSL's far larger code out of the CPU's caches, and its hash of a variant
    id cost about twice as much there. The module was renamed in Python 3.12."""
    for module in ("_sha2", "_sha256"):
        try:
            return importlib.import_module(module).sha256
        except (ImportError, AttributeError):
            continue
    return hashlib.sha256


sha256 = _own_sha256()


def variant_id(key: str, vary_names: tuple[str, ...], vary_values: tuple[str | None, ...]) -> str:
    """A stable name for one variant of a key (the same in every process): the
    SHA-256 of `[key, vary_names, vary_values]` as compact JSON, which json.dumps
    took twice as long to write as this (it builds an encoder per call)."""
    if not vary_names and not vary_values:  # no Vary: every miss of a new key
        text = f"[{quote(key)},[],[]]"
    else:
        names = ",".join(map(quote, vary_names))
        values = ",".join("null" if value is None else quote(value) for value in vary_values)
        text = f"[{quote(key)},[{names}],[{values}]]"
    return sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def object_path(root: Path, vid: str) -> Path:
    return root / "objects" / vid[:2] / vid


def object_path_text(root: Path, vid: str) -> str:
    """object_path() as a string, without pathlib's cost: the owner removes a file
    for every eviction and reads one for every file at a restart, and a worker
    writes one for every miss."""
    return f"{root}/objects/{vid[:2]}/{vid}"


def remove(root: Path, vid: str) -> None:
    """Remove a stored file, if it is there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(object_path_text(root, vid))


# msgpack.packb makes a Packer per call, with a 256 KiB buffer: in a worker, whose
# allocator maps buffers of 128 KiB and more on their own (edge/node/malloc.py),
# that was an mmap, page faults and a munmap per stored response. One per thread
# (large bodies are written on executor threads).
_packers = threading.local()


def _pack_meta(values: MetaFields) -> bytes:
    packer = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(unicode_errors="surrogateescape")
    meta: bytes = packer.pack(values)
    return meta


def write(root: Path, fields: dict[str, Any], body: bytes, vid: str = "") -> Meta:
    """Write a stored response; `fields` are Meta's fields but the body's, `vid`
    their variant_id() if the caller has it."""
    values: MetaFields = (
        fields["key"],
        tuple(fields["vary_names"]),
        tuple(fields["vary_values"]),
        fields["status"],
        fields["reason"],
        tuple(fields["headers"]),
        fields["request_time"],
        fields["response_time"],
    )
    vid = vid or variant_id(values[0], values[1], values[2])
    offset, body_crc = write_values(root, vid, values, body)
    return Meta(*values, len(body), body_crc, offset, vid=vid)


def _head(values: MetaFields, body: bytes) -> tuple[bytes, bytes, int]:
    """The header and packed meta that go before `body`, and the body's CRC-32."""
    meta_bytes = _pack_meta(values)
    body_crc = zlib.crc32(body)
    header = HEADER.pack(MAGIC, len(meta_bytes), len(body), zlib.crc32(meta_bytes), body_crc)
    return header, meta_bytes, body_crc


def record(values: MetaFields, body: bytes) -> bytes:
    """Meta's fields and a body as a file holds them (a record), for a segment."""
    header, meta_bytes, _ = _head(values, body)
    return b"".join((header, meta_bytes, body))


def parse(data: bytes) -> tuple[Meta, bytes] | None:
    """The meta and body of a record read whole (from a segment) if its header,
    length and both checksums hold; else None."""
    if len(data) < HEADER.size:
        return None
    meta = parse_meta(data, 0)
    if meta is None or len(data) != meta.file_size:
        return None
    body = data[meta.body_offset :]
    return None if zlib.crc32(body) != meta.body_crc else (meta, body)


def parse_meta(data: bytes, start: int) -> Meta | None:
    """The meta of the record at `start` in a segment's bytes if its header and meta
    checksum hold (the body is not checked); else None."""
    magic, meta_length, body_length, meta_crc, body_crc = HEADER.unpack_from(data, start)
    begin = start + HEADER.size
    meta_bytes = data[begin : begin + meta_length]
    if magic != MAGIC or zlib.crc32(meta_bytes) != meta_crc:
        return None
    return _meta(magic, meta_bytes, HEADER.size + meta_length, body_length, body_crc)


def write_values(root: Path, vid: str, values: MetaFields, body: bytes) -> tuple[int, int]:
    """write() for Meta's fields as they are written, and their variant_id(): the
    body's offset in the file, and its CRC-32."""
    header, meta_bytes, body_crc = _head(values, body)
    offset = HEADER.size + len(meta_bytes)
    final = object_path_text(root, vid)
    data: tuple[bytes, ...] = (header, meta_bytes, body)
    if len(body) < 65536:
        data = (b"".join(data),)
    try:
        # A new variant is written in place: no one reads a file before the owner
        # indexes it, which is after this returns, and one cut short by a crash
        # fails its checksums. A variant stored before is replaced atomically.
        fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        _replace(root, final, vid, data)
        return offset, body_crc
    except FileNotFoundError:  # the first object in its directory
        os.makedirs(os.path.dirname(final), exist_ok=True)
        _replace(root, final, vid, data)
        return offset, body_crc
    try:
        _write_all(fd, data)
    except OSError:
        os.unlink(final)
        raise
    finally:
        os.close(fd)
    return offset, body_crc


def _replace(root: Path, final: str, vid: str, data: tuple[bytes, ...]) -> None:
    temporary = f"{root}/tmp/{vid}.{os.getpid()}.{id(data)}"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(temporary, final)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _write_all(fd: int, data: tuple[bytes, ...]) -> None:
    written = os.writev(fd, data) if len(data) > 1 else os.write(fd, data[0])
    if written != sum(map(len, data)):
        raise OSError(f"short write: {written} of {sum(map(len, data))} bytes")


FIRST_READ = 65536  # bytes read at once: all of a small file, the head of a large one
META_READ = 4096  # bytes read at once for the meta alone: the header and a usual meta

Head = tuple[bytes, bytes, int, int, int, bytes, int]


def _read_head(fd: int, first: int) -> Head | None:
    """(magic, meta bytes, body offset, body length, body crc, the bytes read, file
    size) when the header holds, the file is as long as it says and the meta's
    checksum holds; else None. Reads up to `first` bytes in one call."""
    size = os.fstat(fd).st_size
    data = os.pread(fd, min(size, first), 0)
    if len(data) < HEADER.size:
        return None
    magic, meta_length, body_length, meta_crc, body_crc = HEADER.unpack_from(data)
    offset = HEADER.size + meta_length
    if magic not in (MAGIC, MAGIC_JSON) or meta_length > META_LIMIT:
        return None
    if size != offset + body_length:
        return None
    if offset <= len(data):
        meta_bytes = data[HEADER.size : offset]
    else:
        meta_bytes = os.pread(fd, meta_length, HEADER.size)
    if len(meta_bytes) != meta_length or zlib.crc32(meta_bytes) != meta_crc:
        return None
    return magic, meta_bytes, offset, body_length, body_crc, data, size


def read_meta(path: Path | str) -> Meta | None:
    """The file's meta if its header, meta checksum and length hold; else None."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        head = _read_head(fd, META_READ)
    except OSError:
        return None
    finally:
        os.close(fd)
    if head is None:
        return None
    magic, meta_bytes, offset, body_length, body_crc, _, _ = head
    return _meta(magic, meta_bytes, offset, body_length, body_crc)


def read(path: Path | str) -> tuple[Meta, bytes] | None:
    """The file's meta and body if it is whole and both checksums hold; else None.
    One file opened, so the two are of the same version even if it is written
    over meanwhile; a small file is read in one call."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        head = _read_head(fd, FIRST_READ)
        if head is None:
            return None
        magic, meta_bytes, offset, body_length, body_crc, data, size = head
        body = data[offset:] if size <= len(data) else os.pread(fd, body_length, offset)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(body) != body_length or zlib.crc32(body) != body_crc:
        return None
    meta = _meta(magic, meta_bytes, offset, body_length, body_crc)
    return None if meta is None else (meta, body)


def _meta(
    magic: bytes, meta_bytes: bytes, offset: int, body_length: int, body_crc: int
) -> Meta | None:
    if magic == MAGIC_JSON:
        return _json_meta(meta_bytes, offset, body_length)
    try:
        key, names, values, status, reason, headers, request_time, response_time = msgpack.unpackb(
            meta_bytes, unicode_errors="surrogateescape"
        )
        return Meta(
            key,
            tuple(names),
            tuple(values),
            int(status),
            reason,
            tuple((str(name), str(value)) for name, value in headers),
            float(request_time),
            float(response_time),
            body_length,
            body_crc,
            offset,
        )
    except (ValueError, TypeError, msgpack.UnpackException):
        return None


def _json_meta(meta_bytes: bytes, offset: int, body_length: int) -> Meta | None:
    """The meta of a file of the first format, whose meta was JSON and held its offset."""
    try:
        data = json.loads(meta_bytes.decode("utf-8", "surrogateescape"))
        meta = Meta(
            data["key"],
            tuple(data["vary_names"]),
            tuple(data["vary_values"]),
            int(data["status"]),
            data["reason"],
            tuple((str(k), str(v)) for k, v in data["headers"]),
            float(data["request_time"]),
            float(data["response_time"]),
            int(data["body_length"]),
            int(data["body_crc"]),
            int(data["body_offset"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
    if meta.body_offset != offset or meta.body_length != body_length:
        return None
    return meta
