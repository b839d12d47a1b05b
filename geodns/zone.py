"""The zones this server is authoritative for, and what a name and type find there.

`Zones.find(name, qtype)` says what to answer, without the geo part: REFUSED
outside every zone, the records of the name, NODATA (the name exists, not the
type), NXDOMAIN, or STEERED for a name whose addresses depend on the client
(steer.py fills those in). Negative answers carry the zone's SOA (RFC 2308).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from dnslib import AAAA, CNAME, NS, QTYPE, RD, RR, SOA, TXT, A, DNSLabel

from pinedge.geodns.config import DnsConfig, SteeredConfig, ZoneConfig, absolute

RDATA = {"A": A, "AAAA": AAAA, "CNAME": CNAME, "TXT": TXT, "NS": NS}
TYPE_ANY = 255
RFC8482 = RD(b"\x07RFC8482\x00")  # HINFO "RFC8482" "": the answer to ANY (RFC 8482)


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
    """A zone, its names in wire form (lower case), so that a dot inside a label
    is never taken for a label boundary."""

    apex: bytes
    soa: RR
    negative_ttl: int
    records: dict[bytes, dict[int, list[RR]]]
    steered: dict[bytes, SteeredConfig]
    names: set[bytes]  # every owner name and the empty non-terminals above them

    @classmethod
    def build(cls, config: ZoneConfig, steered_ttl: int) -> Zone:
        apex_text = config.name
        apex = to_wire(apex_text)
        records: dict[bytes, dict[int, list[RR]]] = {}

        def add(owner: str, rtype: str, value: str, ttl: int) -> None:
            if rtype in ("CNAME", "NS"):
                rdata = RDATA[rtype](absolute(value, apex_text))
            elif rtype == "TXT":
                # One character-string holds 255 bytes at most: longer text
                # (a DKIM key) is split into several, as zone files do.
                raw = value.encode()
                rdata = TXT([raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""])
            else:
                rdata = RDATA[rtype](value)
            record = RR(owner, getattr(QTYPE, rtype), rdata=rdata, ttl=ttl)
            key = to_wire(owner)
            records.setdefault(key, {}).setdefault(getattr(QTYPE, rtype), []).append(record)

        soa = RR(
            apex_text,
            QTYPE.SOA,
            rdata=SOA(
                absolute(config.primary, apex_text),
                absolute(config.hostmaster, apex_text),
                (config.serial, 3600, 600, 604800, config.negative_ttl),
            ),
            ttl=config.ttl,
        )
        records.setdefault(apex, {})[QTYPE.SOA] = [soa]
        for server in config.ns:
            add(apex_text, "NS", server, config.ttl)
        for record in config.records:
            ttl = config.ttl if record.ttl is None else record.ttl
            add(absolute(record.name, apex_text), record.type, record.value, ttl)
        steered = {}
        for name in config.steered:
            if name.ttl is None:
                name.ttl = steered_ttl
            steered[to_wire(absolute(name.name, apex_text))] = name
        for owner, types in records.items():
            if QTYPE.CNAME in types and len(types) > 1:
                raise ValueError(f"{owner!r}: a CNAME cannot sit beside other records")
        for owner in [*records, *steered]:
            if not _within(owner, apex):
                raise ValueError(f"{from_wire(owner)} is outside its zone {apex_text}")
        clash = set(steered) & set(records)
        if clash:
            clashing = sorted(from_wire(name) for name in clash)
            raise ValueError(f"steered names cannot also have records: {clashing}")
        names: set[bytes] = set()
        for owner in [*records, *steered]:
            position = 0
            while len(owner) - position >= len(apex):
                names.add(owner[position:])
                position += owner[position] + 1
        return cls(apex, soa, config.negative_ttl, records, steered, names)

    def negative_soa(self) -> RR:
        """The SOA for a negative answer: its ttl is the lesser of the SOA's own
        and its MINIMUM field (RFC 2308 §3)."""
        soa = self.soa
        return RR(soa.rname, QTYPE.SOA, rdata=soa.rdata, ttl=min(soa.ttl, self.negative_ttl))


class Zones:
    def __init__(self, config: DnsConfig) -> None:
        zones = [Zone.build(zone, config.steered_ttl) for zone in config.zones]
        self.zones = zones
        self.by_apex = {zone.apex: zone for zone in zones}

    def zone_of(self, name: bytes) -> Zone | None:
        """The most specific zone `name` (wire form, lower case) is in."""
        position = 0
        while position < len(name):
            zone = self.by_apex.get(name[position:])
            if zone is not None:
                return zone
            if name[position] == 0:
                return None
            position += name[position] + 1
        return None

    def find(self, name: bytes, qtype: int) -> Found:
        zone = self.zone_of(name)
        if zone is None:
            return Found(Outcome.REFUSED)
        steered = zone.steered.get(name)
        types = zone.records.get(name)
        if qtype == TYPE_ANY:
            return _any(zone, name, types, steered is not None)
        if steered is not None:
            return Found(Outcome.STEERED, zone, steered=steered)
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
                target = to_wire(str(record.rdata.label))
                for glue_type in (QTYPE.A, QTYPE.AAAA):
                    additional += zone.records.get(target, {}).get(glue_type, [])
        return Found(Outcome.ANSWER, zone, list(answers), additional)


def _any(zone: Zone, name: bytes, types: dict[int, list[RR]] | None, steered: bool) -> Found:
    """RFC 8482: a CNAME if the name has one, else one synthesised HINFO for a
    name that has records; NODATA or NXDOMAIN as for any other type."""
    if types and QTYPE.CNAME in types:
        return Found(Outcome.ANSWER, zone, list(types[QTYPE.CNAME]))
    if types or steered:
        hinfo = RR(DNSLabel(labels_of(name)), QTYPE.HINFO, rdata=RFC8482, ttl=3600)
        return Found(Outcome.ANSWER, zone, [hinfo])
    return Found(Outcome.NODATA if name in zone.names else Outcome.NXDOMAIN, zone)


def _within(name: bytes, apex: bytes) -> bool:
    position = 0
    while len(name) - position > len(apex):
        position += name[position] + 1
    return name[position:] == apex


def to_wire(name: str) -> bytes:
    """An absolute text name (ASCII, from the config) in lower-case wire form."""
    parts = [part for part in name.lower().rstrip(".").split(".") if part]
    out = b""
    for part in parts:
        raw = part.encode("ascii")
        if len(raw) > 63:
            raise ValueError(f"{name!r}: a label longer than 63 bytes")
        out += bytes([len(raw)]) + raw
    if len(out) + 1 > 255:
        raise ValueError(f"{name!r}: a name longer than 255 bytes")
    return out + b"\x00"


def from_wire(name: bytes) -> str:
    return ".".join(label.decode("ascii", "replace") for label in labels_of(name)) + "."


def labels_of(name: bytes) -> list[bytes]:
    labels = []
    position = 0
    while name[position]:
        size = name[position]
        labels.append(name[position + 1 : position + 1 + size])
        position += 1 + size
    return labels
