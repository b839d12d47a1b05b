"""How workers talk to the store's owner: JSON lines over a Unix socket, or, in a
one-process node, plain method calls. Both sides offer the same async methods."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from pinedge.edge.store.fills import VERDICTS, FillVerdict
from pinedge.edge.store.objectfile import Meta
from pinedge.edge.store.owner import StoreOwner

log = logging.getLogger("pinedge.store")

CALL_TIMEOUT = 10.0  # seconds an owner call may take beyond its own timeout
MESSAGE_LIMIT = 1 << 26  # one JSON line: a lookup of a key with many large-header variants


class OwnerLink(Protocol):
    async def lookup(self, key: str) -> list[Meta]: ...
    async def acquire(self, key: str, timeout: float) -> FillVerdict: ...
    def release(self, key: str, outcome: FillVerdict) -> None: ...
    async def admit(self, meta: Meta) -> list[Meta]: ...
    async def remove_key(self, key: str) -> int: ...
    def hits(self, variant_ids: list[str]) -> None: ...
    def drop(self, vid: str) -> None: ...
    def report(self, snapshot: dict[str, Any]) -> None: ...
    async def close(self) -> None: ...


class LocalLink:
    """The owner in this same process."""

    def __init__(self, owner: StoreOwner) -> None:
        self.owner = owner

    async def lookup(self, key: str) -> list[Meta]:
        return self.owner.lookup(key)

    async def acquire(self, key: str, timeout: float) -> FillVerdict:
        return await self.owner.acquire(key, self, timeout)

    def release(self, key: str, outcome: FillVerdict) -> None:
        self.owner.release(key, outcome, self)

    async def admit(self, meta: Meta) -> list[Meta]:
        self.owner.admit(meta)
        return self.owner.lookup(meta.key)

    async def remove_key(self, key: str) -> int:
        return self.owner.remove_key(key)

    def hits(self, variant_ids: list[str]) -> None:
        self.owner.hits(variant_ids)

    def drop(self, vid: str) -> None:
        self.owner.drop(vid)

    def report(self, snapshot: dict[str, Any]) -> None:
        pass

    async def close(self) -> None:
        pass


class OwnerServer:
    """The owner's side of the socket, in the supervisor. Remembers each worker's
    latest metrics snapshot for the admin listener to add up."""

    def __init__(self, owner: StoreOwner, path: Path) -> None:
        self.owner = owner
        self.path = path
        self.server: asyncio.AbstractServer | None = None
        self.snapshots: dict[int, dict[str, Any]] = {}

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)
        self.server = await asyncio.start_unix_server(
            self._serve, path=str(self.path), limit=MESSAGE_LIMIT
        )
        self.path.chmod(0o600)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        who = object()
        tasks: set[asyncio.Task[None]] = set()
        try:
            while line := await reader.readline():
                message = json.loads(line)
                task = asyncio.create_task(self._answer_safely(message, who, writer))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except (ConnectionError, ValueError) as exc:
            log.warning("a worker's store link broke: %r", exc)
        finally:
            self.owner.release_all(who)
            self.snapshots.pop(id(who), None)
            for task in tasks:
                task.cancel()
            writer.close()

    async def _answer_safely(
        self, message: dict[str, Any], who: object, writer: asyncio.StreamWriter
    ) -> None:
        """Answer, or tell the worker the call failed rather than leave it waiting."""
        try:
            await self._answer(message, who, writer)
        except Exception as exc:
            log.exception("store owner: %s failed", message.get("op"))
            if message.get("id") is not None:
                data = json.dumps({"id": message["id"], "error": repr(exc)}) + "\n"
                with contextlib.suppress(ConnectionError):
                    writer.write(data.encode())

    async def _answer(
        self, message: dict[str, Any], who: object, writer: asyncio.StreamWriter
    ) -> None:
        op = message.get("op")
        owner = self.owner
        result: Any = None
        if op == "lookup":
            result = [meta.to_json() for meta in owner.lookup(message["key"])]
        elif op == "acquire":
            result = await owner.acquire(message["key"], who, float(message["timeout"]))
        elif op == "release":
            # A FillVerdict's value, passed on as it came: the waiting workers get
            # the same string on the wire.
            owner.release(message["key"], message["outcome"], who)
        elif op == "admit":
            meta = Meta.from_json(message["meta"])
            owner.admit(meta)
            result = [stored.to_json() for stored in owner.lookup(meta.key)]
        elif op == "remove_key":
            result = owner.remove_key(message["key"])
        elif op == "hits":
            owner.hits(message["vids"])
        elif op == "drop":
            owner.drop(message["vid"])
        elif op == "report":
            self.snapshots[id(who)] = message["snapshot"]
        if message.get("id") is not None:
            data = json.dumps({"id": message["id"], "result": result}) + "\n"
            with contextlib.suppress(ConnectionError):
                writer.write(data.encode())


class RemoteLink:
    """A worker's side of the socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.counter = itertools.count(1)
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.writer: asyncio.StreamWriter | None = None
        self.reader_task: asyncio.Task[None] | None = None
        self.on_lost: Callable[[], None] | None = None

    async def connect(self) -> None:
        reader, self.writer = await asyncio.open_unix_connection(
            str(self.path), limit=MESSAGE_LIMIT
        )
        self.reader_task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                message = json.loads(line)
                future = self.pending.pop(message["id"], None)
                if future is None or future.done():
                    continue
                if "error" in message:
                    future.set_exception(OSError(f"store owner: {message['error']}"))
                else:
                    future.set_result(message["result"])
        finally:
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("the store owner went away"))
            if self.on_lost is not None:
                self.on_lost()

    def _send(self, message: dict[str, Any]) -> None:
        """Queue a message; once the owner has gone away there is no one to tell."""
        if self.writer is None or self.writer.is_closing():
            raise ConnectionError("the store owner went away")
        self.writer.write((json.dumps(message) + "\n").encode())

    async def _call(self, op: str, **fields: Any) -> Any:
        ident = next(self.counter)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[ident] = future
        self._send({"id": ident, "op": op, **fields})
        try:
            return await asyncio.wait_for(future, CALL_TIMEOUT + float(fields.get("timeout", 0)))
        except TimeoutError:
            self.pending.pop(ident, None)
            raise OSError(f"store owner: no answer to {op}") from None

    async def lookup(self, key: str) -> list[Meta]:
        return [Meta.from_json(item) for item in await self._call("lookup", key=key)]

    async def acquire(self, key: str, timeout: float) -> FillVerdict:
        return VERDICTS[await self._call("acquire", key=key, timeout=timeout)]

    def release(self, key: str, outcome: FillVerdict) -> None:
        with contextlib.suppress(ConnectionError):
            self._send({"op": "release", "key": key, "outcome": outcome})

    async def admit(self, meta: Meta) -> list[Meta]:
        return [Meta.from_json(item) for item in await self._call("admit", meta=meta.to_json())]

    async def remove_key(self, key: str) -> int:
        return int(await self._call("remove_key", key=key))

    def hits(self, variant_ids: list[str]) -> None:
        with contextlib.suppress(ConnectionError):
            self._send({"op": "hits", "vids": variant_ids})

    def drop(self, vid: str) -> None:
        with contextlib.suppress(ConnectionError):
            self._send({"op": "drop", "vid": vid})

    def report(self, snapshot: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionError):
            self._send({"op": "report", "snapshot": snapshot})

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.reader_task is not None:
            self.reader_task.cancel()
