"""Zones compiled for the wire: answers assembled from pre-encoded pieces, no objects per query.

Each zone is a dict keyed by the lower-cased wire form of owner names; it is the zone's only
copy of its data (the engine reads it through ``dns.zone``'s views). A node maps each type to its
RRs already encoded with the owner as a pointer to the question (``0xC00C``): an exact match and
a wildcard synthesis (RFC 4592: the owner *is* the question name) use the same bytes. What needs
the full answer engine (CNAME and DNAME chains, dynamic records, types with names in their data,
ANY) is wrapped (``Held``, ``SlowNode``), and the caller answers it the general way.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Name = dns.name.Name
RRset = dns.rrset.RRset


@dataclass(frozen=True, slots=True)
class Held:
    """RRs the engine answers (RDATA with names that a peer compresses, SOA, NS, DNAME)."""

    count: int
    rrs: bytes


@dataclass(frozen=True, slots=True)
class WithTargets:
    """MX or SRV RRs (owner a pointer to the question, targets uncompressed) and where in them
    each target name starts: its addresses go into the additional section (RFC 1034 3.6.2)."""

    count: int
    rrs: bytes
    targets: tuple[tuple[bytes, int], ...]  # lower-cased wire target, offset in ``rrs``


# type -> RRs: (count, RRs) for the fast path, or wrapped for the engine
Entry = tuple[int, bytes] | Held | WithTargets
WireNode = dict[int, Entry]


@dataclass(frozen=True, slots=True)
class CnameNode:
    """A static CNAME: its RR, and the lower-cased wire target to follow inside the zone."""

    rr: bytes  # owner pointer to the question, RDATA the target uncompressed
    target: bytes | None  # None: outside the zone, where the resolver follows it


@dataclass(slots=True)
class CutNode:
    """A delegation: every question at or below it gets the referral (NS and glue)."""

    origin: bytes  # the zone's apex, lower-cased wire
    name: bytes  # the cut, lower-cased wire
    types: WireNode  # NS, and DS if the child is signed
    ns: RRset | None = None  # set when the zone is assembled, with the glue
    glue: tuple[RRset, ...] = ()
    _bodies: dict[int, tuple[int, int, bytes]] = field(default_factory=dict)

    def referral(self, qlen: int) -> tuple[int, int, bytes]:
        """NS count, glue count and the RRs, for a question name of ``qlen`` octets."""
        body = self._bodies.get(qlen)
        if body is None:
            assert self.ns is not None
            names = NameWriter(
                {self.name: 12 + qlen - len(self.name), self.origin: 12 + qlen - len(self.origin)}
            )
            body = self._bodies[qlen] = (
                len(self.ns),
                sum(len(g) for g in self.glue),
                encode_section(self.ns, names)
                + b"".join(encode_section(g, names) for g in self.glue),
            )
        return body


@dataclass(frozen=True, slots=True)
class SlowNode:
    """A node whose every question the engine answers: a dynamic record's owner, or a name at or
    below a DNAME (or below a delegation that is itself the engine's)."""

    types: WireNode


Node = WireNode | CnameNode | CutNode | SlowNode

# Types whose RDATA holds names that NSD compresses or that trigger additional-section processing
# (RFC 3597 section 4, RFC 1034 3.6.2, RFC 2782): answered by the engine, where the renderer
# compresses them exactly as a peer would. MX and SRV are the fast path's (WithTargets).
HELD_TYPES = frozenset(
    int(t)
    for t in (
        dns.rdatatype.NS, dns.rdatatype.CNAME, dns.rdatatype.SOA, dns.rdatatype.DNAME,
        dns.rdatatype.MINFO, dns.rdatatype.MB, dns.rdatatype.MG, dns.rdatatype.MR,
        dns.rdatatype.MD, dns.rdatatype.MF, dns.rdatatype.RP, dns.rdatatype.AFSDB,
        dns.rdatatype.KX, dns.rdatatype.PX, dns.rdatatype.NAPTR,
    )
)  # fmt: skip
# Question types the engine handles specially.
SLOW_QTYPES = frozenset(
    int(t)
    for t in (
        dns.rdatatype.ANY, dns.rdatatype.AXFR, dns.rdatatype.IXFR, dns.rdatatype.OPT,
        dns.rdatatype.MAILA, dns.rdatatype.MAILB, dns.rdatatype.TKEY, dns.rdatatype.DS,
        dns.rdatatype.NS, dns.rdatatype.CNAME, dns.rdatatype.DNAME, dns.rdatatype.SOA,
    )
)  # fmt: skip
_IN = dns.rdataclass.IN
IN = int(_IN)
CNAME = int(dns.rdatatype.CNAME)
DNAME = int(dns.rdatatype.DNAME)
_RR_HEADER = struct.Struct("!HHHIH")  # owner pointer, type, class, TTL, RDLENGTH
_QUESTION_POINTER = 0xC00C
_U16 = struct.Struct("!H")
_RR_TAIL = struct.Struct("!HHIH")  # type, class, TTL, RDLENGTH
# Where the target name starts in the RDATA of the types whose targets bring addresses.
_TARGET_AT = {int(dns.rdatatype.MX): 2, int(dns.rdatatype.SRV): 6}


def encode_rrs(rdtype: int, ttl: int, rdatas: Iterable[bytes]) -> bytes:
    """RRs of one RRset from their RDATA, the owner a pointer to the question."""
    return b"".join(
        _RR_HEADER.pack(_QUESTION_POINTER, rdtype, IN, ttl, len(rdata)) + rdata for rdata in rdatas
    )


def negative_tail(soa: RRset) -> tuple[int, bytes]:
    """The apex's wire length, and the SOA RR after its owner name (RDATA names uncompressed)."""
    rdata = soa[0].to_wire()
    assert rdata is not None
    apex_length = sum(len(label) + 1 for label in soa.name.labels)
    return apex_length, struct.pack("!HHIH", soa.rdtype, soa.rdclass, soa.ttl, len(rdata)) + rdata


def make_entry(rdtype: int, count: int, rrs: bytes, origin: bytes) -> Entry:
    """The node entry for ``count`` RRs of ``rdtype`` in the zone ``origin`` (wire)."""
    skip = _TARGET_AT.get(rdtype)
    if skip is not None:
        targets = []
        for _, start, _ in _rdatas(count, rrs):
            target = _name_at(rrs, start + skip).lower()
            if is_below_or_at(target, origin):
                targets.append((target, start + skip))
        return WithTargets(count, rrs, tuple(targets))
    if rdtype in HELD_TYPES:
        return Held(count, rrs)
    return (count, rrs)


def raw(entry: Entry) -> tuple[int, bytes]:
    """Any entry's RR count and RRs."""
    if isinstance(entry, tuple):
        return entry
    return entry.count, entry.rrs


def node_types(node: Node) -> WireNode:
    """The types of any node, as stored."""
    if type(node) is dict:
        return node
    if type(node) is CnameNode:
        return {CNAME: Held(1, node.rr)}
    return node.types  # type: ignore[union-attr]


def decode(owner: Name, rdtype: int, entry: Entry) -> RRset:
    """The RRset an entry holds, owned by ``owner``."""
    count, rrs = raw(entry)
    kind = dns.rdatatype.RdataType.make(rdtype)
    rrset = RRset(owner, _IN, kind)
    for at, start, length in _rdatas(count, rrs):
        ttl = struct.unpack_from("!I", rrs, at + 6)[0]
        rrset.add(dns.rdata.from_wire(_IN, kind, rrs, start, length), ttl)
    return rrset


def rdata_names(entry: Entry, skip: int = 0) -> list[bytes]:
    """The lower-cased name ``skip`` octets into each RR's RDATA (NS: 0, MX: 2, SRV: 6)."""
    count, rrs = raw(entry)
    return [_name_at(rrs, start + skip).lower() for _, start, _ in _rdatas(count, rrs)]


def _rdatas(count: int, rrs: bytes) -> Iterator[tuple[int, int, int]]:
    """Each RR's offset, its RDATA's offset and length."""
    at = 0
    for _ in range(count):
        length = (rrs[at + 10] << 8) | rrs[at + 11]
        yield at, at + 12, length
        at += 12 + length


def _name_at(data: bytes, at: int) -> bytes:
    """The uncompressed wire name starting at ``at``."""
    end = at
    while data[end]:
        end += data[end] + 1
    return data[at : end + 1]


def is_below_or_at(name: bytes, origin: bytes) -> bool:
    """Whether wire ``name`` (lower case) is ``origin`` or a name below it."""
    at = 0
    cut = len(name) - len(origin)
    while at < cut:
        at += name[at] + 1
    return at == cut and name[at:] == origin


def below(name: bytes, subtrees: set[bytes] | frozenset[bytes]) -> bool:
    """Whether ``name`` (wire) is one of ``subtrees`` or lies below one."""
    at = 0
    while name[at]:
        if name[at:] in subtrees:
            return True
        at += name[at] + 1
    return False


def compile_nodes(
    origin: bytes,
    nodes: dict[bytes, Node],
    cuts: set[bytes],
    dnames: set[bytes],
    dynamic: set[bytes],
    cnames: Iterable[bytes],
) -> None:
    """Mark in place, in ``nodes`` (plain WireNodes, empty non-terminals included, nothing below
    a delegation), what only the engine answers; delegations become CutNodes and static CNAMEs
    CnameNodes. ``cuts``, ``dnames``, ``dynamic``, ``cnames``: the owners of each kind."""
    subtrees = cuts | dnames
    for key in cuts:
        if key not in dynamic and not below(key[key[0] + 1 :], subtrees):
            nodes[key] = CutNode(origin, key, nodes[key])  # type: ignore[arg-type]
        else:
            nodes[key] = SlowNode(nodes[key])  # type: ignore[arg-type]
    for key in dynamic:
        node = nodes[key]
        if type(node) is dict:
            nodes[key] = SlowNode(node)
    if dnames:
        # A DNAME changes the answer for every name below it.
        for key, node in nodes.items():
            if type(node) is dict and below(key, dnames):
                nodes[key] = SlowNode(node)
    for key in cnames:
        node = nodes[key]
        if type(node) is not dict:
            continue
        # The engine follows a chain only inside the zone; a single static CNAME whose target
        # is here is the fast path's, anything longer or stranger the engine's.
        if len(node) != 1:
            nodes[key] = SlowNode(node)
            continue
        rr = raw(node[CNAME])[1]
        target = _name_at(rr, 12).lower()
        nodes[key] = CnameNode(rr, target if is_below_or_at(target, origin) else None)


@dataclass(slots=True)
class CompiledZone:
    """One zone's nodes in wire form, and the pieces every positive or negative answer shares."""

    origin: bytes  # lower-cased wire name
    label: str  # the zone's metric label
    nodes: dict[bytes, Node]
    negative: tuple[int, bytes]  # apex length, the SOA RR after its owner (negative answers)
    ns_rrset: RRset | None = None  # the apex NS set, added to positive answers with its addresses
    glue: tuple[RRset, ...] = ()  # the apex NS targets' addresses, in the engine's order
    glue_names: frozenset[bytes] = frozenset()  # their owners: an answer about one leaves it out
    _tails: dict[int, tuple[int, int, bytes, bytes]] = field(default_factory=dict)
    _soas: dict[int, bytes] = field(default_factory=dict)
    # RRsets the answer engine decoded, by (owner key, type): the apex and the NS hosts come up
    # in most of its answers (bounded by dns.zone's views).
    decoded: dict[tuple[bytes, int], RRset] = field(default_factory=dict)

    def soa_after(self, qlen: int) -> bytes:
        """The negative SOA RR, owned by the apex within a question name of ``qlen`` octets."""
        rr = self._soas.get(qlen)
        if rr is None:
            apex_length, soa = self.negative
            rr = self._soas[qlen] = _U16.pack(0xC000 | (12 + qlen - apex_length)) + soa
        return rr

    def tail(self, apex_at: int) -> tuple[int, int, bytes, bytes]:
        """Authority NS and additional addresses of a positive answer, for a message whose apex
        name is at offset ``apex_at``: NS count, AR count, the NS RRs, the address RRs."""
        cached = self._tails.get(apex_at)
        if cached is None:
            cached = self._tails[apex_at] = self._render_tail(apex_at)
        return cached

    def _render_tail(self, apex_at: int) -> tuple[int, int, bytes, bytes]:
        # Names below the apex end in a pointer to it, so the bytes depend on nothing but where
        # the apex is (a few bytes longer than full compression; a response that then does not
        # fit goes to the general renderer, which compresses fully).
        if self.ns_rrset is None:
            return 0, 0, b"", b""
        names = NameWriter({self.origin: apex_at})
        authority = encode_section(self.ns_rrset, names)
        additional = b"".join(encode_section(g, names) for g in self.glue)
        return len(self.ns_rrset), sum(len(g) for g in self.glue), authority, additional


@dataclass(frozen=True, slots=True)
class NameWriter:
    """Writes names ending in a pointer to one of ``suffixes`` (lower-cased wire -> offset in
    the message): names at a known place, such as the zone apex inside the question name."""

    suffixes: dict[bytes, int]

    def write(self, name: Name) -> bytes:
        """``name`` in wire form, compressed against the longest known suffix."""
        wire = to_wire(name)
        lower = wire.lower()
        at = 0
        while lower[at]:
            offset = self.suffixes.get(lower[at:])
            if offset is not None:
                return wire[:at] + _U16.pack(0xC000 | offset)
            at += lower[at] + 1
        return wire


def encode_section(rrset: RRset, names: NameWriter) -> bytes:
    """``rrset`` with its owner and (for NS) its targets compressed against ``names``."""
    owner = names.write(rrset.name)
    out = bytearray()
    for rdata in rrset:
        if rrset.rdtype == dns.rdatatype.NS:
            data = names.write(rdata.target)
        else:
            wire = rdata.to_wire()
            assert wire is not None
            data = wire
        out += owner + _RR_TAIL.pack(rrset.rdtype, rrset.rdclass, rrset.ttl, len(data)) + data
    return bytes(out)


def repoint(rrs: bytes, count: int, owner: int) -> bytes:
    """``rrs`` (encoded with the owner as a pointer to the question) owned by the name at
    offset ``owner`` of the message instead."""
    pointer = _U16.pack(0xC000 | owner)
    out = []
    at = 0
    for _ in range(count):
        end = at + 12 + ((rrs[at + 10] << 8) | rrs[at + 11])
        out.append(pointer + rrs[at + 2 : end])
        at = end
    return b"".join(out)


def to_wire(name: Name) -> bytes:
    """``name`` (absolute) in uncompressed wire form."""
    wire = name.to_wire()
    assert wire is not None
    return wire
