"""The index's records: what the owner keeps of each stored response, in columns.

A record is a number; its fields are entries of lists and arrays at that number,
and the number of a forgotten record is given to the next one. What a worker
needs to serve a response (status, headers, body) is in its file, not here.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence

from pinedge.edge.store.numbertable import NumberTable

VID_BYTES = 16  # a variant id is 32 hex digits


class Records:
    """Stored responses by record number, found by variant id.

    Per record: its key (the string the index's map of keys holds too), its
    variant id as 16 bytes, its response time (which version of the file it is),
    and its tags as up to two references to the strings the tag index holds
    (TagIndex sets them)."""

    def __init__(self) -> None:
        self.keys: list[str | None] = []  # None: a free number
        self.vids = bytearray()
        self.response_times = array("d")
        self.first_tags: list[str | None] = []
        self.more_tags: list[str | tuple[str, ...] | None] = []  # the second tag, or all others
        self.free = array("I")
        self.by_vid = NumberTable(self.vid)

    def __len__(self) -> int:
        return len(self.by_vid)

    def __contains__(self, vid: str) -> bool:
        return self.find(vid) >= 0

    def __iter__(self) -> Iterator[str]:
        """The variant ids of every record."""
        return (self.vid(record) for record, key in enumerate(self.keys) if key is not None)

    def find(self, vid: str) -> int:
        """The record of variant id `vid`, or -1."""
        return self.by_vid.get(vid)

    def add(self, vid: str, key: str, response_time: float) -> int:
        """A new record of variant id `vid` (32 hex digits), with no tags; its number."""
        raw = bytes.fromhex(vid)
        if self.free:
            record = self.free.pop()
            start = VID_BYTES * record
            self.vids[start : start + VID_BYTES] = raw
            self.keys[record] = key
            self.response_times[record] = response_time
        else:
            record = len(self.keys)
            self.vids += raw
            self.keys.append(key)
            self.response_times.append(response_time)
            self.first_tags.append(None)
            self.more_tags.append(None)
        self.by_vid.add(vid, record)
        return record

    def remove(self, record: int) -> None:
        """Forget `record`; its number is free for the next one."""
        self.by_vid.remove(self.vid(record), record)
        self.keys[record] = None
        self.first_tags[record] = self.more_tags[record] = None
        self.free.append(record)

    def live(self, record: int) -> bool:
        return self.keys[record] is not None

    def key(self, record: int) -> str:
        key = self.keys[record]
        assert key is not None, "a forgotten record"
        return key

    def vid(self, record: int) -> str:
        start = VID_BYTES * record
        return self.vids[start : start + VID_BYTES].hex()

    def fingerprint(self, record: int) -> int:
        """A number below 2**63 that stands for the record's response after the
        record is gone: its variant id's first 63 bits."""
        start = VID_BYTES * record
        return int.from_bytes(self.vids[start : start + 8], "big") >> 1

    def tags(self, record: int) -> tuple[str, ...]:
        first = self.first_tags[record]
        if first is None:
            return ()
        more = self.more_tags[record]
        if more is None:
            return (first,)
        if isinstance(more, str):
            return (first, more)
        return (first, *more)

    def set_tags(self, record: int, tags: Sequence[str]) -> None:
        self.first_tags[record] = tags[0] if tags else None
        if len(tags) < 2:
            self.more_tags[record] = None
        elif len(tags) == 2:
            self.more_tags[record] = tags[1]
        else:
            self.more_tags[record] = tuple(tags[1:])
