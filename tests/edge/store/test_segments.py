"""Small responses packed into segments: written by a writer, indexed by the owner,
marked dead when let go of, compacted, and found again by a restart."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from edge_support import Scripted, send
from purge_support import TOKEN, fields, purge, stored_vids
from support import running_node

from pinedge.edge.store import objectfile
from pinedge.edge.store.compactor import DEAD_SHARE
from pinedge.edge.store.generations import slot_of
from pinedge.edge.store.objectfile import Admission, MetaFields
from pinedge.edge.store.owner import StoreOwner
from pinedge.edge.store.purge import Selection
from pinedge.edge.store.segments import (
    DEAD,
    SEGMENT_BYTES,
    SegmentReader,
    SegmentWriter,
    segment_path,
    split,
)

BODY = b"b" * 1000


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[StoreOwner]:
    store = StoreOwner(tmp_path, budget=1 << 30)
    yield store
    store.close(keep_files=True)


def append(
    writer: SegmentWriter, key: str, tag: str = "t", body: bytes = BODY, at: float | None = None
) -> Admission:
    """Write one response to `writer`'s segment, as a worker does; its admission."""
    given = fields(key, tag)
    if at is not None:
        given["request_time"] = given["response_time"] = at
    values: MetaFields = tuple(given.values())  # type: ignore[assignment]  # in Meta's order
    data = objectfile.record(values, body)
    place = writer.append(data)
    vid = objectfile.variant_id(key, (), ())
    return Admission(key, vid, (tag,), values[6], values[7], len(data), place)


def read_back(root: Path, key: str, owner: StoreOwner) -> bytes | None:
    """The body the index holds for `key`, read from its place as a worker reads it."""
    (stored,) = owner.lookup(key)
    data = SegmentReader(root).read(stored.place, stored.size)
    parsed = None if data is None else objectfile.parse(data)
    return None if parsed is None else parsed[1]


def finish(root: Path) -> None:
    """Make every segment look as if no writer had added to it for a long while."""
    long_ago = time.time() - 3600
    for path in (root / "segments").iterdir():
        os.utime(path, (long_ago, long_ago))


def test_records_are_read_back_from_their_place_and_a_damaged_one_is_not(
    owner: StoreOwner, tmp_path: Path
) -> None:
    writer = SegmentWriter(tmp_path)
    for index in range(3):
        owner.admit(append(writer, f"/k/{index}", body=b"%d" % index * 500))
    assert read_back(tmp_path, "/k/1", owner) == b"1" * 500
    assert not (tmp_path / "objects").exists() or not list((tmp_path / "objects").iterdir())
    (stored,) = owner.lookup("/k/2")
    segment, offset = split(stored.place)
    with open(segment_path(tmp_path, segment), "r+b") as file:
        file.seek(offset + stored.size - 10)
        file.write(b"X")  # one byte of the body changed
    assert read_back(tmp_path, "/k/2", owner) is None


def test_an_evicted_or_purged_record_is_marked_dead_and_a_restart_does_not_bring_it_back(
    tmp_path: Path,
) -> None:
    writer = SegmentWriter(tmp_path)
    admissions = [append(writer, f"/k/{index}", tag=f"t{index % 2}") for index in range(10)]
    # Room for eight: the first two admitted are evicted.
    owner = StoreOwner(tmp_path, budget=8 * admissions[0].allocated + 10)
    for admission in admissions:
        owner.admit(admission)
    assert owner.index.evictions == 2
    assert owner.purge(Selection(keys=frozenset({"/k/5"})), soft=False) == 1
    owner.close(keep_files=True)
    data = (tmp_path / "segments" / f"{split(admissions[0].place)[0]:08x}").read_bytes()
    dead = [a for a in admissions if data[split(a.place)[1] :].startswith(DEAD)]
    assert {a.key for a in dead} == {"/k/0", "/k/1", "/k/5"}

    again = StoreOwner(tmp_path, budget=1 << 30)
    try:
        assert again.loader().run_for(10)
        assert len(again.index.records) == 7
        assert not again.lookup("/k/5") and not again.lookup("/k/0")
        assert read_back(tmp_path, "/k/9", again) == BODY
    finally:
        again.close(keep_files=True)


def test_a_restart_keeps_the_later_of_two_versions_and_stops_at_a_record_cut_short(
    tmp_path: Path,
) -> None:
    writer = SegmentWriter(tmp_path)
    now = time.time()
    append(writer, "/v", body=b"new" * 100, at=now)
    writer.seal()
    later = SegmentWriter(tmp_path)  # a segment written after, holding an older version
    append(later, "/v", body=b"old" * 100, at=now - 60)
    append(later, "/whole")
    cut = append(later, "/cut")
    segment, offset = split(cut.place)
    os.truncate(segment_path(tmp_path, segment), offset + cut.allocated - 5)  # a crash mid-write

    owner = StoreOwner(tmp_path, budget=1 << 30)
    try:
        assert owner.loader().run_for(10)
        assert read_back(tmp_path, "/v", owner) == b"new" * 100
        assert read_back(tmp_path, "/whole", owner) == BODY
        assert not owner.lookup("/cut")
        assert sorted(stored_vids(tmp_path)) == sorted(
            objectfile.variant_id(key, (), ()) for key in ("/v", "/whole")
        )
    finally:
        owner.close(keep_files=True)


def test_compaction_moves_the_live_records_of_a_mostly_dead_segment_and_removes_it(
    owner: StoreOwner, tmp_path: Path
) -> None:
    writer = SegmentWriter(tmp_path)
    admissions: list[Admission] = []
    while not admissions or split(admissions[-1].place)[0] == split(admissions[0].place)[0]:
        admissions.append(append(writer, f"/k/{len(admissions)}"))
    first = split(admissions[0].place)[0]
    in_first = [a for a in admissions if split(a.place)[0] == first]
    for admission in admissions:
        owner.admit(admission)
    keep = {a.key for a in in_first[::10]}  # a tenth of the first segment stays live
    for admission in in_first:
        if admission.key not in keep:
            owner.remove_key(admission.key)
    counts = owner.generations.counters
    before = {key: counts[slot_of(key)] for key in keep}
    finish(tmp_path)

    owner.compactor.run_all()

    assert not os.path.exists(segment_path(tmp_path, first))
    assert owner.index.space.compacted == 1
    for key in keep:
        (stored,) = owner.lookup(key)
        assert split(stored.place)[0] == owner.index.space.writer.segment
        assert read_back(tmp_path, key, owner) == BODY
        assert counts[slot_of(key)] != before[key]  # workers holding the old place look again
    # The second segment is almost all live: left as it is.
    assert os.path.exists(segment_path(tmp_path, split(admissions[-1].place)[0]))


def test_the_compactor_keeps_dead_bytes_within_their_share_of_the_segments(
    owner: StoreOwner, tmp_path: Path
) -> None:
    writer = SegmentWriter(tmp_path)
    admissions = [append(writer, f"/k/{index}") for index in range(4 * SEGMENT_BYTES // 1200)]
    for admission in admissions:
        owner.admit(admission)
    for admission in admissions[::3] + admissions[1::3]:  # two thirds of each segment dead
        owner.remove_key(admission.key)
    writer.seal()
    finish(tmp_path)

    owner.compactor.run_all()

    segments = list((tmp_path / "segments").iterdir())
    total = sum(path.stat().st_size for path in segments)
    live = owner.index.space.live_bytes
    assert total - live <= DEAD_SHARE * total + SEGMENT_BYTES  # the owner's own, being filled
    for admission in admissions[2::3]:
        assert read_back(tmp_path, admission.key, owner) == BODY


@pytest.mark.slow
async def test_a_two_worker_node_serves_what_compaction_moved_and_a_restart_finds_it(
    scripted: Scripted, client: aiohttp.ClientSession, tmp_path: Path, monkeypatch
) -> None:
    """Both workers fill segments; a purge leaves most of their records dead; the
    owner copies out the rest and removes the segments. Requests on fresh
    connections (either worker) still get the kept responses as hits, with their
    bodies, and so does a node restarted on the same directory."""
    monkeypatch.setenv("PINEDGE_ADMIN_TOKEN", TOKEN)

    async def small(request: web.Request) -> web.Response:
        body = request.path.encode() * (1000 // len(request.path))
        return web.Response(body=body, headers={"Cache-Control": "max-age=600"})

    paths = [f"{'/keep/' if index % 12 == 0 else '/drop/'}{index}" for index in range(2400)]
    for path in paths:
        scripted.handle(path, small)
    store = tmp_path / "store"
    flags = ("--cache-dir", str(store))
    kept = [f"/keep/{index}" for index in range(0, 2400, 12)]
    connector = aiohttp.TCPConnector(force_close=True)  # new connections: both workers
    async with (
        running_node(client, scripted.url, *flags, workers=2) as node,
        aiohttp.ClientSession(connector=connector) as fresh,
    ):
        for path in paths:
            assert (await send(fresh, node.url + path)).status == 200
        status, _ = await purge(client, node.admin, {"prefixes": ["/drop/"]})
        assert status == 200
        async with asyncio.timeout(60):  # settled (marked dead) as the CPUs allow, then moved
            while await node.metric(client, "pinedge_store_purged_pending") > 0:
                await asyncio.sleep(0.2)
            while not await node.metric(client, "pinedge_store_segment_moved_bytes_total"):
                await asyncio.sleep(0.2)
        for path in kept:
            again = await send(fresh, node.url + path)
            assert again.hit and again.body == path.encode() * (1000 // len(path)), path
    async with running_node(client, scripted.url, *flags) as node:
        assert await node.metric(client, "pinedge_store_objects") == len(kept)
        for path in kept[:20]:
            assert (await send(client, node.url + path)).hit
    assert all(scripted.hits[path] == 1 for path in kept)
