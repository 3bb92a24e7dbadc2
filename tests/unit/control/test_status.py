"""`pop status` from the state files: the reason a prefix is withdrawn, and unreadable files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anycastedge.cli import main
from anycastedge.statedir.hook import HookStatus, PrefixReport, write_hook_status


def _pop_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "pop.yaml"
    path.write_text(
        "pop: t\nstate_dir: state\nanycast: [203.0.113.53/32]\n"
        "bgp:\n  neighbors: [{address: 127.0.0.1, peer_as: 64500}]\n"
        "  health: {checks: [{kind: tcp, address: '127.0.0.1:53'}]}\n"
    )
    return path


def test_status_shows_why_a_prefix_is_withdrawn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reason the hook recorded is what `pop status` prints; not announced: exit 2."""
    path = _pop_yaml(tmp_path)
    why = "203.0.113.53 is not configured on a local interface"
    report = PrefixReport("withdrawn", 1.0, "withdraw route 203.0.113.53/32 next-hop self", why)
    write_hook_status(
        tmp_path / "state", HookStatus(7, 2.0, "UP", 0, {"203.0.113.53/32": report}, ())
    )
    assert main(["pop", "status", "-c", str(path)]) == 2
    out = capsys.readouterr().out
    assert "203.0.113.53/32: withdrawn since" in out and why in out


@pytest.mark.parametrize("name", ["hook.json", "maintenance.json"])
def test_unreadable_state_files_are_reported_not_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """Hand-edited garbage: `pop status` names the file and the problem and exits 1."""
    path = _pop_yaml(tmp_path)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / name).write_text("{oops")
    assert main(["pop", "status", "-c", str(path)]) == 1
    assert f"{tmp_path / 'state' / name}: not JSON" in capsys.readouterr().out
    assert main(["pop", "status", "-c", str(path), "--json"]) == 1
    document = json.loads(capsys.readouterr().out)
    key = "hook_error" if name == "hook.json" else "maintenance_error"
    assert "not JSON" in document[key] and document["exit_code"] == 1


@pytest.mark.parametrize(
    ("statuses", "withdrawn"),
    [
        ({"203.0.113.53/32": "withdrawn", "2001:db8:53::53/128": "withdrawn"}, True),
        ({"203.0.113.53/32": "withdrawn", "2001:db8:53::53/128": "draining"}, False),
        ({"203.0.113.53/32": "withdrawn"}, False),  # a prefix the hook has not spoken of
        (None, False),  # no hook report at all: nothing to vouch that it is withdrawn
    ],
)
def test_withdrawn_means_every_prefix_reported_withdrawn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], statuses: dict[str, str] | None,
    withdrawn: bool,
) -> None:
    """`withdrawn` in `pop status --json` (what maintenance.yml waits for) needs every anycast
    prefix withdrawn in the hook's own report."""
    path = tmp_path / "pop.yaml"
    path.write_text(
        "pop: t\nstate_dir: state\nanycast: [203.0.113.53/32, 2001:db8:53::53/128]\n"
        "bgp:\n  neighbors: [{address: 127.0.0.1, peer_as: 64500}]\n"
        "  health: {checks: [{kind: tcp, address: '127.0.0.1:53'}]}\n"
    )
    if statuses is not None:
        prefixes = {p: PrefixReport(s, 1.0, f"{s} {p}", "test") for p, s in statuses.items()}
        write_hook_status(tmp_path / "state", HookStatus(7, 2.0, "DISABLED", 0, prefixes, ()))
    main(["pop", "status", "-c", str(path), "--json"])
    assert json.loads(capsys.readouterr().out)["withdrawn"] is withdrawn
