"""A hash table from keys to small numbers that stores only the numbers.

Each number knows its own key (`key_of(number)`: the variant id of a record, the
fingerprint at a position of a queue), so a slot is 8 bytes of an array where a
dict would hold a key object and an int object besides its slot: the number and
32 bits of its key's hash, which place it when the table grows and turn away most
keys that are not its own without asking key_of() for its key. Open addressing
with linear probing, split into SHARDS tables by the key's hash, so that growing
one moves 1/SHARDS of the entries: a few milliseconds among ten million.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Hashable

SHARD_BITS = 8
SHARDS = 1 << SHARD_BITS
SHARD_MASK = SHARDS - 1
FIRST_SLOTS = 8  # per shard; a shard doubles when it is half full
MAX_NUMBER = 0xFFFFFFFE  # a slot holds number + 1 in its low half; 0 is an empty slot
LOW = 0xFFFFFFFF
NONE = 0xFFFFFFFF  # no number, where an array of numbers needs to say so


class NumberTable:
    """Numbers 0..MAX_NUMBER found by their keys; a key has at most one number."""

    def __init__(self, key_of: Callable[[int], Hashable]) -> None:
        self.key_of = key_of
        self.shards = [array("Q", bytes(8 * FIRST_SLOTS)) for _ in range(SHARDS)]
        self.counts = [0] * SHARDS
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def get(self, key: Hashable) -> int:
        """The number of `key`, or -1."""
        spread = hash(key)
        slots = self.shards[spread & SHARD_MASK]
        mask = len(slots) - 1
        high = (spread >> SHARD_BITS) & LOW
        at = high & mask
        key_of = self.key_of
        while True:
            held = slots[at]
            if not held:
                return -1
            if held >> 32 == high and key_of((held & LOW) - 1) == key:
                return (held & LOW) - 1
            at = (at + 1) & mask

    def add(self, key: Hashable, number: int) -> None:
        """Hold `number` for `key`, which holds none yet."""
        spread = hash(key)
        shard = spread & SHARD_MASK
        slots = self.shards[shard]
        if 2 * (self.counts[shard] + 1) > len(slots):
            slots = self._grow(shard)
        mask = len(slots) - 1
        high = (spread >> SHARD_BITS) & LOW
        at = high & mask
        while slots[at]:
            at = (at + 1) & mask
        slots[at] = high << 32 | (number + 1)
        self.counts[shard] += 1
        self.count += 1

    def remove(self, key: Hashable, number: int) -> None:
        """Forget `number`, held for `key`; nothing if it is not held."""
        spread = hash(key)
        shard = spread & SHARD_MASK
        slots = self.shards[shard]
        mask = len(slots) - 1
        high = (spread >> SHARD_BITS) & LOW
        at = high & mask
        wanted = high << 32 | (number + 1)
        while slots[at] != wanted:
            if not slots[at]:
                return
            at = (at + 1) & mask
        slots[at] = 0
        self.counts[shard] -= 1
        self.count -= 1
        # Close the gap: a later entry of the same run moves into it unless its own
        # home lies between the gap and where it is now.
        gap, scan = at, at
        while True:
            scan = (scan + 1) & mask
            held = slots[scan]
            if not held:
                return
            home = (held >> 32) & mask
            if (scan - home) & mask >= (scan - gap) & mask:
                slots[gap] = held
                slots[scan] = 0
                gap = scan

    def _grow(self, shard: int) -> array[int]:
        old = self.shards[shard]
        slots = array("Q", bytes(16 * len(old)))
        mask = len(slots) - 1
        for held in old:
            if held:
                at = (held >> 32) & mask
                while slots[at]:
                    at = (at + 1) & mask
                slots[at] = held
        self.shards[shard] = slots
        return slots
