"""Malformed and hostile packets against the real `pinedge dns` command.

A corpus of broken queries goes to one running server over UDP: each is
answered with the rcode it deserves (FORMERR, NOTIMP, ...) or deliberately
dropped, and after each the server still answers a good query. Then a fuzz
(hypothesis): random bytes, mutated valid queries and queries for names of any
bytes. The rule a client can count on: a packet of at least a header (12
bytes) with QR clear is answered, with its ID; a shorter one or a response is
dropped (and counted in /metrics).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from support import GEOIP, free_port

HOST = "127.0.0.1"
CITY = GEOIP / "GeoLite2-City-Test.mmdb"

CONFIG = f"""
geoip = "{CITY}"
rrl_rate = 0

[[zones]]
name = "cdn.test."
[[zones.records]]
name = "www"
type = "A"
value = "192.0.2.1"
[[zones.records]]
name = "alias"
type = "CNAME"
value = "www"
[[zones.steered]]
name = "img"
failover = "img.othercdn.test."

[[pops]]
name = "lon"
latitude = 51.5
longitude = -0.13
addresses = ["198.51.100.1", "2001:db8:1::1"]
[[pops]]
name = "tok"
latitude = 35.7
longitude = 139.7
addresses = ["198.51.100.31"]
"""


@dataclass(repr=False)
class Node:
    process: subprocess.Popen[bytes]
    port: int
    admin: str
    sock: socket.socket
    serial: int = 0

    def __repr__(self) -> str:
        return f"Node(port={self.port})"

    def send(self, packet: bytes) -> None:
        self.sock.send(packet)

    def receive(self, timeout: float = 2.0) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65535)
        except TimeoutError:
            return None

    def good_query(self) -> bytes:
        """A valid query with an ID of its own."""
        self.serial = (self.serial + 1) % 0x10000
        return dns.message.make_query("www.cdn.test.", "A", id=self.serial).to_wire()

    def assert_still_answering(self, why: object) -> None:
        """The next reply to come is the answer to a good query sent now (so the
        packet before it got no reply, or got it already)."""
        good = self.good_query()
        self.send(good)
        reply = self.receive()
        assert self.process.poll() is None, f"the server exited after {why!r}"
        assert reply is not None, f"no answer to a good query after {why!r}"
        assert reply[:2] == good[:2], f"a reply to {why!r} came after all"
        response = dns.message.from_wire(reply)
        assert [str(x) for a in response.answer for x in a] == ["192.0.2.1"]

    def metrics(self) -> str:
        with urllib.request.urlopen(self.admin + "/metrics", timeout=5) as response:
            return response.read().decode()

    def dropped(self, reason: str) -> float:
        found = re.search(
            rf'^pinedge_dns_dropped_total{{reason="{re.escape(reason)}"}} (\S+)$',
            self.metrics(),
            re.M,
        )
        return float(found.group(1)) if found else 0.0


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One `pinedge dns` process for the whole file."""
    config = tmp_path_factory.mktemp("dns") / "dns.toml"
    config.write_text(CONFIG)
    port, admin = free_port(udp=True), free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in ("PINEDGE_ADMIN_TOKEN", "PINEDGE_CONFIG")
    }
    process = subprocess.Popen(
        [
            sys.executable, "-m", "pinedge", "dns", "--config", str(config),
            "--listen", f"{HOST}:{port}", "--admin", f"{HOST}:{admin}",
        ],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((HOST, port))
    node = Node(process, port, f"http://{HOST}:{admin}", sock)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, "pinedge dns exited"
            assert time.monotonic() < deadline, "pinedge dns did not answer within 20s"
            try:
                node.metrics()
            except OSError:
                time.sleep(0.1)
                continue
            good = node.good_query()
            node.send(good)
            if node.receive(0.5) is not None:
                break
        yield node
    finally:
        sock.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(20)


# ── building packets ─────────────────────────────────────────────────────────

IDENT = 0xBEEF


def header(
    *, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0, ident: int = IDENT
) -> bytes:
    return struct.pack("!HHHHHH", ident, flags, qd, an, ns, ar)


def name(*labels: bytes) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


WWW = name(b"www", b"cdn", b"test")
IN_A = struct.pack("!HH", 1, 1)
QUESTION = WWW + IN_A


def opt(
    rdata: bytes = b"", *, owner: bytes = b"\x00", ttl: int = 0, size: int | None = None
) -> bytes:
    """An OPT record; `size` overrides its RDLENGTH."""
    length = len(rdata) if size is None else size
    return owner + struct.pack("!HHIH", 41, 1232, ttl, length) + rdata


def ecs(body: bytes) -> bytes:
    return struct.pack("!HH", 8, len(body)) + body


LABELS_255 = name(b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 62)[:-1]  # no root: 255 bytes


def with_opt(*records: bytes) -> bytes:
    return header(ar=len(records)) + QUESTION + b"".join(records)


# ── the corpus ───────────────────────────────────────────────────────────────

FORMERR, NOTIMP, REFUSED, BADVERS = (
    dns.rcode.FORMERR,
    dns.rcode.NOTIMP,
    dns.rcode.REFUSED,
    dns.rcode.BADVERS,
)

ANSWERED: dict[str, tuple[bytes, int]] = {
    "header only": (header(), FORMERR),
    "a name cut short": (header() + b"\x03www\x03cd", FORMERR),
    "a label running past the end": (header() + b"\x3fwww", FORMERR),
    "no type and class after the name": (header() + WWW + b"\x00", FORMERR),
    "a pointer to itself": (header() + b"\xc0\x0c" + IN_A, FORMERR),
    "two pointers at each other": (header() + b"\xc0\x0e\xc0\x0c" + IN_A, FORMERR),
    "a label and a pointer back to it, forever": (header() + b"\x01a\xc0\x0c" + IN_A, FORMERR),
    "a forward pointer": (header() + b"\xc0\x12" + IN_A + WWW, FORMERR),
    "a pointer cut short": (header() + b"\x03www\xc0", FORMERR),
    "QDCOUNT 0": (header(qd=0), FORMERR),
    "QDCOUNT 0 with a question": (header(qd=0) + QUESTION, FORMERR),
    "QDCOUNT 2, the second missing": (header(qd=2) + QUESTION, FORMERR),
    "QDCOUNT 2 with two questions": (header(qd=2) + QUESTION * 2, FORMERR),
    "two OPT records": (with_opt(opt(), opt()), FORMERR),
    "OPT RDLENGTH past the end": (with_opt(opt(b"\x00\x08", size=40)), FORMERR),
    "OPT owner not the root": (with_opt(opt(owner=name(b"www"))), FORMERR),
    "OPT owner a pointer to the question": (with_opt(opt(owner=b"\xc0\x0c")), FORMERR),
    "an additional record cut short": (header(ar=1) + QUESTION + b"\x00\x00\x29", FORMERR),
    "ARCOUNT 1 and no record": (header(ar=1) + QUESTION, FORMERR),
    "ANCOUNT 1 and no record": (header(an=1) + QUESTION, FORMERR),
    "an EDNS option cut short": (with_opt(opt(b"\x00\x08\x00")), FORMERR),
    "an EDNS option past the OPT record": (
        with_opt(opt(struct.pack("!HH", 8, 10) + b"\x00\x01")),
        FORMERR,
    ),
    "ECS family 3": (with_opt(opt(ecs(struct.pack("!HBB", 3, 24, 0) + b"\x0a\x00\x00"))), FORMERR),
    "ECS source /33": (with_opt(opt(ecs(struct.pack("!HBB", 1, 33, 0) + bytes(5)))), FORMERR),
    "ECS source /200 for IPv6": (
        with_opt(opt(ecs(struct.pack("!HBB", 2, 200, 0) + bytes(25)))),
        FORMERR,
    ),
    "ECS address too long": (
        with_opt(opt(ecs(struct.pack("!HBB", 1, 8, 0) + b"\x0a\x00"))),
        FORMERR,
    ),
    "ECS address too short": (with_opt(opt(ecs(struct.pack("!HBB", 1, 32, 0) + b"\x0a"))), FORMERR),
    "ECS bits beyond the prefix": (
        with_opt(opt(ecs(struct.pack("!HBB", 1, 4, 0) + b"\x0f"))),
        FORMERR,
    ),
    "ECS with a scope": (
        with_opt(opt(ecs(struct.pack("!HBB", 1, 24, 24) + b"\x0a\x00\x00"))),
        FORMERR,
    ),
    "ECS of 2 bytes": (with_opt(opt(ecs(b"\x00\x01"))), FORMERR),
    "a name of 257 bytes": (header() + name(*[b"a" * 63] * 4) + IN_A, FORMERR),
    "a name over 255 bytes through a pointer into the header": (
        header() + LABELS_255 + b"\xc0\x05" + IN_A,  # offset 5 reads as the label "\x00"
        FORMERR,
    ),
    "a label of type 0x40": (header() + b"\x41a" + IN_A, FORMERR),
    "a label of type 0x80": (header() + b"\x81a" + IN_A, FORMERR),
    "trailing garbage after the question": (header() + QUESTION + b"garbage", FORMERR),
    "trailing garbage after the OPT record": (with_opt(opt()) + b"\x00", FORMERR),
    "QTYPE OPT": (header() + WWW + struct.pack("!HH", 41, 1), FORMERR),
    "EDNS version 1": (with_opt(opt(ttl=1 << 16)), BADVERS),
    "opcode STATUS": (header(flags=0x1100) + QUESTION, NOTIMP),
    "opcode 15 with a broken name": (header(flags=0x7900) + b"\x03ww", NOTIMP),
    "class CHAOS": (header() + WWW + struct.pack("!HH", 16, 3), REFUSED),
    "a name of exactly 255 bytes": (
        header() + name(b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 61) + IN_A,
        REFUSED,
    ),
}

DROPPED: dict[str, tuple[bytes, str]] = {
    "one byte": (b"\x00", "shorter than a header"),
    "eleven bytes": (header()[:11], "shorter than a header"),
    "an empty datagram": (b"", "shorter than a header"),
    "a response (QR set)": (header(flags=0x8180) + QUESTION, "a response, not a query"),
    "a response with a broken name": (header(flags=0x8000) + b"\x3f", "a response, not a query"),
}


@pytest.mark.parametrize(("packet", "rcode"), ANSWERED.values(), ids=ANSWERED.keys())
def test_a_malformed_query_is_answered_with_its_rcode_and_the_server_goes_on(
    node: Node, packet: bytes, rcode: int
) -> None:
    node.send(packet)
    reply = node.receive()

    assert reply is not None, "no answer"
    response = dns.message.from_wire(reply)
    assert response.id == IDENT and response.flags & dns.flags.QR
    assert response.rcode() == rcode, dns.rcode.to_text(response.rcode())
    assert response.answer == [] and not response.flags & dns.flags.AA
    assert response.opcode() == (struct.unpack("!H", packet[2:4])[0] >> 11) & 0xF
    node.assert_still_answering(packet)


def test_formerr_after_the_question_keeps_the_question_and_echoes_edns(node: Node) -> None:
    node.send(with_opt(opt(ecs(struct.pack("!HBB", 3, 24, 0) + b"\x0a\x00\x00"))))
    reply = node.receive()

    assert reply is not None, "no answer"
    response = dns.message.from_wire(reply)

    assert response.rcode() == FORMERR
    assert [q.name for q in response.question] == [dns.name.from_text("www.cdn.test.")]
    assert response.edns == 0 and list(response.options) == []


@pytest.mark.parametrize(("packet", "reason"), DROPPED.values(), ids=DROPPED.keys())
def test_a_packet_that_is_no_query_is_dropped_and_counted(
    node: Node, packet: bytes, reason: str
) -> None:
    before = node.dropped(reason)

    node.send(packet)
    node.assert_still_answering(packet)

    assert node.dropped(reason) == before + 1


# ── fuzz ─────────────────────────────────────────────────────────────────────

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    derandomize=True,
    phases=(Phase.explicit, Phase.generate),  # shrinking against a live server is slow
    suppress_health_check=[HealthCheck.too_slow],
)


def answered_or_dropped(node: Node, packet: bytes) -> bytes | None:
    """Send `packet`: one with a full header and QR clear must be answered with
    its ID, any other gets no reply. Then a good query is answered."""
    node.send(packet)
    if len(packet) >= 12 and not packet[2] & 0x80:
        reply = node.receive()
        assert reply is not None, f"no answer to {packet!r}"
        assert reply[:2] == packet[:2] and reply[2] & 0x80, (packet, reply)
        dns.message.from_wire(reply)  # well-formed
    else:
        reply = None
    node.assert_still_answering(packet)
    return reply


@FUZZ
@given(packet=st.binary(max_size=600))
def test_random_bytes_are_answered_or_dropped_and_the_server_goes_on(
    node: Node, packet: bytes
) -> None:
    answered_or_dropped(node, packet)


SEEDS = [
    dns.message.make_query("www.cdn.test.", "A").to_wire(),
    dns.message.make_query("img.cdn.test.", "AAAA", want_dnssec=True).to_wire(),
    dns.message.make_query(
        "ImG.cDn.TeSt.", "A", use_edns=0, options=[dns.edns.ECSOption("81.2.69.142", 32)]
    ).to_wire(),
    dns.message.make_query(
        "img.cdn.test.", "A", use_edns=0, options=[dns.edns.ECSOption("2001:218::", 48)]
    ).to_wire(),
    dns.message.make_query("alias.cdn.test.", "ANY", use_edns=0, payload=4096).to_wire(),
    dns.message.make_query("nope.cdn.test.", "TXT").to_wire(),
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    packet = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite"]))
        at = draw(st.integers(0, max(len(packet) - 1, 0)))
        if kind == "flip" and packet:
            packet[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del packet[at:]
        elif kind == "insert":
            packet[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del packet[at : at + draw(st.integers(1, 8))]
        elif kind == "overwrite" and packet:
            packet[at] = draw(st.integers(0, 255))
    return bytes(packet)


@pytest.mark.slow
@FUZZ
@given(packet=mutated())
def test_mutated_queries_are_answered_or_dropped_and_the_server_goes_on(
    node: Node, packet: bytes
) -> None:
    answered_or_dropped(node, packet)


labels = st.binary(min_size=1, max_size=63)


@pytest.mark.slow
@FUZZ
@given(
    prefix=st.lists(labels, max_size=3),
    under=st.sampled_from([(b"cdn", b"test"), (b"CdN", b"tEsT"), (b"img", b"cdn", b"test"), ()]),
    qtype=st.sampled_from([1, 2, 5, 6, 16, 28, 15, 255, 65, 1234]),
)
def test_a_query_for_a_name_of_any_bytes_is_answered_for_that_name(
    node: Node, prefix: list[bytes], under: tuple[bytes, ...], qtype: int
) -> None:
    qname = name(*prefix, *under)
    if len(qname) > 255:
        return
    packet = header() + qname + struct.pack("!HH", qtype, 1)

    reply = answered_or_dropped(node, packet)

    assert reply is not None
    assert reply[12 : 12 + len(qname)] == qname
    response = dns.message.from_wire(reply)
    assert response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.REFUSED)
    for rrset in response.answer:
        assert rrset.name == response.question[0].name, (qname, str(rrset))
