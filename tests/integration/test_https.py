"""HTTPS through `anycastedge serve` over real loopback sockets: certificates chosen by SNI and
reloaded on SIGHUP, old protocol versions refused, HTTPS to backends, and the HTTP listeners'
metrics through promtool."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import requests

from tests.support.certs import Ca, make_ca, make_cert
from tests.support.forward import HOST, POLL, Pop, backends_up, headers_of, listener_ports, pop
from tests.support.http_backend import EndpointServer, endpoints
from tests.support.server import metric_value, wait_for

A, B = "a.example.test", "b.example.test"


@dataclass(frozen=True)
class Pki:
    ca: Ca
    a: tuple[Path, Path]
    b: tuple[Path, Path]
    directory: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory)
    return Pki(ca, make_cert(ca, directory, "a", [A]), make_cert(ca, directory, "b", [B]),
               directory)  # fmt: skip


def live_copy(pair: tuple[Path, Path], directory: Path) -> tuple[Path, Path]:
    """A copy of a certificate and key the test may overwrite."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / pair[0].name, directory / pair[1].name
    shutil.copyfile(pair[0], cert)
    shutil.copyfile(pair[1], key)
    return cert, key


def backend_lines(name: str, servers: list[EndpointServer], extra: str = "") -> list[str]:
    addresses = ", ".join(f'{{address: "{HOST}:{s.port}"}}' for s in servers)
    lines = [
        f"    {name}:",
        "      healthcheck: {kind: tcp, interval: 0.2}",
        f"      endpoints: [{addresses}]",
    ]
    return lines + [f"      {line}" for line in extra.splitlines() if line]


def https_config(
    ports: dict[str, int],
    certificates: list[tuple[Path, Path]],
    backends: dict[str, tuple[list[EndpointServer], str]],
    routes: str = "[{backend: app}]",
    plain: bool = False,
) -> str:
    """forward: with an https listener ``web`` (the certificates in order, the first being the
    default), optionally a plain http listener ``plain`` with the same routes."""
    lines = [
        "forward:",
        "  listeners:",
        "    web:",
        f'      bind: "{HOST}:{ports["web"]}"',
        "      protocol: https",
        f"      routes: {routes}",
        "      tls:",
        "        certificates:",
    ]
    lines += [f'          - {{cert: "{cert}", key: "{key}"}}' for cert, key in certificates]
    if plain:
        lines += [
            "    plain:",
            f'      bind: "{HOST}:{ports["plain"]}"',
            "      protocol: http",
            f"      routes: {routes}",
        ]
    lines.append("  backends:")
    for name, (servers, extra) in backends.items():
        lines += backend_lines(name, servers, extra)
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def https_proxy(
    tmp_path: Path,
    certificates: list[tuple[Path, Path]],
    backends: dict[str, tuple[list[EndpointServer], str]],
    routes: str = "[{backend: app}]",
    plain: bool = False,
    engine: str = "builtin",
) -> Iterator[Pop]:
    ports = listener_ports("web", "plain") if plain else listener_ports("web")
    forward = https_config(ports, certificates, backends, routes, plain)
    with pop(tmp_path, forward, ports, engine) as p:
        backends_up(p, *backends)
        yield p


def client_context(ca: Ca, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """Trusts ``ca``; checks no name (the tests look at the served certificate themselves)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cafile=str(ca.cert))
    if version is not None:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # our side offers it: the server must refuse
        context.minimum_version = context.maximum_version = version
    return context


@dataclass
class Reply:
    names: tuple[str, ...]  # the served certificate's DNS subjectAltNames
    serial: int
    status: int
    head: str
    body: bytes


def https_get(
    p: Pop, sni: str | None, context: ssl.SSLContext, path: str = "/echo", host: str | None = None
) -> Reply:
    """One GET on a new TLS connection with SNI ``sni`` (None: none); the whole reply."""
    with socket.create_connection((HOST, p.ports["web"]), timeout=POLL) as raw:
        with context.wrap_socket(raw, server_hostname=sni) as tls:
            cert = tls.getpeercert()
            assert cert is not None
            request = (f"GET {path} HTTP/1.1\r\nHost: {host or sni or 'x'}\r\n"
                       "Connection: close\r\n\r\n")  # fmt: skip
            tls.sendall(request.encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return Reply(
        names=tuple(str(v) for kind, v in cast(Any, cert.get("subjectAltName", ()))
                    if kind == "DNS"),  # fmt: skip
        serial=int(str(cert["serialNumber"]), 16),
        status=int(head.split(b" ")[1]),
        head=head.decode(),
        body=body,
    )


def sent_headers(reply: Reply) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in json.loads(reply.body)["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


# --- listening ------------------------------------------------------------------------------


def test_certificate_by_sni_and_the_request_is_marked_https(
    pki: Pki, tmp_path: Path, engine: str
) -> None:
    with endpoints("e") as servers, https_proxy(
        tmp_path, [pki.a, pki.b], {"app": (servers, "sticky_cookie: AESTICKY")}, engine=engine
    ) as p:
        context = client_context(pki.ca)
        for sni, served in [
            (A, A),
            (B, B),
            ("B.Example.TEST", B),  # names compare case-insensitively
            ("unknown.example.test", A),  # an unknown name: the first certificate
            (None, A),  # no SNI: the first certificate
        ]:
            reply = https_get(p, sni, context, host="web.test")
            assert reply.names == (served,), sni
            assert reply.status == 200, reply.head
            got = sent_headers(reply)
            assert got["x-forwarded-proto"] == ["https"]
            assert got["forwarded"] == ['for=127.0.0.1;host=web.test;proto=https']
            assert got["x-forwarded-for"] == ["127.0.0.1"]
            # Over HTTPS the sticky cookie is Secure (HAProxy writes header names in lower case).
            cookie = next(line for line in reply.head.split("\r\n")
                          if line.lower().startswith("set-cookie: "))  # fmt: skip
            assert "; secure" in cookie.lower()
        assert len(servers[0].seen.requests) == 5
        # A client that verifies the chain and the name accepts each name's certificate, and
        # refuses the default one for a name it does not cover.
        verifying = ssl.create_default_context(cafile=str(pki.ca.cert))
        for name in (A, B):
            assert https_get(p, name, verifying).names == (name,)
        with pytest.raises(ssl.SSLCertVerificationError, match="mismatch|doesn't match"):
            https_get(p, "unknown.example.test", verifying)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_tls_versions_are_refused(
    pki: Pki, tmp_path: Path, version: ssl.TLSVersion, engine: str
) -> None:
    with endpoints("e") as servers, https_proxy(
        tmp_path, [pki.a], {"app": (servers, "")}, engine=engine
    ) as p:
        with pytest.raises(ssl.SSLError, match="ALERT_PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL"):
            https_get(p, A, client_context(pki.ca, version))
        reply = https_get(p, A, client_context(pki.ca, ssl.TLSVersion.TLSv1_2))
        assert reply.status == 200
        assert servers[0].seen.requests and len(servers[0].seen.requests) == 1
        assert p.server.alive()


def test_certificates_reloaded_on_sighup_and_a_broken_one_keeps_the_old(
    pki: Pki, tmp_path: Path, engine: str
) -> None:
    live = tmp_path / "live"
    cert, key = live_copy(pki.a, live)
    with endpoints("e") as servers, https_proxy(
        tmp_path, [(cert, key), pki.b], {"app": (servers, "")}, engine=engine
    ) as p:
        context = client_context(pki.ca)
        before = https_get(p, A, context)
        assert before.names == (A,)

        # Renewed with one more name (and a new serial): new connections get it after SIGHUP.
        new_cert, new_key = make_cert(pki.ca, tmp_path / "new", "a2", [A, "a2.example.test"])
        shutil.copyfile(new_cert, cert)
        shutil.copyfile(new_key, key)
        p.server.sighup()
        wait_for(lambda: https_get(p, A, context).names == (A, "a2.example.test"), POLL,
                 "the renewed certificate served")  # fmt: skip
        renewed = https_get(p, A, context)
        assert renewed.serial != before.serial and renewed.status == 200
        assert https_get(p, B, context).names == (B,)  # the other one is still served

        # A broken replacement: refused with the file named; the renewed one is still served.
        log_before = p.server.log_text()
        cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
        p.server.sighup()
        wait_for(lambda: str(cert) in p.server.log_text()[len(log_before):], POLL,
                 "the reload's error naming the broken file")  # fmt: skip
        error = p.server.log_text()[len(log_before) :]
        assert "no PEM certificate" in error, error
        assert p.server.alive()
        after = https_get(p, A, context)
        assert (after.names, after.serial, after.status) == (renewed.names, renewed.serial, 200)
        # Fixed again: served again.
        shutil.copyfile(pki.a[0], cert)
        shutil.copyfile(pki.a[1], key)
        p.server.sighup()
        wait_for(lambda: https_get(p, A, context).serial == before.serial, POLL,
                 "the first certificate served again")  # fmt: skip
        assert "Traceback" not in p.server.log_text()


# --- HTTPS to backends ----------------------------------------------------------------------


class TlsEndpointServer(EndpointServer):
    """The HTTP/1.1 test endpoint behind TLS (handshaken in the request's thread)."""

    def __init__(self, name: str, context: ssl.SSLContext) -> None:
        self.context = context
        self.sni: list[str | None] = []
        super().__init__(name)
        self.context.sni_callback = self._record_sni

    def _record_sni(self, sock: Any, name: str | None, context: Any) -> None:
        self.sni.append(name)

    def finish_request(self, request: Any, client_address: Any) -> None:
        with self.context.wrap_socket(request, server_side=True) as tls:
            super().finish_request(tls, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: health checks connect and close without a handshake."""


@contextlib.contextmanager
def tls_endpoint(name: str, pair: tuple[Path, Path]) -> Iterator[TlsEndpointServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*pair)
    server = TlsEndpointServer(name, context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_https_to_backends_verified_by_ca_and_server_name(
    pki: Pki, tmp_path: Path, engine: str
) -> None:
    ca = pki.ca.cert
    routes = "[{host: good.test, backend: good}, {host: wrong.test, backend: wrong}]"
    with tls_endpoint("secure", pki.a) as server, https_proxy(
        tmp_path,
        [pki.a],
        {
            "good": ([server], f'http: {{tls: true, ca_file: "{ca}", server_name: {A}}}'),
            "wrong": ([server], f'http: {{tls: true, ca_file: "{ca}", server_name: {B}}}'),
        },
        routes,
        plain=True,
        engine=engine,
    ) as p:
        url = f"http://{HOST}:{p.ports['plain']}"
        r = requests.get(url + "/echo/1", headers={"Host": "good.test"}, timeout=POLL)
        assert r.status_code == 200, r.text
        assert r.json()["endpoint"] == "secure" and r.json()["path"] == "/echo/1"
        assert headers_of(r.json())["x-forwarded-proto"] == ["http"]
        assert server.sni[-1] == A  # server_name is the SNI sent
        # Through the HTTPS listener too: HTTPS both ways.
        reply = https_get(p, A, client_context(pki.ca), path="/echo/2", host="good.test")
        assert reply.status == 200 and sent_headers(reply)["x-forwarded-proto"] == ["https"]
        seen = len(server.seen.requests)
        # The endpoint's certificate is not valid for b.example.test: refused, 502.
        r = requests.get(url + "/echo/3", headers={"Host": "wrong.test"}, timeout=POLL)
        # HAProxy answers a failed connect (here: the handshake) 503, the built-in 502
        # (docs/forwarding.md, "What still differs").
        assert r.status_code == (502 if engine == "builtin" else 503)
        assert len(server.seen.requests) == seen  # the request never went out
        assert B in server.sni
        # The good backend still works after the failure.
        r = requests.get(url + "/echo/4", headers={"Host": "good.test"}, timeout=POLL)
        assert r.status_code == 200
        assert p.server.alive()


# --- metrics --------------------------------------------------------------------------------


def test_http_listener_metrics_pass_promtool(pki: Pki, tmp_path: Path) -> None:
    if shutil.which("promtool") is None:
        pytest.skip("needs promtool (Debian's prometheus package)")
    routes = "[{host: api.test, path_prefix: /v1/, backend: app}, {host: web.test, backend: app}]"
    with endpoints("e") as servers, https_proxy(
        tmp_path, [pki.a, pki.b], {"app": (servers, "")}, routes, plain=True
    ) as p:
        url = f"http://{HOST}:{p.ports['plain']}"
        for host, path in [("api.test", "/v1/x"), ("web.test", "/status/503"),
                           ("none.test", "/"), ("web.test", "/status/302")]:  # fmt: skip
            requests.get(url + path, headers={"Host": host}, timeout=POLL, allow_redirects=False)
        with p.connect("plain") as sock:  # a 400
            sock.sendall(b"\x00garbage\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 400 ")
        assert https_get(p, A, client_context(pki.ca), host="web.test").status == 200
        metrics = p.server.metrics()
        def count(name: str, **labels: str) -> float:
            return metric_value(metrics, name, **labels)

        requests_total = "anycastedge_http_requests_total"
        assert count(requests_total, listener="plain", route="api.test/v1/", status="2xx") == 1
        assert count(requests_total, listener="plain", route="web.test/", status="5xx") == 1
        assert count(requests_total, listener="plain", route="web.test/", status="3xx") == 1
        assert count(requests_total, listener="web", route="web.test/", status="2xx") == 1
        refused = "anycastedge_http_refused_total"
        assert count(refused, listener="plain", reason="no_route") == 1
        assert count(refused, listener="plain", reason="bad_request") == 1
        assert count(refused, listener="web", reason="bad_request") == 0
        assert count("anycastedge_http_request_duration_seconds_count", listener="web") == 1
        result = subprocess.run(
            ["promtool", "check", "metrics"],
            input=metrics, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
