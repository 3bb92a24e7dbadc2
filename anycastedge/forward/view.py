"""What /status and /metrics show of the backends, whichever engine forwards. Pure.

The built-in engine reads its pools (``pool_view``); the HAProxy engine reads HAProxy's
statistics (forward/haproxy_stats.py). Both give the same shape, so the control endpoint, the
BGP hook's POP-health URL and dashboards do not care which engine runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from anycastedge.forward.model import Listener
from anycastedge.forward.pool import Pool
from anycastedge.forward.routing import route_label


@dataclass(frozen=True, slots=True)
class EndpointView:
    """One endpoint: health and counters."""

    address: str
    weight: int
    up: bool  # as the active check says
    ejected: bool  # passive ejection (connect failures, 5xx) holds it out
    ejections: int
    usable: bool  # takes new traffic: up, weighted, not ejected
    active: int  # connections (or flows) open now
    connections: int
    connect_failures: int
    connect_time: float | None  # seconds, an average; None: no sample yet
    bytes_in: int  # from clients towards the endpoint
    bytes_out: int
    responses_5xx: int


@dataclass(frozen=True, slots=True)
class BackendView:
    """One backend and its endpoints."""

    name: str
    balance: str
    critical: bool
    refused: int  # new connections or flows no endpoint could take
    endpoints: tuple[EndpointView, ...]

    @property
    def up(self) -> bool:
        """Whether some endpoint takes new traffic."""
        return any(e.usable for e in self.endpoints)


def pool_view(name: str, pool: Pool) -> BackendView:
    """The built-in engine's pool as a BackendView."""
    usable = set(pool.usable())
    return BackendView(
        name=name,
        balance=pool.backend.balance,
        critical=pool.backend.critical,
        refused=pool.refused,
        endpoints=tuple(
            EndpointView(
                address=str(s.endpoint),
                weight=s.endpoint.weight,
                up=s.up,
                ejected=pool.is_ejected(i),
                ejections=s.ejections,
                usable=i in usable,
                active=s.active,
                connections=s.connections,
                connect_failures=s.connect_failures,
                connect_time=s.connect_time,
                bytes_in=s.bytes_in,
                bytes_out=s.bytes_out,
                responses_5xx=s.responses_5xx,
            )
            for i, s in enumerate(pool.stats)
        ),
    )


def critical_down(backends: list[BackendView]) -> list[str]:
    """Critical backends with no endpoint taking new traffic."""
    return [b.name for b in backends if b.critical and not b.up]


def route_entries(listener: Listener) -> list[dict[str, Any]]:
    """An HTTP listener's routes as /status lists them."""
    if listener.http is None:
        return []
    return [
        {"route": route_label(r), "hosts": list(r.hosts), "path_prefix": r.path_prefix,
         "backend": r.backend, "max_body": r.max_body}
        for r in listener.http.routes
    ]  # fmt: skip
