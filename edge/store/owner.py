"""The store's owner: one per node, holding what every worker must agree on.

- the index: which variants of which keys are stored, in which files;
- the eviction policy (S3-FIFO by default) and the byte budget;
- a generation per key slot in shared memory, bumped whenever a key's stored
  variants change, and one per tag slot, bumped when the tag is purged, so a
  worker can check on each hit, for the price of a memory read per slot, that
  its own copy is still the stored one;
- node-wide collapsed forwarding: one worker fetches a key, the others wait.

Workers reach it over a Unix socket (ownerlink.py) or, in a one-process node,
directly. Files are written by workers and removed only here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import tempfile
import time
import zlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from multiprocessing import shared_memory
from pathlib import Path

from pinedge.edge.node.idle import IdleMeter
from pinedge.edge.store import objectfile
from pinedge.edge.store.eviction import make_policy
from pinedge.edge.store.leftovers import process_alive, remove_leftover_segments
from pinedge.edge.store.objectfile import Meta
from pinedge.edge.store.purge import Ban, Selection
from pinedge.edge.store.tags import tags_of

log = logging.getLogger("pinedge.store")

GENERATIONS_PREFIX = "pinedge-generations-"
SLOTS = 1 << 20  # generation slots (4 MiB of shared memory); collisions only cost a reload
PURGES = SLOTS  # the counter after the slots: bumped first by every purge
# A purge also covers responses fetched before it and stored within this long
# after it (fills and variants in flight); longer than any fill may take.
BAN_SECONDS = 600.0
# The clean-up after a hard purge (index entries, files) takes only what the hit
# path leaves: every CLEAN_CHECK seconds, up to CLEAN_BATCH objects if at least
# half a CPU went unused since the last check, else CLEAN_TRICKLE. Space a new
# object needs is taken from purged objects first, at once, before any eviction.
CLEAN_CHECK = 0.2
CLEAN_BATCH = 2048
CLEAN_SLICE = 256  # objects per turn of the loop, so lookups are not held up
CLEAN_TRICKLE = 8
CLEAN_IDLE_SHARE = 0.5 / (os.cpu_count() or 1)


def slot_of(key: str) -> int:
    return zlib.crc32(key.encode("utf-8", "surrogateescape")) & (SLOTS - 1)


def tag_slot(tag: str) -> int:
    """A tag's generation slot; a cache key never starts with NUL, so a tag and a
    key share a slot only by a collision."""
    return zlib.crc32(b"\x00" + tag.encode("utf-8", "surrogateescape")) & (SLOTS - 1)


class Generations:
    """A shared array of counters, one per slot (keys and tags hash into the same
    slots), and after them PURGES."""

    def __init__(self, name: str | None = None) -> None:
        if name is None:
            # Named after this process, so that a node started after one that was
            # killed can remove what it left.
            remove_leftover_segments(GENERATIONS_PREFIX)
            name = f"{GENERATIONS_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
            self.memory = shared_memory.SharedMemory(name=name, create=True, size=(SLOTS + 1) * 4)
            self.owned = True
        else:
            self.memory = shared_memory.SharedMemory(name=name)
            # Workers are spawned children and share their supervisor's resource
            # tracker, which unlinks the segment only when the supervisor is gone.
            self.owned = False
        self.counters = self.memory.buf.cast("I")

    @property
    def name(self) -> str:
        return self.memory.name

    def bump(self, key: str) -> None:
        self.bump_slots((slot_of(key),))

    def bump_slots(self, slots: Iterable[int]) -> None:
        counters = self.counters
        for slot in slots:  # inline: a call per slot was most of a large purge's time
            counters[slot] = (counters[slot] + 1) & 0xFFFFFFFF

    def bump_purges(self) -> None:
        """Called before a purge bumps anything else: a worker that reads PURGES
        before and after reading other slots knows whether a purge came between."""
        self.bump_slots((PURGES,))

    def close(self) -> None:
        self.counters.release()
        self.memory.close()
        if self.owned:
            self.memory.unlink()


@dataclass(slots=True, eq=False)
class PurgedGroup:
    """What a tag indexed when it was purged, settled later one object at a time
    (hard: removed; soft: marked stale and indexed under the tag again). Until then
    the owner's lookups find its members here, so the purge itself touches none of
    them: one purged tag costs the same among a million objects as among ten."""

    tag: str
    at: float
    soft: bool
    members: dict[str, Meta]  # variant id -> the record the purge covered


@dataclass(slots=True)
class Waiters:
    leader: object
    futures: list[asyncio.Future[str]] = field(default_factory=list)


class StoreOwner:
    """The node's index over the object files under `root`, within `budget` bytes."""

    def __init__(self, root: Path, budget: int, policy: str = "s3fifo") -> None:
        self.root = root
        self.budget = budget
        self.policy = make_policy(policy, budget)
        self.records: dict[str, Meta] = {}
        self.by_key: dict[str, set[str]] = {}
        self.generations = Generations()
        self.fetching: dict[str, Waiters] = {}
        self.derived: dict[str, set[str]] = {}  # source key -> keys of its variants
        self.tags: dict[str, dict[str, Meta]] = {}  # tag -> {variant id: its record}
        self.tags_of: dict[str, frozenset[str]] = {}  # variant id -> its tags
        self.purged_tags: dict[str, list[PurgedGroup]] = {}  # tag -> groups not yet settled
        self.settling: deque[PurgedGroup] = deque()  # the same groups, oldest first
        self.doomed: set[str] = set()  # hard-purged: unreachable, files not yet removed
        self.stale_since: dict[str, float] = {}  # soft-purged: variant id -> when
        self.bans: deque[Ban] = deque()
        self._cleaning: asyncio.Task[None] | None = None
        self.evictions = 0
        self.dropped = 0
        self.purges: dict[tuple[str, str], int] = {}  # (kind, mode) -> purges
        self.purged: dict[str, int] = {}  # mode -> stored responses covered
        self.size = 0

    # ── start-up: what a warm directory already holds ───────────────────────

    def scan(self) -> int:
        """Index every intact file under root; drop what is damaged or over budget."""
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.root / "tmp", ignore_errors=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        found: list[tuple[float, Meta]] = []
        for path in (self.root / "objects").glob("*/*"):
            meta = objectfile.read_meta(path)
            if meta is None or path.name != meta.variant_id:
                self.dropped += 1
                log.warning("dropping damaged store file %s", path)
                path.unlink(missing_ok=True)
                continue
            found.append((meta.response_time, meta))
        for _, meta in sorted(found, key=lambda item: item[0]):
            self.admit(meta)
        return len(self.records)

    # ── the index ────────────────────────────────────────────────────────────

    def lookup(self, key: str) -> list[Meta]:
        metas = []
        for vid in self.by_key.get(key, ()):
            if vid in self.doomed:
                continue
            meta = self.records[vid]
            since = self.stale_since.get(vid)
            if self.purged_tags:
                hidden, since = self._purged_by_tag(vid, meta, since)
                if hidden:
                    continue
            metas.append(meta if since is None else replace(meta, purged_at=since))
        return metas

    def _purged_by_tag(
        self, vid: str, meta: Meta, since: float | None
    ) -> tuple[bool, float | None]:
        """Whether a tag purge not yet settled removed this record (hard), and from
        when it is stale (`since`, or an earlier soft purge's time)."""
        for group in self._groups_holding(vid, meta):
            if not group.soft:
                return True, since
            since = group.at if since is None else min(since, group.at)
        return False, since

    def _groups_holding(self, vid: str, meta: Meta) -> list[PurgedGroup]:
        """The purged groups, not yet settled, that hold this very record."""
        return [
            group
            for tag in self.tags_of.get(vid, ())
            for group in self.purged_tags.get(tag, ())
            if group.members.get(vid) is meta
        ]

    def admit(self, meta: Meta) -> list[str]:
        """Index a file a worker wrote; returns the variant ids evicted for it."""
        vid = meta.variant_id
        if vid in self.doomed:  # stored again before the purged one was cleaned up
            self.policy.remove(vid)
            self._forget(vid, unlink=False)
        tags = tags_of(meta.headers)
        ban = self._ban_for(meta, tags)
        if ban is not None and not ban.soft:
            # Fetched before a purge that covers it: as if purged with the rest.
            self.policy.remove(vid)
            self._forget(vid, unlink=False)
            objectfile.object_path(self.root, vid).unlink(missing_ok=True)
            return []
        old = self.records.get(vid)
        if old is not None:
            self.size -= old.file_size
            self._leave_groups(vid, old)
            self._untag(vid)
        self.records[vid] = meta
        self.stale_since.pop(vid, None)
        if ban is not None:
            self.stale_since[vid] = ban.at
        if tags:
            self.tags_of[vid] = tags
            for tag in tags:
                self.tags.setdefault(tag, {})[vid] = meta
        self.by_key.setdefault(meta.key, set()).add(vid)
        source, mark, _ = meta.key.partition("#")
        if mark:
            self.derived.setdefault(source, set()).add(meta.key)
        self.size += meta.file_size
        self.generations.bump(meta.key)
        pending = self.doomed or self.settling
        if pending and self.policy.size + meta.file_size > self.policy.budget:
            self._make_room(meta.file_size)
        evicted = self.policy.admit(vid, meta.file_size)
        for victim in evicted:
            self.evictions += 1
            self._forget(victim, unlink=True)
        return evicted

    def hits(self, variant_ids: list[str]) -> None:
        for vid in variant_ids:
            if vid in self.records:
                self.policy.hit(vid)

    def remove_key(self, key: str) -> int:
        """Drop every stored response of `key` and every variant derived from it
        (invalidation, purge); the number dropped."""
        vids = list(self.by_key.get(key, ()))
        for derived in self.derived.pop(key, ()):
            vids.extend(self.by_key.get(derived, ()))
        for vid in vids:
            self.policy.remove(vid)
            self._forget(vid, unlink=True)
        return len(vids)

    # ── purge ────────────────────────────────────────────────────────────────

    def purge(self, selection: Selection, soft: bool, now: float | None = None) -> int:
        """Purge what `selection` covers; the number of stored responses covered.

        Hard: they are unreachable when this returns (lookups skip them and every
        worker's copy is invalidated through the generations); their index entries
        and files are removed in the background. Soft: they are stale from now on.
        Either way the purge is remembered for BAN_SECONDS, for responses fetched
        before it that are stored after it.

        A tag is purged without touching its objects: its members are set aside as
        one group, and one tag slot is bumped for the workers. URLs, prefixes and
        "all" are applied to each object at once."""
        now = time.time() if now is None else now
        self.generations.bump_purges()
        count = sum(self._purge_tag(tag, soft, now) for tag in selection.tags)
        rest = replace(selection, tags=frozenset())
        if rest.names_anything:
            found = self._select(rest)
            if soft:
                stale_since = self.stale_since
                for vid in found:
                    stale_since.setdefault(vid, now)
            else:
                self.doomed.update(found)
            self.generations.bump_slots(set(found.values()))
            count += len(found)
        if self.doomed or self.settling:
            self._clean_later()
        bans = self.bans
        while bans and now - bans[0].at >= BAN_SECONDS:
            bans.popleft()
        bans.append(Ban(now, selection, soft))
        mode = "soft" if soft else "hard"
        for kind in selection.kinds:
            self.purges[kind, mode] = self.purges.get((kind, mode), 0) + 1
        self.purged[mode] = self.purged.get(mode, 0) + count
        return count

    def _purge_tag(self, tag: str, soft: bool, now: float) -> int:
        self.generations.bump_slots((tag_slot(tag),))
        count = 0
        waiting = self.purged_tags.get(tag, ())
        if not soft:
            for group in waiting:  # soft-purged before and not yet settled: removed now
                if group.soft:
                    group.soft = False
                    count += len(group.members)
        members = self.tags.pop(tag, None)
        if members:
            group = PurgedGroup(tag, now, soft, members)
            self.purged_tags.setdefault(tag, []).append(group)
            self.settling.append(group)
            count += len(members)
        return count

    def _select(self, selection: Selection) -> dict[str, int]:
        """The stored responses a purge by URL, prefix or "all" covers (not already
        purged), each with its key's generation slot."""
        records = self.records
        found: dict[str, int] = {}
        if selection.everything:
            found = {vid: slot_of(meta.key) for vid, meta in records.items()}
        keys = [
            *selection.keys,
            *(derived for key in selection.keys for derived in self.derived.get(key, ())),
        ]
        if selection.prefixes:
            keys += [key for key in self.by_key if key.startswith(selection.prefixes)]
        for key in keys:
            slot = slot_of(key)
            found.update((vid, slot) for vid in self.by_key.get(key, ()))
        for vid in self.doomed.intersection(found) if self.doomed else ():
            del found[vid]
        if self.purged_tags:
            for vid in [v for v in found if self._purged_by_tag(v, records[v], None)[0]]:
                del found[vid]
        return found

    def _ban_for(self, meta: Meta, tags: frozenset[str]) -> Ban | None:
        """The latest purge that covers this response and came after its request was
        sent (the response may predate what the purge is for)."""
        for ban in reversed(self.bans):
            if ban.at <= meta.request_time:
                return None  # this one and every earlier purge came before the request
            if ban.selection.matches(meta.key, tags):
                return ban
        return None

    def _clean_later(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._settle_all()
            return
        if self._cleaning is None or self._cleaning.done():
            self._cleaning = loop.create_task(self._clean())

    async def _clean(self) -> None:
        meter = IdleMeter()
        while self.doomed or self.settling:
            await asyncio.sleep(CLEAN_CHECK)
            idle = meter.share()
            if idle is not None and idle < CLEAN_IDLE_SHARE:
                self._clean_some(CLEAN_TRICKLE)
                continue
            left = CLEAN_BATCH
            while left > 0 and (self.doomed or self.settling):
                left -= self._clean_some(min(left, CLEAN_SLICE))
                await asyncio.sleep(0)

    @property
    def purged_pending(self) -> int:
        """Hard-purged objects whose index entries and files are still to be removed."""
        waiting = sum(len(group.members) for group in self.settling if not group.soft)
        return len(self.doomed) + waiting

    def _settle_all(self) -> None:
        while self.doomed or self.settling:
            self._clean_some(CLEAN_BATCH)

    def _make_room(self, need: int) -> None:
        """Remove purged objects until `need` more bytes fit in the budget."""
        policy = self.policy
        while policy.size + need > policy.budget:
            if self.doomed:
                self._clean_some(1)
                continue
            group = next((g for g in self.settling if not g.soft and g.members), None)
            if group is None:
                return
            self._settle(group, *group.members.popitem())

    def _clean_some(self, count: int) -> int:
        """Settle up to `count` purged objects (forget them and remove their files,
        or mark them stale); how many."""
        done = 0
        doomed = self.doomed
        while done < count and doomed:
            vid = doomed.pop()
            self.policy.remove(vid)
            self._forget(vid, unlink=True, bump=False)  # bumped by the purge
            done += 1
        settling = self.settling
        while done < count and settling:
            group = settling[0]
            members = group.members
            while done < count and members:
                self._settle(group, *members.popitem())
                done += 1
            if not members:
                settling.popleft()
                waiting = self.purged_tags[group.tag]
                waiting.remove(group)
                if not waiting:
                    del self.purged_tags[group.tag]
        return done

    def _settle(self, group: PurgedGroup, vid: str, meta: Meta) -> None:
        if self.records.get(vid) is not meta:
            return  # gone already, or stored again since the purge
        if group.soft:
            since = self.stale_since.get(vid)
            self.stale_since[vid] = group.at if since is None else min(since, group.at)
            self.tags.setdefault(group.tag, {})[vid] = meta
        else:
            self.policy.remove(vid)
            # A file removed here may, rarely, already be the object's next
            # version (fetched again, written, not yet admitted): a worker then
            # finds it missing, drops it and fetches it again.
            self._forget(vid, unlink=True, bump=False)  # bumped by the purge

    def drop(self, vid: str) -> None:
        """A worker found this file damaged: it must not be served again."""
        if vid in self.records:
            self.dropped += 1
            self.policy.remove(vid)
            self._forget(vid, unlink=True)

    def _forget(self, vid: str, unlink: bool, bump: bool = True) -> None:
        meta = self.records.pop(vid, None)
        if meta is None:
            return
        self.size -= meta.file_size
        self._leave_groups(vid, meta)
        self._untag(vid)
        self.stale_since.pop(vid, None)
        self.doomed.discard(vid)
        siblings = self.by_key.get(meta.key)
        if siblings is not None:
            siblings.discard(vid)
            if not siblings:
                del self.by_key[meta.key]
                self._underive(meta.key)
        if bump:
            self.generations.bump(meta.key)
        if unlink:
            objectfile.object_path(self.root, vid).unlink(missing_ok=True)

    def _underive(self, key: str) -> None:
        """A derived key with nothing stored under it any more leaves its source's set."""
        source, mark, _ = key.partition("#")
        if not mark:
            return
        variants = self.derived.get(source)
        if variants is not None:
            variants.discard(key)
            if not variants:
                del self.derived[source]

    def _leave_groups(self, vid: str, meta: Meta) -> None:
        """A record that goes (forgotten, or replaced by the next version) leaves the
        purged groups that hold it, so that they count only what is left to settle."""
        if self.purged_tags:
            for group in self._groups_holding(vid, meta):
                del group.members[vid]

    def _untag(self, vid: str) -> None:
        for tag in self.tags_of.pop(vid, ()):
            holders = self.tags.get(tag)
            if holders is not None:
                holders.pop(vid, None)
                if not holders:
                    del self.tags[tag]

    # ── node-wide collapsed forwarding ───────────────────────────────────────

    async def acquire(self, key: str, who: object, timeout: float) -> str:
        """ "lead" if `who` should fetch `key`; otherwise, once the fetching worker
        releases it, its outcome ("stored", "pass", "error", "abandoned"), or
        "timeout" after `timeout` seconds."""
        waiting = self.fetching.get(key)
        if waiting is None:
            self.fetching[key] = Waiters(who)
            return "lead"
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        waiting.futures.append(future)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return "timeout"

    def release(self, key: str, outcome: str, who: object) -> None:
        waiting = self.fetching.get(key)
        if waiting is None or waiting.leader is not who:
            return
        del self.fetching[key]
        for future in waiting.futures:
            if not future.done():
                future.set_result(outcome)

    def release_all(self, who: object) -> None:
        """A worker went away: whatever it was fetching is abandoned."""
        for key in [k for k, w in self.fetching.items() if w.leader is who]:
            self.release(key, "abandoned", who)

    def close(self, keep_files: bool = True) -> None:
        """Stop; if the files are kept (a --cache-dir), first remove what a hard purge
        left, so that scanning them again cannot bring it back."""
        if self._cleaning is not None:
            self._cleaning.cancel()
        if keep_files:
            self._settle_all()
        self.generations.close()


def memory_root(name: str) -> Path:
    """Where a node without --cache-dir keeps its objects: shared memory if the
    system has it, so workers share the pages and nothing touches a disk. The
    directories of nodes that died without cleaning up are removed first."""
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    for leftover in base.glob("pinedge-store-*"):
        pid = leftover.name.split("-")[2]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return base / f"pinedge-store-{os.getpid()}-{secrets.token_hex(4)}-{safe}"
