"""forward/tls.py without sockets: certificates by SNI over in-memory handshakes, load errors,
check_certificates, and ClientTls's names and cache."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from anycastedge.forward.model import BackendHttp, Certificate, ListenerTls
from anycastedge.forward.tls import (
    ClientTls,
    ServerTls,
    TlsError,
    check_certificates,
    covers,
    server_name,
)
from tests.support.certs import Ca, make_ca, make_cert


@dataclass(frozen=True)
class Files:
    """Certificates signed by a test CA, as model Certificates."""

    ca: Ca
    a: Certificate  # a.example.test
    b: Certificate  # b.example.test
    wild: Certificate  # *.example.test
    cn_only: Certificate  # no subjectAltName; CN cn.example.test
    directory: Path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory)

    def cert(stem: str, names: list[str], cn: str | None = None) -> Certificate:
        pem, key = make_cert(ca, directory, stem, names, cn)
        return Certificate(str(pem), str(key))

    return Files(
        ca=ca,
        a=cert("a", ["a.example.test"]),
        b=cert("b", ["b.example.test"]),
        wild=cert("wild", ["*.example.test"]),
        cn_only=cert("cn", [], cn="cn.example.test"),
        directory=directory,
    )


def served(server: ServerTls, sni: str | None) -> str:
    """Handshake in memory with ``sni``; the served certificate's first DNS name (or CN)."""
    client = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
    client.set_connect_state()
    if sni is not None:
        client.set_tlsext_host_name(sni.encode())
    accepted = server.serverConnectionForTLS(None)  # type: ignore[arg-type]
    accepted.set_accept_state()
    for _ in range(20):
        for side in (client, accepted):
            try:
                side.do_handshake()
            except SSL.WantReadError:
                pass
        for source, sink in ((client, accepted), (accepted, client)):
            try:
                sink.bio_write(source.bio_read(65536))
            except SSL.WantReadError:
                pass
        peer = client.get_peer_certificate(as_cryptography=True)
        if peer is not None and accepted.get_peer_finished() is not None:
            break
    assert peer is not None
    try:
        san = peer.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return str(san.get_values_for_type(x509.DNSName)[0])
    except x509.ExtensionNotFound:
        return str(peer.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)


def listener(*certificates: Certificate, **settings: str) -> ListenerTls:
    return ListenerTls(certificates=certificates, **settings)


def test_names_from_the_certificates(files: Files) -> None:
    """SAN names (exact and wildcard), CN when there is no SAN; the first is the default."""
    server = ServerTls(listener(files.a, files.b, files.wild, files.cn_only))
    assert served(server, "a.example.test") == "a.example.test"
    assert served(server, "b.example.test") == "b.example.test"
    assert served(server, "cn.example.test") == "cn.example.test"  # exact beats the wildcard
    assert served(server, "zz.example.test") == "*.example.test"
    assert served(server, "b.example.test.") == "b.example.test"  # a trailing dot is the same
    assert served(server, "y.zz.example.test") == "a.example.test"
    assert served(server, "other.test") == "a.example.test"
    assert served(server, None) == "a.example.test"


def test_exact_beats_wildcard_whatever_the_order(files: Files) -> None:
    """The wildcard listed first (so the default) still loses to an exact name."""
    server = ServerTls(listener(files.wild, files.b))
    assert served(server, "b.example.test") == "b.example.test"
    assert served(server, "a.example.test") == "*.example.test"
    assert served(server, None) == "*.example.test"


def test_hosts_replace_the_certificates_names(files: Files) -> None:
    """A certificate with hosts is served for those (exact or *.suffix), not its own names."""
    b = replace(files.b, hosts=("alias.test", "*.Pattern.Test"))
    server = ServerTls(listener(files.a, b))
    assert served(server, "alias.test") == "b.example.test"
    assert served(server, "x.pattern.test") == "b.example.test"
    assert served(server, "b.example.test") == "a.example.test"


def test_a_name_listed_twice_goes_to_the_first(files: Files) -> None:
    b_too = replace(files.b, hosts=("a.example.test",))
    assert served(ServerTls(listener(files.a, b_too)), "a.example.test") == "a.example.test"


def test_reload_with_new_settings_and_failed_reload(files: Files) -> None:
    """reload(tls) swaps to the new certificates; a failing reload keeps the current ones."""
    server = ServerTls(listener(files.a))
    server.reload(listener(files.b))
    assert served(server, "a.example.test") == "b.example.test"
    broken = listener(files.a, Certificate(str(files.directory / "nope.pem"), files.a.key))
    with pytest.raises(TlsError, match="nope.pem: cannot read"):
        server.reload(broken)
    assert server.settings == listener(files.b)
    assert served(server, "a.example.test") == "b.example.test"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: listener(), "no certificate"),
        (lambda f: listener(Certificate(f.a.cert, f.b.key)), r"b\.key: the private key does not"),
        (lambda f: listener(Certificate(f.a.key, f.a.key)), r"a\.key: no PEM certificate"),
        (lambda f: listener(Certificate(f.a.cert, f.a.cert)), r"a\.pem: no PEM private key"),
        (lambda f: listener(replace(f.a, hosts=("a*.test",))), "neither a name nor"),
        (lambda f: listener(f.a, ciphers="NOPE"), "ciphers 'NOPE'"),
        (lambda f: listener(f.a, min_version="1.1"), "min_version '1.1'"),
    ],
)
def test_load_errors(files: Files, change: object, message: str) -> None:
    """Each problem is a TlsError that says which file or setting."""
    with pytest.raises(TlsError, match=message):
        ServerTls(change(files))  # type: ignore[operator]


def test_encrypted_key(files: Files, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(Path(files.a.key).read_bytes(), None)
    encrypted = tmp_path / "enc.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(TlsError, match=r"enc\.key: the key is encrypted"):
        ServerTls(listener(Certificate(files.a.cert, str(encrypted))))


def test_check_certificates(files: Files) -> None:
    """No problem for a good set; expiry, names the certificate lacks, a name served twice and
    unreadable files are reported."""
    assert check_certificates(listener(files.a, files.b, files.wild)) == []
    later, earlier = (datetime.now(UTC) + timedelta(days=days) for days in (30, -30))
    [expired] = check_certificates(listener(files.a), now=later)
    assert expired.startswith(f"{files.a.cert}: expired on ")
    [early] = check_certificates(listener(files.a), now=earlier)
    assert early.startswith(f"{files.a.cert}: not valid before ")
    problems = check_certificates(
        listener(
            files.a,
            replace(files.b, hosts=("b.example.test", "c.example.test")),
            replace(files.wild, hosts=("a.example.test",)),
            Certificate(files.a.cert, files.b.key),
        )
    )
    assert problems == [
        f"{files.b.cert}: not valid for c.example.test (clients will refuse it)",
        f"{files.wild.cert}: a.example.test is served with {files.a.cert}, listed before it",
        f"{files.b.key}: the private key does not match the certificate in {files.a.cert}",
    ]
    assert check_certificates(listener(files.a, ciphers="NOPE")) == [
        "ciphers 'NOPE': no cipher suite matches"
    ]


def test_covers() -> None:
    names = ("a.example.test", "*.wild.test")
    assert covers(names, "A.Example.Test.")
    assert covers(names, "x.wild.test")
    assert covers(names, "*.wild.test")
    assert not covers(names, "x.y.wild.test")
    assert not covers(names, "wild.test")
    assert not covers(names, "*.example.test")


def test_server_name_of_a_plain_transport() -> None:
    assert server_name(object()) is None


# --- client


def test_client_names() -> None:
    """server_name wins over the Host; IPv6 brackets, case and a trailing dot are dropped."""
    assert ClientTls(BackendHttp(tls=True)).name_for("WWW.Example.Test.") == "www.example.test"
    assert ClientTls(BackendHttp(tls=True)).name_for("[::1]") == "::1"
    pinned = ClientTls(BackendHttp(tls=True, server_name="api.internal"))
    assert pinned.name_for("www.example.test") == "api.internal"


def test_client_creators_are_cached_and_bounded(files: Files) -> None:
    client = ClientTls(BackendHttp(tls=True, ca_file=str(files.ca.cert)), cache_size=2)
    first = client.creator("a.example.test")
    assert client.creator("A.example.test") is first
    client.creator("b.example.test")
    client.creator("a.example.test")  # most recently used: kept
    client.creator("c.example.test")  # evicts b
    assert client.creator("a.example.test") is first
    assert len(client._creators) == 2


def test_client_errors(files: Files, tmp_path: Path) -> None:
    with pytest.raises(TlsError, match="no server name"):
        ClientTls(BackendHttp(tls=True)).creator("")
    with pytest.raises(TlsError, match=r"missing\.pem: cannot read"):
        ClientTls(BackendHttp(tls=True, ca_file=str(tmp_path / "missing.pem")))
    # verify off: the CA file is not needed, so not read
    ClientTls(BackendHttp(tls=True, verify=False, ca_file=str(tmp_path / "missing.pem")))


def test_unverified_creator_sends_sni_but_not_for_an_address() -> None:
    client = ClientTls(BackendHttp(tls=True, verify=False))
    connection = client.creator("a.example.test").clientConnectionForTLS(None)  # type: ignore[arg-type]
    assert connection.get_servername() == b"a.example.test"
    connection = client.creator("192.0.2.1").clientConnectionForTLS(None)  # type: ignore[arg-type]
    assert connection.get_servername() is None
