"""Comparing two DNS replies the way the NSD differential tests do (tests/integration/test_nsd_*).

A reply is reduced to what a client can rely on: rcode, the AA/TC/RA flags, whether an OPT comes
back (and its version), the question (case-sensitive), the owner of the first answer RRset as sent,
and the answer, authority and additional sections (OPT excluded) as sets of RRsets with TTLs,
owner names and names inside RDATA lower-cased, SOA serials zeroed.
"""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset


def rrset_text(rrset: dns.rrset.RRset) -> str:
    """One line for an RRset: lower-cased owner, TTL, class, type, sorted canonical RDATA."""
    rdatas = []
    for rd in rrset:
        canon = rd.to_digestable()  # names in RDATA lower-cased (RFC 4034 6.2)
        rd = dns.rdata.from_wire(rd.rdclass, rd.rdtype, canon, 0, len(canon))
        if rd.rdtype == dns.rdatatype.SOA:
            rd = rd.replace(serial=0)
        rdatas.append(rd.to_text())
    return (
        f"{rrset.name.to_text().lower()} {rrset.ttl} {dns.rdataclass.to_text(rrset.rdclass)} "
        f"{dns.rdatatype.to_text(rrset.rdtype)} {' | '.join(sorted(rdatas))}"
    )


def summarize(reply: dns.message.Message | Exception) -> dict[str, object]:
    """The parts of a reply that are compared (see the module docstring)."""
    if isinstance(reply, Exception):
        return {"error": f"{type(reply).__name__}: {reply}"}
    flags = [f for f in ("AA", "TC", "RA") if reply.flags & dns.flags.from_text(f)]
    return {
        "rcode": dns.rcode.to_text(reply.rcode()),
        "flags": " ".join(flags) or "-",
        "edns": reply.edns if reply.edns >= 0 else None,
        "question": [q.to_text() for q in reply.question],
        # the owner of the answer as sent: query-name case should be preserved (design.md)
        "answer owner": reply.answer[0].name.to_text() if reply.answer else None,
        "answer": {rrset_text(r) for r in reply.answer},
        "authority": {rrset_text(r) for r in reply.authority},
        "additional": {rrset_text(r) for r in reply.additional},  # OPT is not in .additional
    }


FIELDS = ("error", "rcode", "flags", "edns", "question", "answer owner", "answer", "authority",
          "additional")  # fmt: skip


def diff(nsd: dict[str, object], ours: dict[str, object]) -> list[str]:
    """Readable lines for every field that differs; empty if the replies agree."""
    lines = []
    for key in FIELDS:
        a, b = nsd.get(key), ours.get(key)
        if a == b:
            continue
        if isinstance(a, set) and isinstance(b, set):
            lines += [f"  {key}: only NSD         {r}" for r in sorted(a - b)]
            lines += [f"  {key}: only anycastedge {r}" for r in sorted(b - a)]
        else:
            lines.append(f"  {key}: NSD {a!r} / anycastedge {b!r}")
    return lines
