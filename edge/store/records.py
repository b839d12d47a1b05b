"""The index's records: what the owner keeps of each stored response, in columns.

A record is a number; its fields are entries of lists and arrays at that number,
and the number of a forgotten record is given to the next one. What a worker
needs to serve a response (status, headers, body) is in its file, not here.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence

from pinedge.edge.store.numbertable import NONE, NumberTable

VID_BYTES = 16  # a variant id is 32 hex digits


class Records:
    """Stored responses by record number, found by variant id or by key.

    Per record: its key (one string for all the variants of a key), its variant
    id as 16 bytes, its response time (which version of the file it is), its
    place in a segment (0: a file of its own), the next record of the same key,
    and the numbers of its tags (TagIndex gives them): about 48 bytes besides the
    key string."""

    def __init__(self) -> None:
        self.keys: list[str | None] = []  # None: a free number
        self.vids = bytearray()
        self.response_times = array("d")
        self.places = array("Q")  # segments.py: 0 for a file of its own
        self.next_of_key = array("I")  # NONE: the key's last record
        self.first_tags = array("I")  # NONE: no tags
        self.second_tags = array("I")  # NONE: fewer than two
        self.other_tags: dict[int, tuple[int, ...]] = {}  # record -> its third tag on
        self.free = array("I")
        self.by_vid = NumberTable(self.vid)
        self.by_key = NumberTable(self.keys.__getitem__)  # a key's first record
        self.added_key = False  # the last add() was its key's first record

    def __len__(self) -> int:
        return len(self.by_vid)

    def __contains__(self, vid: str) -> bool:
        return self.find(vid) >= 0

    def __iter__(self) -> Iterator[str]:
        """The variant ids of every record."""
        return (self.vid(record) for record, key in self.items())

    def items(self) -> Iterator[tuple[int, str]]:
        """Every record with its key."""
        return ((record, key) for record, key in enumerate(self.keys) if key is not None)

    def find(self, vid: str) -> int:
        """The record of variant id `vid`, or -1."""
        return self.by_vid.get(vid)

    def of_key(self, key: str) -> list[int]:
        """The records of `key`, one per stored variant."""
        found = []
        record = self.by_key.get(key)
        if record >= 0:
            following = self.next_of_key
            while record != NONE:
                found.append(record)
                record = following[record]
        return found

    def has_key(self, key: str) -> bool:
        return self.by_key.get(key) >= 0

    def add(self, vid: str, key: str, response_time: float, place: int = 0) -> int:
        """A new record of variant id `vid` (32 hex digits) and `key`, with no tags;
        its number. `added_key` tells whether it is the key's first."""
        raw = bytes.fromhex(vid)
        first = self.by_key.get(key)
        if first >= 0:
            key = self.key(first)  # one string for all of the key's records
        if self.free:
            record = self.free.pop()
            start = VID_BYTES * record
            self.vids[start : start + VID_BYTES] = raw
            self.keys[record] = key
            self.response_times[record] = response_time
            self.places[record] = place
        else:
            record = len(self.keys)
            self.vids += raw
            self.keys.append(key)
            self.response_times.append(response_time)
            self.places.append(place)
            self.next_of_key.append(NONE)
            self.first_tags.append(NONE)
            self.second_tags.append(NONE)
        self.by_vid.add(vid, record)
        if first >= 0:  # after the first, so that the first stays where the table holds it
            self.next_of_key[record] = self.next_of_key[first]
            self.next_of_key[first] = record
        else:
            self.next_of_key[record] = NONE
            self.by_key.add(key, record)
        self.added_key = first < 0
        return record

    def remove(self, record: int) -> bool:
        """Forget `record`, whose tags are cleared; its number is free for the next
        one. Whether it was the last record of its key."""
        key = self.key(record)
        self.by_vid.remove(self.vid(record), record)
        following = self.next_of_key
        first = self.by_key.get(key)
        last = False
        if first == record:
            self.by_key.remove(key, record)
            if following[record] == NONE:
                last = True
            else:
                self.by_key.add(key, following[record])
        else:
            before = first
            while following[before] != record:
                before = following[before]
            following[before] = following[record]
        self.keys[record] = None
        self.free.append(record)
        return last

    def key(self, record: int) -> str:
        key = self.keys[record]
        assert key is not None, "a forgotten record"
        return key

    def live(self, record: int) -> bool:
        return self.keys[record] is not None

    def vid(self, record: int) -> str:
        start = VID_BYTES * record
        return self.vids[start : start + VID_BYTES].hex()

    def fingerprint(self, record: int) -> int:
        """A number below 2**63 that stands for the record's response after the
        record is gone: its variant id's first 63 bits."""
        start = VID_BYTES * record
        return int.from_bytes(self.vids[start : start + 8], "big") >> 1

    def tags(self, record: int) -> tuple[int, ...]:
        """The numbers of the record's tags."""
        first = self.first_tags[record]
        if first == NONE:
            return ()
        second = self.second_tags[record]
        if second == NONE:
            return (first,)
        return (first, second, *self.other_tags.get(record, ()))

    def set_tags(self, record: int, tags: Sequence[int]) -> None:
        self.first_tags[record] = tags[0] if tags else NONE
        self.second_tags[record] = tags[1] if len(tags) > 1 else NONE
        if len(tags) > 2:
            self.other_tags[record] = tuple(tags[2:])
        else:
            self.other_tags.pop(record, None)
