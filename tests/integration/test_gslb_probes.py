"""probe against real HTTP(S) and TCP servers on loopback addresses (127/8 and ::1)."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from anycastedge.health.check import CheckTarget, HealthCheck
from anycastedge.health.probes import BODY_LIMIT, probe
from tests.support.backends import Backend, serving
from tests.support.procs import free_port

ADDR_A, ADDR_B = "127.0.0.11", "127.0.0.12"
CERT_NAME = "gslb.test"
HTTP = HealthCheck(protocol="HTTP", path="/_dns", port=0, timeout=5.0)


def http(address: str, backend: Backend, **check: object) -> CheckTarget:
    """An HTTP target for ``backend`` with ``check``'s fields over the HTTP defaults."""
    return CheckTarget(address, replace(HTTP, port=backend.port, **check))  # type: ignore[arg-type]


@pytest.fixture
def backend_a() -> Iterator[Backend]:
    with serving(ADDR_A, Backend()) as backend:
        yield backend


@pytest.fixture
def backend_b() -> Iterator[Backend]:
    with serving(ADDR_B, Backend()) as backend:
        yield backend


def test_status_200_passes(backend_a: Backend) -> None:
    """A 200 from the target address is a pass, requested at the check's path."""
    result = probe(http(ADDR_A, backend_a))
    assert (result.ok, result.detail) == (True, "status 200")
    assert result.latency >= 0
    assert [path for path, _ in backend_a.requests] == ["/_dns"]


def test_status_503_fails_and_recovers(backend_a: Backend) -> None:
    """The status the test switches to is what the probe judges, check by check."""
    target = http(ADDR_A, backend_a)
    backend_a.status = 503
    result = probe(target)
    assert (result.ok, result.detail) == (False, "status 503")
    backend_a.status = 200
    assert probe(target).ok


def test_expect_status_is_the_set_given(backend_a: Backend) -> None:
    """Only the configured statuses pass: 204 fails a check that expects 200 alone."""
    backend_a.status = 204
    backend_a.body = b""
    assert probe(http(ADDR_A, backend_a, expect_status=frozenset({204}))).ok
    result = probe(http(ADDR_A, backend_a, expect_status=frozenset({200})))
    assert (result.ok, result.detail) == (False, "status 204")


def test_redirects_are_not_followed(backend_a: Backend, backend_b: Backend) -> None:
    """A 302 is judged as a 302: the probe never follows it to another server."""
    backend_a.status = 302
    backend_a.location = f"http://{ADDR_B}:{backend_b.port}/elsewhere"
    assert probe(http(ADDR_A, backend_a)).detail == "status 302"
    result = probe(http(ADDR_A, backend_a, expect_status=frozenset({200})))
    assert (result.ok, result.detail) == (False, "status 302")
    assert backend_b.requests == []


def test_body_substring(backend_a: Backend) -> None:
    """With ``body`` set, the decoded body must contain it; a 200 without it fails."""
    backend_a.body = "state: OK ✓".encode()
    assert probe(http(ADDR_A, backend_a, body="OK ✓")).ok
    backend_a.body = b"state: DEGRADED"
    result = probe(http(ADDR_A, backend_a, body="OK"))
    assert (result.ok, result.detail) == (False, "status 200, body lacks 'OK'")


def test_body_is_read_only_up_to_the_limit(backend_a: Backend) -> None:
    """Text past the first 64 KiB of a body is not looked at (and not downloaded)."""
    backend_a.body = b"x" * BODY_LIMIT + b"OK"
    assert not probe(http(ADDR_A, backend_a, body="OK")).ok
    backend_a.body = b"x" * (BODY_LIMIT - 2) + b"OK"
    assert probe(http(ADDR_A, backend_a, body="OK")).ok


def test_host_header_is_the_configured_host(backend_a: Backend) -> None:
    """The Host header is the check's host (the address when none is set), not the address."""
    assert probe(http(ADDR_A, backend_a, host="www.gslb.test")).ok
    assert probe(http(ADDR_A, backend_a)).ok
    hosts = [host for _, host in backend_a.requests]
    assert hosts == ["www.gslb.test", f"{ADDR_A}:{backend_a.port}"]


def test_each_address_is_probed_on_its_own(backend_a: Backend, backend_b: Backend) -> None:
    """Two targets with the same host but different addresses reach their own servers."""
    backend_b.status = 503
    assert probe(http(ADDR_A, backend_a, host="www.gslb.test")).ok
    assert not probe(http(ADDR_B, backend_b, host="www.gslb.test")).ok
    assert len(backend_a.requests) == len(backend_b.requests) == 1


def test_connection_refused_fails() -> None:
    """Nothing listening: a failure that says so, without waiting out the timeout."""
    port = free_port(ADDR_A)
    result = probe(CheckTarget(ADDR_A, replace(HTTP, port=port)))
    assert (result.ok, result.detail) == (False, "connection refused")


def test_a_server_that_never_answers_times_out() -> None:
    """A server that accepts but never responds fails with 'timeout' after the check's timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((ADDR_A, 0))
        listener.listen(4)  # the kernel completes the handshake; nobody ever reads
        port = listener.getsockname()[1]
        result = probe(CheckTarget(ADDR_A, replace(HTTP, port=port, timeout=0.3)))
    assert (result.ok, result.detail) == (False, "timeout")


def test_tcp_check_connects_or_is_refused() -> None:
    """A TCP check passes on a listening port and fails on a closed one."""
    tcp = HealthCheck(protocol="TCP", port=0, timeout=5.0)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((ADDR_B, 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        result = probe(CheckTarget(ADDR_B, replace(tcp, port=port)))
        assert (result.ok, result.detail) == (True, "connected")
    result = probe(CheckTarget(ADDR_B, replace(tcp, port=free_port(ADDR_B))))
    assert (result.ok, result.detail) == (False, "connection refused")


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_targets() -> None:
    """HTTP and TCP checks of an IPv6 address; the default Host header brackets it."""
    with serving("::1", Backend()) as backend:
        assert probe(http("::1", backend)).ok
        tcp = CheckTarget("::1", HealthCheck(protocol="TCP", port=backend.port, timeout=5.0))
        assert probe(tcp).ok
        backend.status = 500
        assert probe(http("::1", backend)).detail == "status 500"
        assert backend.requests[0][1] == f"[::1]:{backend.port}"


# --- HTTPS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for CERT_NAME, made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl CLI")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            f"/CN={CERT_NAME}",
            "-addext",
            f"subjectAltName=DNS:{CERT_NAME}",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.fixture
def tls_backend(certificate: tuple[Path, Path]) -> Iterator[Backend]:
    """An HTTPS server on ADDR_B with the self-signed certificate; it records the SNI it gets."""
    backend = Backend()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)

    def record_sni(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        backend.sni.append(name)

    context.sni_callback = record_sni  # type: ignore[assignment]
    with serving(ADDR_B, backend, context):
        yield backend


def https(backend: Backend, **check: object) -> CheckTarget:
    return http(ADDR_B, backend, protocol="HTTPS", **check)


def test_https_sends_host_as_sni_and_header(tls_backend: Backend) -> None:
    """Connecting to the address, the probe names the host in SNI and in the Host header."""
    result = probe(https(tls_backend, host=CERT_NAME))
    assert (result.ok, result.detail) == (True, "status 200")
    assert tls_backend.sni == [CERT_NAME]
    assert tls_backend.requests == [("/_dns", CERT_NAME)]


def test_https_without_host_sends_no_sni(tls_backend: Backend) -> None:
    """With no host there is no name to send: no SNI (an IP address is never sent as SNI)."""
    assert probe(https(tls_backend)).ok
    assert tls_backend.sni == [None]


def test_https_status_and_body_are_judged(tls_backend: Backend) -> None:
    """Over TLS, status and body are judged as over plain HTTP."""
    tls_backend.status = 503
    assert probe(https(tls_backend, host=CERT_NAME)).detail == "status 503"
    tls_backend.status = 200
    tls_backend.body = b"nope"
    assert not probe(https(tls_backend, host=CERT_NAME, body="OK")).ok


def test_https_verification_is_opt_in(tls_backend: Backend) -> None:
    """A self-signed certificate passes without tls_verify and fails with it, saying why."""
    assert probe(https(tls_backend, host=CERT_NAME, tls_verify=False)).ok
    result = probe(https(tls_backend, host=CERT_NAME, tls_verify=True))
    assert not result.ok
    assert "CERTIFICATE_VERIFY_FAILED" in result.detail
    assert len(tls_backend.requests) == 1  # the failed handshake never got to send a request


def test_plain_http_to_a_tls_port_fails_cleanly(tls_backend: Backend) -> None:
    """A protocol mismatch is a failed result with the exception named, never an exception."""
    result = probe(http(ADDR_B, tls_backend))
    assert not result.ok
    assert result.detail


def test_https_verification_checks_the_host_name(
    tls_backend: Backend, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the certificate trusted, tls_verify checks it against host, not against the address."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # OpenSSL's default trust store
    assert probe(https(tls_backend, host=CERT_NAME, tls_verify=True)).ok
    result = probe(https(tls_backend, host="other.test", tls_verify=True))
    assert not result.ok
    assert "Hostname mismatch" in result.detail
    assert not probe(https(tls_backend, tls_verify=True)).ok  # the address is not the name
