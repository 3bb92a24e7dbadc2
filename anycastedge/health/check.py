"""What the health monitor and the BGP hook probe: an address, and how to check it."""

from __future__ import annotations

from dataclasses import dataclass

# An EDNS option from the local/experimental range (RFC 6891 section 9) that marks the BGP hook's
# DNS checks, so that the server counts them apart from client queries.
PROBE_EDNS_OPTION = 65430


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """How a target is checked. GSLB fills it from octoDNS's ``healthcheck`` plus our
    ``anycastedge`` extensions; the BGP hook from pop.yaml's ``bgp.health.checks``."""

    protocol: str = "HTTPS"  # HTTP, HTTPS, TCP or DNS
    host: str = ""  # Host header and TLS SNI; octoDNS's default is the record's name
    path: str = "/_dns"
    port: int = 443
    interval: float = 10.0
    timeout: float = 2.0
    rise: int = 2
    fall: int = 3
    expect_status: frozenset[int] = frozenset(range(200, 400))
    body: str | None = None  # a substring the response body must contain
    tls_verify: bool = False  # as Route 53 and NS1: a health check is not a certificate check
    qname: str = ""  # DNS: the question that must get a NOERROR answer
    qtype: str = "SOA"


@dataclass(frozen=True, slots=True)
class CheckTarget:
    """One thing to probe: an address and how. Equal targets share a probe."""

    address: str
    check: HealthCheck

    def __str__(self) -> str:
        c = self.check
        host = f"[{self.address}]" if ":" in self.address else self.address
        if c.protocol == "TCP":
            return f"tcp://{host}:{c.port}"
        if c.protocol == "DNS":
            return f"dns://{host}:{c.port} {c.qname} {c.qtype}"
        return f"{c.protocol.lower()}://{host}:{c.port}{c.path}"
