"""The state files: typed records that round-trip, and clear errors for anything else."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from anycastedge.statedir.files import StateFileError
from anycastedge.statedir.hook import (
    CheckReport,
    HookStatus,
    PrefixReport,
    read_hook_status,
    write_hook_status,
)
from anycastedge.statedir.maintenance import (
    Maintenance,
    clear_maintenance,
    get_maintenance,
    read_maintenance,
    set_maintenance,
)
from anycastedge.statedir.serials import ServedSerial, read_serials, write_serials

HOOK = HookStatus(
    pid=42,
    updated_at=1700000000.5,
    state="UP",
    count=0,
    prefixes={"203.0.113.53/32": PrefixReport("announced", 1.0, "announce route ...", "healthy")},
    checks=(CheckReport("tcp://127.0.0.1:53", True, 0.002, "connected", 2.0),),
)


def test_records_round_trip(tmp_path: Path) -> None:
    """What is written is what is read, for each of the three files."""
    write_hook_status(tmp_path, HOOK)
    assert read_hook_status(tmp_path) == HOOK
    maintenance = Maintenance(1.5, 30.0, "kernel upgrade", "ops")
    set_maintenance(tmp_path, maintenance)
    assert read_maintenance(tmp_path) == maintenance
    assert clear_maintenance(tmp_path) and not clear_maintenance(tmp_path)
    assert read_maintenance(tmp_path) is None
    serials = {"example.com.": ServedSerial("abc", 7), "example.net.": ServedSerial("def", 9)}
    write_serials(tmp_path, serials)
    assert read_serials(tmp_path) == serials


def test_missing_files_read_as_nothing(tmp_path: Path) -> None:
    """No file: no hook report, no maintenance, no serials."""
    assert read_hook_status(tmp_path) is None
    assert read_maintenance(tmp_path) is None
    assert read_serials(tmp_path) == {}


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a hook-status record (a JSON list)"),
        ('{"pid": 1, "state": "UP"}', "written by an older anycastedge (no format"),
        ('{"kind": "hook-status", "format": 2}', "written by a newer anycastedge (format 2;"),
        ('{"kind": "zone-serials", "format": 1}', "not a hook-status record (kind 'zone-serials')"),
        ('{"kind": "hook-status", "format": 1, "pid": "x"}', "malformed record"),
    ],
)  # fmt: skip
def test_unusable_files_are_clear_errors(tmp_path: Path, content: str, reason: str) -> None:
    """Garbage, another version's file or another file's record: an error naming file and why."""
    (tmp_path / "hook.json").write_text(content)
    with pytest.raises(StateFileError) as caught:
        read_hook_status(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path / 'hook.json'}: {reason}")


def test_unreadable_maintenance_counts_as_maintenance(tmp_path: Path) -> None:
    """The hook fails closed: a maintenance file it cannot read withdraws the POP."""
    (tmp_path / "maintenance.json").write_text(json.dumps({"since": 1}))
    with pytest.raises(StateFileError):
        read_maintenance(tmp_path)
    maintenance = get_maintenance(tmp_path)
    assert maintenance is not None
    assert maintenance.reason.startswith("unreadable maintenance file")


def test_files_are_replaced_atomically(tmp_path: Path) -> None:
    """Writing leaves exactly the file: no temporary files beside it."""
    for count in range(3):
        write_hook_status(tmp_path, HookStatus(1, 1.0, "UP", count, {}, ()))
    assert [p.name for p in tmp_path.iterdir()] == ["hook.json"]


def test_files_are_readable_by_the_other_users_of_the_pop(tmp_path: Path) -> None:
    """A state file is 0644 whatever the umask: `pop withdraw` run as root writes what the hook,
    running as the service user, must read (an unreadable one would skip the drain)."""
    old = os.umask(0o077)
    try:
        set_maintenance(tmp_path, Maintenance(1.0, 30.0, "test", "root"))
    finally:
        os.umask(old)
    assert (tmp_path / "maintenance.json").stat().st_mode & 0o777 == 0o644
