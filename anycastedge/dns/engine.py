"""The answer engine: RFC 1034 section 4.3.2 lookup over a ZoneSet. Pure: no I/O, no Twisted."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdatatype import RdataType

from anycastedge.dns.zone import Name, RRset, Zone, ZoneSet, synthesized, target_addresses
from anycastedge.gslb.model import DynamicRecord

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
MAX_CNAME_CHAIN = 8
CHAOS_IDENTITY = frozenset(dns.name.from_text(n) for n in ("id.server.", "hostname.bind."))
# Types whose targets get their addresses added (RFC 1034 3.6.2; SRV per RFC 2782).
_ADDITIONAL = {
    dns.rdatatype.MX: "exchange",
    dns.rdatatype.NS: "target",
    dns.rdatatype.SRV: "target",
}
_ZONE_TRANSFER = frozenset({dns.rdatatype.AXFR, dns.rdatatype.IXFR})
_UNSUPPORTED = frozenset({dns.rdatatype.MAILA, dns.rdatatype.MAILB, dns.rdatatype.TKEY})


class Undecided(Exception):  # noqa: N818 (a signal, not an error)
    """The lookup reached a dynamic record whose answer the caller has not chosen yet."""

    def __init__(self, record: DynamicRecord) -> None:
        super().__init__(record.label)
        self.record = record


# Given a dynamic record, the RRset to answer with; raises Undecided to ask the caller first.
Chooser = Callable[[DynamicRecord], RRset]


@dataclass(slots=True)
class Answer:
    """What to put in a response; rendering to wire format is someone else's job."""

    rcode: int = NOERROR
    aa: bool = False
    answer: list[RRset] = field(default_factory=list)
    authority: list[RRset] = field(default_factory=list)
    additional: list[RRset] = field(default_factory=list)
    zone: Name | None = None
    referral: bool = False  # additional data is required glue: truncate rather than drop it
    authority_optional: bool = False  # the authority section may be dropped to fit


def resolve(
    zones: ZoneSet,
    qname: Name,
    qtype: int,
    qclass: int,
    pop: str,
    choose: Chooser | None = None,
) -> Answer:
    """Answer one question authoritatively from ``zones``; ``qname`` must be lowercase.

    Dynamic records answer what ``choose`` picks; without a chooser, their static values.
    """
    if qtype == dns.rdatatype.OPT:
        return Answer(rcode=FORMERR)
    if qclass == dns.rdataclass.CH:
        return _chaos(qname, qtype, pop)
    if qclass not in (dns.rdataclass.IN, dns.rdataclass.ANY):
        return Answer(rcode=REFUSED)
    zone = zones.find(qname)
    if zone is None or qtype in _ZONE_TRANSFER:
        return Answer(rcode=REFUSED, zone=zone.origin if zone else None)
    if qtype in _UNSUPPORTED:
        return Answer(rcode=NOTIMP, zone=zone.origin)
    result = Answer(aa=True, zone=zone.origin)
    _lookup(zone, qname, qtype, result, set(), choose)
    return result


def _chaos(qname: Name, qtype: int, pop: str) -> Answer:
    if qname in CHAOS_IDENTITY and qtype in (dns.rdatatype.TXT, dns.rdatatype.ANY):
        rrset = dns.rrset.from_text(qname, 0, "CH", "TXT", _quoted(pop))
        return Answer(answer=[rrset])  # not AA, as NSD: no zone stands behind it
    return Answer(rcode=REFUSED)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _lookup(
    zone: Zone,
    qname: Name,
    qtype: int,
    result: Answer,
    seen: set[Name],
    choose: Chooser | None,
) -> None:
    seen.add(qname)
    cut = zone.find_cut(qname)
    if cut is not None and not (cut == qname and qtype == dns.rdatatype.DS):
        # A CNAME into a delegation keeps AA for the CNAME and adds the referral (RFC 1034 4.3.2)
        _referral(zone, cut, result, keep_aa=bool(result.answer))
        return
    node = zone.nodes.get(qname)
    if node is None and qname not in zone.names:
        dname = _dname_above(zone, qname)
        if dname is not None:
            _synthesize_from_dname(zone, qname, qtype, dname, result, seen, choose)
            return
        node = zone.wildcard(qname)
        if node is None:
            result.rcode = NXDOMAIN
            _negative(zone, result)
            return
    if not node:  # an empty non-terminal
        _negative(zone, result)
        return
    if qtype == dns.rdatatype.ANY:
        # RFC 8482: one RRset is enough; the lowest type code keeps it deterministic.
        first = min(t for t in node if t != dns.rdatatype.SOA or len(node) == 1)
        _add_answer(zone, _chosen(zone, node[first], choose), qname, result)
        return
    rrset = node.get(qtype)
    if rrset is not None:
        rrset = _chosen(zone, rrset, choose)
        _add_answer(zone, rrset, qname, result)
        if not (qtype == dns.rdatatype.DS and qname == cut):
            _add_apex_ns(zone, result)
        return
    cname = node.get(dns.rdatatype.CNAME)
    if cname is None:
        _negative(zone, result)
        return
    cname = _chosen(zone, cname, choose)
    _add_answer(zone, cname, qname, result)
    target = cname[0].target.canonicalize()
    if (
        target.is_subdomain(zone.origin)
        and target not in seen
        and len(result.answer) < MAX_CNAME_CHAIN
    ):
        _lookup(zone, target, qtype, result, seen, choose)


def _chosen(zone: Zone, rrset: RRset, choose: Chooser | None) -> RRset:
    if zone.dynamic and choose is not None:
        record = zone.dynamic.get((rrset.name, rrset.rdtype))
        if record is not None:
            return choose(record)
    return rrset


def _add_answer(zone: Zone, rrset: RRset, qname: Name, result: Answer) -> None:
    if rrset.name != qname:  # synthesized from a wildcard: the owner is the query name
        rrset = synthesized(rrset, qname)
    result.answer.append(rrset)
    _add_additional(zone, rrset, result)


def _add_additional(zone: Zone, rrset: RRset, result: Answer) -> None:
    attribute = _ADDITIONAL.get(rrset.rdtype)
    if attribute is None:
        return
    present: set[tuple[Name, int]] = {(r.name, r.rdtype) for r in result.additional}
    present.update((r.name, r.rdtype) for r in result.answer)
    targets = (getattr(rdata, attribute) for rdata in rrset)
    result.additional.extend(target_addresses(zone, targets, present))


def _add_apex_ns(zone: Zone, result: Answer) -> None:
    """Positive answers carry the zone's NS set and its addresses, as NSD (and BIND) do."""
    ns = zone.nodes[zone.origin].get(dns.rdatatype.NS)
    if ns is None or any(r.rdtype == dns.rdatatype.NS and r.name == ns.name for r in result.answer):
        return
    result.authority.append(ns)
    result.authority_optional = True
    _add_additional(zone, ns, result)


def _referral(zone: Zone, cut: Name, result: Answer, keep_aa: bool = False) -> None:
    result.aa = keep_aa
    result.referral = True
    ns = zone.nodes[cut][dns.rdatatype.NS]
    result.authority.append(ns)
    _add_additional(zone, ns, result)


def _negative(zone: Zone, result: Answer) -> None:
    result.authority.append(zone.negative_soa)


def _dname_above(zone: Zone, qname: Name) -> RRset | None:
    name = qname.parent()
    while True:
        node = zone.nodes.get(name)
        if node is not None and RdataType.DNAME in node:
            return node[RdataType.DNAME]
        if name == zone.origin:
            return None
        name = name.parent()


def _synthesize_from_dname(
    zone: Zone,
    qname: Name,
    qtype: int,
    dname: RRset,
    result: Answer,
    seen: set[Name],
    choose: Chooser | None,
) -> None:
    """RFC 6672: answer the DNAME and a CNAME synthesized from it, then follow the CNAME."""
    result.answer.append(dname)
    try:
        target = qname.relativize(dname.name).derelativize(dname[0].target).canonicalize()
    except dns.name.NameTooLong:
        result.rcode = 6  # YXDOMAIN
        return
    cname = dns.rrset.from_text(qname, dname.ttl, "IN", "CNAME", target.to_text())
    result.answer.append(cname)
    if qtype == dns.rdatatype.CNAME:
        return  # the synthesized CNAME is the answer
    # A DNAME whose target lies below its own owner would apply again and again: stop after one.
    if (
        target.is_subdomain(zone.origin)
        and not target.is_subdomain(dname.name)
        and target not in seen
    ):
        _lookup(zone, target, qtype, result, seen, choose)
