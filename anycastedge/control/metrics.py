"""Prometheus export of counters kept as plain dicts on the hot path (read at scrape time)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from anycastedge.dns.service import ZoneService


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


def make_registry(zones: ZoneService) -> CollectorRegistry:
    """A registry of our own (no process-global state) with the DNS collector."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(DnsCollector(zones))
    return registry
