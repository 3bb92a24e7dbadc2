"""Serving state: the Responder in service, reloads that swap it whole, and the zone-file watcher.

The service knows nothing of how zones are built: it is handed a ``build`` function (zone files
to a ready Responder) and a ``fingerprint`` of the files that matter. It owns the served serials,
so that a zone's serial never goes backwards across reloads and restarts.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.logger import Logger

from anycastedge.dns.wire import Responder
from anycastedge.dns.zone import ZoneSet
from anycastedge.errors import ConfigError, Problem
from anycastedge.statedir.files import StateFileError
from anycastedge.statedir.serials import ServedSerial, read_serials, write_serials

log = Logger()

Serials = Mapping[str, ServedSerial]  # by zone name with the final dot
SHOWN = 100  # problems kept in /status and logged per reload; `zone check` lists them all


def shown(problems: Sequence[object]) -> tuple[str, ...]:
    """The first SHOWN problems as text, and how many more there are: a zone of 100k records
    can carry 100k warnings, and logging them all would stall the server for seconds."""
    out = tuple(str(p) for p in problems[:SHOWN])
    if len(problems) > SHOWN:
        out += (f"... and {len(problems) - SHOWN} more (`anycastedge zone check` lists them all)",)
    return out


@dataclass(frozen=True, slots=True)
class Built:
    """One successful build: the Responder to serve and what the build warned about."""

    responder: Responder
    warnings: tuple[Problem, ...] = ()


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """The outcome of one (re)load, for /status and logs."""

    at: float
    ok: bool
    trigger: str
    problems: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """The JSON form /status shows (for serve and each DNS worker alike)."""
        return {"at": self.at, "ok": self.ok, "trigger": self.trigger,
                "problems": list(self.problems)}  # fmt: skip


@dataclass(slots=True)
class ReloadLog:
    """Counts and the last results of (re)loads."""

    success: int = 0
    failure: int = 0
    history: list[ReloadResult] = field(default_factory=list)

    def add(self, result: ReloadResult) -> None:
        """Count ``result`` and keep it among the last ten."""
        if result.ok:
            self.success += 1
        else:
            self.failure += 1
        self.history = (self.history + [result])[-10:]

    @property
    def last(self) -> ReloadResult | None:
        """The most recent result."""
        return self.history[-1] if self.history else None


class ZoneService(service.Service):
    """Owns the Responder in service; a reload builds a new one and swaps it in if it validates."""

    def __init__(
        self,
        build: Callable[[Serials, ZoneSet], Built],
        fingerprint: Callable[[], Hashable],
        reactor: Any,
        watch_interval: float = 0.0,
        state_dir: Path | None = None,
        on_swap: Callable[[Built], None] | None = None,
    ) -> None:
        self._build = build
        self._fingerprint_now = fingerprint
        self._reactor = reactor
        self._watch_interval = watch_interval
        self._state_dir = state_dir
        self._on_swap = on_swap
        self.serials = self._read_serials()
        self.reloads = ReloadLog()
        self.pid = os.getpid()
        self._fingerprint: Hashable = None
        self._watch: task.LoopingCall | None = None
        self._reloading: defer.Deferred[bool] | None = None
        self._again = False
        self.responder = Responder(ZoneSet({}), "")

    @property
    def zones(self) -> ZoneSet:
        """The zone set in service."""
        return self.responder.zones

    def _read_serials(self) -> dict[str, ServedSerial]:
        if self._state_dir is None:
            return {}
        try:
            return read_serials(self._state_dir)
        except StateFileError as exc:
            log.warn("ignoring the served serials: {exc}", exc=str(exc))
            return {}

    def load(self) -> tuple[Problem, ...]:
        """Load synchronously (start-up); raises ConfigError. Returns the warnings."""
        fingerprint = self._fingerprint_now()
        gc.disable()  # see reload: the collector would scan the zone again and again as it grows
        try:
            built = self._build(dict(self.serials), ZoneSet({}))
        finally:
            gc.enable()
        self._swap(built, fingerprint, "start")
        gc.freeze()  # see reload
        return built.warnings

    def _swap(self, built: Built, fingerprint: Hashable, trigger: str) -> None:
        old, self.responder = self.responder, built.responder
        # Freeing a large zone set is millions of deallocations in one C call if the last
        # reference goes here: hand it to a thread that takes it apart piece by piece.
        self._reactor.callInThread(old.dispose, built.responder.zones)
        del old
        self._fingerprint = fingerprint
        self.reloads.add(ReloadResult(time.time(), True, trigger, shown(built.warnings)))
        for zone in self.zones:
            log.info("serving {zone} serial {serial}", zone=zone.origin, serial=zone.serial)
            self.serials[zone.origin.to_text()] = ServedSerial(zone.digest, zone.serial)
        if self._state_dir is not None:
            try:
                write_serials(self._state_dir, self.serials)
            except OSError as exc:
                log.warn("cannot save zone serials in {dir}: {exc}", dir=self._state_dir, exc=exc)
        if self._on_swap is not None:
            self._on_swap(built)

    def reload(
        self, trigger: str = "signal", serials: Serials | None = None
    ) -> defer.Deferred[bool]:
        """Rebuild the zone set off the reactor thread (zones whose files did not change are kept
        as they are); swap it in if it validates. ``serials``: what each zone was served with
        before, if not what this service served (a DNS worker is handed serve's)."""
        if self._reloading is not None:
            # The running reload may have read the files before this change: run once more.
            self._again = True
            return self._reloading
        fingerprint = self._fingerprint_now()
        previous = dict(self.serials if serials is None else serials)
        # A zone set is millions of long-lived objects. A full collection while a new one is
        # built would scan them all in one C call, holding the GIL for seconds and stalling every
        # query; so no collection while building, and what is served is then frozen out of the
        # collector's scans (it is freed by reference counting when it is retired).
        gc.disable()
        d: defer.Deferred[Built] = threads.deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), self._build, previous, self.zones
        )

        def ok(built: Built) -> bool:
            self._swap(built, fingerprint, trigger)
            for warning in shown(built.warnings):
                log.warn("zone warning: {w}", w=warning)
            return True

        def failed(failure: Any) -> bool:
            self._fingerprint = fingerprint  # do not retry until the files change again
            problems = (
                shown(failure.value.problems)
                if failure.check(ConfigError)
                else (repr(failure.value),)
            )
            self.reloads.add(ReloadResult(time.time(), False, trigger, problems))
            log.error(
                "reload rejected, still serving the previous zones:\n{problems}",
                problems="\n".join(f"- {p}" for p in problems),
            )
            return False

        def done(result: bool) -> bool:
            gc.freeze()
            gc.enable()
            self._reloading = None
            if self._again:
                self._again = False
                self.reload(trigger)
            return result

        self._reloading = d.addCallbacks(ok, failed).addBoth(done)
        return self._reloading

    def check_files(self) -> defer.Deferred[bool] | None:
        """Reload if any zone file changed since the last (attempted) load."""
        if self._reloading is None and self._fingerprint_now() != self._fingerprint:
            return self.reload("file change")
        return None

    def startService(self) -> None:  # noqa: N802
        super().startService()
        if self._watch_interval > 0:
            self._watch = task.LoopingCall(self.check_files)
            self._watch.clock = self._reactor
            self._watch.start(self._watch_interval, now=False)

    def stopService(self) -> defer.Deferred[None] | None:  # noqa: N802
        if self._watch is not None and self._watch.running:
            self._watch.stop()
        return super().stopService()  # type: ignore[no-any-return]
