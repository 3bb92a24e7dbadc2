"""pop.yaml keys of least privilege: ``user``, ``control.allow_remote``; loose permissions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from anycastedge.config.pop import SoaConfig, load_pop
from anycastedge.config.source import writable_by_others
from anycastedge.config.zones import load_zones
from anycastedge.errors import ConfigError


def _pop(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pop.yaml"
    path.write_text("pop: t1\n" + text)
    return path


def test_control_off_loopback_needs_allow_remote(tmp_path: Path) -> None:
    """A non-loopback control address is refused naming the key and the way to allow it."""
    with pytest.raises(ConfigError) as caught:
        load_pop(_pop(tmp_path, "control: {listen: '192.0.2.1:9053'}\n"))
    text = str(caught.value.problems[0])
    assert "control.listen" in text and "allow_remote" in text and "line 2" in text
    config = load_pop(_pop(tmp_path, "control: {listen: '192.0.2.1:9053', allow_remote: true}\n"))
    assert config.control.listen == ("192.0.2.1", 9053) and config.control.allow_remote


def test_user_is_read_and_an_empty_one_refused(tmp_path: Path) -> None:
    """``user`` names who serve becomes; absent it is None (the default rule applies)."""
    assert load_pop(_pop(tmp_path, "user: nobody\n")).user == "nobody"
    assert load_pop(_pop(tmp_path, "")).user is None
    with pytest.raises(ConfigError) as caught:
        load_pop(_pop(tmp_path, "user: ''\n"))
    assert "user: must name a user" in str(caught.value.problems[0])


def test_files_writable_by_every_user_draw_a_warning(tmp_path: Path) -> None:
    """A zone file (or directory) anyone may change is a warning with its path, not an error."""
    zones = tmp_path / "zones"
    zones.mkdir()
    zone = zones / "example.test.yaml"
    zone.write_text("'':\n  type: A\n  value: 192.0.2.1\n")
    assert writable_by_others(zone) is None
    os.chmod(zone, 0o666)
    _, warnings = load_zones([zones], SoaConfig())
    loose = [w for w in warnings if "writable by every user" in w.message]
    assert [w.location and w.location.file for w in loose] == [str(zone)]
    assert loose[0].warning and "chmod o-w" in loose[0].message
