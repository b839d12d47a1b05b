"""Which stored objects to keep: byte-budgeted admission and eviction policies.

Pure bookkeeping over keys and sizes, no I/O: the store asks a policy what to
drop and does the dropping. `S3FIFO` is the default; `LRU` is the baseline it
is measured against (bench/eviction.py, bench/EVICTION.md).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

POLICIES = ("s3fifo", "lru")


class Policy(Protocol):
    """What the store calls. Sizes and the budget are in bytes."""

    budget: int
    size: int

    def hit(self, key: str) -> None:
        """Note an access to a resident key (on the hit path: O(1) and cheap)."""
        ...

    def admit(self, key: str, size: int) -> list[str]:
        """Insert or resize `key`; return the keys evicted to stay within the budget.

        The new key is never among them unless it alone exceeds the budget: then
        the answer is `[key]` and the key is not kept.
        """
        ...

    def remove(self, key: str) -> None:
        """Forget `key` (purge, invalidation); unknown keys are ignored."""
        ...

    def __contains__(self, key: str) -> bool: ...

    def __len__(self) -> int: ...


def _check_budget(budget: int) -> int:
    if budget < 0:
        raise ValueError(f"cache budget must be >= 0 bytes, not {budget}")
    return budget


class LRU:
    """Least recently used first out."""

    def __init__(self, budget: int) -> None:
        self.budget = _check_budget(budget)
        self.size = 0
        self._sizes: OrderedDict[str, int] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        return key in self._sizes

    def __len__(self) -> int:
        return len(self._sizes)

    def hit(self, key: str) -> None:
        if key in self._sizes:
            self._sizes.move_to_end(key)

    def admit(self, key: str, size: int) -> list[str]:
        self.remove(key)
        if size > self.budget:
            return [key]
        evicted = []
        while self.size + size > self.budget:
            old, old_size = self._sizes.popitem(last=False)
            self.size -= old_size
            evicted.append(old)
        self._sizes[key] = size
        self.size += size
        return evicted

    def remove(self, key: str) -> None:
        size = self._sizes.pop(key, None)
        if size is not None:
            self.size -= size


class S3FIFO:
    """S3-FIFO (Yang et al., SOSP 2023): a small probationary FIFO, a main FIFO, a ghost FIFO.

    New keys enter the small queue, which holds `small_ratio` of the budget.
    Leaving it, a key that was hit meanwhile moves to main; one that was not is
    dropped and remembered, key only, in the ghost queue, so that coming back
    soon sends it straight to main. Main is a CLOCK with a 2-bit counter: its
    oldest key goes back to the head with one access fewer, or out if it has
    none left. One-hit wonders thus leave from the small queue and never push
    the working set out of main.
    """

    MAX_FREQ = 3

    def __init__(self, budget: int, small_ratio: float = 0.1) -> None:
        if not 0 < small_ratio < 1:
            raise ValueError(f"small_ratio must be between 0 and 1, not {small_ratio}")
        self.budget = _check_budget(budget)
        self.size = 0
        self.small_budget = int(budget * small_ratio)
        self._small: OrderedDict[str, int] = OrderedDict()
        self._main: OrderedDict[str, int] = OrderedDict()
        self._ghost: OrderedDict[str, None] = OrderedDict()
        self._freq: dict[str, int] = {}
        self._small_bytes = 0

    def __contains__(self, key: str) -> bool:
        return key in self._freq

    def __len__(self) -> int:
        return len(self._freq)

    def hit(self, key: str) -> None:
        freq = self._freq.get(key)
        if freq is not None and freq < self.MAX_FREQ:
            self._freq[key] = freq + 1

    def admit(self, key: str, size: int) -> list[str]:
        to_main, freq = False, 0
        if key in self._freq:
            to_main, freq = key in self._main, self._freq[key]
            self.remove(key)
        if size > self.budget:
            return [key]
        if key in self._ghost:
            del self._ghost[key]
            to_main = True
        evicted = []
        while self.size + size > self.budget:
            evicted.append(self._evict())
        # An object bigger than the whole small queue could never pass through
        # it (it would flush everything else there), so it starts in main.
        if to_main or size > self.small_budget:
            self._main[key] = size
        else:
            self._small[key] = size
            self._small_bytes += size
        self._freq[key] = freq
        self.size += size
        return evicted

    def remove(self, key: str) -> None:
        if self._freq.pop(key, None) is None:
            return
        size = self._small.pop(key, None)
        if size is not None:
            self._small_bytes -= size
        else:
            size = self._main.pop(key)
        self.size -= size

    def _evict(self) -> str:
        if self._small_bytes > self.small_budget or not self._main:
            victim = self._evict_small()
            if victim is not None:
                return victim
        return self._evict_main()

    def _evict_small(self) -> str | None:
        """Drop the oldest small key not hit since it came in, promoting hit ones on the way."""
        while self._small:
            key, size = self._small.popitem(last=False)
            self._small_bytes -= size
            if self._freq[key] > 0:
                self._freq[key] = 0
                self._main[key] = size
                continue
            del self._freq[key]
            self.size -= size
            self._remember(key)
            return key
        return None

    def _evict_main(self) -> str:
        while True:
            key, size = self._main.popitem(last=False)
            freq = self._freq[key]
            if freq > 0:
                self._freq[key] = freq - 1
                self._main[key] = size
                continue
            del self._freq[key]
            self.size -= size
            return key

    def _remember(self, key: str) -> None:
        self._ghost[key] = None
        # The paper sizes the ghost like main in entries; the small queue's
        # count is a floor so that it works before main has filled up.
        while len(self._ghost) > max(len(self._main), len(self._small), 1):
            self._ghost.popitem(last=False)


def make_policy(name: str, budget: int) -> Policy:
    """The policy called `name` ("s3fifo", the default choice, or "lru") over `budget` bytes."""
    if name == "s3fifo":
        return S3FIFO(budget)
    if name == "lru":
        return LRU(budget)
    raise ValueError(f"unknown cache policy {name!r}; choose one of {', '.join(POLICIES)}")
