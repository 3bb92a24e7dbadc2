"""The compiled zone on its own, and its fast path against the answer engine as the reference."""

from __future__ import annotations

import dns.message
import dns.name
import dns.rdatatype
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anycastedge.dns.compiled import (
    CnameNode,
    CompiledZone,
    CutNode,
    Held,
    WithTargets,
    decode,
    repoint,
)
from anycastedge.dns.wire import Responder, parse_query
from anycastedge.dns.zone import ZoneSet, name_key

ORIGIN = dns.name.from_text("engine.test.")


def wire(text: str) -> bytes:
    out = dns.name.from_text(text).to_wire()
    assert out is not None
    return out


@pytest.fixture(scope="module")
def compiled(engine_zones: ZoneSet) -> CompiledZone:
    return engine_zones.zones[ORIGIN].compiled


def test_nodes_hold_pre_encoded_rrs_owned_by_the_question(compiled) -> None:  # type: ignore[no-untyped-def]
    """An address RRset is its RRs with the owner as a pointer to the question name."""
    node = compiled.nodes[wire("ns1.engine.test.")]
    count, rrs = node[dns.rdatatype.A]
    assert count >= 1 and rrs[:2] == b"\xc0\x0c"
    message = dns.message.from_wire(
        b"\0\0\x84\0\0\1" + count.to_bytes(2, "big") + b"\0\0\0\0"
        + wire("ns1.engine.test.") + b"\0\1\0\1" + rrs
    )  # fmt: skip
    assert message.answer[0].name == dns.name.from_text("ns1.engine.test.")


def test_what_the_engine_must_answer_is_marked_slow(compiled) -> None:  # type: ignore[no-untyped-def]
    """A delegation is a CutNode (names below it are found through it); types with names in
    their data are Held for the engine; a CNAME is a CnameNode; empty non-terminals exist with
    no types."""
    nodes = compiled.nodes
    assert type(nodes[wire("deleg.engine.test.")]) is CutNode
    assert wire("below.deleg.engine.test.") not in nodes  # occluded: found through the cut
    soa = nodes[wire("engine.test.")][dns.rdatatype.SOA]
    assert type(soa) is Held
    assert decode(ORIGIN, dns.rdatatype.SOA, soa)[0].mname == dns.name.from_text("ns1.engine.test.")
    mx = nodes[wire("engine.test.")][dns.rdatatype.MX]
    assert type(mx) is WithTargets and mx.targets  # its exchanges' addresses follow
    assert type(nodes[wire("www.engine.test.")]) in (CnameNode, dict)
    assert nodes[wire("ent.engine.test.")] == {}


def test_repoint_moves_every_owner() -> None:
    """RRs re-owned by another name keep their data and count."""
    rr = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04\xc0\x0c\x02\x01"  # A 192.12.2.1
    moved = repoint(rr + rr, 2, 0x40)
    assert moved == (b"\xc0\x40" + rr[2:]) * 2


# --- the fast path gives the engine's answer --------------------------------------------------

NAMES = [
    "engine.test.", "www.engine.test.", "ns1.engine.test.", "ns2.engine.test.", "mail.engine.test.",
    "a.engine.test.", "b.engine.test.", "c.engine.test.", "dangling.engine.test.",
    "loop1.engine.test.", "out.engine.test.", "x.wild.engine.test.", "sub.wild.engine.test.",
    "y.sub.wild.engine.test.", "q.wc.engine.test.", "ent.engine.test.", "x.ent.engine.test.",
    "leaf.mid.blocked.engine.test.", "mid.blocked.engine.test.", "z.blocked.engine.test.",
    "deleg.engine.test.", "below.deleg.engine.test.", "todeleg.engine.test.",
    "nods.engine.test.", "old.engine.test.", "a.old.engine.test.", "www.new.engine.test.",
    "ext.engine.test.", "longtxt.engine.test.", "big.engine.test.", "fits.engine.test.",
    "nope.engine.test.", "deep.nope.engine.test.", "example.org.",
]  # fmt: skip
TYPES = ["A", "AAAA", "TXT", "MX", "NS", "SOA", "CNAME", "SRV", "CAA", "ANY", "DS", "TYPE65280"]


def _reference(engine_zones: ZoneSet) -> Responder:
    responder = Responder(engine_zones, "ams1", cache_size=0)
    responder._compiled = {}  # noqa: SLF001  # everything through the engine: the reference
    return responder


def _sections(response: bytes) -> tuple[object, ...]:
    m = dns.message.from_wire(response)
    return (m.id, m.flags, m.rcode(), m.question, m.answer, m.authority, m.additional,
            m.edns, m.payload)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    rdtype=st.sampled_from(TYPES),
    upper=st.lists(st.booleans(), min_size=1, max_size=40),
    edns=st.sampled_from([-1, 0]),
    payload=st.sampled_from([512, 1232, 4096]),
    tcp=st.booleans(),
    prefix=st.sampled_from(["", "r4nd0m.", "a.b."]),
)
def test_fast_path_answers_as_the_engine(
    engine_zones: ZoneSet,
    name: str,
    rdtype: str,
    upper: list[bool],
    edns: int,
    payload: int,
    tcp: bool,
    prefix: str,
) -> None:
    """For any question (case, EDNS, size, transport, names that exist or not), the compiled
    fast path and the engine give the same message."""
    qname = "".join(c.upper() if upper[i % len(upper)] else c for i, c in enumerate(prefix + name))
    query = dns.message.make_query(qname, rdtype, use_edns=edns, payload=payload, id=4242)
    data = query.to_wire()
    fast = Responder(engine_zones, "ams1").respond(data, tcp)
    slow = _reference(engine_zones).respond(data, tcp)
    assert fast is not None and slow is not None
    assert _sections(fast) == _sections(slow)


def test_fast_path_answers_most_questions(engine_zones: ZoneSet) -> None:
    """The fast path is taken for plain answers, NXDOMAIN, wildcards, NODATA, referrals and
    CNAMEs (it is not a no-op)."""
    responder = Responder(engine_zones, "ams1")
    taken = 0
    for name in (
        "mail.engine.test.",
        "nope.engine.test.",
        "x.wild.engine.test.",
        "ent.engine.test.",
        "below.deleg.engine.test.",
        "www.engine.test.",
    ):
        data = dns.message.make_query(name, "A", id=1).to_wire()
        taken += responder._assemble(data, parse_query(data), False) is not None  # noqa: SLF001
    assert taken == 6


@settings(max_examples=300, deadline=None)
@given(labels=st.lists(st.binary(min_size=1, max_size=20), min_size=0, max_size=6))
def test_name_key_is_the_lower_cased_wire_form(labels: list[bytes]) -> None:
    """The views' node key for a Name is its wire form, lower-cased (any octets in labels)."""
    name = dns.name.Name([*labels, b""])
    assert name_key(name) == name.to_wire().lower()  # type: ignore[union-attr]
