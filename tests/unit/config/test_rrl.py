"""pop.yaml ``dns.rrl``: defaults, turning it off, and every bad value named with file:line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from anycastedge.config.pop import default_pop, load_pop
from anycastedge.dns.rrl import RrlConfig
from anycastedge.errors import ConfigError


def write(tmp_path: Path, rrl: str) -> Path:
    """A pop.yaml whose ``dns.rrl`` is ``rrl`` (YAML, after the key), on line 3."""
    path = tmp_path / "pop.yaml"
    path.write_text(f"pop: t1\ndns:\n  rrl: {rrl}\n")
    return path


def problems(tmp_path: Path, rrl: str) -> list[str]:
    """Every problem load_pop reports, as printed (file:line: message)."""
    with pytest.raises(ConfigError) as caught:
        load_pop(write(tmp_path, rrl))
    return [f"{p.location}: {p.message}" for p in caught.value.problems]


def test_rrl_is_on_by_default_with_bind_like_values(tmp_path: Path) -> None:
    """No dns.rrl (and the embedded default): on, 20/s for each class, window 15, slip 2,
    /24 and /56, loopback exempt."""
    path = tmp_path / "pop.yaml"
    path.write_text("pop: t1\n")
    for config in (load_pop(path).dns.rrl, default_pop(tmp_path).dns.rrl):
        assert config == RrlConfig()
        assert config.rates == (20, 20, 20, 20, 20)
        assert (config.window, config.slip) == (15, 2)
        assert (config.ipv4_prefix, config.ipv6_prefix) == (24, 56)
        assert config.exempt == ("127.0.0.0/8", "::1/128")
        assert not config.log_only


@pytest.mark.parametrize("off", ["null", "{enabled: false}", "{enabled: false, slip: 3}"])
def test_rrl_off(tmp_path: Path, off: str) -> None:
    """``dns.rrl: null`` or ``enabled: false`` turn it off."""
    assert load_pop(write(tmp_path, off)).dns.rrl is None


def test_class_rates_default_to_responses_per_second(tmp_path: Path) -> None:
    """As BIND: a class without its own rate takes responses_per_second's."""
    config = load_pop(write(tmp_path, "{responses_per_second: 7, errors_per_second: 2}")).dns.rrl
    assert config is not None
    assert config.rates == (7, 7, 7, 7, 2)


def test_every_key_is_read(tmp_path: Path) -> None:
    """Each key lands where it should; ``exempt`` replaces the default list."""
    rrl = """
        enabled: true
        responses_per_second: 50
        nxdomains_per_second: 10
        nodata_per_second: 11
        referrals_per_second: 12
        errors_per_second: 0
        window: 30
        slip: 0
        ipv4_prefix: 32
        ipv6_prefix: 64
        exempt: [192.0.2.0/24, "2001:db8::/32"]
        log_only: true
        max_table_size: 5000
    """
    body = "\n" + textwrap.indent(textwrap.dedent(rrl).strip(), "    ")  # under rrl:
    config = load_pop(write(tmp_path, body)).dns.rrl
    assert config == RrlConfig(50, 10, 11, 12, 0, 30, 0, 32, 64,
                               ("192.0.2.0/24", "2001:db8::/32"), True, 5000)  # fmt: skip


def test_exempt_may_be_empty(tmp_path: Path) -> None:
    """``exempt: []``: nothing exempt, loopback included (how the tests and the bench measure
    limiting from loopback)."""
    config = load_pop(write(tmp_path, "{exempt: []}")).dns.rrl
    assert config is not None and config.exempt == ()


@pytest.mark.parametrize(
    ("rrl", "expected"),
    [
        ("{responses_per_second: -1}", "dns.rrl.responses_per_second: -1 is outside 0..1000000"),
        ("{nxdomains_per_second: 2.5}", "dns.rrl.nxdomains_per_second: must be int, not float 2.5"),
        ("{nodata_per_second: yes}", "dns.rrl.nodata_per_second: must be a number, not True"),
        (
            "{referrals_per_second: many}",
            "dns.rrl.referrals_per_second: must be int, not str 'many'",
        ),
        (
            "{errors_per_second: 2000000}",
            "dns.rrl.errors_per_second: 2000000 is outside 0..1000000",
        ),
        ("{window: 0}", "dns.rrl.window: 0 is outside 1..3600"),
        ("{slip: 11}", "dns.rrl.slip: 11 is outside 0..10"),
        ("{ipv4_prefix: 33}", "dns.rrl.ipv4_prefix: 33 is outside 0..32"),
        ("{ipv6_prefix: 129}", "dns.rrl.ipv6_prefix: 129 is outside 0..128"),
        ("{exempt: 127.0.0.0/8}", "dns.rrl.exempt: must be a list of CIDRs"),
        ("{exempt: [127.0.0.1/8]}", "dns.rrl.exempt: 127.0.0.1/8 has host bits set"),
        ("{log_only: maybe}", "dns.rrl.log_only: must be bool, not str 'maybe'"),
        ("{max_table_size: 1}", "dns.rrl.max_table_size: 1 is outside 2..100000000"),
        ("{enabled: 1}", "dns.rrl.enabled: must be bool, not int 1"),
        ("{responses: 5}", "dns.rrl.responses: unknown key"),
        ("[1, 2]", "dns.rrl must be a mapping"),
    ],
)
def test_bad_values_name_the_key_and_line(tmp_path: Path, rrl: str, expected: str) -> None:
    """Every key's bad value is one problem naming ``dns.rrl.<key>``, on line 3."""
    found = problems(tmp_path, rrl)
    assert len(found) == 1, found
    location, _, message = found[0].partition(": ")
    assert message == expected
    assert location.startswith(f"{tmp_path / 'pop.yaml'}, line 3, column ")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """Two bad keys, two problems, each on its own line."""
    body = "\n    window: 0\n    slip: -1\n"
    found = problems(tmp_path, body)
    assert [line.split(", column")[0] for line in found] == [
        f"{tmp_path / 'pop.yaml'}, line 4",
        f"{tmp_path / 'pop.yaml'}, line 5",
    ]
