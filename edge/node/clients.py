"""What a node knows of each client, shared by its workers in one segment of shared
memory: the connections each has open, and its request budgets (token buckets).

A worker counts its own connections in a row of its own (one writer per row, so
the counts are exact); a client's count is the sum of the rows. Buckets are
shared slots that any worker updates without a lock: two workers updating one
bucket at the same instant can lose a charge, which errs on the client's side and
heals as the bucket refills. Clients hash into slots; two clients in one slot
share its counts (with the default sizes, rare below tens of thousands of
clients at once).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import secrets
import time
from multiprocessing import shared_memory

from pinedge.edge.store.leftovers import remove_leftover_segments

SEGMENT_PREFIX = "pinedge-clients-"
ROWS = 130  # connection rows: up to 64 workers, twice over while a reload replaces them
CONN_SLOTS = 1 << 16
ROW_INTS = CONN_SLOTS + 1  # per row: a count per slot, then the row's total
BUCKET_SLOTS = 1 << 16
BUCKET_FIELDS = 8  # key, tokens and time of requests and misses, flags, refused
PROBES = 4
IDLE_SLOT = 60.0  # a bucket unused this long may be taken by another client

KEY, REQ_TOKENS, REQ_TIME, MISS_TOKENS, MISS_TIME, FLAGS, REFUSED = range(7)
REQUESTS, MISSES = 0, 1  # which bucket
LIMITED = (1, 2)  # flag bits: requests limited, misses limited

_ROWS_BYTES = ROWS * ROW_INTS * 4
_HEADER_BYTES = 8  # the highest row in use, as an int32 (and padding)
_BUCKETS_AT = _HEADER_BYTES + _ROWS_BYTES
SIZE = _BUCKETS_AT + BUCKET_SLOTS * BUCKET_FIELDS * 8


def client_key(address: str, ipv4_prefix: int, ipv6_prefix: int) -> str:
    """The network a client address counts under: itself, or its /N."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    prefix = ipv4_prefix if ip.version == 4 else ipv6_prefix
    if prefix >= ip.max_prefixlen:
        return str(ip)
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def stable_hash(text: str) -> int:
    """A 63-bit hash that every worker computes alike (Python's hash() is salted per
    process); never 0, which marks a free slot."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "little") >> 1) or 1


class ClientTable:
    """The shared segment; `ClientTable()` creates it (the node's supervisor, or a
    one-process node), `ClientTable(name, row)` attaches a worker owning `row`."""

    def __init__(self, name: str | None = None, row: int = 0) -> None:
        if name is None:
            remove_leftover_segments(SEGMENT_PREFIX)
            name = f"{SEGMENT_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
            self.memory = shared_memory.SharedMemory(name=name, create=True, size=SIZE)
            self.owned = True
        else:
            self.memory = shared_memory.SharedMemory(name=name)
            self.owned = False  # the supervisor's resource tracker unlinks it
        buffer = self.memory.buf
        assert buffer is not None  # None only once closed
        self.header = buffer[:_HEADER_BYTES].cast("i")
        self.rows = buffer[_HEADER_BYTES:_BUCKETS_AT].cast("i")
        self.floats = buffer[_BUCKETS_AT:SIZE].cast("d")
        self.ints = buffer[_BUCKETS_AT:SIZE].cast("q")
        self.row = row
        self.row_at = row * ROW_INTS

    @property
    def name(self) -> str:
        return self.memory.name

    def close(self) -> None:
        for view in (self.header, self.rows, self.floats, self.ints):
            view.release()
        self.memory.close()
        if self.owned:
            self.memory.unlink()

    # ── connections: a row per worker ────────────────────────────────────────

    def claim_row(self) -> None:
        """Start this worker's row from zero (a worker before it in this row is
        gone, and its connections with it) and count it among the rows in use."""
        start = self.row_at
        self.rows[start : start + ROW_INTS] = memoryview(bytes(ROW_INTS * 4)).cast("i")
        if self.header[0] < self.row + 1:
            self.header[0] = self.row + 1

    def connection_slot(self, key: str) -> int:
        return stable_hash(key) % CONN_SLOTS

    def connections(self, slot: int) -> int:
        """Connections open from the clients in `slot`, on every worker."""
        rows = self.rows
        return sum(rows[row * ROW_INTS + slot] for row in range(self.header[0]))

    def node_connections(self) -> int:
        rows = self.rows
        return sum(rows[row * ROW_INTS + CONN_SLOTS] for row in range(self.header[0]))

    def opened(self, slot: int) -> None:
        rows, at = self.rows, self.row_at
        rows[at + slot] += 1
        rows[at + CONN_SLOTS] += 1

    def closed(self, slot: int) -> None:
        rows, at = self.rows, self.row_at
        if rows[at + slot] > 0:
            rows[at + slot] -= 1
        if rows[at + CONN_SLOTS] > 0:
            rows[at + CONN_SLOTS] -= 1

    # ── request budgets: token buckets ───────────────────────────────────────

    def bucket(self, key: str, now: float | None = None) -> int:
        """The bucket slot of `key`: its own, a free one, or one idle for IDLE_SLOT
        (the new client starts with full buckets); if every probe is busy, the
        first is shared."""
        wanted = stable_hash(key)
        ints, floats = self.ints, self.floats
        now = time.monotonic() if now is None else now
        first = (wanted % BUCKET_SLOTS) * BUCKET_FIELDS
        for probe in range(PROBES):
            base = ((wanted + probe) % BUCKET_SLOTS) * BUCKET_FIELDS
            held = ints[base + KEY]
            if held == wanted:
                return base
            last = max(floats[base + REQ_TIME], floats[base + MISS_TIME])
            if held == 0 or now - last > IDLE_SLOT:
                ints[base + KEY] = wanted
                floats[base + REQ_TOKENS] = floats[base + MISS_TOKENS] = -1.0  # full
                floats[base + REQ_TIME] = floats[base + MISS_TIME] = now
                ints[base + FLAGS] = ints[base + REFUSED] = 0
                return base
        return first

    def take(self, base: int, which: int, rate: float, burst: float, now: float) -> float:
        """Charge one request to a bucket: 0.0 if it had a token, else the seconds
        until it will have one."""
        floats = self.floats
        tokens_at = base + (REQ_TOKENS if which == REQUESTS else MISS_TOKENS)
        left = floats[tokens_at]  # negative: a new client, full
        tokens = burst if left < 0 else min(burst, left + (now - floats[tokens_at + 1]) * rate)
        floats[tokens_at + 1] = now
        if tokens >= 1.0:
            floats[tokens_at] = tokens - 1.0
            return 0.0
        floats[tokens_at] = tokens
        return (1.0 - tokens) / rate

    def flagged(self, base: int, which: int) -> bool:
        return bool(self.ints[base + FLAGS] & LIMITED[which])

    def flag(self, base: int, which: int, on: bool) -> None:
        ints = self.ints
        if on:
            ints[base + FLAGS] |= LIMITED[which]
        else:
            ints[base + FLAGS] &= ~LIMITED[which]

    def refused(self, base: int, add: int = 0) -> int:
        """Requests of this client refused since it was last found unlimited."""
        ints = self.ints
        if add:
            ints[base + REFUSED] += add
        return int(ints[base + REFUSED])

    def reset_refused(self, base: int) -> None:
        self.ints[base + REFUSED] = 0

    def limited_clients(self) -> int:
        """Clients over one of their budgets now (a scan of the table)."""
        ints = self.ints
        return sum(1 for base in range(FLAGS, len(ints), BUCKET_FIELDS) if ints[base])
