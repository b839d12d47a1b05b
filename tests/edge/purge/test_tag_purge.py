"""A tag purge sets the tag's objects aside in one step and settles them one by one
later (hard: removed; soft: marked stale). Until then they must behave exactly as
purged, and what is stored again in the meantime must not be taken with them."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from edge_support import Scripted, send
from purge_support import TOKEN, fields, fill_node, purge, stored_files, tagged
from support import running_node

from pinedge.edge.store import objectfile
from pinedge.edge.store.objectfile import Meta, Stored
from pinedge.edge.store.owner import StoreOwner
from pinedge.edge.store.purge import Selection

BODY = os.urandom(300)


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[StoreOwner]:
    (tmp_path / "tmp").mkdir()
    store = StoreOwner(tmp_path, budget=1 << 30)
    yield store
    store.close(keep_files=True)


def store(owner: StoreOwner, key: str, tags: str, body: bytes = BODY) -> Meta:
    """Write and index one response of `key` carrying `tags`, fetched just now."""
    meta = objectfile.write(owner.root, fields(key, tags), body)
    assert owner.admit(objectfile.Admission.of(meta)) == []
    return meta


def tag(owner: StoreOwner, name: str, soft: bool = False) -> int:
    return owner.purge(Selection(tags=frozenset({name})), soft=soft)


def settle_everything(owner: StoreOwner) -> None:
    owner.index.settle_some(len(owner.index.records) + 1)
    assert owner.index.purged.pending_removal == 0 and not owner.index.purged.settling


def files(owner: StoreOwner) -> set[str]:
    return {path.name for path in (owner.root / "objects").glob("*/*")}


# The owner's own tests run on the event loop (as a node's owner does) but never
# yield to it, so nothing settles a purge before the test asks it to.


async def test_what_a_tag_purge_set_aside_is_gone_before_it_is_settled(owner: StoreOwner) -> None:
    purged = [store(owner, f"/p/{index}", "pins") for index in range(50)]
    kept = store(owner, "/k", "boards")

    assert tag(owner, "pins") == 50

    assert owner.index.purged.pending_removal == 50  # set aside, not one of them touched yet
    assert all(owner.lookup(meta.key) == [] for meta in purged)
    assert owner.lookup("/k") == [Stored.of(kept)]
    settle_everything(owner)
    assert files(owner) == {kept.variant_id}
    assert all(owner.lookup(meta.key) == [] for meta in purged)


async def test_a_response_stored_again_before_the_purge_is_settled_survives_it(
    owner: StoreOwner,
) -> None:
    store(owner, "/p/0", "pins", b"old")
    store(owner, "/p/1", "pins", b"old")
    assert tag(owner, "pins") == 2

    again = store(owner, "/p/0", "pins", b"new")  # same variant, same file name

    assert owner.lookup("/p/0") == [Stored.of(again)]
    assert owner.index.purged.pending_removal == 1
    settle_everything(owner)
    assert owner.lookup("/p/0") == [Stored.of(again)] and owner.lookup("/p/1") == []
    assert files(owner) == {again.variant_id}
    stored = objectfile.read(objectfile.object_path(owner.root, again.variant_id))
    assert stored is not None and stored[1] == b"new"


async def test_a_second_purge_of_a_tag_counts_only_what_was_stored_since(owner: StoreOwner) -> None:
    for index in range(3):
        store(owner, f"/p/{index}", "pins")
    assert tag(owner, "pins") == 3
    assert tag(owner, "pins") == 0
    store(owner, "/p/1", "pins")
    assert tag(owner, "pins") == 1
    assert owner.index.purged.covered == {"hard": 4}


async def test_a_soft_purged_object_is_stale_from_the_purge_before_and_after_it_is_settled(
    owner: StoreOwner,
) -> None:
    store(owner, "/s", "pins boards")
    before = time.time()
    assert tag(owner, "pins", soft=True) == 1
    after = time.time()

    (unsettled,) = owner.lookup("/s")
    assert unsettled.purged_at is not None and before <= unsettled.purged_at <= after
    settle_everything(owner)
    (settled,) = owner.lookup("/s")
    assert settled.purged_at == unsettled.purged_at
    # Indexed under its tag again: the next purge of the tag finds it.
    assert tag(owner, "pins") == 1
    assert owner.lookup("/s") == []


async def test_a_hard_purge_takes_what_a_soft_purge_of_the_tag_left_unsettled(
    owner: StoreOwner,
) -> None:
    metas = [store(owner, f"/p/{index}", "pins") for index in range(4)]
    assert tag(owner, "pins", soft=True) == 4
    assert all(owner.lookup(meta.key)[0].purged_at is not None for meta in metas)

    assert tag(owner, "pins") == 4

    assert all(owner.lookup(meta.key) == [] for meta in metas)
    assert owner.index.purged.pending_removal == 4
    settle_everything(owner)
    assert files(owner) == set()


async def test_a_hard_purge_after_a_soft_one_counts_each_object_it_removes_once(
    owner: StoreOwner,
) -> None:
    for index in range(4):
        store(owner, f"/p/{index}", "pins")
    assert tag(owner, "pins", soft=True) == 4
    for index in range(2):  # revalidated since: new versions, indexed under the tag
        store(owner, f"/p/{index}", "pins")

    assert tag(owner, "pins") == 4
    assert owner.index.purged.pending_removal == 4
    assert all(owner.lookup(f"/p/{index}") == [] for index in range(4))


async def test_an_object_under_two_tags_goes_with_either_and_is_counted_once_settled(
    owner: StoreOwner,
) -> None:
    both = store(owner, "/both", "pins boards")
    board = store(owner, "/board", "boards")
    assert tag(owner, "pins") == 1
    assert owner.lookup("/both") == []
    # Until settled it is still indexed under its other tag (the purge touched none
    # of its objects), so a purge of that tag counts it again; it stays hidden.
    settle_everything(owner)
    assert tag(owner, "boards") == 1
    assert owner.lookup("/board") == [] and owner.lookup("/both") == []
    settle_everything(owner)
    assert files(owner) == set()
    assert (
        both.variant_id not in owner.index.records and board.variant_id not in owner.index.records
    )


async def test_a_url_purge_does_not_count_what_a_tag_purge_already_removed(
    owner: StoreOwner,
) -> None:
    store(owner, "/a", "pins")
    store(owner, "/b", "boards")
    assert tag(owner, "pins") == 1
    assert owner.purge(Selection(keys=frozenset({"/a", "/b"})), soft=False) == 1
    settle_everything(owner)
    assert files(owner) == set()


async def test_space_for_a_new_object_comes_from_a_purged_tag_before_it_is_settled(
    tmp_path: Path,
) -> None:
    (tmp_path / "tmp").mkdir()
    size = objectfile.write(tmp_path, fields("/old/0", "old"), BODY).allocated
    owner = StoreOwner(tmp_path, budget=size * 20)
    try:
        for index in range(10):
            store(owner, f"/old/{index}", "old")
        for index in range(5):
            store(owner, f"/live/{index}", "live")
        assert tag(owner, "old") == 10
        for index in range(10):
            store(owner, f"/new/{index}", "new")
        assert owner.index.evictions == 0
        assert all(owner.lookup(f"/live/{index}") for index in range(5))
        assert all(owner.lookup(f"/new/{index}") for index in range(10))
        assert owner.index.size <= owner.index.budget
    finally:
        owner.close(keep_files=True)


# The same seen from outside, on a node with two workers.


@pytest.mark.slow
async def test_a_node_keeps_what_was_fetched_again_right_after_its_tag_was_purged(
    scripted: Scripted, client: aiohttp.ClientSession, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("PINEDGE_ADMIN_TOKEN", TOKEN)
    cache_dir = tmp_path / "store"
    paths = [f"/p/{index}" for index in range(40)]
    for path in paths:
        tagged(scripted, path, "pins")
    async with running_node(client, scripted.url, "--cache-dir", str(cache_dir), workers=2) as node:
        await fill_node(client, node, *paths)
        connector = aiohttp.TCPConnector(force_close=True)  # new connections: both workers
        async with aiohttp.ClientSession(connector=connector) as fresh:
            status, answer = await purge(client, node.admin, {"tags": ["pins"]})
            assert status == 200 and answer["purged"] == 40
            refetched = await send(fresh, node.url + paths[0])
            assert not refetched.hit and refetched.cache.get("fwd") == "miss"

            async with asyncio.timeout(20):
                while await node.metric(client, "pinedge_store_purged_pending") > 0:
                    await asyncio.sleep(0.05)
            assert stored_files(cache_dir) == 1
            for _ in range(4):
                assert (await send(fresh, node.url + paths[0])).hit
            assert not (await send(fresh, node.url + paths[5])).hit
    assert scripted.hits[paths[0]] == 2 and scripted.hits[paths[5]] == 2


@pytest.mark.slow
async def test_on_a_node_of_one_worker_a_tag_purge_right_after_its_misses_covers_them_all(
    scripted: Scripted, client: aiohttp.ClientSession, monkeypatch
) -> None:
    """A node's only worker tells the owner what it stored a few milliseconds late,
    together with what it stores meanwhile: a purge that comes in between still
    covers every response fetched before it, counted or not."""
    monkeypatch.setenv("PINEDGE_ADMIN_TOKEN", TOKEN)
    paths = [f"/q/{index}" for index in range(20)]
    for path in paths:
        tagged(scripted, path, "pins")
    async with running_node(client, scripted.url) as node:
        for path in paths:
            assert (await send(client, node.url + path)).cache.get("stored")
        status, answer = await purge(client, node.admin, {"tags": ["pins"]})
        assert status == 200 and answer["purged"] <= len(paths)
        for path in paths:
            again = await send(client, node.url + path)
            assert not again.hit and again.cache.get("fwd") == "miss", path
    assert all(scripted.hits[path] == 2 for path in paths)
