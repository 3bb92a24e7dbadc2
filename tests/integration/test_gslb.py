"""GSLB end to end: `anycastedge serve` answering dynamic records to real dig and dnspython.

Every health-checked value is a loopback address with a real HTTP endpoint the test switches; ECS
subnets are documentation prefixes (they name clients, nothing is sent to them).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.rcode
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from tests.support.backends import Backend, serving
from tests.support.procs import free_port
from tests.support.server import (
    HOST,
    LOOPBACK_NETWORKS,
    ServerHandle,
    metric_value,
    running_server,
    wait_for,
)

ZONE = "gslb.test"
DIG = shutil.which("dig")


def zone_yaml(check_port: int, extra: str = "") -> str:
    return f"""---
'':
  - type: NS
    values: [ns1.{ZONE}.]
ns1:
  type: A
  value: 127.0.0.1
static:
  type: A
  value: 127.0.0.1
www:
  type: A
  ttl: 30
  values: [127.0.0.99]
  octodns:
    healthcheck: {{protocol: HTTP, port: {check_port}, path: /health, host: www.{ZONE}}}
  anycastedge:
    healthcheck: {{interval: 0.5, timeout: 0.4, rise: 2, fall: 2}}
  dynamic:
    pools:
      lab:
        values:
          - value: 127.0.0.31
            status: up
      eu:
        fallback: na
        values:
          - value: 127.0.0.11
      na:
        values:
          - value: 127.0.0.12
      asia:
        fallback: na
        values:
          - value: 127.0.0.13
            status: down
    rules:
      - subnets: [198.51.100.128/25]
        pool: lab
      - geos: [EU]
        pool: eu
      - geos: [AS]
        pool: asia
      - pool: na
{extra}"""


def pop_yaml(directory: Path, geo: dict[str, Any]) -> Path:
    path = directory / "pop.yaml"
    dns_settings = {"check_networks": LOOPBACK_NETWORKS, "geo": geo}
    path.write_text(
        json.dumps({"pop": "gslb-pop", "state_dir": str(directory / "state"), "dns": dns_settings})
    )
    return path


@pytest.fixture
def endpoints() -> Iterator[dict[str, Backend]]:
    """HTTP health endpoints on 127.0.0.11 and .12, one port, answering 200 until switched."""
    port = free_port(HOST)
    with (
        serving("127.0.0.11", Backend(), port=port) as eu,
        serving("127.0.0.12", Backend(), port=port) as na,
    ):
        yield {"eu": eu, "na": na}


@pytest.fixture
def server(tmp_path: Path, endpoints: dict[str, Backend]) -> Iterator[ServerHandle]:
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / f"{ZONE}.yaml").write_text(zone_yaml(endpoints["eu"].port))
    config = pop_yaml(
        tmp_path, {"networks": {"EU": ["192.0.2.0/25"], "AS": ["203.0.113.0/24", "2001:db8::/32"]}}
    )
    with running_server(zones, config=config) as handle:
        yield handle


def ask(
    handle: ServerHandle, subnet: str | None, qname: str = f"www.{ZONE}"
) -> dns.message.Message:
    options = [dns.edns.ECSOption.from_text(subnet)] if subnet else []
    return handle.query(qname, "A", use_edns=0, options=options)


def addresses(reply: dns.message.Message) -> list[str]:
    return sorted(rdata.to_text() for rrset in reply.answer for rdata in rrset)


def scope_of(reply: dns.message.Message) -> tuple[str, int] | None:
    for option in reply.options:
        if isinstance(option, dns.edns.ECSOption):
            return f"{option.address}/{option.srclen}", option.scopelen
    return None


def dig(handle: ServerHandle, *args: str) -> str:
    assert DIG is not None
    run = subprocess.run(
        [DIG, f"@{HOST}", "-p", str(handle.dns_port), "+time=2", "+tries=1", *args],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    return run.stdout


@pytest.mark.skipif(DIG is None, reason="dig (bind9-dnsutils) not installed")
@pytest.mark.parametrize(
    ("subnet", "answer", "scope"),
    [
        ("192.0.2.0/25", "127.0.0.11", 25),  # EU network in pop.yaml
        ("192.0.2.64/26", "127.0.0.11", 25),
        ("192.0.2.128/25", "127.0.0.12", 25),  # next door to EU: catch-all
        ("198.51.100.128/25", "127.0.0.31", 25),  # subnet rule, status up
        ("198.51.100.0/24", "127.0.0.12", 24),  # straddles the lab /25: the source prefix caps it
        ("203.0.113.0/24", "127.0.0.12", 24),  # AS pool is down: fallback na
        ("2001:db8:1::/48", "127.0.0.12", 32),  # AS by an IPv6 network, fallback na
        ("100.64.0.0/10", "127.0.0.12", 1),  # no network in 0/1: one answer for half the space
    ],
)
def test_dig_subnet_lands_in_the_right_pool_with_the_right_scope(
    server: ServerHandle, subnet: str, answer: str, scope: int
) -> None:
    """`dig +subnet=` answers from the rule's pool and echoes ECS with the scope it holds for."""
    out = dig(server, f"+subnet={subnet}", f"www.{ZONE}", "A", "+noall", "+answer", "+comments")
    assert f"www.{ZONE}.\t\t30\tIN\tA\t{answer}" in out.replace("  ", "\t")
    assert f"CLIENT-SUBNET: {subnet}/{scope}" in out
    assert "flags: qr aa" in out


def test_static_answers_echo_ecs_with_scope_zero(server: ServerHandle) -> None:
    """A name that does not depend on the client says so: scope 0 (RFC 7871 7.2.1)."""
    reply = ask(server, "192.0.2.0/24", f"static.{ZONE}")
    assert addresses(reply) == ["127.0.0.1"]
    assert scope_of(reply) == ("192.0.2.0/24", 0)


def test_without_ecs_the_source_address_decides(server: ServerHandle) -> None:
    """No ECS: the client is the query's source (127.0.0.1: the catch-all) and no ECS comes back."""
    reply = ask(server, None)
    assert addresses(reply) == ["127.0.0.12"]
    assert scope_of(reply) is None


def test_malformed_ecs_is_formerr(server: ServerHandle) -> None:
    """An ECS option whose address has bits past the source prefix is rejected (RFC 7871 s6)."""
    option = dns.edns.GenericOption(dns.edns.OptionType.ECS, bytes((0, 1, 24, 0, 192, 0, 2, 7)))
    reply = server.query(f"www.{ZONE}", "A", use_edns=0, options=[option])
    assert reply.rcode() == dns.rcode.FORMERR


def wait_answer(handle: ServerHandle, subnet: str, want: str, what: str) -> None:
    wait_for(lambda: addresses(ask(handle, subnet)) == [want], 20, what, interval=0.05)


def check_results(handle: ServerHandle, value: str) -> int:
    """How many results the monitor recorded for the check of ``value`` (from /status)."""
    for record in handle.status()["gslb"]:
        for pool in record["pools"].values():
            for item in pool["values"]:
                if item["value"] == value and item["check"]:
                    return int(item["check"]["checks"])
    return -1


def test_health_changes_move_answers_after_fall_and_rise(
    server: ServerHandle, endpoints: dict[str, Backend]
) -> None:
    """eu goes down: after `fall` failed checks EU clients get the fallback; back after `rise`."""
    wait_answer(server, "192.0.2.0/25", "127.0.0.11", "eu healthy")
    # The first result decides at once (docs/gslb.md); rise and fall count from there.
    wait_for(lambda: check_results(server, "127.0.0.11") > 0, 20, "eu's first check")
    # Counted before the switch: every result after it can only be a later probe's.
    before = check_results(server, "127.0.0.11")
    endpoints["eu"].status = 503
    wait_answer(server, "192.0.2.0/25", "127.0.0.12", "eu failing over to na")
    # fall is 2: the switch cannot come before two failed checks were recorded.
    assert check_results(server, "127.0.0.11") >= before + 2
    status = server.status()["gslb"][0]["pools"]["eu"]["values"][0]
    assert status["up"] is False and status["check"]["last_detail"] == "status 503"
    assert (
        metric_value(
            server.metrics(), "anycastedge_gslb_value_up", record=f"www.{ZONE}", pool="eu"
        )
        == 0
    )

    before = check_results(server, "127.0.0.11")
    endpoints["eu"].status = 200
    wait_answer(server, "192.0.2.0/25", "127.0.0.11", "eu back")
    assert check_results(server, "127.0.0.11") >= before + 2  # rise is 2


def test_all_down_answers_the_record_values(
    server: ServerHandle, endpoints: dict[str, Backend]
) -> None:
    """Every pool of the chain down: the record's own values answer, counted as pool 'values'."""
    endpoints["eu"].status = 500
    endpoints["na"].status = 500
    wait_answer(server, "192.0.2.0/25", "127.0.0.99", "everything down")
    assert addresses(ask(server, "10.0.0.0/8")) == ["127.0.0.99"]
    text = server.metrics()
    assert (
        metric_value(
            text, "anycastedge_gslb_answers_total", record=f"www.{ZONE}", type="A", pool="values"
        )
        >= 2
    )


def test_status_and_metrics_list_pools_and_value_health(server: ServerHandle) -> None:
    """/status shows rules, pools, each value's status and last check; /metrics counts per pool."""
    wait_for(lambda: check_results(server, "127.0.0.12") > 0, 20, "a first check result")
    ask(server, "192.0.2.0/25")
    record = server.status()["gslb"][0]
    assert record["record"] == f"www.{ZONE}." and record["type"] == "A"
    assert [r["pool"] for r in record["rules"]] == ["lab", "eu", "asia", "na"]
    na = record["pools"]["na"]["values"][0]
    assert na["value"] == "127.0.0.12" and na["status"] == "obey"
    assert na["check"]["target"].startswith("http://127.0.0.12:")
    assert na["check"]["last_ok"] is True and na["check"]["last_detail"] == "status 200"
    assert record["pools"]["lab"]["values"][0]["check"] is None  # status up: never checked
    assert record["pools"]["asia"]["values"][0]["up"] is False  # status down
    text = server.metrics()
    assert (
        metric_value(
            text, "anycastedge_gslb_answers_total", record=f"www.{ZONE}", type="A", pool="eu"
        )
        >= 1
    )
    assert metric_value(text, "anycastedge_gslb_value_up", pool="lab", value="127.0.0.31") == 1


def test_endpoints_receive_checks_with_the_configured_host_and_path(
    server: ServerHandle, endpoints: dict[str, Backend]
) -> None:
    """Checks start at load, without any query, and send octodns.healthcheck's path and host."""
    wait_for(lambda: endpoints["na"].requests, 20, "a health check request")
    assert endpoints["na"].requests[0] == ("/health", f"www.{ZONE}")


def test_reload_without_the_record_stops_its_checks(
    tmp_path: Path, server: ServerHandle, endpoints: dict[str, Backend]
) -> None:
    """A record removed on reload stops being checked; /status no longer lists it."""
    wait_for(lambda: endpoints["eu"].requests, 20, "checks running")
    zone = tmp_path / "zones" / f"{ZONE}.yaml"
    # Only na stays checked (by another record): its checks are the clock of this test.
    zone.write_text(
        zone_yaml(endpoints["na"].port).split("www:")[0]
        + f"""keep:
  type: A
  values: [127.0.0.99]
  octodns:
    healthcheck: {{protocol: HTTP, port: {endpoints["na"].port}, path: /health}}
  anycastedge:
    healthcheck: {{interval: 0.5, timeout: 0.4}}
  dynamic:
    pools:
      na: {{values: [{{value: 127.0.0.12}}]}}
    rules:
      - pool: na
"""
    )
    server.sighup()
    wait_for(lambda: check_results(server, "127.0.0.11") == -1, 20, "the reload")
    assert [r["record"] for r in server.status()["gslb"]] == [f"keep.{ZONE}."]
    # A check already in flight may still land; after that nothing more arrives, while na's
    # checks (three more: over two intervals) show time passing.
    settled = len(endpoints["eu"].requests)
    seen = len(endpoints["na"].requests)
    wait_for(lambda: len(endpoints["na"].requests) >= seen + 3, 20, "na checked on")
    assert ask(server, "192.0.2.0/25").rcode() == dns.rcode.NXDOMAIN
    assert len(endpoints["eu"].requests) <= settled + 1


@pytest.fixture
def mmdb(tmp_path: Path) -> Path:
    """A GeoIP2-City-shaped database written here: 192.0.2.0/24 in Germany, 2001:db8::/32 in CA."""
    writer = MMDBWriter(ip_version=6, database_type="GeoIP2-City", ipv4_compatible=True)
    writer.insert_network(
        IPSet(["192.0.2.0/24"]),
        {"continent": {"code": "EU"}, "country": {"iso_code": "DE"}},
    )
    writer.insert_network(
        IPSet(["2001:db8::/32"]),
        {
            "continent": {"code": "NA"},
            "country": {"iso_code": "US"},
            "subdivisions": [{"iso_code": "CA"}],
        },
    )
    path = tmp_path / "geo.mmdb"
    writer.to_db_file(str(path))
    return path


def test_maxmind_database_drives_geo_rules(tmp_path: Path, mmdb: Path) -> None:
    """Geo rules follow a MaxMind database: country and subdivision codes as octoDNS writes them."""
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / f"{ZONE}.yaml").write_text(
        f"""---
'':
  - type: NS
    values: [ns1.{ZONE}.]
ns1:
  type: A
  value: 127.0.0.1
geo:
  type: A
  values: [127.0.0.99]
  dynamic:
    pools:
      de: {{values: [{{value: 127.0.0.41, status: up}}]}}
      ca: {{values: [{{value: 127.0.0.51, status: up}}]}}
      rest: {{values: [{{value: 127.0.0.61, status: up}}]}}
    rules:
      - geos: [NA-US-CA]
        pool: ca
      - geos: [EU-DE]
        pool: de
      - pool: rest
"""
    )
    config = pop_yaml(tmp_path, {"mmdb": str(mmdb)})
    with running_server(zones, config=config) as handle:
        de = ask(handle, "192.0.2.0/24", f"geo.{ZONE}")
        assert addresses(de) == ["127.0.0.41"] and scope_of(de) == ("192.0.2.0/24", 24)
        ca = ask(handle, "2001:db8:5::/48", f"geo.{ZONE}")
        assert addresses(ca) == ["127.0.0.51"] and scope_of(ca) == ("2001:db8:5::/48", 32)
        other = ask(handle, "198.51.100.0/24", f"geo.{ZONE}")
        assert addresses(other) == ["127.0.0.61"]
        assert 0 < scope_of(other)[1] <= 24  # type: ignore[index]
