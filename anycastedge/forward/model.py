"""The forwarding tier's configuration model: listeners, backends, endpoints. Pure, frozen."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from anycastedge.health.check import HealthCheck

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

BALANCE_ALGORITHMS = (
    "round_robin",  # each usable endpoint in turn, weights ignored
    "weighted",  # smooth weighted round robin (nginx)
    "least_conn",  # fewest active connections per unit of weight
    "p2c",  # the less loaded of two random choices (Envoy least_request, HAProxy random(2))
    "least_time",  # lowest moving average of connect time
    "source_hash",  # the client address, hashed onto the endpoints (weighted rendezvous)
    "maglev",  # Maglev consistent hashing of the client address
)
PROTOCOLS = ("tcp", "udp", "http", "https")
HTTP_PROTOCOLS = ("http", "https")
MAGLEV_TABLE_SIZE = 65537  # a prime, as Maglev's table must be
MAX_WORKERS = 64  # forward: {workers: N}: processes on the same listeners
ENGINES = ("builtin", "haproxy")  # what carries the traffic: serve itself, or HAProxy it runs


def join_hostport(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_trusted(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    """Whether ``address`` (an IP literal) lies in one of ``networks``."""
    if not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One address of a backend."""

    host: str  # an IP address literal
    port: int
    weight: int = 1  # 1..256; 0 takes it out of rotation (drained) but keeps it checked

    def __str__(self) -> str:
        return join_hostport(self.host, self.port)

    def host_port(self) -> tuple[str, int]:
        """The address, without the weight: what identifies an endpoint across reloads."""
        return self.host, self.port


@dataclass(frozen=True, slots=True)
class Ejection:
    """Passive ejection after consecutive connect failures, as Envoy's outlier detection."""

    consecutive_failures: int = 5  # 0: never eject
    base_time: float = 30.0  # seconds, times the number of times it was ejected
    max_time: float = 300.0
    max_percent: int = 50  # never eject more than this share of a backend's endpoints
    consecutive_5xx: int = 5  # HTTP: responses of status 500..599 in a row; 0: never eject


@dataclass(frozen=True, slots=True)
class BackendHttp:
    """How HTTP listeners talk to a backend's endpoints."""

    tls: bool = False  # HTTPS to the endpoints
    verify: bool = True  # with tls: the endpoint's certificate must be valid for server_name
    ca_file: str | None = None  # with tls: trust these CAs instead of the system's
    server_name: str | None = None  # with tls: SNI and the name verified; default: the Host
    # Cookie naming the endpoint a client sticks to; in pop.yaml the backend's own
    # sticky_cookie:, beside balance: (both choose endpoints), not a key of http:.
    sticky_cookie: str | None = None
    pool_size: int = 256  # idle keep-alive connections kept per endpoint
    pool_idle_timeout: float = 4.0  # seconds an idle pooled connection is kept
    max_connections: int = 0  # per endpoint, busy and idle together; 0: no cap
    retries: int = 2  # further endpoints tried when it is safe (see forward/http.py)
    response_timeout: float = 60.0  # seconds from the request sent to the response head


@dataclass(frozen=True, slots=True)
class Backend:
    """A named group of endpoints with a balance algorithm and a health check."""

    name: str
    endpoints: tuple[Endpoint, ...]
    balance: str = "round_robin"
    # Each endpoint is checked at its own address; the check's port is the endpoint's unless
    # ``check_port`` is set.
    healthcheck: HealthCheck = field(
        default_factory=lambda: HealthCheck(protocol="TCP", interval=2.0, timeout=1.0)
    )
    check_port: int | None = None
    ejection: Ejection = Ejection()
    slow_start: float = 0.0  # seconds over which a returning endpoint's weight ramps up
    proxy_protocol: int = 0  # 0: none; 1 or 2: the PROXY header sent to endpoints first
    critical: bool = False  # the POP's health (the BGP hook's check) follows this backend
    maglev_table_size: int = MAGLEV_TABLE_SIZE
    http: BackendHttp = BackendHttp()


@dataclass(frozen=True, slots=True)
class Route:
    """One rule of an HTTP listener: a request matching hosts and path_prefix goes to backend."""

    backend: str
    # Exact names ("example.com"), suffixes ("*.example.com": any name below, not the name
    # itself), either with ":port" to match that port only. Empty: any host.
    hosts: tuple[str, ...] = ()
    path_prefix: str = "/"
    max_body: int | None = None  # bytes of request body; None: the listener's


@dataclass(frozen=True, slots=True)
class Certificate:
    """A PEM certificate chain and its key, served to the names it lists."""

    cert: str
    key: str
    # SNI names (exact or "*.suffix") it is served for; empty: the certificate's own names
    hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ListenerTls:
    """TLS termination: certificates by SNI; the first is the default."""

    certificates: tuple[Certificate, ...]
    min_version: str = "1.2"  # 1.2 or 1.3
    ciphers: str = (  # TLS 1.2 suites: forward secrecy and AEAD only (1.3's are all fine)
        "ECDHE+AESGCM:ECDHE+CHACHA20"
    )


@dataclass(frozen=True, slots=True)
class ListenerHttp:
    """What an HTTP or HTTPS listener adds to a listener."""

    routes: tuple[Route, ...]
    # Peers whose X-Forwarded-For / Forwarded / X-Real-IP / X-Forwarded-Proto are kept (and
    # appended to); from anyone else they are replaced.
    trusted_upstreams: tuple[IPNetwork, ...] = ()
    header_timeout: float = 10.0  # seconds for a whole request head (408)
    max_header_size: int = 16384  # bytes of request line and headers (431)
    max_headers: int = 100  # header fields (431)
    max_body: int | None = None  # bytes of request body per request (413); None: no limit
    access_log: str | None = "-"  # a file, "-" for standard output, None for none
    tls: ListenerTls | None = None  # set for protocol https


@dataclass(frozen=True, slots=True)
class Listener:
    """A bound address and protocol, carrying traffic to one backend (HTTP: to the backend of
    the first route a request matches)."""

    name: str
    host: str
    port: int
    protocol: str  # tcp, udp, http or https
    backend: str  # tcp and udp; "" for http and https
    max_connections: int = 10_000  # TCP connections, or UDP flows, at once
    connect_timeout: float = 5.0  # TCP: per endpoint tried
    # TCP: no byte either way; UDP: a flow with no datagram; HTTP: between requests.
    # pop.yaml's default depends on the protocol: tcp 300, udp 30, http and https 60.
    idle_timeout: float = 300.0
    connect_attempts: int = 3  # TCP: endpoints tried before the client is closed
    accept_proxy: tuple[IPNetwork, ...] = ()  # TCP: peers whose PROXY v1/v2 header is taken
    per_packet: bool = False  # UDP: balance every datagram on its own (no flow affinity)
    http: ListenerHttp | None = None  # set for protocol http and https

    @property
    def bind(self) -> str:
        """``host:port``."""
        return join_hostport(self.host, self.port)


@dataclass(frozen=True, slots=True)
class HaproxyOptions:
    """pop.yaml's ``forward.haproxy``: what only the HAProxy engine uses."""

    # Seconds an old HAProxy worker may keep connections open after a reload before they are
    # cut (HAProxy's hard-stop-after): long enough for downloads, short enough that reloads do
    # not pile up processes.
    hard_stop_after: float = 600.0
    binary: str = "haproxy"  # the executable: a name looked up on PATH, or a path


@dataclass(frozen=True, slots=True)
class ForwardConfig:
    """pop.yaml's ``forward:``: listeners and the backends they name."""

    listeners: tuple[Listener, ...] = ()
    backends: tuple[Backend, ...] = ()
    # Processes accepting on the TCP-based listeners: serve and N-1 more (forward/workers.py)
    workers: int = 1
    engine: str = "builtin"  # builtin: serve forwards; haproxy: serve runs HAProxy to forward
    haproxy: HaproxyOptions = HaproxyOptions()

    def backend(self, name: str) -> Backend:
        """The backend called ``name``."""
        for backend in self.backends:
            if backend.name == name:
                return backend
        raise KeyError(name)
