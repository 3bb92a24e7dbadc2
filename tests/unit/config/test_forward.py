"""pop.yaml ``forward:``: the model it gives, and every problem at once with file:line."""

from __future__ import annotations

import ipaddress
import os
import textwrap
from pathlib import Path

import pytest

from anycastedge.config.pop import load_pop
from anycastedge.errors import ConfigError
from anycastedge.forward.model import (
    Backend,
    BackendHttp,
    Certificate,
    Ejection,
    Endpoint,
    Listener,
    ListenerHttp,
    ListenerTls,
    Route,
)
from tests.support.certs import make_ca, make_cert

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
    assert bastion.ejection == Ejection(3, base_time=10.0, max_time=60.0, max_percent=50)
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
            f: {bind: "127.0.0.1:9002", protocol: sctp, backend: web}
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
        "11: forward.listeners.e.accept_proxy: applies to tcp, http and https listeners only",
        "12: forward.listeners.f.protocol: must be one of tcp, udp, http, https, not 'sctp'",
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


def tls_files(tmp_path: Path) -> None:
    """Certificates and keys as the config loads them (a.pem serves a.example.com and
    *.b.example.com; b.pem b.example.net), and a CA file."""
    ca = make_ca(tmp_path / "pki")
    for stem, names in (("a", ["a.example.com", "*.b.example.com"]), ("b", ["b.example.net"])):
        cert, key = make_cert(ca, tmp_path / "pki", stem, names)
        cert.rename(tmp_path / f"{stem}.pem")
        key.rename(tmp_path / f"{stem}.key")
    (tmp_path / "ca.pem").write_bytes(ca.cert.read_bytes())


def test_http_and_https_listeners_give_the_model(tmp_path: Path) -> None:
    """Routes in order with host names normalised, the limits, the access log and TLS; the
    backends' HTTP options and sticky cookie; relative file names resolved against pop.yaml."""
    tls_files(tmp_path)
    config = load_pop(
        load(
            tmp_path,
            """
            forward:
              listeners:
                web:
                  bind: "127.0.0.1:8080"
                  protocol: http
                  routes:
                    - {host: API.Example.COM., path_prefix: /v1/, backend: api, max_body: 1048576}
                    - {hosts: ["*.example.com", "example.com:8080", "[2001:DB8::1]:80"],
                       backend: site}
                    - {host: "bücher.example", backend: site, max_body: null}
                    - {backend: site}
                  trusted_upstreams: [192.0.2.0/24, "2001:db8::/32"]
                  header_timeout: 5
                  idle_timeout: 20
                  max_header_size: 8192
                  max_headers: 50
                  max_body: 0
                  access_log: logs/web.log
                  max_connections: 100
                  connect_timeout: 2
                  accept_proxy: [10.0.0.0/8]
                secure:
                  bind: "127.0.0.1:8443"
                  protocol: https
                  routes: [{backend: site}]
                  access_log: false
                  tls:
                    min_version: 1.3
                    certificates:
                      - {cert: a.pem, key: a.key, hosts: [A.example.com, "*.b.example.com"]}
                      - {cert: b.pem, key: b.key}
              backends:
                api:
                  balance: least_time
                  proxy_protocol: v1
                  sticky_cookie: AESTICKY
                  ejection: {consecutive_5xx: 0}
                  http: {tls: true, verify: true, ca_file: ca.pem, server_name: API.internal,
                         pool_size: 8, pool_idle_timeout: 2, max_connections: 64, retries: 0,
                         response_timeout: 30}
                  endpoints: [{address: "127.0.0.1:9001"}]
                site:
                  endpoints: [{address: "127.0.0.1:9002"}]
            """,
        )
    ).forward
    web, secure = config.listeners
    assert (web.protocol, web.backend, web.idle_timeout) == ("http", "", 20.0)
    assert (web.max_connections, web.connect_timeout) == (100, 2.0)
    assert web.accept_proxy == (ipaddress.ip_network("10.0.0.0/8"),)
    assert web.http == ListenerHttp(
        routes=(
            Route("api", ("api.example.com",), "/v1/", 1048576),
            Route("site", ("*.example.com", "example.com:8080", "[2001:db8::1]:80")),
            Route("site", ("xn--bcher-kva.example",)),
            Route("site"),
        ),
        trusted_upstreams=(
            ipaddress.ip_network("192.0.2.0/24"),
            ipaddress.ip_network("2001:db8::/32"),
        ),
        header_timeout=5.0,
        max_header_size=8192,
        max_headers=50,
        max_body=0,
        access_log=str(tmp_path / "logs/web.log"),
    )
    assert secure.protocol == "https" and secure.idle_timeout == 60.0
    assert secure.http is not None and secure.http.access_log is None
    assert secure.http.tls == ListenerTls(
        certificates=(
            Certificate(
                str(tmp_path / "a.pem"), str(tmp_path / "a.key"),
                ("a.example.com", "*.b.example.com"),
            ),
            Certificate(str(tmp_path / "b.pem"), str(tmp_path / "b.key")),
        ),
        min_version="1.3",
    )  # fmt: skip
    api = config.backend("api")
    assert api.ejection == Ejection(consecutive_5xx=0)
    assert api.http == BackendHttp(
        tls=True, verify=True, ca_file=str(tmp_path / "ca.pem"), server_name="api.internal",
        sticky_cookie="AESTICKY", pool_size=8, pool_idle_timeout=2.0, max_connections=64,
        retries=0, response_timeout=30.0,
    )  # fmt: skip
    assert config.backend("site").http == BackendHttp()


def test_an_http_listener_takes_the_documented_defaults(tmp_path: Path) -> None:
    """Only bind, protocol and one route: every limit is the model's default, idle_timeout is
    60 s (keep-alive between requests), the access log goes to standard output."""
    listener = load_pop(
        load(
            tmp_path,
            """
            forward:
              listeners:
                web: {bind: "[::1]:8080", protocol: http, routes: [{backend: site}]}
              backends:
                site: {endpoints: [{address: "[::1]:9002"}]}
            """,
        )
    ).forward.listeners[0]
    assert listener == Listener(
        "web", "::1", 8080, "http", "", idle_timeout=60.0, http=ListenerHttp((Route("site"),))
    )
    assert listener.http is not None and listener.http.access_log == "-"


def test_http_listeners_refuse_what_does_not_apply_or_is_missing(tmp_path: Path) -> None:
    """Routes name the backends (no backend:), at least one route is needed, host and hosts are
    exclusive, names and prefixes are checked, https needs tls: and http refuses it."""
    found = problems(
        tmp_path,
        """
        forward:
          listeners:
            a: {bind: "127.0.0.1:8001", protocol: http, backend: site, per_packet: true,
                connect_attempts: 2, routes: [{backend: site}]}
            b: {bind: "127.0.0.1:8002", protocol: http}
            c: {bind: "127.0.0.1:8003", protocol: http, routes: []}
            d:
              bind: "127.0.0.1:8004"
              protocol: http
              routes:
                - {host: a.example.com, hosts: [b.example.com], backend: site}
                - {host: "a b.example.com", backend: site}
                - {hosts: ["*.example.com", "*.example.com"], backend: site}
                - {hosts: [], backend: site}
                - {host: "example.com:99999", path_prefix: v1/, backend: site}
                - {host: "ex*ample.com", path_prefix: "/v1/../admin", backend: site}
                - {path_prefix: "/v1?x", backend: nope, max_body: -1, weight: 2}
                - {host: "2001:db8::1", backend: site}
                - {host: "[2001:db8::x]", backend: site}
            e: {bind: "127.0.0.1:8005", protocol: https, routes: [{backend: site}]}
            f: {bind: "127.0.0.1:8006", protocol: http, routes: [{backend: site}],
                tls: {certificates: []}, access_log: true, header_timeout: 0, max_body: 1.5,
                max_header_size: 100, max_headers: 0, trusted_upstreams: [10.0.0.1/8]}
          backends:
            site: {endpoints: [{address: "127.0.0.1:9002"}]}
        """,
    )
    assert found == [
        "7: forward.listeners.a.backend: http listeners name their backends in routes:",
        "7: forward.listeners.a.per_packet: applies to udp listeners only",
        "8: forward.listeners.a.connect_attempts: applies to tcp listeners only (HTTP retries: "
        "the backend's http.retries)",
        "9: forward.listeners.b.routes: at least one route is required",
        "10: forward.listeners.c.routes: at least one route is required",
        "15: forward.listeners.d.routes[0].hosts: host and hosts are exclusive: one name, or a "
        "list of them",
        "16: forward.listeners.d.routes[1].host: 'a b.example.com' is not a host name (letters, "
        "digits, hyphens and dots, optionally *. first and :PORT last)",
        "17: forward.listeners.d.routes[2].hosts: *.example.com is listed twice",
        "18: forward.listeners.d.routes[3].hosts: must be a non-empty list of host names",
        "19: forward.listeners.d.routes[4].host: 'example.com:99999': '99999' is not a port number",
        "19: forward.listeners.d.routes[4].path_prefix: must start with /, not 'v1/'",
        "20: forward.listeners.d.routes[5].host: 'ex*ample.com' is not a host name (letters, "
        "digits, hyphens and dots, optionally *. first and :PORT last)",
        "20: forward.listeners.d.routes[5].path_prefix: '/v1/../admin' has . or .. segments, "
        "which requests are matched without",
        "21: forward.listeners.d.routes[6].backend: no backend 'nope' (defined: site)",
        "21: forward.listeners.d.routes[6].path_prefix: '/v1?x' is not a path (no query, "
        "fragment, space or non-ASCII)",
        "21: forward.listeners.d.routes[6].max_body: must be a number of bytes (0 or more), not -1",
        "21: forward.listeners.d.routes[6].weight: unknown key",
        "22: forward.listeners.d.routes[7].host: '2001:db8::1' is not a host name (letters, "
        "digits, hyphens and dots, optionally *. first and :PORT last)",
        "23: forward.listeners.d.routes[8].host: '[2001:db8::x]' is not an IPv6 address in "
        "brackets",
        "24: forward.listeners.e.tls: is required for https listeners (the certificates they "
        "serve)",
        "26: forward.listeners.f.tls: applies to https listeners only",
        "27: forward.listeners.f.trusted_upstreams: 10.0.0.1/8 has host bits set",
        "26: forward.listeners.f.header_timeout: 0 is outside 0.01..3600",
        "27: forward.listeners.f.max_header_size: 100 is outside 1024..262144",
        "27: forward.listeners.f.max_headers: 0 is outside 1..10000",
        "26: forward.listeners.f.max_body: must be int, not float 1.5",
        '26: forward.listeners.f.access_log: must be a file name, "-" (standard output) or '
        "null, not True",
    ]


def test_tcp_and_udp_listeners_refuse_the_http_keys(tmp_path: Path) -> None:
    """Each HTTP-only key on a tcp or udp listener is named: it would be silently useless."""
    found = problems(
        tmp_path,
        """
        forward:
          listeners:
            t: {bind: "127.0.0.1:8001", protocol: tcp, backend: site, routes: [{backend: site}],
                trusted_upstreams: [], header_timeout: 1, max_header_size: 1024, max_headers: 1}
            u: {bind: "127.0.0.1:8002", protocol: udp, backend: site, max_body: 1,
                access_log: "-", tls: {}}
          backends:
            site: {endpoints: [{address: "127.0.0.1:9002"}]}
        """,
    )
    message = "applies to http and https listeners only"
    assert found == [
        f"7: forward.listeners.t.routes: {message}",
        f"8: forward.listeners.t.trusted_upstreams: {message}",
        f"8: forward.listeners.t.header_timeout: {message}",
        f"8: forward.listeners.t.max_header_size: {message}",
        f"8: forward.listeners.t.max_headers: {message}",
        f"9: forward.listeners.u.max_body: {message}",
        f"10: forward.listeners.u.access_log: {message}",
        f"10: forward.listeners.u.tls: {message}",
    ]


def test_tls_refuses_bad_versions_ciphers_and_files(tmp_path: Path) -> None:
    """min_version is 1.2 or 1.3; ciphers must select something and only apply to TLS 1.2;
    every cert and key must be a readable file (named with its path); an SNI name is served by
    one certificate only and has no port."""
    tls_files(tmp_path)
    (tmp_path / "dir.pem").mkdir()
    found = problems(
        tmp_path,
        """
        forward:
          listeners:
            a:
              bind: "127.0.0.1:8001"
              protocol: https
              routes: [{backend: site}]
              tls:
                min_version: "1.1"
                ciphers: NO-SUCH-CIPHER
                certificates:
                  - {cert: a.pem, key: missing.key, hosts: [a.example.com]}
                  - {cert: dir.pem, hosts: [A.example.com.], ocsp: x}
                  - {cert: b.pem, key: b.key, hosts: ["b.example.com:443"]}
            b:
              bind: "127.0.0.1:8002"
              protocol: https
              routes: [{backend: site}]
              tls: {min_version: 1.3, ciphers: "ECDHE+AESGCM"}
          backends:
            site: {endpoints: [{address: "127.0.0.1:9002"}]}
        """,
    )
    tls = "forward.listeners.a.tls"
    assert found == [
        f"12: {tls}.min_version: must be one of 1.2, 1.3, not '1.1'",
        f"13: {tls}.ciphers: 'NO-SUCH-CIPHER' selects no cipher this OpenSSL has",
        f"15: {tls}.certificates[0].key: {tmp_path / 'missing.key'}: no such file",
        f"16: {tls}.certificates[1].cert: {tmp_path / 'dir.pem'}: not a file",
        f"16: {tls}.certificates[1].key: is required",
        f"16: {tls}.certificates[1].hosts: a.example.com is served by certificates[0] already",
        f"16: {tls}.certificates[1].ocsp: unknown key",
        f"17: {tls}.certificates[2].hosts: 'b.example.com:443': a port does not apply here",
        "22: forward.listeners.b.tls.ciphers: sets TLS 1.2 suites, which min_version 1.3 refuses",
        "22: forward.listeners.b.tls.certificates: at least one certificate is required",
    ]


def test_backends_refuse_bad_http_options(tmp_path: Path) -> None:
    """verify, ca_file and server_name need tls: true; sticky_cookie is a token and lives on the
    backend itself; numbers stay in their ranges; unknown keys under http: are named."""
    tls_files(tmp_path)
    found = problems(
        tmp_path,
        """
        forward:
          listeners:
            web: {bind: "127.0.0.1:8001", protocol: http, routes: [{backend: a}, {backend: b}]}
          backends:
            a:
              sticky_cookie: "bad cookie"
              ejection: {consecutive_5xx: -1}
              http: {verify: false, server_name: x.example, sticky_cookie: S, retries: 11,
                     pool_size: -1, response_timeout: 0, keepalive: true}
              endpoints: [{address: "127.0.0.1:9001"}]
            b:
              http: {tls: true, verify: false, ca_file: missing.pem, server_name: "*.example"}
              endpoints: [{address: "127.0.0.1:9002"}]
            c:
              http: {tls: true, verify: false, ca_file: ca.pem}
              endpoints: [{address: "127.0.0.1:9003"}]
        """,
    )
    a, b = "forward.backends.a", "forward.backends.b"
    assert found == [
        f"11: {a}.ejection.consecutive_5xx: -1 is outside 0..1000",
        f"10: {a}.sticky_cookie: 'bad cookie' is not a cookie name (an RFC 6265 token)",
        f"13: {a}.http.pool_size: -1 is outside 0..10000",
        f"12: {a}.http.retries: 11 is outside 0..10",
        f"13: {a}.http.response_timeout: 0 is outside 0.01..86400",
        f"12: {a}.http.verify: applies with tls: true only",
        f"12: {a}.http.server_name: applies with tls: true only",
        f"12: {a}.http.sticky_cookie: goes on the backend itself, beside http:",
        f"13: {a}.http.keepalive: unknown key",
        f"16: {b}.http.ca_file: {tmp_path / 'missing.pem'}: no such file",
        f"16: {b}.http.server_name: '*.example': a wildcard does not apply here",
        "19: forward.backends.c.http.ca_file: applies with verify: true only",
    ]


def test_a_ca_file_without_a_certificate_is_refused(tmp_path: Path) -> None:
    """Readable is not enough: the endpoints could never be verified (HAProxy's -c refuses it
    too, and the built-in engine would fail at the first connect)."""
    (tmp_path / "empty.pem").write_text("not a certificate\n")
    found = problems(
        tmp_path,
        """
        forward:
          backends:
            b:
              http: {tls: true, ca_file: empty.pem}
              endpoints: [{address: "127.0.0.1:9002"}]
        """,
    )
    assert len(found) == 1
    assert found[0].startswith(
        f"8: forward.backends.b.http.ca_file: {tmp_path / 'empty.pem'}: no CA certificate in it"
    ), found


def test_http_listeners_bind_tcp(tmp_path: Path) -> None:
    """An http or https listener conflicts with a tcp one on the same port (and with dns.listen's
    TCP side), not with a udp one."""
    found = problems(
        tmp_path,
        """
        forward:
          listeners:
            t: {bind: "127.0.0.1:8001", protocol: tcp, backend: site}
            h: {bind: "127.0.0.1:8001", protocol: http, routes: [{backend: site}]}
            u: {bind: "127.0.0.1:8002", protocol: udp, backend: site}
            h2: {bind: "127.0.0.1:8002", protocol: http, routes: [{backend: site}]}
            h3: {bind: "0.0.0.0:8002", protocol: http, routes: [{backend: site}]}
            h4: {bind: "127.0.0.1:8002", protocol: http, routes: [{backend: site}]}
            d: {bind: "127.0.0.1:5300", protocol: http, routes: [{backend: site}]}
          backends:
            site: {endpoints: [{address: "127.0.0.1:9002"}]}
        """,
    )
    assert found == [
        "8: forward.listeners.h.bind: 127.0.0.1:8001/tcp is already bound by listener 't'",
        "12: forward.listeners.h4.bind: 127.0.0.1:8002/tcp is already bound by listener 'h2'",
        "13: forward.listeners.d.bind: 127.0.0.1:5300/tcp is already bound by dns.listen",
    ]


def test_workers_default_number_and_auto(tmp_path: Path) -> None:
    """workers: 1 unless said; a number 1..64; auto: one per CPU, at most 64."""
    assert load_pop(load(tmp_path, "forward: {}\n")).forward.workers == 1
    assert load_pop(load(tmp_path, "forward: {workers: 4}\n")).forward.workers == 4
    auto = load_pop(load(tmp_path, "forward: {workers: auto}\n")).forward.workers
    assert auto == min(os.cpu_count() or 1, 64)


def test_workers_refused(tmp_path: Path) -> None:
    for value in ("0", "65", "many", "true", "2.5", "-1"):
        found = problems(tmp_path, f"forward:\n  workers: {value}\n")
        assert len(found) == 1 and found[0].startswith("5: forward.workers: must be"), found


def test_engine_and_haproxy_options(tmp_path: Path) -> None:
    """engine: builtin unless said; forward.haproxy's keys with their defaults."""
    builtin = load_pop(load(tmp_path, "forward: {}\n")).forward
    assert (builtin.engine, builtin.haproxy.hard_stop_after) == ("builtin", 600.0)
    section = "forward:\n  engine: haproxy\n  haproxy: {hard_stop_after: 30, binary: /opt/h}\n"
    forward = load_pop(load(tmp_path, section)).forward
    assert forward.engine == "haproxy"
    assert (forward.haproxy.hard_stop_after, forward.haproxy.binary) == (30.0, "/opt/h")


def test_engine_and_haproxy_options_refused(tmp_path: Path) -> None:
    assert problems(tmp_path, "forward:\n  engine: nginx\n") == [
        "5: forward.engine: must be one of builtin, haproxy, not 'nginx'"
    ]
    found = problems(tmp_path, "forward:\n  haproxy: {hard_stop_after: 30}\n")
    assert found == ["5: forward.haproxy: applies to engine: haproxy only"]
    found = problems(
        tmp_path, "forward:\n  engine: haproxy\n  haproxy: {hard_stop_after: 0, bin: x}\n"
    )
    assert found == [
        "6: forward.haproxy.hard_stop_after: 0 is outside 1..86400",
        "6: forward.haproxy.bin: unknown key",
    ]
