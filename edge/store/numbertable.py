"""A hash table from keys to small numbers that stores only the numbers.

Each number knows its own key (`key_of(number)`: the variant id of a record, the
fingerprint at a position of a queue), so a slot is 4 bytes of an array where a
dict would hold a key object and an int object besides its slot. Open addressing
with linear probing, split into SHARDS tables by the key's hash, so that growing
one rehashes 1/SHARDS of the entries: a few milliseconds among ten million.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Hashable

SHARD_BITS = 8
SHARDS = 1 << SHARD_BITS
SHARD_MASK = SHARDS - 1
FIRST_SLOTS = 8  # per shard; a shard doubles when it is half full
MAX_NUMBER = 0xFFFFFFFE  # a slot holds number + 1; 0 is an empty slot
NONE = 0xFFFFFFFF  # no number, where an array of numbers needs to say so


class NumberTable:
    """Numbers 0..MAX_NUMBER found by their keys; a key has at most one number."""

    def __init__(self, key_of: Callable[[int], Hashable]) -> None:
        self.key_of = key_of
        self.shards = [array("I", bytes(4 * FIRST_SLOTS)) for _ in range(SHARDS)]
        self.counts = [0] * SHARDS
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def get(self, key: Hashable) -> int:
        """The number of `key`, or -1."""
        spread = hash(key)
        slots = self.shards[spread & SHARD_MASK]
        mask = len(slots) - 1
        at = (spread >> SHARD_BITS) & mask
        key_of = self.key_of
        while True:
            held = slots[at]
            if not held:
                return -1
            if key_of(held - 1) == key:
                return held - 1
            at = (at + 1) & mask

    def add(self, key: Hashable, number: int) -> None:
        """Hold `number` for `key`, which holds none yet."""
        spread = hash(key)
        shard = spread & SHARD_MASK
        slots = self.shards[shard]
        if 2 * (self.counts[shard] + 1) > len(slots):
            slots = self._grow(shard)
        mask = len(slots) - 1
        at = (spread >> SHARD_BITS) & mask
        while slots[at]:
            at = (at + 1) & mask
        slots[at] = number + 1
        self.counts[shard] += 1
        self.count += 1

    def remove(self, key: Hashable, number: int) -> None:
        """Forget `number`, held for `key`; nothing if it is not held."""
        spread = hash(key)
        shard = spread & SHARD_MASK
        slots = self.shards[shard]
        mask = len(slots) - 1
        at = (spread >> SHARD_BITS) & mask
        wanted = number + 1
        while slots[at] != wanted:
            if not slots[at]:
                return
            at = (at + 1) & mask
        slots[at] = 0
        self.counts[shard] -= 1
        self.count -= 1
        # Close the gap: a later entry of the same run moves into it unless its own
        # home lies between the gap and where it is now.
        key_of = self.key_of
        gap, scan = at, at
        while True:
            scan = (scan + 1) & mask
            held = slots[scan]
            if not held:
                return
            home = (hash(key_of(held - 1)) >> SHARD_BITS) & mask
            if (scan - home) & mask >= (scan - gap) & mask:
                slots[gap] = held
                slots[scan] = 0
                gap = scan

    def _grow(self, shard: int) -> array[int]:
        old = self.shards[shard]
        slots = array("I", bytes(8 * len(old)))
        mask = len(slots) - 1
        key_of = self.key_of
        for held in old:
            if held:
                at = (hash(key_of(held - 1)) >> SHARD_BITS) & mask
                while slots[at]:
                    at = (at + 1) & mask
                slots[at] = held
        self.shards[shard] = slots
        return slots
