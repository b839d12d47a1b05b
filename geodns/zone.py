"""The zones this server is authoritative for, and what a name and type find there.

`Zones.find(name, qtype)` says what to answer, without the geo part: REFUSED
outside every zone, the records of the name, NODATA (the name exists, not the
type), NXDOMAIN, or STEERED for a name whose addresses depend on the client
(steer.py fills those in). Negative answers carry the zone's SOA (RFC 2308).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from dnslib import AAAA, CNAME, NS, QTYPE, RR, SOA, TXT, A, DNSLabel

from pinedge.geodns.config import DnsConfig, SteeredConfig, ZoneConfig, absolute

RDATA = {"A": A, "AAAA": AAAA, "CNAME": CNAME, "TXT": TXT, "NS": NS}


class Outcome(enum.Enum):
    ANSWER = "answer"
    NODATA = "nodata"
    NXDOMAIN = "nxdomain"
    STEERED = "steered"
    REFUSED = "refused"


@dataclass(slots=True)
class Found:
    outcome: Outcome
    zone: Zone | None = None
    answers: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)
    steered: SteeredConfig | None = None


@dataclass(slots=True)
class Zone:
    apex: str
    soa: RR
    negative_ttl: int
    records: dict[str, dict[int, list[RR]]]
    steered: dict[str, SteeredConfig]
    names: set[str]  # every owner name and the empty non-terminals above them

    @classmethod
    def build(cls, config: ZoneConfig, steered_ttl: int) -> Zone:
        apex = config.name
        records: dict[str, dict[int, list[RR]]] = {}

        def add(name: str, rtype: str, value: str, ttl: int) -> None:
            if rtype in ("CNAME", "NS"):
                rdata = RDATA[rtype](absolute(value, apex))
            else:
                rdata = RDATA[rtype](value)
            record = RR(name, getattr(QTYPE, rtype), rdata=rdata, ttl=ttl)
            records.setdefault(name, {}).setdefault(getattr(QTYPE, rtype), []).append(record)

        soa = RR(
            apex,
            QTYPE.SOA,
            rdata=SOA(
                absolute(config.primary, apex),
                absolute(config.hostmaster, apex),
                (config.serial, 3600, 600, 604800, config.negative_ttl),
            ),
            ttl=config.ttl,
        )
        records.setdefault(apex, {})[QTYPE.SOA] = [soa]
        for server in config.ns:
            add(apex, "NS", server, config.ttl)
        for record in config.records:
            add(absolute(record.name, apex), record.type, record.value, record.ttl or config.ttl)
        steered = {}
        for name in config.steered:
            owner = absolute(name.name, apex)
            if name.ttl is None:
                name.ttl = steered_ttl
            steered[owner] = name
        for owner, types in records.items():
            if QTYPE.CNAME in types and len(types) > 1:
                raise ValueError(f"{owner}: a CNAME cannot sit beside other records")
            if not owner.endswith(apex):
                raise ValueError(f"{owner} is outside its zone {apex}")
        clash = set(steered) & set(records)
        if clash:
            raise ValueError(f"steered names cannot also have records: {sorted(clash)}")
        names: set[str] = set()
        for owner in [*records, *steered]:
            labels = owner.split(".")
            for index in range(len(labels)):
                suffix = ".".join(labels[index:])
                if suffix.endswith(apex) or suffix == apex:
                    names.add(suffix)
        return cls(apex, soa, config.negative_ttl, records, steered, names)

    def negative_soa(self) -> RR:
        """The SOA for a negative answer: its ttl is the lesser of the SOA's own
        and its MINIMUM field (RFC 2308 §3)."""
        soa = self.soa
        return RR(soa.rname, QTYPE.SOA, rdata=soa.rdata, ttl=min(soa.ttl, self.negative_ttl))


class Zones:
    def __init__(self, config: DnsConfig) -> None:
        self.zones = [Zone.build(zone, config.steered_ttl) for zone in config.zones]
        # Longest apex first: a name belongs to the most specific zone.
        self.zones.sort(key=lambda zone: len(zone.apex), reverse=True)

    def zone_of(self, name: str) -> Zone | None:
        for zone in self.zones:
            if name == zone.apex or name.endswith("." + zone.apex):
                return zone
        return None

    def find(self, name: str, qtype: int) -> Found:
        zone = self.zone_of(name)
        if zone is None:
            return Found(Outcome.REFUSED)
        steered = zone.steered.get(name)
        if steered is not None:
            return Found(Outcome.STEERED, zone, steered=steered)
        types = zone.records.get(name)
        if types is None:
            return Found(Outcome.NODATA if name in zone.names else Outcome.NXDOMAIN, zone)
        if QTYPE.CNAME in types and qtype != QTYPE.CNAME:
            return Found(Outcome.ANSWER, zone, list(types[QTYPE.CNAME]))
        answers = types.get(qtype)
        if not answers:
            return Found(Outcome.NODATA, zone)
        additional = []
        if qtype == QTYPE.NS:  # glue for name servers inside the zone
            for record in answers:
                target = str(record.rdata.label).lower()
                for glue_type in (QTYPE.A, QTYPE.AAAA):
                    additional += zone.records.get(target, {}).get(glue_type, [])
        return Found(Outcome.ANSWER, zone, list(answers), additional)


def label(name: bytes) -> str:
    """A wire-form name (uncompressed) as a lower-case absolute text name."""
    return str(DNSLabel([part for part in _labels(name)])).lower() or "."


def _labels(name: bytes) -> list[bytes]:
    labels = []
    position = 0
    while name[position]:
        size = name[position]
        labels.append(name[position + 1 : position + 1 + size])
        position += 1 + size
    return labels
