"""The forwarding tier in /status, /metrics and the per-backend health URLs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from anycastedge.forward.service import ForwardService
from anycastedge.forward.tcp import TcpListener


def forward_status(forward: ForwardService) -> dict[str, Any]:
    """Listeners, backends and endpoints, with health, ejections and active connections."""
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
        elif handler is not None:
            entry |= {"flows": len(handler.flows), "datagrams": handler.datagrams,
                      "refused": handler.refused}  # fmt: skip
        listeners.append(entry)
    backends = []
    for name, pool in forward.pools.items():
        usable = set(pool.usable())
        backends.append(
            {
                "name": name,
                "balance": pool.backend.balance,
                "critical": pool.backend.critical,
                "up": bool(usable),
                "refused": pool.refused,
                "endpoints": [
                    {
                        "address": str(s.endpoint),
                        "weight": s.endpoint.weight,
                        "up": s.up,
                        "ejected": pool.is_ejected(i),
                        "ejections": s.ejections,
                        "usable": i in usable,
                        "active": s.active,
                        "connections": s.connections,
                        "connect_failures": s.connect_failures,
                        "connect_time": s.connect_time,
                        "bytes_in": s.bytes_in,
                        "bytes_out": s.bytes_out,
                    }
                    for i, s in enumerate(pool.stats)
                ],
            }
        )
    return {"listeners": listeners, "backends": backends, "critical_down": forward.critical_down()}


class ForwardCollector(Collector):
    """Per-endpoint connections, bytes, failures, ejections and health, read at scrape time."""

    def __init__(self, forward: ForwardService) -> None:
        self.forward = forward

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        labels = ["backend", "endpoint"]
        counters = {
            "connections": ("Connections (TCP) or flows (UDP) forwarded", "connections"),
            "connect_failures": ("Connects to the endpoint that failed", "connect_failures"),
            "ejections": ("Times the endpoint was ejected after connect failures", "ejections"),
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
        for name, pool in self.forward.pools.items():
            ok = set(pool.usable())
            refused.add_metric([name], pool.refused)
            for i, s in enumerate(pool.stats):
                key = [name, str(s.endpoint)]
                for family_key, (_, attribute) in counters.items():
                    families[family_key].add_metric(key, getattr(s, attribute))
                active.add_metric(key, s.active)
                up.add_metric(key, 1 if s.up else 0)
                usable.add_metric(key, 1 if i in ok else 0)
        yield from families.values()
        yield from (active, up, usable, refused)
