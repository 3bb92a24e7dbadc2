"""The control endpoint's HTTP resources."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.web import resource, server

from anycastedge.config.pop import PopConfig
from anycastedge.control.gslb import gslb_status
from anycastedge.control.status import pop_status
from anycastedge.dns.service import ZoneService


class _Leaf(resource.Resource):
    isLeaf = True

    def __init__(self, render: Callable[[server.Request], bytes]) -> None:
        super().__init__()
        self._render = render

    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802
        return self._render(request)


def status_document(config: PopConfig, zones: ZoneService) -> dict[str, Any]:
    """The JSON served at /status."""
    last = zones.history[-1] if zones.history else None
    bgp = pop_status(config)
    return {
        "pop": config.pop,
        "bgp": {k: bgp[k] for k in ("anycast", "maintenance", "hook", "hook_age_seconds")},
        "zones": [
            {
                "name": z.origin.to_text(),
                "serial": z.serial,
                "source": z.source,
                "loaded_at": z.loaded_at,
            }
            for z in zones.zones
        ],
        "last_reload": None
        if last is None
        else {"at": last.at, "ok": last.ok, "trigger": last.trigger, "problems": last.problems},
        "reloads": dict(zones.reloads),
        "gslb": gslb_status(zones),
    }


def control_site(config: PopConfig, zones: ZoneService, registry: CollectorRegistry) -> server.Site:
    """The Site serving /healthz, /status and /metrics."""

    def healthz(request: server.Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        if len(zones.zones) == 0:
            request.setResponseCode(503)
            return b"no zones loaded\n"
        return b"ok\n"

    def status(request: server.Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(status_document(config, zones), indent=2).encode() + b"\n"

    def metrics(request: server.Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(registry)

    root = resource.Resource()
    root.putChild(b"healthz", _Leaf(healthz))
    root.putChild(b"status", _Leaf(status))
    root.putChild(b"metrics", _Leaf(metrics))
    site = server.Site(root)
    site.displayTracebacks = False
    site.log = lambda request: None  # type: ignore[method-assign]  # scrapes are not news
    return site
