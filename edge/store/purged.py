"""What purges covered that is not settled yet, recent purges as bans, and the cleaner."""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pinedge.edge.node.idle import IdleMeter
from pinedge.edge.store.objectfile import Admission
from pinedge.edge.store.purge import Ban
from pinedge.edge.store.tags import Members

# A purge also covers responses fetched before it and stored within this long
# after it (fills and variants in flight); longer than any fill may take.
BAN_SECONDS = 600.0
# The clean-up after a hard purge (index entries, files) takes only what the hit
# path leaves: every CLEAN_CHECK seconds, up to CLEAN_BATCH objects if at least
# half a CPU went unused since the last check, else CLEAN_TRICKLE.
CLEAN_CHECK = 0.2
CLEAN_BATCH = 2048
CLEAN_SLICE = 256  # objects per turn of the loop, so lookups are not held up
CLEAN_TRICKLE = 8
CLEAN_IDLE_SHARE = 0.5 / (os.cpu_count() or 1)


@dataclass(slots=True, eq=False)
class PurgedGroup:
    """What a tag indexed when it was purged, settled later one object at a time
    (hard: removed; soft: marked stale and indexed under the tag again). Until then
    the owner's lookups find its members here, so the purge itself touches none of
    them: one purged tag costs the same among a million objects as among ten.
    A record that goes or is stored again leaves the groups at once (leave()), so
    a number here is always the record the purge covered."""

    tag: str
    at: float
    soft: bool
    members: Members


class Purged:
    """The marks purges leave on the index's records until they are settled, the
    recent purges as bans, and how many purges covered how much."""

    def __init__(self) -> None:
        self.doomed: set[int] = set()  # hard-purged records: unreachable, files not yet removed
        self.stale_since: dict[int, float] = {}  # soft-purged: record -> when
        self.groups: dict[str, list[PurgedGroup]] = {}  # tag -> groups not yet settled
        self.settling: deque[PurgedGroup] = deque()  # the same groups, oldest first
        self.bans: deque[Ban] = deque()
        self.keep_bans = False  # while files from before are still to be indexed (loader.py)
        self.purges: dict[tuple[str, str], int] = {}  # (kind, mode) -> purges
        self.covered: dict[str, int] = {}  # mode -> stored responses covered

    @property
    def unsettled(self) -> bool:
        return bool(self.doomed or self.settling)

    @property
    def pending_removal(self) -> int:
        """Hard-purged objects whose index entries and files are still to be removed."""
        waiting = sum(len(group.members) for group in self.settling if not group.soft)
        return len(self.doomed) + waiting

    def holding(self, record: int, tags: Iterable[str]) -> list[PurgedGroup]:
        """The groups, not yet settled, that hold this record (tagged `tags`)."""
        groups = self.groups
        return [group for tag in tags for group in groups.get(tag, ()) if record in group.members]

    def purged_by_tag(
        self, record: int, tags: Iterable[str], since: float | None
    ) -> tuple[bool, float | None]:
        """Whether a tag purge not yet settled removed this record (hard), and from
        when it is stale (`since`, or an earlier soft purge's time)."""
        for group in self.holding(record, tags):
            if not group.soft:
                return True, since
            since = group.at if since is None else min(since, group.at)
        return False, since

    def leave(self, record: int, tags: Iterable[str]) -> None:
        """A record that goes (forgotten, or replaced by the next version) leaves the
        groups that hold it, so that they count only what is left to settle."""
        for group in self.holding(record, tags):
            group.members.discard(record)

    def set_aside(self, tag: str, members: Members | None, soft: bool, now: float) -> int:
        """Purge a tag whose records are `members`: they become one group, settled
        later. A hard purge also hardens the tag's soft groups not yet settled.
        Returns the number of records covered."""
        count = 0
        if not soft:
            for group in self.groups.get(tag, ()):
                if group.soft:
                    group.soft = False
                    count += len(group.members)
        if members:
            group = PurgedGroup(tag, now, soft, members)
            self.groups.setdefault(tag, []).append(group)
            self.settling.append(group)
            count += len(members)
        return count

    def settled_oldest(self) -> None:
        """The oldest group has nothing left to settle."""
        group = self.settling.popleft()
        waiting = self.groups[group.tag]
        waiting.remove(group)
        if not waiting:
            del self.groups[group.tag]

    def ban_for(self, admission: Admission, tags: frozenset[str]) -> Ban | None:
        """The latest purge that covers this response and came after its request was
        sent (the response may predate what the purge is for)."""
        for ban in reversed(self.bans):
            if ban.at <= admission.request_time:
                return None  # this one and every earlier purge came before the request
            if ban.selection.matches(admission.key, tags):
                return ban
        return None

    def applied(self, ban: Ban, count: int) -> None:
        """A purge covering `count` records was applied: remember it as a ban for
        BAN_SECONDS, and count it."""
        bans = self.bans
        while bans and ban.at - bans[0].at >= BAN_SECONDS and not self.keep_bans:
            bans.popleft()
        bans.append(ban)
        mode = "soft" if ban.soft else "hard"
        for kind in ban.selection.kinds:
            self.purges[kind, mode] = self.purges.get((kind, mode), 0) + 1
        self.covered[mode] = self.covered.get(mode, 0) + count


class Cleaner:
    """Settles what purges left, by calling `settle_some(count)` (which settles up
    to `count` records and says how many) while `purged` has anything unsettled."""

    def __init__(self, purged: Purged, settle_some: Callable[[int], int]) -> None:
        self.purged = purged
        self.settle_some = settle_some
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Settle in the background from now on; at once, outside an event loop."""
        if not self.purged.unsettled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.settle_all()
            return
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._clean())

    async def _clean(self) -> None:
        purged = self.purged
        meter = IdleMeter()
        while purged.unsettled:
            await asyncio.sleep(CLEAN_CHECK)
            idle = meter.share()
            if idle is not None and idle < CLEAN_IDLE_SHARE:
                self.settle_some(CLEAN_TRICKLE)
                continue
            left = CLEAN_BATCH
            while left > 0 and purged.unsettled:
                left -= self.settle_some(min(left, CLEAN_SLICE))
                await asyncio.sleep(0)

    def settle_all(self) -> None:
        while self.purged.unsettled:
            self.settle_some(CLEAN_BATCH)

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
