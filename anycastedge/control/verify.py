"""`pop verify`: the questions to ask every POP, their replies as comparable summaries, the
differences between POPs, and the report as a table or JSON. No I/O: ``control.probe_pops`` asks.

A question's reference is the most common answer among the POPs that answered it; a POP whose
answer differs from it, or that did not answer (timeout, REFUSED, SERVFAIL), is a difference. SOA
serials are compared apart: the highest is the newest, and every lower one is reported as older.
"""

from __future__ import annotations

import hashlib
import heapq
import ipaddress
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

from anycastedge.config.reader import parse_hostport
from anycastedge.dns.wire import OPT_NSID
from anycastedge.dns.zone import WILDCARD, Zone

DNS_PORT = 53
DEFAULT_SAMPLE = 20
#: The label asked under a wildcard owner: one fixed name, so reruns ask the same question.
WILDCARD_LABEL = b"anycastedge-verify"
#: Replies that are no answer at all: the POP failed to serve the zone, whatever the others say.
FAILED_RCODES = frozenset({"SERVFAIL", "REFUSED", "NOTIMP", "FORMERR"})
_SOA = int(dns.rdatatype.SOA)
GSLB_SKIPPED = "answers depend on client and POP health"


@dataclass(frozen=True, slots=True)
class Pop:
    """One POP's unicast DNS address, as the operator named it."""

    name: str
    host: str
    port: int = DNS_PORT

    @property
    def address(self) -> str:
        """``HOST:PORT``, the IPv6 host in brackets."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[V6]`` or ``[V6]:PORT`` (an IP address literal; port 53)."""
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        # A whole address first: a bare IPv6 address ends in something that looks like a port.
        return str(ipaddress.ip_address(bare)), DNS_PORT
    except ValueError:
        pass
    return parse_hostport(text)


def parse_pop(text: str) -> Pop:
    """``NAME=HOST[:PORT]``; ValueError says what is wrong."""
    name, sep, address = text.partition("=")
    if not sep or not name.strip() or not address:
        raise ValueError(f"{text!r} is not NAME=HOST[:PORT]")
    host, port = parse_address(address)
    return Pop(name.strip(), host, port)


def human_name(name: str) -> str:
    """A DNS name as operators type it: without the final dot (the root stays ``.``)."""
    return name.rstrip(".") or "."


@dataclass(frozen=True, slots=True, order=True)
class Question:
    """One question asked of every POP: an absolute lower-cased name and a type mnemonic."""

    qname: str
    qtype: str

    @property
    def text(self) -> str:
        """``www.example.com A``."""
        return f"{human_name(self.qname)} {self.qtype}"

    def dig(self, pop: Pop) -> str:
        """The dig command that asks ``pop`` this question as verify did (no recursion)."""
        return f"dig @{pop.host} -p {pop.port} {human_name(self.qname)} {self.qtype} +norec"


@dataclass(frozen=True, slots=True)
class ZonePlan:
    """What verify asks about one zone: its SOA first, then the sampled static names."""

    zone: str
    questions: tuple[Question, ...]
    names: int  # owners sampled, the apex included
    skipped_dynamic: int  # GSLB records in the zone, never asked

    @property
    def soa(self) -> Question:
        """The zone's SOA question."""
        return self.questions[0]


def _stable_hash(name: dns.name.Name) -> bytes:
    # Python's hash() is salted per process: reruns must pick the same names.
    return hashlib.sha256(name.to_text().lower().encode()).digest()


def _type_text(rdtype: int) -> str:
    return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))


def _asked_name(owner: dns.name.Name) -> dns.name.Name:
    """The name asked for ``owner``: under a wildcard, one fixed label it synthesizes for."""
    if owner.labels and owner.labels[0] == WILDCARD:
        return dns.name.Name((WILDCARD_LABEL,) + owner.labels[1:])
    return owner


def plan_zone(zone: Zone, sample: int = DEFAULT_SAMPLE) -> ZonePlan:
    """The apex and up to ``sample - 1`` more static names of ``zone``, picked by a stable hash,
    each with every type the zone has there (GSLB dynamic records left out)."""
    dynamic_types: dict[dns.name.Name, set[int]] = {}
    for owner, rdtype in zone.dynamic:
        dynamic_types.setdefault(owner, set()).add(int(rdtype))
    nodes = zone.nodes

    def static_types(owner: dns.name.Name) -> list[int]:
        skip = dynamic_types.get(owner, set())
        return sorted(int(t) for t in nodes[owner] if int(t) not in skip)

    # nsmallest, not a sort: zones of a million names keep only the sample in memory.
    others = (
        owner
        for owner in nodes
        if owner != zone.origin and (owner not in dynamic_types or static_types(owner))
    )
    picked = heapq.nsmallest(max(sample - 1, 0), others, key=_stable_hash)
    origin = zone.origin.to_text().lower()
    soa = Question(origin, "SOA")
    questions = {soa: None}  # ordered and without repeats: the SOA first, then as sampled
    for owner in [zone.origin, *picked]:
        asked = _asked_name(owner).to_text().lower()
        for rdtype in static_types(owner):
            questions.setdefault(Question(asked, _type_text(rdtype)))
    return ZonePlan(origin, tuple(questions), 1 + len(picked), len(zone.dynamic))


def plan_named_zone(name: str) -> ZonePlan:
    """A zone known only by name: its SOA is all verify asks."""
    origin = dns.name.from_text(name).to_text().lower()
    return ZonePlan(origin, (Question(origin, "SOA"),), 1, 0)


@dataclass(frozen=True, slots=True, order=True)
class Record:
    """One RR as compared: the owner lower-cased, the SOA serial left out of the data."""

    owner: str
    rdtype: str
    ttl: int
    rdata: str


@dataclass(frozen=True, slots=True)
class Summary:
    """What one POP answered to one question, normalised so that equal answers compare equal."""

    failure: str = ""  # why there is no answer ("timeout", "REFUSED", ...); "" if answered
    rcode: str = "NOERROR"
    aa: bool = False
    answer: tuple[Record, ...] = ()
    authority: tuple[Record, ...] = ()  # kept only when the answer is empty (referral, negative)
    serial: int | None = None  # of the SOA in the answer, compared apart

    @property
    def key(self) -> tuple[str, bool, tuple[Record, ...], tuple[Record, ...]]:
        """What must be equal across POPs (the serial aside)."""
        return (self.rcode, self.aa, self.answer, self.authority)


def failed(reason: str) -> Summary:
    """No reply: timeout, network error, a reply that does not parse."""
    return Summary(failure=reason, rcode="")


def _rdata_text(rdata: Any) -> str:
    if rdata.rdtype == _SOA:
        # The serial is compared once, as the zone's serial: here it would make every negative
        # answer of an older POP differ too.
        fields = (rdata.mname, rdata.rname, "*", rdata.refresh, rdata.retry, rdata.expire)
        return " ".join(str(f) for f in (*fields, rdata.minimum))
    return str(rdata.to_text())


def _records(section: Iterable[dns.rrset.RRset]) -> tuple[Record, ...]:
    return tuple(
        sorted(
            Record(
                rrset.name.to_text().lower(),
                dns.rdatatype.to_text(rrset.rdtype),
                int(rrset.ttl),
                _rdata_text(rdata),
            )
            for rrset in section
            for rdata in rrset
        )
    )


def summarize(reply: dns.message.Message) -> Summary:
    """A reply as compared: rcode, AA, the answer, and the authority of an empty answer."""
    rcode = dns.rcode.to_text(reply.rcode())
    if rcode in FAILED_RCODES:
        return Summary(failure=rcode, rcode=rcode, aa=bool(reply.flags & dns.flags.AA))
    answer = _records(reply.answer)
    serial = next(
        (int(rrset[0].serial) for rrset in reply.answer if rrset.rdtype == _SOA and rrset), None
    )
    return Summary(
        rcode=rcode,
        aa=bool(reply.flags & dns.flags.AA),
        answer=answer,
        authority=() if answer else _records(reply.authority),
        serial=serial,
    )


@dataclass(frozen=True, slots=True)
class Difference:
    """One POP's answer to one question differs from the others' (or is missing)."""

    pop: str
    zone: str
    question: Question
    detail: str
    others: tuple[str, ...] = ()  # the POPs whose answer this one was compared with


@dataclass(frozen=True, slots=True)
class ZoneResult:
    """One zone across the POPs: each POP's serial and how many differences were found."""

    zone: str
    serials: tuple[tuple[str, int | None], ...]  # (POP, serial or None), by POP name
    names: int
    questions: int
    skipped_dynamic: int
    differences: int

    @property
    def newest(self) -> int | None:
        """The highest serial served."""
        return max((s for _, s in self.serials if s is not None), default=None)


@dataclass(frozen=True, slots=True)
class AnycastResult:
    """Which POP answered an anycast address (by its NSID), or why nothing did."""

    host: str
    port: int
    nsid: str | None = None
    serial: int | None = None
    failure: str = ""

    @property
    def address(self) -> str:
        """``HOST:PORT``."""
        return Pop("", self.host, self.port).address


def anycast_result(host: str, port: int, reply: dns.message.Message) -> AnycastResult:
    """What an anycast address answered to the SOA query with NSID."""
    nsid = next((opt.to_wire() for opt in reply.options if opt.otype == OPT_NSID), None)
    text = None if nsid is None else nsid.decode("utf-8", "replace")
    rcode = dns.rcode.to_text(reply.rcode())
    if rcode in FAILED_RCODES:
        return AnycastResult(host, port, text, None, rcode)
    return AnycastResult(host, port, text, summarize(reply).serial)


@dataclass(frozen=True, slots=True)
class Report:
    """Everything `pop verify` found."""

    pops: tuple[Pop, ...]
    zones: tuple[ZoneResult, ...]
    differences: tuple[Difference, ...]
    anycast: tuple[AnycastResult, ...] = ()

    @property
    def exit_code(self) -> int:
        """0 when every POP agrees and every anycast address answered, else 1."""
        return 1 if self.differences or any(a.failure for a in self.anycast) else 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _group_text(records: Sequence[Record]) -> str:
    return ", ".join(r.rdata for r in records)


def _records_detail(mine: tuple[Record, ...], theirs: tuple[Record, ...], qname: str) -> str:
    """``A 192.0.2.1 vs 192.0.2.2``: the RRsets (owner, type) that differ, both sides."""

    def groups(records: tuple[Record, ...]) -> dict[tuple[str, str], list[Record]]:
        out: dict[tuple[str, str], list[Record]] = {}
        for r in records:
            out.setdefault((r.owner, r.rdtype), []).append(r)
        return out

    a, b = groups(mine), groups(theirs)
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))

    def label(key: tuple[str, str]) -> str:
        owner, rdtype = key
        return rdtype if owner == qname else f"{human_name(owner)} {rdtype}"

    if len(keys) == 1 and keys[0] in a and keys[0] in b:
        key = keys[0]
        if _group_text(a[key]) == _group_text(b[key]):
            ttls = (sorted({r.ttl for r in a[key]}), sorted({r.ttl for r in b[key]}))
            return f"{label(key)} TTL {ttls[0][0]} vs {ttls[1][0]}"
        return f"{label(key)} {_group_text(a[key])} vs {_group_text(b[key])}"

    def side(g: dict[tuple[str, str], list[Record]]) -> str:
        parts = [f"{label(k)} {_group_text(g[k])}" for k in keys if k in g]
        return "; ".join(parts) or "nothing"

    return f"{side(a)} vs {side(b)}"


def describe(mine: Summary, theirs: Summary, qname: str) -> str:
    """What in ``mine`` differs from ``theirs``: the first of rcode, AA, answer, authority."""
    if mine.rcode != theirs.rcode:
        return f"rcode {mine.rcode} vs {theirs.rcode}"
    if mine.aa != theirs.aa:
        on = {True: "on", False: "off"}
        return f"AA flag {on[mine.aa]} vs {on[theirs.aa]}"
    if mine.answer != theirs.answer:
        return _records_detail(mine.answer, theirs.answer, qname)
    return "authority " + _records_detail(mine.authority, theirs.authority, qname)


def _question_differences(
    zone: str, question: Question, answers: Mapping[str, Summary]
) -> list[Difference]:
    """The differences on one question; ``answers`` by POP name (POPs not asked are absent)."""
    found: list[Difference] = []
    answered = {pop: s for pop, s in answers.items() if not s.failure}
    for pop in sorted(answers):
        if answers[pop].failure:
            detail = f"no answer: {answers[pop].failure}"
            found.append(Difference(pop, zone, question, detail, tuple(sorted(answered))))
    if question.qtype == "SOA" and question.qname == zone:
        serials = {pop: s.serial for pop, s in answered.items() if s.serial is not None}
        newest = max(serials.values(), default=None)
        newest_pops = tuple(sorted(p for p, s in serials.items() if s == newest))
        for pop in sorted(serials):
            if serials[pop] != newest:
                detail = (
                    f"older serial {serials[pop]} < {newest} (newest: {', '.join(newest_pops)})"
                )
                found.append(Difference(pop, zone, question, detail, newest_pops))
    counts = Counter(s.key for s in answered.values())
    if len(counts) > 1:
        by_key = {s.key: s for s in answered.values()}
        # Ties are broken by the answer itself, never by the order POPs were given in.
        ranked = sorted(counts, key=lambda k: (-counts[k], repr(k)))
        majority = counts[ranked[0]] > counts[ranked[1]]
        for pop in sorted(answered):
            mine = answered[pop].key
            if majority and mine == ranked[0]:
                continue
            # Without a majority every POP is shown against the most common of the others.
            other = ranked[0] if mine != ranked[0] else ranked[1]
            detail = describe(by_key[mine], by_key[other], question.qname)
            where = f"on {_plural(counts[other], 'other POP')}"
            suffix = "" if majority else " (no majority)"
            others = tuple(sorted(p for p, s in answered.items() if s.key == other))
            found.append(Difference(pop, zone, question, f"{detail} {where}{suffix}", others))
    return sorted(found, key=lambda d: d.pop)


def compare(
    plans: Sequence[ZonePlan], answers: Mapping[tuple[str, Question], Summary]
) -> tuple[tuple[ZoneResult, ...], tuple[Difference, ...]]:
    """Every zone's serials per POP and every difference, ordered by zone, question and POP.

    ``answers`` maps (POP name, question) to its summary; a pair that is absent was not asked.
    """
    pops = sorted({pop for pop, _ in answers})
    zones: list[ZoneResult] = []
    differences: list[Difference] = []
    for plan in plans:
        zone_differences: list[Difference] = []
        for question in plan.questions:
            asked = {p: answers[(p, question)] for p in pops if (p, question) in answers}
            zone_differences += _question_differences(plan.zone, question, asked)
        serials = tuple(
            (p, answers[(p, plan.soa)].serial if (p, plan.soa) in answers else None) for p in pops
        )
        zones.append(
            ZoneResult(
                plan.zone,
                serials,
                plan.names,
                len(plan.questions),
                plan.skipped_dynamic,
                len(zone_differences),
            )
        )
        differences += zone_differences
    return tuple(zones), tuple(differences)


def _serials_text(zone: ZoneResult) -> str:
    values = {s for _, s in zone.serials}
    if len(values) == 1:
        (only,) = values
        return f"serial {only}" if only is not None else "no serial"
    parts = []
    for serial in sorted(values, key=lambda s: -1 if s is None else s, reverse=True):
        pops = ", ".join(p for p, s in zone.serials if s == serial)
        parts.append(f"{serial if serial is not None else 'none'} on {pops}")
    return "serials " + "; ".join(parts)


def _zone_line(zone: ZoneResult, pops: int) -> str:
    asked = f"{_plural(zone.names, 'name')} compared"
    if zone.differences:
        state = f"{_plural(zone.differences, 'difference')}, {asked}"
    elif pops == 1:
        state = f"1 POP answers, {asked} (nothing to compare with one POP)"
    else:
        state = f"{pops} POPs agree, {asked}"
    skipped = ""
    if zone.skipped_dynamic:
        skipped = f"; {_plural(zone.skipped_dynamic, 'GSLB record')} not compared ({GSLB_SKIPPED})"
    return f"{human_name(zone.zone)}  {_serials_text(zone)}  {state}{skipped}"


def _anycast_line(result: AnycastResult, pops: Sequence[Pop]) -> str:
    head = f"anycast {result.address}: "
    if result.failure:
        return head + f"no answer: {result.failure}"
    serial = f", serial {result.serial}" if result.serial is not None else ""
    if result.nsid is None:
        return head + f"answered without NSID (is dns.nsid off?){serial}"
    known = "" if any(p.name == result.nsid for p in pops) else " (not one of the --pop names)"
    return head + f"answered by POP {result.nsid} (NSID){known}{serial}"


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    ]


def dig_commands(report: Report) -> list[tuple[Question, list[tuple[Pop, str]]]]:
    """For each differing question: the dig commands of the POPs that differ, then of one that
    gave the others' answer (if any), so that an operator sees both sides."""
    by_name = {p.name: p for p in report.pops}
    differing: dict[tuple[str, Question], set[str]] = {}
    others: dict[tuple[str, Question], set[str]] = {}
    for d in report.differences:
        differing.setdefault((d.zone, d.question), set()).add(d.pop)
        others.setdefault((d.zone, d.question), set()).update(d.others)
    out = []
    for key, pops in differing.items():
        reference = sorted(others[key] - pops)[:1]
        names = [n for n in [*sorted(pops), *reference] if n in by_name]
        out.append((key[1], [(by_name[n], key[1].dig(by_name[n])) for n in names]))
    return out


def render_text(report: Report) -> str:
    """The human report: a line per zone and anycast address, then the drift table and the dig
    commands that show each difference."""
    lines = [_zone_line(zone, len(report.pops)) for zone in report.zones]
    lines += [_anycast_line(result, report.pops) for result in report.anycast]
    if not report.differences:
        return "\n".join(lines)
    rows = [("POP", "zone", "question", "what differs")]
    rows += [(d.pop, human_name(d.zone), d.question.text, d.detail) for d in report.differences]
    lines += ["", *_table(rows), "", "See for yourself:"]
    for question, commands in dig_commands(report):
        lines.append(f"  # {question.text}")
        width = max(len(command) for _, command in commands)
        lines += [f"  {command.ljust(width)}  # {pop.name}" for pop, command in commands]
    return "\n".join(lines)


def report_json(report: Report) -> dict[str, Any]:
    """The report as JSON-ready data (names absolute, with the final dot)."""
    by_name = {p.name: p for p in report.pops}
    return {
        "ok": report.exit_code == 0,
        "exit_code": report.exit_code,
        "pops": [{"name": p.name, "host": p.host, "port": p.port} for p in report.pops],
        "zones": [
            {
                "zone": z.zone,
                "serials": dict(z.serials),
                "newest_serial": z.newest,
                "names": z.names,
                "questions": z.questions,
                "skipped_dynamic": z.skipped_dynamic,
                "differences": z.differences,
            }
            for z in report.zones
        ],
        "differences": [
            {
                "pop": d.pop,
                "zone": d.zone,
                "question": {"name": d.question.qname, "type": d.question.qtype},
                "detail": d.detail,
                "compared_with": list(d.others),
                "dig": d.question.dig(by_name[d.pop]) if d.pop in by_name else None,
            }
            for d in report.differences
        ],
        "anycast": [
            {
                "host": a.host,
                "port": a.port,
                "nsid": a.nsid,
                "serial": a.serial,
                "error": a.failure or None,
            }
            for a in report.anycast
        ],
    }
