"""The maintenance state file and the hook's status file, both written atomically in state_dir."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from anycastedge.bgp.decision import Maintenance

MAINTENANCE_FILE = "maintenance.json"
HOOK_STATUS_FILE = "hook.json"


def write_json(path: Path, data: Any) -> None:
    """Replace ``path`` atomically: readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read_json(path: Path) -> Any:
    """The parsed file, or None if it does not exist."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


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
