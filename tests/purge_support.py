"""What purge tests share: the admin token, purge requests, tagged responses, stored files."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
from edge_support import Scripted, send
from support import Node

from pinedge.edge.store import objectfile
from pinedge.edge.store.segments import scan

TOKEN = "s3cret-purge-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def purge(
    client: aiohttp.ClientSession, admin: str, body: object, headers: dict[str, str] | None = None
) -> tuple[int, dict]:
    async with client.post(
        admin + "/purge", json=body, headers=AUTH if headers is None else headers
    ) as response:
        return response.status, await response.json()


def tagged(scripted: Scripted, path: str, tags: str, extra: dict[str, str] | None = None) -> None:
    headers = {"Cache-Control": "max-age=600", "Surrogate-Key": tags, "ETag": f'"{path}"'}
    scripted.reply(path, f"body of {path}", headers={**headers, **(extra or {})})


async def fill(client: aiohttp.ClientSession, edge: str, *paths: str) -> None:
    for path in paths:
        await send(client, edge + path)
        assert (await send(client, edge + path)).hit, path


def stored_files(cache_dir: Path) -> int:
    """Responses a restart on `cache_dir` would find: files of their own, and records
    in segments not marked dead."""
    return len(stored_vids(cache_dir))


def stored_vids(cache_dir: Path) -> list[str]:
    """The variant ids of the responses `stored_files` counts."""
    found = [path.name for path in (cache_dir / "objects").glob("*/*")]
    for path in (cache_dir / "segments").glob("*"):
        data = path.read_bytes()
        for offset, _, live in scan(data):
            meta = objectfile.parse_meta(data, offset) if live else None
            if meta is not None:
                found.append(meta.variant_id)
    return found


async def fill_node(client: aiohttp.ClientSession, node: Node, *paths: str) -> None:
    """Store every path, then check each is a hit. A subprocess node may still be
    writing the first response when the second request comes (that one then shares
    the fetch), so the hits are checked once the store holds them all."""
    for path in paths:
        await send(client, node.url + path)
    async with asyncio.timeout(20):
        while await node.metric(client, "pinedge_store_objects") < len(paths):
            await asyncio.sleep(0.05)
    for path in paths:
        assert (await send(client, node.url + path)).hit, path


def fields(key: str, tag: str) -> dict[str, object]:
    now = time.time()
    return {
        "key": key,
        "vary_names": (),
        "vary_values": (),
        "status": 200,
        "reason": "OK",
        "headers": (("Cache-Control", "max-age=600"), ("Surrogate-Key", tag)),
        "request_time": now,
        "response_time": now,
    }
