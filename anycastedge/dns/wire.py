"""The wire-format fast path: parse header, question and OPT; answer from cached encoded responses.

Two caches, both owned by one ``Responder`` and so dropped whole with it on reload:
- ``_exact`` maps the query bytes after the ID to the response bytes after the ID. A repeated query
  costs one slice, one dict lookup and one concatenation.
- ``_entries`` maps (lowercased name, type, class) to the encoded response variants (full, without
  additional data, truncated), from which each distinct query shape is patched: RD/CD flags, the
  question's case, and the OPT record.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.renderer
import dns.rrset
from dns.rdatatype import RdataType

from anycastedge.dns import rrl
from anycastedge.dns.compiled import (
    SLOW_QTYPES,
    CnameNode,
    CompiledZone,
    CutNode,
    Held,
    SlowNode,
    WithTargets,
    negative_tail,
    repoint,
)
from anycastedge.dns.counters import DnsCounters, MetricKey, PoolKey
from anycastedge.dns.engine import (
    FORMERR,
    MAX_CNAME_CHAIN,
    NOTIMP,
    Answer,
    Chooser,
    Undecided,
    resolve,
)
from anycastedge.dns.zone import RRset, ZoneSet
from anycastedge.gslb.decider import Decider
from anycastedge.gslb.model import DynamicRecord
from anycastedge.health.check import PROBE_EDNS_OPTION

OPT_NSID = 3
OPT_ECS = 8
_OPT_HEADER = struct.Struct(
    "!BHHBBHH"
)  # root name, type, class (payload), ext-rcode, version, flags, rdlen
_U16 = struct.Struct("!H")
_TCP_LIMIT = 65535
_COUNTS = struct.Struct("!HHHH")  # QD, AN, NS, AR
_TRANSPORT = ("udp", "tcp")
_ABSENT: Any = object()  # not in the compiled zone
CHAOS_LABEL = "(chaos)"  # the zone label of CHAOS class queries (id.server, hostname.bind)
_BADVERS = 16
_ECS_MAX = 20  # the longest ECS option data: family, prefixes and a whole IPv6 address
_SCOPES = tuple(bytes((n,)) for n in range(129))  # an ECS SCOPE PREFIX-LENGTH octet

# Labels for metrics: bounded, so a client cannot grow the label space.
_QTYPE_LABELS = {
    int(t): t.name
    for t in (
        dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.ANY, dns.rdatatype.CAA,
        dns.rdatatype.CNAME, dns.rdatatype.DNAME, dns.rdatatype.DS, dns.rdatatype.HTTPS,
        dns.rdatatype.MX, dns.rdatatype.NAPTR, dns.rdatatype.NS, dns.rdatatype.PTR,
        dns.rdatatype.SOA, dns.rdatatype.SPF, dns.rdatatype.SRV, dns.rdatatype.SSHFP,
        dns.rdatatype.SVCB, dns.rdatatype.TLSA, dns.rdatatype.TXT, dns.rdatatype.AXFR,
        dns.rdatatype.IXFR, dns.rdatatype.LOC, dns.rdatatype.URI, dns.rdatatype.DNSKEY,
    )
}  # fmt: skip
_RCODE_LABELS = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
                 5: "REFUSED", 6: "YXDOMAIN", 16: "BADVERS"}  # fmt: skip

Resolver = Callable[[ZoneSet, dns.name.Name, int, int, str, Chooser | None], Answer]


class MalformedQuery(Exception):
    """The query cannot be parsed far enough to be answered."""


@dataclass(slots=True)  # not frozen: a frozen __init__ costs a quarter of a cold answer
class Query:
    """What the fast path parsed out of a query."""

    qname_end: int  # offset just past the question name
    key: bytes  # lowercased name wire + type + class
    edns: bool
    payload: int
    version: int
    do: bool
    nsid: bool
    ecs: bytes | None = None  # the EDNS Client Subnet option's data, validated
    probe: bool = False  # sent by our own BGP hook: counted apart from client queries


@dataclass(frozen=True, slots=True)
class Entry:
    """The encoded responses for one (name, type, class), ID 0 and RD clear."""

    full: bytes
    # Fewer additional RRsets, then no authority either: largest first (RFC 2181 s9)
    smaller: tuple[bytes, ...]
    truncated: bytes  # TC=1, question only
    zone: str
    rcode: int
    rrl: bytes  # the rate-limiting key (anycastedge.dns.rrl.key)


@dataclass(slots=True)
class Branch:
    """A question whose answer depends on a dynamic record: one child per selection made there."""

    record: DynamicRecord
    children: dict[tuple[str, ...], Entry | Branch]
    # The pools answered from when this record is the only one, by pool: one tuple shared by
    # every cached answer (per-query tuples in the caches cost full garbage collections).
    pools: dict[str, tuple[PoolKey, ...]] = field(default_factory=dict)


# Response after the ID, metric, pools, rate-limiting key.
Fixed = tuple[bytes, MetricKey, tuple[PoolKey, ...], bytes]
# What every response made from one encoded variant shares: its counts (without, with an OPT),
# what follows the question, and the metric by transport (UDP, TCP).
Pieces = tuple[bytes, bytes, bytes, tuple[MetricKey, MetricKey]]


@dataclass(slots=True)
class Drawn:
    """A query whose dynamic answer is drawn anew each time (weights, no stickiness).

    The question is parsed once; each distinct path of selections is encoded once.
    """

    root: Branch
    query: Query
    answers: dict[tuple[tuple[str, ...], ...], Fixed]


def parse_query(data: bytes) -> Query:
    """Parse header, question and OPT; raises MalformedQuery on anything a server must reject."""
    n = len(data)
    if n < 17 or data[4] != 0 or data[5] != 1 or data[6] != 0 or data[7] != 0:
        raise MalformedQuery("need exactly one question and no answer records")
    pos = 12
    while True:
        if pos >= n:
            raise MalformedQuery("question name runs past the end")
        length = data[pos]
        if length == 0:
            break
        if length > 63:
            raise MalformedQuery("compressed or bad label in the question")
        pos += length + 1
    pos += 1
    if pos - 12 > 255:
        raise MalformedQuery("name longer than 255 octets")
    if pos + 4 > n:
        raise MalformedQuery("question truncated")
    key = data[12:pos].lower() + data[pos : pos + 4]
    # Authority records (an IXFR query's SOA, RFC 1995) are skipped; the OPT is in additional.
    count = ((data[8] << 8) | data[9]) + ((data[10] << 8) | data[11])
    if not count:
        if pos + 4 != n:
            raise MalformedQuery("trailing bytes after the question")
        return Query(pos, key, False, 512, 0, False, False)
    at = pos + 4
    if (
        count == 1
        and data[11] == 1
        and at + 11 <= n
        and data[at] == 0
        and data[at + 1] == 0
        and data[at + 2] == 41
        and at + 11 + ((data[at + 9] << 8) | data[at + 10]) == n
    ):
        # The common case, on the path of every cold answer: one OPT at the root, last.
        payload = (data[at + 3] << 8) | data[at + 4]
        nsid, ecs, probe = _options(data, at + 11, n) if n > at + 11 else (False, None, False)
        return Query(
            pos, key, True, max(payload, 512), data[at + 6], data[at + 7] > 127, nsid, ecs, probe
        )
    return _parse_records(data, pos, key, count)


def _options(data: bytes, at: int, end: int) -> tuple[bool, bytes | None, bool]:
    """The EDNS options we act on in ``data[at:end]``: NSID wanted, ECS, our probe marker."""
    nsid = probe = False
    ecs = None
    while at < end:
        if at + 4 > end:
            raise MalformedQuery("EDNS option truncated")
        code = (data[at] << 8) | data[at + 1]
        length = (data[at + 2] << 8) | data[at + 3]
        at += 4 + length
        if at > end:
            raise MalformedQuery("EDNS option overruns OPT")
        if code == OPT_NSID:
            nsid = True
        elif code == OPT_ECS:
            if ecs is not None:
                raise MalformedQuery("more than one ECS option")
            ecs = check_ecs(data[at - length : at])
        elif code == PROBE_EDNS_OPTION:
            probe = True
    return nsid, ecs, probe


def _skip_name(data: bytes, pos: int) -> int:
    n = len(data)
    while pos < n:
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            return pos + 2
        if length > 63:
            break
        pos += length + 1
    raise MalformedQuery("bad name in the additional section")


def _parse_records(data: bytes, qend: int, key: bytes, count: int) -> Query:
    pos = qend + 4
    opt: tuple[int, int, bool, bool, bytes | None, bool] | None = None
    n = len(data)
    for _ in range(count):
        name_start = pos
        pos = _skip_name(data, pos)
        if pos + 10 > n:
            raise MalformedQuery("additional record truncated")
        rrtype, rrclass, ttl, rdlen = struct.unpack_from("!HHIH", data, pos)
        rdata = pos + 10
        pos = rdata + rdlen
        if pos > n:
            raise MalformedQuery("additional record data truncated")
        if rrtype != dns.rdatatype.OPT:
            continue
        if opt is not None or data[name_start] != 0:
            raise MalformedQuery("more than one OPT, or OPT not at the root")
        nsid, ecs, probe = _options(data, rdata, pos)
        opt = (max(rrclass, 512), (ttl >> 16) & 0xFF, bool(ttl & 0x8000), nsid, ecs, probe)
    if pos != n:
        raise MalformedQuery("trailing bytes after the last record")
    if opt is None:
        return Query(qend, key, False, 512, 0, False, False)
    return Query(qend, key, True, *opt)


def check_ecs(option: bytes) -> bytes:
    """RFC 7871 section 6: the option as sent, if well formed; FORMERR otherwise.

    The address must use exactly the octets SOURCE PREFIX-LENGTH needs, with the bits past it
    zero, so that equal client networks are equal bytes (the caches rely on it).
    """
    if len(option) < 4:
        raise MalformedQuery("ECS option shorter than 4 octets")
    family, source = (option[0] << 8) | option[1], option[2]
    width = 32 if family == 1 else 128 if family == 2 else 0
    if not width:
        raise MalformedQuery(f"ECS family {family} unknown")
    if source > width:
        raise MalformedQuery("ECS source prefix longer than the address")
    octets = (source + 7) // 8
    if len(option) != 4 + octets:
        raise MalformedQuery("ECS address length does not match the source prefix")
    if source % 8 and option[-1] & (0xFF >> (source % 8)):
        raise MalformedQuery("ECS address has bits set past the source prefix")
    return option


def _header(flags: int, ancount: int, nscount: int, arcount: int) -> bytes:
    return struct.pack("!HHHHHH", 0, flags, 1, ancount, nscount, arcount)


NegativeTails = dict[dns.name.Name, tuple[int, bytes]]


def render_entry(
    answer: Answer, key: bytes, qname: dns.name.Name, qtype: int, qclass: int, tails: NegativeTails
) -> Entry:
    """Encode an Answer's variants for the question ``key`` (lowercased wire name, type, class).

    ``qname``, ``qtype`` and ``qclass`` are ``key`` decoded; ``tails`` caches negative SOA tails.
    """
    flags = 0x8000 | (0x0400 if answer.aa else 0) | (answer.rcode & 0xF)
    if answer.zone is not None:
        zone = answer.zone.to_text(omit_final_dot=True) or "."
    else:  # not ours: REFUSED, or the CHAOS identity names, which have no zone
        zone = CHAOS_LABEL if qclass == dns.rdataclass.CH else "-"
    truncated = _header(flags | 0x0200, 0, 0, 0) + key
    limit_key = _entry_key(answer, key)
    if not answer.answer and not answer.additional and len(answer.authority) == 1:
        soa = answer.authority[0]
        if soa.rdtype == dns.rdatatype.SOA and answer.zone is not None:
            # The common negative answer (and every random-name query) skips the renderer: the
            # SOA owner is the zone apex, a suffix of the question name, so one pointer names it.
            cached = tails.get(soa.name)
            if cached is None:
                cached = tails[soa.name] = negative_tail(soa)
            apex_length, tail = cached
            apex_at = 12 + len(key) - 4 - apex_length
            full = _header(flags, 0, 1, 0) + key + _U16.pack(0xC000 | apex_at) + tail
            return Entry(full, (), truncated, zone, answer.rcode, limit_key)

    def render(additional: int, authority: bool = True) -> bytes:
        """The response with the first ``additional`` additional RRsets."""
        r = dns.renderer.Renderer(0, flags, _TCP_LIMIT)
        r.add_question(qname, qtype, qclass)
        for rrset in answer.answer:
            r.add_rrset(dns.renderer.ANSWER, rrset)
        if authority:
            for rrset in answer.authority:
                r.add_rrset(dns.renderer.AUTHORITY, rrset)
        for rrset in answer.additional[:additional]:
            r.add_rrset(dns.renderer.ADDITIONAL, rrset)
        r.write_header()
        return r.get_wire()

    smaller = []
    if not answer.referral:  # referral glue is required: truncate rather than drop it
        # As NSD: the additional RRsets that fit, in order, before the authority is dropped.
        smaller += [render(n) for n in range(len(answer.additional) - 1, -1, -1)]
        if answer.authority and answer.authority_optional:
            smaller.append(render(0, authority=False))
    return Entry(
        render(len(answer.additional)), tuple(smaller), truncated, zone, answer.rcode, limit_key
    )


def _entry_key(answer: Answer, key: bytes) -> bytes:
    """The rate-limiting key of the engine's answer to the question ``key``."""
    rcode = answer.rcode
    if rcode not in (0, 3) or (rcode and answer.zone is None):
        return rrl.ERRORS_KEY
    if answer.referral and answer.authority:
        return rrl.key(rrl.REFERRALS, answer.authority[0].name.to_digestable())
    if answer.zone is not None and (rcode or not answer.answer):
        kind = rrl.NXDOMAINS if rcode else rrl.NODATA
        return rrl.key(kind, answer.zone.to_digestable())
    return rrl.key(rrl.RESPONSES, key)


def _locate(nodes: dict[bytes, Any], name: bytes, origin_length: int) -> Any:
    """The node answering for ``name`` (wire, lower case, in the zone): its own, or the wildcard
    at its closest encloser (RFC 4592), or the delegation above it; _ABSENT for NXDOMAIN."""
    node = nodes.get(name, _ABSENT)
    if node is not _ABSENT:
        return node
    at = name[0] + 1
    encloser = name[at:]
    while len(encloser) > origin_length:
        node = nodes.get(encloser, _ABSENT)
        if node is not _ABSENT:
            break
        at += name[at] + 1
        encloser = name[at:]
    found = nodes.get(encloser, _ABSENT)
    if type(found) is SlowNode or type(found) is CutNode:
        return found  # below a delegation (the referral) or a DNAME (the engine's)
    return nodes.get(b"\x01*" + encloser, _ABSENT)


def _positive_key(key: bytes, qname: bytes, zone: CompiledZone) -> bytes:
    """The rate-limiting key of an answer to the question ``key`` (name ``qname``): the
    question; for a wildcard's synthesis, the zone and type (random names under one wildcard
    count together, as NSD counts them per wildcard)."""
    if qname in zone.nodes:
        return rrl.key(rrl.RESPONSES, key)
    return rrl.key(rrl.RESPONSES, b"\x01*" + zone.origin + key[-4:])


def truncate(response: bytes) -> bytes:
    """``response`` as rate limiting's slip sends it: the header with TC set and the question
    (none if it had none), no records, so that the client retries over TCP."""
    if response[4:6] != b"\0\1":
        return response[:2] + bytes((response[2] | 0x02, response[3])) + bytes(8)
    pos = 12
    while response[pos]:
        pos += response[pos] + 1
    return b"".join(
        (response[:2], bytes((response[2] | 0x02, response[3])), b"\0\1" + bytes(6),
         response[12 : pos + 5])
    )  # fmt: skip


class Responder:
    """Answers wire queries from one immutable ZoneSet; make a new one to serve new zones.

    Dynamic (GSLB) answers: the question's cached node is a Branch naming the dynamic record;
    the Decider picks a selection for the client, and the Entry encoded for that selection is
    cached under the branch. ``_dynamic_hits`` then keys each query's bytes (and, without ECS, its
    source address) to either the response, when every such query gets the same one until health
    changes, or a Drawn, from which a weighted draw picks among responses encoded before.
    """

    __slots__ = ("zones", "pop", "max_udp", "nsid", "limit", "counters", "counts", "decider",
                 "rrl_key", "_exact", "_dynamic_hits", "_entries", "_resolve", "_tails",
                 "_dynamic", "_compiled", "_negative_keys", "_opts", "_ecs_opts",
                 "_pieces")  # fmt: skip

    def __init__(
        self,
        zones: ZoneSet,
        pop: str,
        max_udp: int = 1232,
        nsid: bool = True,
        cache_size: int = 100_000,
        counters: DnsCounters | None = None,
        resolver: Resolver = resolve,
        decider: Decider | None = None,
    ) -> None:
        self.zones = zones
        self.pop = pop
        self.max_udp = max_udp
        self.nsid = pop.encode()[:512] if nsid else b""
        self.limit = cache_size
        self.counters = counters if counters is not None else DnsCounters()
        self.counts = self.counters.responses  # the hot path's one dict, held directly
        self.decider = decider
        #: The rate-limiting key (anycastedge.dns.rrl.key) of the response ``respond`` returned
        #: last, None for one never limited (our own health checks); read it right after. An
        #: attribute, not a second return value: the exact cache's hit stays one concatenation.
        self.rrl_key: bytes | None = None
        # Response after the ID, metric, rate-limiting key; by query bytes after the ID.
        self._exact: tuple[dict[bytes, tuple[bytes, MetricKey, bytes]], ...] = ({}, {})
        self._dynamic_hits: tuple[dict[object, Fixed | Drawn], ...] = ({}, {})
        self._entries: dict[bytes, Entry | Branch] = {}
        self._pieces: dict[bytes, Pieces] = {}  # by encoded variant, for _render
        self._tails: NegativeTails = {}
        self._resolve = resolver
        self._dynamic = decider is not None and any(zone.dynamic for zone in zones)
        self._compiled = {zone.compiled.origin: zone.compiled for zone in zones}
        # NXDOMAIN and NODATA count per zone (random names in one zone are one account).
        self._negative_keys = {
            origin: {3: rrl.key(rrl.NXDOMAINS, origin), 0: rrl.key(rrl.NODATA, origin)}
            for origin in self._compiled
        }
        # The OPT of most answers, by DO and NSID wanted.
        self._opts = tuple(
            tuple(self._opt(0, do, nsid, None) for nsid in (False, True)) for do in (False, True)
        )
        # ... and of answers echoing ECS, up to the option's data, by DO, NSID and data length.
        self._ecs_opts = tuple(
            tuple(
                tuple(self._opt(0, do, nsid, bytes(n))[: -n or None] for n in range(_ECS_MAX + 1))
                for nsid in (False, True)
            )
            for do in (False, True)
        )

    def respond(self, data: bytes, tcp: bool, host: str = "") -> bytes | None:
        """The response to one query from ``host`` (None: send nothing)."""
        exact = self._exact[tcp]
        tail = data[2:]
        hit = exact.get(tail)
        if hit is not None:
            self.counts[hit[1]] = self.counts.get(hit[1], 0) + 1
            self.rrl_key = hit[2]
            return data[:2] + hit[0]
        if self._dynamic:
            hits = self._dynamic_hits[tcp]
            dynamic = hits.get(tail) or hits.get((host, tail))
            if dynamic is not None:
                if type(dynamic) is Drawn:
                    dynamic = self._draw(dynamic, data, tcp, host)
                self._count(dynamic[1], dynamic[2])  # type: ignore[index]
                self.rrl_key = dynamic[3]  # type: ignore[index]
                return data[:2] + dynamic[0]  # type: ignore[index]
        if len(data) < 12 or data[2] & 0x80:
            return None  # no header to answer with, or a response: never reply to those
        self.rrl_key = rrl.ERRORS_KEY
        opcode = (data[2] >> 3) & 0xF
        if opcode != 0:
            return self._error(data, NOTIMP, tcp)
        try:
            q = parse_query(data)
        except MalformedQuery:
            return self._error(data, FORMERR, tcp)
        if q.edns and q.version > 0:
            return self._badvers(data, q, tcp)
        # A question whose answer is dynamic is the engine's (a SlowNode): once its Branch is
        # cached, skip the compiled zones (a new client network costs the walk and the render).
        node = self._entries.get(q.key) if self._dynamic else None
        if not q.probe and type(node) is not Branch:
            fast = self._assemble(data, q, tcp)
            if fast is not None:
                return self._remember(exact, tail, *fast)
        if node is None:
            node = self._root(q.key)
        if q.probe:  # never cached: the exact cache counts every hit as a client's
            self.rrl_key = None  # our own health check is never limited
            return self._probe(data, q, tcp, node, host)
        if type(node) is Entry:
            return self._remember(exact, tail, *self._render(data, q, tcp, node, 0), node.rrl)
        assert type(node) is Branch
        entry, scope, pools, reusable, path = self._walk(node, q, host)
        response, metric = self._render(data, q, tcp, entry, scope)
        self._count(metric, pools)
        self.rrl_key = entry.rrl
        fixed = (response[2:], metric, pools, entry.rrl)
        hits = self._dynamic_hits[tcp]
        if len(hits) >= self.limit:
            hits.clear()
        key: object = tail if q.ecs is not None and q.ecs[2] else (host, tail)
        hits[key] = fixed if reusable else Drawn(node, q, {path: fixed})
        return response

    def _remember(
        self,
        exact: dict[bytes, tuple[bytes, MetricKey, bytes]],
        tail: bytes,
        response: bytes,
        metric: MetricKey,
        limit_key: bytes,
    ) -> bytes:
        """Count a static answer and keep it for the same query bytes (bounded: cleared when
        full)."""
        self.counts[metric] = self.counts.get(metric, 0) + 1
        self.rrl_key = limit_key
        if len(exact) >= self.limit:
            exact.clear()
        exact[tail] = (response[2:], metric, limit_key)
        return response

    def _assemble(self, data: bytes, q: Query, tcp: bool) -> tuple[bytes, MetricKey, bytes] | None:
        """The response from the compiled zones, with its metric and rate-limiting key, or None
        where the general path must answer: a positive answer, NODATA or NXDOMAIN, exact or by
        wildcard, for an IN question."""
        key = q.key
        qtype = (key[-4] << 8) | key[-3]
        if key[-2] or key[-1] != 1 or qtype in SLOW_QTYPES:
            return None
        qname = key[:-4]
        zone: CompiledZone | None = None
        at = 0
        while qname[at]:  # the closest enclosing zone: the longest suffix that is one
            zone = self._compiled.get(qname[at:])
            if zone is not None:
                break
            at += qname[at] + 1
        if zone is None:
            return None
        nodes = zone.nodes
        origin_length = len(zone.origin)
        node = _locate(nodes, qname, origin_length)
        if node is _ABSENT:
            return self._negative(data, q, tcp, zone, 3)
        if type(node) is SlowNode or qname in zone.glue_names:
            return None  # the engine leaves the answer's own addresses out of additional
        qlen = len(qname)
        if type(node) is CutNode:
            return self._referral(data, q, tcp, zone, node, qlen)
        answer: list[bytes] = []
        count = 0
        owner_at = 12  # where the name that owns the next RRs is: the question, at first
        end = 16 + qlen  # where the next RR starts
        seen = {qname}
        while type(node) is CnameNode:
            # CNAME, then what its target holds, owned by the name in the CNAME's RDATA.
            rr = node.rr if owner_at == 12 else repoint(node.rr, 1, owner_at)
            answer.append(rr)
            count += 1
            owner_at, end = end + 12, end + len(rr)
            target = node.target
            if target is None:  # out of the zone: the resolver follows it
                limit_key = _positive_key(key, qname, zone)
                return self._positive(data, q, tcp, zone, b"".join(answer), count, False, limit_key)
            if target in seen or target in zone.glue_names or count >= MAX_CNAME_CHAIN:
                return None
            seen.add(target)
            node = _locate(nodes, target, origin_length)
            if node is _ABSENT:
                return self._negative(data, q, tcp, zone, 3, b"".join(answer), count)
            if type(node) is SlowNode or type(node) is CutNode:
                return None
        entry = node.get(qtype, _ABSENT)
        if entry is _ABSENT:
            if not count:
                return self._negative(data, q, tcp, zone, 0)
            # NODATA at the end of a CNAME: an answer (as NSD counts it: ANCOUNT > 0)
            limit_key = _positive_key(key, qname, zone)
            return self._negative(data, q, tcp, zone, 0, b"".join(answer), count, limit_key)
        if type(entry) is Held:
            return None
        if type(entry) is WithTargets:
            if owner_at != 12:
                return None  # through a CNAME: the engine's
            return self._with_targets(data, q, tcp, zone, entry, _positive_key(key, qname, zone))
        n, rrs = entry
        answer.append(rrs if owner_at == 12 else repoint(rrs, n, owner_at))
        limit_key = _positive_key(key, qname, zone)
        return self._positive(data, q, tcp, zone, b"".join(answer), count + n, True, limit_key)

    def _positive(
        self,
        data: bytes,
        q: Query,
        tcp: bool,
        zone: CompiledZone,
        rrs: bytes,
        count: int,
        with_ns: bool,
        limit_key: bytes,
    ) -> tuple[bytes, MetricKey, bytes] | None:
        """An answer; ``with_ns``: the apex NS set and its addresses follow (as NSD)."""
        if not with_ns:
            return self._finish(data, q, tcp, zone, 0x84, 0, (count, 0, 0), rrs, limit_key)
        ns, ar, authority, additional = zone.tail(
            8 + len(q.key) - len(zone.origin)
        )  # the apex in the question
        body = rrs + authority + additional
        return self._finish(data, q, tcp, zone, 0x84, 0, (count, ns, ar), body, limit_key)

    def _with_targets(
        self,
        data: bytes,
        q: Query,
        tcp: bool,
        zone: CompiledZone,
        entry: WithTargets,
        limit_key: bytes,
    ) -> tuple[bytes, MetricKey, bytes] | None:
        """MX or SRV: the RRs, the targets' addresses (owned by pointers to the targets in the
        RRs), then the apex NS set and its addresses, each address RRset once (as the engine)."""
        qlen = len(q.key) - 4
        nodes = zone.nodes
        extra: list[bytes] = []
        added = 0
        seen: set[bytes] = set()
        for target, at in entry.targets:
            if target in seen:
                continue
            if target in zone.glue_names:
                return None  # also an NS host: the engine orders the additional section
            seen.add(target)
            node = _locate(nodes, target, len(zone.origin))
            if node is _ABSENT or type(node) is CnameNode:
                continue
            if type(node) is SlowNode or type(node) is CutNode:
                return None
            for rdtype in (1, 28):  # A, AAAA
                found = node.get(rdtype)
                if found is not None:
                    if type(found) is not tuple:
                        return None
                    extra.append(repoint(found[1], found[0], 16 + qlen + at))
                    added += found[0]
        ns, ar, authority, additional = zone.tail(12 + qlen - len(zone.origin))
        # Additional: the targets' addresses first, as the engine adds them.
        body = b"".join((entry.rrs, authority, *extra, additional))
        counts = (entry.count, ns, added + ar)
        return self._finish(data, q, tcp, zone, 0x84, 0, counts, body, limit_key)

    def _referral(
        self, data: bytes, q: Query, tcp: bool, zone: CompiledZone, cut: CutNode, qlen: int
    ) -> tuple[bytes, MetricKey, bytes] | None:
        """Not authoritative here: the delegation's NS set, and its glue (never dropped)."""
        ns, ar, body = cut.referral(qlen)
        limit_key = rrl.key(rrl.REFERRALS, cut.name)  # per delegation, as NSD and BIND
        return self._finish(data, q, tcp, zone, 0x80, 0, (0, ns, ar), body, limit_key)

    def _negative(
        self,
        data: bytes,
        q: Query,
        tcp: bool,
        zone: CompiledZone,
        rcode: int,
        cname: bytes = b"",
        ancount: int = 0,
        limit_key: bytes | None = None,
    ) -> tuple[bytes, MetricKey, bytes] | None:
        """NXDOMAIN or NODATA: the SOA in authority, after the CNAMEs that led here if any;
        counted per zone for rate limiting unless ``limit_key`` says otherwise."""
        body = cname + zone.soa_after(len(q.key) - 4)
        if limit_key is None:
            limit_key = self._negative_keys[zone.origin][rcode]
        return self._finish(data, q, tcp, zone, 0x84, rcode, (ancount, 1, 0), body, limit_key)

    def _finish(
        self,
        data: bytes,
        q: Query,
        tcp: bool,
        zone: CompiledZone,
        flags: int,
        rcode: int,
        counts: tuple[int, int, int],
        body: bytes,
        limit_key: bytes,
    ) -> tuple[bytes, MetricKey, bytes] | None:
        """Header (``flags``: QR and AA; RD and CD copied), the question as asked, ``body`` (AN,
        NS, AR counts), the OPT; None when it would not fit, for the engine to shorten. With the
        metric and ``limit_key``, the rate-limiting key."""
        opt = self._opt_for(q, 0)
        an, ns, ar = counts
        response = b"".join(
            (
                data[:2],
                bytes((flags | (data[2] & 0x01), (data[3] & 0x10) | rcode)),
                _COUNTS.pack(1, an, ns, ar + (1 if opt else 0)),
                data[12 : q.qname_end + 4],
                body,
                opt,
            )
        )
        if len(response) > self._limit(q, tcp):
            return None
        qtype = (q.key[-4] << 8) | q.key[-3]
        qtype_label = _QTYPE_LABELS.get(qtype, "other")
        metric = (zone.label, qtype_label, _RCODE_LABELS[rcode], _TRANSPORT[tcp])
        return response, metric, limit_key

    def _opt_for(self, q: Query, scope: int) -> bytes:
        """The OPT of an answer to ``q`` (none without EDNS), its ECS SCOPE ``scope``: 0 for an
        answer no client address changes (RFC 7871 7.2.1). FAMILY, SOURCE PREFIX-LENGTH and
        ADDRESS are echoed; the OPT up to the option's data comes encoded."""
        ecs = q.ecs
        if not q.edns:
            return b""
        if ecs is None:
            return self._opts[q.do][q.nsid]
        return b"".join((self._ecs_opts[q.do][q.nsid][len(ecs)], ecs[:3], _SCOPES[scope], ecs[4:]))

    def _limit(self, q: Query, tcp: bool) -> int:
        return _TCP_LIMIT if tcp else (min(q.payload, self.max_udp) if q.edns else 512)

    def _draw(self, drawn: Drawn, data: bytes, tcp: bool, host: str) -> Fixed:
        """A fresh decision for a query seen before, from responses encoded before if possible."""
        entry, scope, pools, _, path = self._walk(drawn.root, drawn.query, host)
        fixed = drawn.answers.get(path)
        if fixed is None:
            response, metric = self._render(data, drawn.query, tcp, entry, scope)
            fixed = drawn.answers[path] = (response[2:], metric, pools, entry.rrl)
        return fixed

    def _probe(self, data: bytes, q: Query, tcp: bool, node: Entry | Branch, host: str) -> bytes:
        """Answer our own health check like any query, counted apart and cached nowhere."""
        scope = 0
        if type(node) is Branch:
            node, scope = self._walk(node, q, host)[:2]
        assert type(node) is Entry
        response, metric = self._render(data, q, tcp, node, scope)
        probes = self.counters.probe_responses
        probes[metric] = probes.get(metric, 0) + 1
        return response

    def _count(self, metric: MetricKey, pools: tuple[PoolKey, ...]) -> None:
        self.counts[metric] = self.counts.get(metric, 0) + 1
        answers = self.counters.pool_answers
        for pool in pools:
            answers[pool] = answers.get(pool, 0) + 1

    def dispose(self, keep: ZoneSet) -> None:
        """Take this retired Responder's data apart entry by entry, so that freeing a large zone
        set yields the GIL often instead of holding it for seconds (run in a thread). The zones
        of ``keep`` (the set now served, which may share some) are left alone."""
        kept = {id(zone) for zone in keep}
        big: list[Any] = [*self._exact, *self._dynamic_hits, self._entries, self._pieces]
        for zone in self.zones:
            if id(zone) not in kept:
                big += [zone.compiled.nodes, zone.glue_nodes, zone.dynamic]
        for mapping in big:
            if isinstance(mapping, dict):
                while mapping:
                    mapping.popitem()

    def health_changed(self) -> None:
        """Dynamic answers cached for the old health state are stale: drop them."""
        for hits in self._dynamic_hits:
            hits.clear()
        if self.decider is not None:
            self.decider.health_changed()

    def _error(self, data: bytes, rcode: int, tcp: bool) -> bytes:
        key = ("-", "-", _RCODE_LABELS[rcode], "tcp" if tcp else "udp")
        self.counts[key] = self.counts.get(key, 0) + 1
        # Header only: ID and opcode echoed, QR set, no sections. RD is copied into a reply to a
        # QUERY (FORMERR); AA, RD, RA, AD and CD are defined for QUERY only, so a reply to an
        # opcode we do not implement (NOTIMP) sets none of them (ISC genreport's opcode checks).
        flags = 0x80 | (data[2] & (0x78 if rcode == NOTIMP else 0x79))
        return data[:2] + bytes((flags, rcode)) + b"\0" * 8

    def _badvers(self, data: bytes, q: Query, tcp: bool) -> bytes:
        qtype = (data[q.qname_end] << 8) | data[q.qname_end + 1]
        key = ("-", _QTYPE_LABELS.get(qtype, "other"), "BADVERS", "tcp" if tcp else "udp")
        self.counts[key] = self.counts.get(key, 0) + 1
        header = bytes((0x80 | (data[2] & 0x79), 0)) + b"\0\1\0\0\0\0\0\1"
        return (
            data[:2] + header + data[12 : q.qname_end + 4] + self._opt(_BADVERS, q.do, False, None)
        )

    def _node(self, key: bytes, path: tuple[tuple[str, ...], ...]) -> Entry | Branch:
        """Resolve ``key`` with the selections in ``path``; a Branch where one is still needed."""
        qname = dns.name.from_wire(key, 0)[0]
        qtype, qclass = struct.unpack_from("!HH", key, len(key) - 4)
        picks = iter(path)

        def choose(record: DynamicRecord) -> RRset:
            selection = next(picks, None)
            if selection is None:
                raise Undecided(record)
            rrset = dns.rrset.RRset(record.name, dns.rdataclass.IN, RdataType(record.rdtype))
            rrset.update_ttl(record.ttl)
            for value in selection:
                rrset.add(record.rdata[value])
            return rrset

        chooser: Chooser | None = choose if self._dynamic else None
        try:
            answer = self._resolve(self.zones, qname, qtype, qclass, self.pop, chooser)
        except Undecided as undecided:
            return Branch(undecided.record, {})
        return render_entry(answer, key, qname, qtype, qclass, self._tails)

    def _root(self, key: bytes) -> Entry | Branch:
        node = self._entries.get(key)
        if node is None:
            node = self._node(key, ())
            if len(self._entries) >= self.limit:
                self._entries.clear()
            self._entries[key] = node
        return node

    def _walk(
        self, node: Branch, q: Query, host: str
    ) -> tuple[Entry, int, tuple[PoolKey, ...], bool, tuple[tuple[str, ...], ...]]:
        """Decide each dynamic record on the way: the Entry, the ECS scope it holds for, the
        pools answered from, whether every such query gets it, and the selections made."""
        assert self.decider is not None
        decide = self.decider.decide
        # The first record by itself: most dynamic questions have only the one.
        record = node.record
        selection, pool, scope, reusable = decide(record, q.ecs, host)
        pools = node.pools.get(pool)
        if pools is None:
            pools = node.pools[pool] = ((record.label, pool),)
        path: tuple[tuple[str, ...], ...] = (selection,)
        current = node.children.get(selection)
        if current is None:
            current = node.children[selection] = self._node(q.key, path)
        while type(current) is Branch:
            record = current.record
            selection, pool, record_scope, fixed = decide(record, q.ecs, host)
            if record_scope > scope:
                scope = record_scope
            reusable = reusable and fixed
            pools += ((record.label, pool),)
            path += (selection,)
            child = current.children.get(selection)
            if child is None:
                child = current.children[selection] = self._node(q.key, path)
            current = child
        assert type(current) is Entry
        return current, scope, pools, reusable, path

    def _render(
        self, data: bytes, q: Query, tcp: bool, entry: Entry, scope: int
    ) -> tuple[bytes, MetricKey]:
        """The Entry as the response to this query: ID, flags, case, OPT and ECS, size limit."""
        opt = self._opt_for(q, scope)
        limit = self._limit(q, tcp) - len(opt)
        wire = entry.full
        if len(wire) > limit:
            wire = entry.truncated
            for candidate in entry.smaller:
                if len(candidate) <= limit:
                    wire = candidate
                    break
        end = q.qname_end
        pieces = self._pieces.get(wire)
        if pieces is None:
            pieces = self._cut(wire, end, entry)
        counts, counts_opt, rest, metrics = pieces
        # ID; RD and CD copied; the counts; the question's case as asked; the rest; the OPT.
        response = b"".join(
            (
                data[:2],
                bytes((wire[2] | (data[2] & 0x01), wire[3] | (data[3] & 0x10))),
                counts_opt if opt else counts,
                data[12:end],
                rest,
                opt,
            )
        )
        return response, metrics[tcp]

    def _cut(self, wire: bytes, end: int, entry: Entry) -> Pieces:
        """The Pieces of ``wire``, a variant of ``entry`` whose question ends at ``end``.

        Kept per variant: a new client network only patches them, and the dynamic answers
        cached share one metric tuple instead of holding one per query (tuples made per query
        and kept in the caches are what made full garbage collections frequent).
        """
        qtype = (wire[end] << 8) | wire[end + 1]
        labels = (
            entry.zone,
            _QTYPE_LABELS.get(qtype, "other"),
            _RCODE_LABELS.get(entry.rcode, "other"),
        )
        arcount = (wire[10] << 8) | wire[11]
        pieces = (
            wire[4:10] + _U16.pack(arcount),
            wire[4:10] + _U16.pack(arcount + 1),  # the OPT is one more additional record
            wire[end:],
            ((*labels, "udp"), (*labels, "tcp")),
        )
        if len(self._pieces) >= self.limit:
            self._pieces.clear()
        self._pieces[wire] = pieces
        return pieces

    def _opt(self, ext_rcode: int, do: bool, nsid: bool, ecs: bytes | None) -> bytes:
        options = b""
        if nsid and self.nsid:
            options = struct.pack("!HH", OPT_NSID, len(self.nsid)) + self.nsid
        if ecs is not None:
            options += struct.pack("!HH", OPT_ECS, len(ecs)) + ecs
        return (
            _OPT_HEADER.pack(
                0,
                dns.rdatatype.OPT,
                self.max_udp,
                ext_rcode >> 4,
                0,
                0x8000 if do else 0,
                len(options),
            )
            + options
        )
