"""forward/tls.py over real loopback sockets: a Twisted server process with ServerTls, probed
with Python's ssl module; ClientTls in a Twisted process against a Python ssl server."""

from __future__ import annotations

import json
import selectors
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.backends import Backend, serving
from tests.support.certs import Ca, make_ca, make_cert
from tests.support.procs import stop_process
from tests.support.server import REPO

HOST = "127.0.0.1"
WAIT = 30.0  # seconds for a child process to answer a line


@dataclass(frozen=True)
class Pki:
    """The test CA and the certificates it signed."""

    ca: Ca
    other_ca: Ca  # trusted by nobody here
    a: tuple[Path, Path]  # a.example.test
    b: tuple[Path, Path]  # b.example.test
    wild: tuple[Path, Path]  # *.example.test
    directory: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA; certificates for a., b. and *.example.test."""
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory)
    return Pki(
        ca=ca,
        other_ca=make_ca(directory, "other test CA"),
        a=make_cert(ca, directory, "a", ["a.example.test"]),
        b=make_cert(ca, directory, "b", ["b.example.test"]),
        wild=make_cert(ca, directory, "wild", ["*.example.test"]),
        directory=directory,
    )


# --- the Twisted peer process


class Peer:
    """A running ``tests.support.tls_peer`` process: lines in, lines out, bounded waits."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.selector = selectors.DefaultSelector()
        assert proc.stdout is not None
        self.selector.register(proc.stdout, selectors.EVENT_READ)
        self.buffer = b""

    def read_line(self, timeout: float = WAIT) -> str:
        """The next line the process prints; fails after ``timeout`` seconds or at its exit."""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            assert left > 0, f"no line from the peer within {timeout}s"
            if self.selector.select(left):
                chunk = self.proc.stdout.read1(4096)  # type: ignore[attr-defined]
                assert chunk, f"the peer exited ({self.proc.wait(timeout=WAIT)})"
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def command(self, line: str) -> str:
        """Send a command line and return the answer line."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        return self.read_line()


def peer_command(command: str, spec: dict[str, Any]) -> list[str]:
    return [sys.executable, "-B", "-m", "tests.support.tls_peer", command, json.dumps(spec)]


@contextmanager
def tls_server(spec: dict[str, Any], log: Path) -> Iterator[tuple[Peer, int]]:
    """The peer's echo server for ``spec``, once it is listening: (peer, port)."""
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            peer_command("serve", spec),
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        peer = Peer(proc)
        ready = peer.read_line()
        assert ready.startswith("ready "), ready
        yield peer, int(ready.split()[1])
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the peer stops its reactor when standard input closes
        try:
            proc.wait(timeout=WAIT)
        finally:
            stop_process(proc)  # type: ignore[arg-type]
            assert proc.stdout is not None
            proc.stdout.close()


def certs_spec(*pairs: tuple[Path, Path], **extra: Any) -> dict[str, Any]:
    return {"certificates": [{"cert": str(c), "key": str(k)} for c, k in pairs], **extra}


# --- a Python ssl client


def client_context(
    ca: Ca, version: ssl.TLSVersion | None = None, alpn: list[str] | None = None
) -> ssl.SSLContext:
    """Trusts ``ca``, checks no name (the tests look at the certificate themselves)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cafile=str(ca.cert))
    if version is not None:
        # Our own side must be willing to offer the old version: what fails must be the server.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        context.minimum_version = context.maximum_version = version
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


@dataclass(frozen=True)
class Seen:
    """What a TLS client saw of the server."""

    names: tuple[str, ...]  # the served certificate's DNS subjectAltNames
    cn: str
    version: str | None
    compression: str | None
    cipher: str
    reply: bytes  # the echo: "sni=... alpn=...|" and what was sent


def connect(port: int, sni: str | None, context: ssl.SSLContext) -> Seen:
    """Handshake with ``sni`` (None: no SNI), send a line, read the echo."""
    with socket.create_connection((HOST, port), timeout=WAIT) as raw:
        with context.wrap_socket(raw, server_hostname=sni) as tls:
            cert = tls.getpeercert()
            assert cert is not None
            tls.sendall(b"ping")
            reply = b""
            while not reply.endswith(b"ping"):
                chunk = tls.recv(4096)
                assert chunk, reply
                reply += chunk
            cipher = tls.cipher()
            assert cipher is not None
            return Seen(
                names=tuple(
                    value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"
                ),
                cn=next(v for rdn in cert["subject"] for k, v in rdn if k == "commonName"),
                version=tls.version(),
                compression=tls.compression(),
                cipher=cipher[0],
                reply=reply,
            )


# --- server side


@pytest.fixture(scope="module")
def sni_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """Certificates a (the default), b and the wildcard: the server's port."""
    log = tmp_path_factory.mktemp("sni") / "peer.log"
    with tls_server(certs_spec(pki.a, pki.b, pki.wild), log) as (_, port):
        yield port


@pytest.mark.parametrize(
    ("sni", "served"),
    [
        ("a.example.test", "a.example.test"),
        ("b.example.test", "b.example.test"),
        ("B.Example.Test", "b.example.test"),  # names compare case-insensitively
        ("c.example.test", "*.example.test"),  # the wildcard covers a name it has no exact cert for
        ("x.c.example.test", "a.example.test"),  # ... but one label only: the default
        ("example.test", "a.example.test"),  # ... and not the suffix itself
        ("unknown.test", "a.example.test"),  # an unknown name: the first certificate
        (None, "a.example.test"),  # no SNI: the first certificate
    ],
)
def test_certificate_by_sni(pki: Pki, sni_server: int, sni: str | None, served: str) -> None:
    """Exact names beat the wildcard; the first certificate is the default."""
    seen = connect(sni_server, sni, client_context(pki.ca))
    assert seen.names == (served,)
    assert seen.reply == f"sni={sni.lower() if sni else '-'} alpn=-|ping".encode()


def test_modern_defaults(pki: Pki, sni_server: int) -> None:
    """TLS 1.3 when the client can, no compression, ALPN http/1.1 chosen when offered."""
    seen = connect(sni_server, "a.example.test", client_context(pki.ca, alpn=["h2", "http/1.1"]))
    assert seen.version == "TLSv1.3"
    assert seen.compression is None
    assert seen.reply == b"sni=a.example.test alpn=http/1.1|ping"
    # A client offering only protocols we do not speak still gets HTTP/1.1, without ALPN.
    seen = connect(sni_server, "a.example.test", client_context(pki.ca, alpn=["h2"]))
    assert seen.reply == b"sni=a.example.test alpn=-|ping"


def test_tls12_uses_the_configured_ciphers(pki: Pki, sni_server: int) -> None:
    """TLS 1.2 is served, with a forward-secret AEAD suite of the default cipher string; the
    certificate chosen by SNI is the same as with TLS 1.3."""
    seen = connect(sni_server, "b.example.test", client_context(pki.ca, ssl.TLSVersion.TLSv1_2))
    assert seen.version == "TLSv1.2"
    assert seen.cipher.startswith("ECDHE-") and ("GCM" in seen.cipher or "CHACHA" in seen.cipher)
    assert seen.names == ("b.example.test",)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_versions_refused(pki: Pki, sni_server: int, version: ssl.TLSVersion) -> None:
    """TLS 1.0 and 1.1 are refused by the server (a protocol_version alert)."""
    with pytest.raises(ssl.SSLError, match="ALERT_PROTOCOL_VERSION"):
        connect(sni_server, "a.example.test", client_context(pki.ca, version))


def test_min_version_13_refuses_tls12(pki: Pki, tmp_path: Path) -> None:
    """min_version 1.3: TLS 1.2 is refused, 1.3 served."""
    with tls_server(certs_spec(pki.a, min_version="1.3"), tmp_path / "peer.log") as (_, port):
        with pytest.raises(ssl.SSLError, match="ALERT_PROTOCOL_VERSION"):
            connect(port, "a.example.test", client_context(pki.ca, ssl.TLSVersion.TLSv1_2))
        assert connect(port, "a.example.test", client_context(pki.ca)).version == "TLSv1.3"


def test_adopted_socket(pki: Pki, tmp_path: Path) -> None:
    """wrap(factory) serves TLS on a port adopted with reactor.adoptStreamPort."""
    spec = certs_spec(pki.a, pki.b, adopt=True)
    with tls_server(spec, tmp_path / "peer.log") as (_, port):
        seen = connect(port, "b.example.test", client_context(pki.ca))
        assert seen.names == ("b.example.test",)
        assert seen.reply == b"sni=b.example.test alpn=-|ping"


def test_reload(pki: Pki, tmp_path: Path) -> None:
    """A reload picks up new files for new connections; a broken file fails the reload with
    TlsError naming the file, and the certificates loaded before are still served."""
    live = tmp_path / "live"
    live.mkdir()
    cert, key = live / "a.pem", live / "a.key"
    cert.write_bytes(pki.a[0].read_bytes())
    key.write_bytes(pki.a[1].read_bytes())
    spec = certs_spec((cert, key), pki.b)
    with tls_server(spec, tmp_path / "peer.log") as (peer, port):
        context = client_context(pki.ca)
        assert connect(port, "a.example.test", context).cn == "a.example.test"

        # A renewed certificate, with another subject to tell them apart.
        new_cert, new_key = make_cert(
            pki.ca, tmp_path / "new", "a2", ["a.example.test"], cn="a.example.test renewed"
        )
        cert.write_bytes(new_cert.read_bytes())
        key.write_bytes(new_key.read_bytes())
        assert peer.command("reload") == "reloaded"
        assert connect(port, "a.example.test", context).cn == "a.example.test renewed"

        # Broken PEM: refused, named; the renewed certificate is still served.
        cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
        answer = peer.command("reload")
        assert answer.startswith("error ") and str(cert) in answer, answer
        assert connect(port, "a.example.test", context).cn == "a.example.test renewed"

        # A key that is not the certificate's: refused, the key file named.
        cert.write_bytes(new_cert.read_bytes())
        key.write_bytes(pki.b[1].read_bytes())
        answer = peer.command("reload")
        assert answer.startswith("error ") and str(key) in answer and "match" in answer, answer
        assert connect(port, "a.example.test", context).cn == "a.example.test renewed"

        # A missing file: refused, named.
        key.unlink()
        answer = peer.command("reload")
        assert answer.startswith("error ") and str(key) in answer, answer
        assert connect(port, "b.example.test", context).names == ("b.example.test",)


def test_first_load_errors_name_the_file(pki: Pki, tmp_path: Path) -> None:
    """A server that cannot load its certificates does not start, and says which file."""
    missing = tmp_path / "missing.pem"
    proc = subprocess.run(
        peer_command("serve", certs_spec(pki.a, (missing, pki.b[1]))),
        cwd=REPO,
        capture_output=True,
        timeout=WAIT,
    )
    assert proc.returncode == 1
    assert proc.stdout.decode().startswith(f"error {missing}: cannot read")


# --- client side


@pytest.fixture(scope="module")
def https_backend(pki: Pki) -> Iterator[Backend]:
    """A Python HTTPS server with a.example.test's certificate; it records the SNI it gets."""
    backend = Backend()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*pki.a)

    def record_sni(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        backend.sni.append(name)

    context.sni_callback = record_sni  # type: ignore[assignment]
    with serving(HOST, backend, context):
        yield backend


def fetch(backend: Backend, host: str, **http: Any) -> dict[str, str]:
    """One GET through ClientTls(BackendHttp(tls=True, **http)).creator(host), in a process."""
    spec = {"http": {"tls": True, **http}, "host": host, "port": backend.port}
    proc = subprocess.run(
        peer_command("fetch", spec), cwd=REPO, capture_output=True, timeout=WAIT, check=True
    )
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_client_verifies_against_the_ca(pki: Pki, https_backend: Backend) -> None:
    """Verified against ca_file for the Host's name, which is also sent in SNI."""
    https_backend.sni.clear()
    assert fetch(https_backend, "a.example.test", ca_file=str(pki.ca.cert)) == {
        "status": "HTTP/1.0 200 OK"
    }
    assert https_backend.sni == ["a.example.test"]


def test_client_server_name_overrides_the_host(pki: Pki, https_backend: Backend) -> None:
    """server_name is what is sent and verified, whatever the request's Host."""
    https_backend.sni.clear()
    result = fetch(
        https_backend, "www.other.test", ca_file=str(pki.ca.cert), server_name="a.example.test"
    )
    assert result == {"status": "HTTP/1.0 200 OK"}
    assert https_backend.sni == ["a.example.test"]


def test_client_refuses_a_wrong_name(pki: Pki, https_backend: Backend) -> None:
    """The certificate is for a.example.test: a request for b.example.test fails."""
    result = fetch(https_backend, "b.example.test", ca_file=str(pki.ca.cert))
    assert "DNSMismatch" in result["error"], result


def test_client_refuses_an_unknown_ca(pki: Pki, https_backend: Backend) -> None:
    """Signed by a CA not in ca_file (nor in the platform's trust store): refused."""
    result = fetch(https_backend, "a.example.test", ca_file=str(pki.other_ca.cert))
    assert "certificate verify failed" in result["error"], result
    result = fetch(https_backend, "a.example.test")  # the platform's trust store
    assert "certificate verify failed" in result["error"], result


def test_client_without_verify(pki: Pki, https_backend: Backend) -> None:
    """verify: false connects whatever the name and CA, and still sends SNI."""
    https_backend.sni.clear()
    assert fetch(https_backend, "b.example.test", verify=False) == {"status": "HTTP/1.0 200 OK"}
    assert https_backend.sni == ["b.example.test"]


def test_client_bad_ca_file(tmp_path: Path, https_backend: Backend) -> None:
    """A ca_file without a certificate: TlsError naming it."""
    bad = tmp_path / "ca.pem"
    bad.write_text("nothing\n")
    result = fetch(https_backend, "a.example.test", ca_file=str(bad))
    assert result["error"].startswith(f"TlsError {bad}: no PEM certificate"), result
