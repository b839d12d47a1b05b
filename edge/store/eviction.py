"""Which stored objects to keep: byte-budgeted admission and eviction policies.

Pure bookkeeping over record numbers and sizes, no I/O: the store asks a policy
what to drop and does the dropping. A record number stands for one object while
it is admitted; the store may give it to another object once it was evicted or
removed. `S3FIFO` is the default; `LRU` is the baseline it is measured against
(bench/eviction.py, bench/EVICTION.md). Both keep what they know of a record in
arrays indexed by its number, not in an object per record.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from typing import Protocol

from pinedge.edge.store.numbertable import NONE, NumberTable
from pinedge.edge.store.queues import RecordQueues

POLICIES = ("s3fifo", "lru")

Fingerprint = Callable[[int], int]


class Policy(Protocol):
    """What the store calls. Sizes and the budget are in bytes."""

    budget: int
    size: int

    def hit(self, record: int) -> None:
        """Note an access to a resident record (on the hit path: O(1) and cheap)."""
        ...

    def admit(self, record: int, size: int) -> list[int]:
        """Insert or resize `record`; return the records evicted to stay within the budget.

        The new record is never among them unless it alone exceeds the budget: then
        the answer is `[record]` and it is not kept.
        """
        ...

    def remove(self, record: int) -> None:
        """Forget `record` (purge, invalidation); unknown records are ignored."""
        ...

    def size_of(self, record: int) -> int:
        """The size a resident record was admitted with."""
        ...

    def __contains__(self, record: int) -> bool: ...

    def __len__(self) -> int: ...


def _check_budget(budget: int) -> int:
    if budget < 0:
        raise ValueError(f"cache budget must be >= 0 bytes, not {budget}")
    return budget


def _itself(record: int) -> int:
    return record


class _Resident:
    """Queues of record numbers with each record's size, grown as numbers come."""

    def __init__(self, budget: int, queues: int) -> None:
        self.budget = _check_budget(budget)
        self.size = 0
        self.queues = RecordQueues(queues)
        self.sizes = array("Q")
        self.freq = bytearray()

    def __contains__(self, record: int) -> bool:
        queue_of = self.queues.queue_of
        return record < len(queue_of) and queue_of[record] != 0

    def __len__(self) -> int:
        return sum(self.queues.lengths)

    def size_of(self, record: int) -> int:
        return self.sizes[record]

    def _cover(self, record: int) -> None:
        have = len(self.freq)
        if record >= have:
            size = max(record + 1, 2 * have, 1024)
            self.queues.cover(size)
            self.sizes.frombytes(bytes(8 * (size - have)))
            self.freq.extend(bytes(size - have))


class LRU(_Resident):
    """Least recently used first out."""

    def __init__(self, budget: int) -> None:
        super().__init__(budget, 1)

    def hit(self, record: int) -> None:
        if record in self:
            self.queues.remove(record)
            self.queues.push(1, record)

    def admit(self, record: int, size: int) -> list[int]:
        self._cover(record)
        self.remove(record)
        if size > self.budget:
            return [record]
        evicted = []
        while self.size + size > self.budget:
            old = self.queues.pop(1)
            self.size -= self.sizes[old]
            evicted.append(old)
        self.queues.push(1, record)
        self.sizes[record] = size
        self.size += size
        return evicted

    def remove(self, record: int) -> None:
        if self.queues.remove(record):
            self.size -= self.sizes[record]


SMALL, MAIN = 1, 2


class S3FIFO(_Resident):
    """S3-FIFO (Yang et al., SOSP 2023): a small probationary FIFO, a main FIFO, a ghost FIFO.

    New records enter the small queue, which holds `small_ratio` of the budget.
    Leaving it, a record that was hit meanwhile moves to main; one that was not is
    dropped and remembered, fingerprint only, in the ghost queue, so that its
    object coming back soon goes straight to main. Main is a CLOCK with a 2-bit
    counter: its oldest record goes back to the head with one access fewer, or
    out if it has none left. One-hit wonders thus leave from the small queue and
    never push the working set out of main.

    `fingerprint(record)` is a number below 2**63 that stands for the record's
    object after the record is gone (the store gives its variant id's first
    bits); by default the record number itself, for callers that never give a
    number to another object.
    """

    MAX_FREQ = 3

    def __init__(
        self, budget: int, small_ratio: float = 0.1, fingerprint: Fingerprint | None = None
    ) -> None:
        if not 0 < small_ratio < 1:
            raise ValueError(f"small_ratio must be between 0 and 1, not {small_ratio}")
        super().__init__(budget, 2)
        self.small_budget = int(budget * small_ratio)
        self.fingerprint = fingerprint or _itself
        self._ghost = Ghost()
        self._small_bytes = 0

    def hit(self, record: int) -> None:
        queue_of = self.queues.queue_of
        if record < len(queue_of) and queue_of[record]:
            freq = self.freq[record]
            if freq < self.MAX_FREQ:
                self.freq[record] = freq + 1

    def admit(self, record: int, size: int) -> list[int]:
        self._cover(record)
        to_main, freq = False, 0
        queue = self.queues.queue_of[record]
        if queue:
            to_main, freq = queue == MAIN, self.freq[record]
            self.remove(record)
        if size > self.budget:
            return [record]
        ghost = self._ghost
        if ghost.positions.count and ghost.discard(self.fingerprint(record)):
            to_main = True
        evicted = []
        while self.size + size > self.budget:
            evicted.append(self._evict())
        # An object bigger than the whole small queue could never pass through
        # it (it would flush everything else there), so it starts in main.
        if to_main or size > self.small_budget:
            self.queues.push(MAIN, record)
        else:
            self.queues.push(SMALL, record)
            self._small_bytes += size
        self.freq[record] = freq
        self.sizes[record] = size
        self.size += size
        return evicted

    def remove(self, record: int) -> None:
        queue = self.queues.remove(record)
        if queue:
            size = self.sizes[record]
            if queue == SMALL:
                self._small_bytes -= size
            self.size -= size

    def _evict(self) -> int:
        if self._small_bytes > self.small_budget or not self.queues.lengths[MAIN]:
            victim = self._evict_small()
            if victim != NONE:
                return victim
        return self._evict_main()

    def _evict_small(self) -> int:
        """Drop the oldest small record not hit since it came in, promoting hit ones
        on the way; NONE if the small queue is empty."""
        queues, freq, sizes = self.queues, self.freq, self.sizes
        while True:
            record = queues.pop(SMALL)
            if record == NONE:
                return NONE
            size = sizes[record]
            self._small_bytes -= size
            if freq[record] > 0:
                freq[record] = 0
                queues.push(MAIN, record)
                continue
            self.size -= size
            self._remember(self.fingerprint(record))
            return record

    def _evict_main(self) -> int:
        queues, freq = self.queues, self.freq
        while True:
            record = queues.pop(MAIN)
            if freq[record] > 0:
                freq[record] -= 1
                queues.push(MAIN, record)
                continue
            self.size -= self.sizes[record]
            return record

    def _remember(self, fingerprint: int) -> None:
        ghost = self._ghost
        ghost.add(fingerprint)
        # The paper sizes the ghost like main in entries; the small queue's
        # count is a floor so that it works before main has filled up.
        lengths = self.queues.lengths
        while len(ghost) > max(lengths[MAIN], lengths[SMALL], 1):
            ghost.pop_oldest()


POSITIONS = 0x7FFFFFFF  # positions in the ghost's ring are kept modulo 2**31


class Ghost:
    """An insertion-ordered set of fingerprints (below 2**63): what S3-FIFO
    remembers of objects its small queue dropped, once their records are gone.

    The fingerprints are kept in a ring, oldest first (0 where one was taken out
    again), and found through a NumberTable of their positions: 24 to 40 bytes each."""

    COMPACT_MIN = 4096  # zeros or taken ones the ring may hold before it is compacted

    def __init__(self) -> None:
        self.ring = array("Q")  # fingerprint + 1
        self.head = 0  # the oldest one in the ring
        self.base = 0  # the position of ring[0]
        self.holes = 0  # zeros from head on
        self.positions = NumberTable(self._fingerprint_at)

    def __len__(self) -> int:
        return len(self.positions)

    def __contains__(self, fingerprint: int) -> bool:
        return self.positions.get(fingerprint) >= 0

    def _fingerprint_at(self, position: int) -> int:
        return self.ring[(position - self.base) & POSITIONS] - 1

    def add(self, fingerprint: int) -> None:
        """Remember `fingerprint` as the newest, unless it is remembered already."""
        if self.positions.get(fingerprint) < 0:
            position = (self.base + len(self.ring)) & POSITIONS
            self.ring.append(fingerprint + 1)
            self.positions.add(fingerprint, position)

    def discard(self, fingerprint: int) -> bool:
        """Forget `fingerprint`; whether it was remembered."""
        position = self.positions.get(fingerprint)
        if position < 0:
            return False
        self.positions.remove(fingerprint, position)
        self.ring[(position - self.base) & POSITIONS] = 0
        self.holes += 1
        if self.holes > len(self.positions) + self.COMPACT_MIN:
            self._compact()
        return True

    def pop_oldest(self) -> None:
        ring = self.ring
        while not ring[self.head]:
            self.head += 1
            self.holes -= 1
        self.positions.remove(ring[self.head] - 1, (self.base + self.head) & POSITIONS)
        self.head += 1
        if self.head >= self.COMPACT_MIN and 2 * self.head >= len(ring):
            del ring[: self.head]
            self.base = (self.base + self.head) & POSITIONS
            self.head = 0

    def _compact(self) -> None:
        """Take out the zeros: more of them than fingerprints, so this costs no more
        than the discards that made them."""
        kept = [held - 1 for held in self.ring[self.head :] if held]
        self.ring = array("Q")
        self.head = self.base = self.holes = 0
        self.positions = NumberTable(self._fingerprint_at)
        for fingerprint in kept:
            self.add(fingerprint)


def make_policy(name: str, budget: int, fingerprint: Fingerprint | None = None) -> Policy:
    """The policy called `name` ("s3fifo", the default choice, or "lru") over `budget`
    bytes; `fingerprint` as S3FIFO takes it."""
    if name == "s3fifo":
        return S3FIFO(budget, fingerprint=fingerprint)
    if name == "lru":
        return LRU(budget)
    raise ValueError(f"unknown cache policy {name!r}; choose one of {', '.join(POLICIES)}")
