"""Table-driven tests of the answer engine, `resolve()`, over tests/fixtures/zones (no sockets)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import dns.name
import dns.rdataclass
import dns.rdatatype
import pytest

from anycastedge.config.pop import SoaConfig
from anycastedge.config.zones import build_zone
from anycastedge.dns.engine import FORMERR, NOERROR, NOTIMP, NXDOMAIN, REFUSED, Answer, resolve
from anycastedge.dns.zone import RRset, Zone, ZoneSet

POP = "ams1"
ORIGIN = dns.name.from_text("engine.test.")
FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "zones" / "engine.test.yaml"

# The synthesized SOA of the fixture zone (default timers), {serial} filled in per test run.
_SOA_RDATA = "ns1.engine.test. hostmaster.engine.test. {serial} 7200 3600 1209600 300"
SOA = f"engine.test. 3600 IN SOA {_SOA_RDATA}"
# In negative answers: TTL = min(SOA TTL 3600, MINIMUM 300), RFC 2308 section 5.
NEG = {f"engine.test. 300 IN SOA {_SOA_RDATA}"}

APEX_NS = {
    "engine.test. 3600 IN NS ns1.engine.test.",
    "engine.test. 3600 IN NS ns2.engine.test.",
}
APEX_GLUE = {
    "ns1.engine.test. 3600 IN A 127.0.0.53",
    "ns1.engine.test. 3600 IN AAAA ::1",
    "ns2.engine.test. 3600 IN A 127.0.0.54",
}
DELEG_NS = {
    "deleg.engine.test. 3600 IN NS ns1.deleg.engine.test.",
    "deleg.engine.test. 3600 IN NS ns2.deleg.engine.test.",
    "deleg.engine.test. 3600 IN NS ns.elsewhere.invalid.",
}
DELEG_GLUE = {
    "ns1.deleg.engine.test. 3600 IN A 127.0.0.55",
    "ns1.deleg.engine.test. 3600 IN AAAA ::1",
    "ns2.deleg.engine.test. 3600 IN A 127.0.0.56",
}
DELEG_DS = {
    "deleg.engine.test. 3600 IN DS 12345 13 2 "
    "2bb183af5f22588179a53b0a98631fad1a292118bbb2f9a4f1f1d3e8f3c7a0b1"
}
CHAIN = {
    "a.engine.test. 120 IN CNAME b.engine.test.",
    "b.engine.test. 120 IN CNAME c.engine.test.",
}
C_A = {"c.engine.test. 60 IN A 192.0.2.3"}
OLD_DNAME = {"old.engine.test. 600 IN DNAME new.engine.test."}
EXT_DNAME = {"ext.engine.test. 600 IN DNAME elsewhere.invalid."}
UNCHECKED: set[str] | None = None  # "do not check this section"


@dataclass(frozen=True)
class Case:
    """One question and the whole expected Answer; sections are sets of one-line RR texts."""

    qname: str
    qtype: str
    rcode: int = NOERROR
    aa: bool = True
    answer: frozenset[str] | set[str] | None = frozenset()
    authority: frozenset[str] | set[str] | None = frozenset()
    additional: frozenset[str] | set[str] | None = frozenset()
    qclass: str = "IN"

    @property
    def id(self) -> str:
        """A readable pytest id."""
        suffix = "" if self.qclass == "IN" else f"/{self.qclass}"
        return f"{self.qname}/{self.qtype}{suffix}"


def nodata(qname: str, qtype: str, answer: Iterable[str] = ()) -> Case:
    """NOERROR, AA, no data of that type: the SOA in authority."""
    return Case(qname, qtype, answer=set(answer), authority=NEG)


def nxdomain(qname: str, qtype: str = "A", answer: Iterable[str] = ()) -> Case:
    """NXDOMAIN, AA, the SOA in authority."""
    return Case(qname, qtype, NXDOMAIN, answer=set(answer), authority=NEG)


def positive(
    qname: str,
    qtype: str,
    answer: Iterable[str],
    additional: Iterable[str] = (),
    qclass: str = "IN",
) -> Case:
    """NOERROR, AA, the answer; the apex NS set in authority and in-zone NS addresses in additional
    (as NSD does), except addresses already in the answer."""
    answer = set(answer)
    return Case(
        qname,
        qtype,
        answer=answer,
        authority=APEX_NS,
        additional=set(additional) | (APEX_GLUE - answer),
        qclass=qclass,
    )


def referral(qname: str, qtype: str = "A") -> Case:
    """The referral to `deleg`: not AA, its NS in authority, its glue in additional."""
    return Case(qname, qtype, aa=False, authority=DELEG_NS, additional=DELEG_GLUE)


def refused(qname: str, qtype: str = "A", qclass: str = "IN") -> Case:
    """REFUSED, not AA, nothing in any section."""
    return Case(qname, qtype, REFUSED, aa=False, qclass=qclass)


CASES = [
    # The apex: positive answers with additional addresses for in-zone targets.
    positive("engine.test.", "A", {"engine.test. 300 IN A 192.0.2.1"}),
    positive("engine.test.", "AAAA", {"engine.test. 300 IN AAAA 2001:db8::1"}),
    Case("engine.test.", "NS", answer=APEX_NS, additional=APEX_GLUE),  # NS once, in the answer
    positive("engine.test.", "SOA", {SOA}),
    positive(
        "engine.test.",
        "MX",
        {
            "engine.test. 300 IN MX 10 mail.engine.test.",
            "engine.test. 300 IN MX 20 mx.elsewhere.invalid.",
        },
        additional={"mail.engine.test. 300 IN A 192.0.2.25"},
    ),
    positive(
        "engine.test.",
        "TXT",
        {
            'engine.test. 300 IN TXT "v=spf1 -all"',
            'engine.test. 300 IN TXT "v=DKIM1;k=rsa;p=MIGf"',
        },
    ),
    nodata("engine.test.", "CAA"),
    nodata("engine.test.", "DS"),
    positive("www.engine.test.", "A", {"www.engine.test. 300 IN A 192.0.2.80"}),
    positive("www.engine.test.", "AAAA", {"www.engine.test. 300 IN AAAA 2001:db8::80"}),
    nodata("www.engine.test.", "MX"),
    nxdomain("nope.engine.test."),
    nxdomain("nope.engine.test.", "MX"),
    nxdomain("deeper.www.engine.test."),
    # Names that only the zone's NS point at are ordinary authoritative data.
    positive("ns1.engine.test.", "AAAA", {"ns1.engine.test. 3600 IN AAAA ::1"}),
    # CNAME chains are followed inside the zone.
    positive("a.engine.test.", "A", CHAIN | C_A),
    nodata("a.engine.test.", "AAAA", answer=CHAIN),
    positive("a.engine.test.", "CNAME", {"a.engine.test. 120 IN CNAME b.engine.test."}),
    positive("b.engine.test.", "A", {"b.engine.test. 120 IN CNAME c.engine.test."} | C_A),
    # RFC 6604: the rcode is that of the last name in the chain; the CNAME stays in the answer.
    nxdomain(
        "dangling.engine.test.", answer={"dangling.engine.test. 120 IN CNAME missing.engine.test."}
    ),
    # A loop ends: each CNAME once (what else, if anything, is left to the server).
    Case(
        "loop1.engine.test.",
        "A",
        answer={
            "loop1.engine.test. 120 IN CNAME loop2.engine.test.",
            "loop2.engine.test. 120 IN CNAME loop1.engine.test.",
        },
        authority=UNCHECKED,
        additional=UNCHECKED,
    ),
    # Into a delegation: the CNAME, authoritatively, then the referral for its target
    # (RFC 1034 4.3.2 step 3b; NSD sets AA and adds the referral after a CNAME).
    pytest.param(
        Case(
            "todeleg.engine.test.",
            "A",
            answer={"todeleg.engine.test. 120 IN CNAME host.deleg.engine.test."},
            authority=DELEG_NS,
            additional=DELEG_GLUE,
        ),
        id="todeleg.engine.test./A",
    ),
    # Out of the zone: not followed, no SOA (the final answer is someone else's).
    Case(
        "out.engine.test.", "A", answer={"out.engine.test. 120 IN CNAME target.elsewhere.invalid."}
    ),
    # Wildcards, RFC 4592.
    positive("foo.wild.engine.test.", "A", {"foo.wild.engine.test. 30 IN A 192.0.2.40"}),
    positive("foo.wild.engine.test.", "TXT", {'foo.wild.engine.test. 30 IN TXT "wildcard"'}),
    positive("a.b.wild.engine.test.", "A", {"a.b.wild.engine.test. 30 IN A 192.0.2.40"}),
    nodata("foo.wild.engine.test.", "MX"),
    positive("*.wild.engine.test.", "A", {"*.wild.engine.test. 30 IN A 192.0.2.40"}),
    positive("sub.wild.engine.test.", "TXT", {'sub.wild.engine.test. 30 IN TXT "explicit"'}),
    nodata("sub.wild.engine.test.", "A"),  # an existing name is never synthesized
    nxdomain("x.sub.wild.engine.test."),  # closest encloser is sub.wild: no *.sub.wild
    nodata("wild.engine.test.", "A"),  # exists: it is the parent of *.wild
    positive("foo.wc.engine.test.", "A", {"foo.wc.engine.test. 30 IN CNAME c.engine.test."} | C_A),
    # Empty non-terminals exist (NODATA, not NXDOMAIN) and block wildcards above them.
    nodata("ent.engine.test.", "A"),
    nodata("ent.engine.test.", "TXT"),
    positive("x.ent.engine.test.", "A", {"x.ent.engine.test. 300 IN A 192.0.2.50"}),
    nxdomain("y.ent.engine.test."),
    nodata("blocked.engine.test.", "A"),
    nodata("mid.blocked.engine.test.", "A"),
    nxdomain("z.mid.blocked.engine.test."),
    positive(
        "leaf.mid.blocked.engine.test.", "A", {"leaf.mid.blocked.engine.test. 300 IN A 192.0.2.51"}
    ),
    positive("other.blocked.engine.test.", "A", {"other.blocked.engine.test. 300 IN A 192.0.2.52"}),
    positive(
        "a.other.blocked.engine.test.", "A", {"a.other.blocked.engine.test. 300 IN A 192.0.2.52"}
    ),
    # Delegations: referrals, not AA, NS in authority, glue in additional.
    referral("deleg.engine.test.", "NS"),
    referral("deleg.engine.test.", "A"),
    referral("deleg.engine.test.", "ANY"),
    referral("below.deleg.engine.test."),  # occluded: never answered from the data
    referral("ns1.deleg.engine.test."),  # glue is not authoritative data
    referral("ns1.deleg.engine.test.", "AAAA"),
    referral("deep.below.deleg.engine.test.", "DS"),  # DS below the cut is the child's
    # DS lives on the parent side of the cut: answered authoritatively.
    Case("deleg.engine.test.", "DS", answer=DELEG_DS),
    nodata("nods.engine.test.", "DS"),
    Case(
        "nods.engine.test.",
        "A",
        aa=False,
        authority={"nods.engine.test. 3600 IN NS ns.elsewhere.invalid."},
    ),
    # DNAME, RFC 6672: the DNAME, a synthesized CNAME (DNAME's TTL), then the target's answer.
    positive(
        "www.old.engine.test.",
        "A",
        OLD_DNAME
        | {
            "www.old.engine.test. 600 IN CNAME www.new.engine.test.",
            "www.new.engine.test. 300 IN A 192.0.2.60",
        },
    ),
    nxdomain(
        "nothere.old.engine.test.",
        answer=OLD_DNAME | {"nothere.old.engine.test. 600 IN CNAME nothere.new.engine.test."},
    ),
    positive("old.engine.test.", "DNAME", OLD_DNAME),
    # Asked for the CNAME itself, the synthesized CNAME is the answer: it is not followed.
    Case(
        "www.old.engine.test.",
        "CNAME",
        answer=OLD_DNAME | {"www.old.engine.test. 600 IN CNAME www.new.engine.test."},
        authority=UNCHECKED,
        additional=UNCHECKED,
    ),
    pytest.param(
        Case(
            "nothere.old.engine.test.",
            "CNAME",
            answer=OLD_DNAME | {"nothere.old.engine.test. 600 IN CNAME nothere.new.engine.test."},
            authority=UNCHECKED,
            additional=UNCHECKED,
        ),
        id="nothere.old.engine.test./CNAME",
    ),
    nodata("old.engine.test.", "A"),  # the owner itself is not redirected
    Case(
        "x.ext.engine.test.",
        "A",
        answer=EXT_DNAME | {"x.ext.engine.test. 600 IN CNAME x.elsewhere.invalid."},
    ),
    # SRV: in-zone targets' addresses in additional, out-of-zone ones not.
    positive(
        "_sip._udp.engine.test.",
        "SRV",
        {
            "_sip._udp.engine.test. 600 IN SRV 10 5 5060 sip.engine.test.",
            "_sip._udp.engine.test. 600 IN SRV 20 5 5060 sip.elsewhere.invalid.",
        },
        additional={
            "sip.engine.test. 300 IN A 192.0.2.70",
            "sip.engine.test. 300 IN AAAA 2001:db8::70",
        },
    ),
    nxdomain("_sip._tcp.engine.test.", "SRV"),
    nodata("_udp.engine.test.", "SRV"),  # empty non-terminal
    positive(
        "mxbig.engine.test.",
        "MX",
        {"mxbig.engine.test. 300 IN MX 10 mailbig.engine.test."},
        additional={f"mailbig.engine.test. 300 IN A 127.0.3.{i}" for i in range(1, 31)},
    ),
    positive(
        "big.engine.test.", "A", {f"big.engine.test. 300 IN A 127.0.1.{i}" for i in range(1, 41)}
    ),
    # Names the file wrote in mixed case are found in lower case.
    positive("mixed.engine.test.", "A", {"mixed.engine.test. 300 IN A 192.0.2.90"}),
    # ANY where there is nothing to give.
    nxdomain("nope.engine.test.", "ANY"),
    nodata("ent.engine.test.", "ANY"),
    # Outside our zones, transfers, and classes we do not serve: REFUSED.
    refused("example.org."),
    refused("."),
    refused(".", "NS"),
    refused("test.", "SOA"),  # the parent of our zone is not ours
    refused("xengine.test."),  # a suffix match that is not a label boundary
    refused("engine.test.", "AXFR"),
    refused("engine.test.", "IXFR"),
    refused("www.engine.test.", "AXFR"),
    refused("engine.test.", "A", "HS"),
    refused("engine.test.", "A", "NONE"),
    # Class ANY is answered from the IN data (what goes with it is left open: NSD adds no NS).
    Case(
        "www.engine.test.",
        "A",
        answer={"www.engine.test. 300 IN A 192.0.2.80"},
        authority=UNCHECKED,
        additional=UNCHECKED,
        qclass="ANY",
    ),
    # CHAOS: id.server and hostname.bind name the POP (not AA, as NSD); the rest is refused.
    Case("id.server.", "TXT", aa=False, answer={'id.server. 0 CH TXT "ams1"'}, qclass="CH"),
    Case("hostname.bind.", "TXT", aa=False, answer={'hostname.bind. 0 CH TXT "ams1"'}, qclass="CH"),
    Case("id.server.", "ANY", aa=False, answer={'id.server. 0 CH TXT "ams1"'}, qclass="CH"),
    refused("version.bind.", "TXT", "CH"),
    refused("version.server.", "TXT", "CH"),
    refused("id.server.", "A", "CH"),
    refused("www.engine.test.", "A", "CH"),
    # What cannot be a question at all, or is obsolete.
    Case("www.engine.test.", "OPT", FORMERR, aa=False),
    Case("www.engine.test.", "MAILA", NOTIMP, aa=False),
    Case("www.engine.test.", "MAILB", NOTIMP, aa=False),
]


def rr_lines(rrsets: Iterable[RRset], serial: int | None = None) -> set[str]:
    """Every RR of ``rrsets`` as one line of zone-file text; the SOA serial as ``{serial}``."""
    lines: set[str] = set()
    for rrset in rrsets:
        for line in rrset.to_text().splitlines():
            if serial is not None and rrset.rdtype == dns.rdatatype.SOA:
                line = line.replace(f" {serial} ", " {serial} ")
            lines.add(line)
    return lines


def ask(zones: ZoneSet, qname: str, qtype: str, qclass: str = "IN") -> Answer:
    """resolve() one question given as text."""
    return resolve(
        zones,
        dns.name.from_text(qname),
        dns.rdatatype.from_text(qtype),
        dns.rdataclass.from_text(qclass),
        POP,
    )


def fixture_zone(zones: ZoneSet) -> Zone:
    """The `engine.test.` zone of the fixture set."""
    return zones.zones[ORIGIN]


@pytest.mark.parametrize("case", CASES, ids=[c.id if isinstance(c, Case) else None for c in CASES])
def test_resolve_table(engine_zones: ZoneSet, case: Case) -> None:
    """Each question gets exactly the expected rcode, AA flag and sections."""
    serial = fixture_zone(engine_zones).serial
    result = ask(engine_zones, case.qname, case.qtype, case.qclass)
    assert (result.rcode, result.aa) == (case.rcode, case.aa)
    for section in ("answer", "authority", "additional"):
        expected = getattr(case, section)
        if expected is None:
            continue
        assert rr_lines(getattr(result, section), serial) == set(expected), section


@pytest.mark.parametrize(
    "qname",
    [
        "engine.test.",
        "www.engine.test.",
        "ns1.engine.test.",
        "a.engine.test.",
        "sub.wild.engine.test.",
        "_sip._udp.engine.test.",
        "old.engine.test.",
        "big.engine.test.",
    ],
)
def test_any_is_minimal(engine_zones: ZoneSet, qname: str) -> None:
    """ANY gets exactly one of the name's own RRsets and nothing in authority (RFC 8482)."""
    result = ask(engine_zones, qname, "ANY")
    assert (result.rcode, result.aa) == (NOERROR, True)
    assert len(result.answer) == 1
    node = fixture_zone(engine_zones).nodes[dns.name.from_text(qname)]
    assert result.answer[0].to_text() in {rrset.to_text() for rrset in node.values()}
    assert not result.authority


def test_any_at_wildcard_is_one_synthesized_rrset(engine_zones: ZoneSet) -> None:
    """ANY at a wildcard-matched name gives one of the wildcard's RRsets, owned by the qname."""
    result = ask(engine_zones, "foo.wild.engine.test.", "ANY")
    assert len(result.answer) == 1
    assert rr_lines(result.answer) <= {
        "foo.wild.engine.test. 30 IN A 192.0.2.40",
        'foo.wild.engine.test. 30 IN TXT "wildcard"',
    }


def test_referral_is_marked_as_one(engine_zones: ZoneSet) -> None:
    """A referral says so, so that the wire layer truncates rather than drop its glue."""
    assert ask(engine_zones, "below.deleg.engine.test.", "A").referral
    assert not ask(engine_zones, "engine.test.", "NS").referral
    assert not ask(engine_zones, "deleg.engine.test.", "DS").referral


@pytest.mark.parametrize(
    ("qname", "zone"),
    [
        ("www.engine.test.", "engine.test."),
        ("nope.engine.test.", "engine.test."),
        ("engine.test.", "engine.test."),
        ("example.org.", None),
        ("id.server.", None),
    ],
)
def test_answer_names_its_zone(engine_zones: ZoneSet, qname: str, zone: str | None) -> None:
    """The Answer carries the zone that answered (the metrics label), None outside our zones."""
    result = ask(engine_zones, qname, "A")
    assert result.zone == (dns.name.from_text(zone) if zone else None)


@pytest.mark.parametrize(
    "qname",
    [
        "WWW.ENGINE.TEST.",
        "Www.Engine.Test.",
        "A.ENGINE.TEST.",
        "FOO.WILD.ENGINE.TEST.",
        "DELEG.ENGINE.TEST.",
        "NOPE.ENGINE.TEST.",
        "MiXeD.engine.test.",
        "WWW.OLD.ENGINE.TEST.",
    ],
)
def test_case_insensitive(engine_zones: ZoneSet, qname: str) -> None:
    """A question in any case gets the same answer as in lower case (names compared lowercased)."""
    upper = ask(engine_zones, qname, "A")
    lower = ask(engine_zones, qname.lower(), "A")
    assert (upper.rcode, upper.aa) == (lower.rcode, lower.aa)
    for section in ("answer", "authority", "additional"):
        got = {line.lower() for line in rr_lines(getattr(upper, section))}
        assert got == {line.lower() for line in rr_lines(getattr(lower, section))}


@pytest.mark.parametrize(
    ("ttl", "minimum", "negative"),
    [(3600, 300, 300), (60, 300, 60), (600, 600, 600), (0, 300, 0)],
)
def test_negative_ttl_is_min_of_soa_ttl_and_minimum(
    tmp_path: Path, ttl: int, minimum: int, negative: int
) -> None:
    """NXDOMAIN and NODATA carry the SOA with TTL min(SOA TTL, MINIMUM) (RFC 2308 section 5)."""
    zone, _ = build_zone(FIXTURE, SoaConfig(ttl=ttl, minimum=minimum))
    zones = ZoneSet({zone.origin: zone})
    for qname, qtype, rcode in [
        ("nope.engine.test.", "A", NXDOMAIN),
        ("www.engine.test.", "MX", NOERROR),
        ("ent.engine.test.", "A", NOERROR),
    ]:
        result = ask(zones, qname, qtype)
        assert result.rcode == rcode
        [soa] = result.authority
        assert soa.rdtype == dns.rdatatype.SOA and soa.name == ORIGIN
        assert soa.ttl == negative
        assert list(soa) == list(zone.soa)  # same rdata, only the TTL differs
    [answered] = ask(zones, "engine.test.", "SOA").answer
    assert answered.ttl == ttl  # a positive SOA answer keeps its own TTL


def test_resolve_does_not_mutate_the_zone(engine_zones: ZoneSet) -> None:
    """Answers built from wildcards and negative SOAs leave the zone's own RRsets untouched."""
    zone = fixture_zone(engine_zones)
    before = {
        owner: {t: r.to_text() for t, r in node.items()} for owner, node in zone.nodes.items()
    }
    for qname, qtype in [
        ("foo.wild.engine.test.", "A"),
        ("nope.engine.test.", "A"),
        ("foo.wc.engine.test.", "A"),
        ("www.old.engine.test.", "A"),
    ]:
        ask(engine_zones, qname, qtype)
    after = {owner: {t: r.to_text() for t, r in node.items()} for owner, node in zone.nodes.items()}
    assert after == before
    assert zone.soa.ttl == 3600


def test_child_zone_we_also_serve_answers_for_its_names(tmp_path: Path) -> None:
    """With a parent and a child zone loaded, names in the child come from the child zone."""
    parent_file = tmp_path / "engine.test.yaml"
    parent_file.write_text(FIXTURE.read_text())
    child_file = tmp_path / "deleg.engine.test.yaml"
    child_file.write_text(
        "'':\n  - {type: NS, values: [ns1.deleg.engine.test.]}\n"
        "www:\n  {type: A, ttl: 60, value: 192.0.2.200}\n"
        "ns1:\n  {type: A, value: 127.0.0.55}\n"
    )
    parent, _ = build_zone(parent_file, SoaConfig())
    child, _ = build_zone(child_file, SoaConfig())
    zones = ZoneSet({parent.origin: parent, child.origin: child})
    result = ask(zones, "www.deleg.engine.test.", "A")
    assert (result.rcode, result.aa) == (NOERROR, True)
    assert rr_lines(result.answer) == {"www.deleg.engine.test. 60 IN A 192.0.2.200"}
    assert result.zone == child.origin
    assert ask(zones, "www.engine.test.", "A").zone == parent.origin


def _zone_from_text(tmp_path: Path, origin: str, text: str) -> ZoneSet:
    path = tmp_path / f"{origin.rstrip('.')}.yaml"
    path.write_text(text)
    zone, _ = build_zone(path, SoaConfig())
    return ZoneSet({zone.origin: zone})


def test_dname_loop_between_two_names_ends(tmp_path: Path) -> None:
    """Two DNAMEs pointing at each other: each DNAME and CNAME once, then the loop is cut."""
    zones = _zone_from_text(
        tmp_path,
        "loop.test.",
        "'': {type: NS, value: ns.elsewhere.invalid.}\n"
        "a: {type: DNAME, value: b.loop.test.}\n"
        "b: {type: DNAME, value: a.loop.test.}\n",
    )
    result = ask(zones, "x.a.loop.test.", "A")
    assert rr_lines(result.answer) == {
        "a.loop.test. 3600 IN DNAME b.loop.test.",
        "x.a.loop.test. 3600 IN CNAME x.b.loop.test.",
        "b.loop.test. 3600 IN DNAME a.loop.test.",
        "x.b.loop.test. 3600 IN CNAME x.a.loop.test.",
    }
    assert len(result.answer) == 4


def test_dname_below_its_own_owner_is_applied_once(tmp_path: Path) -> None:
    """A DNAME that redirects into its own subtree appears once in the answer, not once per pass."""
    zones = _zone_from_text(
        tmp_path,
        "loop.test.",
        "'': {type: NS, value: ns.elsewhere.invalid.}\nd: {type: DNAME, value: sub.d.loop.test.}\n",
    )
    result = ask(zones, "x.d.loop.test.", "A")
    assert (result.rcode, result.aa) == (NOERROR, True)
    assert rr_lines(result.answer) == {
        "d.loop.test. 3600 IN DNAME sub.d.loop.test.",
        "x.d.loop.test. 3600 IN CNAME x.sub.d.loop.test.",
    }
    assert len(result.answer) == 2, "an RRset repeated in the answer section"
