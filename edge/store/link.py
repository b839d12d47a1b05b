"""How workers talk to the store's owner: msgpack messages over a Unix socket, or,
in a one-process node, plain method calls. Both sides offer the same methods.

A message is an array `[op, id, *arguments]`; `id` is 0 when no answer is wanted,
and an answer is `[id, ok, result]`. The owner asks one thing of workers, before a
purge counts what it covers: `[0, true, token]`, send what you hold, answered by
HELD with the token after it. What either side sends within one turn of its
event loop goes out in one write; a node's only worker holds what it tells (asks
no answer to) up to TELL_HOLD, so that each wake-up of the owner, on the same
cores, takes the admissions of several turns. A miss asks nothing: a new key's
presence slot (generations.py) says it is not stored, workers collapse fetches
among themselves (fills.py), and the admission is told, not asked."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from enum import IntEnum
from pathlib import Path
from typing import Any, Protocol

import msgpack

from pinedge.edge.store.objectfile import Admission, Stored
from pinedge.edge.store.owner import StoreOwner

log = logging.getLogger("pinedge.store")

CALL_TIMEOUT = 10.0  # seconds an owner call may take
HELD_TIMEOUT = 1.0  # seconds the owner waits for what workers hold before a purge
MESSAGE_LIMIT = 1 << 26  # one message: an admission of a response with large headers
# Seconds a lone worker's one-way messages may wait for more: in a run of 5% misses
# among hits, each wake-up of the owner (on the same core as the worker) cost it as
# much again as the indexing it woke for, and cooled the worker's caches. At 5 ms the
# owner took about ten admissions a wake-up; at 50 ms the node answered 4% more
# requests (its owner used 40% less CPU); at 250 ms no more than at 50.
TELL_HOLD = 0.05
# Bytes of responses a lone worker's held admissions may stand for before they go:
# what the owner has not been told of, it cannot count against the budget.
TELL_HOLD_BYTES = 4 << 20


class Op(IntEnum):
    LOOKUP = 1
    ADMIT = 4
    REMOVE_KEY = 5
    HITS = 6
    DROP = 7
    REPORT = 8
    HELD = 9


ADMIT = int(Op.ADMIT)  # the owner's side reads admissions (most messages) before the rest
ADMISSION_FIELDS = len(Admission._fields)


class OwnerLink(Protocol):
    async def lookup(self, key: str) -> list[Stored]: ...
    def admit(self, admission: Admission, soon: bool = False) -> None: ...
    def flush(self) -> None: ...
    async def remove_key(self, key: str) -> int: ...
    def hits(self, variant_ids: list[str]) -> None: ...
    def drop(self, vid: str, place: int = -1) -> None: ...
    def report(self, snapshot: dict[str, Any]) -> None: ...
    async def close(self) -> None: ...


def _packer() -> msgpack.Packer:
    return msgpack.Packer(unicode_errors="surrogateescape")


def _unpacker() -> msgpack.Unpacker:
    return msgpack.Unpacker(
        unicode_errors="surrogateescape",
        max_buffer_size=MESSAGE_LIMIT,
        strict_map_key=False,
    )


class LocalLink:
    """The owner in this same process."""

    def __init__(self, owner: StoreOwner) -> None:
        self.owner = owner

    async def lookup(self, key: str) -> list[Stored]:
        return self.owner.lookup(key)

    def admit(self, admission: Admission, soon: bool = False) -> None:
        self.owner.admit(admission)

    def flush(self) -> None:
        pass

    async def remove_key(self, key: str) -> int:
        return self.owner.remove_key(key)

    def hits(self, variant_ids: list[str]) -> None:
        self.owner.hits(variant_ids)

    def drop(self, vid: str, place: int = -1) -> None:
        self.owner.drop(vid, place)

    def report(self, snapshot: dict[str, Any]) -> None:
        pass

    async def close(self) -> None:
        pass


class _Batching(asyncio.Protocol):
    """Messages packed as they are sent and written together once per loop turn, or
    `hold` seconds after the first of them when none wants an answer."""

    def __init__(self, hold: float = 0.0) -> None:
        self.transport: asyncio.Transport | None = None
        self.packer = _packer()
        self.unpacker = _unpacker()
        self.outgoing: list[bytes] = []
        self.hold = hold
        self.flushing: asyncio.Handle | None = None  # the write to come
        self.held = False  # it is `hold` away, not at the end of this turn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a Unix stream socket's

    def _send(self, message: tuple[Any, ...] | list[Any], soon: bool = False) -> None:
        """Queue `message`; `soon`: it goes out at the end of this loop turn even
        where messages are held (something waits for its answer, or will ask
        after it), with what was held before it."""
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError("the store link is closed")
        self.outgoing.append(self.packer.pack(message))
        if self.flushing is not None and not (soon and self.held):
            return  # a write is to come, soon enough for this message
        if self.flushing is not None:
            self.flushing.cancel()
        loop = asyncio.get_running_loop()
        self.held = bool(self.hold) and not soon
        if self.held:
            self.flushing = loop.call_later(self.hold, self._flush)
        else:
            self.flushing = loop.call_soon(self._flush)

    def _flush(self) -> None:
        if self.flushing is not None:
            self.flushing.cancel()
            self.flushing = None
        if not self.outgoing:
            return
        outgoing, self.outgoing = self.outgoing, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(outgoing))
        else:
            # Admissions lost here leave their files unindexed until the node restarts.
            log.warning("the store link closed with %d message(s) unsent", len(outgoing))


class _OwnerSide(_Batching):
    """One worker's connection, on the owner's side."""

    def __init__(self, server: OwnerServer) -> None:
        super().__init__()
        self.server = server
        self.asked: dict[int, asyncio.Future[None]] = {}  # by token: see ask_held()

    def data_received(self, data: bytes) -> None:
        self.unpacker.feed(data)
        server = self.server
        admit = server.owner.admit
        try:
            for message in self.unpacker:
                # An admission, told (no answer wanted), as answer() would take it,
                # without its dispatch: a held batch of them is most of what it reads.
                fields = message[2] if len(message) == 3 and message[0] == ADMIT else None
                if fields is not None and not message[1] and len(fields) == ADMISSION_FIELDS:
                    try:
                        admit(tuple.__new__(Admission, fields))
                    except Exception:
                        log.exception("store owner: operation %r failed", Op.ADMIT)
                    continue
                server.answer(self, message)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            # A broken message stream: nothing after it can be read.
            log.warning("a worker's store link broke: %r", exc)
            if self.transport is not None:
                self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.server.sides.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.snapshots.pop(id(self), None)
        self.server.sides.discard(self)
        for future in self.asked.values():
            if not future.done():
                future.set_result(None)  # nothing more will come from this worker
        self.asked.clear()

    def ask_held(self, token: int) -> asyncio.Future[None]:
        """Ask the worker for what it holds; done once it has come."""
        future = asyncio.get_running_loop().create_future()
        self.asked[token] = future
        try:
            self._send((0, True, token))
        except ConnectionError:
            self.asked.pop(token)
            future.set_result(None)
        return future

    def held_sent(self, token: int) -> None:
        future = self.asked.pop(token, None)
        if future is not None and not future.done():
            future.set_result(None)

    def reply(self, ident: int, ok: bool, result: Any) -> None:
        with contextlib.suppress(ConnectionError):
            self._send((ident, ok, result))


class OwnerServer:
    """The owner's side of the socket, in the supervisor. Remembers each worker's
    latest metrics snapshot for the admin listener to add up."""

    def __init__(self, owner: StoreOwner, path: Path) -> None:
        self.owner = owner
        self.path = path
        self.server: asyncio.AbstractServer | None = None
        self.snapshots: dict[int, dict[str, Any]] = {}
        self.sides: set[_OwnerSide] = set()
        self.tokens = itertools.count(1)

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)
        loop = asyncio.get_running_loop()
        self.server = await loop.create_unix_server(lambda: _OwnerSide(self), path=str(self.path))
        self.path.chmod(0o600)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def gather_held(self, timeout: float = HELD_TIMEOUT) -> None:
        """Until every worker has sent what it holds (a node's only worker holds its
        admissions up to TELL_HOLD), so that a purge counts what was stored just
        before it; no longer than `timeout`."""
        if not self.sides:
            return
        token = next(self.tokens)
        waiting = [side.ask_held(token) for side in list(self.sides)]
        _, late = await asyncio.wait(waiting, timeout=timeout)
        if late:
            log.warning(
                "%d worker(s) did not send what they hold within %.1f s", len(late), timeout
            )
            for side in list(self.sides):
                side.asked.pop(token, None)

    def answer(self, side: _OwnerSide, message: list[Any]) -> None:
        """Do what `message` asks; answer it if it wants an answer. A call that fails
        is answered with the error rather than left waiting."""
        op, ident, *arguments = message
        owner = self.owner
        try:
            result: Any = None
            if op == Op.ADMIT:
                owner.admit(Admission(*arguments[0]))
            elif op == Op.LOOKUP:
                result = owner.lookup(arguments[0])  # Stored tuples, packed as arrays
            elif op == Op.HITS:
                owner.hits(arguments[0])
            elif op == Op.REMOVE_KEY:
                result = owner.remove_key(arguments[0])
            elif op == Op.DROP:
                owner.drop(*arguments)
            elif op == Op.REPORT:
                self.snapshots[id(side)] = arguments[0]
            elif op == Op.HELD:
                side.held_sent(arguments[0])
            else:
                raise ValueError(f"unknown store operation {op!r}")
        except Exception as exc:
            log.exception("store owner: operation %r failed", op)
            if ident:
                side.reply(ident, False, repr(exc))
            return
        if ident:
            side.reply(ident, True, result)


class RemoteLink(_Batching):
    """A worker's side of the socket."""

    def __init__(self, path: Path, eager: bool = True) -> None:
        """`eager`: flush() sends at once, for other workers to find what this one
        stored; a node's only worker holds what it tells the owner up to TELL_HOLD
        instead, for one write to carry what many requests told it."""
        super().__init__(hold=0.0 if eager else TELL_HOLD)
        self.path = path
        self.eager = eager
        self.counter = itertools.count(1)
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.held_bytes = 0  # of the responses whose admissions are held
        self.on_lost: Callable[[], None] | None = None

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_unix_connection(lambda: self, str(self.path))

    def data_received(self, data: bytes) -> None:
        self.unpacker.feed(data)
        for ident, ok, result in self.unpacker:
            if not ident:  # the owner asks for what is held (ask_held)
                self._tell(Op.HELD, 0, result, soon=True)
                continue
            future = self.pending.pop(ident, None)
            if future is None or future.done():
                continue
            if ok:
                future.set_result(result)
            else:
                future.set_exception(OSError(f"store owner: {result}"))

    def connection_lost(self, exc: Exception | None) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_exception(ConnectionError("the store owner went away"))
        self.pending.clear()
        if self.on_lost is not None:
            self.on_lost()

    def _tell(self, *message: Any, soon: bool = False) -> None:
        """Send without waiting for an answer; once the owner has gone away there is
        no one to tell."""
        with contextlib.suppress(ConnectionError):
            self._send(message, soon)

    async def _call(self, op: Op, *arguments: Any) -> Any:
        ident = next(self.counter)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[ident] = future
        try:
            self._send((op, ident, *arguments), soon=True)
        except ConnectionError:
            del self.pending[ident]
            raise
        try:
            return await asyncio.wait_for(future, CALL_TIMEOUT)
        except TimeoutError:
            self.pending.pop(ident, None)
            raise OSError(f"store owner: no answer to {op.name.lower()}") from None

    async def lookup(self, key: str) -> list[Stored]:
        return [Stored(*item) for item in await self._call(Op.LOOKUP, key)]

    def admit(self, admission: Admission, soon: bool = False) -> None:
        """Tell the owner of a stored file; `soon`: at the end of this loop turn even
        on a link that holds what it tells (nothing of it is kept in the worker), or
        once the held admissions stand for TELL_HOLD_BYTES."""
        self.held_bytes += admission.allocated
        self._tell(Op.ADMIT, 0, admission, soon=soon or self.held_bytes > TELL_HOLD_BYTES)

    def _flush(self) -> None:
        self.held_bytes = 0
        super()._flush()

    def flush(self) -> None:
        """Send now what waits for the end of this loop turn."""
        if self.eager:
            self._flush()

    async def remove_key(self, key: str) -> int:
        return int(await self._call(Op.REMOVE_KEY, key))

    def hits(self, variant_ids: list[str]) -> None:
        self._tell(Op.HITS, 0, variant_ids)

    def drop(self, vid: str, place: int = -1) -> None:
        self._tell(Op.DROP, 0, vid, place)

    def report(self, snapshot: dict[str, Any]) -> None:
        self._tell(Op.REPORT, 0, snapshot)

    async def close(self) -> None:
        if self.outgoing:
            self._flush()
        if self.transport is not None:
            self.transport.close()
