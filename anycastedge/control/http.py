"""The control endpoint's HTTP resources."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.web import resource, server

from anycastedge.control.gslb import gslb_status
from anycastedge.control.status import pop_status, status_json
from anycastedge.control.view import ServerView


class _Leaf(resource.Resource):
    isLeaf = True

    def __init__(self, render: Callable[[server.Request], bytes]) -> None:
        super().__init__()
        self._render = render

    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802
        return self._render(request)


class _Reload(resource.Resource):
    """POST /reload: reload the zones now and answer with the outcome (what SIGHUP does)."""

    isLeaf = True

    def __init__(self, view: ServerView) -> None:
        super().__init__()
        self._view = view

    def render_POST(self, request: server.Request) -> int:  # noqa: N802
        def answer(ok: bool) -> None:
            last = self._view.zones.reloads.last
            request.setResponseCode(200 if ok else 422)
            request.setHeader(b"content-type", b"application/json")
            body = {"ok": ok, "problems": list(last.problems) if last else []}
            request.write(json.dumps(body, indent=2).encode() + b"\n")
            request.finish()

        self._view.reload("control").addCallback(answer)
        return server.NOT_DONE_YET


def status_document(view: ServerView) -> dict[str, Any]:
    """The JSON served at /status."""
    reloads = view.zones.reloads
    last = reloads.last
    bgp = status_json(pop_status(view.config))
    return {
        "pop": view.config.pop,
        "pid": view.zones.pid,
        "bgp": {
            k: bgp[k]
            for k in (
                "anycast",
                "maintenance",
                "maintenance_error",
                "hook",
                "hook_error",
                "hook_age_seconds",
            )
        },  # fmt: skip
        "zones": [
            {
                "name": z.origin.to_text(),
                "serial": z.serial,
                "source": z.source,
                "loaded_at": z.loaded_at,
            }
            for z in view.zones.zones
        ],
        "last_reload": None
        if last is None
        else {
            "at": last.at,
            "ok": last.ok,
            "trigger": last.trigger,
            "problems": list(last.problems),
        },
        "reloads": {"success": reloads.success, "failure": reloads.failure},
        "gslb": gslb_status(view),
    }


def control_site(view: ServerView, registry: CollectorRegistry) -> server.Site:
    """The Site serving /healthz, /status, /metrics and POST /reload."""

    def healthz(request: server.Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        if len(view.zones.zones) == 0:
            request.setResponseCode(503)
            return b"no zones loaded\n"
        return b"ok\n"

    def status(request: server.Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(status_document(view), indent=2).encode() + b"\n"

    def metrics(request: server.Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(registry)

    root = resource.Resource()
    root.putChild(b"healthz", _Leaf(healthz))
    root.putChild(b"status", _Leaf(status))
    root.putChild(b"metrics", _Leaf(metrics))
    root.putChild(b"reload", _Reload(view))
    site = server.Site(root)
    site.displayTracebacks = False
    site.log = lambda request: None  # type: ignore[method-assign]  # scrapes are not news
    return site
