"""The GeoDNS server's settings: what `pinedge dns --config FILE` reads.

Zones hold ordinary records and *steered* names; POPs are the edge locations a
steered name answers with. Names in the file may be absolute (`ns1.cdn.test.`)
or relative to their zone (`ns1`, `@` for the apex).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from pinedge.core.config import duration_field, hostport_field, setting

RECORD_TYPES = ("A", "AAAA", "CNAME", "TXT", "NS")


def absolute(name: str, zone: str) -> str:
    """`name` as a lower-case absolute name in `zone` ("@" is the zone itself)."""
    name = name.strip().lower()
    if name in ("@", ""):
        return zone
    if name.endswith("."):
        return name
    return f"{name}." if zone == "." else f"{name}.{zone}"


@dataclass(kw_only=True)
class RecordConfig:
    name: str = setting(doc="owner name, relative to the zone or absolute")
    type: Literal["A", "AAAA", "CNAME", "TXT", "NS"] = setting(doc="record type")
    value: str = setting(doc="address, target name or text")
    ttl: int | None = setting(None, doc="seconds (default: the zone's ttl)")

    def __post_init__(self) -> None:
        if self.type == "A":
            ipaddress.IPv4Address(self.value)
        elif self.type == "AAAA":
            ipaddress.IPv6Address(self.value)


@dataclass(kw_only=True)
class SteeredConfig:
    name: str = setting(doc="owner name answered with the nearest healthy POP's addresses")
    pops: list[str] = setting([], doc="POPs it may answer with (default: all)")
    ttl: int | None = setting(None, doc="seconds (default: steered_ttl)")
    failover: str | None = setting(
        None, doc="CNAME target (another CDN) when none of its POPs is healthy"
    )
    max_answers: int = setting(2, doc="addresses per answer at most")
    offload: float = setting(
        0.0,
        doc="share of client networks sent to the failover CDN even when POPs are "
        "healthy (multi-CDN by weight), 0 to 1",
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.offload <= 1.0:
            raise ValueError(f"steered {self.name}: offload must be between 0 and 1")
        if self.offload and not self.failover:
            raise ValueError(f"steered {self.name}: offload needs a failover name")


@dataclass(kw_only=True)
class ZoneConfig:
    name: str = setting(doc="the zone's apex, e.g. cdn.example.")
    ttl: int = setting(300, doc="default ttl of its records")
    primary: str = setting("ns1", doc="SOA MNAME")
    hostmaster: str = setting("hostmaster", doc="SOA RNAME (as a name)")
    serial: int = setting(1, doc="SOA serial")
    negative_ttl: int = setting(60, doc="SOA MINIMUM: how long NXDOMAIN and NODATA are cached")
    ns: list[str] = setting(["ns1"], doc="the zone's name servers")
    records: list[RecordConfig] = setting([], doc="[[zones.records]]: name, type, value, ttl")
    steered: list[SteeredConfig] = setting(
        [], doc="[[zones.steered]]: name, pops, ttl, failover, max_answers"
    )

    def __post_init__(self) -> None:
        self.name = absolute(self.name, ".")
        if self.name == ".":
            raise ValueError("name: a zone cannot be the root")
        if not self.name.isascii():
            raise ValueError(f"name: {self.name!r}: write names in ASCII (IDNA: xn--)")


@dataclass(kw_only=True)
class PopConfig:
    name: str = setting(doc="a short name, e.g. ams")
    region: str = setting("", doc="a region name the override file may name")
    latitude: float = setting(doc="degrees north")
    longitude: float = setting(doc="degrees east")
    addresses: list[str] = setting([], doc="IPv4 and IPv6 addresses of its edges")
    weight: int = setting(1, doc="share among POPs about as near (1-100)")
    health: str | None = setting(None, doc="URL probed for health, e.g. http://a:8081/readyz")

    def __post_init__(self) -> None:
        if not -90 <= self.latitude <= 90 or not -180 <= self.longitude <= 180:
            raise ValueError(f"pop {self.name}: latitude or longitude out of range")
        for address in self.addresses:
            ipaddress.ip_address(address)
        if not self.addresses:
            raise ValueError(f"pop {self.name}: give at least one address")
        if not 1 <= self.weight <= 100:
            raise ValueError(f"pop {self.name}: weight must be between 1 and 100")


@dataclass(kw_only=True)
class DnsConfig:
    listen: str = hostport_field("127.0.0.1:5353", doc="HOST:PORT for UDP and TCP queries")
    admin: str = hostport_field(
        "127.0.0.1:9153", doc="HOST:PORT for /healthz, /metrics, health verdicts (keep it private)"
    )
    workers: int = setting(1, doc="processes answering on the same port (SO_REUSEPORT)")
    zones: list[ZoneConfig] = setting([], doc="[[zones]] tables")
    pops: list[PopConfig] = setting([], doc="[[pops]] tables: the edge locations")
    geoip: str | None = setting(None, doc="a MaxMind-format .mmdb database (City or Country)")
    overrides: str | None = setting(
        None, doc="a file of 'CIDR REGION' lines that win over the database"
    )
    near_km: float = setting(
        500.0, doc="POPs within this much of the nearest share the answers by weight"
    )
    steered_ttl: int = setting(30, doc="ttl of steered answers, seconds")
    udp_payload: int = setting(1232, doc="largest UDP answer with EDNS (RFC 6891 default 1232)")
    tcp_idle: float = duration_field("10s", doc="TCP connections idle this long are closed")
    probe_interval: float = duration_field("2s", doc="how often each POP's health URL is probed")
    probe_timeout: float = duration_field("1s", doc="a probe slower than this has failed")
    rise: int = setting(2, doc="probes in a row that bring a POP up")
    fall: int = setting(2, doc="probes in a row that take a POP down")
    rrl_rate: int = setting(
        200, doc="answers per second to one client prefix before rate limiting (0: off)"
    )
    rrl_slip: int = setting(2, doc="of the limited answers, every Nth is sent truncated (TC)")
    query_log: bool = setting(False, doc="log every query (costs throughput)")
    admin_token: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        import os

        if not self.zones:
            raise ValueError("zones: give at least one [[zones]] table")
        if not 1 <= self.workers <= 64:
            raise ValueError("workers: must be between 1 and 64")
        if not 512 <= self.udp_payload <= 4096:
            raise ValueError("udp_payload: must be between 512 and 4096")
        names = [pop.name for pop in self.pops]
        if len(set(names)) != len(names):
            raise ValueError("pops: two POPs have the same name")
        for zone in self.zones:
            for steered in zone.steered:
                unknown = set(steered.pops) - set(names)
                if unknown:
                    raise ValueError(f"steered {steered.name}: unknown pops {sorted(unknown)}")
            if zone.steered and not self.pops:
                raise ValueError(f"zone {zone.name}: steered names need [[pops]]")
        if self.rise < 1 or self.fall < 1:
            raise ValueError("rise and fall: must be at least 1")
        self.admin_token = os.environ.get("PINEDGE_ADMIN_TOKEN") or None
