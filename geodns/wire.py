"""The DNS wire format on the hot path: a strict reader of a query's header,
question and OPT record (RFC 1035, RFC 6891, RFC 7871), nothing else.

`parse` returns a Query or raises: Drop (not worth an answer: too short for a
header, or a response rather than a query) or Refuse (answer with its rcode:
FORMERR for a malformed query, NOTIMP for an opcode other than QUERY, BADVERS for
an EDNS version above 0), carrying what is known of the query so the answer can
echo it. Answers are built elsewhere (dnslib, answer.py); this module also
packs the OPT record they end with.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

HEADER = struct.Struct("!HHHHHH")
RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength
TYPE_CLASS = struct.Struct("!HH")
OPTION = struct.Struct("!HH")

QR = 0x8000
TC = 0x0200
RD = 0x0100
CD = 0x0010

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16  # extended: upper 8 bits in the OPT record, lower 4 in the header

TYPE_OPT = 41
OPTION_ECS = 8
MAX_NAME = 255
MAX_POINTERS = 64


class Drop(Exception):
    """A packet that gets no answer."""


class Refuse(Exception):
    """A query answered with only an rcode (and the question, when it was read)."""

    def __init__(
        self, rcode: int, why: str, query: Query | None = None, ident: int = 0, flags: int = 0
    ) -> None:
        super().__init__(why)
        self.rcode = rcode
        self.why = why
        self.query = query
        self.ident = ident
        self.flags = flags


# Not frozen: a frozen dataclass's __init__ costs a microsecond per query.
@dataclass(slots=True)
class ClientSubnet:
    """An EDNS Client Subnet option (RFC 7871) as the query sent it."""

    family: int  # 1 IPv4, 2 IPv6
    source: int  # SOURCE PREFIX-LENGTH
    address: bytes  # the significant bytes as sent

    def network(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """The address, padded with zeros to its family's length."""
        size = 4 if self.family == 1 else 16
        padded = self.address + bytes(size - len(self.address))
        return ipaddress.ip_address(padded)

    def option(self, scope: int) -> bytes:
        """This option as an answer carries it, with SCOPE PREFIX-LENGTH `scope`."""
        body = struct.pack("!HBB", self.family, self.source, scope) + self.address
        return OPTION.pack(OPTION_ECS, len(body)) + body


@dataclass(slots=True)
class Edns:
    payload: int  # the requester's UDP payload size
    version: int
    do: bool
    ecs: ClientSubnet | None


@dataclass(slots=True)
class Query:
    ident: int
    flags: int
    qname: bytes  # the name's wire form, uncompressed, in the case it was sent
    qtype: int
    qclass: int
    edns: Edns | None

    @property
    def key(self) -> bytes:
        """The name, lower-cased (DNS names compare case-insensitively in ASCII)."""
        return self.qname.lower()

    def udp_limit(self, ours: int) -> int:
        """The largest UDP answer this query may get (RFC 6891 §6.2.5)."""
        if self.edns is None:
            return 512
        return max(512, min(self.edns.payload, ours))


def parse(packet: bytes) -> Query:
    if len(packet) < HEADER.size:
        raise Drop("shorter than a header")
    ident, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(packet)
    if flags & QR:
        raise Drop("a response, not a query")
    opcode = (flags >> 11) & 0xF
    question: Query | None = None
    try:
        if qdcount != 1:
            raise Refuse(FORMERR, f"{qdcount} questions", ident=ident, flags=flags)
        qname, position = read_name(packet, HEADER.size)
        if position + 4 > len(packet):
            raise Refuse(FORMERR, "the question is cut short", ident=ident, flags=flags)
        qtype, qclass = TYPE_CLASS.unpack_from(packet, position)
        position += 4
        question = Query(ident, flags, qname, qtype, qclass, None)
        for _ in range(ancount + nscount):
            position = skip_record(packet, position)
        edns = None
        for _ in range(arcount):
            start = position
            position = skip_name(packet, position)
            if position + RR_FIXED.size > len(packet):
                raise Refuse(FORMERR, "a record is cut short", question)
            rtype, rclass, ttl, rdlength = RR_FIXED.unpack_from(packet, position)
            data = position + RR_FIXED.size
            position = data + rdlength
            if position > len(packet):
                raise Refuse(FORMERR, "a record's data runs past the end", question)
            if rtype != TYPE_OPT:
                continue
            if edns is not None:
                raise Refuse(FORMERR, "more than one OPT record", question)
            if packet[start] != 0 or data - start != 1 + RR_FIXED.size:
                raise Refuse(FORMERR, "the OPT record's owner is not the root", question)
            edns = read_opt(packet[data:position], rclass, ttl, question)
        if position != len(packet):
            raise Refuse(FORMERR, "bytes after the last record", question)
    except Refuse as refused:
        if opcode != 0:  # an unknown opcode is NOTIMP even when it is odd too
            raise Refuse(NOTIMP, f"opcode {opcode}", question, ident, flags) from None
        refused.ident, refused.flags = ident, flags
        refused.query = refused.query or question
        raise
    query = Query(ident, flags, qname, qtype, qclass, edns)
    if opcode != 0:
        raise Refuse(NOTIMP, f"opcode {opcode}", query, ident, flags)
    if edns is not None and edns.version > 0:
        raise Refuse(BADVERS, f"EDNS version {edns.version}", query, ident, flags)
    return query


def read_name(packet: bytes, position: int) -> tuple[bytes, int]:
    """(the name's uncompressed wire form, where the name ends in the packet)."""
    start, size_of_packet = position, len(packet)
    while position < size_of_packet:  # the common case: no compression pointer
        size = packet[position]
        if size == 0:
            return packet[start : position + 1], position + 1
        if size & 0xC0:
            break
        position += size + 1
        if position - start + 1 > MAX_NAME:
            raise Refuse(FORMERR, "a name longer than 255 bytes")
    else:
        raise Refuse(FORMERR, "a name is cut short")
    return _read_compressed(packet, start)


def _read_compressed(packet: bytes, position: int) -> tuple[bytes, int]:
    labels = []
    length = 0
    end = -1
    pointers = 0
    while True:
        if position >= len(packet):
            raise Refuse(FORMERR, "a name is cut short")
        size = packet[position]
        if size == 0:
            labels.append(b"\x00")
            if end < 0:
                end = position + 1
            break
        kind = size & 0xC0
        if kind == 0xC0:
            if position + 1 >= len(packet):
                raise Refuse(FORMERR, "a compression pointer is cut short")
            target = ((size & 0x3F) << 8) | packet[position + 1]
            pointers += 1
            if target >= position or pointers > MAX_POINTERS:
                raise Refuse(FORMERR, "a compression pointer loops or points forward")
            if end < 0:
                end = position + 2
            position = target
            continue
        if kind:
            raise Refuse(FORMERR, "an extended label type")
        label = packet[position : position + 1 + size]
        if len(label) != size + 1:
            raise Refuse(FORMERR, "a label is cut short")
        length += size + 1
        if length + 1 > MAX_NAME:
            raise Refuse(FORMERR, "a name longer than 255 bytes")
        labels.append(label)
        position += size + 1
    return b"".join(labels), end


def skip_name(packet: bytes, position: int) -> int:
    return read_name(packet, position)[1]


def skip_record(packet: bytes, position: int) -> int:
    position = skip_name(packet, position)
    if position + RR_FIXED.size > len(packet):
        raise Refuse(FORMERR, "a record is cut short")
    rdlength = RR_FIXED.unpack_from(packet, position)[3]
    position += RR_FIXED.size + rdlength
    if position > len(packet):
        raise Refuse(FORMERR, "a record's data runs past the end")
    return position


def read_opt(data: bytes, payload: int, ttl: int, question: Query) -> Edns:
    """The OPT record's fields and options; unknown options are ignored. A bad
    option is FORMERR, answered with an OPT record of its own."""
    version = (ttl >> 16) & 0xFF
    do = bool(ttl & 0x8000)
    try:
        return Edns(payload, version, do, read_options(data, question))
    except Refuse as refused:
        edns = Edns(payload, 0, do, None)
        refused.query = Query(
            question.ident, question.flags, question.qname, question.qtype, question.qclass, edns
        )
        raise


def read_options(data: bytes, question: Query) -> ClientSubnet | None:
    ecs = None
    position = 0
    while position < len(data):
        if position + OPTION.size > len(data):
            raise Refuse(FORMERR, "an EDNS option is cut short", question)
        code, size = OPTION.unpack_from(data, position)
        body = data[position + OPTION.size : position + OPTION.size + size]
        if len(body) != size:
            raise Refuse(FORMERR, "an EDNS option runs past the OPT record", question)
        position += OPTION.size + size
        if code == OPTION_ECS:
            if ecs is not None:
                raise Refuse(FORMERR, "more than one client subnet option", question)
            ecs = read_ecs(body, question)
    return ecs


def read_ecs(body: bytes, question: Query) -> ClientSubnet:
    """RFC 7871 §6 and §7.1.1: a malformed option is FORMERR."""
    if len(body) < 4:
        raise Refuse(FORMERR, "a client subnet option shorter than 4 bytes", question)
    family, source, scope = struct.unpack_from("!HBB", body)
    address = body[4:]
    if family not in (1, 2):
        raise Refuse(FORMERR, f"client subnet family {family}", question)
    bits = 32 if family == 1 else 128
    if source > bits:
        raise Refuse(FORMERR, f"client subnet source prefix /{source}", question)
    if scope != 0:
        raise Refuse(FORMERR, "a client subnet query with a scope prefix", question)
    if len(address) != (source + 7) // 8:
        raise Refuse(FORMERR, "a client subnet address of the wrong length", question)
    if source % 8 and address and address[-1] & (0xFF >> (source % 8)):
        raise Refuse(FORMERR, "client subnet address bits beyond its prefix", question)
    return ClientSubnet(family, source, address)


def opt_record(payload: int, do: bool, extended_rcode: int = 0, options: bytes = b"") -> bytes:
    """An OPT record (version 0) as an answer's last additional record."""
    ttl = (extended_rcode << 24) | (0x8000 if do else 0)
    return b"\x00" + RR_FIXED.pack(TYPE_OPT, payload, ttl, len(options)) + options
