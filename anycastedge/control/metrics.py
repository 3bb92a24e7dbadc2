"""Prometheus export of counters kept as plain dicts on the hot path (read at scrape time)."""

from __future__ import annotations

import platform
from collections.abc import Iterator
from importlib.metadata import version

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from anycastedge.bgp.decision import ANNOUNCED, DRAINING, WITHDRAWN
from anycastedge.config.pop import PopConfig
from anycastedge.control.forward import ForwardCollector
from anycastedge.control.gslb import GslbCollector
from anycastedge.control.status import pop_status
from anycastedge.control.view import ServerView
from anycastedge.dns.counters import DnsCounters, TcpCounts
from anycastedge.dns.tcp_limits import CLOSE_REASONS
from anycastedge.health.state import State


class BuildCollector(Collector):
    """``anycastedge_build_info``: the version running, as Prometheus exporters say it."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        info = GaugeMetricFamily(
            "anycastedge_build_info",
            "Always 1; the labels say which anycastedge and Python run",
            labels=["version", "python"],
        )
        info.add_metric([version("anycastedge"), platform.python_version()], 1)
        yield info


class DnsCollector(Collector):
    """Reads the server's counters and zones when Prometheus scrapes."""

    def __init__(self, view: ServerView) -> None:
        self.view = view

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        counters, zones, reloads = (
            self.view.dns_counters(),  # every DNS process's (dns: {workers: N})
            self.view.zones.zones,
            self.view.zones.reloads,
        )
        for name, help_text, counts in (
            (
                "anycastedge_dns_queries",
                "DNS queries answered, by zone, query type, response code and transport",
                counters.responses,
            ),
            (
                "anycastedge_dns_health_check_queries",
                "The BGP hook's own DNS checks answered (not counted as client queries)",
                counters.probe_responses,
            ),
        ):
            family = CounterMetricFamily(
                name, help_text, labels=["zone", "qtype", "rcode", "transport"]
            )
            for key, value in list(counts.items()):
                family.add_metric(list(key), value)
            yield family
        loads = CounterMetricFamily(
            "anycastedge_dns_reloads", "Zone set loads, by result", labels=["result"]
        )
        loads.add_metric(["success"], reloads.success)
        loads.add_metric(["failure"], reloads.failure)
        yield loads
        yield from _tcp_families(counters.tcp)
        yield CounterMetricFamily(
            "anycastedge_dns_internal_errors",
            "Queries that raised inside the server",
            counters.internal_errors,
        )
        yield CounterMetricFamily(
            "anycastedge_dns_udp_send_failures",
            "UDP responses the kernel would not take (full buffer); the client retries",
            counters.udp_send_failures,
        )
        yield from _rrl_metrics(self.view, counters)
        serial = GaugeMetricFamily(
            "anycastedge_dns_zone_serial", "SOA serial of each served zone", labels=["zone"]
        )
        for zone in zones:
            serial.add_metric([zone.origin.to_text(omit_final_dot=True) or "."], zone.serial)
        yield serial
        last = reloads.last
        yield GaugeMetricFamily(
            "anycastedge_dns_last_reload_ok",
            "1 if the last zone reload was accepted, 0 if it was rejected",
            1 if last is None or last.ok else 0,
        )


def _tcp_families(tcp: TcpCounts) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    """DNS over TCP: connections open, and closed by reason (every reason, 0 until it happens)."""
    yield GaugeMetricFamily(
        "anycastedge_dns_tcp_connections_open", "DNS TCP connections open now", tcp.open
    )
    closed = CounterMetricFamily(
        "anycastedge_dns_tcp_connections_closed",
        "DNS TCP connections closed, by reason (refused at once: max_connections, "
        "max_connections_per_client)",
        labels=["reason"],
    )
    counts = dict(tcp.closed)
    for reason in CLOSE_REASONS:
        closed.add_metric([reason], counts.get(reason, 0))
    yield closed


def _rrl_metrics(
    view: ServerView, counters: DnsCounters
) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    """Response rate limiting: what it did (every DNS process), by action and answer class, and
    serve's own table (each process limits for itself)."""
    limited = CounterMetricFamily(
        "anycastedge_dns_rrl_responses",
        "UDP responses rate limiting acted on, by action (dropped, slipped: sent truncated or, "
        "for errors, as they were; would_drop, would_slip: dns.rrl.log_only) and answer class",
        labels=["action", "class"],
    )
    for (action, kind), value in list(counters.rrl.items()):
        limited.add_metric([action, kind], value)
    yield limited
    limiter = view.rrl
    if limiter is None:
        return
    yield GaugeMetricFamily(
        "anycastedge_dns_rrl_accounts",
        "Accounts (client network, answer) in the rate limiter's table",
        len(limiter),
    )
    yield CounterMetricFamily(
        "anycastedge_dns_rrl_evictions",
        "Accounts dropped from the full table before they had recovered (raise "
        "dns.rrl.max_table_size if this grows)",
        limiter.evictions,
    )


class DnsWorkersCollector(Collector):
    """The processes answering DNS (serve is worker 0): up, restarts, last reload."""

    def __init__(self, view: ServerView) -> None:
        self.view = view

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "anycastedge_dns_worker_up",
            "1 while the DNS process runs (worker 0 is serve itself)",
            labels=["worker"],
        )
        restarts = CounterMetricFamily(
            "anycastedge_dns_worker_restarts",
            "Times serve restarted the DNS worker after it exited",
            labels=["worker"],
        )
        reload_ok = GaugeMetricFamily(
            "anycastedge_dns_worker_last_reload_ok",
            "1 if the DNS process's last zone (re)load was accepted, 0 if it was rejected",
            labels=["worker"],
        )
        for entry in self.view.dns_processes():
            worker = [str(entry["index"])]
            up.add_metric(worker, 1 if entry["alive"] else 0)
            restarts.add_metric(worker, entry["restarts"])
            last = entry["last_reload"]
            reload_ok.add_metric(worker, 1 if last is None or last["ok"] else 0)
        yield up
        yield restarts
        yield reload_ok


class BgpCollector(Collector):
    """Exports what the BGP hook last reported (it runs under ExaBGP, not in this process)."""

    def __init__(self, config: PopConfig) -> None:
        self.config = config

    def collect(self) -> Iterator[GaugeMetricFamily]:
        status = pop_status(self.config)
        hook = status.hook
        prefixes = GaugeMetricFamily(
            "anycastedge_bgp_prefix",
            "1 for the status the hook last told ExaBGP for each anycast prefix",
            labels=["prefix", "status"],
        )
        for prefix in self.config.anycast:
            report = hook.prefixes.get(prefix) if hook is not None else None
            for name in (ANNOUNCED, DRAINING, WITHDRAWN):
                told = report is not None and report.status == name
                prefixes.add_metric([prefix, name], 1 if told else 0)
        yield prefixes
        state = GaugeMetricFamily(
            "anycastedge_bgp_hook_state", "1 for the hook's current state", labels=["state"]
        )
        for name in State:
            state.add_metric(
                [name.value], 1 if hook is not None and hook.state == name.value else 0
            )
        yield state
        yield GaugeMetricFamily(
            "anycastedge_bgp_maintenance",
            "1 while an operator has withdrawn this POP (or its maintenance file is unreadable)",
            1 if status.in_maintenance else 0,
        )
        yield GaugeMetricFamily(
            "anycastedge_bgp_state_file_errors",
            "Number of the hook's state files (hook.json, maintenance.json) that are unreadable",
            (status.hook_error is not None) + (status.maintenance_error is not None),
        )
        if hook is not None:
            yield GaugeMetricFamily(
                "anycastedge_bgp_hook_status_age_seconds",
                "Seconds since the hook last wrote its status (a stale hook is a dead hook)",
                hook.age,
            )
        ok = GaugeMetricFamily(
            "anycastedge_bgp_check_ok", "1 if the check passed last time", labels=["check"]
        )
        latency = GaugeMetricFamily(
            "anycastedge_bgp_check_latency_seconds", "Last check's duration", labels=["check"]
        )
        for check in hook.checks if hook is not None else ():
            ok.add_metric([check.check], 1 if check.ok else 0)
            latency.add_metric([check.check], check.latency)
        yield ok
        yield latency


def make_registry(view: ServerView) -> CollectorRegistry:
    """A registry of our own (no process-global state): DNS, GSLB, BGP, forwarding, build and
    process."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(DnsCollector(view))
    registry.register(DnsWorkersCollector(view))
    registry.register(GslbCollector(view))
    registry.register(BgpCollector(view.config))
    registry.register(BuildCollector())
    if view.forward is not None:
        registry.register(ForwardCollector(view.forward))
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, resident memory, open fds
    return registry
