"""Zone building: octoDNS's own test zone, every record type's converter, SOA synthesis."""

from __future__ import annotations

import base64
import os
import warnings
from pathlib import Path
from typing import Any

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anycastedge.config.pop import SoaConfig
from anycastedge.config.zones import DEFAULT_TTL, build_zone, load_zones
from anycastedge.dns.engine import NOERROR, NXDOMAIN, Answer, resolve
from anycastedge.dns.zone import Zone, ZoneSet
from anycastedge.errors import ConfigError, Problem

UNIT_TESTS = dns.name.from_text("unit.tests.")
ORIGIN = dns.name.from_text("types.test.")
APEX_NS = {"": {"type": "NS", "values": ["ns1.types.test.", "ns2.types.test."]}}


def build(records: dict[str, Any], origin: str = "types.test.", **kwargs: Any) -> Zone:
    """Build a zone from a mapping of octoDNS records (dumped to YAML, loaded like a file)."""
    zone, _warnings = build_with_warnings(records, origin, **kwargs)
    return zone


def build_with_warnings(
    records: dict[str, Any], origin: str = "types.test.", **kwargs: Any
) -> tuple[Zone, list[Problem]]:
    """Like build(), also returning the warnings."""
    path = Path(f"{origin.rstrip('.')}.yaml")
    soa = kwargs.pop("soa", SoaConfig())
    return build_zone(path, soa, text=yaml.safe_dump(records), **kwargs)


def ask(zone: Zone, qname: str | dns.name.Name, qtype: str) -> Answer:
    """resolve() one question against one zone."""
    if isinstance(qname, dns.name.Name):
        name = qname
    else:
        name = dns.name.from_text(qname, zone.origin) if qname else zone.origin
    return resolve(
        ZoneSet({zone.origin: zone}), name, dns.rdatatype.from_text(qtype), dns.rdataclass.IN, "t"
    )


def rdata_texts(answer: Answer, rdtype: str) -> set[str]:
    """The rdata texts of the answer's RRsets of ``rdtype``."""
    wanted = dns.rdatatype.from_text(rdtype)
    return {rd.to_text() for rrset in answer.answer if rrset.rdtype == wanted for rd in rrset}


# --- octoDNS's own test zone -----------------------------------------------------------------


@pytest.fixture(scope="module")
def interop(octodns_unit_tests: Path) -> tuple[Zone, list[Problem]]:
    """unit.tests. as octoDNS's repository publishes it."""
    return build_zone(octodns_unit_tests, SoaConfig())


def test_interop_zone_loads_with_the_expected_warnings(
    interop: tuple[Zone, list[Problem]], octodns_unit_tests: Path
) -> None:
    """unit.tests loads; what a DNS server cannot serve is a warning naming the record and line."""
    zone, warnings = interop
    assert zone.origin == UNIT_TESTS
    found = {(w.subject, w.message) for w in warnings}
    assert found == {
        ("@", "octoDNS key 'geo' ignored"),
        ("ignored", "A has octodns.ignored, not served"),
        ("included", "CNAME is not for provider 'anycastedge', not served"),
        ("urlfwd", "URLFWD is provider-only, not served"),
        (
            "www.sub",
            "A is occluded by the delegation at sub.unit.tests.; served only as glue in referrals",
        ),
    }
    for warning in warnings:
        assert warning.warning
        assert warning.location is not None
        assert warning.location.file == str(octodns_unit_tests) and warning.location.line > 0
    by_subject = {w.subject: w.location for w in warnings}
    for subject in ("ignored", "included", "urlfwd", "www.sub"):
        where = by_subject[subject]
        assert where is not None
        first, last = _yaml_block(octodns_unit_tests, subject)
        assert first <= where.line <= last, subject


def _yaml_block(path: Path, key: str) -> tuple[int, int]:
    """The 1-based first and last line of a top-level key's block in a YAML file."""
    lines = path.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:")) + 1
    last = first
    while last < len(lines) and (lines[last].startswith(" ") or not lines[last]):
        last += 1
    return first, last


INTEROP_ANSWERS = [
    ("", "A", {"1.2.3.4", "1.2.3.5"}),
    (
        "",
        "SSHFP",
        {
            "1 1 bf6b6825d2977c511a475bbefb88aad54a92ac73",
            "1 1 7491973e5f8b39d5327cd4e08bc81b05f7710b49",
        },
    ),
    ("", "NS", {"6.2.3.4.", "7.2.3.4."}),
    ("", "CAA", {'0 issue "ca.unit.tests"'}),
    ("_imap._tcp", "SRV", {"0 0 0 ."}),
    ("_pop3._tcp", "SRV", {"0 0 0 ."}),
    ("_srv._tcp", "SRV", {"12 20 30 foo-2.unit.tests.", "10 20 30 foo-1.unit.tests."}),
    ("aaaa", "AAAA", {"2601:644:500:e210:62f8:1dff:feb8:947a"}),
    ("cname", "CNAME", {"unit.tests."}),
    ("dname", "DNAME", {"unit.tests."}),
    ("excluded", "CNAME", {"unit.tests."}),  # excluded only from provider "test"
    (
        "loc",
        "LOC",
        {
            "31 58 52.100 S 115 49 11.700 E 20.00m 10.00m 10.00m 2.00m",
            "53 13 10.000 N 2 18 26.000 W 20.00m 10.00m 1000.00m 2.00m",
        },
    ),
    (
        "mx",
        "MX",
        {
            "40 smtp-1.unit.tests.",
            "20 smtp-2.unit.tests.",
            "30 smtp-3.unit.tests.",
            "10 smtp-4.unit.tests.",  # the legacy priority/value shape
        },
    ),
    (
        "naptr",
        "NAPTR",
        {
            '100 100 "U" "SIP+D2U" "!^.*$!sip:info@bar.example.com!" .',
            '10 100 "S" "SIP+D2U" "!^.*$!sip:info@bar.example.com!" .',
        },
    ),
    ("ptr", "PTR", {"foo.bar.com."}),
    ("spf", "SPF", {'"v=spf1 ip4:192.168.0.1/16-all"'}),
    (
        "txt",
        "TXT",
        {
            '"Bah bah black sheep"',
            '"have you any wool."',
            '"v=DKIM1;k=rsa;s=email;h=sha256;p=A/kinda+of/long/string+with+numb3rs"',
        },
    ),
    ("www", "A", {"2.2.3.6"}),
]


@pytest.mark.parametrize(
    ("name", "qtype", "expected"),
    INTEROP_ANSWERS,
    ids=[f"{n or '@'}/{t}" for n, t, _ in INTEROP_ANSWERS],
)
def test_interop_zone_answers_its_standard_records(
    interop: tuple[Zone, list[Problem]], name: str, qtype: str, expected: set[str]
) -> None:
    """Every standard record of unit.tests is answered authoritatively with its values."""
    zone, _ = interop
    result = ask(zone, name or UNIT_TESTS, qtype)
    assert (result.rcode, result.aa) == (NOERROR, True)
    assert rdata_texts(result, qtype) == expected


@pytest.mark.parametrize("name", ["ignored", "included", "urlfwd"])
def test_interop_zone_skipped_records_do_not_exist(
    interop: tuple[Zone, list[Problem]], name: str
) -> None:
    """Records skipped with a warning are not served: their names do not exist."""
    zone, _ = interop
    for qtype in ("A", "CNAME"):
        assert ask(zone, name, qtype).rcode == NXDOMAIN


@pytest.mark.parametrize("name", ["sub", "www.sub", "foo.sub"])
def test_interop_zone_delegation_is_a_referral(
    interop: tuple[Zone, list[Problem]], name: str
) -> None:
    """`sub` is delegated: its names, the occluded www.sub included, get a non-AA referral."""
    zone, _ = interop
    result = ask(zone, name, "A")
    assert (result.rcode, result.aa, result.answer) == (NOERROR, False, [])
    assert {rd.to_text() for rrset in result.authority for rd in rrset} == {"6.2.3.4.", "7.2.3.4."}


def test_interop_zone_soa_is_synthesized(interop: tuple[Zone, list[Problem]]) -> None:
    """unit.tests has no SOA of its own: MNAME is its first apex NS, RNAME hostmaster.unit.tests."""
    zone, _ = interop
    soa = zone.soa[0]
    assert (soa.mname.to_text(), soa.rname.to_text()) == ("6.2.3.4.", "hostmaster.unit.tests.")


# --- every record type's converter -----------------------------------------------------------

OPENPGPKEY = base64.b64encode(bytes(range(48))).decode()
LONG = "v=long " + "0123456789" * 60  # 607 octets

CONVERTER_CASES: list[tuple[str, str, Any, str]] = [
    ("a", "A", "192.0.2.1", "192.0.2.1"),
    ("aaaa", "AAAA", "2001:db8::1", "2001:db8::1"),
    ("aaaa-long", "AAAA", "2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
    (
        "caa",
        "CAA",
        {"flags": 0, "tag": "issue", "value": "ca.example.net"},
        '0 issue "ca.example.net"',
    ),
    ("caa-noflags", "CAA", {"tag": "issuewild", "value": ";"}, '0 issuewild ";"'),
    (
        "caa-critical",
        "CAA",
        {"flags": 128, "tag": "iodef", "value": "mailto:security@example.net"},
        '128 iodef "mailto:security@example.net"',
    ),
    ("cname", "CNAME", "target.example.net.", "target.example.net."),
    ("dname", "DNAME", "new.example.net.", "new.example.net."),
    (
        "ds",
        "DS",
        {
            "key_tag": 60485,
            "algorithm": 5,
            "digest_type": 1,
            "digest": "2BB183AF5F22588179A53B0A98631FAD1A292118",
        },
        "60485 5 1 2bb183af5f22588179a53b0a98631fad1a292118",
    ),
    (
        "ds-legacy",
        "DS",
        {
            "flags": 60485,
            "protocol": 5,
            "algorithm": 1,
            "public_key": "2BB183AF5F22588179A53B0A98631FAD1A292118",
        },
        "60485 5 1 2bb183af5f22588179a53b0a98631fad1a292118",
    ),
    (
        "https",
        "HTTPS",
        {
            "svcpriority": 1,
            "targetname": ".",
            "svcparams": {
                "alpn": ["h2", "h3"],
                "port": 443,
                "ipv4hint": ["192.0.2.1", "192.0.2.2"],
            },
        },
        '1 . alpn="h2,h3" port="443" ipv4hint="192.0.2.1,192.0.2.2"',
    ),
    (
        "svcb-alias",
        "SVCB",
        {"svcpriority": 0, "targetname": "svc.example.net."},
        "0 svc.example.net.",
    ),
    (
        "svcb",
        "SVCB",
        {
            "svcpriority": 16,
            "targetname": "svc.example.net.",
            "svcparams": {"no-default-alpn": None, "alpn": ["h2"], "ipv6hint": ["2001:db8::1"]},
        },
        '16 svc.example.net. alpn="h2" no-default-alpn ipv6hint="2001:db8::1"',
    ),
    (
        "loc",
        "LOC",
        {
            "lat_degrees": 31,
            "lat_minutes": 58,
            "lat_seconds": 52.1,
            "lat_direction": "S",
            "long_degrees": 115,
            "long_minutes": 49,
            "long_seconds": 11.7,
            "long_direction": "E",
            "altitude": 20,
            "size": 10,
            "precision_horz": 10,
            "precision_vert": 2,
        },
        "31 58 52.100 S 115 49 11.700 E 20.00m 10.00m 10.00m 2.00m",
    ),
    ("mx", "MX", {"preference": 10, "exchange": "mail.example.net."}, "10 mail.example.net."),
    ("mx-legacy", "MX", {"priority": 10, "value": "mail.example.net."}, "10 mail.example.net."),
    ("mx-null", "MX", {"preference": 0, "exchange": "."}, "0 ."),
    (
        "naptr",
        "NAPTR",
        {
            "order": 100,
            "preference": 10,
            "flags": "U",
            "service": "SIP+D2U",
            "regexp": "!^.*$!sip:info@example.net!",
            "replacement": ".",
        },
        '100 10 "U" "SIP+D2U" "!^.*$!sip:info@example.net!" .',
    ),
    ("", "NS", "ns1.example.net.", "ns1.example.net."),  # NS below the apex is a delegation
    ("openpgpkey", "OPENPGPKEY", OPENPGPKEY, OPENPGPKEY),
    ("ptr", "PTR", "host.example.net.", "host.example.net."),
    ("spf", "SPF", "v=spf1 -all", '"v=spf1 -all"'),
    (
        "_sip._tcp",
        "SRV",
        {"priority": 10, "weight": 20, "port": 5060, "target": "sip.example.net."},
        "10 20 5060 sip.example.net.",
    ),
    (
        "sshfp",
        "SSHFP",
        {
            "algorithm": 1,
            "fingerprint_type": 1,
            "fingerprint": "bf6b6825d2977c511a475bbefb88aad54a92ac73",
        },
        "1 1 bf6b6825d2977c511a475bbefb88aad54a92ac73",
    ),
    (
        "_443._tcp",
        "TLSA",
        {
            "certificate_usage": 3,
            "selector": 1,
            "matching_type": 1,
            "certificate_association_data": (
                "0c72ac70b745ac19998811b131d662c9ac69dbdbe7cb23e5b514b56664c5d3d6"
            ),
        },
        "3 1 1 0c72ac70b745ac19998811b131d662c9ac69dbdbe7cb23e5b514b56664c5d3d6",
    ),
    ("txt", "TXT", "v=DKIM1\\;k=rsa\\;p=abc", '"v=DKIM1;k=rsa;p=abc"'),
    ("txt-quote", "TXT", 'say "hi"', '"say \\"hi\\""'),
    ("txt-prechunked", "TXT", '"abc" "def"', '"abcdef"'),
    (
        "_ftp._tcp",
        "URI",
        {"priority": 10, "weight": 1, "target": "https://www.example.net/"},
        '10 1 "https://www.example.net/"',
    ),
]


@pytest.mark.parametrize(
    ("name", "rdtype", "value", "expected"),
    CONVERTER_CASES,
    ids=[f"{t}:{n or '@'}" for n, t, _, _ in CONVERTER_CASES],
)
def test_converter_round_trips(name: str, rdtype: str, value: Any, expected: str) -> None:
    """Each octoDNS value shape loads to the expected rdata, which survives wire round trips."""
    zone = build({**APEX_NS, name: {"type": rdtype, "ttl": 120, "value": value}})
    result = ask(zone, name, rdtype)
    assert (result.rcode, result.aa) == (NOERROR, True)
    [rrset] = [r for r in result.answer if r.rdtype == dns.rdatatype.from_text(rdtype)]
    assert rrset.ttl == 120
    [rdata] = list(rrset)
    assert rdata.to_text() == expected
    wire = rdata.to_digestable()
    again = dns.rdata.from_wire(dns.rdataclass.IN, rdata.rdtype, wire, 0, len(wire))
    assert again == rdata
    assert dns.rdata.from_text(dns.rdataclass.IN, rdata.rdtype, expected) == rdata


@pytest.mark.parametrize(
    ("name", "rdtype", "value", "expected"),
    CONVERTER_CASES,
    ids=[f"{t}:{n or '@'}" for n, t, _, _ in CONVERTER_CASES],
)
def test_converter_agrees_with_octodns(name: str, rdtype: str, value: Any, expected: str) -> None:
    """The rdata we serve equals the one octoDNS itself renders for the same value."""
    record_module = pytest.importorskip("octodns.record")
    zone_module = pytest.importorskip("octodns.zone")
    octo_zone = zone_module.Zone("types.test.", [])
    data = {"type": rdtype, "ttl": 120, "value": value}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # octoDNS's deprecation notices
        record = record_module.Record.new(octo_zone, name, data, lenient=False)
        texts = record.to_rrset().rdatas
    theirs = {dns.rdata.from_text(dns.rdataclass.IN, rdtype, text) for text in texts}
    owner = dns.name.from_text(name, ORIGIN) if name else ORIGIN
    ours = build({**APEX_NS, name: data}).nodes[owner]
    assert set(ours[dns.rdatatype.from_text(rdtype)]) == theirs


def test_record_without_ttl_gets_octodns_default() -> None:
    """A record without ttl gets 3600, octoDNS's default."""
    zone = build({**APEX_NS, "www": {"type": "A", "value": "192.0.2.1"}})
    [rrset] = ask(zone, "www", "A").answer
    assert rrset.ttl == DEFAULT_TTL == 3600


def test_txt_semicolon_escape() -> None:
    """`\\;` in a TXT value is a literal `;` on the wire, as octoDNS means it."""
    zone = build({**APEX_NS, "t": {"type": "TXT", "value": "a\\;b\\;c"}})
    [rdata] = list(ask(zone, "t", "TXT").answer[0])
    assert rdata.strings == (b"a;b;c",)


@pytest.mark.parametrize(
    ("length", "chunks"),
    [(1, [1]), (255, [255]), (256, [255, 1]), (510, [255, 255]), (607, [255, 255, 97])],
)
@pytest.mark.parametrize("rdtype", ["TXT", "SPF"])
def test_long_text_is_chunked_at_255(rdtype: str, length: int, chunks: list[int]) -> None:
    """A TXT/SPF value longer than 255 octets becomes 255-octet strings that join to the value."""
    value = ("v=spf1 " + "x" * length)[:length]
    zone = build({**APEX_NS, "t": {"type": rdtype, "value": value}})
    [rdata] = list(ask(zone, "t", rdtype).answer[0])
    assert [len(s) for s in rdata.strings] == chunks
    assert b"".join(rdata.strings) == value.encode()


def test_several_values_make_one_rrset() -> None:
    """`values` becomes one RRset with every value, whatever the value shape."""
    zone = build(
        {
            **APEX_NS,
            "mx": {
                "type": "MX",
                "values": [
                    {"preference": 10, "exchange": "a.example.net."},
                    {"priority": 20, "value": "b.example.net."},
                ],
            },
            "t": {"type": "TXT", "values": ["one", LONG]},
        }
    )
    assert rdata_texts(ask(zone, "mx", "MX"), "MX") == {"10 a.example.net.", "20 b.example.net."}
    [rrset] = ask(zone, "t", "TXT").answer
    assert {b"".join(rd.strings).decode() for rd in rrset} == {"one", LONG}


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"type": "A", "value": "1.2.3"}, 'invalid IPv4 address "1.2.3"'),
        ({"type": "A", "value": "2001:db8::1"}, 'invalid IPv4 address "2001:db8::1"'),
        ({"type": "AAAA", "value": "192.0.2.1"}, 'invalid IPv6 address "192.0.2.1"'),
        (
            {"type": "CNAME", "value": "host.example.net"},
            'CNAME value "host.example.net" missing trailing .',
        ),
        ({"type": "CNAME", "value": "host"}, 'CNAME value "host" is not a valid FQDN'),
        ({"type": "TXT", "value": "v=spf1;-all"}, 'unescaped ; in "v=spf1;-all"'),
        ({"type": "MX", "value": {"exchange": "mx.example.net."}}, "missing preference"),
        ({"type": "SRV", "value": {"priority": 1, "weight": 1, "port": 1}}, "missing target"),
        ({"type": "A", "ttl": -1, "value": "192.0.2.1"}, 'invalid ttl "-1"'),
        ({"type": "A"}, "missing value(s)"),
        (
            {"type": "CNAME", "values": ["a.example.net.", "b.example.net."]},
            "CNAME takes a single value",
        ),
    ],
)
def test_bad_values_are_rejected_with_a_reason(record: dict[str, Any], reason: str) -> None:
    """A bad value is an error naming the record and the reason."""
    with pytest.raises(ConfigError) as caught:
        build({**APEX_NS, "bad": record})
    assert ("bad", reason) in {(p.subject, p.message) for p in caught.value.problems}


@pytest.mark.parametrize(
    ("key", "listed"),
    [("included", "true"), ("included", "1"), ("excluded", "1"), ("excluded", "x")],
)
def test_provider_lists_that_are_not_lists_are_refused_where_written(key: str, listed: str) -> None:
    """Found by fuzzing (tests/fuzz): `octodns.included: 1` raised TypeError out of the loader;
    it is a problem at the key's line."""
    text = f"www:\n  octodns:\n    {key}: {listed}\n"
    text += "  type: A\n  value: 192.0.2.1\n"
    with pytest.raises(ConfigError) as caught:
        build_zone(Path("lists.test.yaml"), SoaConfig(), text=text)
    [problem] = caught.value.problems
    assert (problem.subject, problem.message) == (
        "www",
        f"octodns.{key} must be a list of provider names",
    )
    assert problem.location is not None and problem.location.line == 3


INF = float("inf")


@pytest.mark.parametrize(
    "record",
    [
        {"type": "HTTPS", "value": {"svcparams": {}, "svcpriority": INF, "targetname": "."}},
        {"type": "HTTPS", "value": {"svcparams": {"port": INF}, "svcpriority": 1,
                                    "targetname": "."}},  # fmt: skip
        {"type": "MX", "value": {"exchange": "mx.example.net.", "preference": INF}},
        {"type": "CAA", "value": {"flags": INF, "tag": "issue", "value": "ca.example.net"}},
        {"type": "DS", "value": {"algorithm": 13, "digest": "ab", "digest_type": 2,
                                 "key_tag": INF}},  # fmt: skip
        {"type": "SSHFP", "value": {"algorithm": INF, "fingerprint": "ab", "fingerprint_type": 2}},
        {"type": "NAPTR", "value": {"flags": "U", "order": INF, "preference": 1, "regexp": "",
                                    "replacement": ".", "service": "E2U+sip"}},  # fmt: skip
        {"type": "A", "value": "192.0.2.1",
         "dynamic": {"pools": {"a": {"values": [{"value": "192.0.2.2", "weight": INF}]}},
                     "rules": [{"pool": "a"}]}},  # fmt: skip
    ],
    ids=["svcpriority", "svcparams-port", "mx", "caa", "ds", "sshfp", "naptr", "pool-weight"],
)
def test_infinity_where_a_whole_number_belongs_is_a_problem(record: dict[str, Any]) -> None:
    """Found by fuzzing (tests/fuzz): YAML's `.inf` in an integer field raised OverflowError out
    of the loader; it is a problem of the record, like any other bad number."""
    with pytest.raises(ConfigError) as caught:
        build({**APEX_NS, "bad": record})
    assert any(p.subject == "bad" and not p.warning for p in caught.value.problems)


# --- SOA synthesis ---------------------------------------------------------------------------

ZONE_TEXT = """
'':
  - type: NS
    values: [ns-b.soa.test., ns-a.soa.test.]
  - {type: A, values: [192.0.2.1, 192.0.2.2]}
www: {type: A, value: 192.0.2.80}
"""
CHANGED_TEXT = ZONE_TEXT.replace("192.0.2.80", "192.0.2.81")
T0 = 1_700_000_000


def write(path: Path, text: str, mtime: int) -> Path:
    """Write a zone file and set its modification time."""
    path.write_text(text)
    os.utime(path, (mtime, mtime))
    return path


def test_soa_fields_are_synthesized(tmp_path: Path) -> None:
    """MNAME is the first apex NS as written, RNAME hostmaster.<zone>, the documented timers."""
    zone, _ = build_zone(write(tmp_path / "soa.test.yaml", ZONE_TEXT, T0), SoaConfig())
    [soa] = list(zone.soa)
    assert zone.soa.name == dns.name.from_text("soa.test.")
    assert soa.mname.to_text() == "ns-b.soa.test."
    assert soa.rname.to_text() == "hostmaster.soa.test."
    assert (zone.soa.ttl, soa.refresh, soa.retry, soa.expire, soa.minimum) == (
        3600,
        7200,
        3600,
        1209600,
        300,
    )
    assert soa.serial == T0  # the file's modification time


def test_soa_follows_its_config(tmp_path: Path) -> None:
    """Timers and RNAME come from dns.soa when it sets them."""
    config = SoaConfig(
        ttl=900, refresh=1800, retry=600, expire=604800, minimum=60, rname="dns.example.net."
    )
    zone, _ = build_zone(write(tmp_path / "soa.test.yaml", ZONE_TEXT, T0), config)
    [soa] = list(zone.soa)
    assert soa.rname.to_text() == "dns.example.net."
    assert (zone.soa.ttl, soa.refresh, soa.retry, soa.expire, soa.minimum) == (
        900,
        1800,
        600,
        604800,
        60,
    )


def test_soa_without_apex_ns_names_the_zone_and_warns(tmp_path: Path) -> None:
    """A zone without apex NS still gets an SOA (MNAME the zone itself), with a warning."""
    path = write(tmp_path / "nons.test.yaml", "www: {type: A, value: 192.0.2.1}\n", T0)
    zone, warnings = build_zone(path, SoaConfig())
    assert zone.soa[0].mname.to_text() == "nons.test."
    assert "zone has no apex NS records" in {w.message for w in warnings}


def test_serial_unchanged_when_content_unchanged(tmp_path: Path) -> None:
    """Reloading the same content keeps the served serial, even if the file was touched."""
    path = write(tmp_path / "soa.test.yaml", ZONE_TEXT, T0)
    first, _ = build_zone(path, SoaConfig())
    write(path, ZONE_TEXT + "# a comment changes nothing served\n", T0 + 3600)
    second, _ = build_zone(path, SoaConfig(), previous=first)
    assert second.serial == first.serial == T0


def test_serial_grows_when_content_changes_within_the_same_second(tmp_path: Path) -> None:
    """New content with an unchanged mtime still gets a larger serial: the served one plus one."""
    path = write(tmp_path / "soa.test.yaml", ZONE_TEXT, T0)
    first, _ = build_zone(path, SoaConfig())
    write(path, CHANGED_TEXT, T0)
    second, _ = build_zone(path, SoaConfig(), previous=first)
    assert second.serial == first.serial + 1
    write(path, ZONE_TEXT, T0)
    third, _ = build_zone(path, SoaConfig(), previous=second)
    assert third.serial == second.serial + 1


def test_serial_grows_when_file_is_older_than_served_serial(tmp_path: Path) -> None:
    """New content whose file is older than the served serial still gets a larger serial."""
    path = write(tmp_path / "soa.test.yaml", ZONE_TEXT, T0)
    first, _ = build_zone(path, SoaConfig())
    write(path, CHANGED_TEXT, T0 - 86400)  # e.g. a deploy that preserves an older mtime
    second, _ = build_zone(path, SoaConfig(), previous=first)
    assert second.serial == first.serial + 1


def test_serial_takes_a_later_mtime(tmp_path: Path) -> None:
    """New content in a newer file takes that file's mtime as serial."""
    path = write(tmp_path / "soa.test.yaml", ZONE_TEXT, T0)
    first, _ = build_zone(path, SoaConfig())
    write(path, CHANGED_TEXT, T0 + 60)
    second, _ = build_zone(path, SoaConfig(), previous=first)
    assert second.serial == T0 + 60


def test_serial_unchanged_when_values_are_only_reordered(tmp_path: Path) -> None:
    """Writing the same values in another order is the same content: the serial stays."""
    path = write(tmp_path / "soa.test.yaml", ZONE_TEXT, T0)
    first, _ = build_zone(path, SoaConfig())
    reordered = ZONE_TEXT.replace("[192.0.2.1, 192.0.2.2]", "[192.0.2.2, 192.0.2.1]")
    write(path, reordered, T0 + 60)
    second, _ = build_zone(path, SoaConfig(), previous=first)
    assert second.serial == first.serial


def test_serial_grows_when_soa_timers_change(tmp_path: Path) -> None:
    """A different SOA (new timers from pop.yaml) is new zone content: the serial grows."""
    path = write(tmp_path / "soa.test.yaml", ZONE_TEXT, T0)
    first, _ = build_zone(path, SoaConfig())
    second, _ = build_zone(path, SoaConfig(minimum=60), previous=first)
    assert second.soa[0].minimum != first.soa[0].minimum
    assert second.serial > first.serial


# --- property: any list of IPv4 addresses ----------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    addresses=st.lists(st.ip_addresses(v=4).map(str), min_size=1, max_size=40),
    ttl=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_any_ipv4_values_answer_exactly_that_set(addresses: list[str], ttl: int) -> None:
    """Any list of valid IPv4 strings as `values` loads, and resolve() answers exactly that set."""
    zone = build({**APEX_NS, "host": {"type": "A", "ttl": ttl, "values": addresses}})
    result = ask(zone, "host", "A")
    assert (result.rcode, result.aa) == (NOERROR, True)
    [rrset] = [r for r in result.answer if r.rdtype == dns.rdatatype.A]
    assert rrset.ttl == ttl
    assert {rd.address for rd in rrset} == set(addresses)


def test_unchanged_zone_files_are_not_read_again(tmp_path: Path) -> None:
    """load_zones with the zone set in service keeps the zones whose files did not change (the
    same objects, warnings included) and builds the changed ones anew."""
    a = tmp_path / "a.test.yaml"
    b = tmp_path / "b.test.yaml"
    a.write_text(
        "'':\n  type: NS\n  values: [ns1.a.test., ns2.a.test.]\n"
        "www:\n  type: A\n  value: 192.0.2.1\n"
    )
    b.write_text("www:\n  type: A\n  value: 192.0.2.2\n")  # no apex NS: a warning
    first, warnings = load_zones([tmp_path], SoaConfig())
    assert [w.message for w in warnings] == ["zone has no apex NS records"]
    st = a.stat()
    a.write_text(a.read_text().replace("192.0.2.1", "192.0.2.9"))
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    second, warnings = load_zones([tmp_path], SoaConfig(), None, first)
    a_name, b_name = dns.name.from_text("a.test."), dns.name.from_text("b.test.")
    assert second.zones[b_name] is first.zones[b_name]
    assert [w.message for w in warnings] == ["zone has no apex NS records"]
    assert second.zones[a_name] is not first.zones[a_name]
    www = dns.name.from_text("www.a.test.")
    assert second.zones[a_name].nodes[www][dns.rdatatype.A][0].address == "192.0.2.9"
    third, _ = load_zones([tmp_path], SoaConfig(minimum=60), None, second)
    assert third.zones[b_name] is not second.zones[b_name]  # other SOA settings: built anew


def test_anchors_and_merge_keys_load_as_written_out(tmp_path: Path) -> None:
    """A zone file using YAML anchors, aliases and merge keys (read whole, not streamed) gives
    the same zone as the file with each written out, and errors still name their line."""
    short = tmp_path / "short" / "a.test.yaml"
    long = tmp_path / "long" / "a.test.yaml"
    short.parent.mkdir()
    long.parent.mkdir()
    short.write_text(
        "'': &ns {type: NS, values: [ns1.a.test., ns2.a.test.]}\n"
        "www: &web {ttl: 60, type: A, values: [192.0.2.1, 192.0.2.2]}\n"
        "www2: *web\n"
        "www3: {<<: *web, ttl: 120}\n"
    )
    long.write_text(
        "'': {type: NS, values: [ns1.a.test., ns2.a.test.]}\n"
        "www: {ttl: 60, type: A, values: [192.0.2.1, 192.0.2.2]}\n"
        "www2: {ttl: 60, type: A, values: [192.0.2.1, 192.0.2.2]}\n"
        "www3: {ttl: 120, type: A, values: [192.0.2.1, 192.0.2.2]}\n"
    )
    a, _ = build_zone(short, SoaConfig())
    b, _ = build_zone(long, SoaConfig())
    assert dict(a.nodes.items()) == dict(b.nodes.items())
    assert a.digest == b.digest
    short.write_text(short.read_text() + "bad: {<<: *web, values: [192.0.2.999]}\n")
    with pytest.raises(ConfigError) as caught:
        build_zone(short, SoaConfig())
    errors = [p for p in caught.value.problems if not p.warning]
    assert [(p.message, p.location.line if p.location else 0) for p in errors] == [
        ('invalid IPv4 address "192.0.2.999"', 5)
    ]


@pytest.mark.parametrize(
    "data",
    [
        b"www:\n  type: A\n  value: \xff192.0.2.1\n",  # not UTF-8
        "www:\n  type: A\n  value: 192.0.2.1\n".encode("utf-16"),  # UTF-16, with its BOM
    ],
)
def test_zone_files_are_utf8(tmp_path: Path, data: bytes) -> None:
    """A zone file that is not UTF-8 is refused with the file named, as octoDNS refuses it."""
    path = tmp_path / "a.test.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as caught:
        build_zone(path, SoaConfig())
    (problem,) = caught.value.problems
    assert problem.message.startswith("cannot read: 'utf-8' codec can't decode")
    assert problem.location is not None and problem.location.file == str(path)
