"""GeoDNS: queries per second next to gdnsd on the same zone, and failover time.

    .venv/bin/python bench/geodns.py [--rounds 3] [--duration 15] [--sweep] [--quick]
                                     [--md bench/DNS.md] [--json FILE] [--keep]

What it does, top to bottom (bench/DNS.md holds a measured run and how to read it):

1. reads the query file `bench/dns/queries.txt` (writing it first, from a fixed seed,
   when it is missing): several names and types, 15% NXDOMAIN, 30% with an EDNS
   Client Subnet option; every query carries EDNS. It turns the file into the binary
   form dnsperf reads with `-B` (RFC 1035 TCP framing), so that only some queries
   carry ECS, within one dnsperf run;
2. one zone, `cdn.test.`, served by both: pinedge from a TOML file, gdnsd from a zone
   file, the steered name `img` through gdnsd's geoip plugin (City auto mode: the
   nearest POP by coordinates, with the same MaxMind test database and POPs);
3. sends every distinct question of the file to both and compares the answers;
4. throughput: `pinedge dns --workers 1` against gdnsd with one UDP thread, dnsperf
   for `--duration` seconds each, `--rounds` rounds alternating which goes first;
   then, once each for information, pinedge `--workers 2` against gdnsd's default
   two UDP threads, and both on a flood of never-repeated NXDOMAIN names;
5. failover: pinedge with two POPs whose health URLs are two HTTP servers in this
   process; a query every 20 ms from a client subnet that maps to POP A; POP A's
   health server stops (closed, or hanging), and the time from then to the last
   answer naming A is measured, and from its return to the first answer naming A;
6. prints the tables (and writes Markdown with `--md`), then stops every process.

It is named geodns.py, not dns.py: run as `python bench/dns.py`, a file named dns.py
would stand in for dnspython's `dns` package in everything the run imports. Nothing is
asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import random
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from harness import session
from harness.dnsperf import REST_LIMIT, Load, Perf, dnsperf_argv, run_dnsperf
from harness.errors import BenchError
from harness.machine import (
    Machine,
    descendants,
    ensure_tool,
    loadavg,
    machine_facts,
    other_benchmarks,
)
from harness.report import Report, run_line
from harness.servers import (
    REPO,
    Server,
    free_ports,
    pinedge_argv,
    pinedge_env,
    wait_http,
    wait_ready,
)
from harness.stats import median, verdict

DATA = REPO / "bench" / "dns"
QUERIES = DATA / "queries.txt"
GEOIP = REPO / "tests" / "geoip" / "GeoLite2-City-Test.mmdb"
HOST = "127.0.0.1"

# The GeoDNS targets: queries per second per process, and failover time.
QPS_TARGET = 50_000
FAILOVER_TARGET = 10.0  # seconds, plus the TTL a resolver may cache the last answer for

# gdnsd's largest SO_RCVBUF (pinedge asks for 4 MiB): with the OS default, dnsperf's first
# burst of outstanding queries overflows the socket and each lost query holds a slot for
# dnsperf's 5 s timeout.
GDNSD_RCVBUF = 1048576

# ---------------------------------------------------------------------------- the zone

ZONE = "cdn.test."
ZONE_TTL = 300
NEGATIVE_TTL = 300  # gdnsd clamps the SOA's own TTL to its MINIMUM: keep them equal
STEERED = "img"
STEERED_TTL = 30
TXT_APEX = "v=spf1 -all"
TXT_DMARC = "v=DMARC1; p=reject"
RECORDS = [  # (owner, type, value): what both servers hold besides SOA, NS and the steered name
    ("@", "TXT", TXT_APEX),
    ("ns1", "A", "192.0.2.53"),
    ("ns2", "A", "198.51.100.53"),
    ("www", "A", "192.0.2.80"),
    ("www", "AAAA", "2001:db8::80"),
    ("api", "A", "192.0.2.81"),
    ("api", "A", "192.0.2.82"),
    ("alias", "CNAME", "www"),
    ("_dmarc", "TXT", TXT_DMARC),
]


@dataclass(frozen=True)
class Pop:
    name: str
    region: str
    latitude: float
    longitude: float
    v4: tuple[str, ...]
    v6: tuple[str, ...]

    @property
    def addresses(self) -> list[str]:
        return [*self.v4, *self.v6]


POPS = [
    Pop("lon", "eu", 51.51, -0.13, ("192.0.2.10", "192.0.2.11"), ("2001:db8:1::10",)),
    Pop("sea", "us", 47.61, -122.33, ("198.51.100.10", "198.51.100.11"), ("2001:db8:2::10",)),
    Pop("tyo", "ap", 35.68, 139.69, ("203.0.113.10", "203.0.113.11"), ("2001:db8:3::10",)),
]
# Queries without ECS come from 127.0.0.1, which the test database does not know:
# both servers map it to lon by an explicit rule (pinedge's override file, gdnsd's nets).
LOOPBACK = ("127.0.0.0/8", "lon")

# ---------------------------------------------------------------------------- the query file

# (owner, type, percent of the file). NXDOMAIN is the rest (15%).
MIX = [
    (STEERED, "A", 27),
    (STEERED, "AAAA", 13),
    (STEERED, "HTTPS", 5),  # browsers ask for it; NODATA here
    ("www", "A", 9),
    ("www", "AAAA", 5),
    ("www", "HTTPS", 3),
    ("api", "A", 4),
    ("alias", "A", 4),  # a CNAME
    ("alias", "CNAME", 1),
    ("@", "TXT", 3),
    ("@", "NS", 3),
    ("@", "SOA", 2),
    ("@", "MX", 1),  # NODATA
    ("ns1", "A", 2),
    ("ns1", "AAAA", 1),  # NODATA
    ("ns2", "A", 1),
    ("_dmarc", "TXT", 1),
]
NX_SHARE = 15
ECS_SHARE = 30
NX_NAMES = 300  # distinct NXDOMAIN names in the file (random labels and typos)
TYPOS = ["imgs", "wwww", "ww", "image", "cdn", "static", "mail", "ftp", "admin", "m"]
QUERY_COUNT = 10_000
SEED = 6
TYPE_CODES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28, "HTTPS": 65}


def ecs_subnets() -> list[str]:
    """Client subnets the test database places (so both servers locate them):
    resolvers send /24 for IPv4 and /56 for IPv6, narrower for the small networks."""
    subnets = [f"214.78.{i}.0/24" for i in range(0, 32, 2)]  # San Diego -> sea
    subnets += [f"202.196.{i}.0/24" for i in range(224, 240)]  # the Philippines -> tyo
    subnets += ["175.16.199.0/24", "67.43.156.0/24"]  # Changchun, Bhutan -> tyo
    subnets += ["81.2.69.160/27", "89.160.20.128/25", "2.125.160.216/29"]  # GB, SE -> lon
    subnets += ["216.160.83.56/29"]  # Milton, WA -> sea
    subnets += [f"2001:218:0:{i:x}00::/56" for i in range(8)]  # Japan -> tyo
    subnets += [f"2a02:d180:0:{i:x}00::/56" for i in range(8)]  # Germany -> lon
    subnets += [f"2001:480:0:{i:x}00::/56" for i in range(4)]  # San Diego -> sea
    return subnets


@dataclass(frozen=True)
class Question:
    name: str  # absolute
    qtype: str
    ecs: str | None = None  # "214.78.2.0/24"

    def line(self) -> str:
        return f"{self.name} {self.qtype}" + (f" {self.ecs}" if self.ecs else "")

    @classmethod
    def parse(cls, line: str) -> Question:
        parts = line.split()
        if len(parts) not in (2, 3) or parts[1] not in TYPE_CODES:
            raise BenchError(f"query file: not 'NAME TYPE [SUBNET]': {line!r}")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def absolute(owner: str) -> str:
    return ZONE if owner == "@" else f"{owner}.{ZONE}"


def nx_names(rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    names = [absolute(typo) for typo in TYPOS]
    while len(names) < NX_NAMES:
        label = "".join(rng.choice(letters) for _ in range(rng.randint(5, 12)))
        names.append(absolute(label))
    return names


def generate_queries(count: int = QUERY_COUNT, seed: int = SEED) -> list[Question]:
    rng = random.Random(seed)
    slots: list[tuple[str, str]] = []
    for owner, qtype, percent in MIX:
        slots += [(absolute(owner), qtype)] * (count * percent // 100)
    nx = nx_names(rng)
    while len(slots) < count:
        slots.append((rng.choice(nx), rng.choice(["A", "A", "A", "AAAA"])))
    rng.shuffle(slots)
    subnets = ecs_subnets()
    with_ecs = set(rng.sample(range(count), count * ECS_SHARE // 100))
    return [
        Question(name, qtype, rng.choice(subnets) if i in with_ecs else None)
        for i, (name, qtype) in enumerate(slots)
    ]


def write_queries(path: Path, questions: list[Question]) -> None:
    head = [
        "# bench/geodns.py's query file: NAME TYPE [CLIENT-SUBNET], one query a line.",
        f"# Written by bench/geodns.py (seed {SEED}); delete it to write it again.",
        "# Every query carries EDNS (payload 1232); a third column adds an ECS option.",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([*head, *(q.line() for q in questions)]) + "\n")


def read_queries(path: Path) -> list[Question]:
    lines = path.read_text().splitlines()
    return [Question.parse(line) for line in lines if line.strip() and not line.startswith("#")]


def describe_mix(questions: list[Question]) -> list[tuple[str, int]]:
    """(what, count) rows: names by type, NXDOMAIN, ECS."""
    known = {absolute(owner) for owner, _, _ in MIX}
    rows: Counter[str] = Counter()
    for q in questions:
        rows["NXDOMAIN (A/AAAA)" if q.name not in known else f"{q.name} {q.qtype}"] += 1
    out = sorted(rows.items(), key=lambda row: -row[1])
    ecs = [q.ecs for q in questions if q.ecs]
    out.append((f"with ECS ({len(set(ecs))} subnets, IPv4 and IPv6)", len(ecs)))
    return out


# ---------------------------------------------------------------------------- wire format


def encode_name(name: str) -> bytes:
    labels = [part for part in name.rstrip(".").split(".") if part]
    return b"".join(bytes([len(part)]) + part.encode() for part in labels) + b"\x00"


def ecs_option(subnet: str) -> bytes:
    network = ipaddress.ip_network(subnet)
    family = 1 if network.version == 4 else 2
    address = network.network_address.packed[: (network.prefixlen + 7) // 8]
    body = struct.pack("!HBB", family, network.prefixlen, 0) + address
    return struct.pack("!HH", 8, len(body)) + body


def encode_query(question: Question, ident: int = 0, payload: int = 1232) -> bytes:
    """A query as a resolver sends it to an authoritative server: RD clear, EDNS."""
    header = struct.pack("!HHHHHH", ident, 0, 1, 0, 0, 1)
    body = encode_name(question.name) + struct.pack("!HH", TYPE_CODES[question.qtype], 1)
    options = ecs_option(question.ecs) if question.ecs else b""
    opt = b"\x00" + struct.pack("!HHIH", 41, payload, 0, len(options)) + options
    return header + body + opt


def write_binary(path: Path, questions: Iterator[Question] | list[Question]) -> int:
    """dnsperf -B's input: each message preceded by its length (RFC 1035 4.2.2)."""
    count = 0
    with path.open("wb") as out:
        for question in questions:
            packet = encode_query(question)
            out.write(struct.pack("!H", len(packet)) + packet)
            count += 1
    return count


def flood_questions(count: int, seed: int = SEED) -> Iterator[Question]:
    """Never-repeated NXDOMAIN names (a random-subdomain flood)."""
    rng = random.Random(seed + 1)
    for i in range(count):
        yield Question(f"r{i:07d}{rng.getrandbits(32):08x}.{ZONE}", "A")


# ---------------------------------------------------------------------------- configs


def pinedge_toml(
    port: int, admin: int, overrides: Path, pops: list[Pop], health: dict[str, str] | None = None
) -> str:
    """pinedge's configuration; `health` (POP -> URL) only for the failover run."""
    lines = [
        f'listen = "{HOST}:{port}"',
        f'admin = "{HOST}:{admin}"',
        f'geoip = "{GEOIP}"',
        f'overrides = "{overrides}"',
        f"steered_ttl = {STEERED_TTL}",
    ]
    if health is None:
        lines.append("rrl_rate = 0  # dnsperf sends everything from one address")
    else:
        lines += [
            'probe_interval = "2s"  # the defaults, written out',
            'probe_timeout = "1s"',
            "rise = 2",
            "fall = 2",
        ]
    lines += [
        "",
        "[[zones]]",
        f'name = "{ZONE}"',
        f"ttl = {ZONE_TTL}",
        f"negative_ttl = {NEGATIVE_TTL}",
        'ns = ["ns1", "ns2"]',
        "records = [",
        *(
            f'  {{ name = "{owner}", type = "{rtype}", value = "{value}" }},'
            for owner, rtype, value in RECORDS
        ),
        "]",
        f'steered = [ {{ name = "{STEERED}", ttl = {FAILOVER_TTL if health else STEERED_TTL} }} ]',
    ]
    for pop in pops:
        lines += [
            "",
            "[[pops]]",
            f'name = "{pop.name}"',
            f'region = "{pop.region}"',
            f"latitude = {pop.latitude}",
            f"longitude = {pop.longitude}",
            "addresses = [" + ", ".join(f'"{a}"' for a in pop.addresses) + "]",
        ]
        if health is not None:
            lines.append(f'health = "{health[pop.name]}"')
    return "\n".join(lines) + "\n"


def overrides_text() -> str:
    network, pop = LOOPBACK
    region = next(p.region for p in POPS if p.name == pop)
    return f"# where queries without ECS come from\n{network} {region}\n"


def gdnsd_zone() -> str:
    lines = [
        f"$TTL {ZONE_TTL}",
        f"@ SOA ns1 hostmaster 1 3600 600 604800 {NEGATIVE_TTL}",
        "@ NS ns1",
        "@ NS ns2",
    ]
    for owner, rtype, value in RECORDS:
        lines.append(f'{owner} {rtype} "{value}"' if rtype == "TXT" else f"{owner} {rtype} {value}")
    lines.append(f"{STEERED} {STEERED_TTL} DYNA geoip!{STEERED}")
    return "\n".join(lines) + "\n"


def gdnsd_config(home: Path, port: int, udp_threads: int | None) -> str:
    threads = "" if udp_threads is None else f", udp_threads => {udp_threads}"
    threads += f", udp_rcvbuf => {GDNSD_RCVBUF}"
    coords = ", ".join(f"{p.name} => [{p.latitude}, {p.longitude}]" for p in POPS)
    dcmap = "\n".join(
        f"          {p.name} => {{ addrs_v4 => [{', '.join(p.v4)}], "
        f"addrs_v6 => [{', '.join(p.v6)}] }}"
        for p in POPS
    )
    return f"""\
options => {{
  listen => {{ {HOST}:{port} => {{ tcp_threads => 1{threads} }} }}
  run_dir => {home}/run
  state_dir => {home}/state
}}
plugins => {{
  geoip => {{
    maps => {{
      pops => {{
        geoip2_db => {GEOIP}
        datacenters => [{", ".join(p.name for p in POPS)}]
        auto_dc_coords => {{ {coords} }}
        nets => {{ {LOOPBACK[0]} => {LOOPBACK[1]} }}
      }}
    }}
    resources => {{
      {STEERED} => {{
        map => pops
        dcmap => {{
{dcmap}
        }}
      }}
    }}
  }}
}}
"""


# ---------------------------------------------------------------------------- processes


def start_pinedge(name: str, home: Path, toml: str, workers: int, admin: int) -> Server:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dns.toml").write_text(toml)
    argv = [
        *pinedge_argv(),
        "dns",
        "--config",
        str(home / "dns.toml"),
        "--workers",
        str(workers),
        "--log-level",
        "WARNING",
    ]
    server = Server(name, argv, home, pinedge_env()).start()
    wait_http(server, admin, "/healthz", timeout=30)
    return server


def start_gdnsd(name: str, gdnsd: str, home: Path, port: int, threads: int | None) -> Server:
    for sub in ("zones", "run", "state"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    (home / "config").write_text(gdnsd_config(home, port, threads))
    (home / "zones" / ZONE.rstrip(".")).write_text(gdnsd_zone())
    return Server(name, [gdnsd, "-c", str(home), "start"], home).start()


def wait_dns(server: Server, port: int, timeout: float = 30.0) -> None:
    question = Question(absolute("www"), "A")

    def check() -> str:
        return "" if ask(port, question, timeout=0.3) is not None else "no answer"

    wait_ready(server, check, f"on udp port {port}", timeout)


# ---------------------------------------------------------------------------- asking


@dataclass
class Reply:
    rcode: str
    aa: bool
    answer: list[str]
    authority: list[str]
    additional: list[str]  # without the OPT record
    ecs_scope: int | None  # the scope prefix length of the ECS option, if it came back

    def core(self) -> tuple[object, ...]:
        return (self.rcode, self.aa, self.answer, self.authority)


def ask(port: int, question: Question, timeout: float = 1.0) -> Reply | None:
    """One query over UDP; None when nothing comes back in time."""
    from dnslib import DNSRecord  # pinedge's own dependency, in the venv

    ident = random.getrandbits(16)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(encode_query(question, ident), (HOST, port))
        try:
            while True:
                data = sock.recv(4096)
                if data[:2] == ident.to_bytes(2, "big"):
                    break
        except OSError:
            return None
    record = DNSRecord.parse(data)
    scope = None
    for rr in record.ar:
        if rr.rtype == 41:
            for option in rr.rdata:
                if option.code == 8 and len(option.data) >= 4:
                    scope = option.data[3]

    def rows(section: list) -> list[str]:
        return sorted(f"{rr.rname} {rr.ttl} {rr.rtype} {rr.rdata}" for rr in section)

    return Reply(
        rcode=["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"][
            record.header.rcode
        ]
        if record.header.rcode < 6
        else str(record.header.rcode),
        aa=bool(record.header.aa),
        answer=rows(record.rr),
        authority=rows(record.auth),
        additional=rows([rr for rr in record.ar if rr.rtype != 41]),
        ecs_scope=scope,
    )


@dataclass
class Comparison:
    distinct: int = 0
    same: int = 0
    additional_only: list[str] = field(default_factory=list)  # same but the additional section
    different: list[str] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)
    ecs_echoed: dict[str, int] = field(default_factory=dict)  # server -> answers with ECS back
    ecs_asked: int = 0
    scopes: dict[str, dict[str, int]] = field(default_factory=dict)  # server -> scope -> count
    pops: dict[str, int] = field(default_factory=dict)  # steered answers per POP (pinedge)


def pop_of(reply: Reply) -> str:
    for pop in POPS:
        if any(row.split()[-1] in pop.addresses for row in reply.answer):
            return pop.name
    return "-"


def compare(questions: list[Question], ports: dict[str, int]) -> Comparison:
    """Every distinct question to both servers: the same rcode, AA bit, answer and
    authority sections (TTLs included, record order not)?"""
    result = Comparison()
    distinct = sorted(set(questions), key=lambda q: q.line())
    result.distinct = len(distinct)
    for question in distinct:
        replies = {name: ask(port, question) for name, port in ports.items()}
        label = question.line()
        if any(reply is None for reply in replies.values()):
            result.unanswered.append(label)
            continue
        p, g = replies["pinedge"], replies["gdnsd"]
        assert p is not None and g is not None
        if question.ecs:
            result.ecs_asked += 1
            for name, reply in replies.items():
                assert reply is not None
                if reply.ecs_scope is not None:
                    result.ecs_echoed[name] = result.ecs_echoed.get(name, 0) + 1
                    scopes = result.scopes.setdefault(name, {})
                    key = f"/{reply.ecs_scope}"
                    scopes[key] = scopes.get(key, 0) + 1
        if question.name == absolute(STEERED) and p.answer:
            result.pops[pop_of(p)] = result.pops.get(pop_of(p), 0) + 1
        if p.core() != g.core():
            result.different.append(f"{label}: pinedge {p.core()} / gdnsd {g.core()}")
        elif p.additional != g.additional:
            result.additional_only.append(
                f"{label}: additional pinedge {p.additional} / gdnsd {g.additional}"
            )
        else:
            result.same += 1
    return result


# ---------------------------------------------------------------------------- dnsperf


# ---------------------------------------------------------------------------- throughput


@dataclass
class Pair:
    label: str
    first: str
    pinedge: Perf
    gdnsd: Perf

    @property
    def ratio(self) -> float:
        return self.pinedge.qps / self.gdnsd.qps if self.gdnsd.qps else float("nan")


@dataclass
class Servers:
    """The two servers of one comparison, by name: the process, its port, its pids."""

    procs: dict[str, Server]
    ports: dict[str, int]

    def pids(self, name: str) -> Callable[[], list[int]]:
        proc = self.procs[name]
        return lambda: [proc.pid, *descendants(proc.pid)]

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()


def start_pair(
    tools: dict[str, str], tmp: Path, tag: str, workers: int, threads: int | None
) -> Servers:
    p_port, g_port, admin = free_ports(3)
    overrides = tmp / "overrides.txt"
    overrides.write_text(overrides_text())
    toml = pinedge_toml(p_port, admin, overrides, POPS)
    pinedge = start_pinedge(f"pinedge-{tag}", tmp / f"pinedge-{tag}", toml, workers, admin)
    gdnsd = start_gdnsd(f"gdnsd-{tag}", tools["gdnsd"], tmp / f"gdnsd-{tag}", g_port, threads)
    servers = Servers({"pinedge": pinedge, "gdnsd": gdnsd}, {"pinedge": p_port, "gdnsd": g_port})
    wait_dns(pinedge, p_port)
    wait_dns(gdnsd, g_port)
    if workers > 1:  # every worker answers: until then some queries would go unanswered
        time.sleep(2.0)
    return servers


def thread_names(pid: int) -> str:
    """The process's threads by name, e.g. "gdnsd, gdnsd-io-udp ×2"."""
    names: Counter[str] = Counter()
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                names[Path(f"/proc/{pid}/task/{task}/comm").read_text().strip()] += 1
    return ", ".join(f"{name} ×{n}" if n > 1 else name for name, n in names.items())


def run_pairs(
    servers: Servers,
    label: str,
    rounds: int,
    data: Path,
    args: argparse.Namespace,
    tools: dict[str, str],
) -> list[Pair]:
    pairs = []
    for index in range(rounds):
        order = ("pinedge", "gdnsd") if index % 2 == 0 else ("gdnsd", "pinedge")
        got: dict[str, Perf] = {}
        for name in order:
            time.sleep(args.pause)
            argv = dnsperf_argv(
                tools["dnsperf"], data, servers.ports[name], args.load, args.duration, HOST
            )
            got[name] = run_dnsperf(argv, servers.pids(name), args.duration)
        pair = Pair(label, order[0], got["pinedge"], got["gdnsd"])
        pairs.append(pair)
        print(
            f"  {label} round {index + 1}/{rounds}: pinedge {pair.pinedge.qps:,.0f} q/s, "
            f"gdnsd {pair.gdnsd.qps:,.0f} q/s, ratio {pair.ratio:.3f}",
            flush=True,
        )
    for name, proc in servers.procs.items():
        if proc.exited() is not None:
            raise BenchError(f"{name} exited during the run:\n{proc.output()}")
    return pairs


@dataclass
class SweepRow:
    server: str
    load: str
    qps: float
    lost: int
    latency_avg: float
    server_cpu: float
    dnsperf_cpu: float
    others: bool = False


SWEEP = [
    Load(1, 100, 1),
    Load(4, 500, 1),
    Load(4, 1000, 1),
    Load(8, 2000, 1),
    Load(4, 1000, 2),
    Load(8, 2000, 2),
    Load(16, 4000, 2),
]


def sweep(
    servers: Servers, data: Path, args: argparse.Namespace, tools: dict[str, str]
) -> list[SweepRow]:
    rows = []
    for load in SWEEP:
        for name in ("pinedge", "gdnsd"):
            time.sleep(args.pause)
            argv = dnsperf_argv(
                tools["dnsperf"], data, servers.ports[name], load, args.sweep_seconds, HOST
            )
            perf = run_dnsperf(argv, servers.pids(name), args.sweep_seconds)
            rows.append(
                SweepRow(
                    name,
                    load.label(),
                    perf.qps,
                    perf.lost,
                    perf.latency_avg,
                    perf.server_cpu,
                    perf.dnsperf_cpu,
                    perf.disturbed,
                )
            )
            print(f"  sweep {load.label():<18} {name:<8} {perf.qps:>10,.0f} q/s", flush=True)
    return rows


# ---------------------------------------------------------------------------- failover

FAILOVER_TTL = 5
QUERY_EVERY = 0.020
SETTLE = 3.0  # seconds of answers naming POP B before a failover counts as done
GIVE_UP = 30.0


class ReusableHTTPServer(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


class HealthServer:
    """A POP's health URL: 200 while up; `stop` closes the port (connections refused,
    like a stopped edge); `hang` keeps accepting but never answers (like a stuck one)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.httpd: ThreadingHTTPServer | None = None
        self.hanging = threading.Event()
        self.release = threading.Event()
        self.probes = 0

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.probes += 1
                if owner.hanging.is_set():
                    owner.release.wait(GIVE_UP)
                    return
                body = b"ok\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ReusableHTTPServer((HOST, self.port), Handler)
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def fail(self, mode: str) -> None:
        if mode == "hang":
            self.release.clear()
            self.hanging.set()
        else:
            self.close()

    def restore(self, mode: str) -> None:
        if mode == "hang":
            self.hanging.clear()
            self.release.set()
        else:
            self.start()

    def close(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


class Querier(threading.Thread):
    """A query every QUERY_EVERY seconds, each waiting for its answer; logs
    (time the answer came, the POP it named: a name, "-", or "lost")."""

    def __init__(self, port: int, question: Question) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.question = question
        self.log: list[tuple[float, str]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        tick = time.monotonic()
        while not self.stopping.is_set():
            reply = ask(self.port, self.question, timeout=0.25)
            self.log.append((time.monotonic(), "lost" if reply is None else pop_of(reply)))
            tick += QUERY_EVERY
            time.sleep(max(0.0, tick - time.monotonic()))

    def since(self, start: float) -> list[tuple[float, str]]:
        return [entry for entry in list(self.log) if entry[0] >= start]


@dataclass
class FailoverRound:
    mode: str
    phase: float  # seconds waited before the failure, to vary it against the probe cycle
    back_phase: float  # the same before the return
    down: float  # the failure to the last answer naming POP A
    first_b: float  # the failure to the first answer naming POP B
    up: float  # the health server's return to the first answer naming POP A again
    answers: int  # answers during the round
    lost: int  # queries without an answer
    others: int  # answers naming neither POP


def wait_for(check: Callable[[], bool], timeout: float = GIVE_UP) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def steady(querier: Querier, pop: str, seconds: float) -> Callable[[], bool]:
    """True once every answer of the last `seconds` named `pop` (and there were some)."""

    def check() -> bool:
        now = time.monotonic()
        recent = querier.since(now - seconds)
        return len(recent) >= seconds / QUERY_EVERY / 2 and all(p == pop for _, p in recent)

    return check


def failover_round(
    querier: Querier, health: HealthServer, mode: str, rng: random.Random
) -> FailoverRound:
    a, b = POPS[0].name, POPS[1].name
    if not wait_for(steady(querier, a, 1.0)):
        raise BenchError(f"answers do not name {a} steadily before the failure")
    phase = rng.uniform(0, 2.0)
    time.sleep(phase)
    killed = time.monotonic()
    health.fail(mode)
    if not wait_for(steady(querier, b, SETTLE)):
        raise BenchError(f"{mode}: answers do not name {b} {GIVE_UP:.0f}s after {a} failed")
    log = querier.since(killed)
    last_a = max((t for t, p in log if p == a), default=killed)
    first_b = min(t for t, p in log if p == b)
    back_phase = rng.uniform(0, 2.0)
    time.sleep(back_phase)
    restored = time.monotonic()
    health.restore(mode)
    if not wait_for(lambda: any(p == a for _, p in querier.since(restored))):
        raise BenchError(f"{mode}: answers do not name {a} {GIVE_UP:.0f}s after it came back")
    first_a = min(t for t, p in querier.since(restored) if p == a)
    wait_for(steady(querier, a, 1.0))
    log = querier.since(killed)
    return FailoverRound(
        mode=mode,
        phase=phase,
        back_phase=back_phase,
        down=last_a - killed,
        first_b=first_b - killed,
        up=first_a - restored,
        answers=sum(1 for _, p in log if p != "lost"),
        lost=sum(1 for _, p in log if p == "lost"),
        others=sum(1 for _, p in log if p not in (a, b, "lost")),
    )


def run_failover(tmp: Path, rounds: int, modes: list[str]) -> list[FailoverRound]:
    pops = POPS[:2]
    port, admin, *health_ports = free_ports(2 + len(pops))
    health = {pop.name: HealthServer(hp) for pop, hp in zip(pops, health_ports, strict=True)}
    for server in health.values():
        server.start()
    urls = {name: f"http://{HOST}:{server.port}/readyz" for name, server in health.items()}
    overrides = tmp / "overrides.txt"
    overrides.write_text(overrides_text())
    toml = pinedge_toml(port, admin, overrides, pops, urls)
    # 89.160.20.128/25 is Linkoping, Sweden: nearest to lon (POP A), then sea (POP B).
    querier = Querier(port, Question(absolute(STEERED), "A", "89.160.20.128/25"))
    results = []
    rng = random.Random(SEED)
    try:
        pinedge = start_pinedge("pinedge-failover", tmp / "pinedge-failover", toml, 1, admin)
        wait_dns(pinedge, port)
        querier.start()
        for mode in modes:
            for index in range(rounds):
                got = failover_round(querier, health[pops[0].name], mode, rng)
                results.append(got)
                print(
                    f"  failover ({mode}) round {index + 1}/{rounds}: last answer naming "
                    f"{pops[0].name} {got.down:.2f}s after it failed; back {got.up:.2f}s "
                    f"after it returned; {got.lost} lost",
                    flush=True,
                )
    finally:
        querier.stopping.set()
        if querier.is_alive():
            querier.join(2)
        Server.stop_all()
        for server in health.values():
            server.release.set()
            server.close()
    return results


# ---------------------------------------------------------------------------- in process


@dataclass
class InProcess:
    """pinedge's answer path without sockets or event loop: DnsServer.respond() plus the
    rate limiter's verdict, as datagram_received runs them, timed in this process."""

    mix_us: float  # per query of the query file, everything prepared
    unique_nx_us: float  # per never-seen NXDOMAIN name (the slow path: dnslib builds it)


def measure_in_process(questions: list[Question], tmp: Path, passes: int = 5) -> InProcess:
    from pinedge.core.config import load
    from pinedge.geodns.config import DnsConfig
    from pinedge.geodns.server import DnsServer

    overrides = tmp / "overrides.txt"
    overrides.write_text(overrides_text())
    path = tmp / "in-process.toml"
    path.write_text(pinedge_toml(0, 0, overrides, POPS))
    server = DnsServer(load(DnsConfig, str(path), {}))
    packets = [encode_query(q, i & 0xFFFF) for i, q in enumerate(questions)]
    for packet in packets:  # prepare every answer first
        server.respond(packet, HOST, 512)

    def timed(batch: list[bytes]) -> float:
        """CPU time of this thread per packet (so that other processes do not count)."""
        start = time.thread_time()
        for packet in batch:
            server.respond(packet, HOST, 512)
            server.limiter.verdict(HOST, start)
        return (time.thread_time() - start) / len(batch) * 1e6

    mix = min(timed(packets) for _ in range(passes))
    flood = [encode_query(q) for q in flood_questions(20_000, seed=SEED + 7)]
    try:
        return InProcess(mix, timed(flood))
    finally:
        server.state.locator.close()


# ---------------------------------------------------------------------------- report


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def fmt_rcodes(rcodes: dict[str, int]) -> str:
    total = sum(rcodes.values()) or 1
    return ", ".join(f"{k} {v / total:.1%}" for k, v in sorted(rcodes.items()))


def perf_cells(p: Perf) -> list[str]:
    return [
        f"{p.qps:,.0f}{' ‡' if p.disturbed else ''}",
        f"{p.lost:,} ({p.lost / max(p.sent, 1):.2%})",
        ms(p.latency_avg),
        ms(p.latency_max),
        *(f"{v:.2f}" for v in (p.server_cpu, p.dnsperf_cpu, p.machine_busy, p.rest)),
    ]


PAIR_HEAD = (
    "round | first | server | queries/s | lost | avg latency | max latency | server CPU | "
    "dnsperf CPU | machine busy | rest | pinedge/gdnsd"
)


def pair_table(report: Report, pairs: list[Pair], names: dict[str, str]) -> None:
    rows = []
    for i, pair in enumerate(pairs, 1):
        for name in ("pinedge", "gdnsd"):
            ratio = f"**{pair.ratio:.3f}**" if name == "pinedge" else ""
            rows.append([str(i), pair.first, names[name], *perf_cells(getattr(pair, name)), ratio])
    if len(pairs) > 1:
        for name in ("pinedge", "gdnsd"):
            perfs = [getattr(pair, name) for pair in pairs]
            first = ["**median**", "", name] if name == "pinedge" else ["", "", name]
            ratio = f"**{median(p.ratio for p in pairs):.3f}**" if name == "pinedge" else ""
            qps, latency = median(p.qps for p in perfs), median(p.latency_avg for p in perfs)
            rows.append([*first, f"{qps:,.0f}", "", ms(latency), *[""] * 5, ratio])
    report.table(PAIR_HEAD, rows, "rll" + "r" * 9)


@dataclass
class Results:
    args: dict[str, object]
    started: str
    machine: Machine
    mix: list[tuple[str, int]]
    comparison: Comparison | None = None
    sweep: list[SweepRow] = field(default_factory=list)
    main: list[Pair] = field(default_factory=list)
    workers2: list[Pair] = field(default_factory=list)
    flood: list[Pair] = field(default_factory=list)
    gdnsd_threads: dict[str, str] = field(default_factory=dict)
    failover: list[FailoverRound] = field(default_factory=list)
    in_process: InProcess | None = None
    failover_others: list[str] = field(default_factory=list)
    after: dict[str, list[str]] = field(default_factory=dict)


def failover_table(report: Report, rounds: list[FailoverRound]) -> None:
    rows = []
    for mode in sorted({r.mode for r in rounds}, key=["stop", "hang"].index):
        mine = [r for r in rounds if r.mode == mode]
        for i, r in enumerate(mine, 1):
            rows.append(
                [mode, str(i), f"{r.phase:.2f} / {r.back_phase:.2f} s"]
                + [f"{v:.2f} s" for v in (r.down, r.first_b, r.up)]
                + [str(r.answers), str(r.lost), str(r.others)]
            )
        down, first_b, up = (max(getattr(r, k) for r in mine) for k in ("down", "first_b", "up"))
        lost, others = sum(r.lost for r in mine), sum(r.others for r in mine)
        rows.append(
            [
                mode,
                "**max**",
                "",
                f"**{down:.2f} s**",
                f"{first_b:.2f} s",
                f"{up:.2f} s",
                "",
                str(lost),
                str(others),
            ]
        )
    report.table(
        "mode | round | phases | failure → last answer naming lon | → first naming sea | "
        "return → first naming lon | answers | lost | other",
        rows,
        "lrrrrrrrr",
    )


def comparison_section(report: Report, c: Comparison) -> None:
    report.add(
        "### Same answers?",
        "",
        f"{c.distinct} distinct questions (name, type, client subnet) of the file, each asked "
        "of both servers before the runs: "
        f"{c.same} identical (rcode, AA bit, answer and authority sections with TTLs; record "
        f"order aside), {len(c.additional_only)} identical but for the additional section, "
        f"{len(c.different)} different, {len(c.unanswered)} unanswered by one of them.",
    )
    for row in (c.different + c.unanswered)[:6]:
        report.add(f"- different: `{row}`")
    kinds: dict[str, list[str]] = {}
    for row in c.additional_only:
        name, qtype = row.split()[:2]
        kinds.setdefault(f"{name} {qtype.rstrip(':')}", []).append(row)
    for kind, rows in kinds.items():
        example = rows[0].split(": ", 1)[1]
        report.add(f"- additional section only, `{kind}` ({len(rows)} questions): `{example}`")
    if c.ecs_asked:
        report.add(
            "",
            f"Of the {c.ecs_asked} questions with ECS, pinedge sent the option back in "
            f"{c.ecs_echoed.get('pinedge', 0)} answers, gdnsd in {c.ecs_echoed.get('gdnsd', 0)}. "
            f"Scope prefix lengths (not compared: each derives them its own way; gdnsd merges "
            f"networks that get the same answer): pinedge {scopes(c, 'pinedge')}; "
            f"gdnsd {scopes(c, 'gdnsd')}. Distinct steered questions answered per POP: "
            + ", ".join(f"{pop} {n}" for pop, n in sorted(c.pops.items()))
            + ".",
        )
    report.add("")


def scopes(c: Comparison, server: str) -> str:
    found = c.scopes.get(server, {})
    order = sorted(found, key=lambda scope: int(scope[1:]))
    return ", ".join(f"{scope} ×{found[scope]}" for scope in order)


def write_report(report: Report, res: Results) -> None:
    m = res.machine
    report.add(
        "# GeoDNS: queries per second next to gdnsd, and failover time",
        "",
        f"{run_line('geodns.py')}: one run on a {m.cpus}-core shared machine "
        f"({m.cpu}), Python {m.python}, {m.pinedge}, gdnsd {m.packages['gdnsd']}, "
        f"dnsperf {m.packages['dnsperf']} (Debian 12 packages).",
        "",
        f"Machine before the run: load average {' '.join(m.loadavg)}; "
        + (
            "other benchmarks running: " + "; ".join(m.other_benchmarks)
            if m.other_benchmarks
            else "no other benchmark running"
        )
        + "; processes over 5% of a core in a 3 s sample: "
        + (", ".join(m.busy) if m.busy else "none")
        + ".",
        "",
    )
    query_section(report, res)
    if res.comparison is not None:
        comparison_section(report, res.comparison)
    throughput_section(report, res)
    if res.failover:
        failover_section(report, res)
    reading_section(report, res)
    if res.after:
        others = res.after["other_benchmarks"]
        still = "other benchmarks running: " + "; ".join(others) if others else "no other benchmark"
        report.add(
            f"Machine after the run: load average {' '.join(res.after['loadavg'])}; {still} "
            "running.",
            "",
        )
    report.add(*targets(res))


def query_section(report: Report, res: Results) -> None:
    total = sum(count for what, count in res.mix if not what.startswith("with ECS"))
    report.add(
        "## The zone and the queries",
        "",
        f"One zone, `{ZONE}`: SOA, NS (ns1, ns2), A, AAAA, TXT (apex and `_dmarc`), "
        f"two A records on `api`, a CNAME `alias` → `www`, and the steered name `{STEERED}` "
        f"(TTL {STEERED_TTL} s) over three POPs: "
        + ", ".join(
            f"{p.name} ({p.latitude}, {p.longitude}; {len(p.v4)} IPv4, 1 IPv6)" for p in POPS
        )
        + ". pinedge reads it from TOML; gdnsd from a zone file, `img` as "
        "`DYNA geoip!img` with plugin_geoip in City auto mode (`auto_dc_coords`: the nearest POP "
        f"by coordinates, as pinedge does), the same database (`{GEOIP.relative_to(REPO)}`). "
        f"Queries without ECS come from 127.0.0.1, which that database does not place: both "
        f"servers map `{LOOPBACK[0]}` to {LOOPBACK[1]} by an explicit rule (pinedge's "
        "`overrides` file, gdnsd's `nets`).",
        "",
        f"Query file `bench/dns/queries.txt`: {total:,} queries, shuffled (seed {SEED}); every "
        "one with EDNS (payload 1232, DO clear, RD clear, as resolvers ask authoritative "
        "servers), 30% with an EDNS Client Subnet option (/24 IPv4 and /56 IPv6 subnets, a "
        "few narrower, all placed by the test database). dnsperf adds ECS only to every "
        "query (`-E`), so the script writes the file as DNS messages and dnsperf sends them "
        "as they are (`-B`), looping over the file: one run, one mix.",
        "",
    )
    report.table(
        ["queries", "share"], [[what, f"{count / total:.1%}"] for what, count in res.mix], "lr"
    )


def throughput_section(report: Report, res: Results) -> None:
    args = res.args
    report.add(
        "## Throughput",
        "",
        f"dnsperf `{args['load']}` (clients, queries outstanding, threads), "
        f"`-l {args['duration']}` s per run, {args['pause']} s of quiet before each; servers "
        "started once and kept for all rounds; each round runs both, alternating which goes "
        "first. *server CPU* and *dnsperf CPU*: cores used on average over the run (user + "
        "system time from /proc/PID/stat and getrusage); *machine busy*: all cores, from "
        "/proc/stat (so it includes the kernel's loopback work and anything else running); "
        "*rest*: machine busy less the server and dnsperf (kernel work charged to neither, "
        "and any other process: near 0 means nothing else ran). Latency is dnsperf's "
        "average per query, with its queue of outstanding queries included.",
        "",
    )
    if res.sweep:
        report.add(
            f"### Finding the plateau ({args['sweep_seconds']} s per setting, one run each)", ""
        )
        report.table(
            "dnsperf | server | queries/s | lost | avg latency | server CPU | dnsperf CPU",
            [
                [
                    f"`{r.load}`",
                    r.server,
                    f"{r.qps:,.0f}{' ‡' if r.others else ''}",
                    f"{r.lost:,}",
                    ms(r.latency_avg),
                    f"{r.server_cpu:.2f}",
                    f"{r.dnsperf_cpu:.2f}",
                ]
                for r in res.sweep
            ],
            "llrrrrr",
        )
    report.add(
        f"### One pinedge process against gdnsd with one UDP thread ({len(res.main)} rounds)",
        "",
        "`pinedge dns --workers 1` (one process, one thread answering; `rrl_rate = 0`, so rate "
        "limiting does not drop the load, which comes from one address) against gdnsd with "
        "`udp_threads => 1, tcp_threads => 1` (its threads: "
        f"{res.gdnsd_threads.get('one', '?')}). gdnsd answers UDP with recvmmsg/sendmmsg, "
        "many datagrams per system call.",
        "",
    )
    pair_table(report, res.main, {"pinedge": "pinedge", "gdnsd": "gdnsd"})
    if res.main:
        report.add(
            f"Response codes (round 1, pinedge): {fmt_rcodes(res.main[0].pinedge.rcodes)}; "
            f"gdnsd: {fmt_rcodes(res.main[0].gdnsd.rcodes)}.",
            "",
        )
    if res.workers2:
        report.add(
            "### For information: two pinedge processes against gdnsd's default threads",
            "",
            "`pinedge dns --workers 2` (two processes on one port, SO_REUSEPORT) against gdnsd "
            "with its default `udp_threads` (2 per address; its threads: "
            f"{res.gdnsd_threads.get('default', '?')}). One run each; dnsperf now competes "
            "with two busy server processes for the two cores.",
            "",
        )
        pair_table(report, res.workers2, {"pinedge": "pinedge ×2", "gdnsd": "gdnsd default"})
        report.add(
            "pinedge's processes (cores each, those that worked; SO_REUSEPORT spreads dnsperf's "
            f"{args['clients']} sockets over them by a hash of the addresses): "
            + " + ".join(f"{c:.2f}" for c in res.workers2[0].pinedge.per_process)
            + ".",
            "",
        )
    if res.flood:
        report.add(
            "### For information: a random-subdomain flood",
            "",
            f"The one-thread pair again, on a file of {args['flood']:,} A queries for "
            "distinct NXDOMAIN names (`rNNNNNNN<hex>.cdn.test.`, EDNS, no ECS), as in a "
            "random-subdomain attack. "
            + flood_note(res.flood[0], int(str(args["flood"])))
            + " One run each.",
            "",
        )
        pair_table(report, res.flood, {"pinedge": "pinedge", "gdnsd": "gdnsd"})
    report.add(disturbed(res), "")


def disturbed(res: Results) -> str:
    """Runs that another process may have slowed down."""
    runs = [p for pair in res.main + res.workers2 + res.flood for p in (pair.pinedge, pair.gdnsd)]
    seen = sorted({other for perf in runs for other in perf.others})
    flagged = sum(1 for perf in runs if perf.disturbed) + sum(1 for r in res.sweep if r.others)
    if not flagged:
        return (
            "No run had another benchmark running before or after it, or a *rest* "
            f"above {REST_LIMIT} cores."
        )
    return (
        f"‡ {flagged} run(s) had another benchmark running just before or after them, or a "
        f"*rest* above {REST_LIMIT} cores: another process took CPU from them, so their "
        "numbers are not comparable to the others."
        + (" Seen: " + "; ".join(seen) + "." if seen else "")
    )


def flood_note(pair: Pair, names: int) -> str:
    sent = pair.pinedge.sent
    if sent <= names:
        seen = f"pinedge was sent {sent:,} of them, so it never saw a name twice"
    else:
        seen = f"pinedge was sent {sent:,}, so the file looped {sent / names:.1f} times"
    loops = pair.gdnsd.sent / names
    return f"{seen}; gdnsd, which keeps no state per name, went round it {loops:.1f} times."


def failover_section(report: Report, res: Results) -> None:
    interval, timeout, fall, rise = 2.0, 1.0, 2, 2
    report.add(
        "## Failover",
        "",
        "`pinedge dns --workers 1` with two POPs, lon (A) and sea (B), whose `health` URLs are "
        "two HTTP servers in the benchmark process; the defaults for probing, written out: "
        f"`probe_interval = {interval:g}s`, `probe_timeout = {timeout:g}s`, `rise = {rise}`, "
        f"`fall = {fall}`; the steered name's TTL {FAILOVER_TTL} s. A thread asks "
        "`img.cdn.test. A` with ECS 89.160.20.128/25 (Sweden: nearest lon, then sea) every "
        f"{QUERY_EVERY * 1000:.0f} ms, each query waiting for its answer (250 ms at most). A "
        "round waits for answers naming lon for a second, waits a random 0-2 s (*phase*, so "
        "the failure falls anywhere in the probe cycle), then fails lon's health server: "
        "*stop* closes its port (connections refused, as when the edge process is gone), "
        "*hang* keeps it accepting but never answering (as when the edge is stuck; the probe "
        f"times out). The failure counts as done after {SETTLE:.0f} s of answers naming sea; "
        "then, after another random 0-2 s (the second *phase*), lon's health server comes "
        "back. Times are taken when the answer arrives.",
        "",
    )
    failover_table(report, res.failover)
    report.add(
        (
            "Other benchmarks running before or after these rounds: "
            + "; ".join(res.failover_others)
            + "."
            if res.failover_others
            else "No other benchmark was running before or after these rounds."
        ),
        "",
        "What the settings predict: pinedge probes, waits `probe_interval`, probes again (the "
        "wait starts when the slowest probe is done) and takes a POP out after `fall` failed "
        "probes in a row, at once dropping its prepared answers. *stop*: a refused probe fails "
        f"at once, so the verdict comes {(fall - 1) * interval:g}-{fall * interval:g} s after "
        "the failure. *hang*: each failing probe lasts `probe_timeout`, so "
        f"{(fall - 1) * (interval + timeout) + timeout:g}-{fall * (interval + timeout):g} s. "
        f"Back: `rise` = {rise} good probes, {(rise - 1) * interval:g}-{rise * interval:g} s "
        f"after a stop, up to {rise * interval + timeout:g} s after a hang (a probe still "
        "hanging when the server recovers fails too).",
        "",
    )


def us_per_query(perf: Perf) -> float:
    return perf.server_cpu / perf.qps * 1e6 if perf.qps else float("nan")


def bottleneck(p: list[Perf], g: list[Perf]) -> str:
    """Which side held each run back, from the CPU each used."""
    pinedge, gdnsd = median(x.server_cpu for x in p), median(x.server_cpu for x in g)
    text = (
        f"- **What held each back**: pinedge answers in one thread, and used {pinedge:.2f} "
        "of the one core it can use"
    )
    text += (
        ": it was the bottleneck. "
        if pinedge >= 0.9
        else ", short of a core: the machine, shared with dnsperf, held it back. "
    )
    if gdnsd < 0.9:
        text += (
            f"gdnsd used {gdnsd:.2f} of a core: dnsperf, on the other core, could not send "
            "faster, so gdnsd's figure is a floor of what it can answer and the ratio "
            "pinedge/gdnsd a ceiling."
        )
    else:
        text += f"gdnsd used {gdnsd:.2f} of its core: it was the bottleneck too."
    return text


def reading_section(report: Report, res: Results) -> None:
    report.add("## Reading the numbers", "")
    if res.main:
        p = [pair.pinedge for pair in res.main]
        g = [pair.gdnsd for pair in res.main]
        report.add(
            "- **How the two cores were shared** (medians of the rounds above): with pinedge, "
            f"pinedge {median(x.server_cpu for x in p):.2f} cores, dnsperf "
            f"{median(x.dnsperf_cpu for x in p):.2f}, the machine "
            f"{median(x.machine_busy for x in p):.2f} busy; with gdnsd, gdnsd "
            f"{median(x.server_cpu for x in g):.2f}, dnsperf "
            f"{median(x.dnsperf_cpu for x in g):.2f}, the machine "
            f"{median(x.machine_busy for x in g):.2f}. Per query answered, the server spent "
            f"{median(us_per_query(x) for x in p):.1f} µs of CPU (pinedge) and "
            f"{median(us_per_query(x) for x in g):.2f} µs (gdnsd).",
            bottleneck(p, g),
        )
    if res.in_process is not None:
        ip = res.in_process
        report.add(
            f"- **Where pinedge's time goes**: timed (thread CPU time) in the benchmark's process, "
            f"`DnsServer.respond()` plus the rate limiter's verdict (what `datagram_received` "
            f"runs, without the socket and the event loop) takes {ip.mix_us:.1f} µs per query "
            f"of the file (fastest of 5 passes, every answer already prepared), a ceiling of "
            f"{1e6 / ip.mix_us:,.0f} queries/s for one process before any socket work; a "
            f"never-seen NXDOMAIN name takes {ip.unique_nx_us:.0f} µs (the answer is built "
            "with dnslib, twice: full and truncated, then kept)."
        )
    report.add("")


def targets(res: Results) -> list[str]:
    lines = ["## Targets", ""]
    if res.main:
        qps = median(p.pinedge.qps for p in res.main)
        ratio = median(p.ratio for p in res.main)
        lines += [
            f"Target: ≥ {QPS_TARGET:,} queries/s per process on the realistic query file: "
            f"{qps:,.0f} (median of {len(res.main)} rounds, pinedge/gdnsd one UDP thread "
            f"{ratio:.3f}), {verdict(qps >= QPS_TARGET)}.",
            "",
        ]
    if res.failover:
        worst = max(r.down for r in res.failover)
        lines += [
            f"Target: failover, from a POP stopping to the last answer naming it, ≤ "
            f"{FAILOVER_TARGET:.0f} s + TTL: at most {worst:.2f} s over "
            f"{len(res.failover)} rounds (the TTL part is the resolvers' caching, which this "
            f"direct measurement does not include), {verdict(worst <= FAILOVER_TARGET)}.",
            "",
        ]
    return lines


# ---------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="pinedge dns next to gdnsd; failover time")
    add = parser.add_argument
    add("--rounds", type=int, default=3, help="throughput rounds (default 3)")
    add("--duration", type=float, default=15, help="seconds per dnsperf run (default 15)")
    add("--clients", type=int, default=8, help="dnsperf -c (default 8)")
    add("--outstanding", type=int, default=2000, help="dnsperf -q (default 2000)")
    add("--threads", type=int, default=2, help="dnsperf -T (default 2)")
    add("--pause", type=float, default=2.0, help="seconds of quiet before each run")
    add("--sweep", action="store_true", help="first try a few dnsperf settings on both")
    add("--sweep-seconds", type=float, default=5, help="seconds per sweep run (default 5)")
    add("--flood", type=int, default=400_000, help="names in the NXDOMAIN flood file (0: skip)")
    add("--no-workers-run", action="store_true", help="skip pinedge --workers 2 / gdnsd default")
    add("--failover-rounds", type=int, default=5, help="rounds per failure mode (default 5)")
    add("--no-failover", action="store_true", help="skip the failover measurement")
    add("--no-throughput", action="store_true", help="skip the throughput measurement")
    add("--queries", type=Path, default=QUERIES, help="query file (written when missing)")
    add("--quick", action="store_true", help="smoke run: 1 round of 3 s, 1 failover round")
    add("--md", type=Path, help="write the report as Markdown to this file")
    add("--json", type=Path, help="write every number to this file")
    add("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.failover_rounds = 1, 3, 1
        args.sweep_seconds, args.flood = 2, min(args.flood, 50_000)
    args.load = Load(args.clients, args.outstanding, args.threads)
    return args


def throughput(
    res: Results, args: argparse.Namespace, tools: dict[str, str], tmp: Path, data: Path
) -> None:
    servers = start_pair(tools, tmp, "one", 1, 1)
    try:
        res.gdnsd_threads["one"] = thread_names(servers.procs["gdnsd"].pid)
        res.comparison = compare(read_queries(args.queries), servers.ports)
        c = res.comparison
        print(
            f"same answers: {c.same}/{c.distinct} identical, {len(c.additional_only)} "
            f"differ in the additional section only, {len(c.different)} differ",
            flush=True,
        )
        for row in c.different[:5]:
            print(f"  ! {row}", flush=True)
        if args.sweep:
            res.sweep = sweep(servers, data, args, tools)
        res.main = run_pairs(servers, "1 process / 1 UDP thread", args.rounds, data, args, tools)
        if args.flood:
            flood = tmp / "flood.bin"
            write_binary(flood, flood_questions(args.flood))
            res.flood = run_pairs(servers, "NXDOMAIN flood", 1, flood, args, tools)
    finally:
        servers.stop()
    if not args.no_workers_run:
        servers = start_pair(tools, tmp, "two", 2, None)
        try:
            res.gdnsd_threads["default"] = thread_names(servers.procs["gdnsd"].pid)
            res.workers2 = run_pairs(servers, "2 processes / default", 1, data, args, tools)
        finally:
            servers.stop()


def prepare(args: argparse.Namespace, tmp: Path) -> tuple[list[Question], Path, Results]:
    """The query file (written when missing), its binary form, the facts of the machine."""
    if not args.queries.exists():
        write_queries(args.queries, generate_queries())
        print(f"wrote {args.queries}", flush=True)
    questions = read_queries(args.queries)
    data = tmp / "queries.bin"
    write_binary(data, questions)
    res = Results(
        args={k: str(v) if isinstance(v, Path | Load) else v for k, v in vars(args).items()},
        started=time.strftime("%Y-%m-%d %H:%M %Z"),
        machine=machine_facts("gdnsd", "dnsperf"),
        mix=describe_mix(questions),
    )
    res.args["load"] = args.load.label()
    print(
        f"pinedge dns benchmark: {len(questions):,} queries; {res.machine.cpus} CPUs; "
        f"load {' '.join(res.machine.loadavg)}; temp dir {tmp}",
        flush=True,
    )
    for other in res.machine.other_benchmarks:
        print(f"  ! also running: {other}", flush=True)
    return questions, data, res


def measure(args: argparse.Namespace, tmp: Path, tools: dict[str, str]) -> Results:
    questions, data, res = prepare(args, tmp)
    if not args.no_throughput:
        throughput(res, args, tools, tmp, data)
        res.in_process = measure_in_process(questions, tmp)
    if not args.no_failover:
        before = other_benchmarks()
        res.failover = run_failover(tmp, args.failover_rounds, ["stop", "hang"])
        res.failover_others = sorted(set(before) | set(other_benchmarks()))
    res.after = {"loadavg": loadavg(), "other_benchmarks": other_benchmarks()}
    return res


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    found: list[Results] = []

    def body(tmp: Path) -> None:
        tools = {
            "dnsperf": ensure_tool("dnsperf", "dnsperf"),
            "gdnsd": ensure_tool("gdnsd", "gdnsd"),
        }
        res = measure(args, tmp, tools)
        found.append(res)
        for line in targets(res)[2:]:
            if line:
                print(line)
        if args.md:
            report = Report(echo=False)
            write_report(report, res)
            report.write(args.md)
            print(f"wrote {args.md}")

    return session.run(
        body,
        prefix="pinedge-bench-dns-",
        keep=args.keep,
        json_path=args.json,
        results=lambda: asdict(found[0]) if found else None,
        failed="bench/geodns.py",
    )


if __name__ == "__main__":
    sys.exit(main())
