"""The forwarding tier as a Twisted service: listeners, the backends' pools, their checks.

``apply`` takes a (new) ForwardConfig: listeners are added, removed, or rebound when their
address or protocol changed, and otherwise keep their socket and connections; pools are rebuilt
keeping the state of endpoints that stay, so connections open through them keep being counted.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, cast

from twisted.application import service
from twisted.internet import task
from twisted.internet.interfaces import IProtocolFactory
from twisted.logger import Logger

from anycastedge.forward.access_logs import AccessLogs
from anycastedge.forward.http import HttpListener
from anycastedge.forward.http_stats import AccessLog
from anycastedge.forward.model import (
    HTTP_PROTOCOLS,
    Backend,
    ForwardConfig,
    Listener,
    ListenerTls,
)
from anycastedge.forward.pool import Pool
from anycastedge.forward.tcp import TcpListener
from anycastedge.forward.tls import ClientTls, ServerTls, TlsError, check_certificates
from anycastedge.forward.udp import UdpListener
from anycastedge.forward.upstream import UpstreamPools
from anycastedge.forward.view import BackendView, pool_view
from anycastedge.forward.workers import SharedSockets
from anycastedge.health.check import CheckTarget

log = Logger()


def check_target(backend: Backend, index: int) -> CheckTarget:
    """What the health monitor probes for endpoint ``index`` of ``backend``."""
    endpoint = backend.endpoints[index]
    port = backend.check_port or endpoint.port
    return CheckTarget(endpoint.host, dataclasses.replace(backend.healthcheck, port=port))


class Running:
    """One listener's socket and the protocol object behind it."""

    __slots__ = ("listener", "handler", "port", "tls")

    def __init__(
        self,
        listener: Listener,
        handler: TcpListener | UdpListener | HttpListener,
        port: Any,
        tls: ServerTls | None = None,
    ) -> None:
        self.listener, self.handler, self.port, self.tls = listener, handler, port, tls


class ForwardService(service.Service):
    """Runs the listeners of a ForwardConfig and keeps its pools' health up to date."""

    def __init__(
        self,
        config: ForwardConfig,
        reactor: Any,
        update_checks: Callable[[list[CheckTarget]], None],
        clock: Callable[[], float] = time.monotonic,
        shared: SharedSockets | None = None,
    ) -> None:
        self.reactor = reactor
        self.shared = shared  # workers > 1: TCP-based listeners adopt sockets bound by serve
        self.clock = clock
        self.config = ForwardConfig()
        self.pools: dict[str, Pool] = {}
        self.active: dict[str, Running] = {}  # by listener name
        self._update_checks = update_checks
        self._targets: dict[CheckTarget, list[tuple[str, int]]] = {}
        self.upstreams = UpstreamPools(reactor)  # idle keep-alive connections of HTTP listeners
        self.access_logs = AccessLogs()
        self.client_tls: dict[str, ClientTls] = {}  # by backend: HTTPS to its endpoints
        self._flusher = task.LoopingCall(self.access_logs.flush)
        self._flusher.clock = reactor
        self.apply(config)

    # --- configuration

    def apply(self, config: ForwardConfig) -> None:
        """Serve ``config`` from now on, without dropping what it leaves unchanged."""
        self.pools = {
            b.name: Pool.build(b, self.clock, self.pools.get(b.name)) for b in config.backends
        }
        # Raises TlsError for an unreadable CA file: config validation has checked it already.
        self.client_tls = {b.name: ClientTls(b.http) for b in config.backends if b.http.tls}
        targets: dict[CheckTarget, list[tuple[str, int]]] = {}
        for backend in config.backends:
            for i in range(len(backend.endpoints)):
                targets.setdefault(check_target(backend, i), []).append((backend.name, i))
        self._targets = targets
        self.config = config
        if self.running:
            self.access_logs.close()  # reopened by path: after a log rotation, the new file is used
            self._relisten()
        self._update_checks(list(targets))
        # A target already checked keeps its state in the monitor; its pools learn it at the
        # next result. An endpoint kept across the reload kept its state in the pool too.

    def _relisten(self) -> None:
        new = {listener.name: listener for listener in self.config.listeners}
        for name in [n for n in self.active if n not in new]:
            self._stop(name)
        for name, listener in new.items():
            current = self.active.get(name)
            if current is not None and (
                (current.listener.host, current.listener.port, current.listener.protocol)
                == (listener.host, listener.port, listener.protocol)
            ):
                current.listener = listener
                current.handler.listener = listener
                if isinstance(current.handler, HttpListener):
                    current.handler.access_log = self.access_log(listener)
                if current.tls is not None and listener.http is not None and listener.http.tls:
                    self._reload_tls(name, current.tls, listener)
                continue
            if current is not None:
                self._stop(name)
            try:
                self._start(listener)
            except TlsError as exc:
                # Checked when pop.yaml was read; a file changed since then.
                log.error("listener {name} not started: {exc}", name=name, exc=str(exc))

    def _start(self, listener: Listener) -> None:
        def pool() -> Pool:
            # The handler's listener, which a reload may point at another backend.
            return self.pools[handler.listener.backend]

        handler: TcpListener | UdpListener | HttpListener
        tls = None
        if listener.protocol == "udp":
            handler = UdpListener(listener, pool, self.reactor)
            port = self.reactor.listenUDP(listener.port, handler, interface=listener.host)
        elif listener.protocol in HTTP_PROTOCOLS:
            handler = HttpListener(
                listener,
                lambda name: self.pools.get(name),  # the pools now: a reload replaces them
                self.reactor,
                self.upstreams,
                self.access_log(listener),
                lambda backend, name: self.client_tls[backend.name].creator(name),
            )
            if listener.http is not None and listener.http.tls is not None:
                tls = ServerTls(listener.http.tls)  # TlsError: serve refuses to start
                _warn_dates(listener.name, listener.http.tls)
                if self.shared is not None:
                    # A twisted Factory provides IProtocolFactory through zope: mypy cannot see it.
                    port = self._listen_tcp(listener, tls.wrap(cast(IProtocolFactory, handler)))
                else:
                    port = self.reactor.listenSSL(
                        listener.port, handler, tls, backlog=1024, interface=listener.host
                    )
            else:
                port = self._listen_tcp(listener, handler)
        else:
            handler = TcpListener(listener, pool, self.reactor)
            port = self._listen_tcp(listener, handler)
        if port is None:
            return  # a worker without serve's socket for it: shared.listen logged why
        self.active[listener.name] = Running(listener, handler, port, tls)
        log.info("forward listener {name} on {bind}/{proto} -> {to}",
                 name=listener.name, bind=listener.bind, proto=listener.protocol,
                 to=_destination(listener))  # fmt: skip

    def _listen_tcp(self, listener: Listener, factory: Any) -> Any | None:
        """listenTCP; with workers > 1 the socket serve bound once (None: not served here)."""
        if self.shared is not None:
            return self.shared.listen(listener, factory, self.reactor)
        return self.reactor.listenTCP(listener.port, factory, backlog=1024, interface=listener.host)

    def _reload_tls(self, name: str, tls: ServerTls, listener: Listener) -> None:
        """Certificates read anew (a reload): new connections get them; on error the ones
        loaded before stay."""
        assert listener.http is not None and listener.http.tls is not None
        try:
            tls.reload(listener.http.tls)
        except TlsError as exc:
            log.error("listener {name}: certificates not reloaded, still serving the previous "
                      "ones: {exc}", name=name, exc=str(exc))  # fmt: skip
        else:
            log.info("listener {name}: certificates reloaded", name=name)
            _warn_dates(name, listener.http.tls)

    def access_log(self, listener: Listener) -> AccessLog | None:
        """The access log an HTTP listener writes to (shared by listeners naming one file)."""
        path = listener.http.access_log if listener.http is not None else None
        return None if path is None else self.access_logs.get(path)

    def _stop(self, name: str) -> None:
        running = self.active.pop(name)
        # Stops accepting; connections already open run on until they close.
        running.port.stopListening()
        if self.shared is not None:
            self.shared.release(name, self.config)

    # --- health

    def check_result(self, target: CheckTarget, ok: bool, serving: bool) -> None:
        """A health monitor result for ``target``: tell every pool endpoint it stands for."""
        for backend, index in self._targets.get(target, ()):
            pool = self.pools.get(backend)
            if pool is not None:
                pool.check_result(index, ok, serving)
                if not serving:
                    # Its idle keep-alive connections would only fail the next requests.
                    self.upstreams.close_endpoint(pool.stats[index].endpoint.host_port())

    def critical_down(self) -> list[str]:
        """Critical backends with no endpoint able to take new traffic."""
        return [
            name for name, pool in self.pools.items() if pool.backend.critical and not pool.any_up()
        ]

    def backend_views(self) -> list[BackendView]:
        """Every backend's endpoints, health and counters (/status, /metrics)."""
        return [pool_view(name, pool) for name, pool in self.pools.items()]

    def backend_up(self, name: str) -> bool | None:
        """Whether backend ``name`` has an endpoint taking new traffic (None: no such backend)."""
        pool = self.pools.get(name)
        return None if pool is None else pool.any_up()

    def health_problems(self) -> list[str]:
        """Why the POP should not be announced for forwarding (the POP-health URL): empty if
        every critical backend has an endpoint taking traffic."""
        down = self.critical_down()
        return [f"critical backends down: {', '.join(down)}"] if down else []

    # --- the service

    def startService(self) -> None:  # noqa: N802
        super().startService()
        for listener in self.config.listeners:
            self._start(listener)
        self._flusher.start(1.0, now=False)

    def stopService(self) -> None:  # noqa: N802
        super().stopService()
        for name in list(self.active):
            self._stop(name)
        self.upstreams.close_all()
        if self._flusher.running:
            self._flusher.stop()
        self.access_logs.close()


def _warn_dates(name: str, tls: ListenerTls) -> None:
    """Certificates served outside their validity period: clients will refuse them."""
    for problem in check_certificates(tls):
        log.warn("listener {name}: {problem}", name=name, problem=problem)


def _destination(listener: Listener) -> str:
    if listener.http is None:
        return f"backend {listener.backend}"
    return "backends " + ", ".join(sorted({r.backend for r in listener.http.routes}))
