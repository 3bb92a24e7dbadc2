"""Limits on DNS over TCP (RFC 7766 section 6.2.3 hardening): which new connection to admit, and
the reasons a connection can end, as counted in /metrics. Pure: the Twisted protocol applies it."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

# Why a connection ended: the ``reason`` label of anycastedge_dns_tcp_connections_closed_total.
CLIENT_CLOSED = "client_closed"  # the client closed it (or the network lost it)
IDLE_TIMEOUT = "idle_timeout"  # nothing received for dns.tcp_idle_timeout
READ_TIMEOUT = "read_timeout"  # a query begun but not complete within dns.tcp_read_timeout
MAX_QUERIES = "max_queries"  # dns.tcp_max_queries answered: closed after the last answer
MAX_CONNECTIONS = "max_connections"  # refused: dns.tcp_max_connections open already
MAX_CONNECTIONS_PER_CLIENT = "max_connections_per_client"  # refused: that client holds its share
UNANSWERABLE = "unanswerable"  # a message with no header to answer, or a response
INTERNAL_ERROR = "internal_error"  # answering raised inside the server
CLOSE_REASONS = (
    CLIENT_CLOSED,
    IDLE_TIMEOUT,
    READ_TIMEOUT,
    MAX_QUERIES,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_CLIENT,
    UNANSWERABLE,
    INTERNAL_ERROR,
)

IPV6_CLIENT_PREFIX = 64  # an IPv6 host picks freely among the addresses of its /64


@dataclass(frozen=True, slots=True)
class TcpLimits:
    """The limits pop.yaml's ``dns.tcp_*`` keys set (docs/dns-behaviour.md, "TCP")."""

    idle_timeout: float = 10.0  # seconds with nothing received: before the first query too
    read_timeout: float = 2.0  # seconds from a query's first byte to its last
    max_connections: int = 1000
    max_connections_per_client: int = 20
    max_queries: int = 10_000  # answered per connection; 0: no limit


def client_key(host: str) -> str:
    """What the per-client cap counts by: the IPv4 address (also when mapped into IPv6), or the
    IPv6 /64; a host that is not an address counts as itself."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            return str(mapped)
        network = ipaddress.IPv6Network((address.packed, IPV6_CLIENT_PREFIX), strict=False)
        return str(network)
    return str(address)


@dataclass(slots=True)
class ConnectionTable:
    """The connections open now, in total and per client: at most ``max_connections`` entries."""

    limits: TcpLimits
    open: int = 0
    by_client: dict[str, int] = field(default_factory=dict)

    def admit(self, client: str) -> str | None:
        """Take a slot for a new connection from ``client`` (a :func:`client_key`); None when
        admitted, else the reason it is refused (nothing is taken then)."""
        if self.open >= self.limits.max_connections:
            return MAX_CONNECTIONS
        held = self.by_client.get(client, 0)
        if held >= self.limits.max_connections_per_client:
            return MAX_CONNECTIONS_PER_CLIENT
        self.open += 1
        self.by_client[client] = held + 1
        return None

    def release(self, client: str) -> None:
        """Give back the slot an admitted connection from ``client`` held."""
        self.open -= 1
        held = self.by_client[client] - 1
        if held:
            self.by_client[client] = held
        else:
            del self.by_client[client]
