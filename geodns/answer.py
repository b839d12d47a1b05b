"""Answers, prepared once and patched per query.

An answer is built with dnslib the first time a (name, type, class, decision)
is asked, and kept as wire bytes: a full form and a truncated one (TC, the
question only). Serving it copies those bytes and patches what differs per
query: the ID, the RD and CD flags, the question's letter case (so that
0x20-randomising resolvers get their name back as sent; answer records point at
the question, so they follow) and the OPT record, appended last. The decision is
the POP for a steered name, or nothing for any other. Prepared answers are
dropped whenever zones, POPs or health change.
"""

from __future__ import annotations

import ipaddress
import zlib
from collections import Counter
from dataclasses import dataclass

from dnslib import AAAA, CNAME, QTYPE, RR, A, DNSHeader, DNSLabel, DNSQuestion, DNSRecord

from pinedge.geodns import wire
from pinedge.geodns.config import DnsConfig, PopConfig, SteeredConfig
from pinedge.geodns.steer import Address, Choice, Location, Locator, Steering, weighted_pick
from pinedge.geodns.wire import ClientSubnet, Query
from pinedge.geodns.zone import Outcome, Zones, labels_of

CLASS_IN, CLASS_ANY = 1, 255
TYPE_ANY, TYPE_AXFR, TYPE_IXFR = 255, 252, 251
COUNTS = slice(6, 12)
MAX_PREPARED = 100_000
MAX_DECISIONS = 200_000
Near = list[PopConfig] | str


@dataclass(frozen=True, slots=True)
class Prepared:
    full: bytes
    truncated: bytes
    additional: int  # ARCOUNT without the OPT record
    rcode: int
    region: str  # the POP's region for steered answers, else "-"
    pop: str  # the POP's name for steered answers, else "-"
    counted: tuple[str, str, str]  # (type, rcode, region) for the metrics


class Answerer:
    def __init__(
        self, config: DnsConfig, zones: Zones, steering: Steering, locator: Locator
    ) -> None:
        self.config = config
        self.zones = zones
        self.steering = steering
        self.locator = locator
        self.prepared: dict[tuple[bytes, int, int, str], Prepared] = {}
        self.near: dict[tuple[bytes, float | None, float | None, str | None], Near] = {}
        # (name, client or client subnet) -> (decision, choice, prefix)
        self.decisions: dict[tuple[object, ...], tuple[str, Choice, int]] = {}
        self.steered = {
            name: steered for zone in zones.zones for name, steered in zone.steered.items()
        }
        self.counts: Counter[tuple[str, str, str]] = Counter()  # (qtype, rcode, region)
        self.pop_answers: Counter[str] = Counter()

    def forget(self) -> None:
        """Drop everything prepared (health, zones or POPs changed)."""
        self.prepared.clear()
        self.near.clear()
        self.decisions.clear()

    # ── the hot path ────────────────────────────────────────────────────────

    def answer(self, query: Query, client: str, limit: int) -> bytes:
        """The answer's bytes for `query` from `client` (its address as text);
        `limit` is the largest size that may go out, beyond which it is truncated."""
        key = query.key
        steered = self.steered.get(key)
        scope = 0
        decision = ""
        choice: Choice | None = None
        if steered is not None:
            ecs = query.edns.ecs if query.edns is not None else None
            if ecs is not None and ecs.source > 0:
                asked: tuple[object, ...] = (key, ecs.family, ecs.source, ecs.address)
            else:
                asked, ecs = (key, client), None
            decided = self.decisions.get(asked)
            if decided is None:
                decided = self.decide(key, steered, ecs, client)
                if len(self.decisions) >= MAX_DECISIONS:
                    self.decisions.clear()
                self.decisions[asked] = decided
            decision, choice, prefix = decided
            if ecs is not None:
                scope = prefix
        prepared = self.prepared.get((key, query.qtype, query.qclass, decision))
        if prepared is None:
            prepared = self.prepare(query, decision, choice)
        return self.finish(query, prepared, scope, limit)

    def decide(
        self, key: bytes, steered: SteeredConfig, ecs: ClientSubnet | None, client: str
    ) -> tuple[str, Choice, int]:
        """(the decision's name, the choice, the prefix that decided it) for a
        steered name asked from `client` or for the client subnet `ecs`."""
        where = ecs.network() if ecs is not None else ipaddress.ip_address(client)
        location = self.locator.locate(where)
        choice, bits = self.choose(key, steered, location, where)
        decision = choice.failover or (choice.pop.name if choice.pop else "")
        # The scope covers every bit that decided the answer (RFC 7871 §7.2.1).
        return decision, choice, max(location.prefix, bits)

    def choose(
        self, key: bytes, steered: SteeredConfig, location: Location, where: Address
    ) -> tuple[Choice, int]:
        """The choice, and how many leading bits of the client's address picked
        it among equally near POPs (0 when there was only one)."""
        if steered.offload and steered.failover:
            # Multi-CDN by weight: this share of client networks goes elsewhere.
            network, bits = _network(where, location.prefix)
            if zlib.crc32(network + b"offload") / 0xFFFFFFFF < steered.offload:
                return Choice(None, steered.failover), bits
        near_key = (key, location.latitude, location.longitude, location.region)
        near = self.near.get(near_key)
        if near is None:
            near = self.near[near_key] = self.steering.candidates(steered, location)
        if isinstance(near, str):
            return Choice(None, near), 0
        if len(near) == 1:
            return Choice(near[0]), 0
        network, bits = _network(where, location.prefix)
        return Choice(weighted_pick(near, network)), bits

    def finish(self, query: Query, prepared: Prepared, scope: int, limit: int) -> bytes:
        edns = query.edns
        opt = b""
        if edns is not None:
            options = b""
            if edns.ecs is not None:
                options = edns.ecs.option(scope if edns.ecs.source else 0)
            extended = prepared.rcode >> 4
            opt = wire.opt_record(self.config.udp_payload, edns.do, extended, options)
        body = prepared.full
        if len(body) + len(opt) > limit:
            body = prepared.truncated
        out = bytearray(body)
        flags = (out[2] << 8) | out[3]
        flags |= query.flags & (wire.RD | wire.CD | 0x7800)  # and the opcode
        out[0:4] = bytes(
            ((query.ident >> 8) & 0xFF, query.ident & 0xFF, (flags >> 8) & 0xFF, flags & 0xFF)
        )
        out[12 : 12 + len(query.qname)] = query.qname
        if opt:
            additional = prepared.additional + 1 if body is prepared.full else 1
            out[10:12] = additional.to_bytes(2, "big")
            out += opt
        self.counts[prepared.counted] += 1
        if prepared.pop != "-":
            self.pop_answers[prepared.pop] += 1
        return bytes(out)

    # ── the slow path: building an answer the first time ───────────────────

    def prepare(self, query: Query, decision: str, choice: Choice | None) -> Prepared:
        name = DNSLabel(labels_of(query.key))
        qtype, qclass = query.qtype, query.qclass
        answers: list[RR] = []
        authority: list[RR] = []
        additional: list[RR] = []
        region = pop = "-"
        aa = True
        rcode = wire.NOERROR
        if qclass not in (CLASS_IN, CLASS_ANY):
            rcode, aa = wire.REFUSED, False
        elif qtype == wire.TYPE_OPT:
            rcode, aa = wire.FORMERR, False
        elif qtype in (TYPE_AXFR, TYPE_IXFR):
            rcode, aa = wire.REFUSED, False
        else:
            found = self.zones.find(query.key, qtype)
            zone = found.zone
            if found.outcome is Outcome.REFUSED:
                rcode, aa = wire.REFUSED, False
            elif found.outcome is Outcome.STEERED:
                assert choice is not None and found.steered is not None and zone is not None
                ttl = found.steered.ttl
                if ttl is None:
                    ttl = self.config.steered_ttl
                if choice.failover is not None:
                    answers = [RR(name, QTYPE.CNAME, rdata=CNAME(choice.failover), ttl=ttl)]
                    region = pop = "failover"
                else:
                    assert choice.pop is not None
                    region, pop = choice.pop.region or choice.pop.name, choice.pop.name
                    answers = _addresses(name, qtype, choice, found.steered.max_answers, ttl)
                    if not answers:
                        authority = [zone.negative_soa()]
            elif found.outcome is Outcome.ANSWER:
                answers, additional = found.answers, found.additional
            else:
                assert zone is not None
                authority = [zone.negative_soa()]
                if found.outcome is Outcome.NXDOMAIN:
                    rcode = wire.NXDOMAIN
        prepared = self.pack(query, rcode, aa, answers, authority, additional, region, pop)
        if len(self.prepared) >= MAX_PREPARED:
            self.prepared.clear()
        self.prepared[(query.key, qtype, qclass, decision)] = prepared
        return prepared

    def pack(
        self,
        query: Query,
        rcode: int,
        aa: bool,
        answers: list[RR],
        authority: list[RR],
        additional: list[RR],
        region: str,
        pop: str,
    ) -> Prepared:
        question = DNSQuestion(DNSLabel(labels_of(query.key)), query.qtype, query.qclass)
        # RD clear here: finish() copies the query's (dnslib would set it).
        header = DNSHeader(id=0, qr=1, aa=int(aa), rd=0, ra=0, rcode=rcode & 0xF)
        record = DNSRecord(header, q=question)
        for rr in answers:
            record.add_answer(rr)
        for rr in authority:
            record.add_auth(rr)
        for rr in additional:
            record.add_ar(rr)
        full = record.pack()
        short = DNSRecord(
            DNSHeader(id=0, qr=1, aa=int(aa), rd=0, ra=0, rcode=rcode & 0xF, tc=1), q=question
        )
        counted = (_type_name(query.qtype), _rcode_name(rcode), region)
        return Prepared(full, short.pack(), len(additional), rcode, region, pop, counted)

    def refusal(self, refused: wire.Refuse, limit: int) -> bytes | None:
        """The answer to a query parse() refused (FORMERR, NOTIMP, BADVERS)."""
        query = refused.query
        rcode = refused.rcode
        if query is None:
            header = DNSHeader(id=refused.ident, qr=1, ra=0, rcode=rcode & 0xF)
            header.opcode = (refused.flags >> 11) & 0xF
            header.rd = (refused.flags >> 8) & 1
            return DNSRecord(header).pack()
        prepared = self.pack(query, rcode, False, [], [], [], "-", "-")
        if rcode == wire.BADVERS and query.edns is not None:
            edns = query.edns
            query = Query(
                query.ident,
                query.flags,
                query.qname,
                query.qtype,
                query.qclass,
                wire.Edns(edns.payload, 0, edns.do, None),
            )
        return self.finish(query, prepared, 0, limit)


def _addresses(name: str, qtype: int, choice: Choice, most: int, ttl: int) -> list[RR]:
    assert choice.pop is not None
    out = []
    for text in choice.pop.addresses:
        address = ipaddress.ip_address(text)
        if qtype == QTYPE.A and address.version == 4:
            out.append(RR(name, QTYPE.A, rdata=A(text), ttl=ttl))
        elif qtype == QTYPE.AAAA and address.version == 6:
            out.append(RR(name, QTYPE.AAAA, rdata=AAAA(text), ttl=ttl))
    return out[:most]


def _network(address: Address, prefix: int) -> tuple[bytes, int]:
    """The client's network at the decided prefix, at least /24 (IPv4) or /48
    (IPv6), and that prefix: what picks among equally near POPs."""
    bits = max(prefix, 24 if address.version == 4 else 48)
    size = 4 if address.version == 4 else 16
    number = int(address) >> (size * 8 - bits)
    return number.to_bytes(size, "big") + bytes([bits]), bits


# Types counted by name in the metrics; any other is "other", so that odd queries
# cannot grow the metrics without bound.
_TYPES = {
    QTYPE.A,
    QTYPE.AAAA,
    QTYPE.CNAME,
    QTYPE.TXT,
    QTYPE.NS,
    QTYPE.SOA,
    QTYPE.MX,
    QTYPE.PTR,
    QTYPE.SRV,
    QTYPE.CAA,
    QTYPE.HTTPS,
    QTYPE.DS,
    QTYPE.DNSKEY,
    TYPE_ANY,
    TYPE_AXFR,
    TYPE_IXFR,
}


def _type_name(qtype: int) -> str:
    return QTYPE[qtype] if qtype in _TYPES else "other"


_RCODES = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
    16: "BADVERS",
}


def _rcode_name(rcode: int) -> str:
    return _RCODES.get(rcode, str(rcode))
