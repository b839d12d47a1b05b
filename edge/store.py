"""The in-memory store: variants under primary keys, bounded in bytes, LRU eviction."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from pinedge.edge.entry import Entry


class MemoryStore:
    """Stored responses by primary key; each key holds its Vary variants.

    The budget counts bytes (bodies, headers and bookkeeping), never entries:
    storing past it evicts the least recently used keys first. An object larger
    than the whole budget is refused rather than emptying the store for it.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.size = 0
        self.evictions = 0
        self._keys: OrderedDict[str, list[Entry]] = OrderedDict()

    def __len__(self) -> int:
        return sum(len(variants) for variants in self._keys.values())

    def variants(self, key: str) -> list[Entry]:
        """The stored variants of `key`, most recently stored first (a use for LRU)."""
        variants = self._keys.get(key)
        if variants is None:
            return []
        self._keys.move_to_end(key)
        return variants

    def put(self, entry: Entry) -> bool:
        """Store `entry`, replacing the variant with the same Vary values; False if too big."""
        if entry.size > self.budget:
            return False
        variants = self._keys.setdefault(entry.key, [])
        self._keys.move_to_end(entry.key)
        for index, old in enumerate(variants):
            if old.vary_names == entry.vary_names and old.vary_values == entry.vary_values:
                self.size -= old.size
                del variants[index]
                break
        variants.insert(0, entry)
        self.size += entry.size
        self._evict(keep=entry.key)
        return True

    def replace(self, old: Entry, new: Entry) -> None:
        """Swap a variant for its refreshed copy (after a 304), if it is still stored."""
        variants = self._keys.get(old.key, [])
        for index, stored in enumerate(variants):
            if stored is old:
                variants[index] = new
                self.size += new.size - old.size
                return
        self.put(new)

    def remove(self, key: str) -> int:
        """Drop every variant of `key`; the number dropped."""
        variants = self._keys.pop(key, [])
        self.size -= sum(v.size for v in variants)
        return len(variants)

    def remove_entry(self, entry: Entry) -> None:
        variants = self._keys.get(entry.key)
        if variants and entry in variants:
            variants.remove(entry)
            self.size -= entry.size
            if not variants:
                del self._keys[entry.key]

    def keys(self) -> Iterator[str]:
        return iter(list(self._keys))

    def _evict(self, keep: str) -> None:
        while self.size > self.budget and self._keys:
            key, variants = next(iter(self._keys.items()))
            if key == keep:
                # The newest key is last in order; only its older variants can go.
                if len(variants) <= 1:
                    return
                victim = variants.pop()
                self.size -= victim.size
                self.evictions += 1
                continue
            del self._keys[key]
            self.size -= sum(v.size for v in variants)
            self.evictions += len(variants)
