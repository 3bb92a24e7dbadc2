"""GSLB visibility: each dynamic record's pools and values with their health, for /status and
/metrics. Read at request time from the serving state; nothing here runs per query."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from anycastedge.control.view import ServerView
from anycastedge.gslb.model import DynamicRecord, PoolValue
from anycastedge.gslb.select import DEFAULT_POOL, is_up


def _split(label: str) -> tuple[str, str]:
    name, _, rdtype = label.rpartition(" ")
    return name, rdtype


def _metric_labels(label: str) -> tuple[str, str]:
    """A record's name as metric labels write names (zone labels too): without the final dot."""
    name, rdtype = _split(label)
    return name.rstrip(".") or ".", rdtype


def _value_status(view: ServerView, value: PoolValue) -> dict[str, Any]:
    out: dict[str, Any] = {
        "value": value.value,
        "weight": value.weight,
        "status": value.status,
        "up": is_up(value, view.checks.serving),
    }
    if value.target is None:
        out["check"] = None
        return out
    check = view.checks.status(value.target)
    out["check"] = {
        "target": str(value.target),
        "host": value.target.check.host,
        "probed": view.probed(value.target),
        "state": check.health.state.value,
        "last_ok": check.last_ok,
        "last_detail": check.last_detail,
        "last_at": check.last_at,
        "latency": check.latency,
        "checks": check.checks,
    }
    return out


def record_status(view: ServerView, record: DynamicRecord) -> dict[str, Any]:
    """One dynamic record: rules, pools, and each value's health and last check."""
    name, rdtype = _split(record.label)
    return {
        "record": name,
        "type": rdtype,
        "source": record.source,
        "ttl": record.ttl,
        "answers": record.answers,
        "sticky": record.sticky,
        "rules": [
            {"pool": r.pool, "subnets": [str(n) for n in r.subnets], "geos": list(r.geos)}
            for r in record.rules
        ],
        "pools": {
            pool.name: {
                "fallback": pool.fallback,
                "values": [_value_status(view, v) for v in pool.values],
            }
            for pool in record.pools.values()
        },
        "values": list(record.values),
    }


def gslb_status(view: ServerView) -> list[dict[str, Any]]:
    """Every dynamic record being served, for /status."""
    return [record_status(view, r) for r in view.dynamic_records()]


class GslbCollector(Collector):
    """Answers per pool, and the health of every pool value."""

    def __init__(self, view: ServerView) -> None:
        self.view = view

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s = self.view
        answers = CounterMetricFamily(
            "anycastedge_gslb_answers",
            f"Dynamic answers by record and the pool answered from ({DEFAULT_POOL!r}: the "
            "record's own values, every pool down)",
            labels=["record", "type", "pool"],
        )
        for (label, answered), count in list(s.dns_counters().pool_answers.items()):
            answers.add_metric([*_metric_labels(label), answered], count)
        yield answers
        up = GaugeMetricFamily(
            "anycastedge_gslb_value_up",
            "1 if a pool value may be answered (status up, or obey and its checks pass)",
            labels=["record", "type", "pool", "value"],
        )
        check_ok = GaugeMetricFamily(
            "anycastedge_gslb_check_ok",
            "1 if the last health check of a target passed (absent until the first result)",
            labels=["target", "host"],
        )
        latency = GaugeMetricFamily(
            "anycastedge_gslb_check_latency_seconds",
            "Duration of the last health check of a target",
            labels=["target", "host"],
        )
        seen = set()
        for record in s.dynamic_records():
            name, rdtype = _metric_labels(record.label)
            for pool in record.pools.values():
                for value in pool.values:
                    serving = is_up(value, s.checks.serving)
                    up.add_metric([name, rdtype, pool.name, value.value], 1 if serving else 0)
                    target = value.target
                    if target is None or target in seen:
                        continue
                    seen.add(target)
                    status = s.checks.status(target)
                    if status.last_ok is None:
                        continue
                    labels = [str(target), target.check.host]
                    check_ok.add_metric(labels, 1 if status.last_ok else 0)
                    latency.add_metric(labels, status.latency or 0.0)
        yield up
        yield check_ok
        yield latency
