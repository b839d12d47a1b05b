"""Counters in shared memory: one per key slot and tag slot, that tell a worker its
copy changed; and how many stored keys hash to each of a larger set of slots, that
tell a worker a key is not stored without asking the owner."""

from __future__ import annotations

import os
import secrets
import zlib
from collections.abc import Iterable
from multiprocessing import shared_memory

from pinedge.edge.store.leftovers import remove_leftover_segments

GENERATIONS_PREFIX = "pinedge-generations-"
SLOTS = 1 << 20  # generation slots (4 MiB of shared memory); collisions only cost a reload
PURGES = SLOTS  # the counter after the slots: bumped first by every purge
# After PURGES, the stored keys per presence slot: 32 MiB of shared memory, of which
# only the pages of slots ever used are allocated. A new key's slot is empty unless
# another key shares it, so with a few million keys most misses ask nobody.
PRESENCE = PURGES + 1
PRESENCE_SLOTS = 1 << 23
# Then, per generation slot, how the last fill of a key in it ended and a count of
# such endings (fills.py): 8 MiB more, allocated as used.
OUTCOMES = PRESENCE + PRESENCE_SLOTS
OUTCOME_COUNTS = OUTCOMES + SLOTS
# Then one flag, set while the owner indexes a warm store directory (loader.py): a
# presence counter at zero does not yet say that a key is not stored.
LOADING = OUTCOME_COUNTS + SLOTS
COUNTERS = LOADING + 1


_last_key = ""  # the key checksum() was last asked for, and its checksum
_last_checksum = zlib.crc32(b"")


def checksum(key: str) -> int:
    """The CRC-32 of a key, which every slot of it is taken from. The last one is
    kept: a miss asks for its key's slots four times (whether it is stored, its
    node-wide fill taken and let go, its admission)."""
    global _last_key, _last_checksum
    if key is not _last_key:
        _last_checksum = zlib.crc32(key.encode("utf-8", "surrogateescape"))
        _last_key = key
    return _last_checksum


def slot_of(key: str) -> int:
    return checksum(key) & (SLOTS - 1)


def slots_of(key: str) -> tuple[int, int]:
    """A key's generation slot and its presence counter's index."""
    crc = checksum(key)
    return crc & (SLOTS - 1), PRESENCE + (crc & (PRESENCE_SLOTS - 1))


def tag_slot(tag: str) -> int:
    """A tag's generation slot; a cache key never starts with NUL, so a tag and a
    key share a slot only by a collision."""
    return zlib.crc32(b"\x00" + tag.encode("utf-8", "surrogateescape")) & (SLOTS - 1)


class Generations:
    """A shared array of counters, one per slot (keys and tags hash into the same
    slots), and after them PURGES. A slot is bumped whenever what it covers changes
    (a key's stored variants, a tag purged), so that a worker can check on each hit,
    for the price of a memory read per slot, that its own copy is still the stored
    one; collisions only cost a reload."""

    def __init__(self, name: str | None = None) -> None:
        if name is None:
            # Named after this process, so that a node started after one that was
            # killed can remove what it left.
            remove_leftover_segments(GENERATIONS_PREFIX)
            name = f"{GENERATIONS_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
            self.memory = shared_memory.SharedMemory(name=name, create=True, size=COUNTERS * 4)
            self.owned = True
        else:
            self.memory = shared_memory.SharedMemory(name=name)
            # Workers are spawned children and share their supervisor's resource
            # tracker, which unlinks the segment only when the supervisor is gone.
            self.owned = False
        buf = self.memory.buf
        assert buf is not None  # None only once the segment is closed
        self.counters = buf.cast("I")

    @property
    def name(self) -> str:
        return self.memory.name

    def bump(self, key: str) -> None:
        self.bump_slots((slot_of(key),))

    def bump_slots(self, slots: Iterable[int]) -> None:
        counters = self.counters
        for slot in slots:  # inline: a call per slot was most of a large purge's time
            counters[slot] = (counters[slot] + 1) & 0xFFFFFFFF

    def admitted(self, key: str, new_key: bool) -> None:
        """bump(key), and count_key(key, 1) for a key that was not stored: one
        checksum for both, as the owner does this for every admission."""
        slot, presence = slots_of(key)
        counters = self.counters
        counters[slot] = (counters[slot] + 1) & 0xFFFFFFFF
        if new_key:
            counters[presence] = (counters[presence] + 1) & 0xFFFFFFFF

    def count_key(self, key: str, change: int) -> None:
        """A key is stored (+1) or no longer stored (-1)."""
        index = slots_of(key)[1]
        counters = self.counters
        counters[index] = (counters[index] + change) & 0xFFFFFFFF

    def bump_purges(self) -> None:
        """Called before a purge bumps anything else: a worker that reads PURGES
        before and after reading other slots knows whether a purge came between."""
        self.bump_slots((PURGES,))

    def close(self) -> None:
        self.counters.release()
        self.memory.close()
        if self.owned:
            self.memory.unlink()
