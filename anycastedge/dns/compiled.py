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

from anycastedge.dns.zone import Name, RRset, Zone, ZoneSet

SLOW = None  # a node or a type the general engine must answer
WireNode = dict[int, "tuple[int, bytes] | None"]  # type -> (RR count, RRs), or SLOW


@dataclass(frozen=True, slots=True)
class CnameNode:
    """A static CNAME: its RR, and the lower-cased wire target to follow inside the zone."""

    rr: bytes  # owner pointer to the question, RDATA the target uncompressed
    target: bytes


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
    nodes: dict[bytes, WireNode | CnameNode | None]
    ns_rrset: RRset | None  # the apex NS set, added to positive answers with its addresses
    glue: tuple[RRset, ...]  # the apex NS targets' addresses, in the engine's order
    glue_names: frozenset[bytes]  # their owners: an answer about one leaves it out of additional
    negative: tuple[int, bytes]  # apex length, the SOA RR after its owner (negative answers)
    _tails: dict[int, tuple[int, int, bytes]] = field(default_factory=dict)
    _soas: dict[int, bytes] = field(default_factory=dict)

    def soa_after(self, qlen: int) -> bytes:
        """The negative SOA RR, owned by the apex within a question name of ``qlen`` octets."""
        rr = self._soas.get(qlen)
        if rr is None:
            apex_length, soa = self.negative
            rr = self._soas[qlen] = _U16.pack(0xC000 | (12 + qlen - apex_length)) + soa
        return rr

    def tail(self, apex_at: int) -> tuple[int, int, bytes]:
        """Authority NS and additional addresses of a positive answer, for a message whose apex
        name is at offset ``apex_at``: NS count, AR count, the RRs."""
        cached = self._tails.get(apex_at)
        if cached is None:
            cached = self._tails[apex_at] = self._render_tail(apex_at)
        return cached

    def _render_tail(self, apex_at: int) -> tuple[int, int, bytes]:
        # Names below the apex end in a pointer to it, so the bytes depend on nothing but where
        # the apex is (a few bytes longer than full compression; a response that then does not
        # fit goes to the general renderer, which compresses fully).
        if self.ns_rrset is None:
            return 0, 0, b""
        apex = _U16.pack(0xC000 | apex_at)
        out = bytearray()
        for rdata in self.ns_rrset:
            target = self._name(rdata.target, apex)
            out += apex + _RR_TAIL.pack(2, 1, self.ns_rrset.ttl, len(target)) + target
        for rrset in self.glue:
            owner = self._name(rrset.name, apex)
            for rdata in rrset:
                wire = rdata.to_wire()
                assert wire is not None
                out += owner + _RR_TAIL.pack(rrset.rdtype, rrset.rdclass, rrset.ttl, len(wire))
                out += wire
        return len(self.ns_rrset), sum(len(g) for g in self.glue), bytes(out)

    def _name(self, name: Name, apex: bytes) -> bytes:
        wire = _wire(name)
        if wire.lower().endswith(self.origin) and len(wire) >= len(self.origin):
            return wire[: len(wire) - len(self.origin)] + apex
        return wire


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
    nodes: dict[bytes, WireNode | CnameNode | None] = {}
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
        if name in dynamic or (subtrees and _below(key, subtrees)):
            nodes[key] = SLOW
            continue
        cname = node.get(dns.rdatatype.CNAME)
        if cname is not None:
            # The engine follows a chain only inside the zone; a single static CNAME whose
            # target is here is the fast path's, anything longer or stranger the engine's.
            target = cname[0].target.canonicalize()
            if len(node) == 1 and target.is_subdomain(zone.origin):
                nodes[key] = CnameNode(encode_rrset(cname)[1], _wire(target))
            else:
                nodes[key] = SLOW
            continue
        nodes[key] = {
            int(rdtype): SLOW if rdtype in _NAME_TYPES else encode_rrset(rrset)
            for rdtype, rrset in node.items()
        }
    for name in zone.names:
        key = _wire(name)
        # Empty non-terminals exist: NODATA, not NXDOMAIN.
        nodes.setdefault(key, SLOW if subtrees and _below(key, subtrees) else dict(empty))
    ns = zone.nodes[zone.origin].get(dns.rdatatype.NS)
    glue: list[RRset] = []
    if ns is not None:
        seen = set()
        for rdata in ns:
            target = rdata.target.canonicalize()
            if target.is_subdomain(zone.origin):
                for address in zone.addresses(target):
                    if (address.name, address.rdtype) not in seen:
                        seen.add((address.name, address.rdtype))
                        glue.append(address)
    soa = zone.negative_soa
    rdata = soa[0].to_wire()
    assert rdata is not None
    negative = struct.pack("!HHIH", soa.rdtype, soa.rdclass, soa.ttl, len(rdata)) + rdata
    origin = _wire(zone.origin)
    glue_names = frozenset(_wire(rrset.name).lower() for rrset in glue)
    return CompiledZone(origin, label, nodes, ns, tuple(glue), glue_names, (len(origin), negative))


def compile_zones(zones: ZoneSet) -> dict[bytes, CompiledZone]:
    """Every zone compiled, keyed by its lower-cased wire name."""
    out = {}
    for zone in zones:
        compiled = compile_zone(zone, zone.origin.to_text(omit_final_dot=True) or ".")
        out[compiled.origin] = compiled
    return out


IN = int(dns.rdataclass.IN)
