"""The wire-format fast path, `Responder.respond`, fed dnspython-built packets (no sockets)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from anycastedge.config.pop import SoaConfig
from anycastedge.config.zones import load_zones
from anycastedge.dns.counters import DnsCounters
from anycastedge.dns.engine import Answer, resolve
from anycastedge.dns.wire import Responder
from anycastedge.dns.zone import ZoneSet
from anycastedge.health.check import PROBE_EDNS_OPTION

NSID = dns.edns.OptionType.NSID
MakeResponder = Callable[..., Responder]


def query(
    name: str,
    rdtype: str = "A",
    *,
    qid: int = 0x1234,
    edns: int = -1,
    payload: int = 1232,
    rd: bool = True,
    cd: bool = False,
    do: bool = False,
    nsid: bool = False,
    rdclass: str = "IN",
) -> bytes:
    """A query in wire format, built by dnspython."""
    options = [dns.edns.GenericOption(NSID, b"")] if nsid else None
    if (do or nsid) and edns < 0:
        edns = 0
    msg = dns.message.make_query(
        name,
        rdtype,
        rdclass,
        use_edns=edns,
        payload=payload,
        want_dnssec=do,
        options=options,
        id=qid,
    )
    if not rd:
        msg.flags &= ~dns.flags.RD
    if cd:
        msg.flags |= dns.flags.CD
    return msg.to_wire()


def parse(wire: bytes | None) -> dns.message.Message:
    """The response parsed back by dnspython (fails the test if there is none)."""
    assert wire is not None, "no response"
    return dns.message.from_wire(wire)


def lines(rrsets: list[dns.rrset.RRset]) -> set[str]:
    """Every RR as one line of text, names lowercased."""
    return {line.lower() for rrset in rrsets for line in rrset.to_text().splitlines()}


def header(
    qid: int = 0x4242, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0
) -> bytes:
    """A raw 12-octet DNS header."""
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def wire_name(text: str) -> bytes:
    """A name in uncompressed wire format."""
    return dns.name.from_text(text).to_wire()


def opt_rr(
    payload: int = 1232, version: int = 0, options: bytes = b"", rdlen: int | None = None
) -> bytes:
    """An OPT pseudo-RR at the root (``rdlen`` overrides the true RDATA length)."""
    length = len(options) if rdlen is None else rdlen
    return b"\0" + struct.pack("!HHBBHH", 41, payload, 0, version, 0, length) + options


WWW_Q = wire_name("www.engine.test.") + struct.pack("!HH", 1, 1)


# --- header, flags and the question ----------------------------------------------------------


@pytest.mark.parametrize("qid", [0, 1, 0x1234, 0xFFFF])
def test_id_is_echoed(responder: Responder, qid: int) -> None:
    """The response carries the query's ID, on the first and on a cached answer."""
    for _ in range(2):
        response = parse(responder.respond(query("www.engine.test.", qid=qid), False))
        assert response.id == qid


@pytest.mark.parametrize("rd", [True, False])
@pytest.mark.parametrize("cd", [True, False])
def test_rd_and_cd_are_copied_ra_never_set(responder: Responder, rd: bool, cd: bool) -> None:
    """RD and CD are copied from the query; QR and AA are set; RA never is."""
    response = parse(responder.respond(query("www.engine.test.", rd=rd, cd=cd), False))
    assert bool(response.flags & dns.flags.RD) == rd
    assert bool(response.flags & dns.flags.CD) == cd
    assert response.flags & dns.flags.QR
    assert response.flags & dns.flags.AA
    assert not response.flags & dns.flags.RA
    assert not response.flags & dns.flags.TC


@pytest.mark.parametrize(
    ("qname", "rdtype", "rcode"),
    [
        ("WwW.EnGiNe.TeSt.", "A", dns.rcode.NOERROR),
        ("NoPe.EnGiNe.TeSt.", "A", dns.rcode.NXDOMAIN),
        ("wWw.ENGINE.test.", "MX", dns.rcode.NOERROR),
        ("BiG.EnGiNe.TeSt.", "A", dns.rcode.NOERROR),  # truncated without EDNS
        ("ExAmPlE.oRg.", "A", dns.rcode.REFUSED),
        ("ID.Server.", "TXT", dns.rcode.NOERROR),
    ],
)
def test_question_case_is_preserved(
    responder: Responder, qname: str, rdtype: str, rcode: dns.rcode.Rcode
) -> None:
    """The question is echoed octet for octet as asked, whatever the answer."""
    rdclass = "CH" if qname.lower() == "id.server." else "IN"
    sent = query(qname, rdtype, rdclass=rdclass)
    wire = responder.respond(sent, False)
    response = parse(wire)
    assert response.rcode() == rcode
    [question] = response.question
    assert question.name.labels == dns.name.from_text(qname).labels  # exact octets, case included
    assert wire is not None and wire[12 : len(sent)] == sent[12:]


def test_mixed_case_question_gets_the_lowercase_answer(responder: Responder) -> None:
    """A mixed-case question is answered with the same data as the lowercase one."""
    upper = parse(responder.respond(query("WwW.EnGiNe.TeSt."), False))
    lower = parse(responder.respond(query("www.engine.test."), False))
    assert lines(upper.answer) == lines(lower.answer) == {"www.engine.test. 300 in a 192.0.2.80"}
    assert lines(upper.authority) == lines(lower.authority)
    assert lines(upper.additional) == lines(lower.additional)


def test_repeated_queries_are_answered_from_cache_identically(
    engine_zones: ZoneSet, make_responder: MakeResponder
) -> None:
    """Repeats (new IDs, other case) resolve once and give the same bytes apart from ID/question."""
    calls: list[tuple[dns.name.Name, int]] = []

    def counting(
        zones: ZoneSet,
        qname: dns.name.Name,
        qtype: int,
        qclass: int,
        pop: str,
        choose: object = None,
    ) -> Answer:
        calls.append((qname, qtype))
        return resolve(zones, qname, qtype, qclass, pop)

    responder = make_responder(resolver=counting)
    first = responder.respond(query("engine.test.", "SOA", qid=1), False)
    assert first is not None
    for qid in (2, 3, 0xFFFF):
        again = responder.respond(query("engine.test.", "SOA", qid=qid), False)
        assert again is not None
        assert again[:2] == qid.to_bytes(2, "big")
        assert again[2:] == first[2:]
    other_case = responder.respond(query("ENGINE.test.", "SOA", qid=4), False)
    assert other_case is not None and len(other_case) == len(first)
    assert parse(other_case).answer == parse(first).answer
    assert calls == [(dns.name.from_text("engine.test."), dns.rdatatype.SOA)]


def test_small_caches_stay_correct(make_responder: MakeResponder) -> None:
    """With caches smaller than the working set (cleared when full), every answer stays right."""
    responder = make_responder(cache_size=2)
    expected = {
        "www.engine.test.": {"www.engine.test. 300 in a 192.0.2.80"},
        "c.engine.test.": {"c.engine.test. 60 in a 192.0.2.3"},
        "x.ent.engine.test.": {"x.ent.engine.test. 300 in a 192.0.2.50"},
        "mail.engine.test.": {"mail.engine.test. 300 in a 192.0.2.25"},
    }
    for round_ in range(3):
        for qid, (name, answer) in enumerate(expected.items()):
            response = parse(responder.respond(query(name, qid=qid + round_), False))
            assert lines(response.answer) == answer


# --- EDNS ------------------------------------------------------------------------------------


def test_no_opt_without_edns(responder: Responder) -> None:
    """A query without EDNS gets a response without OPT."""
    response = parse(responder.respond(query("www.engine.test."), False))
    assert response.edns == -1
    truncated = parse(responder.respond(query("big.engine.test."), False))
    assert truncated.flags & dns.flags.TC and truncated.edns == -1


@pytest.mark.parametrize("payload", [512, 1232, 4096, 65535])
def test_opt_with_edns_advertises_1232(responder: Responder, payload: int) -> None:
    """A query with EDNS gets exactly one OPT, version 0, advertising 1232 octets."""
    response = parse(responder.respond(query("www.engine.test.", edns=0, payload=payload), False))
    assert response.edns == 0
    assert response.payload == 1232
    assert response.rcode() == dns.rcode.NOERROR
    assert not response.options


def test_advertised_size_follows_config(make_responder: MakeResponder) -> None:
    """The advertised UDP size is the configured maximum."""
    responder = make_responder(max_udp=1400)
    response = parse(responder.respond(query("www.engine.test.", edns=0), False))
    assert response.payload == 1400


@pytest.mark.parametrize("version", [1, 2, 255])
def test_badvers_for_edns_versions_above_zero(responder: Responder, version: int) -> None:
    """EDNS version > 0 gets BADVERS (extended rcode 16), OPT version 0, the question, no data."""
    sent = query("WwW.engine.test.", edns=version, qid=0x0BAD)
    response = parse(responder.respond(sent, False))
    assert response.id == 0x0BAD
    assert response.rcode() == dns.rcode.BADVERS == 16
    assert response.edns == 0
    assert response.question[0].name.labels == dns.name.from_text("WwW.engine.test.").labels
    assert not response.answer and not response.authority


def test_nsid_only_when_requested(responder: Responder) -> None:
    """NSID (RFC 5001) carries the POP name when the query asks for it, and only then."""
    asked = parse(responder.respond(query("www.engine.test.", nsid=True), False))
    assert [(o.otype, o.to_wire()) for o in asked.options] == [(NSID, b"ams1")]
    plain = parse(responder.respond(query("www.engine.test.", edns=0), False))
    assert not plain.options


def test_nsid_can_be_switched_off(make_responder: MakeResponder) -> None:
    """With NSID disabled, a request for it gets no NSID option."""
    responder = make_responder(nsid=False)
    response = parse(responder.respond(query("www.engine.test.", nsid=True), False))
    assert response.edns == 0 and not response.options


@pytest.mark.parametrize("do", [True, False])
def test_do_bit_is_echoed(responder: Responder, do: bool) -> None:
    """The DO bit of the query's OPT is echoed in the response's OPT."""
    response = parse(responder.respond(query("www.engine.test.", edns=0, do=do), False))
    assert bool(response.ednsflags & dns.flags.DO) == do


# --- truncation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rdtype", "count"),
    [("big.engine.test.", "A", 40), ("longtxt.engine.test.", "TXT", 2)],
)
def test_truncated_over_512_without_edns(
    responder: Responder, name: str, rdtype: str, count: int
) -> None:
    """Without EDNS an answer over 512 octets is the question alone with TC=1; TCP gets it all."""
    wire = responder.respond(query(name, rdtype), False)
    assert wire is not None and len(wire) <= 512
    response = parse(wire)
    assert response.flags & dns.flags.TC
    assert response.flags & dns.flags.AA
    assert response.rcode() == dns.rcode.NOERROR
    assert len(response.question) == 1 and not response.answer
    full = parse(responder.respond(query(name, rdtype), True))
    assert not full.flags & dns.flags.TC
    [rrset] = full.answer
    assert len(rrset) == count


@pytest.mark.parametrize(
    ("payload", "tc"), [(512, True), (600, True), (680, True), (1232, False), (4096, False)]
)
def test_truncated_over_the_clients_edns_size(responder: Responder, payload: int, tc: bool) -> None:
    """With EDNS, TC=1 iff the answer exceeds the client's size (capped at 1232), OPT kept."""
    wire = responder.respond(query("big.engine.test.", edns=0, payload=payload), False)
    assert wire is not None
    response = parse(wire)
    assert bool(response.flags & dns.flags.TC) == tc
    assert response.edns == 0
    assert len(wire) <= min(payload, 1232)
    if not tc:
        assert len(response.answer[0]) == 40


def test_no_truncation_over_tcp(responder: Responder) -> None:
    """Over TCP nothing is truncated, with or without EDNS."""
    for wire in (query("big.engine.test."), query("bigdeleg.engine.test.", edns=0, payload=512)):
        response = parse(responder.respond(wire, True))
        assert not response.flags & dns.flags.TC
        assert response.answer or response.authority


def test_small_edns_size_counts_as_512(responder: Responder) -> None:
    """An EDNS size below 512 is treated as 512 (RFC 6891 section 6.2.5)."""
    response = parse(
        responder.respond(query("_sip._udp.engine.test.", "SRV", edns=0, payload=100), False)
    )
    assert not response.flags & dns.flags.TC
    assert len(response.answer[0]) == 2


def test_additional_dropped_before_truncating(responder: Responder) -> None:
    """When only the additional data does not fit, it is left out and TC stays clear."""
    wire = responder.respond(query("mxbig.engine.test.", "MX"), False)
    assert wire is not None and len(wire) <= 512
    response = parse(wire)
    assert not response.flags & dns.flags.TC
    assert lines(response.answer) == {"mxbig.engine.test. 300 in mx 10 mailbig.engine.test."}
    big = parse(responder.respond(query("mxbig.engine.test.", "MX", edns=0), False))
    assert len([r for r in big.additional if r.name.to_text() == "mailbig.engine.test."][0]) == 30


def test_optional_authority_dropped_before_truncating(responder: Responder) -> None:
    """When the answer fits but the apex NS added to it does not, the NS is left out, not TC."""
    full = parse(responder.respond(query("fits.engine.test."), True))
    answer_only = dns.message.make_response(dns.message.make_query("fits.engine.test.", "A"))
    answer_only.answer = full.answer
    assert len(answer_only.to_wire()) <= 512 < len(full.to_wire())  # the fixture's premise
    wire = responder.respond(query("fits.engine.test."), False)
    assert wire is not None and len(wire) <= 512
    response = parse(wire)
    assert not response.flags & dns.flags.TC
    assert len(response.answer[0]) == 28


@pytest.mark.parametrize("qname", ["bigdeleg.engine.test.", "www.bigdeleg.engine.test."])
def test_referral_glue_that_does_not_fit_truncates(responder: Responder, qname: str) -> None:
    """A referral whose glue does not fit is not sent without it: TC=1, not AA."""
    wire = responder.respond(query(qname), False)
    assert wire is not None and len(wire) <= 512
    response = parse(wire)
    assert response.flags & dns.flags.TC
    assert not response.flags & dns.flags.AA
    assert not response.answer and not response.authority and not response.additional
    full = parse(responder.respond(query(qname, edns=0), False))
    assert not full.flags & dns.flags.TC and not full.flags & dns.flags.AA
    assert len(full.authority[0]) == 12
    assert sum(len(r) for r in full.additional) == 24


@pytest.mark.parametrize(
    "name_type",
    [
        ("www.engine.test.", "A"),
        ("engine.test.", "NS"),
        ("engine.test.", "MX"),
        ("big.engine.test.", "A"),
        ("fits.engine.test.", "A"),
        ("longtxt.engine.test.", "TXT"),
        ("mxbig.engine.test.", "MX"),
        ("bigdeleg.engine.test.", "A"),
        ("deleg.engine.test.", "A"),
        ("nope.engine.test.", "A"),
        ("a.engine.test.", "A"),
    ],
    ids=lambda nt: "/".join(nt),
)
@pytest.mark.parametrize("edns_payload", [None, 512, 700, 1000, 1232, 4096])
def test_udp_response_never_exceeds_the_limit(
    responder: Responder, name_type: tuple[str, str], edns_payload: int | None
) -> None:
    """No UDP response is larger than 512 (no EDNS) or min(client's size, 1232)."""
    name, rdtype = name_type
    if edns_payload is None:
        wire, limit = responder.respond(query(name, rdtype), False), 512
    else:
        sent = query(name, rdtype, edns=0, payload=edns_payload)
        wire, limit = responder.respond(sent, False), min(edns_payload, 1232)
    assert wire is not None and len(wire) <= limit
    response = parse(wire)
    if not response.flags & dns.flags.TC:
        tcp = parse(responder.respond(query(name, rdtype), True))
        assert lines(response.answer) == lines(tcp.answer)


# --- what the fast path refuses to parse -----------------------------------------------------


@pytest.mark.parametrize(
    "opcode", [dns.opcode.IQUERY, dns.opcode.STATUS, dns.opcode.NOTIFY, dns.opcode.UPDATE]
)
def test_notimp_for_opcodes_other_than_query(
    responder: Responder, opcode: dns.opcode.Opcode
) -> None:
    """Opcodes other than QUERY get NOTIMP with the ID and opcode echoed."""
    msg = dns.message.make_query("engine.test.", "SOA", id=0x7777)
    msg.set_opcode(opcode)
    response = parse(responder.respond(msg.to_wire(), False))
    assert (response.id, response.opcode(), response.rcode()) == (0x7777, opcode, dns.rcode.NOTIMP)
    assert response.flags & dns.flags.QR


QUERY_ONLY_FLAGS = (
    dns.flags.AA | dns.flags.TC | dns.flags.RD | dns.flags.RA | dns.flags.AD | dns.flags.CD
)


@pytest.mark.parametrize("opcode", [3, 15])  # unassigned opcodes (genreport sends 15)
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_notimp_echoes_no_flag_of_query(responder: Responder, opcode: int, tcp: bool) -> None:
    """A reply to an opcode we do not implement carries none of QUERY's flags, even when the
    request set them all (and Z): only QR, the opcode and NOTIMP, and no sections. RD, AA, AD,
    CD and RA are defined for QUERY only (genreport's "opcode" and "opcodeflg" tests)."""
    for flags in (0, QUERY_ONLY_FLAGS | 0x0040):  # 0x0040: the Z bit
        request = struct.pack("!HHHHHH", 0x1515, (opcode << 11) | flags, 0, 0, 0, 0)
        wire = responder.respond(request, tcp)
        assert wire is not None
        assert wire == struct.pack("!HHHHHH", 0x1515, 0x8000 | (opcode << 11) | 4, 0, 0, 0, 0)


def test_formerr_to_a_query_still_copies_rd(responder: Responder) -> None:
    """RD is copied into a reply to a QUERY (RFC 1035 4.1.1), FORMERR included."""
    response = parse(responder.respond(header(qd=0), False))
    assert response.rcode() == dns.rcode.FORMERR and response.flags & dns.flags.RD


FORMERR_PACKETS = {
    "qdcount 0, header only": header(qd=0),
    "qdcount 0 with a question": header(qd=0) + WWW_Q,
    "qdcount 2": header(qd=2) + WWW_Q + WWW_Q,
    "ancount 1": header(an=1) + WWW_Q,
    "nscount 1": header(ns=1) + WWW_Q,
    "label over 63": header() + b"\x40" + b"a" * 64 + wire_name("engine.test.") + b"\0\1\0\1",
    "compression pointer in question": header() + b"\xc0\x0c\0\1\0\1",
    "pointer after a label": header() + b"\x03www\xc0\x0c\0\1\0\1",
    "name over 255": header() + (b"\x3f" + b"a" * 63) * 4 + wire_name("engine.test.") + b"\0\1\0\1",
    "name without its end": header() + b"\x03www\x06engine",
    "question without type and class": header() + wire_name("www.engine.test."),
    "question with half its class": header() + wire_name("www.engine.test.") + b"\0\1\0",
    "arcount without records": header(ar=1) + WWW_Q,
    "additional record cut short": header(ar=1) + WWW_Q + b"\0\0\x29\x04",
    "trailing garbage after OPT": header(ar=1) + WWW_Q + opt_rr() + b"junk",
    "two OPT records": header(ar=2) + WWW_Q + opt_rr() + opt_rr(),
    "OPT not at the root": header(ar=1) + WWW_Q + b"\x01a" + opt_rr(),
    "EDNS option overruns OPT": header(ar=1) + WWW_Q + opt_rr(options=struct.pack("!HH", 3, 8)),
    "OPT rdata longer than the packet": header(ar=1) + WWW_Q + opt_rr(rdlen=40),
}


@pytest.mark.parametrize("packet", list(FORMERR_PACKETS.values()), ids=list(FORMERR_PACKETS))
def test_formerr_for_malformed_queries(responder: Responder, packet: bytes) -> None:
    """A query that is not one well-formed question gets FORMERR with its ID, header only."""
    wire = responder.respond(packet, False)
    response = parse(wire)
    assert response.id == 0x4242
    assert response.rcode() == dns.rcode.FORMERR
    assert response.flags & dns.flags.QR and not response.flags & dns.flags.AA
    assert not response.answer and not response.authority and not response.additional
    assert parse(responder.respond(query("www.engine.test."), False)).answer  # still serving


def test_formerr_for_trailing_garbage_without_edns(responder: Responder) -> None:
    """Bytes after the last record are FORMERR also when the query has no additional section."""
    response = parse(responder.respond(header() + WWW_Q + b"junk", False))
    assert response.rcode() == dns.rcode.FORMERR


def test_name_of_exactly_255_octets_is_accepted(responder: Responder) -> None:
    """A 255-octet question name is legal: answered (NXDOMAIN here), not FORMERR."""
    name = (b"\x3f" + b"a" * 63) * 3 + b"\x31" + b"b" * 49 + wire_name("engine.test.")
    assert len(name) == 255
    response = parse(responder.respond(header() + name + b"\0\1\0\1", False))
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA


def test_label_of_exactly_63_octets_is_accepted(responder: Responder) -> None:
    """A 63-octet label is legal."""
    packet = header() + b"\x3f" + b"a" * 63 + wire_name("engine.test.") + b"\0\1\0\1"
    assert parse(responder.respond(packet, False)).rcode() == dns.rcode.NXDOMAIN


def test_non_opt_additional_records_are_skipped(responder: Responder) -> None:
    """An additional record that is not OPT (with a compressed owner) does not stop the answer."""
    extra = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes((192, 0, 2, 1))
    response = parse(responder.respond(header(ar=1) + WWW_Q + extra, False))
    assert response.rcode() == dns.rcode.NOERROR
    assert lines(response.answer) == {"www.engine.test. 300 in a 192.0.2.80"}


@pytest.mark.parametrize("length", range(12))
def test_no_reply_to_packets_shorter_than_a_header(responder: Responder, length: int) -> None:
    """Fewer than 12 octets: nothing to answer with, no reply."""
    assert responder.respond(header()[:length], False) is None
    assert responder.respond(header()[:length], True) is None


@pytest.mark.parametrize(
    "packet",
    [
        header(flags=0x8100) + WWW_Q,  # a response-shaped query
        header(flags=0x8000, qd=0),
        dns.message.make_response(dns.message.make_query("www.engine.test.", "A")).to_wire(),
        header(flags=0xA000) + b"\xc0",  # QR and NOTIFY, malformed
    ],
    ids=["qr-question", "qr-header-only", "dnspython-response", "qr-notify-garbage"],
)
def test_no_reply_to_responses(responder: Responder, packet: bytes) -> None:
    """Packets with QR=1 get no reply at all (no reflection loops), even malformed ones."""
    assert responder.respond(packet, False) is None
    assert responder.respond(packet, True) is None


def test_no_reply_to_response_after_the_same_query_was_cached(responder: Responder) -> None:
    """A response-shaped packet is not answered from the cache of an identical query."""
    sent = query("www.engine.test.")
    assert responder.respond(sent, False) is not None
    flipped = sent[:2] + bytes((sent[2] | 0x80,)) + sent[3:]
    assert responder.respond(flipped, False) is None


# --- metrics ---------------------------------------------------------------------------------


def test_metric_counts_by_zone_qtype_rcode_transport(make_responder: MakeResponder) -> None:
    """Every answered query is counted once under (zone, qtype, rcode, transport)."""
    counters = DnsCounters()
    counts = counters.responses
    responder = make_responder(counters=counters)
    for qid in range(3):
        responder.respond(query("www.engine.test.", qid=qid), False)  # one cold, two cached
    responder.respond(query("www.engine.test."), True)
    responder.respond(query("nope.engine.test."), False)
    responder.respond(query("engine.test.", "MX"), False)
    responder.respond(query("example.org."), False)
    responder.respond(query("engine.test.", "AXFR"), True)
    responder.respond(query("id.server.", "TXT", rdclass="CH"), False)
    responder.respond(query("www.engine.test.", "TYPE65280"), False)
    responder.respond(query("www.engine.test.", edns=1), False)
    responder.respond(header(qd=0), False)
    responder.respond(header(qd=0), True)
    notify = dns.message.make_query("engine.test.", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    responder.respond(notify.to_wire(), False)
    responder.respond(header()[:5], False)  # no reply, not counted
    responder.respond(dns.message.make_response(dns.message.make_query("a.", "A")).to_wire(), False)
    assert counts == {
        ("engine.test", "A", "NOERROR", "udp"): 3,
        ("engine.test", "A", "NOERROR", "tcp"): 1,
        ("engine.test", "A", "NXDOMAIN", "udp"): 1,
        ("engine.test", "MX", "NOERROR", "udp"): 1,
        ("-", "A", "REFUSED", "udp"): 1,
        ("engine.test", "AXFR", "REFUSED", "tcp"): 1,
        ("(chaos)", "TXT", "NOERROR", "udp"): 1,  # not under "-", which means errors
        ("engine.test", "other", "NOERROR", "udp"): 1,
        ("-", "A", "BADVERS", "udp"): 1,
        ("-", "-", "FORMERR", "udp"): 1,
        ("-", "-", "FORMERR", "tcp"): 1,
        ("-", "-", "NOTIMP", "udp"): 1,
    }


def test_health_check_queries_are_counted_apart(make_responder: MakeResponder) -> None:
    """The BGP hook's DNS checks (marked with our EDNS option) get the same answer as a client
    but are counted apart and never cached, so a cached client answer never counts as a check."""
    counters = DnsCounters()
    responder = make_responder(counters=counters)
    marker = dns.edns.GenericOption(dns.edns.OptionType.make(PROBE_EDNS_OPTION), b"")
    check = dns.message.make_query("www.engine.test.", "A", use_edns=0, options=[marker])
    client = dns.message.make_query("www.engine.test.", "A", use_edns=0)
    for _ in range(3):
        check_reply = dns.message.from_wire(responder.respond(check.to_wire(), False) or b"")
        client_reply = dns.message.from_wire(responder.respond(client.to_wire(), False) or b"")
        assert check_reply.answer == client_reply.answer and check_reply.answer
    key = ("engine.test", "A", "NOERROR", "udp")
    assert counters.probe_responses == {key: 3}
    assert counters.responses == {key: 3}


def test_metric_labels_are_bounded(make_responder: MakeResponder) -> None:
    """Random types and names do not grow the metric label space beyond a fixed set."""
    counters = DnsCounters()
    counts = counters.responses
    responder = make_responder(counters=counters)
    for i in range(200):
        responder.respond(query(f"r{i}.example.org.", f"TYPE{1000 + i}"), False)
        responder.respond(query(f"r{i}.engine.test.", f"TYPE{2000 + i}"), False)
    assert set(counts) == {
        ("-", "other", "REFUSED", "udp"),
        ("engine.test", "other", "NXDOMAIN", "udp"),
    }
    assert sum(counts.values()) == 400


def test_class_any_question_is_answered_from_in_data(responder: Responder) -> None:
    """Class ANY questions are answered from the IN data, the question echoed with class ANY."""
    response = parse(responder.respond(query("www.engine.test.", rdclass="ANY"), False))
    assert response.question[0].rdclass == dns.rdataclass.ANY
    assert lines(response.answer) == {"www.engine.test. 300 in a 192.0.2.80"}


def test_additional_rrsets_that_fit_are_kept_in_order(tmp_path: Path) -> None:
    """An answer too big for the client's buffer with all its additional data keeps as many
    additional RRsets as fit, in order (as NSD does), before dropping the authority section."""
    zone = tmp_path / "fit.test.yaml"
    big = "x" * 900
    zone.write_text(
        "'':\n  type: NS\n  values: [ns1.fit.test., ns2.fit.test.]\n"
        f"big:\n  type: TXT\n  value: {big}\n"
        "ns1:\n  - {type: A, value: 127.0.0.53}\n  - {type: AAAA, value: '2001:db8::53'}\n"
        "ns2:\n  - {type: AAAA, value: '2001:db8::54'}\n"
    )
    zones, _ = load_zones([zone], SoaConfig())
    responder = Responder(zones, "t")

    def ask(payload: int) -> dns.message.Message:
        q = dns.message.make_query("big.fit.test.", "TXT", use_edns=0, payload=payload)
        return parse(responder.respond(q.to_wire(), False))

    full = ask(4096)
    sizes = [(rrset.name.to_text(), rrset.rdtype) for rrset in full.additional]
    assert len(sizes) == 3 and full.authority
    size = len(full.to_wire())
    almost = ask(size - 1)
    assert not almost.flags & dns.flags.TC
    assert [(r.name.to_text(), r.rdtype) for r in almost.additional] == sizes[:2]
    assert almost.authority == full.authority and almost.answer == full.answer
