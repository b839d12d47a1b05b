"""One stored response as one file, written atomically and checked when read.

    magic "PNE1" | meta length (u32) | body length (u64) | meta crc32 | body crc32
    | meta (JSON) | body

A file is renamed into place only when complete; one cut short by a crash, or
damaged later, fails the length or checksum test and is dropped, never served.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAGIC = b"PNE1"
HEADER = struct.Struct("<4sIQII")


@dataclass(frozen=True, slots=True)
class Meta:
    """What the index needs about a stored file, without its body."""

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

    @property
    def variant_id(self) -> str:
        return variant_id(self.key, self.vary_names, self.vary_values)

    @property
    def file_size(self) -> int:
        return self.body_offset + self.body_length

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "vary_names": list(self.vary_names),
            "vary_values": list(self.vary_values),
            "status": self.status,
            "reason": self.reason,
            "headers": [list(pair) for pair in self.headers],
            "request_time": self.request_time,
            "response_time": self.response_time,
            "body_length": self.body_length,
            "body_crc": self.body_crc,
            "body_offset": self.body_offset,
        } | ({"purged_at": self.purged_at} if self.purged_at is not None else {})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Meta:
        return cls(
            key=data["key"],
            vary_names=tuple(data["vary_names"]),
            vary_values=tuple(data["vary_values"]),
            status=int(data["status"]),
            reason=data["reason"],
            headers=tuple((str(k), str(v)) for k, v in data["headers"]),
            request_time=float(data["request_time"]),
            response_time=float(data["response_time"]),
            body_length=int(data["body_length"]),
            body_crc=int(data["body_crc"]),
            body_offset=int(data["body_offset"]),
            purged_at=data.get("purged_at"),
        )


def variant_id(key: str, vary_names: tuple[str, ...], vary_values: tuple[str | None, ...]) -> str:
    """A stable name for one variant of a key (the same in every process)."""
    text = json.dumps([key, list(vary_names), list(vary_values)], separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def object_path(root: Path, vid: str) -> Path:
    return root / "objects" / vid[:2] / vid


def write(root: Path, fields: dict[str, Any], body: bytes) -> Meta:
    """Write a stored response; `fields` are Meta's fields but the body's. Atomic:
    the file appears under its name complete or not at all."""
    body_crc = zlib.crc32(body)
    probe = {**fields, "body_length": len(body), "body_crc": body_crc, "body_offset": 0}
    meta_bytes = json.dumps(probe, separators=(",", ":")).encode("utf-8", "surrogateescape")
    # The offset is part of the meta; fixing it can only add digits, so settle it twice.
    for _ in range(3):
        offset = HEADER.size + len(meta_bytes)
        probe["body_offset"] = offset
        meta_bytes = json.dumps(probe, separators=(",", ":")).encode("utf-8", "surrogateescape")
        if HEADER.size + len(meta_bytes) == offset:
            break
    else:  # pragma: no cover - the loop settles in at most two rounds
        raise RuntimeError("could not settle the body offset")
    meta = Meta.from_json(probe)
    header = HEADER.pack(MAGIC, len(meta_bytes), len(body), zlib.crc32(meta_bytes), body_crc)
    final = object_path(root, meta.variant_id)
    temporary = root / "tmp" / f"{meta.variant_id}.{os.getpid()}.{id(body)}"
    try:
        with open(temporary, "wb") as handle:
            handle.write(header)
            handle.write(meta_bytes)
            handle.write(body)
        try:
            os.replace(temporary, final)
        except FileNotFoundError:  # the first object in its directory
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temporary, final)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise
    return meta


def read_meta(path: Path) -> Meta | None:
    """The file's meta if its header, meta checksum and length hold; else None."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEADER.size)
            if len(head) != HEADER.size:
                return None
            magic, meta_length, body_length, meta_crc, _body_crc = HEADER.unpack(head)
            if magic != MAGIC or meta_length > 1 << 24:
                return None
            meta_bytes = handle.read(meta_length)
            size = os.fstat(handle.fileno()).st_size
    except OSError:
        return None
    if len(meta_bytes) != meta_length or zlib.crc32(meta_bytes) != meta_crc:
        return None
    if size != HEADER.size + meta_length + body_length:
        return None
    try:
        meta = Meta.from_json(json.loads(meta_bytes.decode("utf-8", "surrogateescape")))
    except (ValueError, KeyError, TypeError):
        return None
    if meta.body_offset != HEADER.size + meta_length or meta.body_length != body_length:
        return None
    return meta


def read_body(path: Path, meta: Meta) -> bytes | None:
    """The body if it is all there and matches its checksum; else None."""
    try:
        with open(path, "rb") as handle:
            handle.seek(meta.body_offset)
            body = handle.read(meta.body_length + 1)
    except OSError:
        return None
    if len(body) != meta.body_length or zlib.crc32(body) != meta.body_crc:
        return None
    return body
