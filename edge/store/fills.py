"""Node-wide collapsed forwarding: one worker fetches a key, the others wait for its verdict.

The workers settle it among themselves, without asking the store's owner. A
worker that fetches a key holds an exclusive lock (fcntl) on one byte of a lock
file, the byte of the key's generation slot; the kernel lets the lock go if the
worker dies. A worker that finds the byte locked waits for it, polling, and then
reads how the fetch ended in the outcome table in shared memory (generations.py),
where the fetching worker wrote it before letting go. Keys that share a slot
share a lock: rarely, one waits for another's fetch, then fetches its own.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from enum import StrEnum
from pathlib import Path

from pinedge.edge.store.generations import OUTCOME_COUNTS, OUTCOMES, SLOTS, checksum, slot_of


class FillVerdict(StrEnum):
    """What a worker that asks to fetch a key is told."""

    LEAD = "lead"  # fetch it, then release it with how the fetch ended
    STORED = "stored"  # the worker that fetched it stored it: look it up
    PASS = "pass"  # it was not storable: fetch it alone
    ERROR = "error"  # its fetch failed: fetch it alone
    ABANDONED = "abandoned"  # its worker went away without saying: ask again
    TIMEOUT = "timeout"  # no verdict in time: fetch it alone


# An outcome in the shared table: the key's checksum but its low three bits, which
# hold the verdict's code.
CODES = {FillVerdict.STORED: 1, FillVerdict.PASS: 2, FillVerdict.ERROR: 3, FillVerdict.ABANDONED: 4}
VERDICTS = {code: verdict for verdict, code in CODES.items()}
MARK = 0xFFFFFFF8
FIRST_POLL = 0.001  # seconds; doubled each time up to LAST_POLL
LAST_POLL = 0.02


class NodeFills:
    """This worker's side of the node's fills: the lock file at `path` and the
    shared `counters` (generations.py). A node's only worker (`alone`) takes no
    locks and writes no outcomes: no other worker waits for what it fetches.
    While a SIGHUP replaces workers, an old and a new one overlap for a moment;
    if either is a lone worker they may both fetch a key, as two workers do when
    a wait times out."""

    def __init__(self, path: Path, counters: memoryview, alone: bool = False) -> None:
        self.path = path
        self.alone = alone
        self.fd = -1  # opened at the first fetch: the store's directory may come later
        self.counters = counters
        # Slots this worker holds, with how many of its fills hold each: the lock
        # is the process's, so it is taken by the first and let go by the last.
        self.held: dict[int, int] = {}
        # The keys this worker fetches, each with how its fetch ends, for another
        # of its requests that asks before the fill is released (the body is in,
        # the response not yet stored); the future is made when one asks.
        self.leading: dict[str, asyncio.Future[FillVerdict] | None] = {}

    async def acquire(self, key: str, timeout: float) -> FillVerdict:
        """LEAD if this worker should fetch `key` (release() it afterwards); otherwise,
        once the worker fetching it is done, how its fetch ended (STORED, PASS,
        ERROR), or TIMEOUT after `timeout` seconds."""
        if key in self.leading:
            ours = self.leading[key]
            if ours is None:
                ours = self.leading[key] = asyncio.get_running_loop().create_future()
            try:
                return await asyncio.wait_for(asyncio.shield(ours), timeout)
            except TimeoutError:
                return FillVerdict.TIMEOUT
        crc = checksum(key)
        slot = crc & (SLOTS - 1)
        if self._take(slot):
            return self._lead(key)
        counters = self.counters
        count = counters[OUTCOME_COUNTS + slot]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pause = FIRST_POLL
        while not self._take(slot):
            if loop.time() >= deadline:
                return FillVerdict.TIMEOUT
            await asyncio.sleep(pause)
            pause = min(2 * pause, LAST_POLL)
        outcome = counters[OUTCOMES + slot]
        if counters[OUTCOME_COUNTS + slot] != count and outcome & MARK == crc & MARK:
            verdict = VERDICTS.get(outcome & ~MARK)
            if verdict is not None and verdict is not FillVerdict.ABANDONED:
                self._let_go(slot)
                return verdict
        # Its worker went away without a word, or the fetch was of another key in
        # the slot: this worker holds the lock now, and fetches.
        return self._lead(key)

    def lead_now(self, key: str) -> bool:
        """acquire() when it would answer LEAD at once: True when nothing in the node
        fetches `key` (release() it afterwards); False where acquire() would wait."""
        if key in self.leading or not self._take(slot_of(key)):
            return False
        self._lead(key)
        return True

    def _lead(self, key: str) -> FillVerdict:
        self.leading[key] = None
        return FillVerdict.LEAD

    def release(self, key: str, outcome: FillVerdict) -> None:
        """How this worker's fetch of `key` ended, for the workers waiting for it."""
        if key not in self.leading:
            return
        ours = self.leading.pop(key)
        if ours is not None:
            ours.set_result(outcome)
        if self.alone:
            self._let_go(slot_of(key))
            return
        crc = checksum(key)
        slot = crc & (SLOTS - 1)
        counters = self.counters
        counters[OUTCOMES + slot] = (crc & MARK) | CODES.get(outcome, 0)
        counters[OUTCOME_COUNTS + slot] = (counters[OUTCOME_COUNTS + slot] + 1) & 0xFFFFFFFF
        self._let_go(slot)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # and with it every lock this worker held
            self.fd = -1

    def _take(self, slot: int) -> bool:
        holders = self.held.get(slot)
        if holders:
            self.held[slot] = holders + 1
            return True
        if self.alone:
            self.held[slot] = 1
            return True
        if self.fd < 0:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, slot)
        except OSError:  # EAGAIN or EACCES: another worker holds it
            return False
        self.held[slot] = 1
        return True

    def _let_go(self, slot: int) -> None:
        holders = self.held.pop(slot, 0) - 1
        if holders > 0:
            self.held[slot] = holders
        elif not self.alone:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, slot)
