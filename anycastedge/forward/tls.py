"""TLS for the HTTP forwarding tier: certificates served by SNI, and HTTPS to backends.

Listening: a :class:`ServerTls` is an ``IOpenSSLServerConnectionCreator``, so it is what
``reactor.listenSSL(port, factory, server_tls, ...)`` takes as its context factory; for a socket
handed over with ``reactor.adoptStreamPort`` (which knows no TLS), ``server_tls.wrap(factory)``
gives the TLS-wrapped factory to adopt instead. :meth:`ServerTls.reload` swaps certificates for
the connections accepted afterwards, without touching the port.

Connecting: ``ClientTls(backend.http).creator(host)`` is an ``IOpenSSLClientConnectionCreator``
for ``reactor.connectSSL(ip, port, factory, creator)`` or
``TLSMemoryBIOFactory(creator, True, factory)``.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
)
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import implementer

from anycastedge.errors import AnycastEdgeError
from anycastedge.forward.model import BackendHttp, Certificate, ListenerTls

ALPN_HTTP1 = b"http/1.1"
MIN_VERSIONS = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}
# Compression invites CRIME; client-initiated renegotiation costs the server a handshake per
# request of a client; tickets are encrypted with one key for the process's life, which undoes
# forward secrecy (resumption still works from the server's session cache).
SERVER_OPTIONS = (
    SSL.OP_NO_COMPRESSION
    | SSL.OP_CIPHER_SERVER_PREFERENCE
    | SSL.OP_NO_RENEGOTIATION
    | SSL.OP_NO_TICKET
)
# The key types pyOpenSSL serves certificates with.
ServerKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)
CLIENT_CACHE_SIZE = 128  # creators per ClientTls: Host headers come from clients, so bounded


class TlsError(AnycastEdgeError):
    """A certificate, key or CA file, or a TLS setting, cannot be used; the message names it."""


# --- names


def normalize_name(name: str) -> str:
    """A DNS name as SNI and certificates compare it: lower case, no trailing dot."""
    return name.strip().rstrip(".").lower()


def is_wildcard(name: str) -> bool:
    """Whether ``name`` is a ``*.suffix`` pattern (the whole first label, as RFC 6125 allows)."""
    return name.startswith("*.") and "*" not in name[2:] and len(name) > 2


def wildcard_for(name: str) -> str | None:
    """The ``*.suffix`` pattern that covers ``name`` (one label only), if it has a parent."""
    _, dot, parent = name.partition(".")
    return f"*.{parent}" if dot and parent else None


def covers(names: tuple[str, ...], host: str) -> bool:
    """Whether a certificate for ``names`` is valid for ``host`` (itself a name or pattern)."""
    host = normalize_name(host)
    return host in names or (not is_wildcard(host) and wildcard_for(host) in names)


def certificate_names(cert: x509.Certificate) -> tuple[str, ...]:
    """The DNS names a certificate is valid for: its subjectAltName's, else its subject CN."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        found = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    else:
        found = list(san.get_values_for_type(x509.DNSName))
    names: list[str] = []
    for value in found:
        name = normalize_name(value if isinstance(value, str) else value.decode("ascii", "replace"))
        # Partial wildcards ("w*.example.com") are not matched by browsers either.
        if name and ("*" not in name or is_wildcard(name)) and name not in names:
            names.append(name)
    return tuple(names)


# --- loading


@dataclass(frozen=True, slots=True)
class LoadedCertificate:
    """A Certificate's files, read and checked: the chain, its key, the names it is served for."""

    source: Certificate
    chain: tuple[x509.Certificate, ...]  # leaf first
    key: ServerKey
    names: tuple[str, ...]  # exact names and "*.suffix" patterns, normalized


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as e:
        raise TlsError(f"{path}: cannot read: {e.strerror or e}") from None


def load_pem_certificates(path: str) -> tuple[x509.Certificate, ...]:
    """Every certificate in a PEM file, in order; TlsError naming the file if there is none."""
    data = _read(path)
    try:
        return tuple(x509.load_pem_x509_certificates(data))
    except ValueError:
        raise TlsError(f"{path}: no PEM certificate could be read") from None


def load_certificate(source: Certificate) -> LoadedCertificate:
    """Read and check one certificate's chain and key (TlsError names the file at fault)."""
    chain = load_pem_certificates(source.cert)
    try:
        key = serialization.load_pem_private_key(_read(source.key), password=None)
    except TypeError:
        raise TlsError(f"{source.key}: the key is encrypted (no passphrase is taken)") from None
    except ValueError:
        raise TlsError(f"{source.key}: no PEM private key could be read") from None
    if not isinstance(key, ServerKey):
        raise TlsError(f"{source.key}: a {type(key).__name__} cannot sign a TLS handshake")
    if key.public_key() != chain[0].public_key():
        raise TlsError(
            f"{source.key}: the private key does not match the certificate in {source.cert}"
        )
    if source.hosts:
        names: list[str] = []
        for host in source.hosts:
            name = normalize_name(host)
            if not name or ("*" in name and not is_wildcard(name)):
                raise TlsError(f"{source.cert}: host {host!r} is neither a name nor *.suffix")
            names.append(name)
        served = tuple(dict.fromkeys(names))
    else:
        served = certificate_names(chain[0])
    return LoadedCertificate(source, chain, key, served)


# --- server


def _select_alpn(
    connection: SSL.Connection, offered: list[bytes]
) -> bytes | SSL._NoOverlappingProtocols:
    # A client offering only protocols we do not speak (h2) still gets HTTP/1.1 without ALPN,
    # rather than the fatal alert RFC 7301 permits: such a client falls back more often than not.
    return ALPN_HTTP1 if ALPN_HTTP1 in offered else SSL.NO_OVERLAPPING_PROTOCOLS


def _settings(tls: ListenerTls) -> tuple[int, bytes]:
    """The minimum protocol version and the TLS 1.2 cipher list, checked."""
    try:
        min_version = MIN_VERSIONS[tls.min_version]
    except KeyError:
        raise TlsError(f"min_version {tls.min_version!r}: not one of 1.2, 1.3") from None
    try:
        ciphers = tls.ciphers.encode("ascii")
        SSL.Context(SSL.TLS_SERVER_METHOD).set_cipher_list(ciphers)
    except (SSL.Error, UnicodeEncodeError):
        raise TlsError(f"ciphers {tls.ciphers!r}: no cipher suite matches") from None
    return min_version, ciphers


def _keyed_context(loaded: LoadedCertificate) -> SSL.Context:
    """A server context holding the chain and its key."""
    source = loaded.source
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    try:
        context.use_certificate(loaded.chain[0])
        for extra in loaded.chain[1:]:
            context.add_extra_chain_cert(extra)
        context.use_privatekey(loaded.key)
    except (SSL.Error, TypeError) as e:
        raise TlsError(f"{source.cert}: OpenSSL refuses the certificate or key: {e}") from None
    return context


def _server_context(loaded: LoadedCertificate, min_version: int, ciphers: bytes) -> SSL.Context:
    # Every context gets the same settings, because switching a connection to another context
    # on SNI changes some of them (certificate, ALPN callback) and not others (options, versions,
    # ciphers).
    context = _keyed_context(loaded)
    context.set_min_proto_version(min_version)
    context.set_options(SERVER_OPTIONS)
    context.set_cipher_list(ciphers)
    context.set_alpn_select_callback(_select_alpn)
    return context


@dataclass(frozen=True, slots=True)
class _Contexts:
    """One load of a listener's certificates: the SSL context served for each name."""

    default: SSL.Context
    by_name: Mapping[str, SSL.Context]  # exact names and "*.suffix" patterns

    def for_name(self, name: str | None) -> SSL.Context:
        """The context for an SNI name: exact match, else its one-label wildcard, else default."""
        if not name:
            return self.default
        exact = self.by_name.get(name)
        if exact is not None:
            return exact
        pattern = wildcard_for(name)
        return self.by_name.get(pattern, self.default) if pattern else self.default

    def on_servername(self, connection: SSL.Connection) -> None:
        """The servername callback: switch the connection to the context for its SNI name."""
        raw = connection.get_servername()
        try:
            name = normalize_name(raw.decode("ascii")) if raw else None
        except UnicodeDecodeError:
            name = None  # SNI is an A-label; anything else gets the default certificate
        context = self.for_name(name)
        if context is not self.default:
            connection.set_context(context)


def _build(tls: ListenerTls) -> _Contexts:
    if not tls.certificates:
        raise TlsError("no certificate")
    min_version, ciphers = _settings(tls)
    loaded = [load_certificate(c) for c in tls.certificates]
    contexts = [_server_context(one, min_version, ciphers) for one in loaded]
    by_name: dict[str, SSL.Context] = {}
    for one, context in zip(loaded, contexts, strict=True):
        for name in one.names:
            by_name.setdefault(name, context)  # a name listed twice: the first certificate's
    table = _Contexts(contexts[0], by_name)
    # Only the context a connection starts with runs the callback: the default one.
    contexts[0].set_tlsext_servername_callback(table.on_servername)
    return table


@implementer(IOpenSSLServerConnectionCreator)
class ServerTls:
    """A listener's TLS: its certificates by SNI, reloadable; a connection creator for Twisted."""

    def __init__(self, tls: ListenerTls) -> None:
        self._tls = tls
        self._contexts = _build(tls)

    @property
    def settings(self) -> ListenerTls:
        """The ListenerTls currently served."""
        return self._tls

    def reload(self, tls: ListenerTls | None = None) -> None:
        """Re-read every file (of ``tls`` if given) and serve it to new connections; on any
        error raise TlsError and keep serving what was loaded before."""
        tls = self._tls if tls is None else tls
        contexts = _build(tls)
        # One assignment: a connection gets either the old set or the new one, never a mix.
        self._tls, self._contexts = tls, contexts

    def serverConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:  # noqa: N802, N803
        """A server-side OpenSSL connection starting on the default certificate (Twisted API)."""
        return SSL.Connection(self._contexts.default, None)

    def wrap(self, factory: IProtocolFactory) -> TLSMemoryBIOFactory:
        """``factory`` behind TLS: what to listen with via listenTCP or adoptStreamPort."""
        return TLSMemoryBIOFactory(cast(IOpenSSLServerConnectionCreator, self), False, factory)


def server_name(transport: object) -> str | None:
    """The SNI name a client sent on a TLS transport (normalized), or None."""
    get_handle = getattr(transport, "getHandle", None)
    handle = get_handle() if get_handle is not None else None
    if not isinstance(handle, SSL.Connection):
        return None
    raw = handle.get_servername()
    try:
        return normalize_name(raw.decode("ascii")) if raw else None
    except UnicodeDecodeError:
        return None


def check_certificates(
    tls: ListenerTls, now: datetime | None = None, dates: bool = True
) -> list[str]:
    """What is wrong with a listener's TLS settings and files (empty if nothing is); with
    ``dates``, certificates out of their validity period too."""
    now = now or datetime.now(UTC)
    problems: list[str] = []
    try:
        _settings(tls)
    except TlsError as e:
        problems.append(str(e))
    if not tls.certificates:
        problems.append("no certificate")
    served_by: dict[str, str] = {}
    for index, source in enumerate(tls.certificates):
        try:
            loaded = load_certificate(source)
            _keyed_context(loaded)
        except TlsError as e:
            problems.append(str(e))
            continue
        leaf = loaded.chain[0]
        if dates and leaf.not_valid_after_utc < now:
            problems.append(f"{source.cert}: expired on {leaf.not_valid_after_utc:%Y-%m-%d}")
        if dates and leaf.not_valid_before_utc > now:
            problems.append(f"{source.cert}: not valid before {leaf.not_valid_before_utc:%Y-%m-%d}")
        own = certificate_names(leaf)
        for host in source.hosts:
            if not covers(own, host):
                problems.append(f"{source.cert}: not valid for {host} (clients will refuse it)")
        if not loaded.names and index:
            problems.append(f"{source.cert}: no name to serve it for (only the first is default)")
        for name in loaded.names:
            if name in served_by:
                problems.append(
                    f"{source.cert}: {name} is served with {served_by[name]}, listed before it"
                )
            else:
                served_by[name] = source.cert
    return problems


# --- client


def _ca_certificates(ca_file: str) -> list[ssl.Certificate]:
    certificates = load_pem_certificates(ca_file)
    return [ssl.Certificate(crypto.X509.from_cryptography(c)) for c in certificates]


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedCreator:
    """Client connections that send SNI but accept any certificate (``verify: false``)."""

    def __init__(self, context: SSL.Context, name: str) -> None:
        self._context = context
        self._sni = None if _is_ip(name) else name.encode("idna")

    def clientConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:  # noqa: N802, N803
        """A client-side OpenSSL connection naming the server in SNI (Twisted API)."""
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        if self._sni is not None:
            connection.set_tlsext_host_name(self._sni)
        return connection


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _unverified_context() -> SSL.Context:
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION)
    context.set_alpn_protos([ALPN_HTTP1])
    return context


class ClientTls:
    """HTTPS to one backend's endpoints: connection creators by server name, cached."""

    def __init__(self, http: BackendHttp, cache_size: int = CLIENT_CACHE_SIZE) -> None:
        self._http = http
        self._cache_size = cache_size
        self._creators: OrderedDict[str, IOpenSSLClientConnectionCreator] = OrderedDict()
        # Read once, so that a bad CA file fails here (at load) and not on the first request.
        self._ca = _ca_certificates(http.ca_file) if http.verify and http.ca_file else None
        self._unverified = None if http.verify else _unverified_context()

    def name_for(self, host: str) -> str:
        """The name sent in SNI and verified: server_name, else ``host`` (a Host without port)."""
        name = self._http.server_name or host
        if name.startswith("[") and name.endswith("]"):
            name = name[1:-1]
        return normalize_name(name)

    def creator(self, host: str) -> IOpenSSLClientConnectionCreator:
        """The connection creator for a request to ``host``; TlsError if it is no usable name."""
        name = self.name_for(host)
        cached = self._creators.get(name)
        if cached is not None:
            self._creators.move_to_end(name)
            return cached
        created = self._create(name)
        self._creators[name] = created
        if len(self._creators) > self._cache_size:
            self._creators.popitem(last=False)
        return created

    def _create(self, name: str) -> IOpenSSLClientConnectionCreator:
        if not name:
            raise TlsError("no server name to connect to")
        try:
            if self._unverified is not None:
                creator = _UnverifiedCreator(self._unverified, name)
                return cast(IOpenSSLClientConnectionCreator, creator)
            return ssl.optionsForClientTLS(
                name,
                # None: the platform's trust store
                trustRoot=ssl.trustRootFromCertificates(self._ca) if self._ca else None,
                acceptableProtocols=[ALPN_HTTP1],
                extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
            )
        except (UnicodeError, ValueError) as e:
            raise TlsError(f"server name {name!r}: {e}") from None
