"""A worker's view of the node's store.

Objects live under one directory — shared memory or --cache-dir — a small one
as a record in a segment this worker appends to (segments.py), a larger one as
a file of its own (objectfile.py), so every worker reads the same pages from the
OS page cache and they survive a worker's restart. The owner (owner.py) indexes
them (index.py).
Each worker keeps, within its `local_budget`, recently used responses in memory
for the hit path, and the metadata of more keys it has used or stored. A response
a worker stores on a miss takes none of that memory until a request asks for it
again: most never are asked for (every new URL of a mostly-hit mix, most of a long
tail), and the first that is reads the small file back on the hit path (reread).
Generation counters shared with the owner (generations.py), one per key slot and
one per tag slot, tell it on every hit whether its copy is still the stored one
and not purged by a tag.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from multidict import CIMultiDictProxy

from pinedge.edge.store import objectfile
from pinedge.edge.store.entry import Entry
from pinedge.edge.store.fills import FillVerdict, NodeFills
from pinedge.edge.store.generations import (
    LOADING,
    PURGES,
    Generations,
    slot_of,
    slots_of,
    tag_slot,
)
from pinedge.edge.store.link import OwnerLink
from pinedge.edge.store.objectfile import Admission, Meta, MetaFields, Stored
from pinedge.edge.store.segments import (
    RECORD_MAX,
    SEGMENT_BODY_MAX,
    SegmentReader,
    SegmentWriter,
)

log = logging.getLogger("pinedge.store")

BuildEntry = Callable[[Meta, bytes], Entry]
EXECUTOR_THRESHOLD = 256 * 1024  # bodies larger than this are read and written off the loop
# Hits on bodies in this range go out by sendfile(2) from the stored file. Below it
# a copy is cheaper than a second system call; above it, a measured loopback run
# sent 1 MiB bodies faster from memory in one write than by sendfile.
SENDFILE_RANGE = (16 * 1024, 256 * 1024)
assert SENDFILE_RANGE[0] >= SEGMENT_BODY_MAX  # a body in a segment is sent from memory
# What a worker's copies cost beside their bodies, counted against its budget so that
# the budget is what the worker holds (measured: an in-memory response of eight
# fields costs about 2.6 KiB more than its body; the metadata of one whose body is
# not in memory, about 1.5 KiB).
ENTRY_COST = 2048  # and twice its header bytes
META_COST = 2048  # the budget over this is how many keys' metadata a worker keeps
LOCAL_KEYS_MIN = 4096


@dataclass(slots=True)
class LocalKey:
    slot: int
    generation: int
    stored: list[Stored]
    # None: no body in memory (let go of, or stored here and not asked for since)
    entries: list[Entry] | None
    size: int
    tag_generations: tuple[tuple[int, int], ...] = ()  # (tag slot, generation) of its tags
    # For a response this worker stored: the slot's generation before the owner
    # indexed it, as current as `generation` until then. Otherwise `generation`.
    before: int = -1


class SharedStore:
    def __init__(
        self,
        root: Path,
        link: OwnerLink,
        generations: Generations,
        local_budget: int,
        build: BuildEntry,
        alone: bool = False,
    ) -> None:
        """`alone`: this is the node's only worker (no other shares its fills)."""
        self.root = root
        self.link = link
        self.generations = generations
        self.counters = generations.counters
        self.local_budget = local_budget
        self.local_keys_max = max(LOCAL_KEYS_MIN, local_budget // META_COST)
        self.local_size = 0
        self.build = build
        self.local: dict[str, LocalKey] = {}
        self.resident: OrderedDict[str, None] = OrderedDict()  # keys with bodies in memory
        self.bare: OrderedDict[str, None] = OrderedDict()  # the other keys, metadata only
        self.pending_hits: dict[str, int] = {}
        self.flusher: asyncio.Task[None] | None = None
        self.fills = NodeFills(root / "fills.lock", self.counters, alone)
        self.writer = SegmentWriter(root)
        self.reader = SegmentReader(root)

    def start(self) -> None:
        self.flusher = asyncio.create_task(self._flush_hits())

    async def close(self) -> None:
        if self.flusher is not None:
            self.flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.flusher
        self._send_hits()
        await self.link.close()
        self.fills.close()
        self.writer.seal()
        self.reader.close()

    # ── reads ────────────────────────────────────────────────────────────────

    def variants(self, key: str) -> list[Entry]:
        """The stored variants of `key` this worker holds in memory and knows to be
        current; [] means "ask load()". Cheap enough for every hit."""
        local = self.local.get(key)
        if local is None:
            return []
        entries = local.entries
        if entries is None:
            return []
        counters = self.counters  # _current(), inline: this runs on every hit
        generation = counters[local.slot]
        if generation != local.generation and generation != local.before:
            self._forget(key)
            return []
        for slot, generation in local.tag_generations:
            if counters[slot] != generation:
                self._forget(key)
                return []
        return entries

    def absent(self, key: str) -> bool:
        """Whether nothing is stored under `key`, as this worker can tell without
        asking the owner: no key it knows, and the presence counters say so."""
        return key not in self.local and self._unstored(slots_of(key)[1])

    def _unstored(self, presence: int) -> bool:
        """No stored key hashes to this presence counter, and the counters are whole
        (the owner is not still indexing a warm store)."""
        counters = self.counters
        return not counters[presence] and not counters[LOADING]

    async def load(self, key: str, told_stored: bool = False) -> list[Entry]:
        """The stored variants of `key`, asking the owner and reading files as needed;
        `told_stored`: another worker said it stored the key, so the owner is asked
        even before its presence counter says so."""
        entries = self.variants(key)
        if entries:
            return entries
        slot, presence = slots_of(key)
        counters = self.counters
        generation = counters[slot]
        purges = counters[PURGES]
        local = self.local.get(key)
        kept = local if local is not None and self._current(local) else None
        stored = kept.stored if kept is not None else None
        if stored is None and not told_stored and self._unstored(presence):
            return []  # no stored key hashes here: not stored, and nobody asked
        for asked in range(2):
            if stored is None:
                try:
                    stored = await self.link.lookup(key)
                except OSError as exc:
                    log.error("store lookup of %s failed, treating it as a miss: %s", key, exc)
                    return []
            entries, replaced = await self._entries(stored)
            if not replaced or asked:
                break
            # A newer version was written over a file while its admission was on the
            # way to the owner: ask again rather than miss.
            _close_files(entries)
            stored = None
        tag_generations = self._tag_generations(entries)
        if counters[PURGES] != purges:
            # A purge came while the owner was asked: these may be what it purged,
            # and the tag generations may already be the ones after it. Served
            # once from memory, not kept.
            self._forget(key)
            _close_files(entries)
            return entries
        before = -1
        if kept is not None and stored is kept.stored:
            # Read from the record this worker kept: its counts, which hold until the
            # owner has indexed what this worker stored (it may not have yet).
            generation, before = kept.generation, kept.before
        local = LocalKey(slot, generation, stored, entries, 0, tag_generations, before)  # type: ignore[arg-type]  # the owner's answer
        self._remember(key, local)
        return entries

    def hit(self, entry: Entry) -> None:
        entry.used = True
        hits = self.pending_hits
        hits[entry.vid] = hits.get(entry.vid, 0) + 1

    # ── writes ───────────────────────────────────────────────────────────────

    async def put(self, entry: Entry) -> bool:
        values: MetaFields = (
            entry.key,
            tuple(entry.vary_names),
            tuple(entry.vary_values),
            entry.status,
            entry.reason,
            tuple(entry.headers.items()),
            entry.fresh.request_time,
            entry.fresh.response_time,
        )
        vid = entry.vid
        admission = self._append(vid, values, entry.body, entry.tags)
        if admission is None:
            body = entry.body
            if len(body) > EXECUTOR_THRESHOLD:
                loop = asyncio.get_running_loop()
                offset, crc = await loop.run_in_executor(
                    None, objectfile.write_values, self.root, vid, values, body
                )
            else:
                offset, crc = objectfile.write_values(self.root, vid, values, body)
            meta = Meta(*values, len(body), crc, offset, vid=vid)
            _open_at_first_hit(entry, meta)
            admission = Admission.of(meta, entry.tags)
        if entry.vary_names:
            # No record of it is kept here, so the next request asks the owner: told
            # at the end of this loop turn, not held.
            self.link.admit(admission, soon=True)
            # Other variants of the key may be stored: the next request asks for them.
            self._forget(entry.key)
            return True
        self._admit_and_keep(admission, entry.tags, [entry])
        return True

    def _append(
        self, vid: str, values: MetaFields, body: bytes, tags: frozenset[str]
    ) -> Admission | None:
        """Write a small response to this worker's segment (segments.py); its
        admission, or None for a response that takes a file of its own."""
        if len(body) >= SEGMENT_BODY_MAX:
            return None
        data = objectfile.record(values, body)
        if len(data) > RECORD_MAX:
            return None
        place = self.writer.append(data)
        return Admission(values[0], vid, tuple(tags), values[6], values[7], len(data), place)

    def put_as_it_came(
        self,
        key: str,
        status: int,
        reason: str,
        headers: CIMultiDictProxy[str],
        body: bytes,
        times: tuple[float, float],
        tags: frozenset[str],
    ) -> None:
        """put() for a response without Vary, stored with every field it came with
        and no entry made: none is kept in memory until a request asks for it again
        and reread() reads its file. Its body is at most EXECUTOR_THRESHOLD bytes
        (written here, on the loop)."""
        fields = tuple(headers.items())
        values: MetaFields = (key, (), (), status, reason, fields, times[0], times[1])
        vid = objectfile.variant_id(key, (), ())
        admission = self._append(vid, values, body, tags)
        if admission is None:
            offset, _ = objectfile.write_values(self.root, vid, values, body)
            size = objectfile.allocated(offset + len(body))
            admission = Admission(key, vid, tuple(tags), times[0], times[1], size)
        self._admit_and_keep(admission, tags, None)

    def _admit_and_keep(
        self,
        admission: Admission,
        tags: frozenset[str],
        entries: list[Entry] | None,
    ) -> None:
        """Tell the owner of a file written for a key's one variant, and keep its
        record (and `entries`, when given) for the hit path. The owner bumps the
        key's slot once when it indexes it as it came; any other count (a purge
        since the request, another worker's store) sends the next request to the
        owner."""
        counters = self.counters
        key = admission.key
        slot = slot_of(key)
        generation = counters[slot]
        tag_generations = self._tag_slots(tags)
        self.link.admit(admission)
        expected = (generation + 1) & 0xFFFFFFFF
        stored = [
            Stored(
                admission.vid, admission.allocated, admission.response_time, None, admission.place
            )
        ]
        local = LocalKey(slot, expected, stored, entries, 0, tag_generations, generation)
        self._remember(key, local)

    async def remove(self, key: str) -> int:
        self._forget(key)
        try:
            return await self.link.remove_key(key)
        except OSError as exc:
            log.error("store removal of %s failed: %s", key, exc)
            return 0

    # ── node-wide collapsed forwarding ───────────────────────────────────────

    async def acquire(self, key: str, timeout: float) -> FillVerdict:
        """The node-wide verdict for fetching `key` (fills.py)."""
        return await self.fills.acquire(key, timeout)

    def lead_now(self, key: str) -> bool:
        """Lead the node-wide fetch of `key` if nothing holds it, without waiting."""
        return self.fills.lead_now(key)

    def release(self, key: str, outcome: FillVerdict) -> None:
        # What the fill stored goes to the owner before a waiting worker can hear of
        # it and ask, and before the response's last bytes reach its client.
        self.link.flush()
        self.fills.release(key, outcome)

    # ── internals ────────────────────────────────────────────────────────────

    def _read_place(self, stored: Stored) -> tuple[Meta, bytes] | None:
        """The response at a stored record's place in a segment, if it reads back whole
        and is the one the record names."""
        data = self.reader.read(stored.place, stored.size)
        read = None if data is None else objectfile.parse(data)
        if read is None or read[0].variant_id != stored.vid:
            return None
        return read

    async def _read(self, stored: Stored) -> tuple[Meta, bytes] | None:
        if stored.place:
            return self._read_place(stored)
        path = objectfile.object_path(self.root, stored.vid)
        if stored.size > EXECUTOR_THRESHOLD:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, objectfile.read, path)
        return objectfile.read(path)

    async def _entries(self, stored: list[Stored]) -> tuple[list[Entry], bool]:
        """Entries for the stored files that read back whole and are the version the
        owner indexed, and whether a file was found replaced by another version of
        its response. A file that is damaged or gone is reported to the owner, which
        stops indexing it (a record in a segment, unless the owner has moved it since:
        then it is looked up again)."""
        entries = []
        replaced = False
        for item in stored:
            read = await self._read(item)
            if read is None:
                self.link.drop(item.vid, item.place)
                replaced = replaced or bool(item.place)
                continue
            entry = self._entry_of(item, *read)
            if entry is None:
                replaced = True
                continue
            entries.append(entry)
        return entries, replaced

    def _entry_of(self, item: Stored, meta: Meta, body: bytes) -> Entry | None:
        """The entry of a stored file read back, or None when the file holds another
        version of its response than the index does (written over since)."""
        if meta.response_time != item.response_time:
            return None
        if item.purged_at is not None:
            meta = replace(meta, purged_at=item.purged_at)
        entry = self.build(meta, body)
        self._open_file(entry, meta)
        return entry

    def reread(self, key: str) -> list[Entry]:
        """load() without waiting, for the hit path: the stored variants of a key whose
        files this worker knows and whose copies it let go of, read now when each is
        small enough to read on the loop; [] wherever load() has more to do (ask the
        owner, read on a thread, report a damaged file, find a newer version)."""
        local = self.local.get(key)
        if local is None or local.entries is not None:
            return []
        stored = local.stored
        if not stored:
            return []
        # Read before the files, as load() reads them before it asks the owner, and
        # the record checked against them: a change after this shows at the next
        # hit (the slot's count) or below (a purge).
        counters = self.counters
        generation, purges = counters[local.slot], counters[PURGES]
        if not self._current(local, generation):
            return []
        entries: list[Entry] = []
        for item in stored:
            entry = None
            if item.place:
                read = self._read_place(item)
                entry = None if read is None else self._entry_of(item, *read)
            elif item.size <= EXECUTOR_THRESHOLD:
                read = objectfile.read(objectfile.object_path_text(self.root, item.vid))
                entry = None if read is None else self._entry_of(item, *read)
            if entry is None:
                _close_files(entries)
                return []
            entries.append(entry)
        if counters[PURGES] != purges:
            _close_files(entries)
            return []
        tag_generations = self._tag_generations(entries)
        # The record's counts, not the slot's now: what this worker stored may not be
        # indexed yet, and its record holds until it is.
        slot, kept, before = local.slot, local.generation, local.before
        self._remember(key, LocalKey(slot, kept, stored, entries, 0, tag_generations, before))
        return entries

    def _current(self, local: LocalKey, generation: int | None = None) -> bool:
        """Whether `local` is still what is stored: its slot's count (`generation`, when
        the caller has read it) and its tags' counts are the ones it was kept with."""
        counters = self.counters
        if generation is None:
            generation = counters[local.slot]
        if generation != local.generation and generation != local.before:
            return False
        return all(counters[slot] == count for slot, count in local.tag_generations)

    def _tag_generations(self, entries: list[Entry]) -> tuple[tuple[int, int], ...]:
        return self._tag_slots({tag for entry in entries for tag in entry.tags})

    def _tag_slots(self, tags: frozenset[str] | set[str]) -> tuple[tuple[int, int], ...]:
        if not tags:
            return ()
        counters = self.counters
        return tuple((slot, counters[slot]) for slot in sorted({tag_slot(tag) for tag in tags}))

    def _remember(self, key: str, local: LocalKey) -> None:
        self._forget(key)
        self.local[key] = local
        if local.entries:
            self._hold(key, local)
        else:  # no body in memory, or known not to be stored
            self.bare[key] = None
        # Counted apart from the keys with bodies, so that a flood of new keys (a
        # miss keeps no body) does not push out the hot ones.
        bare = self.bare
        while len(bare) > self.local_keys_max:
            self._forget(next(iter(bare)))

    def _hold(self, key: str, local: LocalKey) -> None:
        """Count `local`'s bodies against the budget, letting go of others' (or its
        own, when they alone are over it)."""
        assert local.entries  # the caller checked
        size = sum(_memory_cost(entry) for entry in local.entries)
        if size > self.local_budget:
            _close_files(local.entries)
            local.entries = None
            self.bare[key] = None
            return
        local.size = size
        self.local_size += size
        self.resident[key] = None
        while self.local_size > self.local_budget and len(self.resident) > 1:
            oldest, _ = self.resident.popitem(last=False)
            victim = self.local[oldest]
            if oldest == key:  # what a request is about to use stays
                self.resident[oldest] = None
                continue
            if victim.entries and any(e.used for e in victim.entries):
                # Used since it came in or was last passed over: a second chance (CLOCK),
                # so hot bodies stay without reordering anything on the hit path.
                for entry in victim.entries:
                    entry.used = False
                self.resident[oldest] = None
                continue
            self.local_size -= victim.size
            _close_files(victim.entries)
            victim.entries, victim.size = None, 0
            self.bare[oldest] = None

    def _forget(self, key: str) -> None:
        local = self.local.pop(key, None)
        if local is not None:
            self.local_size -= local.size
            self.resident.pop(key, None)
            self.bare.pop(key, None)
            _close_files(local.entries)

    def sendable(self, entry: Entry) -> tuple[int, int] | None:
        """The descriptor and body offset to send `entry` by sendfile from, opened now
        for a response this worker stored and has not sent from its file yet; None
        to send it from memory."""
        at, entry.file_at = entry.file_at, None
        if at is not None:
            self._open(entry, entry.vid, at[0], at[1])
        return entry.file

    def _open_file(self, entry: Entry, meta: Meta) -> None:
        if sent_from_file(meta.body_length):
            self._open(entry, meta.variant_id, meta.body_offset, meta.file_size)

    def _open(self, entry: Entry, vid: str, offset: int, size: int) -> None:
        try:
            fd = os.open(objectfile.object_path_text(self.root, vid), os.O_RDONLY)
        except OSError:
            return
        # Another worker may have rewritten the file since: only the file this
        # entry was read from or written to may be sent from.
        if os.fstat(fd).st_size != size:
            os.close(fd)
            return
        entry.file = (fd, offset)

    async def _flush_hits(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._send_hits()
            # Segments the owner removed since are not held open here for long.
            self.reader.close()
            self.writer.seal_if_idle()

    def _send_hits(self) -> None:
        """Tell the owner which objects were used since the last time. The eviction
        policy counts at most three uses per object, so that is all that is sent."""
        if self.pending_hits:
            batch, self.pending_hits = self.pending_hits, {}
            self.link.hits([vid for vid, count in batch.items() for _ in range(min(count, 3))])


def _memory_cost(entry: Entry) -> int:
    """The bytes an in-memory response holds: its body, and the fields and
    prepared heads that go with it."""
    fields = sum(len(name) + len(value) for name, value in entry.headers.items())
    return len(entry.body) + ENTRY_COST + 2 * fields


def _open_at_first_hit(entry: Entry, meta: Meta) -> None:
    """For a response this worker stored, where its file is for sendfile: opened at
    the first hit, so that one nobody asks for again holds no descriptor and costs
    no open(2)."""
    if sent_from_file(meta.body_length):
        entry.file_at = (meta.body_offset, meta.file_size)


def sent_from_file(length: int) -> bool:
    """Whether a body of `length` bytes goes out by sendfile(2) on the hit path."""
    return SENDFILE_RANGE[0] <= length < SENDFILE_RANGE[1]


def _close_files(entries: list[Entry] | None) -> None:
    for entry in entries or ():
        entry.file_at = None  # an entry let go of is not opened again
        if entry.file is not None:
            with contextlib.suppress(OSError):
                os.close(entry.file[0])
            entry.file = None
