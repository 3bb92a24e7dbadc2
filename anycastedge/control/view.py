"""What the control endpoint may read of the running server, and the one thing it may ask."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from anycastedge.config.pop import PopConfig
from anycastedge.dns.counters import DnsCounters
from anycastedge.dns.rrl import RateLimiter
from anycastedge.dns.service import ReloadLog
from anycastedge.dns.workers import serve_entry
from anycastedge.dns.zone import ZoneSet
from anycastedge.forward.haproxy import HaproxyEngine
from anycastedge.forward.service import ForwardService
from anycastedge.gslb.model import DynamicRecord
from anycastedge.health.check import CheckTarget
from anycastedge.health.monitor import TargetStatus


class Zones(Protocol):
    """The zone service, read-only."""

    @property
    def zones(self) -> ZoneSet: ...

    @property
    def reloads(self) -> ReloadLog: ...

    @property
    def pid(self) -> int: ...


class Checks(Protocol):
    """The health monitor, read-only."""

    def serving(self, target: CheckTarget) -> bool: ...

    def status(self, target: CheckTarget) -> TargetStatus: ...


@dataclass(frozen=True, slots=True)
class ServerView:
    """Everything /status, /metrics and /reload use; assembled by the app."""

    config: PopConfig
    zones: Zones
    counters: DnsCounters
    checks: Checks
    probed: Callable[[CheckTarget], bool]  # inside dns.check_networks
    reload: Callable[[str], Deferred[bool]]
    forward: ForwardService | HaproxyEngine | None = None  # by forward.engine
    # forward: {workers: N > 1}: serve and its workers (index, pid, alive, restarts)
    workers: Callable[[], list[dict[str, Any]]] | None = None
    rrl: RateLimiter | None = None  # dns.rrl: the UDP response rate limiter, if on
    # dns: {workers: N > 1}: the counters of every DNS process added up, and the processes
    dns_totals: Callable[[], DnsCounters] | None = None
    dns_workers: Callable[[], list[dict[str, Any]]] | None = None

    def dns_counters(self) -> DnsCounters:
        """The DNS counters of the whole server (serve's own, unless it has DNS workers)."""
        return self.counters if self.dns_totals is None else self.dns_totals()

    def dns_processes(self) -> list[dict[str, Any]]:
        """Every process answering DNS, serve first (index 0)."""
        if self.dns_workers is not None:
            return self.dns_workers()
        zones = self.zones
        return [serve_entry(zones.pid, zones.reloads.last, zones.zones, self.counters)]

    def dynamic_records(self) -> list[DynamicRecord]:
        """Every dynamic record being served."""
        return [record for zone in self.zones.zones for record in zone.dynamic.values()]
