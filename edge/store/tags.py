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
    """The records of a tag that has more than one, with the tag's name: the one
    string that every record's tag column refers to. Most such tags name a few
    records: their numbers take 4 bytes each in an array, searched by a scan; a
    set takes 30 to 80 bytes a member, worth it only where a scan would be long."""

    __slots__ = ("name", "records")

    def __init__(self, name: str, records: Iterable[int]) -> None:
        self.name = name
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
    """Which records each tag names, for purges by tag: the record's number for a
    tag with one (most tags name one object), its Members for more. Keeps each
    record's tag columns (Records.set_tags) pointing at the names held here."""

    def __init__(self, records: Records) -> None:
        self.records = records
        self.members: dict[str, int | Members] = {}

    def __len__(self) -> int:
        return len(self.members)

    def tag(self, record: int, tags: Iterable[str]) -> None:
        """Index `record`, which has no tags yet, under `tags`."""
        self.records.set_tags(record, [self.add(tag, record) for tag in tags])

    def untag(self, record: int) -> None:
        """Take `record` out of the index and clear its tags."""
        for tag in self.records.tags(record):
            self.discard(tag, record)
        self.records.set_tags(record, ())

    def add(self, tag: str, record: int) -> str:
        """Add `record` to the members of `tag`; the name string the index holds."""
        held = self.members.get(tag)
        if held is None:
            self.members[tag] = record
            return tag
        if isinstance(held, Members):
            held.add(record)
            return held.name
        if held == record:
            return self._name_held_by(held, tag)
        name = self._name_held_by(held, tag)
        self.members[name] = Members(name, (held, record))
        return name

    def discard(self, tag: str, record: int) -> None:
        held = self.members.get(tag)
        if isinstance(held, Members):
            held.discard(record)
            if len(held) == 1:
                self.members[tag] = held.pop()
        elif held == record:
            del self.members[tag]

    def pop(self, tag: str) -> Members | None:
        """Take `tag` out of the index (a purge); the records it named."""
        held = self.members.pop(tag, None)
        if held is None or isinstance(held, Members):
            return held
        return Members(tag, (held,))

    def _name_held_by(self, record: int, tag: str) -> str:
        for name in self.records.tags(record):
            if name == tag:
                return name
        return tag
