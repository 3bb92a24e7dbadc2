"""The control endpoint's HTTP resources."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.web import resource, server

from anycastedge.control.forward import forward_status
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
            if self._view.dns_workers is not None:
                # Which DNS process reloaded, and which did not (dns: {workers: N}).
                body["processes"] = self._view.dns_processes()
            request.write(json.dumps(body, indent=2).encode() + b"\n")
            request.finish()

        self._view.reload("control").addCallback(answer)
        return server.NOT_DONE_YET


class _BackendHealth(resource.Resource):
    """GET /forward/backends/NAME/health: 200 while the backend has an endpoint taking new
    traffic, 503 when it has none (or there is no such backend: 404)."""

    def __init__(self, view: ServerView) -> None:
        super().__init__()
        self._view = view

    def getChild(self, path: bytes, request: server.Request) -> resource.Resource:  # noqa: N802
        name = path.decode(errors="replace")
        forward = self._view.forward
        if forward is None or forward.backend_up(name) is None:
            return resource.NoResource(f"no backend {name!r}")
        health = resource.Resource()

        def render(request: server.Request) -> bytes:
            request.setHeader(b"content-type", b"text/plain")
            if forward.backend_up(name):
                return b"ok\n"
            request.setResponseCode(503)
            return f"backend {name}: no endpoint up\n".encode()

        health.putChild(b"health", _Leaf(render))
        return health


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
        "last_reload": None if last is None else last.as_json(),
        "reloads": {"success": reloads.success, "failure": reloads.failure},
        "gslb": gslb_status(view),
        "forward": forward_status(view.forward, view.workers() if view.workers else None)
        if view.forward is not None
        else None,
        "dns": {"workers": view.dns_processes()},
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

    def forward_health(request: server.Request) -> bytes:
        # The BGP hook's http check points here: 503 withdraws the POP while a critical backend
        # has no endpoint to send traffic to (docs/bgp.md).
        request.setHeader(b"content-type", b"text/plain")
        problems = view.forward.health_problems() if view.forward is not None else []
        if problems:
            request.setResponseCode(503)
            return "".join(f"{p}\n" for p in problems).encode()
        return b"ok\n"

    root = resource.Resource()
    root.putChild(b"healthz", _Leaf(healthz))
    forward = resource.Resource()
    forward.putChild(b"health", _Leaf(forward_health))
    forward.putChild(b"backends", _BackendHealth(view))
    root.putChild(b"forward", forward)
    root.putChild(b"status", _Leaf(status))
    root.putChild(b"metrics", _Leaf(metrics))
    root.putChild(b"reload", _Reload(view))
    site = server.Site(root)
    site.displayTracebacks = False
    site.log = lambda request: None  # type: ignore[method-assign]  # scrapes are not news
    return site
