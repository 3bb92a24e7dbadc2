"""The forwarding tier in /status, /metrics and the per-backend health URLs."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from anycastedge.forward.haproxy import HaproxyEngine
from anycastedge.forward.http import HttpListener
from anycastedge.forward.http_stats import HttpStats
from anycastedge.forward.service import ForwardService
from anycastedge.forward.tcp import TcpListener
from anycastedge.forward.udp import UdpListener
from anycastedge.forward.view import EndpointView, route_entries


def forward_status(
    forward: ForwardService | HaproxyEngine, workers: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Listeners, backends and endpoints, with health, ejections and active connections; the
    processes serving them (``workers``: serve itself alone unless forward: {workers: N}), or
    with engine: haproxy the HAProxy process.

    With workers, the counters are serve's own: each worker counts what it accepted itself,
    and checks the endpoints' health itself.
    """
    if isinstance(forward, HaproxyEngine):
        listeners = forward.listener_entries()
        engine: dict[str, Any] = forward.engine_status()
    else:
        listeners = _builtin_listeners(forward)
        engine = {"name": "builtin"}
    backends = []
    for view in forward.backend_views():
        endpoints = []
        for e in view.endpoints:
            entry = {k: getattr(e, k) for k in ENDPOINT_KEYS}
            if isinstance(forward, ForwardService):
                entry["http_connections"] = _pool_status(forward, e.address)
            endpoints.append(entry)
        backends.append({"name": view.name, "balance": view.balance, "critical": view.critical,
                         "up": view.up, "refused": view.refused,
                         "endpoints": endpoints})  # fmt: skip
    if workers is None:
        workers = [{"index": 0, "pid": os.getpid(), "alive": True, "restarts": 0}]
    return {
        "engine": engine,
        "listeners": listeners,
        "backends": backends,
        "critical_down": forward.critical_down(),
        "workers": workers,
    }


ENDPOINT_KEYS = tuple(f.name for f in dataclasses.fields(EndpointView))


def _builtin_listeners(forward: ForwardService) -> list[dict[str, Any]]:
    listeners = []
    for listener in forward.config.listeners:
        running = forward.active.get(listener.name)
        handler = running.handler if running is not None else None
        entry: dict[str, Any] = {
            "name": listener.name,
            "bind": listener.bind,
            "protocol": listener.protocol,
            "backend": listener.backend,
            "listening": running is not None,
        }
        if isinstance(handler, TcpListener):
            entry |= {"active": handler.active, "accepted": handler.accepted,
                      "refused": handler.refused}  # fmt: skip
        elif isinstance(handler, UdpListener):
            entry |= {"flows": len(handler.flows), "datagrams": handler.datagrams,
                      "refused": handler.refused}  # fmt: skip
        if listener.http is not None:
            entry["routes"] = route_entries(listener)
        if isinstance(handler, HttpListener):
            stats = handler.stats
            entry |= {
                "active": handler.active,
                "accepted": handler.accepted,
                "requests": sum(stats.requests.values()),
                "refused": dict(stats.refused),
                "pool": {"reused": forward.upstreams.reused, "created": forward.upstreams.created},
            }
        listeners.append(entry)
    return listeners


def _pool_status(forward: ForwardService, endpoint: str) -> dict[str, int]:
    """An endpoint's HTTP keep-alive connections: open (busy or idle) and idle."""
    host, _, port = endpoint.rpartition(":")
    address = (host.strip("[]"), int(port))
    upstreams = forward.upstreams
    return {"open": upstreams.count(address), "idle": upstreams.idle_count(address)}


class ForwardCollector(Collector):
    """Per-endpoint connections, bytes, failures, ejections and health, read at scrape time."""

    def __init__(self, forward: ForwardService | HaproxyEngine) -> None:
        self.forward = forward

    def collect(
        self,
    ) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        labels = ["backend", "endpoint"]
        counters = {
            "connections": ("Connections (TCP) or flows (UDP) forwarded", "connections"),
            "connect_failures": ("Connects to the endpoint that failed", "connect_failures"),
            "ejections": ("Times the endpoint was ejected (connect failures, 5xx)", "ejections"),
            "received_bytes": ("Bytes from clients forwarded to the endpoint", "bytes_in"),
            "sent_bytes": ("Bytes from the endpoint forwarded to clients", "bytes_out"),
        }
        families = {
            key: CounterMetricFamily(f"anycastedge_forward_endpoint_{key}", text, labels=labels)
            for key, (text, _) in counters.items()
        }
        active = GaugeMetricFamily(
            "anycastedge_forward_endpoint_active",
            "Connections (TCP) or flows (UDP) open to the endpoint now",
            labels=labels,
        )
        up = GaugeMetricFamily(
            "anycastedge_forward_endpoint_up",
            "1 if the endpoint's active check says up",
            labels=labels,
        )
        usable = GaugeMetricFamily(
            "anycastedge_forward_endpoint_usable",
            "1 if the endpoint takes new traffic (up, weighted and not ejected)",
            labels=labels,
        )
        refused = CounterMetricFamily(
            "anycastedge_forward_refused",
            "New connections or datagrams refused: no endpoint of the backend could take them",
            labels=["backend"],
        )
        for view in self.forward.backend_views():
            refused.add_metric([view.name], view.refused)
            for e in view.endpoints:
                key = [view.name, e.address]
                for family_key, (_, attribute) in counters.items():
                    families[family_key].add_metric(key, getattr(e, attribute))
                active.add_metric(key, e.active)
                up.add_metric(key, 1 if e.up else 0)
                usable.add_metric(key, 1 if e.usable else 0)
        yield from families.values()
        yield from (active, up, usable, refused)
        if isinstance(self.forward, HaproxyEngine):
            yield from self._engine(self.forward)
        else:
            yield from self._http(self.forward)

    def _engine(self, engine: HaproxyEngine) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """The HAProxy process serve runs: whether it runs and answers, restarts, reloads."""
        status = engine.engine_status()
        running = GaugeMetricFamily(
            "anycastedge_forward_haproxy_up",
            "1 while HAProxy runs and answers for statistics (else every endpoint counts down)",
        )
        running.add_metric([], 1 if engine.fresh_stats() is not None else 0)
        restarts = CounterMetricFamily(
            "anycastedge_forward_haproxy_restarts", "Times HAProxy was restarted after it exited"
        )
        restarts.add_metric([], status["restarts"])
        reloads = CounterMetricFamily(
            "anycastedge_forward_haproxy_reloads",
            "Forwarding changes handed to HAProxy, by result",
            labels=["result"],
        )
        for result, count in status["reloads"].items():
            reloads.add_metric([result], count)
        yield from (running, restarts, reloads)

    def _http(
        self, forward: ForwardService
    ) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        requests = CounterMetricFamily(
            "anycastedge_http_requests",
            "HTTP requests answered, by listener, route, backend and status class",
            labels=["listener", "route", "backend", "status"],
        )
        refused = CounterMetricFamily(
            "anycastedge_http_refused",
            "HTTP requests answered by the proxy itself, or connections cut, by reason",
            labels=["listener", "reason"],
        )
        duration = HistogramMetricFamily(
            "anycastedge_http_request_duration_seconds",
            "Time from a request's head to the end of its response",
            labels=["listener", "backend"],
        )
        upstream = HistogramMetricFamily(
            "anycastedge_http_upstream_response_seconds",
            "Time from a request sent to an endpoint to its response head",
            labels=["listener", "backend"],
        )
        active = GaugeMetricFamily(
            "anycastedge_http_connections", "Client connections open now", labels=["listener"]
        )
        for name, running in forward.active.items():
            handler = running.handler
            if not isinstance(handler, HttpListener):
                continue
            stats: HttpStats = handler.stats
            active.add_metric([name], handler.active)
            for (route, backend, status), count in stats.requests.items():
                requests.add_metric([name, route, backend, status], count)
            for reason, count in stats.refused.items():
                refused.add_metric([name, reason], count)
            for family, histograms in ((duration, stats.duration), (upstream, stats.upstream)):
                for backend, histogram in histograms.items():
                    buckets = [(_bound(b), c) for b, c in histogram.cumulative()]
                    family.add_metric([name, backend], buckets, histogram.total)
        yield from (requests, refused, duration, upstream, active)


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
