"""The store link between a worker and the owner (link.py), over a real Unix socket:
what a worker tells arrives, in order, whether it goes at once or is held; and a
worker's view of the store (view.py) over it, as a node's only worker has it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from purge_support import fields

from pinedge.edge.store import objectfile
from pinedge.edge.store.entry import Entry, FreshnessSettings
from pinedge.edge.store.link import TELL_HOLD_BYTES, OwnerServer, RemoteLink
from pinedge.edge.store.objectfile import Meta
from pinedge.edge.store.owner import StoreOwner
from pinedge.edge.store.view import LOCAL_KEYS_MIN, SharedStore


@pytest.fixture
async def owner(tmp_path: Path) -> AsyncIterator[StoreOwner]:
    (tmp_path / "store" / "tmp").mkdir(parents=True)  # as the loader leaves it
    store = StoreOwner(tmp_path / "store", budget=1 << 30)
    yield store
    store.close(keep_files=False)


@contextlib.asynccontextmanager
async def linked(owner: StoreOwner, tmp_path: Path, eager: bool) -> AsyncIterator[RemoteLink]:
    """A worker's link to `owner` over a Unix socket, closed (both ends) after."""
    server = OwnerServer(owner, tmp_path / "owner.sock")
    await server.start()
    link = RemoteLink(server.path, eager=eager)
    try:
        await link.connect()
        yield link
    finally:
        await link.close()
        await server.close()


def written(owner: StoreOwner, key: str) -> objectfile.Admission:
    """A response of `key` written to its file, as a worker writes it before telling."""
    meta = objectfile.write(owner.root, fields(key, "any"), b"body of " + key.encode())
    return objectfile.Admission.of(meta)


async def indexed(owner: StoreOwner, key: str) -> None:
    """Until the owner has indexed `key` (what a link held goes out on its own)."""
    async with asyncio.timeout(5):
        while not owner.index.lookup(key):
            await asyncio.sleep(0.001)


@pytest.mark.parametrize("eager", [True, False], ids=["eager", "lone-worker"])
async def test_a_lookup_right_after_admissions_finds_them(
    owner: StoreOwner, tmp_path: Path, eager: bool
) -> None:
    """A node's only worker holds what it tells the owner for a few milliseconds;
    a question it asks goes out at the end of the loop turn, after them."""
    async with linked(owner, tmp_path, eager) as link:
        keys = [f"http://example.test/{index}" for index in range(5)]
        for key in keys:
            link.admit(written(owner, key))
        found = await link.lookup(keys[-1])
        assert [stored.vid for stored in found] == [objectfile.variant_id(keys[-1], (), ())]
        assert len(owner.index.records) == 5


async def test_an_admission_the_owner_cannot_index_is_logged_and_the_rest_are_indexed(
    owner: StoreOwner, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One admission with a variant id that is not one, between two good ones in the
    same write: the owner logs it, indexes the others, and still answers the link."""
    async with linked(owner, tmp_path, eager=True) as link:
        link.admit(written(owner, "http://example.test/before"))
        link.admit(written(owner, "http://example.test/bad")._replace(vid="not hex"))
        link.admit(written(owner, "http://example.test/after"))
        found = await link.lookup("http://example.test/after")
    assert [stored.vid for stored in found] == [
        objectfile.variant_id("http://example.test/after", (), ())
    ]
    assert owner.index.lookup("http://example.test/before")
    assert not owner.index.lookup("http://example.test/bad")
    assert "operation <Op.ADMIT: 4> failed" in caplog.text


async def test_what_a_lone_worker_holds_reaches_the_owner_on_its_own(
    owner: StoreOwner, tmp_path: Path
) -> None:
    """Held admissions go out without anything else sent after them."""
    async with linked(owner, tmp_path, eager=False) as link:
        link.admit(written(owner, "http://example.test/held"))
        await indexed(owner, "http://example.test/held")


async def test_held_admissions_go_once_they_stand_for_enough_bytes(
    owner: StoreOwner, tmp_path: Path
) -> None:
    """What the owner has not been told of it cannot count against the budget: held
    admissions go without waiting out the hold once their responses pass
    TELL_HOLD_BYTES (here the hold is an hour)."""
    async with linked(owner, tmp_path, eager=False) as link:
        link.hold = 3600.0
        link.admit(written(owner, "http://example.test/small"))
        large = b"x" * (TELL_HOLD_BYTES // 3 + 1)
        keys = [f"http://example.test/large/{index}" for index in range(3)]
        for key in keys[:2]:
            meta = objectfile.write(owner.root, fields(key, "any"), large)
            link.admit(objectfile.Admission.of(meta))
        await asyncio.sleep(0.2)
        assert not owner.index.lookup(keys[1]), "held: not yet past the bytes"
        meta = objectfile.write(owner.root, fields(keys[2], "any"), large)
        link.admit(objectfile.Admission.of(meta))
        for key in ["http://example.test/small", *keys]:
            await indexed(owner, key)


async def test_the_owner_gathers_what_workers_hold_before_a_purge(
    owner: StoreOwner, tmp_path: Path
) -> None:
    """A purge must count what was stored just before it: the owner asks each worker
    for what it holds and has it indexed when the asking is done; a worker gone
    away does not keep it waiting."""
    server = OwnerServer(owner, tmp_path / "owner.sock")
    await server.start()
    holding = RemoteLink(server.path, eager=False)
    leaving = RemoteLink(server.path, eager=False)
    try:
        await holding.connect()
        await leaving.connect()
        holding.hold = 3600.0
        holding.admit(written(owner, "http://example.test/just-before"))
        await asyncio.sleep(0.1)
        assert not owner.index.lookup("http://example.test/just-before")
        await leaving.close()
        async with asyncio.timeout(0.9):  # under HELD_TIMEOUT: nobody was waited out
            await server.gather_held()
        assert owner.index.lookup("http://example.test/just-before")
    finally:
        await holding.close()
        await server.close()


async def test_what_a_lone_worker_holds_is_sent_when_it_closes(
    owner: StoreOwner, tmp_path: Path
) -> None:
    async with linked(owner, tmp_path, eager=False) as link:
        link.admit(written(owner, "http://example.test/last"))
        await link.close()
        await indexed(owner, "http://example.test/last")


def build_entry(meta: Meta, body: bytes) -> Entry:
    """An entry for a stored file, as a worker makes one (without a prepared head)."""
    headers = CIMultiDictProxy(CIMultiDict(meta.headers))
    settings = FreshnessSettings(("CDN-Cache-Control",), 0.1, 86400.0)
    times = (meta.request_time, meta.response_time)
    vary = (meta.vary_names, meta.vary_values)
    return Entry.build(meta.key, vary, meta.status, meta.reason, headers, body, times, settings)


def lone_store(owner: StoreOwner, link: RemoteLink) -> SharedStore:
    """A node's only worker's view of the store, 1 MiB of hot memory."""
    return SharedStore(owner.root, link, owner.generations, 1 << 20, build_entry, alone=True)


async def test_a_copy_read_back_before_the_owner_indexed_it_stays_once_it_has(
    owner: StoreOwner, tmp_path: Path
) -> None:
    """A lone worker's store and the first hit on it, both within the hold: the copy
    that hit read back is still current once the held admission is indexed, not
    dropped and read again through the owner."""
    key = "http://example.test/soon-asked"
    async with linked(owner, tmp_path, eager=False) as link:
        store = lone_store(owner, link)
        now = time.time()
        headers = CIMultiDictProxy(CIMultiDict({"Cache-Control": "max-age=600"}))
        store.put_as_it_came(key, 200, "OK", headers, b"body", (now, now), frozenset())
        assert not owner.index.lookup(key), "the admission is held"
        assert [entry.body for entry in store.reread(key)] == [b"body"]
        await indexed(owner, key)
        assert [entry.body for entry in store.variants(key)] == [b"body"]


async def test_keys_found_not_stored_are_remembered_within_the_bound(
    owner: StoreOwner, tmp_path: Path
) -> None:
    """A key the owner says is not stored is remembered (no question next time), with
    the keys that hold no body, and no more of them than the bound."""
    async with linked(owner, tmp_path, eager=False) as link:
        store = lone_store(owner, link)
        for index in range(LOCAL_KEYS_MIN + 100):
            assert await store.load(f"http://example.test/none/{index}", told_stored=True) == []
        assert len(store.local) == len(store.bare) == LOCAL_KEYS_MIN
        assert not store.resident and store.local_size == 0
