"""The node's store, seen from outside: budgets, restarts, damaged files, workers.

These run the real `pinedge edge` command (a supervisor and its workers) in
front of the scripted origin and look at responses, the origin's counts and
the node's /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import time
import zlib
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from edge_support import Scripted, StartEdge, send, serve_photo
from purge_support import fields
from support import running_node, wait_ready

from pinedge.edge.store import objectfile
from pinedge.edge.store.compactor import DEAD_SHARE
from pinedge.edge.store.segments import SEGMENT_BYTES


@pytest.mark.slow
async def test_the_store_never_grows_past_its_budget_when_filled_with_more_than_fits(
    scripted: Scripted, start_edge: StartEdge, client: aiohttp.ClientSession
) -> None:
    budget = 256 * 1024
    edge = await start_edge(scripted.url, cache_mem=str(budget))
    for index in range(60):
        scripted.reply(f"/o{index}", os.urandom(10_000), headers={"Cache-Control": "max-age=600"})
        await send(client, f"{edge.url}/o{index}")
        text = await edge.metrics(client)
        stored = float(re.search(r"^pinedge_store_bytes (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]  # always there
        assert stored <= budget
    evictions = re.search(r"^pinedge_store_evictions_total (\S+)$", text, re.M)
    assert evictions and float(evictions.group(1)) > 0
    assert (await send(client, f"{edge.url}/o59")).hit


@pytest.mark.slow
async def test_a_node_restarted_on_a_warm_cache_dir_serves_its_objects_as_hits(
    scripted: Scripted, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    scripted.reply("/kept", b"kept across restarts", headers={"Cache-Control": "max-age=600"})
    flags = ("--cache-dir", str(tmp_path / "store"), "--cache-disk", "64MiB")
    async with running_node(client, scripted.url, *flags) as node:
        first = await send(client, node.url + "/kept")
        assert first.cache.get("stored")
    async with running_node(client, scripted.url, *flags) as node:
        again = await send(client, node.url + "/kept")
        assert again.hit and again.body == b"kept across restarts"
        assert again.age >= 0
    assert scripted.hits["/kept"] == 1


@pytest.mark.slow
async def test_a_restart_on_a_smaller_budget_keeps_the_newest_objects_and_drops_strays(
    scripted: Scripted, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Files are indexed again oldest first, so a budget that no longer holds them
    all evicts the oldest; a file the store did not write is dropped, not served."""
    for index in range(8):
        scripted.reply(f"/o{index}", os.urandom(30_000), headers={"Cache-Control": "max-age=600"})
    store = tmp_path / "store"
    async with running_node(client, scripted.url, "--cache-dir", str(store)) as node:
        for index in range(8):
            await send(client, f"{node.url}/o{index}")
            await asyncio.sleep(0.02)  # distinct modification times, in request order
    stray = store / "objects" / "ab" / "not-a-variant-id"
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"stray")
    # Each object takes 32 KiB and 1 KiB of inode as the store counts it: room for 3.
    flags = ("--cache-dir", str(store), "--cache-disk", str(3 * 33 * 1024 + 512))
    async with running_node(client, scripted.url, *flags) as node:
        assert await node.metric(client, "pinedge_store_objects") == 3
        assert await node.metric(client, "pinedge_store_dropped_total") == 1
        for index in (5, 6, 7):
            assert (await send(client, f"{node.url}/o{index}")).hit
        assert not (await send(client, f"{node.url}/o0")).hit
    assert not stray.exists()


@pytest.mark.slow
async def test_a_response_invalidated_while_a_restarted_node_indexes_does_not_come_back(
    scripted: Scripted, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """RFC 9111 §4.4 across a restart: the node serves before it has indexed its
    files (store_load_wait = 0s), and a POST to a URL whose file it has not reached
    yet (the newest of 20,001, indexed last) still invalidates what that file holds.
    The response is large enough for a file of its own (a small one goes to a
    segment, which the loader reads before the files)."""
    old, new = b"OLD" * 6000, b"NEW" * 6000
    version = {"/x": old}

    async def changing(request: web.Request) -> web.Response:
        if request.method == "POST":
            version["/x"] = new
            return web.Response(body=b"changed")
        return web.Response(body=version["/x"], headers={"Cache-Control": "max-age=600"})

    scripted.handle("/x", changing)
    store = tmp_path / "store"
    flags = ("--cache-dir", str(store))
    async with running_node(client, scripted.url, *flags) as node:
        assert (await send(client, node.url + "/x")).body == old
    config = slow_restart(store, tmp_path)
    async with running_node(client, scripted.url, *flags, config=str(config)) as node:
        posted = await send(client, node.url + "/x", method="POST", data=b"change")
        assert posted.status == 200
        async with asyncio.timeout(60):
            while await node.metric(client, "pinedge_store_loading"):
                await asyncio.sleep(0.05)
        assert await node.metric(client, "pinedge_store_objects") == 20_000
        after = await send(client, node.url + "/x")
        assert after.body == new and not after.hit
        assert await node.metric(client, "pinedge_store_dropped_total") == 0


@pytest.mark.slow
async def test_a_restarted_node_serves_a_file_it_has_not_indexed_yet_as_a_hit(
    scripted: Scripted, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """While it indexes 20,001 files (store_load_wait = 0s), a request for the newest,
    which the loader reaches last, finds its file by its key: a hit at once, the
    origin not asked again, as nginx serves a file its cache loader has not read.
    (A response large enough for a file of its own: a key does not name its place
    in a segment.)"""
    kept = b"kept across restarts" * 1000
    scripted.reply("/x", kept, headers={"Cache-Control": "max-age=600"})
    store = tmp_path / "store"
    flags = ("--cache-dir", str(store))
    async with running_node(client, scripted.url, *flags) as node:
        assert (await send(client, node.url + "/x")).cache.get("stored")
    config = slow_restart(store, tmp_path)
    async with running_node(client, scripted.url, *flags, config=str(config)) as node:
        assert await node.metric(client, "pinedge_store_loading") == 1
        again = await send(client, node.url + "/x")
        assert again.hit and again.body == kept
        assert await node.metric(client, "pinedge_store_loaded_on_demand_total") == 1
        async with asyncio.timeout(60):
            while await node.metric(client, "pinedge_store_loading"):
                await asyncio.sleep(0.05)
        assert await node.metric(client, "pinedge_store_objects") == 20_001
        assert (await send(client, node.url + "/x")).hit
    assert scripted.hits["/x"] == 1


@pytest.mark.slow
async def test_a_truncated_store_file_is_dropped_at_start_and_never_served(
    scripted: Scripted, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    body = os.urandom(50_000)
    scripted.reply("/cut", body, headers={"Cache-Control": "max-age=600"})
    flags = ("--cache-dir", str(tmp_path / "store"), "--cache-disk", "64MiB")
    async with running_node(client, scripted.url, *flags) as node:
        await send(client, node.url + "/cut")
    (stored,) = (tmp_path / "store" / "objects").glob("*/*")
    stored.write_bytes(stored.read_bytes()[:30_000])  # a power cut mid-write
    async with running_node(client, scripted.url, *flags) as node:
        reply = await send(client, node.url + "/cut")
        assert not reply.hit and reply.body == body
        assert await node.metric(client, "pinedge_store_dropped_total") == 1
    assert scripted.hits["/cut"] == 2


@pytest.mark.slow
async def test_a_corrupted_store_file_fails_its_checksum_and_is_never_served(
    scripted: Scripted, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    body = b"A" * 20_000
    scripted.reply("/rot", body, headers={"Cache-Control": "max-age=600"})
    flags = ("--cache-dir", str(tmp_path / "store"), "--cache-disk", "64MiB")
    async with running_node(client, scripted.url, *flags) as node:
        await send(client, node.url + "/rot")
    (stored,) = (tmp_path / "store" / "objects").glob("*/*")
    damaged = bytearray(stored.read_bytes())
    damaged[-100] ^= 0xFF  # same length, one flipped byte in the body
    stored.write_bytes(bytes(damaged))
    async with running_node(client, scripted.url, *flags) as node:
        reply = await send(client, node.url + "/rot")
        assert reply.body == body and not reply.hit
    assert scripted.hits["/rot"] == 2


@pytest.mark.slow
async def test_a_one_worker_node_finds_a_vary_response_it_just_stored(
    scripted: Scripted, client: aiohttp.ClientSession
) -> None:
    """The only worker holds what it tells the owner for a few milliseconds, but not
    the admission of a response with Vary, of which it keeps no record of its own:
    the request right after the one that stored it is a hit."""
    paths = [f"/vary/{index}" for index in range(5)]
    for path in paths:
        headers = {"Cache-Control": "max-age=600", "Vary": "Accept-Encoding"}
        scripted.reply(path, path.encode(), headers=headers)
    async with running_node(client, scripted.url) as node:
        for path in paths:
            assert (await send(client, node.url + path)).cache.get("stored")
            again = await send(client, node.url + path)
            assert again.hit and again.body == path.encode(), path
    assert all(scripted.hits[path] == 1 for path in paths)


@pytest.mark.slow
async def test_two_workers_collapse_two_hundred_concurrent_misses_into_one_origin_request(
    scripted: Scripted, client: aiohttp.ClientSession
) -> None:
    scripted.reply(
        "/cold", os.urandom(100_000), headers={"Cache-Control": "max-age=600"}, delay=0.5
    )
    async with running_node(client, scripted.url, workers=2) as node:
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as many:
            replies = await asyncio.gather(*(send(many, node.url + "/cold") for _ in range(200)))
        assert {r.status for r in replies} == {200}
        assert len({r.body for r in replies}) == 1
        assert sum(1 for r in replies if r.cache.get("stored")) == 1
    assert scripted.hits["/cold"] == 1


@pytest.mark.slow
async def test_a_worker_killed_with_sigkill_is_replaced_and_the_node_keeps_serving(
    scripted: Scripted, client: aiohttp.ClientSession
) -> None:
    scripted.reply("/alive", b"still here", headers={"Cache-Control": "max-age=600"})
    async with running_node(client, scripted.url, workers=2) as node:
        await send(client, node.url + "/alive")
        victim = node.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        # Connections the dead worker held die with it; new ones reach the other.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as fresh:
            for _ in range(20):
                reply = await send(fresh, node.url + "/alive")
                assert reply.status == 200 and reply.body == b"still here"
        async with asyncio.timeout(10):
            while await node.metric(client, "pinedge_worker_restarts_total") < 1:
                await asyncio.sleep(0.1)
        await wait_ready(client, node, workers=2)
        assert victim not in node.worker_pids()
        assert len(node.worker_pids()) == 2
        assert (await send(client, node.url + "/alive")).hit
    assert scripted.hits["/alive"] == 1


@pytest.mark.slow
async def test_sighup_reloads_the_config_file_into_new_workers(
    scripted: Scripted, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    scripted.reply("/named", b"x", headers={"Cache-Control": "max-age=600"})
    config = tmp_path / "edge.toml"
    config.write_text('grace = "1s"\n')
    async with running_node(client, scripted.url, config=str(config)) as node:
        assert "pinedge-test" in (await send(client, node.url + "/named")).headers["Via"]
        config.write_text('grace = "1s"\nheuristic_fraction = 2.0\n')
        node.process.send_signal(signal.SIGHUP)
        await asyncio.sleep(1.0)
        assert node.process.returncode is None  # a refused config keeps the node running
        config.write_text('grace = "30s"\ntargeted_fields = ["Surrogate-Control"]\n')
        scripted.reply(
            "/targeted",
            b"y",
            headers={"Cache-Control": "no-store", "CDN-Cache-Control": "max-age=60"},
        )
        node.process.send_signal(signal.SIGHUP)
        async with asyncio.timeout(15):
            while True:
                await asyncio.sleep(0.3)
                await wait_ready(client, node)
                reply = await send(client, node.url + "/targeted")
                if "CDN-Cache-Control" in reply.headers:
                    break
        # CDN-Cache-Control is no longer a targeted field for this node: it is
        # forwarded, and Cache-Control's no-store applies.
        assert not (await send(client, node.url + "/targeted")).hit


@pytest.mark.slow
async def test_a_worker_reporting_thousands_of_distinct_hits_at_once_keeps_running(
    scripted: Scripted, client: aiohttp.ClientSession
) -> None:
    """Regression: a second's worth of hit reports once overflowed the owner link."""
    for index in range(2500):
        scripted.reply(f"/many/{index}", b"m", headers={"Cache-Control": "max-age=600"})
    async with running_node(client, scripted.url) as node:
        for _round in range(2):
            replies = await asyncio.gather(
                *(send(client, f"{node.url}/many/{index}") for index in range(2500))
            )
            assert {r.status for r in replies} == {200}
        await asyncio.sleep(1.5)
        assert await node.metric(client, "pinedge_worker_restarts_total") == 0
        assert (await send(client, node.url + "/many/7")).hit


@pytest.mark.slow
async def test_two_workers_make_a_requested_image_variant_once(
    scripted: Scripted, client: aiohttp.ClientSession
) -> None:
    serve_photo(scripted, "retina.jpg")
    async with running_node(client, scripted.url, workers=2) as node:
        await send(client, node.url + "/img/retina.jpg", {"Accept": "image/jpeg"})
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as many:
            replies = await asyncio.gather(
                *(
                    send(many, node.url + "/img/retina.jpg?w=474", {"Accept": "image/webp"})
                    for _ in range(40)
                )
            )
        assert len({r.body for r in replies}) == 1
        assert sum(1 for r in replies if r.cache.get("detail") == "transformed") == 1
    assert scripted.hits["/img/retina.jpg"] == 1


@pytest.mark.slow
async def test_two_workers_decode_a_source_once_for_all_its_widths_and_formats(
    scripted: Scripted, client: aiohttp.ClientSession
) -> None:
    serve_photo(scripted, "retina.jpg")
    wanted = [(w, fm) for w in (236, 474, 736) for fm in ("webp", "jpeg", "avif")]
    async with running_node(client, scripted.url, workers=2) as node:
        await send(client, node.url + "/img/retina.jpg")
        connector = aiohttp.TCPConnector(force_close=True)  # a new connection each: both workers
        async with aiohttp.ClientSession(connector=connector) as fresh:
            for width, fmt in wanted:
                reply = await send(fresh, f"{node.url}/img/retina.jpg?w={width}&fm={fmt}")
                assert reply.status == 200 and reply.cache.get("detail") == "transformed"
                assert reply.headers["Content-Type"] == f"image/{fmt}"
        # Workers report their metrics to the supervisor every second.
        async with asyncio.timeout(10):
            while True:
                async with client.get(node.admin + "/metrics") as response:
                    text = await response.text()
                counts = re.findall(
                    r'^pinedge_image_decodes_total{source="(\w+)"} (\S+)$', text, re.M
                )
                decodes = {source: float(count) for source, count in counts}
                if sum(decodes.values()) >= len(wanted):
                    break
                await asyncio.sleep(0.2)
    assert decodes.get("source", 0) == 1
    assert decodes.get("kept", 0) + decodes.get("shared", 0) == len(wanted) - 1
    made = re.search(r'^pinedge_variants_total{kind="image",result="made"} (\S+)$', text, re.M)
    assert made and float(made.group(1)) == len(wanted)


def _rewrite_in_first_format(path: Path) -> None:
    """Write a stored file again as the first releases did: magic PNE1, JSON meta
    holding the body's length, checksum and offset."""
    stored = objectfile.read(path)
    assert stored is not None
    meta, body = stored
    fields = {
        "key": meta.key,
        "vary_names": list(meta.vary_names),
        "vary_values": list(meta.vary_values),
        "status": meta.status,
        "reason": meta.reason,
        "headers": [list(pair) for pair in meta.headers],
        "request_time": meta.request_time,
        "response_time": meta.response_time,
        "body_length": len(body),
        "body_crc": zlib.crc32(body),
        "body_offset": 0,
    }
    for _ in range(3):  # the offset is part of the meta
        text = json.dumps(fields, separators=(",", ":")).encode()
        fields["body_offset"] = objectfile.HEADER.size + len(text)
    text = json.dumps(fields, separators=(",", ":")).encode()
    assert fields["body_offset"] == objectfile.HEADER.size + len(text)
    header = objectfile.HEADER.pack(
        b"PNE1", len(text), len(body), zlib.crc32(text), zlib.crc32(body)
    )
    path.write_bytes(header + text + body)


@pytest.mark.slow
async def test_a_cache_dir_written_by_the_first_file_format_is_still_served_after_an_upgrade(
    scripted: Scripted, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    # Large enough for a file of its own: segments came with the second format.
    old = b"stored by an older release" * 1000
    scripted.reply("/old", old, headers={"Cache-Control": "max-age=600"})
    store = tmp_path / "store"
    flags = ("--cache-dir", str(store), "--cache-disk", "64MiB")
    async with running_node(client, scripted.url, *flags) as node:
        assert (await send(client, node.url + "/old")).cache.get("stored")
    (path,) = (store / "objects").glob("*/*")
    _rewrite_in_first_format(path)
    assert path.read_bytes().startswith(b"PNE1")
    async with running_node(client, scripted.url, *flags) as node:
        again = await send(client, node.url + "/old")
        assert again.hit and again.body == old
    assert scripted.hits["/old"] == 1


def _pid_of_connection(pids: list[int], local_port: int, remote_port: int) -> int | None:
    """Which of `pids` holds the TCP connection from `local_port` to `remote_port`."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if (
            int(local.split(":")[1], 16) == local_port
            and int(remote.split(":")[1], 16) == remote_port
        ):
            inode = fields[9]
    if inode is None:
        return None
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
    return None


@pytest.mark.slow
async def test_when_the_worker_fetching_a_key_is_killed_the_other_worker_fetches_it_itself(
    scripted: Scripted, client: aiohttp.ClientSession
) -> None:
    body = os.urandom(20_000)
    peers: list[int] = []

    async def slow(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]  # a TCP request
        await asyncio.sleep(1.5)
        return web.Response(body=body, headers={"Cache-Control": "max-age=600"})

    scripted.handle("/slow", slow)
    origin_port = int(scripted.url.rsplit(":", 1)[1])
    async with running_node(client, scripted.url, workers=2) as node:
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as many:
            first = asyncio.create_task(send(many, node.url + "/slow"))
            async with asyncio.timeout(5):
                while not peers:
                    await asyncio.sleep(0.01)
            leader = _pid_of_connection(node.worker_pids(), peers[0], origin_port)
            assert leader is not None
            others = [asyncio.create_task(send(many, node.url + "/slow")) for _ in range(12)]
            await asyncio.sleep(0.3)  # they wait: in the leader's worker, or the other
            os.kill(leader, signal.SIGKILL)
            replies = await asyncio.gather(first, *others, return_exceptions=True)
    served = [reply for reply in replies if not isinstance(reply, BaseException)]
    assert served, "no request reached the surviving worker"
    assert all(reply.status == 200 and reply.body == body for reply in served)
    assert not any("collapse-timeout" in reply.headers["Cache-Status"] for reply in served)
    assert scripted.hits["/slow"] == 2


@pytest.mark.slow
async def test_the_memory_small_objects_really_take_stays_within_the_budget(
    scripted: Scripted, client: aiohttp.ClientSession
) -> None:
    """Small responses are packed into segments, not a file each (which took whole
    pages: a budget that counted only their bytes let 1 KiB responses take four
    times the budget). What evictions leave dead in the segments is compacted
    away, so that the shared memory the store takes is at most its budget over
    (1 - DEAD_SHARE), plus the segment each writer (the worker, the owner) fills."""
    budget = 2 * SEGMENT_BYTES

    async def small(request: web.Request) -> web.Response:
        return web.Response(body=os.urandom(1024), headers={"Cache-Control": "max-age=600"})

    scripted.handle("/s", small)
    async with running_node(client, scripted.url, "--cache-mem", str(budget)) as node:
        for n in range(6000):  # about 7 MB of records, 3.5 times the budget
            await send(client, f"{node.url}/s?n={n}")
        (store,) = Path("/dev/shm").glob(f"pinedge-store-{node.process.pid}-*")
        bound = budget / (1 - DEAD_SHARE) + 2 * SEGMENT_BYTES
        async with asyncio.timeout(20):
            while (taken := _taken(store)) > bound:
                await asyncio.sleep(0.2)
        assert not list((store / "objects").glob("*/*"))
        assert await node.metric(client, "pinedge_store_bytes") <= budget < taken
        assert await node.metric(client, "pinedge_store_objects") > 1000  # what fits is kept
        assert await node.metric(client, "pinedge_store_segments_removed_total") > 0
        assert (await send(client, f"{node.url}/s?n=5999")).hit


def _taken(store: Path) -> int:
    """Bytes of memory the store's files take, in whole pages."""
    paths = [*(store / "objects").glob("*/*"), *(store / "segments").glob("*")]
    return sum(path.stat().st_blocks * 512 for path in paths)


def slow_restart(store: Path, tmp_path: Path) -> Path:
    """20,000 files older than what `store` holds (the loader reads them first), and
    a config that makes the node ready before it has indexed any (store_load_wait)."""
    older = time.time() - 3600
    for index in range(20_000):
        meta = objectfile.write(store, fields(f"http://elsewhere/{index}", "filler"), b"filler")
        path = objectfile.object_path(store, meta.variant_id)
        os.utime(path, (older, older))
    config = tmp_path / "edge.toml"
    config.write_text('store_load_wait = "0s"\n')
    return config
