"""Real `dig` against a real `anycastedge serve`: what an operator sees when checking answers."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.server import DEFAULT_POP, ServerHandle, copy_repo_zones, running_server

DIG = shutil.which("dig")
pytestmark = pytest.mark.skipif(DIG is None, reason="dig (Debian bind9-dnsutils) is not installed")

#: A zone with answers too big for 512 octets (many.big.test A, ~680 octets with EDNS, so it
#: fits dig's default EDNS buffer of 1232) and too big for any UDP buffer dig offers by default
#: (txt.big.test TXT, ~2.7 kB). Addresses are loopback: nothing ever contacts them.
MANY_A = [f"127.0.1.{i}" for i in range(1, 41)]
BIG_TXT = [f"{i:02d}-" + "x" * 117 for i in range(20)]
BIG_ZONE = (
    "---\n"
    "'':\n"
    "  type: NS\n"
    "  value: ns.big.test.\n"
    "many:\n"
    "  type: A\n"
    "  values:\n" + "".join(f"  - {a}\n" for a in MANY_A) + "ns:\n"
    "  type: A\n"
    "  value: 127.0.0.1\n"
    "txt:\n"
    "  type: TXT\n"
    "  values:\n" + "".join(f"  - {t}\n" for t in BIG_TXT)
)


@dataclass
class DigResult:
    """dig's output, parsed: the last response dig printed (after any retries)."""

    text: str
    returncode: int
    status: str | None
    flags: set[str]
    question: list[str]
    answer: list[list[str]]
    authority: list[list[str]]
    additional: list[list[str]]
    nsid: str | None
    transport: str | None
    edns_version: int | None

    def rdatas(self, section: str, rdtype: str, owner: str | None = None) -> set[str]:
        """The rdata texts of ``rdtype`` records in ``section`` (optionally only at ``owner``)."""
        return {
            rr[4]
            for rr in getattr(self, section)
            if rr[3] == rdtype and (owner is None or rr[0] == owner)
        }


def _section(text: str, title: str) -> list[list[str]]:
    match = re.search(rf"^;; {title} SECTION:\n(.*?)(?:\n\n|\Z)", text, re.MULTILINE | re.DOTALL)
    if match is None:
        return []
    return [line.split(None, 4) for line in match.group(1).splitlines() if line.strip()]


def dig(server: ServerHandle, *args: str) -> DigResult:
    """Run dig against ``server`` (one try, 2 s) and parse the last response it printed."""
    assert DIG is not None
    cmd = [DIG, f"@{server.host}", "-p", str(server.dns_port), "+tries=1", "+time=2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    text = proc.stdout + proc.stderr
    # dig prints one block per response when it retries (TC -> TCP, BADVERS -> EDNS 0): the last.
    last = text[text.rfind(";; Got answer:") :] if ";; Got answer:" in text else text
    status = re.search(r"status: ([A-Z]+)", last)
    flags = re.search(r"^;; flags:([^;]*);", last, re.MULTILINE)
    nsid = re.search(r'^; NSID: .*\("(.*)"\)', last, re.MULTILINE)
    transport = re.search(r"^;; SERVER: .*\((UDP|TCP)\)\s*$", last, re.MULTILINE)
    edns = re.search(r"^; EDNS: version: (\d+)", last, re.MULTILINE)
    question = re.search(r"^;; QUESTION SECTION:\n;(.*)$", last, re.MULTILINE)
    return DigResult(
        text=text,
        returncode=proc.returncode,
        status=status.group(1) if status else None,
        flags=set(flags.group(1).split()) if flags else set(),
        question=question.group(1).split() if question else [],
        answer=_section(last, "ANSWER"),
        authority=_section(last, "AUTHORITY"),
        additional=_section(last, "ADDITIONAL"),
        nsid=nsid.group(1) if nsid else None,
        transport=transport.group(1) if transport else None,
        edns_version=int(edns.group(1)) if edns else None,
    )


@pytest.fixture(scope="module")
def big_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """A server for the repo's zones plus big.test., whose answers do not fit 512 octets."""
    zones = copy_repo_zones(tmp_path_factory.mktemp("dig-big") / "zones")
    (zones / "big.test.yaml").write_text(BIG_ZONE)
    with running_server(zones, probe_zone="big.test.") as handle:
        yield handle


def test_answer_is_authoritative_and_follows_cname_chain(server: ServerHandle) -> None:
    """www.example.com A: AA, RA clear, the CNAME to web.example.com and web's addresses."""
    r = dig(server, "www.example.com", "A")
    assert r.returncode == 0, r.text
    assert r.status == "NOERROR", r.text
    assert {"qr", "aa"} <= r.flags and "ra" not in r.flags, r.text
    assert r.answer[0][0] == "www.example.com." and r.answer[0][3] == "CNAME", r.text
    assert r.rdatas("answer", "CNAME", "www.example.com.") == {"web.example.com."}
    assert r.rdatas("answer", "A", "web.example.com.") == {"192.0.2.80", "192.0.2.81"}
    assert [rr[1] for rr in r.answer] == ["300", "60", "60"], r.text
    assert r.transport == "UDP"


def test_nxdomain_has_soa_in_authority_with_negative_ttl(server: ServerHandle) -> None:
    """A missing name: NXDOMAIN, AA, empty answer, the zone's SOA with TTL min(TTL, MINIMUM)."""
    r = dig(server, "no-such-name.example.com", "A")
    assert r.status == "NXDOMAIN" and "aa" in r.flags, r.text
    assert r.answer == []
    assert len(r.authority) == 1, r.text
    owner, ttl, rdclass, rdtype, rdata = r.authority[0]
    assert (owner, rdclass, rdtype) == ("example.com.", "IN", "SOA")
    mname, rname, _serial, *_timers, minimum = rdata.split()
    assert (mname, rname) == ("ns1.example.com.", "hostmaster.example.com.")
    assert int(ttl) == min(3600, int(minimum)), r.text


@pytest.mark.parametrize(
    ("qname", "qtype", "zone"),
    [
        ("example.net", "MX", "example.net."),  # apex without MX
        ("mail.example.com", "TXT", "example.com."),  # name with A/AAAA only
        ("ent.example.com", "A", "example.com."),  # empty non-terminal above host.deep.ent
        ("deep.ent.example.com", "A", "example.com."),
    ],
)
def test_nodata_is_noerror_with_soa(
    server: ServerHandle, qname: str, qtype: str, zone: str
) -> None:
    """A name that exists without the type (or an empty non-terminal): NOERROR, AA, SOA only."""
    r = dig(server, qname, qtype)
    assert r.status == "NOERROR" and "aa" in r.flags, r.text
    assert r.answer == [], r.text
    assert [(rr[0], rr[3]) for rr in r.authority] == [(zone, "SOA")], r.text


@pytest.mark.parametrize("args", [(), ("+norec",), ("+tcp",)])
def test_refused_outside_our_zones_without_ra(server: ServerHandle, args: tuple[str, ...]) -> None:
    """example.org is not ours: REFUSED, no AA, no RA (never an open resolver)."""
    r = dig(server, *args, "example.org", "A")
    assert r.status == "REFUSED", r.text
    assert "aa" not in r.flags and "ra" not in r.flags, r.text
    assert r.answer == [] and r.authority == []


WWW_EXAMPLE_COM_A = [
    ("www.example.com.", "300", "IN", "CNAME", "web.example.com."),
    ("web.example.com.", "60", "IN", "A", "192.0.2.80"),
    ("web.example.com.", "60", "IN", "A", "192.0.2.81"),
]


@pytest.mark.parametrize(("args", "transport"), [((), "UDP"), (("+tcp",), "TCP")])
def test_tcp_and_udp_give_the_whole_answer(
    server: ServerHandle, args: tuple[str, ...], transport: str
) -> None:
    """Over UDP and over +tcp, www.example.com A is the CNAME and web's two addresses, AA."""
    r = dig(server, *args, "www.example.com", "A")
    assert r.transport == transport, r.text
    assert r.status == "NOERROR" and "aa" in r.flags, r.text
    assert sorted(map(tuple, r.answer)) == sorted(WWW_EXAMPLE_COM_A), r.text


@pytest.mark.parametrize("args", [(), ("+tcp",)])
def test_nsid_names_the_pop(server: ServerHandle, args: tuple[str, ...]) -> None:
    """+nsid: the OPT record carries the POP name from pop.yaml (RFC 5001)."""
    r = dig(server, "+nsid", *args, "example.com", "SOA")
    assert r.status == "NOERROR", r.text
    assert r.nsid == DEFAULT_POP, r.text


def test_no_nsid_unless_asked(server: ServerHandle) -> None:
    """Without +nsid the reply carries no NSID option."""
    r = dig(server, "example.com", "SOA")
    assert r.nsid is None and "NSID" not in r.text, r.text


def test_do_bit_is_echoed(server: ServerHandle) -> None:
    """+dnssec sets DO in the query's OPT; the reply's OPT echoes it (RFC 3225)."""
    r = dig(server, "+dnssec", "example.com", "SOA")
    assert r.status == "NOERROR", r.text
    assert re.search(r"^; EDNS: version: 0, flags: do;", r.text, re.MULTILINE), r.text


def test_answer_fitting_edns_buffer_is_not_truncated(big_server: ServerHandle) -> None:
    """40 A records (~680 octets) fit dig's default EDNS buffer: answered over UDP, no TC."""
    r = dig(big_server, "+ignore", "many.big.test", "A")
    assert r.status == "NOERROR" and "tc" not in r.flags, r.text
    assert r.rdatas("answer", "A") == set(MANY_A)
    assert r.transport == "UDP"


@pytest.mark.parametrize("args", [("+bufsize=512",), ("+noedns",)])
def test_too_big_for_512_sets_tc(big_server: ServerHandle, args: tuple[str, ...]) -> None:
    """With a 512-octet buffer (EDNS 512 or no EDNS) the UDP reply has TC=1 and no partial RRset."""
    r = dig(big_server, *args, "+ignore", "many.big.test", "A")
    assert r.status == "NOERROR", r.text
    assert "tc" in r.flags, r.text
    assert r.answer == [], r.text
    assert r.transport == "UDP"


@pytest.mark.parametrize(
    ("args", "qname", "qtype"),
    [
        (("+bufsize=512",), "many.big.test", "A"),
        (("+noedns",), "many.big.test", "A"),
        ((), "txt.big.test", "TXT"),  # bigger than dig's default EDNS buffer (1232)
    ],
)
def test_truncated_reply_makes_dig_retry_over_tcp(
    big_server: ServerHandle, args: tuple[str, ...], qname: str, qtype: str
) -> None:
    """TC fallback: dig sees TC=1 over UDP, retries over TCP and gets the whole RRset."""
    r = dig(big_server, *args, qname, qtype)
    assert "Truncated, retrying in TCP mode" in r.text, r.text
    assert r.transport == "TCP", r.text
    assert r.status == "NOERROR" and "tc" not in r.flags, r.text
    expected = set(MANY_A) if qtype == "A" else {f'"{t}"' for t in BIG_TXT}
    assert r.rdatas("answer", qtype) == expected


def test_norec_query_gets_rd_clear_and_same_answer(server: ServerHandle) -> None:
    """+norec: RD stays clear in the reply (RD is copied), the answer is unchanged."""
    r = dig(server, "+norec", "www.example.com", "A")
    assert r.status == "NOERROR", r.text
    assert "rd" not in r.flags and "aa" in r.flags and "ra" not in r.flags, r.text
    assert r.rdatas("answer", "A", "web.example.com.") == {"192.0.2.80", "192.0.2.81"}
    with_rd = dig(server, "www.example.com", "A")
    assert "rd" in with_rd.flags, with_rd.text


def test_question_case_is_preserved(server: ServerHandle) -> None:
    """WwW.ExAmPlE.CoM: the question and the answer owner keep the case as asked."""
    r = dig(server, "WwW.ExAmPlE.CoM", "A")
    assert r.status == "NOERROR" and "aa" in r.flags, r.text
    assert r.question[0] == "WwW.ExAmPlE.CoM.", r.text
    assert r.answer[0][0] == "WwW.ExAmPlE.CoM.", r.text
    assert {rr[4] for rr in r.answer if rr[3] == "A"} == {"192.0.2.80", "192.0.2.81"}


@pytest.mark.parametrize("qname", ["sub.example.com", "host.deeper.sub.example.com"])
def test_delegation_is_a_referral_with_glue(server: ServerHandle, qname: str) -> None:
    """At or below sub.example.com: no AA, empty answer, the NS set in authority, in-zone glue."""
    r = dig(server, "+norec", qname, "A")
    assert r.status == "NOERROR", r.text
    assert "aa" not in r.flags, r.text
    assert r.answer == [], r.text
    assert r.rdatas("authority", "NS", "sub.example.com.") == {
        "ns1.sub.example.com.",
        "ns.example.net.",
    }
    assert all(rr[0] == "sub.example.com." for rr in r.authority), r.text
    assert r.rdatas("additional", "A", "ns1.sub.example.com.") == {"127.0.0.3"}, r.text


def test_ds_at_delegation_is_answered_by_parent(server: ServerHandle) -> None:
    """sub.example.com DS is the parent's data: an authoritative answer, not a referral."""
    r = dig(server, "+norec", "sub.example.com", "DS")
    assert r.status == "NOERROR" and "aa" in r.flags, r.text
    assert len(r.rdatas("answer", "DS", "sub.example.com.")) == 1, r.text


def test_wildcard_synthesizes_the_query_name(server: ServerHandle) -> None:
    """*.apps.example.com answers any.apps.example.com with the query name as owner (RFC 4592)."""
    r = dig(server, "anything.apps.example.com", "A")
    assert r.status == "NOERROR" and "aa" in r.flags, r.text
    assert [(rr[0], rr[3], rr[4]) for rr in r.answer] == [
        ("anything.apps.example.com.", "A", "192.0.2.90")
    ]


def test_mx_answer_adds_exchange_addresses(server: ServerHandle) -> None:
    """example.com MX: the exchanges' in-zone A/AAAA come in the additional section."""
    r = dig(server, "example.com", "MX")
    assert r.rdatas("answer", "MX") == {"10 mail.example.com.", "20 mail2.example.com."}
    assert r.rdatas("additional", "A", "mail.example.com.") == {"192.0.2.25"}
    assert r.rdatas("additional", "AAAA", "mail.example.com.") == {"2001:db8::25"}
    assert r.rdatas("additional", "A", "mail2.example.com.") == {"192.0.2.26"}


def test_txt_semicolon_escape(server: ServerHandle) -> None:
    """octoDNS's `\\;` in TXT values is served as a plain `;`."""
    r = dig(server, "_dmarc.example.com", "TXT")
    assert r.rdatas("answer", "TXT") == {'"v=DMARC1; p=reject; rua=mailto:dmarc@example.com"'}


@pytest.mark.parametrize("qname", ["id.server", "hostname.bind", "ID.SERVER"])
def test_chaos_identity_names_the_pop(server: ServerHandle, qname: str) -> None:
    """dig CH TXT id.server / hostname.bind answers the POP name."""
    r = dig(server, "CH", "TXT", qname)
    assert r.status == "NOERROR", r.text
    assert [(rr[0].lower(), rr[2], rr[3], rr[4]) for rr in r.answer] == [
        (f"{qname.lower()}.", "CH", "TXT", f'"{DEFAULT_POP}"')
    ], r.text


@pytest.mark.parametrize("args", [(), ("+notcp",)])
def test_any_is_answered_with_one_rrset(server: ServerHandle, args: tuple[str, ...]) -> None:
    """example.com ANY: NOERROR, AA and exactly one RRset (RFC 8482), over TCP and UDP."""
    r = dig(server, *args, "example.com", "ANY")
    assert r.status == "NOERROR" and "aa" in r.flags, r.text
    assert r.answer, r.text
    assert len({(rr[0], rr[2], rr[3]) for rr in r.answer}) == 1, r.text


def test_axfr_is_refused(server: ServerHandle) -> None:
    """dig AXFR: the server refuses the transfer."""
    r = dig(server, "+comments", "example.com", "AXFR")
    assert "Transfer failed" in r.text, r.text
    assert r.status == "REFUSED", r.text


def test_ixfr_is_refused(server: ServerHandle) -> None:
    """dig IXFR=1: the server refuses the transfer (REFUSED, not FORMERR)."""
    r = dig(server, "+comments", "example.com", "IXFR=1")
    assert "Transfer failed" in r.text, r.text
    assert r.status == "REFUSED", r.text


def test_edns_version_1_gets_badvers(server: ServerHandle) -> None:
    """+edns=1 (no negotiation): BADVERS, with an OPT of version 0 in the reply (RFC 6891)."""
    r = dig(server, "+edns=1", "+noednsneg", "example.com", "A")
    assert r.status == "BADVERS", r.text
    assert r.edns_version == 0, r.text
    assert r.answer == []


def test_dig_falls_back_to_edns0_after_badvers(server: ServerHandle) -> None:
    """+edns=1 with dig's negotiation: BADVERS, dig retries with EDNS 0, gets the answer."""
    r = dig(server, "+edns=1", "example.com", "A")
    assert "BADVERS, retrying with EDNS version 0" in r.text, r.text
    assert r.status == "NOERROR", r.text
    assert r.rdatas("answer", "A") == {"192.0.2.10", "192.0.2.11"}


def test_unknown_opcode_gets_notimp(server: ServerHandle) -> None:
    """+opcode=status (2): NOTIMP, the opcode echoed."""
    r = dig(server, "+opcode=2", "example.com", "A")
    assert r.status == "NOTIMP", r.text
    assert "opcode: STATUS" in r.text, r.text


def test_cname_to_another_zone_is_answered(server: ServerHandle) -> None:
    """outside.example.com CNAME www.example.net.: AA and the CNAME as the first answer."""
    r = dig(server, "outside.example.com", "A")
    assert r.status == "NOERROR" and "aa" in r.flags, r.text
    assert r.answer[0][0] == "outside.example.com." and r.answer[0][3] == "CNAME", r.text
    assert r.answer[0][4] == "www.example.net.", r.text


def test_big_zone_fixture_is_valid(tmp_path: Path) -> None:
    """The generated big.test. zone passes `zone check` (the TC tests rely on it loading)."""
    (tmp_path / "big.test.yaml").write_text(BIG_ZONE)
    proc = subprocess.run(
        [sys.executable, "-m", "anycastedge", "zone", "check", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
