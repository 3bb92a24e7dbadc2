"""pop.yaml ``dns.tcp_*``: the TCP limits load with their defaults, and a bad value names its key
and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from anycastedge.config.pop import DnsConfig, load_pop
from anycastedge.errors import ConfigError


def write(tmp_path: Path, dns: str) -> Path:
    path = tmp_path / "pop.yaml"
    path.write_text("pop: t1\ndns:\n" + textwrap.indent(textwrap.dedent(dns), "  "))
    return path


def problems(tmp_path: Path, dns: str) -> list[str]:
    """Every problem load_pop reports for this ``dns:`` body, as printed."""
    path = write(tmp_path, dns)
    with pytest.raises(ConfigError) as caught:
        load_pop(path)
    return [f"{p.location}: {p.message}" for p in caught.value.problems]


def test_defaults(tmp_path: Path) -> None:
    """Without the keys: 20 connections per client, 2 s to read a query, 10000 queries."""
    dns = load_pop(write(tmp_path, "nsid: true\n")).dns
    assert (
        dns.tcp_max_connections_per_client,
        dns.tcp_read_timeout,
        dns.tcp_max_queries,
        dns.tcp_idle_timeout,
        dns.tcp_max_connections,
    ) == (20, 2.0, 10_000, 10.0, 1000)
    assert dns == DnsConfig(zones=dns.zones, listen=dns.listen)


def test_values_are_read(tmp_path: Path) -> None:
    dns = load_pop(
        write(
            tmp_path,
            """\
            tcp_max_connections_per_client: 3
            tcp_read_timeout: 0.5
            tcp_max_queries: 0
            """,
        )
    ).dns
    assert (dns.tcp_max_connections_per_client, dns.tcp_read_timeout, dns.tcp_max_queries) == (
        3,
        0.5,
        0,
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("tcp_max_connections_per_client: 0", "0 is outside 1..1e+06"),
        ("tcp_max_connections_per_client: 2.5", "2.5 is not a whole number"),
        ("tcp_max_connections_per_client: many", "must be float, not str 'many'"),
        ("tcp_max_connections_per_client: true", "must be a number, not True"),
        ("tcp_read_timeout: 0", "0 is outside 0.1..3600"),
        ("tcp_read_timeout: 3601", "3601 is outside 0.1..3600"),
        ("tcp_read_timeout: fast", "must be float, not str 'fast'"),
        ("tcp_max_queries: -1", "-1 is outside 0..1e+09"),
        ("tcp_max_queries: 10.5", "10.5 is not a whole number"),
        ("tcp_max_queries: [1]", "must be float, not list [1]"),
    ],
)
def test_bad_value_names_key_and_line(tmp_path: Path, line: str, message: str) -> None:
    key = line.split(":", 1)[0]
    found = problems(tmp_path, "nsid: true\n" + line + "\n")
    assert found == [f"{tmp_path / 'pop.yaml'}, line 4, column 3: dns.{key}: {message}"]


def test_every_bad_key_is_reported_at_once(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
        tcp_max_connections_per_client: 0
        tcp_read_timeout: 0
        tcp_max_queries: -5
        """,
    )
    assert [f.split(": ", 2)[1] for f in found] == [
        "dns.tcp_max_connections_per_client",
        "dns.tcp_read_timeout",
        "dns.tcp_max_queries",
    ]
