"""The POP's BGP status as `pop status`, /status and /metrics show it (read from state_dir)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from anycastedge.bgp.decision import ANNOUNCED, WITHDRAWN
from anycastedge.config.pop import PopConfig
from anycastedge.statedir.files import StateFileError
from anycastedge.statedir.hook import HookStatus, read_hook_status, status_fields
from anycastedge.statedir.maintenance import Maintenance, read_maintenance

EXIT_ANNOUNCED, EXIT_ERROR, EXIT_NOT_ANNOUNCED, EXIT_NO_HOOK = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class PopStatus:
    """Maintenance and the hook's last report, each with the error that made it unreadable."""

    pop: str
    anycast: tuple[str, ...]
    maintenance: Maintenance | None
    maintenance_error: str | None  # the hook treats an unreadable file as maintenance
    hook: HookStatus | None
    hook_error: str | None

    @property
    def in_maintenance(self) -> bool:
        """Whether the hook sees this POP as withdrawn by an operator."""
        return self.maintenance is not None or self.maintenance_error is not None

    @property
    def withdrawn(self) -> bool:
        """Whether the hook reports every anycast prefix withdrawn (the end of a drain)."""
        if self.hook is None:
            return False
        told = self.hook.prefixes
        return all(p in told and told[p].status == WITHDRAWN for p in self.anycast)

    @property
    def exit_code(self) -> int:
        """0 all announced, 2 some not, 3 no hook status, 1 a state file is unreadable."""
        if self.hook_error is not None or self.maintenance_error is not None:
            return EXIT_ERROR
        if self.hook is None:
            return EXIT_NO_HOOK
        told = self.hook.prefixes
        if all(p in told and told[p].status == ANNOUNCED for p in self.anycast):
            return EXIT_ANNOUNCED
        return EXIT_NOT_ANNOUNCED


def pop_status(config: PopConfig) -> PopStatus:
    """Read both state files; an unreadable one is reported, never raised."""
    maintenance = hook = None
    maintenance_error = hook_error = None
    try:
        maintenance = read_maintenance(config.state_dir)
    except StateFileError as exc:
        maintenance_error = str(exc)
    try:
        hook = read_hook_status(config.state_dir)
    except StateFileError as exc:
        hook_error = str(exc)
    return PopStatus(config.pop, config.anycast, maintenance, maintenance_error, hook, hook_error)


def status_json(status: PopStatus) -> dict[str, Any]:
    """The JSON form, for `pop status --json` and /status."""
    m, hook = status.maintenance, status.hook
    return {
        "pop": status.pop,
        "anycast": list(status.anycast),
        "maintenance": None
        if m is None
        else {"since": m.since, "drain_seconds": m.drain_seconds, "reason": m.reason, "who": m.who},
        "maintenance_error": status.maintenance_error,
        "hook": None if hook is None else status_fields(hook),
        "hook_error": status.hook_error,
        "hook_age_seconds": None if hook is None else hook.age,
        "withdrawn": status.withdrawn,
        "exit_code": status.exit_code,
    }


def _ago(ts: float) -> str:
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ts))} ({time.time() - ts:.0f}s ago)"


def render_pop_status(status: PopStatus) -> str:
    """Human-readable `pop status`."""
    lines = [f"POP {status.pop}"]
    m = status.maintenance
    if status.maintenance_error is not None:
        lines.append(f"maintenance: UNREADABLE ({status.maintenance_error}); the hook withdraws")
    elif m is not None:
        reason = f", reason: {m.reason}" if m.reason else ""
        lines.append(
            f"maintenance: since {_ago(m.since)} by {m.who or '?'}, "
            f"drain {m.drain_seconds:g}s{reason}"
        )
    else:
        lines.append("maintenance: no")
    hook = status.hook
    if status.hook_error is not None:
        lines.append(f"hook: status UNREADABLE ({status.hook_error})")
        return "\n".join(lines)
    if hook is None:
        lines.append("hook: no status yet (is ExaBGP running the hook?)")
        return "\n".join(lines)
    lines.append(f"hook: pid {hook.pid}, state {hook.state}, updated {_ago(hook.updated_at)}")
    for prefix in status.anycast:
        p = hook.prefixes.get(prefix)
        if p is None:
            lines.append(f"  {prefix}: unknown to the hook")
        else:
            lines.append(f"  {prefix}: {p.status} since {_ago(p.since)}: {p.why}")
            lines.append(f"    told ExaBGP: {p.line}")
    for c in hook.checks:
        mark = "ok  " if c.ok else "FAIL"
        lines.append(f"  check {mark} {c.check}: {c.detail} ({c.latency * 1000:.1f} ms)")
    return "\n".join(lines)
