"""Where a client is, and which POP should answer it.

The location comes from the override file (CIDR -> region, longest prefix
first) or the MaxMind-format database (coordinates of a City database; a
Country database gives no coordinates). The POP is the nearest healthy one by
great-circle distance; POPs within `near_km` of that distance share clients by
weight, each client network always getting the same one (weighted rendezvous
hashing), so answers stay stable. The prefix that decided the location is the
scope of an EDNS Client Subnet answer (RFC 7871 §7.2.1).
"""

from __future__ import annotations

import ipaddress
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import maxminddb

from pinedge.geodns.config import PopConfig, SteeredConfig

EARTH_KM = 6371.0
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class OverrideError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Location:
    latitude: float | None
    longitude: float | None
    region: str | None  # from the override file
    prefix: int  # how many leading bits of the address decided it (0: nothing did)
    country: str | None = None


NOWHERE = Location(None, None, None, 0)


def read_overrides(path: str) -> list[tuple[Network, str]]:
    """'CIDR REGION' lines ('#' starts a comment), most specific first."""
    entries = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        if len(parts) != 2:
            raise OverrideError(f"{path}:{number}: expected 'CIDR REGION', got {line!r}")
        try:
            network = ipaddress.ip_network(parts[0], strict=False)
        except ValueError as exc:
            raise OverrideError(f"{path}:{number}: {exc}") from None
        entries.append((network, parts[1]))
    entries.sort(key=lambda entry: entry[0].prefixlen, reverse=True)
    return entries


class Locator:
    def __init__(self, database: str | None, overrides: str | None) -> None:
        self.reader = maxminddb.open_database(database) if database else None
        self.overrides = read_overrides(overrides) if overrides else []

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()

    def locate(self, address: Address) -> Location:
        for network, region in self.overrides:
            if address.version == network.version and address in network:
                return Location(None, None, region, network.prefixlen)
        if self.reader is None:
            return NOWHERE
        try:
            record, prefix = self.reader.get_with_prefix_len(address)
        except ValueError:  # an IPv6 address in an IPv4-only database
            return NOWHERE
        if not isinstance(record, dict):
            return Location(None, None, None, prefix)
        where: Any = record.get("location") or {}  # maxminddb types a record's values as a union
        country_record: Any = record.get("country") or {}
        country = country_record.get("iso_code")
        return Location(where.get("latitude"), where.get("longitude"), None, prefix, country)


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlambda = phi2 - phi1, math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return 2 * EARTH_KM * math.asin(math.sqrt(min(1.0, a)))


@dataclass(frozen=True, slots=True)
class Choice:
    """A steered answer: the POP and its addresses, or a CNAME to fail over to."""

    pop: PopConfig | None
    failover: str | None = None


class Steering:
    def __init__(self, pops: list[PopConfig], near_km: float) -> None:
        self.pops = {pop.name: pop for pop in pops}
        self.near_km = near_km
        self.healthy = set(self.pops)

    def candidates(self, steered: SteeredConfig, location: Location) -> list[PopConfig] | str:
        """The POPs that may answer a client at `location` (the nearest healthy
        ones), or the CNAME target to fail over to when none of them is healthy."""
        allowed = [self.pops[name] for name in steered.pops] or list(self.pops.values())
        candidates = [pop for pop in allowed if pop.name in self.healthy]
        if not candidates:
            if steered.failover:
                return steered.failover
            candidates = allowed  # nothing better to say than where we would be
        if location.region is not None:
            in_region = [pop for pop in candidates if pop.region == location.region]
            return in_region or candidates
        if location.latitude is None or location.longitude is None:
            return candidates
        lat, lon = location.latitude, location.longitude
        distances = [
            (distance_km(lat, lon, pop.latitude, pop.longitude), pop) for pop in candidates
        ]
        nearest = min(distance for distance, _ in distances)
        return [pop for distance, pop in distances if distance <= nearest + self.near_km]

    def choose(self, steered: SteeredConfig, location: Location, client: bytes) -> Choice:
        """The answer for a client at `location`; `client` (its network) picks
        among equally near POPs."""
        near = self.candidates(steered, location)
        if isinstance(near, str):
            return Choice(None, near)
        return Choice(weighted_pick(near, client))


def weighted_pick(pops: list[PopConfig], client: bytes) -> PopConfig:
    """Weighted rendezvous hashing: the same client network gets the same POP."""
    if len(pops) == 1:
        return pops[0]

    def score(pop: PopConfig) -> float:
        digest = zlib.crc32(client + pop.name.encode()) / 0xFFFFFFFF
        return -pop.weight / math.log(max(digest, 1e-12))

    return max(pops, key=score)
