"""The GeoDNS server seen from outside: a real server on a loopback port, asked by
independent clients (dnspython, raw sockets, dig) over UDP and TCP.

Most tests start `DnsServer` in the test's event loop; the operations tests run
the real `pinedge dns` command and use its admin listener and signals. Client
locations come from MaxMind's City test database (tests/geoip) through the
client subnet option (ECS); the test's own address, 127.0.0.1, is in no
database.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import os
import re
import signal
import struct
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import dns.asyncquery
import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.update
import pytest
from aiohttp import web
from support import GEOIP, free_port, sample

from pinedge.core.config import ConfigError, build
from pinedge.geodns.config import DnsConfig
from pinedge.geodns.server import DnsServer

HOST = "127.0.0.1"
CITY = str(GEOIP / "GeoLite2-City-Test.mmdb")
TOKEN = "s3cret-dns-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

A, AAAA, TXT, CNAME = (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.TXT, dns.rdatatype.CNAME)
LONG_TEXT = [c * 200 for c in "abcdefg"]  # 200-byte TXT strings


# ── configuration ────────────────────────────────────────────────────────────


def pop(name: str, **changes: Any) -> dict[str, Any]:
    """One of four POPs: London, Seattle, Tokyo, Stockholm."""
    pops: dict[str, dict[str, Any]] = {
        "lon": {
            "region": "eu",
            "latitude": 51.5,
            "longitude": -0.13,
            "addresses": ["198.51.100.1", "198.51.100.2", "198.51.100.3", "2001:db8:1::1"],
        },
        "sea": {
            "region": "us",
            "latitude": 47.6,
            "longitude": -122.3,
            "addresses": ["198.51.100.21", "2001:db8:2::1"],
        },
        "tok": {
            "region": "asia",
            "latitude": 35.7,
            "longitude": 139.7,
            "addresses": ["198.51.100.31", "2001:db8:3::1"],
        },
        "sto": {
            "region": "eu",
            "latitude": 59.3,
            "longitude": 18.1,
            "addresses": ["198.51.100.41"],
        },
    }
    return {"name": name, **pops[name], **changes}


ALL_POPS = ["lon", "sea", "tok", "sto"]


def zone(**changes: Any) -> dict[str, Any]:
    """cdn.test.: ordinary records, an empty non-terminal (b), big TXT sets and
    steered names (img with a failover, solo on London only)."""
    records: list[dict[str, Any]] = [
        {"name": "ns1", "type": "A", "value": "192.0.2.53"},
        {"name": "ns1", "type": "AAAA", "value": "2001:db8::53"},
        {"name": "www", "type": "A", "value": "192.0.2.1"},
        {"name": "www", "type": "TXT", "value": "v=hello"},
        {"name": "v6", "type": "AAAA", "value": "2001:db8::80", "ttl": 120},
        {"name": "alias", "type": "CNAME", "value": "www"},
        {"name": "a.b", "type": "A", "value": "192.0.2.2"},
        *({"name": "big", "type": "TXT", "value": text} for text in LONG_TEXT[:4]),
        *({"name": "huge", "type": "TXT", "value": text} for text in LONG_TEXT),
    ]
    values: dict[str, Any] = {
        "name": "cdn.test.",
        "ttl": 300,
        "negative_ttl": 60,
        "serial": 2024,
        "ns": ["ns1", "ns2.elsewhere.test."],
        "records": records,
        "steered": [
            {"name": "img", "failover": "img.othercdn.test."},
            {"name": "solo", "pops": ["lon"], "ttl": 20, "max_answers": 2},
        ],
    }
    values.update(changes)
    return values


def settings(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "listen": f"{HOST}:0",
        "geoip": CITY,
        "zones": [zone(), {"name": "short.test.", "ttl": 30, "negative_ttl": 600}],
        "pops": [pop(name) for name in ALL_POPS],
        "rrl_rate": 0,  # tests of rate limiting turn it on
        "probe_interval": "0.2s",
        "probe_timeout": "2s",  # a refused connection fails at once
    }
    values.update(changes)
    return values


StartDns = Callable[..., Awaitable[DnsServer]]


@pytest.fixture
async def start_dns() -> AsyncIterator[StartDns]:
    started: list[DnsServer] = []

    async def start(**changes: Any) -> DnsServer:
        config = settings(**changes)
        for _ in range(20):
            server = DnsServer(build(DnsConfig, config))
            try:
                await server.start()
            except OSError as exc:
                # Port 0 picks a free UDP port; on a busy machine the same TCP
                # port can be some other connection's: try another.
                await server.stop()
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
            started.append(server)
            return server
        raise AssertionError("no port free for both UDP and TCP")

    yield start
    for server in reversed(started):
        await server.stop()


@pytest.fixture
async def server(start_dns: StartDns) -> DnsServer:
    return await start_dns()


# ── clients ──────────────────────────────────────────────────────────────────


def query(
    name: str, rdtype: str | int = "A", *, ecs: dns.edns.Option | None = None, **kwargs: Any
) -> dns.message.QueryMessage:
    if ecs is not None:
        kwargs.setdefault("use_edns", 0)
        kwargs["options"] = [*kwargs.get("options", []), ecs]
    return dns.message.make_query(name, rdtype, **kwargs)  # type: ignore[arg-type]  # an int too


def subnet(address: str, source: int) -> dns.edns.ECSOption:
    return dns.edns.ECSOption(address, source)


async def ask(
    port: int, message: dns.message.Message, *, tcp: bool = False, source: str = HOST
) -> dns.message.Message:
    if tcp:
        return await dns.asyncquery.tcp(message, HOST, port=port, timeout=5)
    return await dns.asyncquery.udp(message, HOST, port=port, timeout=5, source=source)


class Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.replies.put_nowait(data)


@asynccontextmanager
async def udp_socket(
    port: int, source: str = HOST
) -> AsyncIterator[tuple[asyncio.DatagramTransport, Datagrams]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        Datagrams, local_addr=(source, 0), remote_addr=(HOST, port)
    )
    try:
        yield transport, protocol
    finally:
        transport.close()


async def exchange(port: int, packet: bytes, timeout: float = 2.0) -> bytes | None:
    """Send raw bytes over UDP; the reply's bytes, or None when none came."""
    async with udp_socket(port) as (transport, protocol):
        transport.sendto(packet)
        try:
            return await asyncio.wait_for(protocol.replies.get(), timeout)
        except TimeoutError:
            return None


def raw_query(name_wire: bytes, qtype: int = 1, ident: int = 0x5151) -> bytes:
    return (
        struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + name_wire + struct.pack("!HH", qtype, 1)
    )


def wire_name(*labels: bytes) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


POP_OF = {address: name for name in ALL_POPS for address in pop(name)["addresses"]} | {
    "198.51.100.51": "lhr",
    "198.51.100.61": "mnl",
    "198.51.100.71": "ceb",
}


def addresses(response: dns.message.Message) -> set[str]:
    return {
        rdata.address for rrset in response.answer if rrset.rdtype in (A, AAAA) for rdata in rrset
    }


def pop_of(response: dns.message.Message) -> str:
    pops = {POP_OF[address] for address in addresses(response)}
    assert len(pops) == 1, f"answers from {pops or 'no POP'}: {response}"
    return pops.pop()


def scope(response: dns.message.Message) -> dns.edns.ECSOption:
    options = [o for o in response.options if o.otype == dns.edns.OptionType.ECS]
    assert len(options) == 1, response.options
    option = options[0]
    assert isinstance(option, dns.edns.ECSOption)
    return option


def is_aa(response: dns.message.Message) -> bool:
    return bool(response.flags & dns.flags.AA)


async def until(check: Callable[[], Awaitable[bool]], what: str, limit: float = 10.0) -> None:
    try:
        async with asyncio.timeout(limit):
            while not await check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"not within {limit}s: {what}")


LONDON = subnet("81.2.69.142", 32)


# ── answers ──────────────────────────────────────────────────────────────────


async def test_the_soa_at_the_apex_is_authoritative_without_recursion(
    server: DnsServer,
) -> None:
    response = await ask(server.port, query("cdn.test.", "SOA"))

    assert response.rcode() == dns.rcode.NOERROR
    assert is_aa(response) and not response.flags & dns.flags.RA
    (rrset,) = response.answer
    soa = rrset[0]
    assert rrset.name == dns.name.from_text("cdn.test.") and rrset.ttl == 300
    assert str(soa.mname) == "ns1.cdn.test." and str(soa.rname) == "hostmaster.cdn.test."
    assert soa.serial == 2024 and soa.minimum == 60


@pytest.mark.parametrize(
    ("name", "rdtype"),
    [("cdn.test.", "SOA"), ("img.cdn.test.", "A"), ("nope.cdn.test.", "A"), ("example.", "A")],
)
async def test_rd_is_copied_from_the_query(server: DnsServer, name: str, rdtype: str) -> None:
    with_rd = await ask(server.port, query(name, rdtype))
    without_rd = await ask(server.port, query(name, rdtype, flags=0))

    assert with_rd.flags & dns.flags.RD
    assert not without_rd.flags & dns.flags.RD, f"RD set in {without_rd.flags!r}"
    assert not with_rd.flags & dns.flags.RA and not without_rd.flags & dns.flags.RA


async def test_ns_answers_carry_glue_for_the_name_servers_inside_the_zone(
    server: DnsServer,
) -> None:
    response = await ask(server.port, query("cdn.test.", "NS"))

    (rrset,) = response.answer
    assert {str(rdata.target) for rdata in rrset} == {"ns1.cdn.test.", "ns2.elsewhere.test."}
    glue = {(str(r.name), r.rdtype, str(r[0])) for r in response.additional}
    assert glue == {
        ("ns1.cdn.test.", A, "192.0.2.53"),
        ("ns1.cdn.test.", AAAA, "2001:db8::53"),
    }
    assert is_aa(response)


async def test_a_aaaa_and_txt_records_are_answered_with_their_ttls(server: DnsServer) -> None:
    a = await ask(server.port, query("www.cdn.test.", "A"))
    aaaa = await ask(server.port, query("v6.cdn.test.", "AAAA"))
    txt = await ask(server.port, query("www.cdn.test.", "TXT"))

    assert [(r.ttl, [str(x) for x in r]) for r in a.answer] == [(300, ["192.0.2.1"])]
    assert [(r.ttl, [str(x) for x in r]) for r in aaaa.answer] == [(120, ["2001:db8::80"])]
    assert [(r.ttl, [x.strings for x in r]) for r in txt.answer] == [(300, [(b"v=hello",)])]
    assert all(is_aa(r) and r.rcode() == dns.rcode.NOERROR for r in (a, aaaa, txt))


async def test_a_cname_is_the_answer_for_any_type_at_its_name(server: DnsServer) -> None:
    for rdtype in ("A", "AAAA", "TXT", "CNAME"):
        response = await ask(server.port, query("alias.cdn.test.", rdtype))
        (rrset,) = response.answer
        assert rrset.rdtype == CNAME and str(rrset[0].target) == "www.cdn.test.", rdtype
        assert is_aa(response) and response.rcode() == dns.rcode.NOERROR


async def test_nxdomain_carries_the_soa_with_the_lesser_of_its_ttl_and_negative_ttl(
    server: DnsServer,
) -> None:
    for name, apex, ttl in (
        ("nope.cdn.test.", "cdn.test.", 60),
        ("nope.short.test.", "short.test.", 30),
    ):
        response = await ask(server.port, query(name, "A"))
        assert response.rcode() == dns.rcode.NXDOMAIN and is_aa(response)
        assert response.answer == []
        (soa,) = response.authority
        assert soa.rdtype == dns.rdatatype.SOA and str(soa.name) == apex
        assert soa.ttl == ttl, name


async def test_nodata_is_noerror_with_the_soa_for_a_type_the_name_lacks(server: DnsServer) -> None:
    response = await ask(server.port, query("www.cdn.test.", "AAAA"))

    assert response.rcode() == dns.rcode.NOERROR and is_aa(response)
    assert response.answer == []
    (soa,) = response.authority
    assert soa.rdtype == dns.rdatatype.SOA and soa.ttl == 60


async def test_an_empty_non_terminal_is_nodata_and_a_name_below_it_nxdomain(
    server: DnsServer,
) -> None:
    above = await ask(server.port, query("b.cdn.test.", "A"))
    below = await ask(server.port, query("x.b.cdn.test.", "A"))
    record = await ask(server.port, query("a.b.cdn.test.", "A"))

    assert above.rcode() == dns.rcode.NOERROR and above.answer == []
    assert [r.rdtype for r in above.authority] == [dns.rdatatype.SOA]
    assert below.rcode() == dns.rcode.NXDOMAIN
    assert [str(x) for r in record.answer for x in r] == ["192.0.2.2"]


async def test_names_outside_the_zones_are_refused_without_aa(server: DnsServer) -> None:
    for name in ("example.com.", "test.", "notcdn.test.", "."):
        response = await ask(server.port, query(name, "A"))
        assert response.rcode() == dns.rcode.REFUSED, name
        assert not is_aa(response) and response.answer == [] and response.authority == []


async def test_opcodes_other_than_query_are_not_implemented(server: DnsServer) -> None:
    notify = query("cdn.test.", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    update = dns.update.UpdateMessage("cdn.test.")
    update.add("new", 300, "A", "192.0.2.7")

    for message in (notify, update):
        response = await ask(server.port, message)
        assert response.rcode() == dns.rcode.NOTIMP
        assert response.opcode() == message.opcode() and response.id == message.id
        assert response.answer == []


async def test_a_query_with_two_questions_is_formerr(server: DnsServer) -> None:
    question = wire_name(b"www", b"cdn", b"test") + struct.pack("!HH", 1, 1)
    packet = struct.pack("!HHHHHH", 0xABCD, 0x0100, 2, 0, 0, 0) + question * 2

    reply = await exchange(server.port, packet)

    assert reply is not None
    response = dns.message.from_wire(reply)
    assert response.id == 0xABCD and response.flags & dns.flags.QR
    assert response.rcode() == dns.rcode.FORMERR


async def test_any_is_answered_with_a_single_hinfo_rfc8482(server: DnsServer) -> None:
    for name in ("www.cdn.test.", "cdn.test.", "img.cdn.test."):
        response = await ask(server.port, query(name, "ANY"))
        (rrset,) = response.answer
        assert rrset.rdtype == dns.rdatatype.HINFO and len(rrset) == 1
        assert rrset[0].cpu == b"RFC8482" and rrset[0].os == b""
        assert str(rrset.name) == name and is_aa(response)


@pytest.mark.parametrize(
    "labels",
    [(b"nope",), (b"\xff",), (b"\xff" * 63,)],
    ids=["ascii", "a-byte-outside-ascii", "a-63-byte-label-outside-ascii"],
)
async def test_any_for_a_name_that_does_not_exist_is_nxdomain(
    server: DnsServer, labels: tuple[bytes, ...]
) -> None:
    """RFC 8482 lets a server answer ANY with a subset of the RRsets at the name
    (or one synthesised HINFO): a name with no RRsets is NXDOMAIN, as for any
    other type."""
    qname = wire_name(*labels, b"cdn", b"test")

    reply = await exchange(server.port, raw_query(qname, qtype=255))

    assert reply is not None, "no answer at all"
    response = dns.message.from_wire(reply)
    assert response.rcode() == dns.rcode.NXDOMAIN, response
    assert response.answer == []
    assert [r.rdtype for r in response.authority] == [dns.rdatatype.SOA]


async def test_any_at_an_alias_is_answered_with_its_cname(server: DnsServer) -> None:
    """RFC 8482 §4.2 synthesises HINFO only where no CNAME sits at the name."""
    response = await ask(server.port, query("alias.cdn.test.", "ANY"))

    assert [(r.rdtype, str(r[0])) for r in response.answer] == [(CNAME, "www.cdn.test.")]


async def test_zone_transfers_are_refused(server: DnsServer) -> None:
    axfr = await ask(server.port, query("cdn.test.", "AXFR"), tcp=True)
    ixfr = await ask(server.port, query("cdn.test.", "IXFR"))

    for response in (axfr, ixfr):
        assert response.rcode() == dns.rcode.REFUSED
        assert response.answer == [] and not is_aa(response)


@pytest.mark.parametrize("name", ["ImG.CdN.TeSt.", "WWW.cdn.TEST.", "NoPe.CdN.tEsT."])
async def test_the_question_is_echoed_in_the_letter_case_it_was_sent(
    server: DnsServer, name: str
) -> None:
    message = query(name, "A", ecs=LONDON)
    sent = dns.name.from_text(name)

    reply = await exchange(server.port, message.to_wire())

    assert reply is not None
    assert reply[12 : 12 + len(sent.to_wire())] == sent.to_wire()  # type: ignore[arg-type]  # bytes
    response = dns.message.from_wire(reply)
    assert response.question[0].name.labels == sent.labels
    for rrset in response.answer:
        assert rrset.name.labels == sent.labels


async def test_a_dot_inside_a_label_is_not_taken_for_a_label_boundary(server: DnsServer) -> None:
    """`www.cdn` + `test` is a two-label name under test., not www.cdn.test.;
    `a.b` + `cdn` + `test` is a name under cdn.test. that has no records."""
    cases = [
        (wire_name(b"www.cdn", b"test"), dns.rcode.REFUSED),
        (wire_name(b"www.cdn.test"), dns.rcode.REFUSED),
        (wire_name(b"img.cdn", b"test"), dns.rcode.REFUSED),
        (wire_name(b"a.b", b"cdn", b"test"), dns.rcode.NXDOMAIN),
    ]
    seen: list[tuple[object, ...]] = []
    for qname, _ in cases:
        reply = await exchange(server.port, raw_query(qname))
        if reply is None:
            seen.append((qname, "no answer"))
            continue
        response = dns.message.from_wire(reply)
        seen.append((qname, dns.rcode.to_text(response.rcode()), [str(r) for r in response.answer]))
    assert seen == [(q, dns.rcode.to_text(rcode), []) for q, rcode in cases]


async def test_a_record_with_ttl_zero_is_answered_with_ttl_zero(start_dns: StartDns) -> None:
    server = await start_dns(
        zones=[
            zone(
                records=[{"name": "now", "type": "A", "value": "192.0.2.9", "ttl": 0}],
                steered=[{"name": "img", "ttl": 0}],
            )
        ]
    )

    record = await ask(server.port, query("now.cdn.test.", "A"))
    steered = await ask(server.port, query("img.cdn.test.", "A"))

    assert [r.ttl for r in record.answer] == [0]
    assert [r.ttl for r in steered.answer] == [0]


async def test_a_zone_named_without_the_final_dot_is_that_zone(start_dns: StartDns) -> None:
    records = [{"name": "www", "type": "A", "value": "192.0.2.4"}]
    try:
        server = await start_dns(zones=[{"name": "plain.test", "records": records}])
    except ConfigError:
        return  # refusing it with a config error naming the problem is fine too
    except Exception as exc:
        pytest.fail(f"zone 'plain.test': the server did not start: {exc!r}")
    response = await ask(server.port, query("www.plain.test.", "A"))
    assert [str(x) for r in response.answer for x in r] == ["192.0.2.4"]


async def test_a_txt_value_longer_than_255_bytes_is_split_into_strings_or_refused_as_config(
    start_dns: StartDns,
) -> None:
    """A character-string holds 255 bytes at most: a long TXT value (a DKIM key)
    goes out as several strings, or the config says it cannot."""
    value = "k=" + "x" * 400
    try:
        server = await start_dns(
            zones=[zone(records=[{"name": "dkim", "type": "TXT", "value": value}])]
        )
    except ConfigError:
        return
    except Exception as exc:
        pytest.fail(f"a 402-byte TXT value: the server did not start: {exc!r}")
    response = await ask(server.port, query("dkim.cdn.test.", "TXT"), tcp=True)
    (rrset,) = response.answer
    assert b"".join(rrset[0].strings) == value.encode()


# ── EDNS0 ────────────────────────────────────────────────────────────────────


async def test_the_opt_record_is_echoed_with_our_payload_only_when_the_query_has_one(
    server: DnsServer,
) -> None:
    plain = await ask(server.port, query("www.cdn.test.", "A"))
    edns = await ask(server.port, query("www.cdn.test.", "A", use_edns=0, payload=4096))

    assert plain.edns == -1 and plain.opt is None
    assert edns.edns == 0 and edns.payload == 1232
    assert list(edns.options) == []


async def test_the_do_bit_is_echoed(server: DnsServer) -> None:
    with_do = await ask(server.port, query("www.cdn.test.", "A", want_dnssec=True))
    without = await ask(server.port, query("www.cdn.test.", "A", use_edns=0))

    assert with_do.ednsflags & dns.flags.DO
    assert not without.ednsflags & dns.flags.DO


async def test_an_edns_version_above_zero_is_badvers_answered_with_version_zero(
    server: DnsServer,
) -> None:
    response = await ask(server.port, query("www.cdn.test.", "A", use_edns=1))

    assert response.rcode() == dns.rcode.BADVERS
    assert response.edns == 0 and response.answer == []
    assert response.question[0].name == dns.name.from_text("www.cdn.test.")


async def test_unknown_edns_options_are_ignored(server: DnsServer) -> None:
    unknown = dns.edns.GenericOption(65001, b"\x01\x02\x03")  # type: ignore[arg-type]  # any code

    response = await ask(server.port, query("www.cdn.test.", "A", use_edns=0, options=[unknown]))

    assert response.rcode() == dns.rcode.NOERROR
    assert [str(x) for r in response.answer for x in r] == ["192.0.2.1"]
    assert list(response.options) == []


def assert_truncated(response: dns.message.Message, name: str) -> None:
    assert response.flags & dns.flags.TC
    assert response.answer == [] and response.authority == []
    assert [q.name for q in response.question] == [dns.name.from_text(name)]


async def test_an_answer_over_512_bytes_without_edns_is_truncated_and_whole_over_tcp(
    server: DnsServer,
) -> None:
    udp = await ask(server.port, query("big.cdn.test.", "TXT"))
    tcp = await ask(server.port, query("big.cdn.test.", "TXT"), tcp=True)

    assert_truncated(udp, "big.cdn.test.")
    assert udp.edns == -1 and udp.additional == []
    assert not tcp.flags & dns.flags.TC
    assert sorted(x.strings[0].decode() for r in tcp.answer for x in r) == LONG_TEXT[:4]


async def test_an_answer_over_the_requesters_payload_is_truncated_keeping_the_opt_record(
    server: DnsServer,
) -> None:
    small = await ask(server.port, query("big.cdn.test.", "TXT", use_edns=0, payload=512))
    enough = await ask(server.port, query("big.cdn.test.", "TXT", use_edns=0, payload=1232))

    assert_truncated(small, "big.cdn.test.")
    assert small.edns == 0 and small.payload == 1232
    assert not enough.flags & dns.flags.TC and len(enough.answer[0]) == 4
    assert enough.edns == 0


async def test_an_answer_over_our_payload_is_truncated_and_fetched_whole_over_tcp(
    server: DnsServer,
) -> None:
    message = query("huge.cdn.test.", "TXT", use_edns=0, payload=4096)

    udp = await ask(server.port, message)
    response, used_tcp = await dns.asyncquery.udp_with_fallback(
        message, HOST, port=server.port, timeout=5
    )

    assert_truncated(udp, "huge.cdn.test.")
    assert udp.edns == 0
    assert used_tcp and not response.flags & dns.flags.TC
    assert sorted(x.strings[0].decode() for r in response.answer for x in r) == LONG_TEXT


@pytest.mark.dig
async def test_dig_sees_an_authoritative_answer_and_retries_a_truncated_one_over_tcp(
    server: DnsServer,
) -> None:
    async def dig(*args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            "dig", "+time=3", "+tries=1", f"@{HOST}", "-p", str(server.port), *args,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await process.communicate()
        return out.decode()

    plain = await dig("+norec", "www.cdn.test", "A")
    huge = await dig("huge.cdn.test", "TXT")

    assert "status: NOERROR" in plain
    flags = re.search(r"^;; flags: ([^;]*);", plain, re.M)
    assert flags is not None and flags.group(1) == "qr aa", plain  # +norec: no rd, no ra
    assert re.search(r"^www\.cdn\.test\.\s+300\s+IN\s+A\s+192\.0\.2\.1$", plain, re.M)
    assert "Truncated, retrying in TCP mode" in huge
    assert "ANSWER: 7," in huge


# ── client subnet (RFC 7871) ─────────────────────────────────────────────────


NEAREST = [
    ("81.2.69.142", 32, "lon", 31),  # London
    ("2.125.160.216", 32, "lon", 29),  # Boxford, 82 km from London
    ("89.160.20.112", 32, "sto", 28),  # Linköping
    ("216.160.83.56", 32, "sea", 29),  # Milton, WA
    ("175.16.199.1", 32, "tok", 24),  # Changchun
    ("67.43.156.1", 32, "tok", 24),  # Bhutan
    ("202.196.224.1", 32, "tok", 20),  # the Philippines
    ("2001:218::1", 56, "tok", 32),  # Japan
    ("216.160.83.56", 29, "sea", 29),
    ("175.16.199.0", 24, "tok", 24),
]


@pytest.mark.parametrize(("address", "source", "nearest", "prefix"), NEAREST)
async def test_the_client_subnet_gets_its_nearest_pop_with_the_database_network_as_scope(
    server: DnsServer, address: str, source: int, nearest: str, prefix: int
) -> None:
    response = await ask(server.port, query("img.cdn.test.", "A", ecs=subnet(address, source)))

    assert response.rcode() == dns.rcode.NOERROR and is_aa(response)
    assert pop_of(response) == nearest
    assert response.answer[0].ttl == 30  # steered_ttl
    option = scope(response)
    assert (option.address, option.srclen, option.scopelen) == (
        str(ipaddress.ip_network(f"{address}/{source}", strict=False).network_address),
        source,
        prefix,
    )
    assert option.family == (1 if ":" not in address else 2)


async def test_a_name_that_is_not_steered_answers_scope_zero(server: DnsServer) -> None:
    response = await ask(server.port, query("www.cdn.test.", "A", ecs=LONDON))

    option = scope(response)
    assert (option.address, option.srclen, option.scopelen) == ("81.2.69.142", 32, 0)


async def test_a_source_prefix_of_zero_answers_scope_zero(server: DnsServer) -> None:
    response = await ask(server.port, query("img.cdn.test.", "A", ecs=subnet("0.0.0.0", 0)))

    assert response.rcode() == dns.rcode.NOERROR and addresses(response)
    option = scope(response)
    assert (option.srclen, option.scopelen) == (0, 0)


MALFORMED_ECS = {
    "family 3": struct.pack("!HBB", 3, 24, 0) + b"\x0a\x00\x00",
    "IPv4 source /33": struct.pack("!HBB", 1, 33, 0) + b"\x0a\x00\x00\x00\x00",
    "IPv6 source /129": struct.pack("!HBB", 2, 129, 0) + bytes(17),
    "address longer than /24 needs": struct.pack("!HBB", 1, 24, 0) + b"\x0a\x00\x00\x00",
    "address shorter than /24 needs": struct.pack("!HBB", 1, 24, 0) + b"\x0a\x00",
    "a bit set beyond /23": struct.pack("!HBB", 1, 23, 0) + b"\x0a\x00\x01",
    "a scope in the query": struct.pack("!HBB", 1, 24, 16) + b"\x0a\x00\x00",
    "shorter than 4 bytes": b"\x00\x01\x18",
}


@pytest.mark.parametrize("body", MALFORMED_ECS.values(), ids=MALFORMED_ECS.keys())
async def test_a_malformed_client_subnet_option_is_formerr(server: DnsServer, body: bytes) -> None:
    option = dns.edns.GenericOption(dns.edns.OptionType.ECS, body)

    response = await ask(server.port, query("img.cdn.test.", "A", use_edns=0, options=[option]))

    assert response.rcode() == dns.rcode.FORMERR
    assert response.answer == [] and response.edns == 0
    assert response.question[0].name == dns.name.from_text("img.cdn.test.")


async def test_without_client_subnet_the_resolvers_network_picks_among_all_pops(
    server: DnsServer,
) -> None:
    """127.0.N.1 is in no database: every healthy POP is a candidate, each
    resolver network always getting the same one."""
    chosen: dict[str, str] = {}
    for network in range(24):
        source = f"127.0.{network}.1"
        answers = {
            pop_of(await ask(server.port, query("img.cdn.test."), source=source)) for _ in range(3)
        }
        assert len(answers) == 1, source
        chosen[source] = answers.pop()
    assert len(set(chosen.values())) > 1, chosen


async def test_within_an_answers_scope_every_client_subnet_gets_the_same_pop(
    start_dns: StartDns,
) -> None:
    """Two POPs about as near to the Philippines (one /20 in the database) share
    its clients. A resolver caches an answer for its whole scope, so every /24
    inside the scope an answer claims must get that answer's POP."""
    manila = {"name": "mnl", "latitude": 14.6, "longitude": 121.0, "addresses": ["198.51.100.61"]}
    cebu = {"name": "ceb", "latitude": 10.3, "longitude": 123.9, "addresses": ["198.51.100.71"]}
    server = await start_dns(pops=[manila, cebu, pop("lon")])
    by_scope: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, set[str]] = {}
    for third in range(224, 240):
        response = await ask(
            server.port, query("img.cdn.test.", ecs=subnet(f"202.196.{third}.0", 24))
        )
        option = scope(response)
        covered = ipaddress.ip_network(f"202.196.{third}.0/{option.scopelen}", strict=False)
        by_scope.setdefault(covered, set()).add(pop_of(response))
    assert all(len(pops) == 1 for pops in by_scope.values()), by_scope


# ── steering ─────────────────────────────────────────────────────────────────


async def test_pops_about_as_near_share_networks_and_each_network_keeps_its_pop(
    start_dns: StartDns,
) -> None:
    heathrow = {
        "name": "lhr",
        "latitude": 51.47,
        "longitude": -0.45,
        "addresses": ["198.51.100.51"],
    }
    server = await start_dns(pops=[pop("lon"), heathrow, pop("sea"), pop("sto")])
    london = ["81.2.69.142", "81.2.69.150", "81.2.69.170", "81.2.69.200", "2.125.160.216"]
    for address in london:
        answers = set()
        for _ in range(5):
            answers.add(
                pop_of(await ask(server.port, query("img.cdn.test.", ecs=subnet(address, 32))))
            )
        assert len(answers) == 1 and answers <= {"lon", "lhr"}, (address, answers)


async def test_a_heavier_pop_gets_more_of_the_networks_it_shares(
    start_dns: StartDns, tmp_path: Path
) -> None:
    overrides = tmp_path / "overrides.txt"
    overrides.write_text("# every 10/8 network is in Europe\n10.0.0.0/8 eu\n")
    server = await start_dns(
        overrides=str(overrides),
        pops=[pop("lon", weight=3), pop("sto", weight=1), pop("sea"), pop("tok")],
    )
    counts: Counter[str] = Counter()
    for network in range(160):
        ecs = subnet(f"10.{network}.7.0", 24)
        first = pop_of(await ask(server.port, query("img.cdn.test.", ecs=ecs)))
        again = pop_of(await ask(server.port, query("img.cdn.test.", ecs=ecs)))
        assert first == again
        counts[first] += 1
    assert set(counts) == {"lon", "sto"}
    assert counts["lon"] > 2 * counts["sto"] > 0, counts


async def test_the_override_file_wins_over_the_database(
    start_dns: StartDns, tmp_path: Path
) -> None:
    overrides = tmp_path / "overrides.txt"
    overrides.write_text("81.2.69.0/24 asia\n216.160.0.0/16 eu # Seattle's clients to Europe\n")
    server = await start_dns(overrides=str(overrides))

    london = await ask(server.port, query("img.cdn.test.", ecs=LONDON))
    seattle = await ask(server.port, query("img.cdn.test.", ecs=subnet("216.160.83.56", 32)))
    sweden = await ask(server.port, query("img.cdn.test.", ecs=subnet("89.160.20.112", 32)))

    assert pop_of(london) == "tok" and scope(london).scopelen == 24
    # Two POPs in "eu" share the /16 by weight, picked per /24: the scope says /24.
    assert pop_of(seattle) in {"lon", "sto"} and scope(seattle).scopelen == 24
    assert pop_of(sweden) == "sto" and scope(sweden).scopelen == 28


async def test_max_answers_caps_the_addresses_of_a_steered_answer(server: DnsServer) -> None:
    capped = await ask(server.port, query("solo.cdn.test.", "A", ecs=LONDON))
    default = await ask(server.port, query("img.cdn.test.", "A", ecs=LONDON))

    assert len(addresses(capped)) == 2 and addresses(capped) < set(pop("lon")["addresses"])
    assert capped.answer[0].ttl == 20
    assert len(addresses(default)) == 2  # max_answers defaults to 2


async def test_aaaa_answers_the_pops_ipv6_addresses(server: DnsServer) -> None:
    london = await ask(server.port, query("img.cdn.test.", "AAAA", ecs=LONDON))
    tokyo = await ask(server.port, query("img.cdn.test.", "AAAA", ecs=subnet("2001:218::", 32)))

    assert addresses(london) == {"2001:db8:1::1"}
    assert addresses(tokyo) == {"2001:db8:3::1"}


async def test_a_steered_name_is_nodata_for_a_type_it_has_no_answer_for(
    server: DnsServer,
) -> None:
    txt = await ask(server.port, query("img.cdn.test.", "TXT", ecs=LONDON))
    stockholm_v6 = await ask(
        server.port, query("img.cdn.test.", "AAAA", ecs=subnet("89.160.20.112", 32))
    )

    for response in (txt, stockholm_v6):
        assert response.rcode() == dns.rcode.NOERROR and is_aa(response)
        assert response.answer == []
        assert [(r.rdtype, r.ttl) for r in response.authority] == [(dns.rdatatype.SOA, 60)]


# ── health and failover ──────────────────────────────────────────────────────


@dataclass
class Readyz:
    """A POP's health endpoint on loopback: it can stop, start again on the same
    port, or fail a number of probes."""

    port: int = 0
    probes: int = 0
    failures_left: int = 0
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/readyz"

    async def handle(self, request: web.Request) -> web.Response:
        self.probes += 1
        if self.failures_left > 0:
            self.failures_left -= 1
            return web.Response(status=503, text="draining")
        return web.Response(text="ready")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/readyz", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        await web.TCPSite(self.runner, HOST, self.port).start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def readyz() -> AsyncIterator[Callable[[], Awaitable[Readyz]]]:
    started: list[Readyz] = []

    async def make() -> Readyz:
        endpoint = Readyz()
        await endpoint.start()
        started.append(endpoint)
        return endpoint

    yield make
    for endpoint in started:
        await endpoint.stop()


async def probed(endpoint: Readyz, times: int) -> bool:
    return endpoint.probes >= times


async def steered_pop(port: int, name: str = "img.cdn.test.", ecs: Any = LONDON) -> str:
    """The POP answering a London client for `name`."""
    return pop_of(await ask(port, query(name, "A", ecs=ecs)))


async def answered_by(port: int, expected: str, name: str = "img.cdn.test.") -> bool:
    response = await ask(port, query(name, "A", ecs=LONDON))
    return bool(addresses(response)) and pop_of(response) == expected


@pytest.mark.slow
async def test_a_pop_whose_health_endpoint_stops_leaves_the_answers_and_comes_back(
    start_dns: StartDns, readyz: Callable[[], Awaitable[Readyz]]
) -> None:
    london = await readyz()
    server = await start_dns(
        pops=[pop("lon", health=london.url), pop("sea"), pop("tok"), pop("sto")]
    )
    await until(lambda: probed(london, 2), "London probed twice")
    assert await steered_pop(server.port) == "lon"

    await london.stop()
    await until(lambda: answered_by(server.port, "sto"), "London out of the answers")
    assert await steered_pop(server.port, "solo.cdn.test.") == "lon"  # its only POP, no failover

    await london.start()
    await until(lambda: answered_by(server.port, "lon"), "London back in the answers")


@pytest.mark.slow
async def test_a_single_failed_probe_does_not_take_a_pop_out(
    start_dns: StartDns, readyz: Callable[[], Awaitable[Readyz]]
) -> None:
    london = await readyz()
    server = await start_dns(
        pops=[pop("lon", health=london.url), pop("sea"), pop("tok"), pop("sto")]
    )
    await until(lambda: probed(london, 2), "London probed twice")

    london.failures_left = 1
    before = london.probes
    seen: Counter[str] = Counter()
    async with asyncio.timeout(10):
        while london.probes < before + 4:  # the failed probe and three good ones
            seen[await steered_pop(server.port)] += 1
            await asyncio.sleep(0.01)

    assert london.failures_left == 0
    assert set(seen) == {"lon"}, seen


@pytest.mark.slow
async def test_with_every_pop_of_a_name_down_the_answer_is_a_cname_to_its_failover(
    start_dns: StartDns, readyz: Callable[[], Awaitable[Readyz]]
) -> None:
    london, seattle = await readyz(), await readyz()
    server = await start_dns(
        pops=[pop("lon", health=london.url), pop("sea", health=seattle.url), pop("tok")],
        zones=[
            zone(
                steered=[
                    {"name": "pair", "pops": ["lon", "sea"], "failover": "pair.othercdn.test."},
                    {"name": "img"},
                ]
            )
        ],
    )
    assert await steered_pop(server.port, "pair.cdn.test.") == "lon"

    await london.stop()
    await seattle.stop()

    async def failed_over() -> bool:
        response = await ask(server.port, query("pair.cdn.test.", "A", ecs=LONDON))
        return [r.rdtype for r in response.answer] == [CNAME]

    await until(failed_over, "pair.cdn.test. answered with its failover CNAME")
    for rdtype in ("A", "AAAA"):
        response = await ask(server.port, query("pair.cdn.test.", rdtype, ecs=LONDON))
        (rrset,) = response.answer
        assert str(rrset[0].target) == "pair.othercdn.test." and rrset.ttl == 30
        assert is_aa(response) and response.rcode() == dns.rcode.NOERROR
    assert await steered_pop(server.port, "img.cdn.test.") == "tok"  # the one left

    await london.start()
    await until(lambda: answered_by(server.port, "lon", "pair.cdn.test."), "London back for pair")


async def test_control_plane_verdicts_take_a_pop_out_and_bring_it_back(
    start_dns: StartDns, readyz: Callable[[], Awaitable[Readyz]]
) -> None:
    london = await readyz()
    server = await start_dns(
        pops=[pop("lon", health=london.url), pop("sea"), pop("tok"), pop("sto")]
    )
    assert await steered_pop(server.port) == "lon"

    server.force("lon", False)
    assert await steered_pop(server.port) == "sto"
    server.force("lon", None)
    assert await steered_pop(server.port) == "lon"

    await london.stop()
    await until(lambda: answered_by(server.port, "sto"), "London out after its probes failed")
    server.force("lon", True)  # the control plane knows better than the probes
    assert await steered_pop(server.port) == "lon"
    server.force("lon", None)
    assert await steered_pop(server.port) == "sto"


# ── response rate limiting ───────────────────────────────────────────────────


async def drain(protocol: Datagrams, quiet: float = 1.0) -> list[bytes]:
    """The replies that come until none has for `quiet` seconds."""
    replies = []
    try:
        while True:
            replies.append(await asyncio.wait_for(protocol.replies.get(), quiet))
    except TimeoutError:
        return replies


def section_counts(reply: bytes) -> tuple[int, int, int, int]:
    """QDCOUNT, ANCOUNT, NSCOUNT and ARCOUNT as the header says."""
    counts = struct.unpack("!HHHH", reply[4:12])
    return counts[0], counts[1], counts[2], counts[3]


@pytest.mark.slow
async def test_a_burst_past_the_rate_limit_is_partly_truncated_and_partly_dropped(
    start_dns: StartDns,
) -> None:
    server = await start_dns(rrl_rate=5, rrl_slip=2)
    messages = [query("www.cdn.test.", "A", id=n) for n in range(50)]
    async with udp_socket(server.port) as (transport, protocol):
        for message in messages:
            transport.sendto(message.to_wire())
        replies = await drain(protocol)

    full = [reply for reply in replies if not reply[2] & 0x02]
    slipped = [reply for reply in replies if reply[2] & 0x02]
    assert len(replies) < 50
    assert len(full) >= 5 and len(slipped) >= 10, (len(full), len(slipped))
    for reply in full:
        assert [str(x) for a in dns.message.from_wire(reply).answer for x in a] == ["192.0.2.1"]
    for reply in slipped:
        assert section_counts(reply) == (1, 0, 0, 0), "a truncated answer's section counts"
        assert_truncated(dns.message.from_wire(reply), "www.cdn.test.")
    assert len({reply[:2] for reply in replies}) == len(replies)

    other_prefix = await ask(server.port, query("www.cdn.test."), source="127.0.9.1")
    assert not other_prefix.flags & dns.flags.TC and other_prefix.answer
    for _ in range(20):
        over_tcp = await ask(server.port, query("www.cdn.test."), tcp=True)
        assert not over_tcp.flags & dns.flags.TC and over_tcp.answer


# ── TCP ──────────────────────────────────────────────────────────────────────


async def read_message(reader: asyncio.StreamReader) -> dns.message.Message:
    size = int.from_bytes(await reader.readexactly(2), "big")
    return dns.message.from_wire(await reader.readexactly(size))


async def test_pipelined_tcp_queries_are_all_answered_in_order(server: DnsServer) -> None:
    names = [("www", "A"), ("nope", "A"), ("v6", "AAAA"), ("huge", "TXT"), ("cdn.test.", "SOA")]
    messages = [
        query(name if name.endswith(".") else f"{name}.cdn.test.", rdtype, id=1000 + n)
        for n, (name, rdtype) in enumerate(names * 4)
    ]
    reader, writer = await asyncio.open_connection(HOST, server.port)
    try:
        writer.write(
            b"".join(len(w).to_bytes(2, "big") + w for w in (m.to_wire() for m in messages))
        )
        await writer.drain()
        responses = [await asyncio.wait_for(read_message(reader), 5) for _ in messages]
    finally:
        writer.close()

    assert [r.id for r in responses] == [m.id for m in messages]
    for message, response in zip(messages, responses, strict=True):
        assert response.question == message.question
    assert [len(r.answer[0]) for r in responses if r.question[0].rdtype == TXT] == [7] * 4
    assert [r.rcode() for r in responses[:2]] == [dns.rcode.NOERROR, dns.rcode.NXDOMAIN]


@pytest.mark.slow
async def test_an_idle_tcp_connection_is_closed_after_tcp_idle(start_dns: StartDns) -> None:
    server = await start_dns(tcp_idle="0.5s")
    silent = await asyncio.open_connection(HOST, server.port)
    talking = await asyncio.open_connection(HOST, server.port)
    try:
        wire = query("www.cdn.test.").to_wire()
        talking[1].write(len(wire).to_bytes(2, "big") + wire)
        answered = await asyncio.wait_for(read_message(talking[0]), 5)

        assert answered.answer
        assert await asyncio.wait_for(silent[0].read(), 10) == b""
        assert await asyncio.wait_for(talking[0].read(), 10) == b""
    finally:
        silent[1].close()
        talking[1].close()


async def test_a_tcp_message_cut_short_by_eof_leaves_the_server_answering(
    server: DnsServer,
) -> None:
    reader, writer = await asyncio.open_connection(HOST, server.port)
    wire = query("www.cdn.test.").to_wire()
    writer.write((len(wire) + 40).to_bytes(2, "big") + wire)
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()

    assert (await ask(server.port, query("www.cdn.test."), tcp=True)).answer
    assert (await ask(server.port, query("www.cdn.test."))).answer


# ── operations: the `pinedge dns` command ────────────────────────────────────


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{key} = {toml_value(item)}" for key, item in value.items() if item is not None)
        return "{" + ", ".join(pairs) + "}"
    raise TypeError(value)


def toml(values: dict[str, Any]) -> str:
    """A config file: one `key = value` line per setting (inline tables)."""
    skip = {"listen"}
    return "".join(
        f"{key} = {toml_value(value)}\n"
        for key, value in values.items()
        if key not in skip and value is not None
    )


def udp_sockets_bound(port: int) -> int:
    """How many UDP sockets are bound to `port` (from /proc/net/udp)."""
    lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    return sum(1 for line in lines if line.split()[1].endswith(f":{port:04X}"))


@dataclass
class Node:
    process: asyncio.subprocess.Process
    port: int
    admin: str

    async def metrics(self, client: aiohttp.ClientSession) -> str:
        async with client.get(self.admin + "/metrics") as response:
            assert response.status == 200
            return await response.text()

    async def post(
        self, client: aiohttp.ClientSession, path: str, body: Any = None, auth: bool = True
    ) -> tuple[int, Any]:
        async with client.post(
            self.admin + path, json=body, headers=AUTH if auth else {}
        ) as response:
            return response.status, await response.json()


@asynccontextmanager
async def running_dns(
    client: aiohttp.ClientSession,
    config: Path,
    *,
    workers: int = 1,
    token: str | None = None,
) -> AsyncIterator[Node]:
    port, admin = free_port(udp=True), free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in ("PINEDGE_ADMIN_TOKEN", "PINEDGE_CONFIG")
    }
    if token:
        env["PINEDGE_ADMIN_TOKEN"] = token
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pinedge", "dns", "--config", str(config),
        "--listen", f"{HOST}:{port}", "--admin", f"{HOST}:{admin}", "--workers", str(workers),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    node = Node(process, port, f"http://{HOST}:{admin}")
    try:
        async with asyncio.timeout(20):
            while True:
                assert process.returncode is None, "pinedge dns exited"
                try:
                    async with client.get(node.admin + "/healthz") as response:
                        if response.status == 200 and udp_sockets_bound(port) == workers:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        yield node
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                await process.wait()


def cli_settings(**changes: Any) -> dict[str, Any]:
    values = settings(**changes)
    values.pop("probe_interval")
    values.pop("probe_timeout")
    return values


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def www(port: int) -> list[str]:
    response = await ask(port, query("www.cdn.test.", "A"), tcp=True)
    return [str(x) for r in response.answer for x in r]


async def www_is(port: int, address: str) -> bool:
    return await www(port) == [address]


def with_www(address: str, **changes: Any) -> dict[str, Any]:
    records = [{"name": "www", "type": "A", "value": address}, *changes.pop("records", [])]
    return cli_settings(zones=[zone(records=records)], **changes)


@pytest.mark.slow
async def test_the_cli_server_counts_queries_drops_and_rate_limiting_in_metrics(
    client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    config = tmp_path / "dns.toml"
    config.write_text(toml(cli_settings(rrl_rate=5, rrl_slip=2)))
    async with running_dns(client, config) as node:
        for _ in range(3):
            await ask(node.port, query("www.cdn.test.", "A"), tcp=True)
        for _ in range(2):
            await ask(node.port, query("nope.cdn.test.", "AAAA"), tcp=True)
            await ask(node.port, query("img.cdn.test.", "A", ecs=LONDON), tcp=True)
        await ask(node.port, query("example.org.", "A"), tcp=True)
        response_packet = bytearray(query("www.cdn.test.").to_wire())
        response_packet[2] |= 0x80  # QR: a response, not a query
        async with udp_socket(node.port) as (transport, protocol):
            transport.sendto(bytes(response_packet))
            transport.sendto(b"\x00\x01\x02\x03\x04")
            for n in range(50):
                transport.sendto(query("www.cdn.test.", "TXT", id=n).to_wire())

            async def all_counted() -> bool:
                text = await node.metrics(client)
                return sample(text, "pinedge_dns_queries_total", qtype="TXT") == 50

            await until(all_counted, "the 50 TXT queries counted")
            replies = await drain(protocol, quiet=0.3)  # all sent by now
        slipped = [reply for reply in replies if reply[2] & 0x02]

        text = await node.metrics(client)

    assert sample(text, "pinedge_dns_queries_total", qtype="A", rcode="NOERROR", region="-") == 3
    assert sample(text, "pinedge_dns_queries_total", qtype="AAAA", rcode="NXDOMAIN") == 2
    assert sample(text, "pinedge_dns_queries_total", qtype="A", rcode="NOERROR", region="eu") == 2
    assert sample(text, "pinedge_dns_queries_total", qtype="A", rcode="REFUSED") == 1
    assert sample(text, "pinedge_dns_queries_total", qtype="TXT") == 50
    assert sample(text, "pinedge_dns_answers_total", pop="lon") == 2
    assert sample(text, "pinedge_dns_pop_up", pop="lon") == 1
    assert sample(text, "pinedge_dns_dropped_total", reason="a response, not a query") == 1
    assert sample(text, "pinedge_dns_dropped_total", reason="shorter than a header") == 1
    assert 0 < len(slipped) < len(replies) < 50
    assert sample(text, "pinedge_dns_rate_limited_total", action="slip") == len(slipped)
    assert sample(text, "pinedge_dns_rate_limited_total", action="drop") == 50 - len(replies)


@pytest.mark.slow
async def test_sighup_reloads_the_config_file_and_a_bad_file_keeps_the_old_one(
    client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    config = tmp_path / "dns.toml"
    config.write_text(toml(with_www("192.0.2.1")))
    async with running_dns(client, config) as node:
        assert await www(node.port) == ["192.0.2.1"]

        config.write_text(toml(with_www("192.0.2.99")))
        node.process.send_signal(signal.SIGHUP)
        await until(lambda: www_is(node.port, "192.0.2.99"), "the new address after SIGHUP")

        clash = [{"name": "www", "type": "CNAME", "value": "elsewhere.test."}]
        config.write_text(toml(with_www("192.0.2.100", records=clash)))
        node.process.send_signal(signal.SIGHUP)
        await asyncio.sleep(1.0)  # give it time to read the bad file (and refuse it)
        assert node.process.returncode is None
        assert await www(node.port) == ["192.0.2.99"]

        status, body = await node.post(client, "/reload")  # no token configured
        assert status == 403 and "PINEDGE_ADMIN_TOKEN" in body["error"]


@pytest.mark.slow
async def test_post_reload_with_the_token_serves_the_new_file_and_refuses_a_bad_one(
    client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    config = tmp_path / "dns.toml"
    config.write_text(toml(with_www("192.0.2.1")))
    async with running_dns(client, config, token=TOKEN) as node:
        assert (await node.post(client, "/reload", auth=False))[0] == 401
        async with client.post(
            node.admin + "/reload", headers={"Authorization": "Bearer wrong"}
        ) as response:
            assert response.status == 401

        config.write_text(toml(with_www("192.0.2.77")))
        assert await node.post(client, "/reload") == (200, {"reloaded": True})
        assert await www(node.port) == ["192.0.2.77"]

        bad_files = {
            "not TOML": "zones = [",
            "an unknown key": toml(with_www("192.0.2.5")) + "colour = 'blue'\n",
            "a CNAME beside an A": toml(
                with_www("192.0.2.5", records=[{"name": "www", "type": "CNAME", "value": "x"}])
            ),
            "a missing database": toml(with_www("192.0.2.5", geoip=str(tmp_path / "none.mmdb"))),
            "a steered name with an unknown POP": toml(
                cli_settings(zones=[zone(steered=[{"name": "img", "pops": ["mars"]}])])
            ),
        }
        for why, text in bad_files.items():
            config.write_text(text)
            status, body = await node.post(client, "/reload")
            assert status == 400 and "refused" in body["error"], why
            assert await www(node.port) == ["192.0.2.77"], why
        assert node.process.returncode is None


@pytest.mark.slow
async def test_post_health_verdicts_take_a_pop_out_and_bring_it_back(
    client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    config = tmp_path / "dns.toml"
    config.write_text(toml(cli_settings()))
    async with running_dns(client, config, token=TOKEN) as node:
        assert await steered_pop(node.port) == "lon"

        assert await node.post(client, "/health", {"pop": "lon", "up": False}) == (
            200,
            {"pop": "lon", "up": False},
        )
        assert await steered_pop(node.port) == "sto"
        assert sample(await node.metrics(client), "pinedge_dns_pop_up", pop="lon") == 0

        assert (await node.post(client, "/health", {"pop": "lon", "up": None}))[0] == 200
        assert await steered_pop(node.port) == "lon"
        assert sample(await node.metrics(client), "pinedge_dns_pop_up", pop="lon") == 1

        assert (await node.post(client, "/health", {"pop": "mars", "up": False}))[0] == 404
        assert (await node.post(client, "/health", {"pop": "lon", "up": "no"}))[0] == 400
        assert (await node.post(client, "/health", {"pop": "lon"}))[0] == 400
        unauthorised = await node.post(client, "/health", {"pop": "lon", "up": False}, auth=False)
        assert unauthorised[0] == 401
        assert await steered_pop(node.port) == "lon"


@pytest.mark.slow
async def test_two_workers_share_the_port_follow_verdicts_and_add_up_their_metrics(
    client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    config = tmp_path / "dns.toml"
    config.write_text(toml(cli_settings()))
    async with running_dns(client, config, workers=2, token=TOKEN) as node:
        assert udp_sockets_bound(node.port) == 2
        assert (await node.post(client, "/health", {"pop": "lon", "up": False}))[0] == 200

        async def every_socket_gets_stockholm() -> bool:
            # each new socket has its own source port: both workers get some of them
            answers = [await steered_pop(node.port) for _ in range(16)]
            return set(answers) == {"sto"}

        await until(every_socket_gets_stockholm, "both workers leave London out")

        for _ in range(40):
            await ask(node.port, query("www.cdn.test.", "TXT"))

        async def counted() -> bool:
            text = await node.metrics(client)
            return sample(text, "pinedge_dns_queries_total", qtype="TXT") == 40

        await until(counted, "/metrics counting the 40 TXT queries of both workers")
        text = await node.metrics(client)
        assert sample(text, "pinedge_dns_pop_up", pop="lon") == 0
        assert sample(text, "pinedge_dns_pop_up", pop="sto") == 1


@pytest.mark.slow
async def test_offload_sends_its_share_of_client_networks_to_the_other_cdn(
    start_dns: StartDns,
) -> None:
    steered = [
        {"name": "half", "failover": "half.othercdn.test.", "offload": 0.5},
        {"name": "img", "failover": "img.othercdn.test."},
    ]
    server = await start_dns(zones=[zone(steered=steered)])
    offloaded = kept = 0
    for third in range(200):
        ecs = subnet(f"81.2.{third}.0", 24)
        half = await ask(server.port, query("half.cdn.test.", "A", ecs=ecs))
        again = await ask(server.port, query("half.cdn.test.", "A", ecs=ecs))
        assert [str(r) for r in half.answer] == [str(r) for r in again.answer]  # stable
        assert scope(half).scopelen >= 24  # the /24 decided it
        if [r.rdtype for r in half.answer] == [CNAME]:
            offloaded += 1
            assert str(half.answer[0][0].target) == "half.othercdn.test."
        else:
            kept += 1
        plain = await ask(server.port, query("img.cdn.test.", "A", ecs=ecs))
        assert [r.rdtype for r in plain.answer] != [CNAME]  # no offload: all healthy POPs
    assert 60 <= offloaded <= 140 and offloaded + kept == 200
