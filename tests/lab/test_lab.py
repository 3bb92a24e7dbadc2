"""The anycast lab end to end: a BIRD router, two POPs (serve, ExaBGP, the hook), two clients
and the backends in network namespaces. Each scenario is measured from the clients with bounded
probes (docs/lab.md); the lab is removed in teardown whatever happened."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from anycastedge.lab import scenarios
from anycastedge.lab.measure import Result
from anycastedge.lab.report import table
from anycastedge.lab.runner import Lab, lab_namespaces


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """`lab up` once for the module; `lab down` after it, even after a failure."""
    lab = Lab()
    try:
        lab.up()
        yield lab
    finally:
        lab.down()
        assert lab_namespaces() == [], "lab down left namespaces behind"


def _ok(*results: Result) -> None:
    print("\n" + table(results))
    for result in results:
        assert result.ok, f"{result.name}: {result.failures}\n{table(results)}"


def test_status_shows_the_preferred_pop_and_each_hook(lab: Lab) -> None:
    """`lab status --json`: the router prefers pop1 (lower MED), both hooks UP and announced."""
    out = subprocess.run(
        [sys.executable, "-m", "anycastedge", "lab", "status", "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["preferred"] == "pop1" and status["routes"] == ["pop1", "pop2"]
    for pop in ("pop1", "pop2"):
        assert status["pops"][pop]["hook"] == "UP"
        assert status["pops"][pop]["prefixes"] == {"203.0.113.53/32": "announced"}


def test_each_client_reaches_the_preferred_pop_and_gslb_follows_its_network(lab: Lab) -> None:
    """dig +nsid from both clients names pop1; cdn.example.com answers by the client's
    network (eu pool for client1, na pool for client2) and by ECS."""
    lab.wait_steady()
    _ok(scenarios.first_answers(lab))


def test_planned_maintenance_moves_traffic_and_announce_brings_it_back_without_loss(
    lab: Lab,
) -> None:
    """`pop withdraw` on pop1 under 200 qps of DNS and 20 HTTP requests a second: both move to
    pop2 with no query lost and no request failed; `pop announce` brings them back, likewise."""
    lab.wait_steady()
    _ok(scenarios.maintenance(lab), scenarios.announce(lab))


def test_crash_of_serve_moves_traffic_to_the_other_pop(lab: Lab) -> None:
    """serve SIGKILLed on pop1: its hook withdraws, the clients' queries go to pop2 (the lost
    queries and the time are in the table)."""
    lab.wait_steady()
    _ok(scenarios.crash(lab))


def test_a_pop_whose_backends_are_down_withdraws_and_http_goes_on_through_the_other(
    lab: Lab,
) -> None:
    """pop1's endpoints stopped: its critical backend is down, its hook withdraws, HTTP ends on
    pop2's endpoints and DNS loses nothing."""
    lab.wait_steady()
    _ok(scenarios.backends_down(lab))
