"""The POP's BGP status as `pop status`, /status and /metrics show it (read from state_dir)."""

from __future__ import annotations

import time
from typing import Any

from anycastedge.config.pop import PopConfig
from anycastedge.control.maintenance import HOOK_STATUS_FILE, get_maintenance
from anycastedge.control.statefile import read_json

EXIT_ANNOUNCED, EXIT_ERROR, EXIT_NOT_ANNOUNCED, EXIT_NO_HOOK = 0, 1, 2, 3


def pop_status(config: PopConfig) -> dict[str, Any]:
    """Maintenance state, the hook's last report, and the exit code that sums them up."""
    maintenance = get_maintenance(config.state_dir)
    try:
        hook = read_json(config.state_dir / HOOK_STATUS_FILE)
    except (OSError, ValueError):
        hook = None
    prefixes = (hook or {}).get("prefixes", {})
    if hook is None:
        code = EXIT_NO_HOOK
    elif all(prefixes.get(p, {}).get("status") == "announced" for p in config.anycast):
        code = EXIT_ANNOUNCED
    else:
        code = EXIT_NOT_ANNOUNCED
    return {
        "pop": config.pop,
        "anycast": list(config.anycast),
        "maintenance": None
        if maintenance is None
        else {
            "since": maintenance.since,
            "drain_seconds": maintenance.drain_seconds,
            "reason": maintenance.reason,
            "who": maintenance.who,
        },
        "hook": hook,
        "hook_age_seconds": None if hook is None else time.time() - hook.get("updated_at", 0),
        "exit_code": code,
    }


def _ago(ts: float) -> str:
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ts))} ({time.time() - ts:.0f}s ago)"


def render_pop_status(status: dict[str, Any]) -> str:
    """Human-readable `pop status`."""
    lines = [f"POP {status['pop']}"]
    m = status["maintenance"]
    if m:
        who, drain = m["who"] or "?", m["drain_seconds"]
        reason = f", reason: {m['reason']}" if m["reason"] else ""
        lines.append(f"maintenance: since {_ago(m['since'])} by {who}, drain {drain:g}s{reason}")
    else:
        lines.append("maintenance: no")
    hook = status["hook"]
    if hook is None:
        lines.append("hook: no status yet (is ExaBGP running the hook?)")
        return "\n".join(lines)
    lines.append(
        f"hook: pid {hook['pid']}, state {hook['state']}, updated {_ago(hook['updated_at'])}"
    )
    for prefix in status["anycast"]:
        p = hook["prefixes"].get(prefix)
        if p is None:
            lines.append(f"  {prefix}: unknown to the hook")
        else:
            lines.append(f"  {prefix}: {p['status']} since {_ago(p['since'])}: {p['why']}")
            lines.append(f"    told ExaBGP: {p['line']}")
    for c in hook["checks"]:
        mark = "ok  " if c["ok"] else "FAIL"
        lines.append(f"  check {mark} {c['check']}: {c['detail']} ({c['latency'] * 1000:.1f} ms)")
    return "\n".join(lines)
