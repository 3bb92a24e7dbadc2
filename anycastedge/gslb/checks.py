"""What the health monitor checks for the served dynamic records, and what it means for them."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from twisted.logger import Logger

from anycastedge.gslb.model import DynamicRecord
from anycastedge.gslb.select import every_pool_down
from anycastedge.health.check import CheckTarget

log = Logger()


class Monitor(Protocol):
    """The part of health.monitor.HealthMonitor used here."""

    def serving(self, target: CheckTarget) -> bool: ...

    def update(self, targets: Iterable[CheckTarget]) -> None: ...


@dataclass(slots=True)
class GslbChecks:
    """Which GSLB values the health monitor checks, and the warning when a record runs dry."""

    monitor: Monitor
    check_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    records: list[DynamicRecord] = field(default_factory=list)
    all_down: set[str] = field(default_factory=set)  # labels of records with every pool down

    def probed(self, target: CheckTarget) -> bool:
        """Whether ``target`` lies in ``dns.check_networks`` (others are served unchecked)."""
        address = ipaddress.ip_address(target.address)
        return any(address in network for network in self.check_networks)

    def serve(self, records: list[DynamicRecord]) -> None:
        """Check what ``records`` need from now on."""
        self.records = records
        targets = {t for r in records for t in r.targets}
        checked = {t for t in targets if self.probed(t)}
        for target in sorted(targets - checked, key=str):
            log.warn(
                "not checking {target}: outside dns.check_networks, served as up",
                target=str(target),
            )
        self.monitor.update(checked)
        self.review()

    def review(self) -> None:
        """Warn once when a record starts answering its own values because every pool is down."""
        now = {r.label for r in self.records if every_pool_down(r, self.monitor.serving)}
        for label in sorted(now - self.all_down):
            log.warn(
                "{record}: every pool is down, answering the record's own values", record=label
            )
        for label in sorted(self.all_down - now):
            log.info("{record}: a pool is up again", record=label)
        self.all_down = now
