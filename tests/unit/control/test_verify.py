"""`pop verify`'s pure part: the questions sampled from a zone, replies as summaries, the
differences between POPs, and the report; no sockets (``probe_pops.ask_all`` gets a fake asker)."""

from __future__ import annotations

import json
from pathlib import Path

import dns.edns
import dns.message
import dns.name
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anycastedge.cli import main
from anycastedge.config.pop import SoaConfig
from anycastedge.config.zones import load_zones
from anycastedge.control.probe_pops import ask_all
from anycastedge.control.verify import (
    AnycastResult,
    Pop,
    Question,
    Record,
    Report,
    Summary,
    ZonePlan,
    anycast_result,
    compare,
    dig_commands,
    failed,
    parse_pop,
    plan_named_zone,
    plan_zone,
    render_text,
    report_json,
    summarize,
)
from anycastedge.dns.zone import Zone

REPO_ZONES = Path(__file__).resolve().parents[3] / "zones"
ENGINE_ZONE = Path(__file__).resolve().parents[2] / "fixtures" / "zones" / "engine.test.yaml"
ZONE = "example.net."
SOA_Q = Question(ZONE, "SOA")
WWW_A = Question("www.example.net.", "A")
PLAN = ZonePlan(ZONE, (SOA_Q, WWW_A), 2, 0)
POPS = (Pop("ams1", "192.0.2.1"), Pop("sjc1", "192.0.2.2"), Pop("sin1", "192.0.2.3"))
SOA_DATA = "ns.example.net. hostmaster.example.net. * 7200 3600 1209600 300"


def _zone(path: Path, name: str) -> Zone:
    zones, _ = load_zones([path], SoaConfig())
    return zones.zones[dns.name.from_text(name)]


def soa(serial: int) -> Summary:
    """The SOA answer of a POP serving ``serial``."""
    record = Record(ZONE, "SOA", 3600, SOA_DATA)
    return Summary(aa=True, answer=(record,), serial=serial)


def a_answer(*addresses: str, ttl: int = 3600) -> Summary:
    """An authoritative answer of A records for www.example.net."""
    records = tuple(sorted(Record(WWW_A.qname, "A", ttl, a) for a in addresses))
    return Summary(aa=True, answer=records)


def answers_of(**by_pop: tuple[Summary, Summary]) -> dict[tuple[str, Question], Summary]:
    """(SOA summary, www A summary) per POP, as ``ask_all`` returns them."""
    out: dict[tuple[str, Question], Summary] = {}
    for pop, (soa_summary, www) in by_pop.items():
        out[(pop, SOA_Q)] = soa_summary
        out[(pop, WWW_A)] = www
    return out


# Sampling ---------------------------------------------------------------------------------------


def test_sample_is_deterministic_starts_with_the_soa_and_skips_dynamic_records() -> None:
    """The same zone gives the same questions; the apex SOA first; the GSLB `cdn` never asked."""
    zone = _zone(REPO_ZONES, "example.com.")
    plan = plan_zone(zone, 20)
    assert plan == plan_zone(_zone(REPO_ZONES, "example.com."), 20)
    assert plan.questions[0] == Question("example.com.", "SOA")
    assert plan.skipped_dynamic == 1
    asked = {q.qname for q in plan.questions}
    assert "cdn.example.com." not in asked
    assert {"example.com.", "www.example.com.", "sub.example.com."} <= asked
    # Every type the zone has at the apex, and the delegation's NS and DS (a referral, an answer).
    apex_types = {q.qtype for q in plan.questions if q.qname == "example.com."}
    assert apex_types == {"SOA", "NS", "A", "AAAA", "MX", "TXT", "CAA", "HTTPS"}
    assert {q.qtype for q in plan.questions if q.qname == "sub.example.com."} == {"NS", "DS"}
    # Glue below the cut is not the zone's data: never asked.
    assert "ns1.sub.example.com." not in asked
    assert plan.names == len({q.qname for q in plan.questions})


def test_wildcard_owners_are_asked_through_a_fixed_label() -> None:
    """`*.apps` is asked as `anycastedge-verify.apps`, never as the literal `*`."""
    plan = plan_zone(_zone(REPO_ZONES, "example.com."), 100)
    assert Question("anycastedge-verify.apps.example.com.", "A") in plan.questions
    assert not any(q.qname.startswith("*") for q in plan.questions)


@pytest.mark.parametrize("sample", [1, 2, 5, 10])
def test_the_sample_is_bounded_and_a_prefix_of_a_larger_one(sample: int) -> None:
    """Up to N names, the apex always; a larger sample keeps the names of a smaller one."""
    zone = _zone(ENGINE_ZONE, "engine.test.")
    plan = plan_zone(zone, sample)
    larger = plan_zone(zone, sample + 5)
    names = {q.qname for q in plan.questions}
    assert plan.names == len(names) == sample  # engine.test has more names than that
    assert "engine.test." in names
    assert names <= {q.qname for q in larger.questions}


def test_a_zone_known_by_name_is_asked_its_soa_only() -> None:
    plan = plan_named_zone("Example.ORG")
    assert plan.questions == (Question("example.org.", "SOA"),) and plan.names == 1


# Summaries --------------------------------------------------------------------------------------


def test_summary_of_a_reply_leaves_the_serial_out_of_the_compared_data() -> None:
    """Two SOA replies that differ only in the serial compare equal; the serial is kept apart."""

    def reply(serial: int) -> dns.message.Message:
        return dns.message.from_text(
            "id 1\nopcode QUERY\nrcode NOERROR\nflags QR AA\n;QUESTION\nexample.net. IN SOA\n"
            f";ANSWER\nExample.NET. 3600 IN SOA ns.example.net. hostmaster.example.net. {serial} "
            "7200 3600 1209600 300\n"
        )

    old, new = summarize(reply(1)), summarize(reply(2))
    assert old.key == new.key and (old.serial, new.serial) == (1, 2)
    assert old.answer == (Record(ZONE, "SOA", 3600, SOA_DATA),) and old.aa


def test_summary_of_a_referral_keeps_the_authority_and_refused_is_no_answer() -> None:
    referral = dns.message.from_text(
        "id 1\nopcode QUERY\nrcode NOERROR\nflags QR\n;QUESTION\nsub.example.com. IN NS\n"
        ";AUTHORITY\nsub.example.com. 3600 IN NS ns1.sub.example.com.\n"
    )
    summary = summarize(referral)
    assert not summary.aa and summary.answer == ()
    assert summary.authority == (Record("sub.example.com.", "NS", 3600, "ns1.sub.example.com."),)
    refused = dns.message.from_text(
        "id 1\nopcode QUERY\nrcode REFUSED\nflags QR\n;QUESTION\nexample.org. IN SOA\n"
    )
    assert summarize(refused).failure == "REFUSED"


def test_anycast_reply_names_the_pop_from_nsid() -> None:
    query = dns.message.make_query("example.net.", "SOA", use_edns=0)
    reply = dns.message.make_response(query)
    reply.use_edns(0, options=[dns.edns.GenericOption(dns.edns.OptionType.NSID, b"ams1")])
    reply = dns.message.from_wire(reply.to_wire())
    assert anycast_result("192.0.2.53", 53, reply) == AnycastResult("192.0.2.53", 53, "ams1")


# Comparison -------------------------------------------------------------------------------------


def test_agreement_gives_no_differences() -> None:
    answers = answers_of(
        ams1=(soa(5), a_answer("192.0.2.101")),
        sjc1=(soa(5), a_answer("192.0.2.101")),
    )
    zones, differences = compare([PLAN], answers)
    assert differences == ()
    assert zones[0].serials == (("ams1", 5), ("sjc1", 5)) and zones[0].differences == 0


def test_an_older_serial_names_the_pop_zone_and_the_newest() -> None:
    answers = answers_of(
        ams1=(soa(7), a_answer("192.0.2.101")),
        sjc1=(soa(7), a_answer("192.0.2.101")),
        sin1=(soa(6), a_answer("192.0.2.101")),
    )
    _, differences = compare([PLAN], answers)
    (d,) = differences
    assert (d.pop, d.zone, d.question) == ("sin1", ZONE, SOA_Q)
    assert d.detail == "older serial 6 < 7 (newest: ams1, sjc1)"


def test_a_differing_answer_is_shown_against_the_majority() -> None:
    answers = answers_of(
        ams1=(soa(7), a_answer("192.0.2.101")),
        sjc1=(soa(7), a_answer("192.0.2.101")),
        sin1=(soa(7), a_answer("192.0.2.199")),
    )
    _, differences = compare([PLAN], answers)
    (d,) = differences
    assert (d.pop, d.zone, d.question) == ("sin1", ZONE, WWW_A)
    assert d.detail == "A 192.0.2.199 vs 192.0.2.101 on 2 other POPs"
    assert d.others == ("ams1", "sjc1")


def test_a_ttl_only_difference_says_ttl() -> None:
    answers = answers_of(
        ams1=(soa(7), a_answer("192.0.2.101", ttl=300)),
        sjc1=(soa(7), a_answer("192.0.2.101")),
        sin1=(soa(7), a_answer("192.0.2.101")),
    )
    (d,) = compare([PLAN], answers)[1]
    assert d.pop == "ams1" and d.detail == "A TTL 300 vs 3600 on 2 other POPs"


def test_a_missing_answer_is_a_difference_even_for_the_only_other_pop() -> None:
    answers = answers_of(
        ams1=(soa(7), a_answer("192.0.2.101")),
        sjc1=(failed("timeout"), failed("timeout")),
    )
    answers[("sin1", SOA_Q)] = summarize(
        dns.message.from_text(
            "id 1\nopcode QUERY\nrcode REFUSED\nflags QR\n;QUESTION\nexample.net. IN SOA\n"
        )
    )
    zones, differences = compare([PLAN], answers)
    got = {(d.pop, d.question, d.detail) for d in differences}
    assert got == {
        ("sjc1", SOA_Q, "no answer: timeout"),
        ("sjc1", WWW_A, "no answer: timeout"),
        ("sin1", SOA_Q, "no answer: REFUSED"),
    }
    assert dict(zones[0].serials) == {"ams1": 7, "sjc1": None, "sin1": None}


def test_two_pops_that_differ_are_both_shown_without_a_majority() -> None:
    answers = answers_of(
        ams1=(soa(7), a_answer("192.0.2.101")),
        sjc1=(soa(7), a_answer("192.0.2.199")),
    )
    _, differences = compare([PLAN], answers)
    assert [(d.pop, d.detail) for d in differences] == [
        ("ams1", "A 192.0.2.101 vs 192.0.2.199 on 1 other POP (no majority)"),
        ("sjc1", "A 192.0.2.199 vs 192.0.2.101 on 1 other POP (no majority)"),
    ]


SUMMARIES = st.sampled_from(
    [a_answer("192.0.2.101"), a_answer("192.0.2.199"), a_answer("192.0.2.101", ttl=60)]
    + [failed("timeout"), Summary(rcode="NXDOMAIN", aa=True)]
)


@settings(max_examples=200)
@given(
    by_pop=st.dictionaries(
        st.sampled_from(["ams1", "sjc1", "sin1", "fra1", "gru1"]),
        st.tuples(st.sampled_from([soa(5), soa(6), failed("timeout")]), SUMMARIES),
        min_size=1,
    ),
    data=st.data(),
)
def test_the_order_pops_are_given_in_changes_nothing(
    by_pop: dict[str, tuple[Summary, Summary]], data: st.DataObject
) -> None:
    """Any permutation of the POPs gives the same differences; a unique majority is never shown;
    every POP that gave the only answer agrees."""
    order = data.draw(st.permutations(sorted(by_pop)))
    shuffled = answers_of(**{pop: by_pop[pop] for pop in order})
    expected = compare([PLAN], answers_of(**dict(sorted(by_pop.items()))))
    assert compare([PLAN], shuffled) == expected
    www = [s for _, s in by_pop.values() if not s.failure]
    flagged = {d.pop for d in expected[1] if d.question == WWW_A}
    if len({s.key for s in www}) <= 1:
        assert flagged == {pop for pop, (_, s) in by_pop.items() if s.failure}


# Rendering --------------------------------------------------------------------------------------


def _drift_report() -> Report:
    answers = answers_of(
        ams1=(soa(7), a_answer("192.0.2.101")),
        sjc1=(soa(7), a_answer("192.0.2.101")),
        sin1=(soa(6), a_answer("192.0.2.199")),
    )
    zones, differences = compare([PLAN], answers)
    return Report(POPS, zones, differences, (AnycastResult("192.0.2.53", 53, "sjc1", 7),))


def test_the_table_names_pop_zone_question_and_detail_and_the_dig_commands() -> None:
    report = _drift_report()
    text = render_text(report)
    assert report.exit_code == 1
    rows = [line.split() for line in text.splitlines()]
    assert ["POP", "zone", "question", "what", "differs"] in rows
    assert "sin1  example.net  example.net SOA    older serial 6 < 7 (newest: ams1, sjc1)" in text
    assert "sin1  example.net  www.example.net A  A 192.0.2.199 vs 192.0.2.101 on 2" in text
    assert "dig @192.0.2.3 -p 53 www.example.net A +norec  # sin1" in text
    assert "dig @192.0.2.1 -p 53 www.example.net A +norec  # ams1" in text  # the other side
    assert "anycast 192.0.2.53:53: answered by POP sjc1 (NSID), serial 7" in text
    commands = dig_commands(report)
    assert [q for q, _ in commands] == [SOA_Q, WWW_A]


def test_agreement_renders_one_line_per_zone_and_exits_0() -> None:
    answers = answers_of(
        ams1=(soa(7), a_answer("192.0.2.101")), sjc1=(soa(7), a_answer("192.0.2.101"))
    )
    zones, differences = compare([PLAN], answers)
    report = Report(POPS[:2], zones, differences)
    assert report.exit_code == 0
    assert render_text(report) == "example.net  serial 7  2 POPs agree, 2 names compared"


def test_json_has_zones_serials_differences_and_anycast() -> None:
    document = json.loads(json.dumps(report_json(_drift_report())))
    assert document["ok"] is False and document["exit_code"] == 1
    assert document["zones"][0]["serials"] == {"ams1": 7, "sin1": 6, "sjc1": 7}
    assert document["zones"][0]["newest_serial"] == 7
    first = document["differences"][0]
    assert first == {
        "pop": "sin1",
        "zone": ZONE,
        "question": {"name": ZONE, "type": "SOA"},
        "detail": "older serial 6 < 7 (newest: ams1, sjc1)",
        "compared_with": ["ams1", "sjc1"],
        "dig": "dig @192.0.2.3 -p 53 example.net SOA +norec",
    }
    assert document["anycast"] == [
        {"host": "192.0.2.53", "port": 53, "nsid": "sjc1", "serial": 7, "error": None}
    ]


def test_an_anycast_address_without_answer_fails_the_run() -> None:
    report = Report(POPS[:1], (), (), (AnycastResult("192.0.2.53", 53, failure="timeout"),))
    assert report.exit_code == 1
    assert "anycast 192.0.2.53:53: no answer: timeout" in render_text(report)


# Arguments and the asking order -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "pop"),
    [
        ("ams1=192.0.2.1", Pop("ams1", "192.0.2.1", 53)),
        ("ams1=192.0.2.1:5300", Pop("ams1", "192.0.2.1", 5300)),
        ("ams1=[2001:db8::1]:5300", Pop("ams1", "2001:db8::1", 5300)),
        ("ams1=[2001:db8::1]", Pop("ams1", "2001:db8::1", 53)),
        ("ams1=2001:db8::1", Pop("ams1", "2001:db8::1", 53)),
    ],
)
def test_parse_pop(text: str, pop: Pop) -> None:
    assert parse_pop(text) == pop


@pytest.mark.parametrize("text", ["192.0.2.1", "=192.0.2.1", "a=ns1.example.com", "a=1.2.3.4:0"])
def test_parse_pop_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_pop(text)


def test_a_pop_without_a_zones_soa_is_not_asked_the_rest_of_that_zone() -> None:
    """Its SOA row already says it does not serve the zone; other POPs are asked everything."""
    other = ZonePlan("example.com.", (Question("example.com.", "SOA"),), 1, 0)
    asked: list[tuple[str, Question]] = []

    def asker(pop: Pop, question: Question) -> Summary:
        asked.append((pop.name, question))
        if pop.name == "sin1" and question.qname.endswith(ZONE):
            return failed("timeout")
        return soa(7)

    answers = ask_all(POPS, [PLAN, other], asker, parallel=2)
    assert sorted(answers) == sorted(asked)
    assert ("sin1", SOA_Q) in answers and ("sin1", WWW_A) not in answers
    assert ("sin1", other.soa) in answers
    assert ("ams1", WWW_A) in answers and ("sjc1", WWW_A) in answers


# The command's usage errors (exit 2) and zone files that do not load (exit 1): nothing is asked.

BAD_ZONES = Path(__file__).resolve().parents[2] / "fixtures" / "bad-zones"


@pytest.mark.parametrize(
    "argv",
    [
        [],  # --pop is required
        ["--pop", "ams1"],
        ["--pop", "ams1=ns1.example.com"],
        ["--pop", "ams1=192.0.2.1", "--sample", "0"],
        ["--pop", "ams1=192.0.2.1", "--timeout", "-1"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["pop", "verify", *argv])
    assert exc.value.code == 2
    assert "pop verify" in capsys.readouterr().err


def test_two_pops_of_one_name_and_nothing_to_verify_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no zones/ here
    twice = ["--pop", "ams1=192.0.2.1", "--pop", "ams1=192.0.2.2", "--zone", "example.net"]
    assert main(["pop", "verify", *twice]) == 2
    assert "--pop names must differ" in capsys.readouterr().err
    assert main(["pop", "verify", "--pop", "ams1=192.0.2.1"]) == 2
    assert "nothing to verify" in capsys.readouterr().err


def test_zone_files_that_do_not_load_exit_1_with_the_problems(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["pop", "verify", "--pop", "ams1=192.0.2.1", "--zones", str(BAD_ZONES)]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert 'invalid IPv4 address "192.0.2.300"' in out and "nothing was asked" in out
