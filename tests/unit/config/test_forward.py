"""pop.yaml ``forward:``: the model it gives, and every problem at once with file:line."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest

from anycastedge.config.pop import load_pop
from anycastedge.errors import ConfigError
from anycastedge.forward.model import Backend, Ejection, Endpoint, Listener

HEAD = "pop: t1\ndns:\n  listen: ['127.0.0.1:5300']\n"


def load(tmp_path: Path, forward: str) -> Path:
    path = tmp_path / "pop.yaml"
    path.write_text(HEAD + textwrap.dedent(forward))
    return path


def problems(tmp_path: Path, forward: str) -> list[str]:
    """Every problem, as "line: message"."""
    with pytest.raises(ConfigError) as caught:
        load_pop(load(tmp_path, forward))
    return [f"{p.location.line if p.location else 0}: {p.message}" for p in caught.value.problems]


def test_a_full_section_gives_the_model(tmp_path: Path) -> None:
    """Every key lands where it belongs; what is left out takes the documented default."""
    config = load_pop(
        load(
            tmp_path,
            """
            forward:
              listeners:
                ssh: {bind: "127.0.0.1:2222", protocol: tcp, backend: bastion,
                      accept_proxy: [10.0.0.0/8], idle_timeout: 60}
                dns: {bind: "[::1]:5353", protocol: udp, backend: resolvers, per_packet: true}
              backends:
                bastion:
                  balance: maglev
                  maglev_table_size: 251
                  proxy_protocol: v2
                  critical: true
                  slow_start: 10
                  healthcheck: {kind: http, path: /health, expect_status: [200, 204],
                                body: ok, interval: 1, timeout: 0.5, rise: 1, fall: 2, port: 8080}
                  ejection: {consecutive_failures: 3, base_time: 10, max_time: 60}
                  endpoints: [{address: "127.0.0.1:22"}, {address: "127.0.0.2:22", weight: 3}]
                resolvers:
                  endpoints: [{address: "[::1]:53"}]
            """,
        )
    ).forward
    ssh, dns = config.listeners
    assert ssh == Listener(
        "ssh", "127.0.0.1", 2222, "tcp", "bastion", idle_timeout=60.0,
        accept_proxy=(ipaddress.ip_network("10.0.0.0/8"),),
    )  # fmt: skip
    assert dns.protocol == "udp" and dns.per_packet and dns.idle_timeout == 30.0
    bastion = config.backend("bastion")
    assert bastion.endpoints == (Endpoint("127.0.0.1", 22), Endpoint("127.0.0.2", 22, 3))
    assert bastion.balance == "maglev"
    assert (bastion.maglev_table_size, bastion.proxy_protocol) == (251, 2)
    assert bastion.critical and bastion.slow_start == 10.0 and bastion.check_port == 8080
    check = bastion.healthcheck
    assert (check.protocol, check.path, check.body) == ("HTTP", "/health", "ok")
    assert check.expect_status == frozenset({200, 204})
    assert (check.interval, check.timeout, check.rise, check.fall) == (1.0, 0.5, 1, 2)
    assert bastion.ejection == Ejection(3, 10.0, 60.0, 50)
    resolvers = config.backend("resolvers")
    assert resolvers.healthcheck.protocol == "TCP"  # checked even when nothing is said: fail closed
    assert resolvers == Backend("resolvers", (Endpoint("::1", 53),))


def test_every_problem_is_reported_with_its_line(tmp_path: Path) -> None:
    """Unknown backends, duplicate binds (also against dns.listen), bad weights, unknown and
    unsuited algorithms, keys that do not apply: all of them in one go, each at its line."""
    found = problems(
        tmp_path,
        """
        forward:
          listeners:
            a: {bind: "127.0.0.1:8080", protocol: tcp, backend: web}
            b: {bind: "127.0.0.1:8080", protocol: tcp, backend: web}
            c: {bind: "127.0.0.1:5300", protocol: udp, backend: web}
            d: {bind: "127.0.0.1:9000", protocol: tcp, backend: nope}
            e: {bind: "127.0.0.1:9001", protocol: udp, backend: timed, accept_proxy: [10.0.0.0/8]}
            f: {bind: "127.0.0.1:9002", protocol: http, backend: web}
          backends:
            web:
              balance: fastest
              endpoints: [{address: "127.0.0.1:81", weight: 300}, {address: "127.0.0.1:81"}]
            timed:
              balance: least_time
              maglev_table_size: 100
              healthcheck: {kind: tcp, path: /x}
              endpoints: [{address: "localhost:80"}]
            empty: {endpoints: []}
        """,
    )
    assert found == [
        "15: forward.backends.web.balance: must be one of round_robin, weighted, least_conn, p2c, "
        "least_time, source_hash, maglev, not 'fastest'",
        "16: forward.backends.web.endpoints[0].weight: 300 is outside 0..256",
        "16: forward.backends.web.endpoints[1].address: 127.0.0.1:81 is listed twice",
        "21: forward.backends.timed.endpoints[0].address: 'localhost' does not appear to be an "
        "IPv4 or IPv6 address",
        "20: forward.backends.timed.healthcheck.path: applies to kind: http only",
        "19: forward.backends.timed.maglev_table_size: applies to balance: maglev only",
        "22: forward.backends.empty.endpoints: at least one endpoint is required",
        "8: forward.listeners.b.bind: 127.0.0.1:8080/tcp is already bound by listener 'a'",
        "9: forward.listeners.c.bind: 127.0.0.1:5300/udp is already bound by dns.listen",
        "10: forward.listeners.d.backend: no backend 'nope' (defined: empty, timed, web)",
        "11: forward.listeners.e.accept_proxy: applies to tcp listeners only",
        "12: forward.listeners.f.protocol: must be one of tcp, udp, not 'http' (http listeners "
        "come with the L7 tier)",
    ]


def test_udp_cannot_take_what_only_tcp_has(tmp_path: Path) -> None:
    """A UDP listener refuses a backend that sends PROXY headers or balances by connect time,
    and per_packet on TCP is refused too."""
    found = problems(
        tmp_path,
        """
        forward:
          listeners:
            u: {bind: "127.0.0.1:9001", protocol: udp, backend: proxied}
            v: {bind: "127.0.0.1:9002", protocol: udp, backend: timed}
            t: {bind: "127.0.0.1:9003", protocol: tcp, backend: timed, per_packet: true}
          backends:
            proxied: {proxy_protocol: v2, endpoints: [{address: "127.0.0.1:53"}]}
            timed: {balance: least_time, endpoints: [{address: "127.0.0.1:53"}]}
        """,
    )
    assert found == [
        "7: forward.listeners.u.backend: backend 'proxied' sends PROXY headers, which UDP cannot",
        "8: forward.listeners.v.backend: backend 'timed' balances by connect time: UDP has none",
        "9: forward.listeners.t.per_packet: applies to udp listeners only",
    ]
