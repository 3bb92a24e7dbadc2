"""``hook.json``: what the BGP hook last told ExaBGP and why, for `pop status` and /metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anycastedge.statedir.files import field_error, read_record, write_record

FILE = "hook.json"
KIND = "hook-status"


@dataclass(frozen=True, slots=True)
class PrefixReport:
    """One anycast prefix as the hook last left it."""

    status: str  # announced | draining | withdrawn
    since: float
    line: str  # the API command printed to ExaBGP
    why: str


@dataclass(frozen=True, slots=True)
class CheckReport:
    """The last result of one of the hook's health checks."""

    check: str
    ok: bool
    latency: float
    detail: str
    at: float


@dataclass(frozen=True, slots=True)
class HookStatus:
    """The whole file."""

    pid: int
    updated_at: float
    state: str  # a health.state.State value
    count: int
    prefixes: dict[str, PrefixReport]
    checks: tuple[CheckReport, ...]

    @property
    def age(self) -> float:
        """Seconds since the hook wrote this (a stale hook is a dead hook)."""
        return time.time() - self.updated_at


def write_hook_status(state_dir: Path, status: HookStatus) -> None:
    """Replace the status file atomically."""
    write_record(state_dir / FILE, KIND, status_fields(status))


def status_fields(status: HookStatus) -> dict[str, Any]:
    """The record as JSON-ready fields: the file's content, and `pop status --json`'s."""
    return {
        "pid": status.pid,
        "updated_at": status.updated_at,
        "state": status.state,
        "count": status.count,
        "prefixes": {
            p: {"status": r.status, "since": r.since, "line": r.line, "why": r.why}
            for p, r in status.prefixes.items()
        },
        "checks": [
            {"check": c.check, "ok": c.ok, "latency": c.latency, "detail": c.detail, "at": c.at}
            for c in status.checks
        ],
    }


def read_hook_status(state_dir: Path) -> HookStatus | None:
    """The hook's last report, or None if it never wrote one; StateFileError if unusable."""
    path = state_dir / FILE
    data = read_record(path, KIND)
    if data is None:
        return None
    try:
        return HookStatus(
            pid=int(data["pid"]),
            updated_at=float(data["updated_at"]),
            state=str(data["state"]),
            count=int(data["count"]),
            prefixes={
                str(p): PrefixReport(
                    str(r["status"]), float(r["since"]), str(r["line"]), str(r["why"])
                )
                for p, r in dict(data["prefixes"]).items()
            },
            checks=tuple(
                CheckReport(
                    str(c["check"]),
                    bool(c["ok"]),
                    float(c["latency"]),
                    str(c["detail"]),
                    float(c["at"]),
                )
                for c in data["checks"]
            ),
        )
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise field_error(path, exc) from None
