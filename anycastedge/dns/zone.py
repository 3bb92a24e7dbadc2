"""The zone model: immutable, lowercased, with delegations, glue and empty non-terminals known."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import dns.name
import dns.rdatatype
import dns.rrset

from anycastedge.gslb.model import DynamicRecord

Name = dns.name.Name
RRset = dns.rrset.RRset
Node = Mapping[int, RRset]

WILDCARD = b"*"


@dataclass(frozen=True, slots=True)
class Zone:
    """One zone's authoritative data and what a lookup needs to know about its shape."""

    origin: Name
    nodes: Mapping[Name, Node]  # authoritative data, plus NS/DS at the cuts
    glue: Mapping[Name, Node]  # A/AAAA of names at or below a cut (occluded)
    names: frozenset[Name]  # every name that exists, empty non-terminals included
    cuts: frozenset[Name]  # delegation points below the apex
    soa: RRset
    negative_soa: RRset  # the SOA with TTL min(TTL, MINIMUM), for negative answers
    digest: str  # hash of the content, the SOA serial excluded
    dynamic: Mapping[tuple[Name, int], DynamicRecord] = field(default_factory=dict)
    source: str = ""
    loaded_at: float = 0.0

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

    def wildcard(self, name: Name) -> Node | None:
        """The wildcard node that synthesizes ``name`` (RFC 4592), found at the closest encloser."""
        encloser = name.parent()
        while encloser not in self.names:
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
