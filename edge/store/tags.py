"""Tags: the names an origin gives its responses so that they can be purged together.

They come from `Surrogate-Key` (space-separated, Fastly's field) and `Cache-Tag`
(comma-separated, Cloudflare's). The store indexes every object under its tags;
to keep that index bounded, an object keeps at most MAX_TAGS tags of at most
MAX_TAG_BYTES bytes each (longer ones are ignored, and past MAX_TAGS the first in
sorted order are kept, so every worker keeps the same ones). The owner's
TagIndex says which records each tag names.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator

from pinedge.edge.store.numbertable import NONE, NumberTable
from pinedge.edge.store.records import Records

TAG_FIELDS = ("Surrogate-Key", "Cache-Tag")
MAX_TAGS = 128
MAX_TAG_BYTES = 256


def tags_of(headers: Iterable[tuple[str, str]]) -> frozenset[str]:
    """The tags named by these header fields (name, value pairs)."""
    found: set[str] = set()
    for name, value in headers:
        lower = name.lower()
        if lower == "surrogate-key":
            found.update(value.split())
        elif lower == "cache-tag":
            found.update(tag.strip() for tag in value.split(","))
    kept = {
        tag for tag in found if tag and len(tag.encode("utf-8", "surrogateescape")) <= MAX_TAG_BYTES
    }
    if len(kept) > MAX_TAGS:
        kept = set(sorted(kept)[:MAX_TAGS])
    return frozenset(kept)


FEW = 128  # members kept in an array (4 bytes each); past this, a set (O(1) removal)


class Members:
    """The records of a tag that names more than one. Most such tags name a few:
    their numbers take 4 bytes each in an array, searched by a scan; a set takes
    30 to 80 bytes a member, worth it only where a scan would be long."""

    __slots__ = ("records",)

    def __init__(self, records: Iterable[int]) -> None:
        self.records: array[int] | set[int] = array("I", records)
        if len(self.records) > FEW:
            self.records = set(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, record: int) -> bool:
        return record in self.records

    def __iter__(self) -> Iterator[int]:
        return iter(self.records)

    def add(self, record: int) -> None:
        records = self.records
        if isinstance(records, set):
            records.add(record)
        elif record not in records:
            records.append(record)
            if len(records) > FEW:
                self.records = set(records)

    def discard(self, record: int) -> None:
        records = self.records
        if isinstance(records, set):
            records.discard(record)
        elif record in records:
            records.remove(record)

    def pop(self) -> int:
        return self.records.pop()


class TagIndex:
    """Which records each tag names, for purges by tag.

    A tag is a number while any record has it (in the index, or set aside by a
    purge not yet settled): its name is `names[number]`, found through a
    NumberTable; `single[number]` is the record it names when it names one (most
    tags name one object), `many[number]` its Members when it names more;
    `holders[number]` counts the records whose tag columns (Records.set_tags)
    hold the number, which is given to another tag only once none does.
    About 30 bytes a tag besides its name, and 4 a record in a tag's Members."""

    def __init__(self, records: Records) -> None:
        self.records = records
        self.names: list[str | None] = []
        self.by_name = NumberTable(self.names.__getitem__)
        self.single = array("I")  # NONE: none, or many holds them
        self.many: dict[int, Members] = {}
        self.holders = array("I")
        self.free = array("I")

    def tag(self, record: int, tags: Iterable[str]) -> None:
        """Index `record`, which has no tags yet, under `tags`."""
        numbers = []
        for name in tags:
            number = self.by_name.get(name)
            if number < 0:
                number = self._new(name)
            self.holders[number] += 1
            self._join(number, record)
            numbers.append(number)
        self.records.set_tags(record, numbers)

    def untag(self, record: int) -> None:
        """Take `record` out of the index and clear its tags."""
        for number in self.records.tags(record):
            self._leave(number, record)
            self.holders[number] -= 1
            if not self.holders[number]:
                name = self.names[number]
                self.by_name.remove(name, number)
                self.names[number] = None
                self.free.append(number)
        self.records.set_tags(record, ())

    def names_of(self, record: int) -> tuple[str, ...]:
        names = self.names
        return tuple(names[number] or "" for number in self.records.tags(record))

    def pop(self, name: str) -> Members | None:
        """Take what `name` names out of the index (a purge): its records, which
        keep the tag."""
        number = self.by_name.get(name)
        if number < 0:
            return None
        single = self.single[number]
        if single != NONE:
            self.single[number] = NONE
            return Members((single,))
        return self.many.pop(number, None)

    def restore(self, name: str, record: int) -> None:
        """Index `record` under `name` again: one of its tags, purged soft."""
        number = self.by_name.get(name)
        if number >= 0:
            self._join(number, record)

    def _new(self, name: str) -> int:
        if self.free:
            number = self.free.pop()
            self.names[number] = name
            self.single[number] = NONE
        else:
            number = len(self.names)
            self.names.append(name)
            self.single.append(NONE)
            self.holders.append(0)
        self.by_name.add(name, number)
        return number

    def _join(self, number: int, record: int) -> None:
        single = self.single[number]
        if single == NONE:
            members = self.many.get(number)
            if members is None:
                self.single[number] = record
            else:
                members.add(record)
        elif single != record:
            self.single[number] = NONE
            self.many[number] = Members((single, record))

    def _leave(self, number: int, record: int) -> None:
        if self.single[number] == record:
            self.single[number] = NONE
            return
        members = self.many.get(number)
        if members is not None:
            members.discard(record)
            if len(members) == 1:
                self.single[number] = members.pop()
                del self.many[number]
