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
PROTOCOLS = ("tcp", "udp")
MAGLEV_TABLE_SIZE = 65537  # a prime, as Maglev's table must be


def join_hostport(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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


@dataclass(frozen=True, slots=True)
class Listener:
    """A bound address and protocol, carrying traffic to one backend."""

    name: str
    host: str
    port: int
    protocol: str  # tcp or udp
    backend: str
    max_connections: int = 10_000  # TCP connections, or UDP flows, at once
    connect_timeout: float = 5.0  # TCP: per endpoint tried
    idle_timeout: float = 300.0  # TCP: no byte either way; UDP: a flow with no datagram
    connect_attempts: int = 3  # TCP: endpoints tried before the client is closed
    accept_proxy: tuple[IPNetwork, ...] = ()  # TCP: peers whose PROXY v1/v2 header is taken
    per_packet: bool = False  # UDP: balance every datagram on its own (no flow affinity)

    @property
    def bind(self) -> str:
        """``host:port``."""
        return join_hostport(self.host, self.port)


@dataclass(frozen=True, slots=True)
class ForwardConfig:
    """pop.yaml's ``forward:``: listeners and the backends they name."""

    listeners: tuple[Listener, ...] = ()
    backends: tuple[Backend, ...] = ()

    def backend(self, name: str) -> Backend:
        """The backend called ``name``."""
        for backend in self.backends:
            if backend.name == name:
                return backend
        raise KeyError(name)
