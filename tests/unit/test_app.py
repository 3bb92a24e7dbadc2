"""The wiring's own decisions: which files trigger a reload, and the all-pools-down warning."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dns.name
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from anycastedge.app import zone_fingerprint
from anycastedge.gslb.checks import GslbChecks
from anycastedge.gslb.model import DynamicRecord, Pool, PoolValue, Rule
from anycastedge.health.check import CheckTarget, HealthCheck

EU = CheckTarget("127.0.0.11", HealthCheck("TCP", port=80))
NA = CheckTarget("127.0.0.12", HealthCheck("TCP", port=80))


def test_only_zone_files_change_the_fingerprint(tmp_path: Path) -> None:
    """A README or editor file beside the zones never triggers a reload; a zone file does."""
    (tmp_path / "example.com.yaml").write_text("'': {type: A, value: 192.0.2.1}\n")
    before = zone_fingerprint([tmp_path])
    (tmp_path / "README.txt").write_text("notes\n")
    (tmp_path / ".example.com.yaml.swp").write_text("x")
    assert zone_fingerprint([tmp_path]) == before
    (tmp_path / "example.net.yaml").write_text("'': {type: A, value: 192.0.2.2}\n")
    assert zone_fingerprint([tmp_path]) != before


class FakeMonitor:
    """The two methods Gslb uses; health is set by the test."""

    def __init__(self) -> None:
        self.down: set[CheckTarget] = set()
        self.checked: set[CheckTarget] = set()

    def serving(self, target: CheckTarget) -> bool:
        return target not in self.down

    def update(self, targets: Iterable[CheckTarget]) -> None:
        self.checked = set(targets)


def _record() -> DynamicRecord:
    return DynamicRecord(
        name=dns.name.from_text("www.test."),
        rdtype=1,
        ttl=60,
        pools={
            "eu": Pool("eu", (PoolValue("127.0.0.11", target=EU),), fallback="na"),
            "na": Pool("na", (PoolValue("127.0.0.12", target=NA),)),
        },
        rules=(Rule("eu"),),
        values=("127.0.0.99",),
        rdata={},
        label="www.test. A",
    )


def test_every_pool_down_warns_once_per_change() -> None:
    """The record falls back to its own values: one warning when that starts, none while it
    lasts, and again only after a pool was up in between."""
    monitor = FakeMonitor()
    gslb = GslbChecks(monitor, (ipaddress.ip_network("127.0.0.0/8"),))
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        gslb.serve([_record()])
        assert monitor.checked == {EU, NA}
        monitor.down = {EU}
        gslb.review()
        monitor.down = {EU, NA}
        gslb.review()
        gslb.review()
        monitor.down = {NA}
        gslb.review()
        monitor.down = {EU, NA}
        gslb.review()
    finally:
        globalLogPublisher.removeObserver(events.append)
    warned = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]
    expected = "www.test. A: every pool is down, answering the record's own values"
    assert warned == [expected, expected]
    assert gslb.all_down == {"www.test. A"}


def test_targets_outside_check_networks_are_not_probed() -> None:
    """Only targets inside dns.check_networks reach the monitor; the others are served as up."""
    monitor = FakeMonitor()
    gslb = GslbChecks(monitor, (ipaddress.ip_network("127.0.0.11/32"),))
    gslb.serve([_record()])
    assert monitor.checked == {EU}
    assert gslb.probed(EU) and not gslb.probed(NA)
