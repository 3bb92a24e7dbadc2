"""Our own version of the checks ISC's DNS compliance tester (``genreport``) makes of a server.

genreport (isc-projects/DNS-Compliance-Testing, the tool behind DNS Flag Day's EDNS tests) is a C
program that no registry this project may install from carries, so it cannot run here
(docs/dns-behaviour.md, "Compliance checks"). This module sends the same kinds of request, one
per named probe, and judges the reply by the rules that tool publishes, written anew: what each
probe sends is in its ``Probe`` row, and :func:`problems` says what a reply got wrong, with the
tags genreport would print (``rd``, ``noopt``, ``badversion``, ...). A conforming reply has none.

Every probe is a question for the zone's apex (SOA unless a row says otherwise), except the
unknown-opcode probes, which are a bare header, as genreport sends them.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

import dns.exception
import dns.message
import dns.name
import dns.rdatatype

QUERY, NOTIMP, NOERROR, BADVERS = 0, 4, 0, 16
# Header flag bits (RFC 1035 4.1.1, RFC 4035 3.1.6 / 3.2.2); Z is the one still unassigned.
QR, AA, TC, RD, RA, Z, AD, CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0040, 0x0020, 0x0010
DO = 0x8000  # the only EDNS flag defined (RFC 3225)
OPT = 41
UNKNOWN_OPTION = 100  # an EDNS option code nobody implements: never to be echoed
NSID, ECS, EXPIRE, COOKIE = 3, 8, 9, 10
CLIENT_COOKIE = bytes(range(1, 9))


@dataclass(frozen=True)
class Probe:
    """One request: what genreport's probe of the same name sends."""

    name: str
    qtype: int = dns.rdatatype.SOA
    payload: int = 0  # EDNS UDP payload size; 0: no OPT at all
    ednsflags: int = 0
    version: int = 0
    options: tuple[tuple[int, bytes], ...] = ()
    tcp: bool = False
    flags: int = 0  # header flags set in the request (AA, TC, RD, RA, Z, AD, CD)
    opcode: int = QUERY
    ignore_tc: bool = False  # judge the UDP reply as it is, truncated or not

    @property
    def cookie(self) -> bool:
        return any(code == COOKIE for code, _ in self.options)


_ECS_ANY = struct.pack("!HBB", 1, 0, 0)  # family IPv4, source /0, scope 0, no address octets
_OPTLIST = ((NSID, b""), (ECS, _ECS_ANY), (EXPIRE, b""), (COOKIE, CLIENT_COOKIE))
_ALL_FLAGS = AA | TC | RD | RA | Z | AD | CD

#: The probes of genreport's default ("EDNS") and "FULL" groups, and the two of "COMM", that
#: an authoritative-only server without DNSSEC can be judged by (its TSIG probe and ping are not).
PROBES = (
    Probe("dns"),
    Probe("aa", flags=AA),
    Probe("ad", flags=AD),
    Probe("cd", flags=CD),
    Probe("ra", flags=RA),
    Probe("rd", flags=RD),
    Probe("tc", flags=TC),
    Probe("zflag", flags=Z),
    Probe("opcode", opcode=15, qtype=0),
    Probe("opcodeflg", opcode=15, qtype=0, flags=_ALL_FLAGS),
    Probe("type666", qtype=666),
    Probe("tcp", tcp=True),
    Probe("edns", payload=4096),
    Probe("edns1", payload=4096, version=1),
    Probe("edns@512", qtype=dns.rdatatype.DNSKEY, payload=512, ednsflags=DO, ignore_tc=True),
    Probe("ednsopt", payload=4096, options=((UNKNOWN_OPTION, b""),)),
    Probe("edns1opt", payload=4096, version=1, options=((UNKNOWN_OPTION, b""),)),
    Probe("do", payload=4096, ednsflags=DO),
    Probe("docd", payload=4096, ednsflags=DO, flags=CD),
    Probe("edns1do", payload=4096, ednsflags=DO, version=1),
    Probe("ednsflags", payload=4096, ednsflags=0x0080),  # an EDNS flag nobody defined
    Probe("optlist", payload=4096, options=_OPTLIST),
    Probe("ednsnsid", payload=4096, options=((NSID, b""),)),
    Probe("ednscookie", payload=4096, options=((COOKIE, CLIENT_COOKIE),)),
    Probe("ednsexpire", payload=4096, options=((EXPIRE, b""),)),
    Probe("ednssubnet", payload=4096, options=((ECS, _ECS_ANY),)),
    Probe("edns1nsid", payload=4096, version=1, options=((NSID, b""),)),
    Probe("edns1cookie", payload=4096, version=1, options=((COOKIE, CLIENT_COOKIE),)),
    Probe("edns1expire", payload=4096, version=1, options=((EXPIRE, b""),)),
    Probe("edns1subnet", payload=4096, version=1, options=((ECS, _ECS_ANY),)),
    Probe("ednstcp", qtype=dns.rdatatype.DNSKEY, payload=512, ednsflags=DO, tcp=True),
    Probe("bind11", payload=4096, ednsflags=DO, options=((COOKIE, CLIENT_COOKIE),)),
    Probe("dig11", payload=4096, flags=RD | AD, options=((COOKIE, CLIENT_COOKIE),)),
)


def request(probe: Probe, zone: str, qid: int) -> bytes:
    """The probe's request in wire format."""
    header_flags = (probe.opcode << 11) | probe.flags
    if probe.opcode != QUERY:
        return struct.pack("!HHHHHH", qid, header_flags, 0, 0, 0, 0)
    name = dns.name.from_text(zone).to_wire()
    assert name is not None
    question = name + struct.pack("!HH", probe.qtype, 1)
    opt = b""
    if probe.payload:
        data = b"".join(struct.pack("!HH", code, len(v)) + v for code, v in probe.options)
        ttl = (probe.version << 16) | probe.ednsflags
        opt = b"\0" + struct.pack("!HHIH", OPT, probe.payload, ttl, len(data)) + data
    header = struct.pack("!HHHHHH", qid, header_flags, 1, 0, 0, 1 if opt else 0)
    return header + question + opt


@dataclass
class Reply:
    """What a server answered, decoded as far as the checks need."""

    wire: bytes
    tcp: bool
    flags: int = 0
    opcode: int = 0
    rcode: int = 0  # with the OPT's extended bits
    counts: tuple[int, int, int, int] = (0, 0, 0, 0)
    opt: bool = False
    opt_version: int = 0
    opt_flags: int = 0
    options: list[int] = field(default_factory=list)
    soa_in_answer: bool = False
    malformed: str = ""

    @property
    def header(self) -> int:
        """The header's flag bits without opcode and rcode: what two servers should agree on."""
        return self.flags & (AA | TC | RD | RA | Z | AD | CD | QR)


def decode(wire: bytes, tcp: bool, zone: str) -> Reply:
    """Decode a reply (header by hand, sections by dnspython)."""
    reply = Reply(wire, tcp)
    if len(wire) < 12:
        reply.malformed = "short"
        return reply
    _, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", wire)
    reply.flags, reply.opcode, reply.rcode = flags, (flags >> 11) & 0xF, flags & 0xF
    reply.counts = (qd, an, ns, ar)
    if not qd and not an and not ns and not ar:
        if len(wire) != 12:
            reply.malformed = "trailing bytes after an empty message"
        return reply
    try:
        message = dns.message.from_wire(wire, ignore_trailing=False)
    except dns.exception.DNSException as error:
        reply.malformed = f"{type(error).__name__}: {error}"
        return reply
    apex = dns.name.from_text(zone)
    reply.soa_in_answer = any(
        r.rdtype == dns.rdatatype.SOA and r.name == apex for r in message.answer
    )
    if message.opt is not None:
        reply.opt = True
        reply.opt_version = message.edns
        reply.opt_flags = message.ednsflags & 0xFFFF
        reply.options = [option.otype for option in message.options]
        reply.rcode = message.rcode()
    return reply


def problems(probe: Probe, reply: Reply) -> list[str]:
    """What is wrong with ``reply`` to ``probe``, as genreport's tags; [] for a conforming one."""
    if reply.malformed:
        return [f"malformed ({reply.malformed})"]
    out: list[str] = []
    flags = reply.flags
    qd, an, ns, ar = reply.counts
    if not flags & QR:
        out.append("noqr")
    if reply.opcode != probe.opcode:
        out.append(f"opcode={reply.opcode}")
    if probe.opcode != QUERY:
        # Not understood, so nothing to say about it: a bare header.
        sections = ("question", "answer", "authority", "additional")
        for section, count in zip(sections, reply.counts, strict=True):
            if count:
                out.append(f"non-empty-{section}-section")
    expected = BADVERS if probe.version else NOTIMP if probe.opcode != QUERY else NOERROR
    if reply.rcode != expected:
        out.append(f"rcode={reply.rcode}")
    if reply.opt:
        if reply.opt_version != 0:
            out.append("version-not-zero")
        if probe.payload == 0:
            out.append("opt")  # EDNS in a reply to a query without it
        if reply.opt_flags & ~DO & 0xFFFF:
            out.append("mbz")  # an EDNS flag echoed that nobody defined
        if probe.version and reply.rcode != BADVERS:
            out.append("badversion")
        if UNKNOWN_OPTION in reply.options:
            out.append("echoed")
    elif probe.payload:
        out.append("noopt")
    if probe.qtype == dns.rdatatype.SOA and probe.opcode == QUERY:
        if reply.rcode == NOERROR and not probe.version and not reply.soa_in_answer:
            out.append("nosoa")
        if reply.soa_in_answer and (probe.version or reply.rcode != NOERROR):
            out.append("soa")
    request_opcode_is_query = probe.opcode == QUERY
    # AA, RA, RD, AD and CD are defined for QUERY only.
    if request_opcode_is_query and reply.rcode == NOERROR and not probe.version and not flags & AA:
        out.append("noaa")
    if flags & AA and not request_opcode_is_query:
        out.append("aa")
    if flags & RA and not request_opcode_is_query:
        out.append("ra")
    if flags & RD and (not request_opcode_is_query or not probe.flags & RD):
        out.append("rd")
    if not flags & RD and probe.flags & RD and request_opcode_is_query:
        out.append("nord")
    if flags & AD and (
        not request_opcode_is_query or (not probe.flags & AD and not probe.ednsflags & DO)
    ):
        out.append("ad")
    if flags & CD and (not request_opcode_is_query or not probe.flags & CD):
        out.append("cd")
    if flags & Z:
        out.append("z")
    if probe.ignore_tc and not reply.tcp and len(reply.wire) > (probe.payload or 512):
        out.append("toobig")
    return out


def ask(probe: Probe, zone: str, host: str, port: int, qid: int, timeout: float = 5.0) -> Reply:
    """Send the probe over UDP (falling back to TCP on TC=1 unless the probe ignores TC), or over
    TCP for a TCP probe; one bounded wait each."""
    wire = request(probe, zone, qid)
    if not probe.tcp:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.connect((host, port))
            sock.send(wire)
            while True:
                data = sock.recv(65535)
                if data[:2] == wire[:2]:
                    break
        reply = decode(data, False, zone)
        if not reply.flags & TC or probe.ignore_tc:
            return reply
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack("!H", len(wire)) + wire)
        data = _read_exactly(sock, struct.unpack("!H", _read_exactly(sock, 2))[0])
    return decode(data, True, zone)


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"connection closed after {len(data)} of {n} octets")
        data += chunk
    return data
