"""A node's memory stays within its budgets under a stream of new URLs: the owner's
index holds only what is stored, and each worker's copies stay within hot_memory.

(Found by the 30-minute soak, bench/soak.py: the owner's record of which variants
came from which source kept every source ever compressed, and a worker kept the
metadata of up to 200,000 keys and counted only the bodies of what it held.)
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from edge_support import Scripted, StartEdge, send
from purge_support import TOKEN, purge

from pinedge.edge.store import objectfile
from pinedge.edge.store.owner import StoreOwner
from pinedge.edge.store.view import LOCAL_KEYS_MIN


def fields(key: str) -> dict[str, object]:
    return {
        "key": key,
        "vary_names": (),
        "vary_values": (),
        "status": 200,
        "reason": "OK",
        "headers": (("Cache-Control", "max-age=600"),),
        "request_time": 0.0,
        "response_time": 0.0,
    }


@pytest.mark.slow
async def test_the_owner_forgets_the_variants_of_what_it_evicted(tmp_path: Path) -> None:
    """Sources and their variants evicted one after another leave nothing of themselves
    in the owner's index, and a URL purge still finds the variants that are stored."""
    (tmp_path / "tmp").mkdir()
    owner = StoreOwner(tmp_path, budget=64 * 1024)
    try:
        for n in range(400):
            for key in (f"http://a/p{n}", f"http://a/p{n}#v1#enc=gzip"):
                meta = objectfile.write(tmp_path, fields(key), b"x" * 1000)
                owner.admit(objectfile.Admission.of(meta))
        assert owner.index.evictions > 0
        stored = {key for _, key in owner.index.records.items()}
        sources = {key.partition("#")[0] for key in stored if "#" in key}
        assert set(owner.index.derived) == sources
        variants = [{v} if isinstance(v, str) else v for v in owner.index.derived.values()]
        assert all(keys <= stored for keys in variants)
        last = "http://a/p399"
        assert owner.remove_key(last) == 2
    finally:
        owner.close(keep_files=False)


@pytest.mark.slow
async def test_a_worker_keeps_what_hot_memory_allows_and_no_more(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    body = b"b" * 2000

    async def any_page(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(body=body, headers={"Cache-Control": "max-age=600"})

    scripted.handle("/p", any_page)
    edge = await start_edge(scripted.url, hot_memory="1MiB")

    async def get(query: str) -> None:
        async with client.get(f"{edge.url}/p?{query}") as response:
            assert await response.read() == body

    # 300 responses asked for twice (a copy is kept from the second request on):
    # more than 1 MiB holds. Then a flood of keys asked for once.
    for n in range(300):
        await get(f"hot={n}")
        await get(f"hot={n}")
    for n in range(LOCAL_KEYS_MIN + 500):
        await get(f"n={n}")
    store = edge.server.store
    assert len(store.bare) == LOCAL_KEYS_MIN, "the metadata of so many keys, no more"
    assert 0 < store.local_size <= 1024 * 1024
    held = sum(
        sum(len(entry.body) for entry in local.entries or ()) for local in store.local.values()
    )
    assert held > 0
    assert held < store.local_size, "the budget counts more than the bodies"
    if edge.server.config.fast_path:  # its misses keep no copy (the general path's do)
        assert store.variants("http://127.0.0.1/p?hot=299"), "the flood left hot copies be"
    async with client.get(f"{edge.url}/p?n=0") as response:
        assert await response.read() == body  # forgotten here, still stored


async def test_a_response_let_go_of_from_memory_is_read_again_from_its_file_as_a_hit(
    scripted: Scripted,
    start_edge: StartEdge,
    client: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker holds a few 20 KB responses in 64 KiB of hot memory (each from its
    first hit on); one it let go of is read from its file again and is a hit, one
    whose file was damaged meanwhile or that was purged meanwhile is fetched
    again, never served."""
    monkeypatch.setenv("PINEDGE_ADMIN_TOKEN", TOKEN)
    edge = await start_edge(scripted.url, hot_memory="64KiB")
    paths = [f"/r/{n}" for n in range(8)]
    for path in paths:
        scripted.reply(path, path.encode() * 4000, headers={"Cache-Control": "max-age=600"})
        assert not (await send(client, edge.url + path)).hit
        assert (await send(client, edge.url + path)).hit
    store = edge.server.store
    let_go = [path for path in paths if not store.variants(f"http://127.0.0.1{path}")]
    assert len(let_go) >= 4, "64 KiB holds at most three of them"
    assert paths[-1] not in let_go, "the last one stored is held"

    hit_path = edge.server.edge.hits
    served_before = sum(hit_path.hits.values())
    again = await send(client, edge.url + let_go[0])
    assert again.hit and again.body == let_go[0].encode() * 4000
    # With the hit path on, it read the file itself; without, Edge.handle did.
    assert sum(hit_path.hits.values()) - served_before == int(edge.server.config.fast_path)

    damaged_body = let_go[1].encode() * 4000
    for stored in [*(store.root / "objects").glob("*/*"), *(store.root / "segments").glob("*")]:
        data = bytearray(stored.read_bytes())
        at = data.find(damaged_body)
        if at >= 0:  # in a file of its own, or in a segment
            data[at + len(damaged_body) - 100] ^= 0xFF  # one flipped byte in the body
            stored.write_bytes(bytes(data))
    damaged = await send(client, edge.url + let_go[1])
    assert not damaged.hit and damaged.body == damaged_body

    status, _ = await purge(client, edge.admin_url, {"urls": [let_go[2]]})
    purged = await send(client, edge.url + let_go[2])
    assert status == 200 and not purged.hit and purged.body == let_go[2].encode() * 4000
    assert [scripted.hits[path] for path in let_go[:3]] == [1, 2, 2]
