"""``maintenance.json``: an operator's withdrawal of this POP, written by `pop withdraw`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from anycastedge.statedir.files import StateFileError, field_error, read_record, write_record

FILE = "maintenance.json"
KIND = "maintenance"


@dataclass(frozen=True, slots=True)
class Maintenance:
    """An operator's withdrawal: since when, and how long to drain first."""

    since: float
    drain_seconds: float
    reason: str = ""
    who: str = ""


def set_maintenance(state_dir: Path, maintenance: Maintenance) -> None:
    """Put the POP into maintenance (the hook drains, then withdraws)."""
    write_record(
        state_dir / FILE,
        KIND,
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
        (state_dir / FILE).unlink()
    except FileNotFoundError:
        return False
    return True


def read_maintenance(state_dir: Path) -> Maintenance | None:
    """The maintenance state, or None; StateFileError if the file is unusable."""
    path = state_dir / FILE
    data = read_record(path, KIND)
    if data is None:
        return None
    try:
        return Maintenance(
            float(data["since"]),
            float(data["drain_seconds"]),
            str(data.get("reason", "")),
            str(data.get("who", "")),
        )
    except (TypeError, ValueError, KeyError) as exc:
        raise field_error(path, exc) from None


def get_maintenance(state_dir: Path) -> Maintenance | None:
    """Like read_maintenance, but an unusable file counts as maintenance (fail closed)."""
    try:
        return read_maintenance(state_dir)
    except StateFileError as exc:
        return Maintenance(0.0, 0.0, f"unreadable maintenance file {exc}")
