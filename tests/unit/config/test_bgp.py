"""pop.yaml ``bgp:``: a section that could announce without checking anything does not load."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from anycastedge.config.pop import load_pop
from anycastedge.errors import ConfigError

NO_CHECKS = (
    "bgp.health.checks: at least one check is required: without checks the anycast prefixes "
    "would be announced whether or not this POP answers"
)
NEIGHBOR = "  neighbors: [{address: 127.0.0.1, peer_as: 65000, port: 1790}]\n"


def problems(tmp_path: Path, source: str) -> list[str]:
    """Every problem load_pop reports, as printed (message and file:line)."""
    path = tmp_path / "pop.yaml"
    path.write_text(textwrap.dedent(source))
    with pytest.raises(ConfigError) as caught:
        load_pop(path)
    return [f"{p.location}: {p.message}" for p in caught.value.problems]


@pytest.mark.parametrize(
    ("bgp", "line", "column"),
    [
        # The innermost key that was written carries the line: checks:, else health:, else bgp:.
        ("bgp:\n" + NEIGHBOR + "  health:\n    interval: 1\n    checks: []\n", 7, 5),
        ("bgp:\n" + NEIGHBOR + "  health:\n    interval: 1\n", 5, 3),
        ("bgp:\n" + NEIGHBOR + "  local_as: 65011\n", 3, 1),
        ("bgp:\n", 3, 1),
    ],
    ids=["empty list", "no checks key", "no health key", "empty bgp"],
)
def test_bgp_without_checks_is_an_error_naming_key_and_line(
    tmp_path: Path, bgp: str, line: int, column: int
) -> None:
    """Fail closed: the hook would otherwise announce unconditionally, DNS dead or not."""
    found = problems(tmp_path, "pop: t1\nanycast: [203.0.113.53/32]\n" + bgp)
    assert found == [f"{tmp_path / 'pop.yaml'}, line {line}, column {column}: {NO_CHECKS}"]


def test_bgp_checks_of_the_wrong_type_are_reported_once(tmp_path: Path) -> None:
    """`checks: {...}` is a type error, not also a missing list."""
    found = problems(tmp_path, "pop: t1\nbgp:\n  health:\n    checks: {kind: tcp}\n")
    assert found == [
        f"{tmp_path / 'pop.yaml'}, line 4, column 5: "
        "bgp.health.checks: must be list, not MarkedDict {'kind': 'tcp'}"
    ]


def test_pop_without_bgp_section_loads_without_checks(tmp_path: Path) -> None:
    """No bgp: at all is a POP that does no BGP: serve loads it (the hook refuses to run)."""
    path = tmp_path / "pop.yaml"
    path.write_text("pop: t1\n")
    assert load_pop(path).bgp.health.checks == ()


def test_bgp_with_one_check_loads(tmp_path: Path) -> None:
    """The smallest valid section: one check."""
    path = tmp_path / "pop.yaml"
    path.write_text(
        "pop: t1\nbgp:\n"
        + NEIGHBOR
        + "  health:\n    checks: [{kind: tcp, address: '127.0.0.1:53'}]\n"
    )
    (check,) = load_pop(path).bgp.health.checks
    assert str(check) == "tcp://127.0.0.1:53"


def test_example_pop_yaml_matches_the_test_router() -> None:
    """examples/pop.yaml's bgp: peers with bgp/bird.conf and checks the demo's own serve."""
    repo = Path(__file__).resolve().parents[3]
    config = load_pop(repo / "examples" / "pop.yaml")
    bgp = config.bgp
    assert (bgp.router_id, bgp.local_address, bgp.local_as) == ("127.0.0.2", "127.0.0.2", 65011)
    (neighbor,) = bgp.neighbors
    assert (neighbor.address, neighbor.peer_as, neighbor.port) == ("127.0.0.1", 65000, 1790)
    bird = (repo / "bgp" / "bird.conf").read_text()
    assert "local 127.0.0.1 port BGP_PORT as 65000;" in bird
    assert "neighbor 127.0.0.2 as 65011;" in bird
    assert "define BGP_PORT = 1790;" in (repo / "bgp" / "bird-port.conf").read_text()
    (check,) = bgp.health.checks
    assert check.check.protocol == "DNS"
    assert (check.address, check.check.port) == ("127.0.0.1", 5300)
    assert ("127.0.0.1", 5300) in config.dns.listen
    assert (config.dns.zones / f"{check.check.qname.rstrip('.')}.yaml").exists()
