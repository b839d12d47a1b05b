"""The GeoDNS server of one process: UDP and TCP listeners, health probes of the
POPs, response rate limiting, and reloads.

UDP: each datagram is parsed (wire.py), answered from a prepared answer
(answer.py) and sent back, all in `datagram_received`; nothing on that path
awaits. TCP: two-byte length-prefixed messages, pipelined (each answered in
turn), the connection closed after `tcp_idle` without a query. A process
started as a worker shares its port with the others (SO_REUSEPORT).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from pinedge.core.config import parse_hostport
from pinedge.core.health import RiseFall
from pinedge.geodns import wire
from pinedge.geodns.answer import Answerer
from pinedge.geodns.config import DnsConfig
from pinedge.geodns.steer import Locator, Steering
from pinedge.geodns.zone import Zones

log = logging.getLogger("pinedge.dns")

MAX_TCP_MESSAGE = 65535
RRL_TABLE_MAX = 100_000


@dataclass(slots=True)
class Bucket:
    tokens: float
    seen: float
    limited: int = 0


class RateLimiter:
    """Response rate limiting per client prefix (/24 for IPv4, /56 for IPv6):
    `rate` answers a second with a burst of as many; past that, every `slip`-th
    answer goes out truncated (a real client retries over TCP), the rest are
    dropped, so the server cannot be used to amplify traffic at a victim."""

    def __init__(self, rate: int, slip: int) -> None:
        self.rate = rate
        self.slip = slip
        self.buckets: dict[str, Bucket] = {}
        self.counts: Counter[str] = Counter()

    def verdict(self, client: str, now: float) -> str:
        """ "send", "slip" (send truncated) or "drop"."""
        if not self.rate:
            return "send"
        key = client.rsplit(".", 1)[0] if "." in client else _prefix56(client)
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= RRL_TABLE_MAX:
                self.buckets.clear()
            bucket = self.buckets[key] = Bucket(float(self.rate), now)
        bucket.tokens = min(float(self.rate), bucket.tokens + (now - bucket.seen) * self.rate)
        bucket.seen = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return "send"
        bucket.limited += 1
        action = "slip" if self.slip and bucket.limited % self.slip == 0 else "drop"
        self.counts[action] += 1
        return action


@dataclass
class State:
    """What a reload replaces as a whole."""

    config: DnsConfig
    answerer: Answerer
    locator: Locator


@dataclass
class Health:
    """Each POP's verdict: its probes' (rise and fall, no flapping), unless the
    control plane gave one."""

    probes: dict[str, RiseFall] = field(default_factory=dict)
    forced: dict[str, bool] = field(default_factory=dict)  # verdicts from the control plane

    def up(self, name: str) -> bool:
        forced = self.forced.get(name)
        if forced is not None:
            return forced
        probed = self.probes.get(name)
        return probed is None or probed.up

    def follow(self, config: DnsConfig) -> None:
        """Count every POP of `config` with its rise and fall (kept across reloads)."""
        for pop in config.pops:
            probed = self.probes.setdefault(pop.name, RiseFall(config.rise, config.fall))
            probed.rise, probed.fall = config.rise, config.fall


def build_state(config: DnsConfig, health: Health) -> State:
    zones = Zones(config)
    locator = Locator(config.geoip, config.overrides)
    steering = Steering(config.pops, config.near_km)
    answerer = Answerer(config, zones, steering, locator)
    health.follow(config)
    steering.healthy = {pop.name for pop in config.pops if health.up(pop.name)}
    return State(config, answerer, locator)


class DnsServer:
    def __init__(self, config: DnsConfig, reuse_port: bool = False) -> None:
        self.health = Health()
        self.state = build_state(config, self.health)
        self.reuse_port = reuse_port
        self.limiter = RateLimiter(config.rrl_rate, config.rrl_slip)
        self.dropped: Counter[str] = Counter()
        self.tcp_open = 0
        self.udp: UdpReader | None = None
        self.tcp: asyncio.Server | None = None
        self.port = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.session: aiohttp.ClientSession | None = None

    # ── lifetime ─────────────────────────────────────────────────────────────

    async def start(self) -> None:
        config = self.state.config
        host, port = parse_hostport(config.listen)
        for attempt in range(20):
            udp_socket = self.udp_socket(host, port)
            self.port = udp_socket.getsockname()[1]
            try:
                self.tcp = await asyncio.start_server(
                    self.serve_tcp,
                    host,
                    self.port,
                    reuse_port=self.reuse_port or None,
                    backlog=1024,
                )
                break
            except OSError:
                udp_socket.close()
                if port or attempt == 19:
                    raise  # a port given (or every try taken): say so
                # port 0: the UDP port the kernel chose is taken for TCP; another
        self.udp = UdpReader(self, udp_socket)
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=config.probe_timeout)
        )
        task = asyncio.create_task(self.probe_forever())
        self.tasks.add(task)
        log.info(
            "dns listening on %s:%d (udp, tcp), %d zone(s)", host, self.port, len(config.zones)
        )

    def udp_socket(self, host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        udp_socket = socket.socket(family, socket.SOCK_DGRAM)
        if self.reuse_port:
            udp_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        udp_socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        udp_socket.bind((host, port))
        return udp_socket

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.udp is not None:
            self.udp.close()
        if self.tcp is not None:
            self.tcp.close()
            await self.tcp.wait_closed()
        if self.session is not None:
            await self.session.close()
        self.state.locator.close()

    def reload(self, config: DnsConfig) -> None:
        """Serve `config` from now on (zones, POPs, the database); health is kept."""
        old = self.state
        self.state = build_state(config, self.health)
        self.state.answerer.counts = old.answerer.counts  # counters run across reloads
        self.state.answerer.pop_answers = old.answerer.pop_answers
        self.limiter = RateLimiter(config.rrl_rate, config.rrl_slip)
        old.locator.close()
        log.info("reloaded: %d zone(s), %d pop(s)", len(config.zones), len(config.pops))

    # ── answering ────────────────────────────────────────────────────────────

    def respond(self, packet: bytes, client: str, limit: int | None) -> bytes | None:
        """The answer to `packet` from `client`, or None to send nothing.
        `limit` is None over TCP (no size limit but the message's own)."""
        answerer = self.state.answerer
        payload = self.state.config.udp_payload
        try:
            query = wire.parse(packet)
        except wire.Drop as dropped:
            self.dropped[str(dropped)] += 1
            return None
        except wire.Refuse as refused:
            ceiling = MAX_TCP_MESSAGE if limit is None else 512
            if refused.query is not None:
                ceiling = MAX_TCP_MESSAGE if limit is None else refused.query.udp_limit(payload)
            return answerer.refusal(refused, ceiling)
        ceiling = MAX_TCP_MESSAGE if limit is None else query.udp_limit(payload)
        try:
            answer = answerer.answer(query, client, ceiling)
        except Exception:  # a bug of ours must cost this query, never the server
            log.exception("could not answer %r from %s", query.key, client)
            self.dropped["internal error (SERVFAIL)"] += 1
            servfail = wire.Refuse(wire.SERVFAIL, "internal error", query, query.ident, query.flags)
            return answerer.refusal(servfail, ceiling)
        if self.state.config.query_log:
            log.info("query %s %s %s from %s", query.key, query.qtype, answer[3] & 0xF, client)
        return answer

    async def serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.tcp_open += 1
        peer = writer.get_extra_info("peername")
        client = peer[0] if peer else "0.0.0.0"
        idle = self.state.config.tcp_idle
        try:
            while True:
                try:
                    size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), idle))
                    packet = await asyncio.wait_for(reader.readexactly(size), idle)
                except (TimeoutError, asyncio.IncompleteReadError):
                    break
                answer = self.respond(packet, client, None)
                if answer is None:
                    break  # not a query: the connection is not worth keeping
                writer.write(len(answer).to_bytes(2, "big") + answer)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.tcp_open -= 1
            writer.close()

    # ── health ───────────────────────────────────────────────────────────────

    async def probe_forever(self) -> None:
        while True:
            config = self.state.config
            probes = [pop for pop in config.pops if pop.health]
            if probes:
                results = await asyncio.gather(*(self.probe(pop.health) for pop in probes))
                changed = False
                for pop, ok in zip(probes, results, strict=True):
                    changed |= self.record(pop.name, ok)
                if changed:
                    self.apply_health()
            await asyncio.sleep(config.probe_interval)

    async def probe(self, url: str | None) -> bool:
        assert self.session is not None and url is not None
        try:
            async with self.session.get(url) as response:
                return response.status < 300
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    def record(self, name: str, ok: bool) -> bool:
        """Count a probe; True when the POP's verdict changed (after `rise`
        successes or `fall` failures in a row)."""
        probed = self.health.probes[name]
        if not probed.record(ok):
            return False
        if probed.up:
            log.warning("pop %s is up (%d probes answered)", name, probed.streak)
        else:
            log.warning("pop %s is down (%d probes failed)", name, -probed.streak)
        return True

    def force(self, name: str, up: bool | None) -> None:
        """A verdict from the control plane (None: back to the probes' own)."""
        if up is None:
            self.health.forced.pop(name, None)
        else:
            self.health.forced[name] = up
        self.apply_health()

    def apply_health(self) -> None:
        state, health = self.state, self.health
        steering = state.answerer.steering
        steering.healthy = {pop.name for pop in state.config.pops if health.up(pop.name)}
        state.answerer.forget()


class UdpReader:
    """The UDP listener: when the socket is readable, every waiting datagram is
    read and answered in one go (up to BATCH), straight on the socket, without
    an asyncio transport and a callback per packet between them."""

    BATCH = 512

    def __init__(self, server: DnsServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        sock.setblocking(False)
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(sock.fileno(), self.ready)

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def ready(self) -> None:
        server = self.server
        receive, send = self.sock.recvfrom, self.sock.sendto
        for _ in range(self.BATCH):
            try:
                data, addr = receive(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. an ICMP error for an earlier answer
                log.debug("udp receive: %s", exc)
                continue
            client = addr[0]
            answer = server.respond(data, client, 512)
            if answer is None:
                continue
            verdict = server.limiter.verdict(client, time.monotonic())
            if verdict == "drop":
                continue
            if verdict == "slip":
                answer = truncated(answer)
                if not answer:
                    continue
            try:
                send(answer, addr)
            except (BlockingIOError, InterruptedError):
                server.dropped["send buffer full"] += 1
            except OSError as exc:
                log.debug("udp send to %s: %s", client, exc)


def _prefix56(address: str) -> str:
    try:
        return ipaddress.IPv6Address(address).packed[:7].hex()
    except ValueError:
        return address


def truncated(answer: bytes) -> bytes:
    """`answer` cut to its header and question, with TC set (an RRL slip); empty
    when it has no question to keep."""
    if answer[4:6] != b"\x00\x01":
        return b""
    _, position = wire.read_name(answer, 12)
    head = bytearray(answer[: position + 4])
    head[2] |= 0x02  # TC
    head[6:12] = bytes(6)  # no answer, authority or additional records
    return bytes(head)
