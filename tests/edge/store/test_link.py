"""The store link between a worker and the owner (link.py), over a real Unix socket:
what a worker tells arrives, in order, whether it goes at once or is held; and a
worker's view of the store (view.py) over it, as a node's only worker has it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from pinedge.edge.store import objectfile
from pinedge.edge.store.entry import Entry, FreshnessSettings
from pinedge.edge.store.link import OwnerServer, RemoteLink
from pinedge.edge.store.objectfile import Meta
from pinedge.edge.store.owner import StoreOwner
from pinedge.edge.store.view import LOCAL_KEYS_MIN, SharedStore


@pytest.fixture
async def owner(tmp_path: Path) -> AsyncIterator[StoreOwner]:
    (tmp_path / "store" / "tmp").mkdir(parents=True)  # as the loader leaves it
    store = StoreOwner(tmp_path / "store", budget=1 << 30)
    yield store
    store.close(keep_files=False)


async def linked(owner: StoreOwner, tmp_path: Path, eager: bool) -> tuple[OwnerServer, RemoteLink]:
    server = OwnerServer(owner, tmp_path / "owner.sock")
    await server.start()
    link = RemoteLink(server.path, eager=eager)
    await link.connect()
    return server, link


def written(owner: StoreOwner, key: str) -> objectfile.Admission:
    """A response of `key` written to its file, as a worker writes it before telling."""
    now = time.time()
    fields = {
        "key": key,
        "vary_names": (),
        "vary_values": (),
        "status": 200,
        "reason": "OK",
        "headers": (("Cache-Control", "max-age=600"),),
        "request_time": now,
        "response_time": now,
    }
    return objectfile.Admission.of(objectfile.write(owner.root, fields, b"body of " + key.encode()))


@pytest.mark.parametrize("eager", [True, False], ids=["eager", "lone-worker"])
async def test_a_lookup_right_after_admissions_finds_them(
    owner: StoreOwner, tmp_path: Path, eager: bool
) -> None:
    """A node's only worker holds what it tells the owner for a few milliseconds;
    a question it asks goes out at the end of the loop turn, after them."""
    server, link = await linked(owner, tmp_path, eager)
    try:
        keys = [f"http://example.test/{index}" for index in range(5)]
        for key in keys:
            link.admit(written(owner, key))
        found = await link.lookup(keys[-1])
        assert [stored.vid for stored in found] == [objectfile.variant_id(keys[-1], (), ())]
        assert len(owner.index.records) == 5
    finally:
        await link.close()
        await server.close()


async def test_what_a_lone_worker_holds_reaches_the_owner_on_its_own(
    owner: StoreOwner, tmp_path: Path
) -> None:
    """Held admissions go out without anything else sent after them."""
    server, link = await linked(owner, tmp_path, eager=False)
    try:
        link.admit(written(owner, "http://example.test/held"))
        async with asyncio.timeout(5):
            while not owner.index.lookup("http://example.test/held"):
                await asyncio.sleep(0.001)
    finally:
        await link.close()
        await server.close()


async def test_what_a_lone_worker_holds_is_sent_when_it_closes(
    owner: StoreOwner, tmp_path: Path
) -> None:
    server, link = await linked(owner, tmp_path, eager=False)
    try:
        link.admit(written(owner, "http://example.test/last"))
        await link.close()
        async with asyncio.timeout(5):
            while not owner.index.lookup("http://example.test/last"):
                await asyncio.sleep(0.001)
    finally:
        await server.close()


def build_entry(meta: Meta, body: bytes) -> Entry:
    """An entry for a stored file, as a worker makes one (without a prepared head)."""
    headers = CIMultiDictProxy(CIMultiDict(meta.headers))
    settings = FreshnessSettings(("CDN-Cache-Control",), 0.1, 86400.0)
    times = (meta.request_time, meta.response_time)
    vary = (meta.vary_names, meta.vary_values)
    return Entry.build(meta.key, vary, meta.status, meta.reason, headers, body, times, settings)


async def test_a_copy_read_back_before_the_owner_indexed_it_stays_once_it_has(
    owner: StoreOwner, tmp_path: Path
) -> None:
    """A lone worker's store and the first hit on it, both within the hold: the copy
    that hit read back is still current once the held admission is indexed, not
    dropped and read again through the owner."""
    server, link = await linked(owner, tmp_path, eager=False)
    store = SharedStore(owner.root, link, owner.generations, 1 << 20, build_entry, alone=True)
    key = "http://example.test/soon-asked"
    try:
        now = time.time()
        headers = CIMultiDictProxy(CIMultiDict({"Cache-Control": "max-age=600"}))
        store.put_as_it_came(key, 200, "OK", headers, b"body", (now, now), frozenset())
        assert not owner.index.lookup(key), "the admission is held"
        assert [entry.body for entry in store.reread(key)] == [b"body"]
        async with asyncio.timeout(5):
            while not owner.index.lookup(key):
                await asyncio.sleep(0.001)
        assert [entry.body for entry in store.variants(key)] == [b"body"]
    finally:
        await link.close()
        await server.close()


async def test_keys_found_not_stored_are_remembered_within_the_bound(
    owner: StoreOwner, tmp_path: Path
) -> None:
    """A key the owner says is not stored is remembered (no question next time), with
    the keys that hold no body, and no more of them than the bound."""
    server, link = await linked(owner, tmp_path, eager=False)
    store = SharedStore(owner.root, link, owner.generations, 1 << 20, build_entry, alone=True)
    try:
        for index in range(LOCAL_KEYS_MIN + 100):
            assert await store.load(f"http://example.test/none/{index}", told_stored=True) == []
        assert len(store.local) == len(store.bare) == LOCAL_KEYS_MIN
        assert not store.resident and store.local_size == 0
    finally:
        await link.close()
        await server.close()
