"""Prometheus export of counters kept as plain dicts on the hot path (read at scrape time)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from anycastedge.bgp.decision import ANNOUNCED, DRAINING, WITHDRAWN
from anycastedge.config.pop import PopConfig
from anycastedge.control.gslb import GslbCollector
from anycastedge.control.status import pop_status
from anycastedge.dns.service import ZoneService
from anycastedge.health.state import State


class DnsCollector(Collector):
    """Reads a ZoneService's counters and zones when Prometheus scrapes."""

    def __init__(self, zones: ZoneService) -> None:
        self.service = zones

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s = self.service
        queries = CounterMetricFamily(
            "anycastedge_dns_queries",
            "DNS queries answered, by zone, query type, response code and transport",
            labels=["zone", "qtype", "rcode", "transport"],
        )
        for labels, value in list(s.counts.items()):
            queries.add_metric(list(labels), value)
        yield queries
        reloads = CounterMetricFamily(
            "anycastedge_dns_reloads", "Zone set loads, by result", labels=["result"]
        )
        for result, value in s.reloads.items():
            reloads.add_metric([result], value)
        yield reloads
        yield CounterMetricFamily(
            "anycastedge_dns_internal_errors", "Queries that raised inside the server", s.errors
        )
        yield CounterMetricFamily(
            "anycastedge_dns_udp_send_failures",
            "UDP responses the kernel would not take (full buffer); the client retries",
            s.dropped,
        )
        serial = GaugeMetricFamily(
            "anycastedge_dns_zone_serial", "SOA serial of each served zone", labels=["zone"]
        )
        for zone in s.zones:
            serial.add_metric([zone.origin.to_text(omit_final_dot=True) or "."], zone.serial)
        yield serial
        last = s.history[-1] if s.history else None
        yield GaugeMetricFamily(
            "anycastedge_dns_last_reload_ok",
            "1 if the last zone reload was accepted, 0 if it was rejected",
            1 if last is None or last.ok else 0,
        )


class BgpCollector(Collector):
    """Exports what the BGP hook last reported (it runs under ExaBGP, not in this process)."""

    def __init__(self, config: PopConfig) -> None:
        self.config = config

    def collect(self) -> Iterator[GaugeMetricFamily]:
        status = pop_status(self.config)
        hook = status["hook"] or {}
        prefixes = GaugeMetricFamily(
            "anycastedge_bgp_prefix",
            "1 for the status the hook last told ExaBGP for each anycast prefix",
            labels=["prefix", "status"],
        )
        for prefix in self.config.anycast:
            told = hook.get("prefixes", {}).get(prefix, {}).get("status")
            for name in (ANNOUNCED, DRAINING, WITHDRAWN):
                prefixes.add_metric([prefix, name], 1 if told == name else 0)
        yield prefixes
        state = GaugeMetricFamily(
            "anycastedge_bgp_hook_state", "1 for the hook's current state", labels=["state"]
        )
        for name in State:
            state.add_metric([name.value], 1 if hook.get("state") == name.value else 0)
        yield state
        yield GaugeMetricFamily(
            "anycastedge_bgp_maintenance",
            "1 while an operator has withdrawn this POP",
            1 if status["maintenance"] else 0,
        )
        if status["hook_age_seconds"] is not None:
            yield GaugeMetricFamily(
                "anycastedge_bgp_hook_status_age_seconds",
                "Seconds since the hook last wrote its status (a stale hook is a dead hook)",
                status["hook_age_seconds"],
            )
        ok = GaugeMetricFamily(
            "anycastedge_bgp_check_ok", "1 if the check passed last time", labels=["check"]
        )
        latency = GaugeMetricFamily(
            "anycastedge_bgp_check_latency_seconds", "Last check's duration", labels=["check"]
        )
        for check in hook.get("checks", []):
            ok.add_metric([check["check"]], 1 if check["ok"] else 0)
            latency.add_metric([check["check"]], check["latency"])
        yield ok
        yield latency


def make_registry(zones: ZoneService, config: PopConfig) -> CollectorRegistry:
    """A registry of our own (no process-global state) with the DNS, GSLB and BGP collectors."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(DnsCollector(zones))
    registry.register(GslbCollector(zones))
    registry.register(BgpCollector(config))
    return registry
