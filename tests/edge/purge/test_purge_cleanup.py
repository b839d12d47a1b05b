"""What a hard purge leaves behind: the purged objects' index entries and files are
removed in the background, when the CPUs have time or at once when their space is
needed, never at the price of a live object; a kept store never brings them back."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path

import aiohttp
import pytest
from edge_support import Scripted, StartEdge, send
from purge_support import TOKEN, fields, fill, fill_node, purge, stored_files, tagged
from support import running_node

from pinedge.edge.node.idle import IdleMeter
from pinedge.edge.store import objectfile
from pinedge.edge.store.owner import StoreOwner
from pinedge.edge.store.purge import Selection


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found, f"{name} missing from /metrics"
    return float(found.group(1))


@pytest.mark.slow
async def test_a_hard_purge_removes_the_files_of_what_it_purged_and_only_those(
    scripted: Scripted, client: aiohttp.ClientSession, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("PINEDGE_ADMIN_TOKEN", TOKEN)
    cache_dir = tmp_path / "store"
    purged = [f"/p/{index}" for index in range(30)]
    kept = [f"/k/{index}" for index in range(5)]
    for path in purged:
        tagged(scripted, path, "pins")
    for path in kept:
        tagged(scripted, path, "boards")
    async with running_node(client, scripted.url, "--cache-dir", str(cache_dir)) as node:
        await fill_node(client, node, *purged, *kept)
        assert stored_files(cache_dir) == 35

        status, answer = await purge(client, node.admin, {"tags": ["pins"]})

        assert status == 200 and answer["purged"] == 30
        assert await node.metric(client, "pinedge_store_objects") == 5
        async with asyncio.timeout(20):
            while await node.metric(client, "pinedge_store_purged_pending") > 0:
                await asyncio.sleep(0.1)
        assert stored_files(cache_dir) == 5
        for path in kept:
            assert (await send(client, node.url + path)).hit, path
        assert not (await send(client, node.url + purged[0])).hit


@pytest.mark.slow
async def test_a_kept_store_restarted_right_after_a_hard_purge_does_not_bring_it_back(
    scripted: Scripted, client: aiohttp.ClientSession, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("PINEDGE_ADMIN_TOKEN", TOKEN)
    cache_dir = tmp_path / "store"
    paths = [f"/p/{index}" for index in range(200)]
    for path in paths:
        tagged(scripted, path, "pins")
    tagged(scripted, "/kept", "boards")
    async with running_node(client, scripted.url, "--cache-dir", str(cache_dir)) as node:
        await fill_node(client, node, *paths, "/kept")
        status, answer = await purge(client, node.admin, {"tags": ["pins"]})
        assert status == 200 and answer["purged"] == 200
    # Stopped at once: whatever the background clean-up had not reached yet was
    # removed on the way out.
    assert stored_files(cache_dir) == 1
    async with running_node(client, scripted.url, "--cache-dir", str(cache_dir)) as node:
        assert (await send(client, node.url + "/kept")).hit
        again = await send(client, node.url + paths[7])
        assert not again.hit and again.cache.get("fwd") == "miss"
    assert scripted.hits[paths[7]] == 2


async def test_a_restarted_node_serves_while_it_indexes_and_a_purge_meanwhile_holds(
    scripted: Scripted, client: aiohttp.ClientSession, tmp_path: Path, monkeypatch
) -> None:
    """store_load_wait = 0s: the node is ready before it has indexed a file; every
    object comes back as the indexing reaches it, but none of those a purge named
    while it was still indexing (whatever had been reached by then)."""
    monkeypatch.setenv("PINEDGE_ADMIN_TOKEN", TOKEN)
    cache_dir = tmp_path / "store"
    pins = [f"/p/{index}" for index in range(300)]
    boards = [f"/b/{index}" for index in range(300)]
    for path in pins:
        tagged(scripted, path, "pins")
    for path in boards:
        tagged(scripted, path, "boards")
    flags = ("--cache-dir", str(cache_dir))
    async with running_node(client, scripted.url, *flags) as node:
        await fill_node(client, node, *pins, *boards)
    config = tmp_path / "edge.toml"
    config.write_text('store_load_wait = "0s"\n')
    async with running_node(client, scripted.url, *flags, config=str(config)) as node:
        status, _ = await purge(client, node.admin, {"tags": ["pins"]})
        assert status == 200
        async with asyncio.timeout(20):
            while await node.metric(client, "pinedge_store_loading"):
                await asyncio.sleep(0.02)
        assert await node.metric(client, "pinedge_store_objects") == len(boards)
        assert all([(await send(client, node.url + path)).hit for path in boards])
        again = [await send(client, node.url + path) for path in pins[::30]]
        assert not any(reply.hit for reply in again)
    assert all(scripted.hits[path] == 1 for path in boards)


async def test_a_full_store_takes_room_for_new_objects_from_purged_ones_not_live_ones(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession, monkeypatch
) -> None:
    monkeypatch.setenv("PINEDGE_ADMIN_TOKEN", TOKEN)
    budget = 256 * 1024
    edge = await start_edge(scripted.url, cache_mem=str(budget))
    old = [f"/old/{index}" for index in range(18)]
    live = [f"/live/{index}" for index in range(4)]
    new = [f"/new/{index}" for index in range(18)]
    for path in old:
        scripted.reply(
            path,
            os.urandom(7_000),
            headers={"Cache-Control": "max-age=600", "Surrogate-Key": "old"},
        )
    for path in live + new:
        scripted.reply(path, os.urandom(7_000), headers={"Cache-Control": "max-age=600"})
    await fill(client, edge.url, *old, *live)
    status, answer = await purge(client, edge.admin_url, {"tags": ["old"]})
    assert status == 200 and answer["purged"] == 18

    await fill(client, edge.url, *new)

    text = await edge.metrics(client)
    assert metric(text, "pinedge_store_evictions_total") == 0
    assert metric(text, "pinedge_store_bytes") <= budget
    for path in live:
        assert (await send(client, edge.url + path)).hit, path


async def test_the_owner_removes_purged_objects_first_when_space_is_needed_before_it_had_time(
    tmp_path: Path,
) -> None:
    body = os.urandom(4000)
    (tmp_path / "tmp").mkdir()
    first = objectfile.write(tmp_path, fields("/first/0", "old"), body)
    owner = StoreOwner(tmp_path, budget=first.allocated * 10 + 100)
    try:
        metas = [first] + [
            objectfile.write(tmp_path, fields(f"/first/{index}", "old"), body)
            for index in range(1, 8)
        ]
        metas += [
            objectfile.write(tmp_path, fields(f"/live/{index}", "live"), body) for index in range(2)
        ]
        for meta in metas:
            assert owner.admit(objectfile.Admission.of(meta)) == []
        # On the event loop the clean-up waits for the CPUs to be idle; nothing
        # here yields to it, so only the space a new object needs can trigger it.
        assert owner.purge(Selection(tags=frozenset({"old"})), soft=False) == 8
        assert owner.index.purged.pending_removal == 8

        incoming = [
            objectfile.write(tmp_path, fields(f"/new/{index}", "new"), body) for index in range(5)
        ]
        for meta in incoming:
            assert owner.admit(objectfile.Admission.of(meta)) == []

        assert owner.index.evictions == 0
        assert owner.index.purged.pending_removal == 3  # a purged one made room for each new one
        assert all(owner.lookup(f"/live/{index}") for index in range(2))
        assert all(owner.lookup(f"/new/{index}") for index in range(5))
        assert not any(owner.lookup(f"/first/{index}") for index in range(8))
        on_disk = {path.name for path in (tmp_path / "objects").glob("*/*")}
        assert on_disk == set(owner.index.records)
    finally:
        owner.close(keep_files=True)
    assert len(list((tmp_path / "objects").glob("*/*"))) == 7


def test_the_idle_meter_reads_the_share_of_idle_cpu_time_between_two_readings(
    tmp_path: Path,
) -> None:
    stat = tmp_path / "stat"
    #                 user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 0 50 800 50 0 0 0 30 0\ncpu0 50 0 25 400 25 0 0 0 15 0\n")
    meter = IdleMeter(stat)
    assert meter.share() is None  # no tick since the first reading
    stat.write_text("cpu  160 0 90 900 50 0 0 0 60 0\n")
    assert meter.share() == 100 / 200
    stat.write_text("garbage\n")
    assert meter.share() is None


def test_the_idle_meter_reads_this_machine() -> None:
    meter = IdleMeter()
    deadline = time.monotonic() + 2
    share = None
    while share is None and time.monotonic() < deadline:
        time.sleep(0.05)
        share = meter.share()
    assert share is not None and 0.0 <= share <= 1.0
