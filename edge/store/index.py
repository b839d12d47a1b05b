"""The store's index: which variants of which keys are stored, in which files, within a budget."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path

from pinedge.edge.store import objectfile
from pinedge.edge.store.eviction import make_policy
from pinedge.edge.store.generations import Generations, slot_of, tag_slot
from pinedge.edge.store.objectfile import Meta
from pinedge.edge.store.purge import Ban, Selection
from pinedge.edge.store.purged import Purged, PurgedGroup
from pinedge.edge.store.tags import tags_of

log = logging.getLogger("pinedge.store")


class Index:
    """The node's index over the object files under `root`, within `budget` bytes.

    Workers reach it through the owner: lookup(), admit(), hits(), remove_key() and
    drop(); the operator through purge(). Whatever changes a key's stored variants
    or a tag's bumps their generation. Files are written by workers and removed
    only here."""

    def __init__(self, root: Path, budget: int, policy: str, generations: Generations) -> None:
        self.root = root
        self.budget = budget
        self.policy = make_policy(policy, budget)
        self.generations = generations
        self.records: dict[str, Meta] = {}
        self.by_key: dict[str, set[str]] = {}
        self.derived: dict[str, set[str]] = {}  # source key -> keys of its variants
        self.tags: dict[str, dict[str, Meta]] = {}  # tag -> {variant id: its record}
        self.tags_of: dict[str, frozenset[str]] = {}  # variant id -> its tags
        self.purged = Purged()
        self.size = 0
        self.evictions = 0
        self.dropped = 0

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

    # ── what workers ask ─────────────────────────────────────────────────────

    def lookup(self, key: str) -> list[Meta]:
        metas: list[Meta] = []
        vids = self.by_key.get(key)
        if vids is None:
            return metas
        purged = self.purged
        doomed, stale_since, groups = purged.doomed, purged.stale_since, purged.groups
        for vid in vids:
            if vid in doomed:
                continue
            meta = self.records[vid]
            since = stale_since.get(vid)
            if groups:
                hidden, since = purged.purged_by_tag(vid, meta, self.tags_of.get(vid, ()), since)
                if hidden:
                    continue
            metas.append(meta if since is None else replace(meta, purged_at=since))
        return metas

    def admit(self, meta: Meta) -> list[str]:
        """Index a file a worker wrote; returns the variant ids evicted for it. The
        key's generation slot is bumped once when the response is stored as it came,
        and twice when a purge since its request dropped it or made it stale."""
        vid = meta.variant_id
        purged = self.purged
        if vid in purged.doomed:  # stored again before the purged one was cleaned up
            self.policy.remove(vid)
            self._forget(vid, unlink=False)
        tags = tags_of(meta.headers)
        ban = purged.ban_for(meta, tags)
        if ban is not None:
            # The worker that wrote it counts on one bump of the key's slot for an
            # admission; one more tells it to look the key up again.
            self.generations.bump(meta.key)
        if ban is not None and not ban.soft:
            # Fetched before a purge that covers it: as if purged with the rest.
            self.policy.remove(vid)
            self._forget(vid, unlink=False, bump=False)
            self.generations.bump(meta.key)
            objectfile.object_path(self.root, vid).unlink(missing_ok=True)
            return []
        old = self.records.get(vid)
        if old is not None:
            self.size -= old.allocated
            self._leave_groups(vid, old)
            self._untag(vid)
        self.records[vid] = meta
        purged.stale_since.pop(vid, None)
        if ban is not None:
            purged.stale_since[vid] = ban.at
        if tags:
            self.tags_of[vid] = tags
            for tag in tags:
                self.tags.setdefault(tag, {})[vid] = meta
        siblings = self.by_key.get(meta.key)
        if siblings is None:
            siblings = self.by_key[meta.key] = set()
            self.generations.count_key(meta.key, 1)
        siblings.add(vid)
        source, mark, _ = meta.key.partition("#")
        if mark:
            self.derived.setdefault(source, set()).add(meta.key)
        self.size += meta.allocated
        self.generations.bump(meta.key)
        pending = purged.doomed or purged.settling
        if pending and self.policy.size + meta.allocated > self.policy.budget:
            # Space a new object needs is taken from purged objects first, at once,
            # before any eviction.
            self._make_room(meta.allocated)
        evicted = self.policy.admit(vid, meta.allocated)
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

    def drop(self, vid: str) -> None:
        """A worker found this file damaged: it must not be served again."""
        if vid in self.records:
            self.dropped += 1
            self.policy.remove(vid)
            self._forget(vid, unlink=True)

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
                for vid in found:
                    stale_since.setdefault(vid, now)
            else:
                self.purged.doomed.update(found)
            self.generations.bump_slots(set(found.values()))
            count += len(found)
        self.purged.applied(Ban(now, selection, soft), count)
        return count

    def _purge_tag(self, tag: str, soft: bool, now: float) -> int:
        self.generations.bump_slots((tag_slot(tag),))
        return self.purged.set_aside(tag, self.tags.pop(tag, None), soft, now)

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
        purged = self.purged
        for vid in purged.doomed.intersection(found) if purged.doomed else ():
            del found[vid]
        if purged.groups:
            tags_of = self.tags_of
            for vid in [
                v for v in found if purged.purged_by_tag(v, records[v], tags_of.get(v, ()), None)[0]
            ]:
                del found[vid]
        return found

    def settle_some(self, count: int) -> int:
        """Settle up to `count` purged objects (forget them and remove their files,
        or mark them stale); how many."""
        done = 0
        doomed = self.purged.doomed
        while done < count and doomed:
            vid = doomed.pop()
            self.policy.remove(vid)
            self._forget(vid, unlink=True, bump=False)  # bumped by the purge
            done += 1
        settling = self.purged.settling
        while done < count and settling:
            group = settling[0]
            members = group.members
            while done < count and members:
                self._settle(group, *members.popitem())
                done += 1
            if not members:
                self.purged.settled_oldest()
        return done

    def _settle(self, group: PurgedGroup, vid: str, meta: Meta) -> None:
        if self.records.get(vid) is not meta:
            return  # gone already, or stored again since the purge
        if group.soft:
            stale_since = self.purged.stale_since
            since = stale_since.get(vid)
            stale_since[vid] = group.at if since is None else min(since, group.at)
            self.tags.setdefault(group.tag, {})[vid] = meta
        else:
            self.policy.remove(vid)
            # A file removed here may, rarely, already be the object's next
            # version (fetched again, written, not yet admitted): a worker then
            # finds it missing, drops it and fetches it again.
            self._forget(vid, unlink=True, bump=False)  # bumped by the purge

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
            self._settle(group, *group.members.popitem())

    # ── forgetting a record ──────────────────────────────────────────────────

    def _forget(self, vid: str, unlink: bool, bump: bool = True) -> None:
        meta = self.records.pop(vid, None)
        if meta is None:
            return
        self.size -= meta.allocated
        self._leave_groups(vid, meta)
        self._untag(vid)
        self.purged.stale_since.pop(vid, None)
        self.purged.doomed.discard(vid)
        siblings = self.by_key.get(meta.key)
        if siblings is not None:
            siblings.discard(vid)
            if not siblings:
                del self.by_key[meta.key]
                self.generations.count_key(meta.key, -1)
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
        if self.purged.groups:
            self.purged.leave(vid, meta, self.tags_of.get(vid, ()))

    def _untag(self, vid: str) -> None:
        for tag in self.tags_of.pop(vid, ()):
            holders = self.tags.get(tag)
            if holders is not None:
                holders.pop(vid, None)
                if not holders:
                    del self.tags[tag]
