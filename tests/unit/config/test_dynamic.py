"""GSLB configuration: octoDNS ``dynamic`` records read into the gslb model.

Invalid records are rejected with octoDNS's own reasons and the file:line of what is wrong, and
those reasons are compared with what octoDNS itself says about the same record; valid records build
the expected pools, rules and health-check targets; octoDNS's documented examples load unchanged
(and octoDNS's YamlProvider accepts the same file); pop.yaml's GSLB settings are validated.

Network safety: several zones here name public addresses (octoDNS's documentation uses 1.1.1.1 and
the like). They are only loaded: no server is started and no health check is run.
"""

from __future__ import annotations

import ipaddress
import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.name
import dns.rdatatype
import pytest
import yaml
from octodns.provider.yaml import YamlProvider
from octodns.record import Record, ValidationError
from octodns.zone import Zone as OctoZone

from anycastedge.config.pop import SoaConfig, load_pop
from anycastedge.config.zones import build_zone, load_zones
from anycastedge.dns.zone import Zone
from anycastedge.errors import ConfigError, Problem
from anycastedge.gslb.model import DynamicRecord, Pool, PoolValue, Rule, StickyPrefix
from anycastedge.health.check import CheckTarget, HealthCheck

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "dynamic"
DOCS_ZONE = FIXTURES / "unit.tests.yaml"
ZONE_FILE = "unit.tests.yaml"
#: Appended after each table record, so that the record's own lines start at line 1.
APEX = "'':\n  type: NS\n  values: [ns1.unit.tests., ns2.unit.tests.]\n"
A = dns.rdatatype.A
UNIT_TESTS = dns.name.from_text("unit.tests.")
T0 = 1_700_000_000


def text(source: str) -> str:
    """A YAML snippet written indented in this file, as it is in the zone file: line 1 first."""
    return textwrap.dedent(source).lstrip("\n")


def name(relative: str) -> dns.name.Name:
    """An owner name in unit.tests. (``""`` is the apex)."""
    return dns.name.from_text(relative, UNIT_TESTS) if relative else UNIT_TESTS


def load(tmp_path: Path, source: str, mtime: int | None = None) -> tuple[Zone, list[Problem]]:
    """Write ``source`` as unit.tests.yaml under ``tmp_path`` and build it."""
    path = tmp_path / ZONE_FILE
    path.write_text(text(source))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return build_zone(path, SoaConfig())


def dynamic(zone: Zone, relative: str = "www", rdtype: int = A) -> DynamicRecord:
    """The dynamic record at ``relative`` in ``zone``."""
    return zone.dynamic[(name(relative), rdtype)]


# --- invalid records: our reasons and lines, and octoDNS's -------------------------------------

SAME = "same"  # octoDNS rejects the record with exactly our reasons


def ours_only(why: str) -> str:
    """The case is not comparable with octoDNS: our reasons go beyond what octoDNS checks."""
    return f"ours only: {why}"


def differs(why: str) -> str:
    """octoDNS rejects or accepts the record differently: a known divergence, marked xfail."""
    return f"differs: {why}"


@dataclass(frozen=True)
class Invalid:
    """One invalid record ``test`` (its YAML's line 1 is ``test:``) and what is said about it."""

    id: str
    record: str
    errors: Sequence[tuple[str, int]]  # (message, line), in the order they are reported
    octodns: str = SAME


def geo_case(code: str, message: str) -> Invalid:
    """A record whose first rule targets the geo ``code``."""
    return Invalid(
        f"geo {code}",
        f"""
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          dynamic:
            pools:
              eu: {{values: [{{value: 192.0.2.10}}]}}
              rest: {{values: [{{value: 192.0.2.20}}]}}
            rules:
            - geos: [{code}]
              pool: eu
            - pool: rest
        """,
        [(message, 10)],
    )


def weight_case(weight: str, octodns: str = SAME) -> Invalid:
    """A record whose pool's first value has ``weight``."""
    return Invalid(
        f"weight {weight}",
        f"""
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          dynamic:
            pools:
              rest:
                values:
                - value: 192.0.2.10
                  weight: {weight}
                - value: 192.0.2.11
            rules:
            - pool: rest
        """,
        [(f'invalid weight "{yaml.safe_load(weight)}" in pool "rest" value 1', 9)],
        octodns,
    )


INVALID = [
    Invalid(
        "rule names an unknown pool",
        """
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          dynamic:
            pools:
              rest:
                values:
                - value: 192.0.2.20
            rules:
            - geos: [EU]
              pool: nope
            - pool: rest
        """,
        [('rule 1 undefined pool "nope"', 11)],
    ),
    Invalid(
        "unused pool",
        """
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          dynamic:
            pools:
              rest:
                values:
                - value: 192.0.2.20
              spare:
                values:
                - value: 192.0.2.30
            rules:
            - pool: rest
        """,
        [('unused pools: "spare"', 6)],  # the dynamic block, which starts at `pools:`
    ),
    Invalid(
        "fallback to an undefined pool",
        """
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          dynamic:
            pools:
              rest:
                fallback: nowhere
                values:
                - value: 192.0.2.20
            rules:
            - pool: rest
        """,
        [('undefined fallback "nowhere" for pool "rest"', 7)],
    ),
    Invalid(
        "fallback loop",
        """
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          dynamic:
            pools:
              a:
                fallback: b
                values:
                - value: 192.0.2.10
              b:
                fallback: a
                values:
                - value: 192.0.2.20
            rules:
            - geos: [EU]
              pool: a
            - pool: b
        """,
        [
            ("loop in pool fallbacks: a -> b", 7),
            ("loop in pool fallbacks: b -> a", 11),
        ],
    ),
    Invalid(
        "subnet-only rule after a geo rule",
        """
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          dynamic:
            pools:
              eu: {values: [{value: 192.0.2.10}]}
              lan: {values: [{value: 192.0.2.20}]}
              rest: {values: [{value: 192.0.2.30}]}
            rules:
            - geos: [EU]
              pool: eu
            - pool: lan
              subnets: [10.0.0.0/8]
            - pool: rest
        """,
        [("rule 2 with only subnet targeting should appear before all geo targeting rules", 13)],
    ),
    Invalid(
        "subnet+geo rule after a geo-only rule",
        """
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          dynamic:
            pools:
              eu: {values: [{value: 192.0.2.10}]}
              lan: {values: [{value: 192.0.2.20}]}
              rest: {values: [{value: 192.0.2.30}]}
            rules:
            - geos: [EU]
              pool: eu
            - geos: [NA]
              pool: lan
              subnets: [10.0.0.0/8]
            - pool: rest
        """,
        [("rule 2 with subnet(s) and geo(s) should appear before all geo-only rules", 13)],
    ),
    Invalid(
        "final rule is not a catch-all",
        """
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          dynamic:
            pools:
              eu: {values: [{value: 192.0.2.10}]}
              rest: {values: [{value: 192.0.2.30}]}
            rules:
            - geos: [EU]
              pool: eu
            - geos: [NA]
              pool: rest
        """,
        [('final rule has "subnets" and/or "geos" and is not catchall', 9)],
    ),
    Invalid(
        "duplicate default",
        """
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          dynamic:
            pools:
              eu: {values: [{value: 192.0.2.10}]}
              rest: {values: [{value: 192.0.2.30}]}
            rules:
            - geos: [EU]
              pool: eu
            - pool: rest
            - pool: rest
        """,
        [("rule 3 duplicate default", 13)],
    ),
    Invalid(
        "pool reused by a rule that is not the catch-all",
        """
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          dynamic:
            pools:
              eu: {values: [{value: 192.0.2.10}]}
              rest: {values: [{value: 192.0.2.30}]}
            rules:
            - geos: [EU]
              pool: eu
            - geos: [NA]
              pool: eu
            - pool: rest
        """,
        [('rule 2 invalid, target pool "eu" reused', 12)],
    ),
    geo_case("XX", 'rule 1 unknown continent code "XX"'),
    geo_case("EU-US", 'rule 1 unknown country code "EU-US"'),
    geo_case("NA-US-ZZ", 'rule 1 unknown province code "NA-US-ZZ"'),
    geo_case("NA-US-CA-SF", 'rule 1 invalid geo code "NA-US-CA-SF"'),
    Invalid(
        "geo seen twice",
        """
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          dynamic:
            pools:
              eu: {values: [{value: 192.0.2.10}]}
              other: {values: [{value: 192.0.2.20}]}
              rest: {values: [{value: 192.0.2.30}]}
            rules:
            - geos: [EU]
              pool: eu
            - geos: [EU, NA]
              pool: other
            - pool: rest
        """,
        [("rule 2 targets geo EU which has previously been seen in rule 1", 13)],
    ),
    Invalid(
        "more specific geo after a broader one",
        """
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          dynamic:
            pools:
              eu: {values: [{value: 192.0.2.10}]}
              fr: {values: [{value: 192.0.2.20}]}
              rest: {values: [{value: 192.0.2.30}]}
            rules:
            - geos: [EU]
              pool: eu
            - geos: [EU-FR]
              pool: fr
            - pool: rest
        """,
        [
            (
                "rule 2 targets geo EU-FR which is more specific than the previously seen EU "
                "in rule 1",
                13,
            )
        ],
    ),
    Invalid(
        "invalid subnets",
        """
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          dynamic:
            pools:
              lan: {values: [{value: 192.0.2.10}]}
              rest: {values: [{value: 192.0.2.30}]}
            rules:
            - pool: lan
              subnets: [10.0.0.0/33, 10.0.0.1/8, not-a-subnet]
            - pool: rest
        """,
        [
            ('rule 1 invalid subnet "10.0.0.0/33"', 10),
            ('rule 1 invalid subnet "10.0.0.1/8"', 10),
            ('rule 1 invalid subnet "not-a-subnet"', 10),
        ],
    ),
    Invalid(
        "subnet more specific than an earlier one, and one seen twice",
        """
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          dynamic:
            pools:
              lan: {values: [{value: 192.0.2.10}]}
              lan6: {values: [{value: 192.0.2.20}]}
              rest: {values: [{value: 192.0.2.30}]}
            rules:
            - pool: lan
              subnets: [10.0.0.0/8, 2001:db8::/32]
            - pool: lan6
              subnets: [10.1.0.0/16, 2001:db8::/32]
            - pool: rest
        """,
        [
            (
                "rule 2 targets subnet 10.1.0.0/16 which is more specific than the previously "
                "seen 10.0.0.0/8 in rule 1",
                13,
            ),
            ("rule 2 targets subnet 2001:db8::/32 which has previously been seen in rule 1", 13),
        ],
    ),
    weight_case("0"),
    weight_case("101"),
    weight_case("x"),
    weight_case('"500"'),
    Invalid(
        "invalid status",
        """
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          dynamic:
            pools:
              rest:
                values:
                - value: 192.0.2.10
                - status: maybe
                  value: 192.0.2.11
            rules:
            - pool: rest
        """,
        [('invalid status "maybe" in pool "rest" value 2', 10)],
    ),
    Invalid(
        "missing value",
        """
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          dynamic:
            pools:
              rest:
                values:
                - value: 192.0.2.10
                - weight: 2
            rules:
            - pool: rest
        """,
        [('missing value in pool "rest" value 2', 10)],
    ),
    Invalid(
        "pool without values",
        """
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          dynamic:
            pools:
              rest:
                fallback: default
            rules:
            - pool: rest
        """,
        [('pool "rest" is missing values', 7)],
    ),
    Invalid(
        "A value that is not an IPv4 address",
        """
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          dynamic:
            pools:
              rest:
                values:
                - value: not-an-ip
                - value: 2001:db8::1
            rules:
            - pool: rest
        """,
        [
            ('pool "rest" value 1: invalid IPv4 address "not-an-ip"', 9),
            ('pool "rest" value 2: invalid IPv4 address "2001:db8::1"', 10),
        ],
        differs('octoDNS says only "invalid IPv4 address ...", without the pool and value number'),
    ),
    Invalid(
        "CNAME value without its trailing dot",
        """
        test:
          ttl: 60
          type: CNAME
          value: fallback.example.net.
          dynamic:
            pools:
              rest:
                values:
                - value: target.example.net
            rules:
            - pool: rest
        """,
        [('pool "rest" value 1: CNAME value "target.example.net" missing trailing .', 9)],
        ours_only("octoDNS 1.22 does not validate CNAME pool values at all"),
    ),
    Invalid(
        "single-value pool with a weight",
        """
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          dynamic:
            pools:
              rest:
                values:
                - value: 192.0.2.10
                  weight: 5
            rules:
            - pool: rest
        """,
        [('pool "rest" has single value with weight!=1', 7)],
    ),
    Invalid(
        "dynamic TXT",
        """
        test:
          ttl: 60
          type: TXT
          value: hello
          dynamic:
            pools:
              rest: {values: [{value: hi}]}
            rules:
            - pool: rest
        """,
        [("dynamic is supported for A, AAAA and CNAME, not TXT", 2)],
        ours_only("octoDNS ignores `dynamic` on types without dynamic support"),
    ),
    Invalid(
        "dynamic with geo",
        """
        test:
          dynamic:
            pools:
              rest: {values: [{value: 192.0.2.10}]}
            rules:
            - pool: rest
          geo:
            EU: [192.0.2.20]
          ttl: 60
          type: A
          value: 192.0.2.1
        """,
        [('"dynamic" record with "geo" content', 2)],
    ),
    Invalid(
        "missing pools",
        """
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          dynamic:
            rules:
            - pool: rest
        """,
        [("missing pools", 6), ('rule 1 undefined pool "rest"', 7)],
    ),
    Invalid(
        "missing rules",
        """
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          dynamic:
            pools:
              rest: {values: [{value: 192.0.2.10}]}
        """,
        [("missing rules", 6), ('unused pools: "rest"', 6)],
    ),
    Invalid(
        "rules not a list",
        """
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          dynamic:
            pools:
              rest: {values: [{value: 192.0.2.10}]}
            rules:
              pool: rest
        """,
        [("rules must be a list", 8), ('unused pools: "rest"', 6)],
    ),
    Invalid(
        "rule without a pool",
        """
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          dynamic:
            pools:
              rest: {values: [{value: 192.0.2.10}]}
            rules:
            - geos: [EU]
            - pool: rest
        """,
        [("rule 1 missing pool", 9)],
    ),
    Invalid(
        "ICMP health check",
        """
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          octodns:
            healthcheck:
              protocol: ICMP
          dynamic:
            pools:
              rest: {values: [{value: 192.0.2.10}]}
            rules:
            - pool: rest
        """,
        [('octodns.healthcheck.protocol "ICMP" is not supported (HTTP, HTTPS or TCP)', 7)],
        ours_only("octoDNS accepts ICMP; this server cannot send it"),
    ),
    Invalid(
        "health check timeout not shorter than its interval",
        """
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          anycastedge:
            healthcheck:
              interval: 5
              timeout: 5
          dynamic:
            pools:
              rest: {values: [{value: 192.0.2.10}]}
            rules:
            - pool: rest
        """,
        [("anycastedge.healthcheck.timeout: 5 must be shorter than the interval 5", 8)],
        ours_only("anycastedge keys are ours"),
    ),
    Invalid(
        "unknown anycastedge key",
        """
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          anycastedge:
            answers: 2
            xyz: 1
          dynamic:
            pools:
              rest: {values: [{value: 192.0.2.10}]}
            rules:
            - pool: rest
        """,
        [("anycastedge.xyz: unknown key", 7)],
        ours_only("anycastedge keys are ours"),
    ),
    Invalid(
        "answers 0",
        """
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          anycastedge:
            answers: 0
          dynamic:
            pools:
              rest: {values: [{value: 192.0.2.10}]}
            rules:
            - pool: rest
        """,
        [("anycastedge.answers: 0 is outside 1..64", 6)],
        ours_only("anycastedge keys are ours"),
    ),
    Invalid(
        "bad expect_status",
        """
        test:
          ttl: 60
          type: A
          value: 192.0.2.1
          anycastedge:
            healthcheck:
              expect_status: [200, abc]
          dynamic:
            pools:
              rest: {values: [{value: 192.0.2.10}]}
            rules:
            - pool: rest
        """,
        [
            (
                'anycastedge.healthcheck.expect_status: "abc" is not a status code or a range '
                "like 200-399",
                7,
            )
        ],
        ours_only("anycastedge keys are ours"),
    ),
]


def our_problems(tmp_path: Path, record: str) -> list[Problem]:
    """The errors (not warnings) building a zone of ``record`` plus an apex NS."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text(record) + APEX)
    return [p for p in caught.value.problems if not p.warning]


def octodns_reasons(record: str) -> list[str]:
    """What octoDNS says about the record ``test``: its ValidationError's reasons, or none."""
    data = yaml.safe_load(text(record))  # plain dicts: octoDNS knows nothing of MarkedDict
    try:
        Record.new(OctoZone("unit.tests.", []), "test", data["test"])
    except ValidationError as exc:
        # A ValidationReason is a str whose __str__ appends ", via: <validator>": the bare text.
        return [str.__str__(reason) for reason in exc.reasons]
    return []


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_dynamic_record_is_rejected_with_reasons_and_lines(
    tmp_path: Path, case: Invalid
) -> None:
    """Every reason is reported, in order, on the record `test`, at the line of what is wrong."""
    problems = our_problems(tmp_path, case.record)
    assert [(p.message, p.location.line if p.location else 0) for p in problems] == list(
        case.errors
    )
    for problem in problems:
        assert problem.subject == "test"
        assert problem.location is not None
        assert problem.location.file == str(tmp_path / ZONE_FILE)


def _parity_params() -> list[Any]:
    params = []
    for case in INVALID:
        if case.octodns.startswith("ours only"):
            continue
        marks = []
        if case.octodns.startswith("differs"):
            marks = [pytest.mark.xfail(strict=True, reason=case.octodns)]
        params.append(pytest.param(case, id=case.id, marks=marks))
    return params


@pytest.mark.parametrize("case", _parity_params())
def test_invalid_dynamic_record_reasons_match_octodns(tmp_path: Path, case: Invalid) -> None:
    """octoDNS rejects the same record with the same reasons (order aside: it checks per pool)."""
    ours = [p.message for p in our_problems(tmp_path, case.record)]
    theirs = octodns_reasons(case.record)
    assert sorted(ours) == sorted(theirs)


def test_octodns_reasons_come_from_octodns() -> None:
    """The parity helper really asks octoDNS: a valid record passes, a broken one has reasons."""
    valid = """
    test:
      dynamic:
        pools:
          rest: {values: [{value: 192.0.2.10}]}
        rules:
        - pool: rest
      ttl: 60
      type: A
      value: 192.0.2.1
    """
    assert octodns_reasons(valid) == []
    assert octodns_reasons(valid.replace("192.0.2.10", "192.0.2.300")) == [
        'invalid IPv4 address "192.0.2.300"'
    ]


def test_fallback_loop_is_worded_as_octodns_words_it(tmp_path: Path) -> None:
    """Both name the loop by the chain up to the repeat: a -> b, and b -> a."""
    [case] = [c for c in INVALID if c.id == "fallback loop"]
    expected = ["loop in pool fallbacks: a -> b", "loop in pool fallbacks: b -> a"]
    assert octodns_reasons(case.record) == expected
    assert [p.message for p in our_problems(tmp_path, case.record)] == expected


def test_reasons_of_several_problems_are_all_reported(tmp_path: Path) -> None:
    """One record with many problems: each reported, pools' before rules', each on its line."""
    record = """
    test:
      ttl: 60
      type: A
      value: 192.0.2.1
      dynamic:
        pools:
          a:
            values:
            - {value: 192.0.2.20, weight: 0}
            - {value: 192.0.2.21, weight: 2, status: maybe}
          b:
            values:
            - value: 192.0.2.22
              weight: 5
        rules:
        - geos: [EU, XX]
          pool: a
        - pool: lan
          subnets: [10.0.0.0/8, 10.1.0.0/16]
        - pool: b
    """
    problems = our_problems(tmp_path, record)
    assert [(p.message, p.location.line if p.location else 0) for p in problems] == [
        ('invalid weight "0" in pool "a" value 1', 9),
        ('invalid status "maybe" in pool "a" value 2', 10),
        ('pool "b" has single value with weight!=1', 11),
        ('rule 1 unknown continent code "XX"', 16),
        ('rule 2 undefined pool "lan"', 18),
        ("rule 2 with only subnet targeting should appear before all geo targeting rules", 18),
        (
            "rule 2 targets subnet 10.1.0.0/16 which is more specific than the previously seen "
            "10.0.0.0/8 in rule 2",
            18,
        ),
    ]
    assert sorted(p.message for p in problems) == sorted(octodns_reasons(record))


# --- valid records: the model ----------------------------------------------------------------

ZONE = """
'':
  type: NS
  values: [ns1.unit.tests., ns2.unit.tests.]
www:
  dynamic:
    pools:
      eu:
        fallback: rest
        values:
        - {value: 192.0.2.10, weight: 3}
        - {status: up, value: 192.0.2.11, weight: 1}
        - {status: down, value: 192.0.2.12}
      lan:
        fallback: default
        values:
        - value: 192.0.2.20
      rest:
        values:
        - value: 192.0.2.1
        - value: 192.0.2.30
    rules:
    - pool: lan
      subnets: [10.0.0.0/8, 2001:db8::/32]
    - geos: [NA-US-CA, EU]
      pool: eu
    - pool: rest
  ttl: 60
  type: A
  values: [192.0.2.1, 192.0.2.2]
"""
#: octoDNS's health check defaults, on the record www.unit.tests.
DEFAULT_CHECK = HealthCheck(protocol="HTTPS", host="www.unit.tests", path="/_dns", port=443)


def target(address: str, check: HealthCheck = DEFAULT_CHECK) -> CheckTarget:
    """What the health monitor probes for one value."""
    return CheckTarget(address, check)


def test_pools_keep_values_weights_status_and_fallback(tmp_path: Path) -> None:
    """Each pool as written; `fallback: default` means none; obey values get a check target."""
    zone, warnings = load(tmp_path, ZONE)
    assert warnings == []
    record = dynamic(zone)
    assert record.pools == {
        "eu": Pool(
            "eu",
            (
                PoolValue("192.0.2.10", 3, "obey", target("192.0.2.10")),
                PoolValue("192.0.2.11", 1, "up"),
                PoolValue("192.0.2.12", 1, "down"),
            ),
            "rest",
        ),
        "lan": Pool("lan", (PoolValue("192.0.2.20", 1, "obey", target("192.0.2.20")),), None),
        "rest": Pool(
            "rest",
            (
                PoolValue("192.0.2.1", 1, "obey", target("192.0.2.1")),
                PoolValue("192.0.2.30", 1, "obey", target("192.0.2.30")),
            ),
        ),
    }
    assert record.targets == {
        target(a) for a in ("192.0.2.10", "192.0.2.20", "192.0.2.1", "192.0.2.30")
    }


def test_rules_keep_subnets_as_networks_and_geos(tmp_path: Path) -> None:
    """Rules in order: subnets as ip_network objects, geos sorted as octoDNS does, a catch-all."""
    zone, _ = load(tmp_path, ZONE)
    rules = dynamic(zone).rules
    assert rules == (
        Rule(
            "lan",
            (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")),
            (),
        ),
        Rule("eu", (), ("EU", "NA-US-CA")),
        Rule("rest"),
    )
    assert isinstance(rules[0].subnets[0], ipaddress.IPv4Network)
    assert isinstance(rules[0].subnets[1], ipaddress.IPv6Network)
    assert [rule.catch_all for rule in rules] == [False, False, True]


def test_record_values_are_kept_as_the_last_resort(tmp_path: Path) -> None:
    """The record's own values, TTL and type; every answerable value parsed once; file:line."""
    zone, _ = load(tmp_path, ZONE)
    record = dynamic(zone)
    assert record.values == ("192.0.2.1", "192.0.2.2")
    assert (record.name, record.rdtype, record.ttl) == (name("www"), A, 60)
    assert set(record.rdata) == {
        "192.0.2.1",
        "192.0.2.2",
        "192.0.2.10",
        "192.0.2.11",
        "192.0.2.12",
        "192.0.2.20",
        "192.0.2.30",
    }
    assert all(rdata.to_text() == value for value, rdata in record.rdata.items())
    assert (record.answers, record.sticky, record.sticky_prefix) == (1, False, StickyPrefix())
    assert record.label == "www.unit.tests. A"
    assert record.source == f"{tmp_path / ZONE_FILE}, line 5, column 3"
    # The static RRset is the same values: what a resolver gets when GSLB has nothing better.
    rrset = zone.nodes[name("www")][A]
    assert sorted(rd.to_text() for rd in rrset) == ["192.0.2.1", "192.0.2.2"]


def test_octodns_healthcheck_defaults(tmp_path: Path) -> None:
    """Without settings: HTTPS to port 443, path /_dns, host the record's name without the dot."""
    zone, _ = load(tmp_path, ZONE)
    [check] = {t.check for t in dynamic(zone).targets}
    assert (check.protocol, check.port, check.path, check.host) == (
        "HTTPS",
        443,
        "/_dns",
        "www.unit.tests",
    )
    assert (check.interval, check.timeout, check.rise, check.fall) == (10.0, 2.0, 2, 3)
    assert check.expect_status == frozenset(range(200, 400))
    assert (check.body, check.tls_verify) == (None, False)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            "{port: 5353, protocol: TCP}",
            HealthCheck(protocol="TCP", host="", path="", port=5353),
        ),
        (
            "{host: health.example.net, path: /healthz, port: 8080, protocol: HTTP}",
            HealthCheck(protocol="HTTP", host="health.example.net", path="/healthz", port=8080),
        ),
        (
            "{protocol: HTTPS}",
            HealthCheck(protocol="HTTPS", host="www.unit.tests", path="/_dns", port=443),
        ),
    ],
)
def test_octodns_healthcheck_settings(tmp_path: Path, settings: str, expected: HealthCheck) -> None:
    """octodns.healthcheck sets protocol, host, path and port; TCP has no host nor path."""
    source = ZONE.replace("  ttl: 60\n", f"  octodns:\n    healthcheck: {settings}\n  ttl: 60\n")
    zone, warnings = load(tmp_path, source)
    assert warnings == []
    assert {t.check for t in dynamic(zone).targets} == {expected}


def test_anycastedge_extension_fields(tmp_path: Path) -> None:
    """anycastedge.healthcheck and the answer options are read into the model."""
    extension = """\
  anycastedge:
    answers: 2
    healthcheck:
      body: ok
      expect_status: [200, "300-302"]
      fall: 4
      interval: 30
      rise: 3
      timeout: 5
      tls_verify: true
    sticky: true
    sticky_prefix: {ipv4: 16, ipv6: 48}
  dynamic:
"""
    zone, warnings = load(tmp_path, ZONE.replace("  dynamic:\n", extension))
    assert warnings == []
    record = dynamic(zone)
    expected = HealthCheck(
        protocol="HTTPS",
        host="www.unit.tests",
        path="/_dns",
        port=443,
        interval=30.0,
        timeout=5.0,
        rise=3,
        fall=4,
        expect_status=frozenset({200, 300, 301, 302}),
        body="ok",
        tls_verify=True,
    )
    assert {t.check for t in record.targets} == {expected}
    assert (record.answers, record.sticky, record.sticky_prefix) == (
        2,
        True,
        StickyPrefix(ipv4=16, ipv6=48),
    )


def test_healthcheck_addresses_redirect_the_probe(tmp_path: Path) -> None:
    """anycastedge.healthcheck.addresses: a value is checked at another address (IPv6 too)."""
    source = """
    '':
      type: NS
      values: [ns1.unit.tests., ns2.unit.tests.]
    www:
      - anycastedge:
          healthcheck:
            addresses:
              192.0.2.10: 198.51.100.10
        dynamic:
          pools:
            rest:
              values:
              - value: 192.0.2.10
              - value: 192.0.2.20
          rules:
          - pool: rest
        ttl: 60
        type: A
        value: 192.0.2.1
      - anycastedge:
          healthcheck:
            addresses:
              2001:0db8:0:0::10: 2001:DB8::99
        dynamic:
          pools:
            rest:
              values:
              - value: 2001:db8:0:0:0:0:0:10
          rules:
          - pool: rest
        ttl: 60
        type: AAAA
        value: 2001:db8::1
    """
    zone, warnings = load(tmp_path, source)
    assert warnings == []
    v4 = dynamic(zone).pools["rest"].values
    assert [(v.value, v.target) for v in v4] == [
        ("192.0.2.10", target("198.51.100.10")),
        ("192.0.2.20", target("192.0.2.20")),
    ]
    [v6] = dynamic(zone, "www", dns.rdatatype.AAAA).pools["rest"].values
    assert (v6.value, v6.target) == ("2001:db8::10", target("2001:db8::99"))


CNAME_ZONE = """
'':
  type: NS
  values: [ns1.unit.tests., ns2.unit.tests.]
www:
  anycastedge:
    healthcheck:
      addresses:
        a.example.net.: 192.0.2.10
  dynamic:
    pools:
      one:
        values:
        - value: a.example.net.
        - value: b.example.net.
        - status: up
          value: c.example.net.
    rules:
    - pool: one
  ttl: 60
  type: CNAME
  value: fallback.example.net.
"""


def test_cname_dynamic_record_loads(tmp_path: Path) -> None:
    """A dynamic CNAME: its pool values are names, its own value the last resort."""
    zone, _ = load(tmp_path, CNAME_ZONE)
    record = dynamic(zone, "www", dns.rdatatype.CNAME)
    assert record.values == ("fallback.example.net.",)
    assert [v.value for v in record.pools["one"].values] == [
        "a.example.net.",
        "b.example.net.",
        "c.example.net.",
    ]
    assert set(record.rdata) == {
        "fallback.example.net.",
        "a.example.net.",
        "b.example.net.",
        "c.example.net.",
    }
    assert record.rules == (Rule("one"),)


def test_cname_obey_values_are_checked_only_through_addresses(tmp_path: Path) -> None:
    """The checker follows no names: a CNAME value is checked at its addresses entry, else served
    unchecked with a warning on its line."""
    zone, warnings = load(tmp_path, CNAME_ZONE)
    record = dynamic(zone, "www", dns.rdatatype.CNAME)
    check = HealthCheck(host="www.unit.tests")
    assert [(v.value, v.target) for v in record.pools["one"].values] == [
        ("a.example.net.", target("192.0.2.10", check)),
        ("b.example.net.", None),
        ("c.example.net.", None),
    ]
    assert [(w.subject, w.message, w.location.line if w.location else 0) for w in warnings] == [
        (
            "www",
            "CNAME value b.example.net. has no anycastedge.healthcheck.addresses entry: "
            "served as up, unchecked",
            14,
        )
    ]


def test_dynamic_records_below_a_delegation_are_not_dynamic(tmp_path: Path) -> None:
    """A dynamic record under a zone cut is glue at most: only authoritative names use GSLB."""
    source = """
    '':
      type: NS
      values: [ns1.unit.tests., ns2.unit.tests.]
    sub:
      type: NS
      values: [ns1.example.net., ns2.example.net.]
    www:
      dynamic:
        pools:
          rest: {values: [{value: 192.0.2.10}]}
        rules:
        - pool: rest
      type: A
      value: 192.0.2.1
    www.sub:
      dynamic:
        pools:
          rest: {values: [{value: 192.0.2.10}]}
        rules:
        - pool: rest
      type: A
      value: 192.0.2.1
    """
    zone, warnings = load(tmp_path, source)
    assert set(zone.dynamic) == {(name("www"), A)}
    assert [(w.subject, w.message) for w in warnings] == [
        (
            "www.sub",
            "A is occluded by the delegation at sub.unit.tests.; served only as glue in referrals",
        )
    ]


def test_zone_dynamic_is_keyed_by_owner_name_and_type(tmp_path: Path) -> None:
    """Zone.dynamic maps (owner Name, rdtype int) to the record; static records are not in it."""
    zone, _ = load(tmp_path, ZONE + "static: {type: A, value: 192.0.2.99}\n")
    [(key, record)] = zone.dynamic.items()
    owner, rdtype = key
    assert isinstance(owner, dns.name.Name) and owner == name("www")
    assert isinstance(rdtype, int) and rdtype == A == 1
    assert record.name == owner


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("- geos: [NA-US-CA, EU]", "- geos: [NA-US-CA, EU, AS]"),
        ("{value: 192.0.2.10, weight: 3}", "{value: 192.0.2.10, weight: 4}"),
        ("fallback: rest", "fallback: lan"),
        ("  dynamic:\n", "  anycastedge: {answers: 2}\n  dynamic:\n"),
        ("  dynamic:\n", "  octodns: {healthcheck: {path: /up}}\n  dynamic:\n"),
    ],
)
def test_serial_grows_when_only_dynamic_settings_change(tmp_path: Path, old: str, new: str) -> None:
    """A change only to GSLB rules, pools or checks is new content: new digest, serial + 1."""
    assert old in ZONE
    first, _ = load(tmp_path, ZONE, T0)
    again, _ = build_zone(tmp_path / ZONE_FILE, SoaConfig(), previous=first)
    assert (again.digest, again.serial) == (first.digest, first.serial)
    (tmp_path / ZONE_FILE).write_text(text(ZONE.replace(old, new, 1)))
    os.utime(tmp_path / ZONE_FILE, (T0, T0))
    second, _ = build_zone(tmp_path / ZONE_FILE, SoaConfig(), previous=first)
    assert second.digest != first.digest
    assert second.serial == first.serial + 1
    assert second.nodes[name("www")][A] == first.nodes[name("www")][A]  # static data unchanged


# --- octoDNS's documentation examples --------------------------------------------------------


@pytest.fixture(scope="module")
def docs_zone() -> Zone:
    """tests/fixtures/dynamic/unit.tests.yaml, loaded the way `serve` loads a zones directory."""
    zones, warnings = load_zones([FIXTURES], SoaConfig())
    assert warnings == []
    return zones.zones[UNIT_TESTS]


def _docs_check(relative: str) -> HealthCheck:
    return HealthCheck(host=f"{relative}.unit.tests")


def test_docs_annotated_example_loads(docs_zone: Zone) -> None:
    """octoDNS's "An Annotated Example": pools with fallbacks and weights, geo rules, catch-all."""
    record = dynamic(docs_zone, "test")
    check = _docs_check("test")

    def obey(address: str, weight: int = 1) -> PoolValue:
        return PoolValue(address, weight, "obey", CheckTarget(address, check))

    assert record.pools == {
        "apac": Pool("apac", (obey("1.1.1.1"), obey("2.2.2.2")), "na"),
        "eu": Pool("eu", (obey("3.3.3.3", 2), obey("4.4.4.4", 3)), "na"),
        "na": Pool("na", (obey("5.5.5.5"), obey("6.6.6.6"), obey("7.7.7.7"))),
    }
    assert record.rules == (
        Rule("apac", (), ("AF-ZA", "AS", "OC")),
        Rule("eu", (), ("AF", "EU")),
        Rule("na"),
    )
    assert record.values == ("3.3.3.3", "4.4.4.4", "5.5.5.5", "6.6.6.6", "7.7.7.7")
    assert record.ttl == 60


def test_docs_subnets_example_loads(docs_zone: Zone) -> None:
    """The "Subnets" example: a rule with both geos and a subnet."""
    record = dynamic(docs_zone, "subnets")
    assert record.rules == (
        Rule("apac", (ipaddress.ip_network("5.149.176.0/24"),), ("AS", "OC")),
        Rule("na"),
    )
    assert set(record.pools) == {"apac", "na"}


def test_docs_status_example_loads(docs_zone: Zone) -> None:
    """The status flag example: down and up values are not checked, obey (the default) is."""
    record = dynamic(docs_zone, "status")
    address = "3.4.5.6"
    assert record.pools["na"].values == (
        PoolValue("1.2.3.4", 1, "down"),
        PoolValue("2.3.4.5", 1, "up"),
        PoolValue(address, 1, "obey", CheckTarget(address, _docs_check("status"))),
    )
    assert record.targets == {CheckTarget(address, _docs_check("status"))}


def test_docs_zone_dynamic_records(docs_zone: Zone) -> None:
    """The fixture's three dynamic records, and nothing else, are dynamic."""
    assert set(docs_zone.dynamic) == {(name(n), A) for n in ("test", "subnets", "status")}


def octodns_docs_records() -> dict[str, Any]:
    """The fixture as octoDNS's own YamlProvider loads it (sorted keys enforced, validated)."""
    provider = YamlProvider("docs", str(FIXTURES), escaped_semicolons=False)
    zone = OctoZone("unit.tests.", [])
    provider.populate(zone)
    return {record.name: record for record in zone.records}


def test_octodns_yamlprovider_accepts_the_docs_fixture() -> None:
    """octoDNS itself loads tests/fixtures/dynamic/unit.tests.yaml without errors."""
    records = octodns_docs_records()
    assert set(records) == {"", "test", "subnets", "status"}
    assert all(records[n].dynamic for n in ("test", "subnets", "status"))


def as_octodns(record: DynamicRecord) -> dict[str, Any]:
    """Our model in the shape of octoDNS's ``record.dynamic._data()`` (values sorted, as there)."""
    pools = {}
    for pool in record.pools.values():
        values = [{"value": v.value, "weight": v.weight, "status": v.status} for v in pool.values]
        pools[pool.name] = {
            "fallback": pool.fallback,
            "values": sorted(values, key=lambda v: str(v["value"])),
        }
    rules = []
    for rule in record.rules:
        data: dict[str, Any] = {"pool": rule.pool}
        if rule.geos:
            data["geos"] = sorted(rule.geos)
        if rule.subnets:
            data["subnets"] = sorted(str(s) for s in rule.subnets)
        rules.append(data)
    return {"pools": pools, "rules": rules}


def test_docs_fixture_model_agrees_with_octodns(docs_zone: Zone) -> None:
    """Pools (values, weights, status, fallback), rules and values are what octoDNS reads."""
    for relative, octo in octodns_docs_records().items():
        if not relative:
            continue
        record = dynamic(docs_zone, relative)
        assert as_octodns(record) == octo.dynamic._data(), relative
        assert list(record.values) == [str(v) for v in octo.values], relative


# --- octoDNS's own test zone ------------------------------------------------------------------


def test_interop_zone_loads_with_its_dynamic_records(octodns_unit_tests: Path) -> None:
    """octoDNS's unit.tests loads without errors; every record with `dynamic` is in Zone.dynamic."""
    zone, _warnings = build_zone(octodns_unit_tests, SoaConfig())
    expected = set()
    for relative, entry in (yaml.safe_load(octodns_unit_tests.read_text()) or {}).items():
        for record in entry if isinstance(entry, list) else [entry]:
            if "dynamic" in record and not (record.get("octodns") or {}).get("ignored"):
                rdtype = dns.rdatatype.from_text(record["type"])
                expected.add((name(relative), rdtype))
    assert set(zone.dynamic) == expected


# --- pop.yaml: the GSLB settings -------------------------------------------------------------


def pop_problems(tmp_path: Path, source: str) -> list[tuple[str, int]]:
    """(message, line) of every problem load_pop reports for ``source``, all in pop.yaml."""
    path = tmp_path / "pop.yaml"
    path.write_text(text(source))
    with pytest.raises(ConfigError) as caught:
        load_pop(path)
    for problem in caught.value.problems:
        assert problem.location is not None and problem.location.file == str(path)
        assert str(path) in str(caught.value)
    return [(p.message, p.location.line if p.location else 0) for p in caught.value.problems]


def test_pop_geo_networks_with_a_bad_geo_code(tmp_path: Path) -> None:
    """dns.geo.networks keyed by an unknown geo code: the key, octoDNS's reason, file:line."""
    source = """
    pop: ams1
    dns:
      geo:
        networks:
          EU-FR: [192.0.2.0/24]
          XX: [198.51.100.0/24]
    """
    assert pop_problems(tmp_path, source) == [('dns.geo.networks: unknown continent code "XX"', 4)]


@pytest.mark.parametrize(
    ("networks", "message"),
    [
        ("{NA-US-ZZ: [192.0.2.0/24]}", 'unknown province code "NA-US-ZZ"'),
        ("{EU-FR: 192.0.2.0/24}", "EU-FR: must be a list of CIDRs"),
        ("[EU-FR]", "must map geo codes to lists of CIDRs"),
    ],
)
def test_pop_geo_networks_shape(tmp_path: Path, networks: str, message: str) -> None:
    """dns.geo.networks must map valid geo codes to lists of CIDRs."""
    source = f"pop: ams1\ndns:\n  geo:\n    networks: {networks}\n"
    assert pop_problems(tmp_path, source) == [(f"dns.geo.networks: {message}", 4)]


def test_pop_geo_mmdb_missing_file(tmp_path: Path) -> None:
    """dns.geo.mmdb naming a file that does not exist: the key, the path, file:line."""
    source = "pop: ams1\ndns:\n  geo:\n    mmdb: missing.mmdb\n"
    [(message, line)] = pop_problems(tmp_path, source)
    missing = tmp_path.resolve() / "missing.mmdb"
    assert message.startswith(f"dns.geo.mmdb: cannot open MaxMind database {missing}: ")
    assert "No such file or directory" in message
    assert line == 4


@pytest.mark.parametrize("content", [b"", b"not a database\n", bytes(range(256)) * 64])
def test_pop_geo_mmdb_not_a_database(tmp_path: Path, content: bytes) -> None:
    """dns.geo.mmdb naming a file that is not a MaxMind database: said so, with file:line."""
    (tmp_path / "geo.mmdb").write_bytes(content)
    source = "pop: ams1\ndns:\n  geo:\n    mmdb: geo.mmdb\n"
    [(message, line)] = pop_problems(tmp_path, source)
    path = tmp_path.resolve() / "geo.mmdb"
    assert message.startswith(f"dns.geo.mmdb: {path} is not a MaxMind database: ")
    assert line == 4


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (
            "[192.0.2.0/24, 10.0.0.0/33]",
            "'10.0.0.0/33' does not appear to be an IPv4 or IPv6 network",
        ),
        ("[192.0.2.1/24]", "192.0.2.1/24 has host bits set"),
        ("127.0.0.0/8", "must be a list of CIDRs"),
    ],
)
def test_pop_check_networks_with_a_bad_cidr(tmp_path: Path, value: str, reason: str) -> None:
    """dns.check_networks must be a list of CIDRs: the key, the reason, file:line."""
    source = f"pop: ams1\ndns:\n  check_networks: {value}\n"
    assert pop_problems(tmp_path, source) == [(f"dns.check_networks: {reason}", 3)]


def test_pop_gslb_settings_are_read(tmp_path: Path) -> None:
    """Valid dns.geo.networks and dns.check_networks are kept, CIDRs normalised."""
    path = tmp_path / "pop.yaml"
    path.write_text(
        text(
            """
            pop: ams1
            dns:
              check_networks: [127.0.0.0/8, "::1/128"]
              geo:
                networks:
                  EU-FR: [192.0.2.0/24, "2001:DB8::/32"]
                  NA: [198.51.100.0/24]
            """
        )
    )
    config = load_pop(path)
    assert config.dns.check_networks == ("127.0.0.0/8", "::1/128")
    assert config.dns.geo.networks == (
        ("EU-FR", ("192.0.2.0/24", "2001:db8::/32")),
        ("NA", ("198.51.100.0/24",)),
    )
    assert config.dns.geo.mmdb is None


def test_weight_written_as_a_string_or_float_is_taken_as_octodns_takes_it(tmp_path: Path) -> None:
    """octoDNS reads weights with int(): "5" and 2.0 are 5 and 2, here as there."""
    zone, _ = load(
        tmp_path,
        """
        www:
          ttl: 60
          type: A
          value: 192.0.2.1
          dynamic:
            pools:
              rest:
                values:
                - {value: 192.0.2.10, weight: "5"}
                - {value: 192.0.2.11, weight: 2.0}
            rules:
            - pool: rest
        """,
    )
    assert [v.weight for v in dynamic(zone).pools["rest"].values] == [5, 2]
