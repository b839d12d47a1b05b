"""The store's index: which variants of which keys are stored, in which files, within a budget."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

from pinedge.edge.store import objectfile
from pinedge.edge.store.compactor import SegmentSpace
from pinedge.edge.store.eviction import make_policy
from pinedge.edge.store.generations import LOADING, Generations, slot_of, tag_slot
from pinedge.edge.store.objectfile import Admission, Stored
from pinedge.edge.store.purge import Ban, Selection
from pinedge.edge.store.purged import Purged, PurgedGroup
from pinedge.edge.store.records import Records
from pinedge.edge.store.tags import TagIndex

log = logging.getLogger("pinedge.store")

VID_BYTES = 16  # a variant id is 32 hex digits


class Index:
    """The node's index over the object files under `root`, within `budget` bytes.

    Workers reach it through the owner: lookup(), admit(), hits(), remove_key() and
    drop(); the operator through purge(). Whatever changes a key's stored variants
    or a tag's bumps their generation. Files are written by workers and removed
    only here.

    A stored response is a record number (records.py), found by key or variant
    id; tags (tags.py) and the eviction policy hold those numbers in arrays, so
    that ten million responses fit in a few gigabytes."""

    def __init__(self, root: Path, budget: int, policy: str, generations: Generations) -> None:
        self.root = root
        self.budget = budget
        self.records = Records()
        self.policy = make_policy(policy, budget, self.records.fingerprint)
        self.generations = generations
        self.derived: dict[str, str | set[str]] = {}  # source key -> key(s) of its variants
        self.tags = TagIndex(self.records)
        self.space = SegmentSpace(root)
        self.purged = Purged()
        self.evictions = 0
        self.dropped = 0
        self.loaded_on_demand = 0  # files indexed when asked for, before the loader got to them
        # While loading: keys invalidated since the start, whose files are not indexed yet.
        self.removed_since_start: set[str] | None = None

    @property
    def loading(self) -> bool:
        """Files from before the start are still being indexed (loader.py)."""
        return bool(self.generations.counters[LOADING])

    @loading.setter
    def loading(self, loading: bool) -> None:
        self.generations.counters[LOADING] = int(loading)

    @property
    def size(self) -> int:
        """Bytes of the files indexed (the policy counts every record the index holds)."""
        return self.policy.size

    def drop_damaged(self, path: str) -> None:
        self.dropped += 1
        log.warning("dropping damaged store file %s", path)
        with contextlib.suppress(OSError):
            os.unlink(path)

    # ── what workers ask ─────────────────────────────────────────────────────

    def lookup(self, key: str) -> list[Stored]:
        if self.loading and not self.records.has_key(key):
            self._load_now(key)
        records, size_of = self.records, self.policy.size_of
        places = records.places
        purged = self.purged
        doomed, stale_since, groups = purged.doomed, purged.stale_since, purged.groups
        found: list[Stored] = []
        for record in records.of_key(key):
            if record in doomed:
                continue
            since = stale_since.get(record)
            if groups:
                hidden, since = purged.purged_by_tag(record, self.tags.names_of(record), since)
                if hidden:
                    continue
            vid = records.vid(record)
            found.append(
                Stored(vid, size_of(record), records.response_times[record], since, places[record])
            )
        return found

    def _load_now(self, key: str) -> None:
        """While loading, a key asked for before the loader reached its file: index the
        file of its response without Vary (whose name the key gives) now, as nginx
        finds a file by its key before its cache loader has read it. A file that is
        not whole (one being written, or damaged) is left to the loader."""
        if self.removed_while_loading(key):
            return
        vid = objectfile.variant_id(key, (), ())
        meta = objectfile.read_meta(objectfile.object_path_text(self.root, vid))
        if meta is None or meta.variant_id != vid or meta.key != key:
            return
        self.loaded_on_demand += 1
        self.admit(Admission.of(meta))

    def removed_while_loading(self, key: str) -> bool:
        """Whether `key`, or the key it was derived from, was invalidated since the
        start while files from before it are still being indexed."""
        removed = self.removed_since_start
        return removed is not None and key.partition("#")[0] in removed

    def admit(self, admission: Admission) -> list[str]:
        """Index a file a worker wrote; returns the variant ids evicted for it. The
        key's generation slot is bumped once when the response is stored as it came,
        and twice when a purge since its request dropped it or made it stale."""
        vid = admission.vid
        place = admission.place
        records = self.records
        purged = self.purged
        record = records.find(vid)
        if record >= 0 and record in purged.doomed:
            # Stored again before the purged one was cleaned up.
            self._forget(record, unlink=True, keep=place)
            record = -1
        tags = frozenset(admission.tags) if admission.tags else frozenset()
        ban = purged.ban_for(admission, tags) if purged.bans else None
        if ban is not None:
            # The worker that wrote it counts on one bump of the key's slot for an
            # admission; one more tells it to look the key up again.
            self.generations.bump(admission.key)
        if ban is not None and not ban.soft:
            # Fetched before a purge that covers it: as if purged with the rest.
            if record >= 0:
                self._forget(record, unlink=True, bump=False, keep=place)
            self.generations.bump(admission.key)
            if place:
                self.space.mark_dead(place)
            else:
                objectfile.remove(self.root, vid)
            return []
        size = admission.allocated
        new_key = False
        if record >= 0:  # the next version of a stored response
            self._free(record, keep=place)
            records.places[record] = place
            self._leave_groups(record)
            self.tags.untag(record)
            records.response_times[record] = admission.response_time
            purged.stale_since.pop(record, None)
        else:
            record = self._add(vid, admission)
            new_key = records.added_key
        if ban is not None:
            purged.stale_since[record] = ban.at
        if tags:
            self.tags.tag(record, tags)
        self.generations.admitted(admission.key, new_key)
        if place:
            self.space.add(place, size)
        if (purged.doomed or purged.settling) and self.policy.size + size > self.policy.budget:
            # Space a new object needs is taken from purged objects first, at once,
            # before any eviction.
            self._make_room(size)
        evicted = self.policy.admit(record, size)
        if not evicted:
            return []
        gone = [records.vid(victim) for victim in evicted]
        for victim in evicted:
            self.evictions += 1
            self._forget(victim, unlink=True)
        return gone

    def hits(self, variant_ids: list[str]) -> None:
        """Accesses, an id once per access; a worker sends an id's accesses together."""
        find, hit = self.records.find, self.policy.hit
        last, record = "", -1
        for vid in variant_ids:
            if vid != last:
                last, record = vid, find(vid)
            if record >= 0:
                hit(record)

    def remove_key(self, key: str) -> int:
        """Drop every stored response of `key` and every variant derived from it
        (invalidation, purge); the number dropped."""
        if self.removed_since_start is not None:
            self.removed_since_start.add(key)
        records = self.records.of_key(key)
        for derived in _strings(self.derived.get(key)):
            records.extend(self.records.of_key(derived))
        for record in records:
            self._forget(record, unlink=True)
        return len(records)

    def drop(self, vid: str, place: int = -1) -> None:
        """A worker found this file (or the record at `place`) damaged: it must not be
        served again. Where the index holds it elsewhere now, nothing is dropped."""
        record = self.records.find(vid)
        if record >= 0 and (place < 0 or self.records.places[record] == place):
            self.dropped += 1
            self._forget(record, unlink=True)

    # ── purge ────────────────────────────────────────────────────────────────

    def purge(self, selection: Selection, soft: bool, now: float | None = None) -> int:
        """Purge what `selection` covers; the number of stored responses covered.

        Hard: they are unreachable when this returns (lookups skip them and every
        worker's copy is invalidated through the generations); their index entries
        and files are removed later by settle_some(), which the owner's cleaner calls
        in the background. Soft: they are stale from now on.
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
                stale_since = self.purged.stale_since
                for record in found:
                    stale_since.setdefault(record, now)
            else:
                self.purged.doomed.update(found)
            self.generations.bump_slots(set(found.values()))
            count += len(found)
        self.purged.applied(Ban(now, selection, soft), count)
        return count

    def _purge_tag(self, tag: str, soft: bool, now: float) -> int:
        self.generations.bump_slots((tag_slot(tag),))
        return self.purged.set_aside(tag, self.tags.pop(tag), soft, now)

    def _select(self, selection: Selection) -> dict[int, int]:
        """The stored responses a purge by URL, prefix or "all" covers (not already
        purged), each with its key's generation slot."""
        records = self.records
        found: dict[int, int] = {}
        if selection.everything or selection.prefixes:
            prefixes = "" if selection.everything else selection.prefixes
            found.update(
                (record, slot_of(key))
                for record, key in records.items()
                if key.startswith(prefixes)
            )
        keys = [
            *selection.keys,
            *(derived for key in selection.keys for derived in _strings(self.derived.get(key))),
        ]
        for key in keys:
            slot = slot_of(key)
            found.update((record, slot) for record in records.of_key(key))
        purged = self.purged
        for record in purged.doomed.intersection(found) if purged.doomed else ():
            del found[record]
        if purged.groups:
            names = self.tags.names_of
            for record in [r for r in found if purged.purged_by_tag(r, names(r), None)[0]]:
                del found[record]
        return found

    def settle_some(self, count: int) -> int:
        """Settle up to `count` purged objects (forget them and remove their files,
        or mark them stale); how many."""
        done = 0
        doomed = self.purged.doomed
        while done < count and doomed:
            self._forget(doomed.pop(), unlink=True, bump=False)  # bumped by the purge
            done += 1
        settling = self.purged.settling
        while done < count and settling:
            group = settling[0]
            members = group.members
            while done < count and members:
                self._settle(group, members.pop())
                done += 1
            if not members:
                self.purged.settled_oldest()
        return done

    def _settle(self, group: PurgedGroup, record: int) -> None:
        if group.soft:
            stale_since = self.purged.stale_since
            since = stale_since.get(record)
            stale_since[record] = group.at if since is None else min(since, group.at)
            self.tags.restore(group.tag, record)
        else:
            # A file removed here may, rarely, already be the object's next
            # version (fetched again, written, not yet admitted): a worker then
            # finds it missing, drops it and fetches it again.
            self._forget(record, unlink=True, bump=False)  # bumped by the purge

    def _make_room(self, need: int) -> None:
        """Remove purged objects until `need` more bytes fit in the budget."""
        policy = self.policy
        purged = self.purged
        while policy.size + need > policy.budget:
            if purged.doomed:
                self.settle_some(1)
                continue
            group = next((g for g in purged.settling if not g.soft and g.members), None)
            if group is None:
                return
            self._settle(group, group.members.pop())

    # ── keys and the keys derived from them ──────────────────────────────────

    def _add(self, vid: str, admission: Admission) -> int:
        """A record for a response whose variant has none (its key's presence is
        counted by the caller)."""
        key = admission.key
        record = self.records.add(vid, key, admission.response_time, admission.place)
        if self.records.added_key:
            source, mark, _ = key.partition("#")
            if mark:
                first = self.records.by_key.get(source)
                if first >= 0:  # then its string is held already
                    source = self.records.key(first)
                self._derive(source, key)
        return record

    def _derive(self, source: str, key: str) -> None:
        held = self.derived.get(source)
        if held is None:
            self.derived[source] = key
        elif isinstance(held, str):
            if held != key:
                self.derived[source] = {held, key}
        else:
            held.add(key)

    def _underive(self, source: str, key: str) -> None:
        """A derived key with nothing stored under it any more leaves its source's."""
        held = self.derived.get(source)
        if isinstance(held, set):
            held.discard(key)
            if len(held) == 1:
                self.derived[source] = held.pop()
        elif held == key:
            del self.derived[source]

    # ── forgetting a record ──────────────────────────────────────────────────

    def _forget(self, record: int, unlink: bool, bump: bool = True, keep: int = -1) -> None:
        """Forget `record`; `unlink`: let go of its file or its place in a segment too,
        unless that is `keep` (see _free)."""
        records = self.records
        if not records.live(record):
            return
        key = records.key(record)
        if unlink:
            self._free(record, keep)
        self.policy.remove(record)
        self._leave_groups(record)
        self.tags.untag(record)
        self.purged.stale_since.pop(record, None)
        self.purged.doomed.discard(record)
        if records.remove(record):  # the key's last
            self.generations.count_key(key, -1)
            source, mark, _ = key.partition("#")
            if mark:
                self._underive(source, key)
        if bump:
            self.generations.bump(key)

    def _free(self, record: int, keep: int = -1) -> None:
        """Remove the record's file, or mark its place in a segment dead, unless that
        is `keep`: the place of the version replacing it (0: its file, written over)."""
        place = self.records.places[record]
        if place == keep:
            return
        if place:
            self.space.free(place, self.policy.size_of(record))
        else:
            objectfile.remove(self.root, self.records.vid(record))

    def _leave_groups(self, record: int) -> None:
        if self.purged.groups:
            self.purged.leave(record, self.tags.names_of(record))


def _strings(held: str | set[str] | None) -> tuple[str, ...] | set[str]:
    if held is None:
        return ()
    return (held,) if isinstance(held, str) else held
