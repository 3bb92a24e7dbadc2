"""Serving state: the current Responder, reloads that swap it whole, and the zone-file watcher."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.logger import Logger

from anycastedge.config.pop import DnsConfig
from anycastedge.config.zones import load_zones, zone_files
from anycastedge.dns.wire import Counts, Responder
from anycastedge.dns.zone import ZoneSet
from anycastedge.errors import ConfigError, Problem

log = Logger()


@dataclass(slots=True)
class ReloadResult:
    """The outcome of one (re)load, for /status and logs."""

    at: float
    ok: bool
    trigger: str
    problems: list[str] = field(default_factory=list)


def _fingerprint(paths: Sequence[Path]) -> tuple[tuple[str, int, int], ...]:
    out = []
    for path in zone_files(paths):
        try:
            st = path.stat()
        except OSError:
            continue
        out.append((str(path), st.st_mtime_ns, st.st_size))
    for path in paths:  # files appearing or vanishing change the directory's mtime
        try:
            out.append((str(path), path.stat().st_mtime_ns, 0))
        except OSError:
            pass
    return tuple(out)


class ZoneService(service.Service):
    """Owns the served zone set; reload builds a new one and swaps one reference if it validates."""

    def __init__(
        self,
        pop: str,
        dns_config: DnsConfig,
        reactor: Any,
        paths: Sequence[Path] | None = None,
        on_log: Callable[[str], None] | None = None,
    ) -> None:
        self.pop = pop
        self.config = dns_config
        self.paths = list(paths) if paths is not None else [dns_config.zones]
        self.reactor: IReactorTime = reactor
        self.counts: Counts = {}
        self.errors = 0
        self.dropped = 0
        self.reloads = {"success": 0, "failure": 0}
        self.history: list[ReloadResult] = []
        self._fingerprint: tuple[tuple[str, int, int], ...] = ()
        self._watch: task.LoopingCall | None = None
        self._reloading: defer.Deferred[bool] | None = None
        self.responder = self._responder(ZoneSet({}))

    def _responder(self, zones: ZoneSet) -> Responder:
        c = self.config
        return Responder(zones, self.pop, c.max_udp_size, c.nsid, c.cache_size, self.counts)

    @property
    def zones(self) -> ZoneSet:
        """The zone set in service."""
        return self.responder.zones

    def load(self) -> list[Problem]:
        """Load synchronously (start-up); raises ConfigError. Returns the warnings."""
        fingerprint = _fingerprint(self.paths)
        zones, warnings = load_zones(self.paths, self.config.soa, None)
        self._swap(zones, fingerprint, "start", warnings)
        return warnings

    def _swap(
        self, zones: ZoneSet, fingerprint: Any, trigger: str, warnings: list[Problem]
    ) -> None:
        self.responder = self._responder(zones)
        self._fingerprint = fingerprint
        self.reloads["success"] += 1
        self._record(ReloadResult(time.time(), True, trigger, [str(w) for w in warnings]))
        for zone in zones:
            log.info("serving {zone} serial {serial}", zone=zone.origin, serial=zone.serial)

    def _record(self, result: ReloadResult) -> None:
        self.history = (self.history + [result])[-10:]

    def reload(self, trigger: str = "signal") -> defer.Deferred[bool]:
        """Rebuild the whole zone set off the reactor thread; swap it in if it validates."""
        if self._reloading is not None:
            return self._reloading
        fingerprint = _fingerprint(self.paths)
        previous = self.zones

        def build() -> tuple[ZoneSet, list[Problem]]:
            return load_zones(self.paths, self.config.soa, previous)

        reactor: IReactorThreads = self.reactor  # type: ignore[assignment]
        d: defer.Deferred[tuple[ZoneSet, list[Problem]]] = threads.deferToThreadPool(
            self.reactor, reactor.getThreadPool(), build
        )

        def ok(result: tuple[ZoneSet, list[Problem]]) -> bool:
            self._swap(result[0], fingerprint, trigger, result[1])
            for warning in result[1]:
                log.warn("zone warning: {w}", w=str(warning))
            return True

        def failed(failure: Any) -> bool:
            self._fingerprint = fingerprint  # do not retry until the files change again
            self.reloads["failure"] += 1
            problems = (
                [str(p) for p in failure.value.problems]
                if failure.check(ConfigError)
                else [repr(failure.value)]
            )
            self._record(ReloadResult(time.time(), False, trigger, problems))
            log.error(
                "reload rejected, still serving the previous zones:\n{problems}",
                problems="\n".join(f"- {p}" for p in problems),
            )
            return False

        def done(result: bool) -> bool:
            self._reloading = None
            return result

        self._reloading = d.addCallbacks(ok, failed).addBoth(done)
        return self._reloading

    def check_files(self) -> defer.Deferred[bool] | None:
        """Reload if any zone file changed since the last (attempted) load."""
        if self._reloading is None and _fingerprint(self.paths) != self._fingerprint:
            return self.reload("file change")
        return None

    def startService(self) -> None:  # noqa: N802
        super().startService()
        if self.config.watch_interval > 0:
            self._watch = task.LoopingCall(self.check_files)
            self._watch.clock = self.reactor
            self._watch.start(self.config.watch_interval, now=False)

    def stopService(self) -> defer.Deferred[None] | None:  # noqa: N802
        if self._watch is not None and self._watch.running:
            self._watch.stop()
        return super().stopService()  # type: ignore[no-any-return]
