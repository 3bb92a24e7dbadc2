"""Per-query counts of one server: plain dicts and ints on the query path, read at scrape time."""

from __future__ import annotations

from dataclasses import dataclass, field

MetricKey = tuple[str, str, str, str]  # zone, qtype, rcode, transport
PoolKey = tuple[str, str]  # dynamic record label, pool answered from


@dataclass(slots=True)
class TcpCounts:
    """DNS over TCP: the connections open now, and those closed, by reason (tcp_limits.py)."""

    open: int = 0
    closed: dict[str, int] = field(default_factory=dict)

    def close(self, reason: str) -> None:
        """A connection ended (or was refused) for ``reason``."""
        self.closed[reason] = self.closed.get(reason, 0) + 1


@dataclass(slots=True)
class DnsCounters:
    """Everything the DNS path counts. One per server; reloads keep it, so counters only grow."""

    responses: dict[MetricKey, int] = field(default_factory=dict)  # answers to clients
    probe_responses: dict[MetricKey, int] = field(default_factory=dict)  # to our own BGP hook
    pool_answers: dict[PoolKey, int] = field(default_factory=dict)
    tcp: TcpCounts = field(default_factory=TcpCounts)  # connections, kept by the TCP factory
    # UDP responses rate limiting acted on, by (action, answer class) (anycastedge.dns.rrl).
    rrl: dict[tuple[str, str], int] = field(default_factory=dict)
    internal_errors: int = 0  # queries that raised inside the server
    udp_send_failures: int = 0  # replies the kernel would not take

    def raised(self) -> None:
        """A query raised inside the server."""
        self.internal_errors += 1

    def send_failed(self) -> None:
        """The kernel refused a UDP reply (full buffer): the client retries."""
        self.udp_send_failures += 1
