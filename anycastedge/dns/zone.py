"""The zone model: immutable, lowercased, with delegations, glue and empty non-terminals known.

A zone's data lives once, in wire form, in its CompiledZone (``dns.compiled``); the answer engine
reads it through views that decode a node into dnspython RRsets when it asks for one.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import dns.name
import dns.rdatatype
import dns.rrset

from anycastedge.dns.compiled import (
    CompiledZone,
    CutNode,
    Held,
    Node,
    WireNode,
    compile_nodes,
    decode,
    encode_rrs,
    negative_tail,
    node_types,
    to_wire,
)
from anycastedge.errors import Problem
from anycastedge.gslb.model import DynamicRecord

Name = dns.name.Name
RRset = dns.rrset.RRset
NodeRRsets = Mapping[int, RRset]

WILDCARD = b"*"
DECODED_LIMIT = 10_000  # RRsets the engine's lookups keep decoded per zone
NS = int(dns.rdatatype.NS)
SOA = int(dns.rdatatype.SOA)


class NodeView(Mapping[Name, NodeRRsets]):
    """Wire-form nodes seen as dnspython RRsets by owner Name, each RRset decoded when first
    asked for and kept in ``decoded`` (the zone's bounded cache of decoded RRsets)."""

    __slots__ = ("_nodes", "_decoded")

    def __init__(self, nodes: Mapping[bytes, Node], decoded: dict[tuple[bytes, int], RRset]):
        self._nodes = nodes
        self._decoded = decoded

    def __getitem__(self, name: Name) -> NodeRRsets:
        key = name_key(name)
        node = self._nodes.get(key)
        if node is None:
            raise KeyError(name)
        if type(node) is CutNode and node.ns is not None:
            # Every referral needs the delegation's NS set: decoded once, when the zone was built.
            self._decoded[(key, NS)] = node.ns
        return _DecodedNode(name, key, node_types(node), self._decoded)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, Name):
            return False
        node = self._nodes.get(name_key(name))
        return node is not None and bool(node_types(node))

    def __iter__(self) -> Iterator[Name]:
        """Owners with data (not the empty non-terminals)."""
        for key, node in self._nodes.items():
            if node_types(node):
                yield dns.name.from_wire(key, 0)[0]

    def __len__(self) -> int:
        return sum(1 for node in self._nodes.values() if node_types(node))


def name_key(name: Name) -> bytes:
    """The lower-cased wire form of an absolute name: the key of its node."""
    return b"".join([bytes((len(label),)) + label for label in name.labels]).lower()


class _DecodedNode(Mapping[int, RRset]):
    """One node's types; an RRset is decoded on first access."""

    __slots__ = ("_owner", "_key", "_types", "_decoded")

    def __init__(
        self,
        owner: Name,
        key: bytes,
        types: WireNode,
        decoded: dict[tuple[bytes, int], RRset],
    ) -> None:
        self._owner = owner
        self._key = key
        self._types = types
        self._decoded = decoded

    def __getitem__(self, rdtype: int) -> RRset:
        entry = self._types[rdtype]
        rrset = self._decoded.get((self._key, rdtype))
        if rrset is None:
            rrset = decode(self._owner, rdtype, entry)
            if len(self._decoded) >= DECODED_LIMIT:
                self._decoded.clear()
            self._decoded[(self._key, rdtype)] = rrset
        return rrset

    def __contains__(self, rdtype: object) -> bool:
        return rdtype in self._types

    def __iter__(self) -> Iterator[int]:
        return iter(self._types)

    def __len__(self) -> int:
        return len(self._types)


class NameView:
    """Every name that exists in a zone, empty non-terminals included."""

    __slots__ = ("_nodes",)

    def __init__(self, nodes: Mapping[bytes, Node]) -> None:
        self._nodes = nodes

    def __contains__(self, name: object) -> bool:
        return isinstance(name, Name) and name_key(name) in self._nodes

    def __iter__(self) -> Iterator[Name]:
        return (dns.name.from_wire(key, 0)[0] for key in self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)


@dataclass(frozen=True, slots=True)
class Zone:
    """One zone's authoritative data and what a lookup needs to know about its shape."""

    origin: Name
    compiled: CompiledZone  # the data: authoritative nodes, NS/DS at the cuts, the SOA
    glue_nodes: dict[bytes, WireNode]  # A/AAAA of names at or below a cut (occluded)
    cuts: frozenset[Name]  # delegation points below the apex
    soa: RRset
    negative_soa: RRset  # the SOA with TTL min(TTL, MINIMUM), for negative answers
    digest: str  # hash of the content, the SOA serial excluded
    dynamic: Mapping[tuple[Name, int], DynamicRecord] = field(default_factory=dict)
    source: str = ""
    loaded_at: float = 0.0
    stamp: Hashable = None  # the file's state it was built from: unchanged, it is reused
    warnings: tuple[Problem, ...] = ()  # what building it warned about

    @property
    def nodes(self) -> NodeView:
        """Authoritative data by owner, plus NS/DS at the cuts."""
        return NodeView(self.compiled.nodes, self.compiled.decoded)

    @property
    def glue(self) -> NodeView:
        """A/AAAA of names at or below a cut (never an owner of ``nodes``: one cache serves)."""
        return NodeView(self.glue_nodes, self.compiled.decoded)

    @property
    def names(self) -> NameView:
        """Every name that exists, empty non-terminals included."""
        return NameView(self.compiled.nodes)

    @property
    def serial(self) -> int:
        """The SOA serial."""
        return int(self.soa[0].serial)

    def find_cut(self, qname: Name) -> Name | None:
        """The highest delegation point at or above ``qname``, if any."""
        if not self.cuts:
            return None
        labels = qname.labels
        depth = len(self.origin.labels)
        for i in range(len(labels) - depth - 1, -1, -1):
            candidate = Name(labels[i:])
            if candidate in self.cuts:
                return candidate
        return None

    def wildcard(self, name: Name) -> NodeRRsets | None:
        """The wildcard node that synthesizes ``name`` (RFC 4592), found at the closest encloser."""
        names = self.names
        encloser = name.parent()
        while encloser not in names:
            if encloser == self.origin:
                break
            encloser = encloser.parent()
        return self.nodes.get(Name((WILDCARD,) + encloser.labels))

    def addresses(self, name: Name) -> Iterator[RRset]:
        """A and AAAA RRsets for ``name``: authoritative data, glue, or (for a name that does
        not exist) synthesized from the wildcard that covers it, as NSD adds them."""
        for source in (self.nodes, self.glue):
            node = source.get(name)
            if node:
                for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                    rrset = node.get(rdtype)
                    if rrset is not None:
                        yield rrset
                return
        if name in self.names or name == self.origin or self.find_cut(name) is not None:
            return
        node = self.wildcard(name)
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            rrset = node.get(rdtype) if node else None
            if rrset is not None:
                yield synthesized(rrset, name)


def assemble_zone(
    origin: Name,
    nodes: dict[bytes, WireNode],
    glue: dict[bytes, WireNode],
    soa: RRset,
    negative_ttl: int,
    *,
    cuts: set[bytes],
    dnames: set[bytes],
    cnames: Iterable[bytes],
    dynamic: Mapping[tuple[Name, int], DynamicRecord],
    digest: str,
    source: str,
    stamp: Hashable = None,
    warnings: tuple[Problem, ...] = (),
) -> Zone:
    """A Zone from its nodes in wire form (``make_entry``'s entries, empty non-terminals
    included, nothing below a cut; modified in place) and its synthesized SOA."""
    apex = to_wire(origin)
    soa_rdata = _rdata_wire(soa)
    nodes[apex][SOA] = Held(1, encode_rrs(SOA, soa.ttl, (soa_rdata,)))
    dynamic_owners = {to_wire(name) for name, _ in dynamic}
    compiled_nodes: dict[bytes, Node] = nodes  # type: ignore[assignment]  # compiled in place
    compile_nodes(apex, compiled_nodes, cuts, dnames, dynamic_owners, cnames)
    negative_soa = dns.rrset.RRset(origin, soa.rdclass, soa.rdtype)
    negative_soa.update(soa)
    negative_soa.update_ttl(negative_ttl)
    label = origin.to_text(omit_final_dot=True) or "."
    compiled = CompiledZone(apex, label, compiled_nodes, negative_tail(negative_soa))
    zone = Zone(
        origin=origin,
        compiled=compiled,
        glue_nodes=glue,
        cuts=frozenset(dns.name.from_wire(cut, 0)[0] for cut in cuts),
        soa=soa,
        negative_soa=negative_soa,
        digest=digest,
        dynamic=dynamic,
        source=source,
        loaded_at=time.time(),
        stamp=stamp,
        warnings=warnings,
    )
    # What positive answers and referrals add, found by the engine's own rules.
    ns = zone.nodes[origin].get(NS)
    if ns is not None:
        compiled.ns_rrset = ns  # also in compiled.decoded, for the engine
        compiled.glue = _addresses(zone, ns)
        compiled.glue_names = frozenset(to_wire(rrset.name).lower() for rrset in compiled.glue)
    for key in cuts:
        node = compiled_nodes[key]
        if type(node) is CutNode:
            node.ns = decode(dns.name.from_wire(key, 0)[0], NS, node.types[NS])
            node.glue = _addresses(zone, node.ns)
    return zone


def _rdata_wire(rrset: RRset) -> bytes:
    """The RDATA of a one-RR set."""
    wire = rrset[0].to_wire()
    assert wire is not None
    return wire


def _addresses(zone: Zone, ns: RRset) -> tuple[RRset, ...]:
    """The in-zone addresses of ``ns``'s targets, each once, in the engine's order."""
    return tuple(target_addresses(zone, (rdata.target for rdata in ns), set()))


def target_addresses(
    zone: Zone, targets: Iterable[Name], present: set[tuple[Name, int]]
) -> Iterator[RRset]:
    """The in-zone addresses of ``targets`` (additional-section processing), each RRset once:
    those whose (owner, type) is in ``present`` are skipped, and those yielded are added to it."""
    for target in targets:
        target = target.canonicalize()
        if not target.is_subdomain(zone.origin):
            continue
        for address in zone.addresses(target):
            if (address.name, address.rdtype) not in present:
                present.add((address.name, address.rdtype))
                yield address


def synthesized(rrset: RRset, owner: Name) -> RRset:
    """``rrset`` owned by ``owner`` (an answer synthesized from a wildcard)."""
    copy = dns.rrset.RRset(owner, rrset.rdclass, rrset.rdtype)
    copy.update(rrset)
    copy.update_ttl(rrset.ttl)
    return copy


class ZoneSet:
    """The zones served together; finds the zone that answers for a name."""

    __slots__ = ("zones", "_depths")

    def __init__(self, zones: Mapping[Name, Zone]) -> None:
        self.zones: Mapping[Name, Zone] = dict(zones)
        self._depths = sorted({len(z.labels) for z in self.zones}, reverse=True)

    def find(self, qname: Name) -> Zone | None:
        """The closest enclosing zone of ``qname`` (longest suffix match)."""
        labels = qname.labels
        for depth in self._depths:
            if depth <= len(labels):
                zone = self.zones.get(Name(labels[len(labels) - depth :]))
                if zone is not None:
                    return zone
        return None

    def __len__(self) -> int:
        return len(self.zones)

    def __iter__(self) -> Iterator[Zone]:
        return iter(self.zones.values())
