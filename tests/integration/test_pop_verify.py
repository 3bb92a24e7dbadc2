"""`anycastedge pop verify` against two real `anycastedge serve` POPs on 127.0.0.1: agreement, an
older serial, a changed answer; and dig, run as printed, shows the same difference.

Each POP has its own copy of the repo's zones/ and its own state_dir. The synthesized SOA serial
is the zone file's mtime, so copies keep it (copytree copies with copy2). Traffic goes to 127.0.0.1
only, every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.server import HOST, ServerHandle, copy_repo_zones, running_server

Edit = Callable[[Path], None]


@contextlib.contextmanager
def fleet(tmp_path: Path, edit_b: Edit | None = None) -> Iterator[tuple[ServerHandle, ...]]:
    """POPs `a` and `b`, each serving its own copy of zones/; ``edit_b`` changes b's before start
    (a fresh state_dir: no served serial from before carries over)."""
    zones_a = copy_repo_zones(tmp_path / "a-zones")
    zones_b = copy_repo_zones(tmp_path / "b-zones")
    if edit_b is not None:
        edit_b(zones_b)
    with running_server(zones_a, pop="a") as a, running_server(zones_b, pop="b") as b:
        yield a, b


def verify(tmp_path: Path, a: ServerHandle, b: ServerHandle, *extra: str) -> tuple[int, str]:
    """Run `python -m anycastedge pop verify` as an operator would; its exit code and stdout."""
    assert a.zones_dir is not None
    args = [
        sys.executable, "-m", "anycastedge", "pop", "verify",
        "--pop", f"a={HOST}:{a.dns_port}", "--pop", f"b={HOST}:{b.dns_port}",
        "--zones", str(a.zones_dir), "--anycast", f"{HOST}:{a.dns_port}", *extra,
    ]  # fmt: skip
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.stderr == "", done.stderr
    return done.returncode, done.stdout


def rows(out: str, pop: str) -> list[str]:
    """The drift table's rows of ``pop``."""
    return [line for line in out.splitlines() if line.split(" ", 1)[0] == pop]


def test_pops_with_the_same_files_agree(tmp_path: Path) -> None:
    """Same content, same mtime: exit 0, every zone agrees, and `a` answers the anycast address."""
    with fleet(tmp_path) as (a, b):
        code, out = verify(tmp_path, a, b)
    assert code == 0, out
    assert re.search(r"^example\.com  serial \d+  2 POPs agree, \d+ names compared", out, re.M)
    assert "1 GSLB record not compared" in out
    assert re.search(r"^example\.net  serial \d+  2 POPs agree, 3 names compared$", out, re.M)
    assert f"anycast {HOST}:{a.dns_port}: answered by POP a (NSID)" in out
    assert "what differs" not in out


def _older(zones: Path) -> None:
    path = zones / "example.net.yaml"
    st = path.stat()
    os.utime(path, (st.st_atime - 86400, st.st_mtime - 86400))


def test_an_older_zone_file_is_an_older_serial(tmp_path: Path) -> None:
    """b's example.net.yaml a day older: exit 1, the row names b, the zone and its older serial."""
    with fleet(tmp_path, _older) as (a, b):
        code, out = verify(tmp_path, a, b)
        json_code, json_out = verify(tmp_path, a, b, "--json")
        serial_a, serial_b = a.soa_serial("example.net."), b.soa_serial("example.net.")
    assert code == 1, out
    assert serial_b == serial_a - 86400
    (row,) = rows(out, "b")
    assert re.fullmatch(
        rf"b +example\.net +example\.net SOA +older serial {serial_b} < {serial_a} \(newest: a\)",
        row,
    )
    assert rows(out, "a") == []
    assert json_code == 1
    document = json.loads(json_out)
    assert document["zones"][1]["serials"] == {"a": serial_a, "b": serial_b}
    (difference,) = document["differences"]
    assert difference["pop"] == "b" and difference["zone"] == "example.net."
    assert difference["detail"].startswith(f"older serial {serial_b} < {serial_a}")


def _changed_answer(zones: Path) -> None:
    # Same mtime, so the same serial: the worst drift, different data under one serial.
    path = zones / "example.net.yaml"
    st = path.stat()
    text = path.read_text()
    assert text.count("192.0.2.101") == 1
    path.write_text(text.replace("192.0.2.101", "192.0.2.199"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig (bind9-dnsutils) is not installed")
def test_a_changed_answer_names_pop_zone_name_and_type_and_dig_shows_it(tmp_path: Path) -> None:
    """b serves another www.example.net A: exit 1; the printed dig commands, run, show both."""
    with fleet(tmp_path, _changed_answer) as (a, b):
        code, out = verify(tmp_path, a, b)
        assert code == 1, out
        (row,) = rows(out, "b")
        assert re.fullmatch(
            r"b +example\.net +www\.example\.net A +A 192\.0\.2\.199 vs 192\.0\.2\.101 on 1 other "
            r"POP \(no majority\)",
            row,
        )
        # Two POPs and no majority: a is shown too, the other way round.
        assert "A 192.0.2.101 vs 192.0.2.199" in rows(out, "a")[0]
        seen = {}
        for line in out.split("See for yourself:", 1)[1].splitlines():
            command, _, pop = line.strip().partition("  # ")
            if command.startswith("dig ") and " www.example.net A " in command:
                argv = [*shlex.split(command), "+time=2", "+tries=1", "+short"]
                done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
                assert done.returncode == 0, done.stderr
                seen[pop.strip()] = done.stdout.split()
        assert seen == {"a": ["192.0.2.101"], "b": ["192.0.2.199"]}
