"""The maintenance state file and the hook's status file, both written atomically in state_dir."""

from __future__ import annotations

from pathlib import Path

from anycastedge.bgp.decision import Maintenance
from anycastedge.control.statefile import read_json, write_json

MAINTENANCE_FILE = "maintenance.json"
HOOK_STATUS_FILE = "hook.json"


def set_maintenance(state_dir: Path, maintenance: Maintenance) -> None:
    """Put the POP into maintenance (the hook drains, then withdraws)."""
    write_json(
        state_dir / MAINTENANCE_FILE,
        {
            "since": maintenance.since,
            "drain_seconds": maintenance.drain_seconds,
            "reason": maintenance.reason,
            "who": maintenance.who,
        },
    )


def clear_maintenance(state_dir: Path) -> bool:
    """Take the POP out of maintenance; False if it was not in maintenance."""
    try:
        (state_dir / MAINTENANCE_FILE).unlink()
    except FileNotFoundError:
        return False
    return True


def get_maintenance(state_dir: Path) -> Maintenance | None:
    """The maintenance state, or None. An unreadable file counts as maintenance (fail closed)."""
    try:
        data = read_json(state_dir / MAINTENANCE_FILE)
    except (OSError, ValueError) as exc:
        return Maintenance(0.0, 0.0, f"unreadable maintenance file: {exc}")
    if data is None:
        return None
    try:
        return Maintenance(
            float(data["since"]),
            float(data.get("drain_seconds", 0)),
            str(data.get("reason", "")),
            str(data.get("who", "")),
        )
    except (TypeError, ValueError, KeyError) as exc:
        return Maintenance(0.0, 0.0, f"unreadable maintenance file: {exc}")
