"""Zones compiled for the wire: answers assembled from pre-encoded pieces, no objects per query.

Each zone becomes a dict keyed by the lower-cased wire form of owner names. A node maps each type
to its RRs already encoded with the owner as a pointer to the question (``0xC00C``): an exact
match and a wildcard synthesis (RFC 4592: the owner *is* the question name) use the same bytes.
What needs the full answer engine (CNAME and DNAME, delegations, dynamic records, additional-
section processing, ANY) is marked SLOW, and the caller answers it the general way.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import dns.rdataclass
import dns.rdatatype

from anycastedge.dns.zone import Name, RRset, Zone, ZoneSet, target_addresses

SLOW = None  # a node or a type the general engine must answer


@dataclass(frozen=True, slots=True)
class WithTargets:
    """MX or SRV RRs (owner a pointer to the question, targets uncompressed) and where in them
    each target name starts: its addresses go into the additional section (RFC 1034 3.6.2)."""

    count: int
    rrs: bytes
    targets: tuple[tuple[bytes, int], ...]  # lower-cased wire target, offset in ``rrs``


WireNode = dict[int, "tuple[int, bytes] | WithTargets | None"]  # type -> RRs, or SLOW


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
    ns: RRset
    glue: tuple[RRset, ...]
    _bodies: dict[int, tuple[int, int, bytes]] = field(default_factory=dict)

    def referral(self, qlen: int) -> tuple[int, int, bytes]:
        """NS count, glue count and the RRs, for a question name of ``qlen`` octets."""
        body = self._bodies.get(qlen)
        if body is None:
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


# Types whose RDATA holds names that NSD compresses or that trigger additional-section processing
# (RFC 3597 section 4, RFC 1034 3.6.2, RFC 2782): answered by the engine, where the renderer
# compresses them exactly as a peer would.
_NAME_TYPES = frozenset(
    int(t)
    for t in (
        dns.rdatatype.NS, dns.rdatatype.CNAME, dns.rdatatype.SOA, dns.rdatatype.MX,
        dns.rdatatype.SRV, dns.rdatatype.DNAME, dns.rdatatype.MINFO, dns.rdatatype.MB,
        dns.rdatatype.MG, dns.rdatatype.MR, dns.rdatatype.MD, dns.rdatatype.MF,
        dns.rdatatype.RP, dns.rdatatype.AFSDB, dns.rdatatype.KX, dns.rdatatype.PX,
        dns.rdatatype.NAPTR,
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
_RR_HEADER = struct.Struct("!HHHIH")  # owner pointer, type, class, TTL, RDLENGTH
_QUESTION_POINTER = 0xC00C
_U16 = struct.Struct("!H")
_RR_TAIL = struct.Struct("!HHIH")  # type, class, TTL, RDLENGTH


def encode_rrset(rrset: RRset) -> tuple[int, bytes]:
    """The RRs of ``rrset`` with the owner as a pointer to the question; RDATA uncompressed."""
    out = bytearray()
    for rdata in rrset:
        wire = rdata.to_wire()
        assert wire is not None
        out += _RR_HEADER.pack(_QUESTION_POINTER, rrset.rdtype, rrset.rdclass, rrset.ttl, len(wire))
        out += wire
    return len(rrset), bytes(out)


@dataclass(slots=True)
class CompiledZone:
    """One zone's nodes in wire form, and the pieces every positive or negative answer shares."""

    origin: bytes  # lower-cased wire name
    label: str  # the zone's metric label
    nodes: dict[bytes, WireNode | CnameNode | CutNode | None]
    ns_rrset: RRset | None  # the apex NS set, added to positive answers with its addresses
    glue: tuple[RRset, ...]  # the apex NS targets' addresses, in the engine's order
    glue_names: frozenset[bytes]  # their owners: an answer about one leaves it out of additional
    negative: tuple[int, bytes]  # apex length, the SOA RR after its owner (negative answers)
    _tails: dict[int, tuple[int, int, bytes, bytes]] = field(default_factory=dict)
    _soas: dict[int, bytes] = field(default_factory=dict)

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
        wire = _wire(name)
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


def _wire(name: Name) -> bytes:
    wire = name.to_wire()
    assert wire is not None
    return wire


def _below(name: bytes, subtrees: set[bytes]) -> bool:
    """Whether ``name`` (wire) is one of ``subtrees`` or lies below one."""
    at = 0
    while name[at]:
        if name[at:] in subtrees:
            return True
        at += name[at] + 1
    return False


def compile_zone(zone: Zone, label: str) -> CompiledZone:
    """The wire form of ``zone``; everything the fast path cannot answer is SLOW."""
    nodes: dict[bytes, WireNode | CnameNode | CutNode | None] = {}
    origin = _wire(zone.origin)
    empty: WireNode = {}
    # Delegations and DNAMEs change the answer for every name below them: those subtrees, and
    # dynamic records, are the engine's.
    subtrees = {
        _wire(name)
        for name, node in zone.nodes.items()
        if dns.rdatatype.DNAME in node or name in zone.cuts
    }
    dynamic = {name for (name, _rdtype) in zone.dynamic}
    for name, node in zone.nodes.items():
        key = _wire(name)
        if name in zone.cuts and name not in dynamic and not _below(key[key[0] + 1 :], subtrees):
            cut_ns = node[dns.rdatatype.NS]
            nodes[key] = CutNode(origin, key, cut_ns, _addresses(zone, cut_ns))
            continue
        if name in dynamic or (subtrees and _below(key, subtrees)):
            nodes[key] = SLOW
            continue
        cname = node.get(dns.rdatatype.CNAME)
        if cname is not None:
            # The engine follows a chain only inside the zone; a single static CNAME whose
            # target is here is the fast path's, anything longer or stranger the engine's.
            target = cname[0].target.canonicalize()
            if len(node) == 1:
                inside = target.is_subdomain(zone.origin)
                nodes[key] = CnameNode(encode_rrset(cname)[1], _wire(target) if inside else None)
            else:
                nodes[key] = SLOW
            continue
        nodes[key] = {int(rdtype): _entry(zone, rrset) for rdtype, rrset in node.items()}
    for name in zone.names:
        key = _wire(name)
        # Empty non-terminals exist: NODATA, not NXDOMAIN.
        nodes.setdefault(key, SLOW if subtrees and _below(key, subtrees) else dict(empty))
    ns = zone.nodes[zone.origin].get(dns.rdatatype.NS)
    glue = _addresses(zone, ns) if ns is not None else ()
    soa = zone.negative_soa
    rdata = soa[0].to_wire()
    assert rdata is not None
    negative = struct.pack("!HHIH", soa.rdtype, soa.rdclass, soa.ttl, len(rdata)) + rdata
    glue_names = frozenset(_wire(rrset.name).lower() for rrset in glue)
    return CompiledZone(origin, label, nodes, ns, glue, glue_names, (len(origin), negative))


# Where the target name starts in the RDATA of the types whose targets bring addresses.
_TARGET_AT = {int(dns.rdatatype.MX): 2, int(dns.rdatatype.SRV): 6}


def _entry(zone: Zone, rrset: RRset) -> tuple[int, bytes] | WithTargets | None:
    rdtype = int(rrset.rdtype)
    skip = _TARGET_AT.get(rdtype)
    if skip is not None:
        count, rrs = encode_rrset(rrset)
        targets = []
        at = 0
        for rdata in rrset:
            target = rdata.exchange if rdtype == dns.rdatatype.MX else rdata.target
            if target.is_subdomain(zone.origin):
                targets.append((_wire(target.canonicalize()), at + 12 + skip))
            at += 12 + ((rrs[at + 10] << 8) | rrs[at + 11])
        return WithTargets(count, rrs, tuple(targets))
    return SLOW if rdtype in _NAME_TYPES else encode_rrset(rrset)


def _addresses(zone: Zone, ns: RRset) -> tuple[RRset, ...]:
    """The in-zone addresses of ``ns``'s targets, each once, in the engine's order."""
    return tuple(target_addresses(zone, (rdata.target for rdata in ns), set()))


def compile_zones(zones: ZoneSet) -> dict[bytes, CompiledZone]:
    """Every zone compiled, keyed by its lower-cased wire name."""
    out = {}
    for zone in zones:
        compiled = compile_zone(zone, zone.origin.to_text(omit_final_dot=True) or ".")
        out[compiled.origin] = compiled
    return out


IN = int(dns.rdataclass.IN)
