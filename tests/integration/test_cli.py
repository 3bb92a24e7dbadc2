"""The `anycastedge` command line: `zone check`, `serve` config errors and defaults,
and octoDNS's own validator on the repo's zones."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import dns.edns
import dns.message
import dns.rcode
import pytest

from anycastedge import cli
from tests.support.server import (
    REPO,
    REPO_ZONES,
    copy_repo_zones,
    free_port,
    port_is_free,
    running_server,
    serving,
    start_server,
    zone_names,
)

BAD = Path("tests/fixtures/bad-zones")  # relative to the repo: that is how paths are printed
VENV_BIN = Path(sys.executable).parent

#: Every problem in every file of tests/fixtures/bad-zones/, exactly as `zone check` prints it.
EXPECTED: dict[str, list[str]] = {
    "bad-ipv4.test.yaml": [
        'line 10, column 3: "www": invalid IPv4 address "192.0.2.300"',
    ],
    "bad-ttl.test.yaml": [
        'line 10, column 3: "www": invalid ttl "-5"',
    ],
    "cname-at-apex.test.yaml": [
        'line 4, column 3: "@": CNAME not allowed at the zone apex',
    ],
    "cname-beside-data.test.yaml": [
        'line 10, column 3: "www": CNAME cannot coexist with other records',
    ],
    "duplicate-key.test.yaml": [
        "line 9, column 1: duplicate key 'www'",
    ],
    "missing-value.test.yaml": [
        'line 10, column 3: "www": missing value(s)',
    ],
    "mx-missing-preference.test.yaml": [
        'line 6, column 3: "@": missing preference',
    ],
    "several-problems.test.yaml": [
        'line 7, column 3: "a": invalid IPv4 address "10.0.0.256"',
        'line 10, column 3: "b": invalid IPv6 address "192.0.2.1"',
        'line 13, column 3: "c": invalid ttl "soon"',
        'line 17, column 3: "d": missing preference',
        'line 23, column 3: "e": CNAME cannot coexist with other records',
    ],
    "unknown-type.test.yaml": [
        'line 10, column 3: "www": unknown record type BOGUS',
    ],
    "yaml-syntax.test.yaml": [
        "line 6, column 4: YAML syntax: expected ',' or ']', but got ':'",
    ],
}


def error_lines(directory: Path, name: str) -> list[str]:
    """The ERROR lines `zone check` prints for fixture ``name`` found under ``directory``."""
    return [f"ERROR {directory / name}, {problem}" for problem in EXPECTED[name]]


def anycastedge(*args: str, cwd: Path = REPO, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``python -m anycastedge ARGS`` (no $ANYCASTEDGE_CONFIG) and capture its output."""
    env = {k: v for k, v in os.environ.items() if k != "ANYCASTEDGE_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "anycastedge", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )


# zone check -------------------------------------------------------------------------------------


def test_fixture_table_covers_every_fixture() -> None:
    """Every file in tests/fixtures/bad-zones/ has its expected problems written down here."""
    assert sorted(p.name for p in (REPO / BAD).glob("*.yaml")) == sorted(EXPECTED)


def test_zone_check_reports_every_problem_of_every_file_at_once() -> None:
    """`zone check` on the broken fixtures: every problem of every file, exact lines, exit 1."""
    proc = anycastedge("zone", "check", str(BAD))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    expected = [line for name in sorted(EXPECTED) for line in error_lines(BAD, name)]
    assert [line for line in lines if line.startswith(("ERROR", "WARNING"))] == expected
    assert lines[-1] == f"{len(expected)} error(s), 0 warning(s)"
    assert len(lines) == len(expected) + 1, proc.stdout


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_zone_check_each_broken_file(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`zone check FILE` on one broken fixture prints exactly its problems and returns 1."""
    monkeypatch.chdir(REPO)
    assert cli.main(["zone", "check", str(BAD / name)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[:-1] == [f"ERROR {BAD / name}, {p}" for p in EXPECTED[name]]
    assert out[-1] == f"{len(EXPECTED[name])} error(s), 0 warning(s)"


def test_zone_check_mixed_paths_reports_only_the_broken_ones() -> None:
    """Files and directories may be mixed; good zones add no errors, broken ones all report."""
    proc = anycastedge(
        "zone", "check", "zones", str(BAD / "bad-ipv4.test.yaml"), str(BAD / "bad-ttl.test.yaml")
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stdout.splitlines() if line.startswith("ERROR")]
    assert errors == error_lines(BAD, "bad-ipv4.test.yaml") + error_lines(BAD, "bad-ttl.test.yaml")


@pytest.mark.parametrize("args", [("zones",), ()], ids=["zones/", "default path"])
def test_zone_check_repo_zones_pass(args: tuple[str, ...]) -> None:
    """`zone check zones/` (and with no path, which means ./zones) exits 0 with no ERROR."""
    proc = anycastedge("zone", "check", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ERROR" not in proc.stdout
    assert f"{len(zone_names(REPO_ZONES))} zone(s) OK" in proc.stdout.splitlines()[-1]


def test_zone_check_missing_path_fails() -> None:
    """A path that does not exist is an error naming it, exit 1."""
    proc = anycastedge("zone", "check", "no/such/dir")
    assert proc.returncode == 1
    assert "no/such/dir" in proc.stderr


def test_zone_check_as_names_the_file_it_will_be(tmp_path: Path) -> None:
    """`zone check --as NAME FILE` (Ansible's validate: hands over a temporary copy) takes the
    zone's name and every file:line from NAME, and refuses a directory."""
    copy = tmp_path / "source"
    copy.write_text((BAD / "bad-ipv4.test.yaml").read_text())
    proc = anycastedge("zone", "check", "--as", "zones/bad-ipv4.test.yaml", str(copy))
    assert proc.returncode == 1
    assert 'ERROR zones/bad-ipv4.test.yaml, line 10, column 3: "www": invalid IPv4 address' in (
        proc.stdout
    ), proc.stdout
    assert str(copy) not in proc.stdout
    good = tmp_path / "good"
    good.write_text((REPO_ZONES / "example.com.yaml").read_text())
    proc = anycastedge("zone", "check", "--as", "example.com.yaml", str(good))
    assert proc.returncode == 0 and "1 zone(s) OK" in proc.stdout, proc.stdout
    proc = anycastedge("zone", "check", "--as", "example.com.yaml", str(REPO_ZONES))
    assert proc.returncode == 2 and "exactly one FILE" in proc.stderr


def test_config_check_accepts_the_example_and_names_key_and_file_of_a_problem(
    tmp_path: Path,
) -> None:
    """`config check` passes examples/pop.yaml with a summary; a bad key and a broken zone in
    the zones it names are each reported with the file (and line), exit 1."""
    proc = anycastedge("config", "check", "-c", str(REPO / "examples" / "pop.yaml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "POP demo1 OK" in proc.stdout and "2 zone(s)" in proc.stdout
    summary = (
        "  rrl: responses 20, nxdomains 20, nodata 20, referrals 20, errors 20 a second per "
        "/24 or /56, window 15 s, slip 2, exempt 127.0.0.0/8 ::1/128\n"
    )
    assert summary in proc.stdout
    zones = copy_repo_zones(tmp_path / "zones")
    path = tmp_path / "pop.yaml"
    path.write_text(f"pop: t1\ndns:\n  zones: {zones}\n  max_udp_sise: 1232\n")
    proc = anycastedge("config", "check", "-c", str(path))
    assert proc.returncode == 1 and str(path) in proc.stderr and "max_udp_sise" in proc.stderr
    path.write_text(f"pop: t1\ndns:\n  zones: {zones}\n")
    (zones / "example.net.yaml").write_text("www: {type: A, value: 192.0.2.300}\n")
    proc = anycastedge("config", "check", "-c", str(path))
    assert proc.returncode == 1
    assert f"{zones / 'example.net.yaml'}, line 1" in proc.stdout + proc.stderr


def test_bgp_render_env_prints_the_environment_file(tmp_path: Path) -> None:
    """`bgp render --env` prints exactly what `-o FILE` writes to FILE.env."""
    out = tmp_path / "exabgp.conf"
    example = str(REPO / "examples" / "pop.yaml")
    assert anycastedge("bgp", "render", "-c", example, "-o", str(out)).returncode == 0
    proc = anycastedge("bgp", "render", "--env")
    assert proc.returncode == 0 and proc.stdout == Path(f"{out}.env").read_text()
    assert "exabgp_api_ack=true" in proc.stdout


OCTODNS_REJECTS = [
    "bad-ipv4.test.yaml",
    "bad-ttl.test.yaml",
    "cname-at-apex.test.yaml",
    "missing-value.test.yaml",
    "mx-missing-preference.test.yaml",
    "unknown-type.test.yaml",
]


def octodns_config(path: Path, zones_dir: Path, zones: list[str]) -> Path:
    """An octoDNS config with a YamlProvider on ``zones_dir`` (octoDNS's default settings)."""
    lines = [
        "providers:",
        "  config:",
        "    class: octodns.provider.yaml.YamlProvider",
        f"    directory: '{zones_dir}'",
        "zones:",
        *(f"  '{zone}':\n    sources: [config]" for zone in zones),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def octodns_validate(config: Path) -> subprocess.CompletedProcess:
    """Run the venv's octodns-validate on ``config``."""
    exe = VENV_BIN / "octodns-validate"
    if not exe.exists():
        pytest.skip("octodns-validate is not installed (pip install -e '.[dev]')")
    return subprocess.run(
        [str(exe), "--config-file", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=config.parent,
    )


def test_octodns_validate_accepts_repo_zones(tmp_path: Path) -> None:
    """octodns-validate (YamlProvider, default settings: enforce_order on) passes on zones/."""
    zones = copy_repo_zones(tmp_path / "zones")
    names = zone_names(zones)
    assert names, "zones/ holds no zone files"
    proc = octodns_validate(octodns_config(tmp_path / "octodns.yaml", zones, names))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_octodns_validate_really_reads_the_zones(tmp_path: Path) -> None:
    """Control for the test above: the same config on a copy with a bad record fails."""
    zones = copy_repo_zones(tmp_path / "zones")
    shutil.copy(REPO / BAD / "bad-ipv4.test.yaml", zones)
    config = octodns_config(tmp_path / "octodns.yaml", zones, zone_names(zones))
    proc = octodns_validate(config)
    assert proc.returncode != 0
    assert 'invalid IPv4 address "192.0.2.300"' in proc.stderr


@pytest.mark.parametrize("name", OCTODNS_REJECTS)
def test_octodns_rejects_fixture_at_the_same_place(tmp_path: Path, name: str) -> None:
    """octoDNS also rejects the fixture, and names the same line and column as `zone check`."""
    zones = tmp_path / "zones"
    zones.mkdir()
    shutil.copy(REPO / BAD / name, zones)
    proc = octodns_validate(octodns_config(tmp_path / "octodns.yaml", zones, zone_names(zones)))
    assert proc.returncode != 0
    where = re.match(r"line \d+, column \d+", EXPECTED[name][0])
    assert where is not None
    assert f"{zones / name}, {where.group(0)}" in proc.stderr, proc.stderr


# serve: configuration errors --------------------------------------------------------------------


def _bad_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    return path


def test_serve_rejects_unknown_key_with_file_and_line(tmp_path: Path) -> None:
    """pop.yaml with a misspelt key: exit non-zero, ERROR naming the key and bad.yaml:line."""
    port, control = free_port(), free_port()
    path = _bad_config(
        tmp_path,
        f"pop: t1\ncontrol:\n  listen: 127.0.0.1:{control}\n"
        f"dns:\n  listen: ['127.0.0.1:{port}']\n  zonez: zones/\n",
    )
    proc = anycastedge("serve", "-c", str(path), cwd=tmp_path, timeout=30)
    assert proc.returncode != 0
    assert f"ERROR {path}, line 6, column 3: dns.zonez: unknown key" in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("listen", "reason"),
    [
        ("localhost:53", "'localhost' does not appear to be an IPv4 or IPv6 address"),
        ("127.0.0.1:99999", "port 99999 out of range"),
        ("127.0.0.1", "'127.0.0.1' is not HOST:PORT"),
    ],
)
def test_serve_rejects_bad_listen(tmp_path: Path, listen: str, reason: str) -> None:
    """A bad dns.listen: exit non-zero, the key, the reason and bad.yaml:line."""
    control = free_port()
    path = _bad_config(
        tmp_path,
        f"pop: t1\ncontrol:\n  listen: 127.0.0.1:{control}\ndns:\n  listen: ['{listen}']\n",
    )
    proc = anycastedge("serve", "-c", str(path), cwd=tmp_path, timeout=30)
    assert proc.returncode != 0
    assert f"ERROR {path}, line 5, column 3: dns.listen: {reason}" in proc.stderr, proc.stderr


def test_serve_rejects_non_loopback_control(tmp_path: Path) -> None:
    """control.listen off loopback is refused before anything binds: key, reason, file:line."""
    port = free_port()
    # 198.51.100.1 (TEST-NET-2) is not on this host: even a wrongly accepted config cannot bind it.
    path = _bad_config(
        tmp_path,
        f"pop: t1\ndns:\n  listen: ['127.0.0.1:{port}']\ncontrol:\n  listen: 198.51.100.1:9053\n",
    )
    proc = anycastedge("serve", "-c", str(path), cwd=tmp_path, timeout=30)
    assert proc.returncode != 0
    assert (
        f"ERROR {path}, line 5, column 3: control.listen: 198.51.100.1 is not a loopback address"
        in proc.stderr
    ), proc.stderr


def test_serve_reports_every_config_problem_at_once(tmp_path: Path) -> None:
    """Several problems in pop.yaml are all reported in one run, each with its line."""
    path = _bad_config(
        tmp_path,
        "pop: t1\nbogus: 1\ndns:\n  listen: ['127.0.0.1:99999']\n  tcp_idle_timeout: 0\n"
        "control:\n  listen: 198.51.100.1:9053\n",
    )
    proc = anycastedge("serve", "-c", str(path), cwd=tmp_path, timeout=30)
    assert proc.returncode != 0
    for expected in [
        f"ERROR {path}, line 2, column 1: bogus: unknown key",
        f"ERROR {path}, line 4, column 3: dns.listen: port 99999 out of range",
        f"ERROR {path}, line 5, column 3: dns.tcp_idle_timeout: 0 is outside 0.1..3600",
        f"ERROR {path}, line 7, column 3: control.listen: 198.51.100.1 is not a loopback address",
    ]:
        assert expected in proc.stderr, proc.stderr


def test_serve_rejects_non_loopback_control_flag(tmp_path: Path) -> None:
    """--control with a non-loopback address is refused like control.listen in pop.yaml."""
    zones = copy_repo_zones(tmp_path / "zones")
    port = free_port()
    # Not an address of this host: if the flag is wrongly accepted, binding it fails and nothing
    # is ever exposed; the test checks the reason given, which must be about loopback.
    proc = anycastedge(
        "serve",
        "--zones",
        str(zones),
        "--listen",
        f"127.0.0.1:{port}",
        "--control",
        "198.51.100.1:9053",
        cwd=tmp_path,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "loopback" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


def test_serve_refuses_to_start_with_broken_zones(tmp_path: Path) -> None:
    """serve with broken zones exits non-zero, printing every problem with file and line."""
    zones = copy_repo_zones(tmp_path / "zones")
    for name in ("bad-ipv4.test.yaml", "bad-ttl.test.yaml"):
        shutil.copy(REPO / BAD / name, zones)
    proc = anycastedge(
        "serve",
        "--zones",
        str(zones),
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--control",
        f"127.0.0.1:{free_port()}",
        cwd=tmp_path,
        timeout=30,
    )
    assert proc.returncode != 0
    for name in ("bad-ipv4.test.yaml", "bad-ttl.test.yaml"):
        for line in error_lines(zones, name):
            assert line in proc.stderr, proc.stderr


def test_serve_on_a_busy_port_exits_naming_the_address(tmp_path: Path) -> None:
    """serve exits non-zero naming the address when its DNS TCP port is taken."""
    zones = copy_repo_zones(tmp_path / "zones")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        proc = anycastedge(
            "serve",
            "--zones",
            str(zones),
            "--listen",
            f"127.0.0.1:{port}",
            "--control",
            f"127.0.0.1:{free_port()}",
            cwd=tmp_path,
            timeout=30,
        )
    assert proc.returncode != 0
    assert f"127.0.0.1:{port}" in proc.stderr, proc.stderr


# serve: config files and defaults ---------------------------------------------------------------


@pytest.mark.parametrize("how", ["-c", "ANYCASTEDGE_CONFIG"])
def test_serve_takes_everything_from_pop_yaml(tmp_path: Path, how: str) -> None:
    """pop.yaml alone sets POP, listen, control and zones (relative to the file)."""
    site = tmp_path / "site"
    copy_repo_zones(site / "zones")
    dns_port, control_port = free_port(), free_port()
    config = site / "pop.yaml"
    config.write_text(
        "pop: ams-test\n"
        f"state_dir: {tmp_path / 'state'}\n"
        f"dns:\n  listen: ['127.0.0.1:{dns_port}']\n  zones: zones/\n"
        f"control:\n  listen: 127.0.0.1:{control_port}\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    args = ["serve", "-c", str(config)] if how == "-c" else ["serve"]
    env = {"ANYCASTEDGE_CONFIG": str(config)} if how != "-c" else None
    handle = start_server(
        args,
        dns_port=dns_port,
        control_port=control_port,
        probe_zone="example.com.",
        cwd=elsewhere,
        workdir=tmp_path,
        env=env,
    )
    with serving(handle) as server:
        reply = server.query("example.com.", "SOA", use_edns=0, options=[dns.edns.NSIDOption(b"")])
        assert reply.rcode() == dns.rcode.NOERROR
        assert _nsid_text(reply) == "ams-test"
        status = server.status()
        assert status["pop"] == "ams-test"
        assert {z["name"] for z in status["zones"]} == set(zone_names(REPO_ZONES))


def _nsid_text(reply: dns.message.Message) -> str | None:
    for option in reply.options:
        if isinstance(option, dns.edns.NSIDOption):
            return option.nsid.decode()
    return None


def test_serve_without_arguments_uses_embedded_defaults(tmp_path: Path) -> None:
    """Bare `serve` uses ./zones, DNS 127.0.0.1:5300, control :9053, POP = hostname."""
    if Path("/etc/anycastedge/pop.yaml").exists():
        pytest.skip("/etc/anycastedge/pop.yaml exists: `serve` would not use the defaults")
    if not port_is_free(5300) or not port_is_free(9053, udp=False):
        pytest.skip("127.0.0.1:5300 or :9053 is busy")
    copy_repo_zones(tmp_path / "zones")
    handle = start_server(
        ["serve"],
        dns_port=5300,
        control_port=9053,
        probe_zone="example.com.",
        cwd=tmp_path,
        workdir=tmp_path,
    )
    with serving(handle) as server:
        for tcp in (False, True):
            reply = server.query("www.example.com.", "A", tcp=tcp)
            assert reply.rcode() == dns.rcode.NOERROR, reply
        status = server.status()
        assert status["pop"] == os.uname().nodename
        assert {z["name"] for z in status["zones"]} == set(zone_names(REPO_ZONES))
        assert all(
            Path(z["source"]).resolve().parent == (tmp_path / "zones").resolve()
            for z in status["zones"]
        ), status


def test_serve_listens_on_several_addresses_including_ipv6_loopback(tmp_path: Path) -> None:
    """--listen is repeatable: 127.0.0.1 and [::1] both answer over UDP and TCP."""
    if not socket.has_ipv6 or not _ipv6_loopback_usable():
        pytest.skip("no IPv6 loopback on this host")
    zones = copy_repo_zones(tmp_path / "zones")
    v6_port = _free_port_v6()
    with running_server(zones, extra_args=["--listen", f"[::1]:{v6_port}"]) as server:
        for tcp in (False, True):
            query = dns.message.make_query("www.example.com.", "A")
            if tcp:
                reply = dns.query.tcp(query, "::1", port=v6_port, timeout=5)
            else:
                reply = dns.query.udp(query, "::1", port=v6_port, timeout=5)
            assert reply.rcode() == dns.rcode.NOERROR and reply.answer, reply
        assert server.query("www.example.com.", "A").rcode() == dns.rcode.NOERROR


def _ipv6_loopback_usable() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def _free_port_v6() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as udp:
            udp.bind(("::1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("::1", port))
                except OSError:
                    continue
                return port
    raise OSError("no free port on ::1")


def test_sigterm_stops_the_server_cleanly(tmp_path: Path) -> None:
    """SIGTERM to the serve process ends it with exit status 0 and frees its ports."""
    zones = copy_repo_zones(tmp_path / "zones")
    with running_server(zones) as server:
        server.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=20) == 0, server.log_text()
        assert "Traceback" not in server.log_text(), server.log_text()
        assert port_is_free(server.dns_port)


def test_bgp_render_without_neighbors_fails_naming_the_key_and_file(tmp_path: Path) -> None:
    """No neighbors: exit 1, `bgp.neighbors` and the file named, no config written."""
    path = tmp_path / "pop.yaml"
    path.write_text(
        "pop: t1\nanycast: [203.0.113.53/32]\nbgp:\n"
        "  health:\n    checks: [{kind: tcp, address: '127.0.0.1:53'}]\n"
    )
    out = tmp_path / "exabgp.conf"
    proc = anycastedge("bgp", "render", "-c", str(path), "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 1
    assert f"ERROR {path.resolve()}: bgp.neighbors: no BGP neighbors" in proc.stderr, proc.stderr
    assert not out.exists() and not Path(f"{out}.env").exists()
    # --portable names the file as typed.
    proc = anycastedge("bgp", "render", "-c", "pop.yaml", "--portable", cwd=tmp_path)
    assert proc.returncode == 1
    assert "ERROR pop.yaml: bgp.neighbors: no BGP neighbors" in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_bgp_render_without_checks_fails(tmp_path: Path) -> None:
    """A bgp: section without health checks does not render (it would announce unchecked)."""
    path = tmp_path / "pop.yaml"
    path.write_text(
        "pop: t1\nbgp:\n  neighbors: [{address: 127.0.0.1, peer_as: 65000, port: 1790}]\n"
    )
    proc = anycastedge("bgp", "render", "-c", str(path), cwd=tmp_path)
    assert proc.returncode == 1
    assert f"ERROR {path}, line 2, column 1: bgp.health.checks: at least one" in proc.stderr
    assert "announce" not in proc.stdout


def test_bgp_hook_without_bgp_section_exits_at_once(tmp_path: Path) -> None:
    """No bgp: section: the hook prints nothing for ExaBGP and exits 2 (nothing to check)."""
    path = tmp_path / "pop.yaml"
    path.write_text("pop: t1\nanycast: [203.0.113.53/32]\n")
    proc = anycastedge("bgp", "hook", "-c", str(path), cwd=tmp_path, timeout=30)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert f"ERROR {path.resolve()}: bgp.health.checks: at least one check" in proc.stderr


def test_bgp_render_portable_names_no_path_of_this_machine(tmp_path: Path) -> None:
    """--portable: `anycastedge` from PATH, no -c, pop.yaml only as typed; default: absolute."""
    (tmp_path / "site").mkdir()
    path = tmp_path / "site" / "pop.yaml"
    path.write_text(
        "pop: t1\nanycast: [203.0.113.53/32]\nstate_dir: state\nbgp:\n"
        "  neighbors: [{address: 127.0.0.1, peer_as: 65000, port: 1790}]\n"
        "  health:\n    checks: [{kind: tcp, address: '127.0.0.1:53'}]\n"
    )
    portable = anycastedge("bgp", "render", "-c", "site/pop.yaml", "--portable", cwd=tmp_path)
    assert portable.returncode == 0, portable.stderr
    assert "    run anycastedge bgp hook;\n" in portable.stdout
    assert "from site/pop.yaml;" in portable.stdout
    assert str(tmp_path) not in portable.stdout and sys.executable not in portable.stdout
    default = anycastedge("bgp", "render", "-c", "site/pop.yaml", cwd=tmp_path)
    assert default.returncode == 0, default.stderr
    run = f"    run {sys.executable} -m anycastedge bgp hook -c {path.resolve()};"
    assert run in default.stdout


def test_forward_check_prints_what_it_would_forward_or_every_problem(tmp_path: Path) -> None:
    """`forward check` exits 0 with a summary for a valid pop.yaml, 1 with every problem (and
    its line) for a broken one, starting nothing."""
    path = tmp_path / "pop.yaml"
    path.write_text(
        "pop: t\nforward:\n  listeners:\n"
        '    web: {bind: "127.0.0.1:8080", protocol: tcp, backend: web}\n'
        '    site: {bind: "127.0.0.1:8081", protocol: http, routes: [\n'
        "      {host: api.example.com, path_prefix: /v1/, backend: web, max_body: 1024},\n"
        '      {hosts: ["*.example.com", "example.com:8081"], backend: web}, {backend: web}]}\n'
        "  backends:\n"
        '    web: {balance: maglev, endpoints: [{address: "127.0.0.1:8081", weight: 2}]}\n'
    )
    ok = anycastedge("forward", "check", "-c", str(path))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == [
        "listener web: 127.0.0.1:8080/tcp -> web",
        "listener site: 127.0.0.1:8081/http, first matching route:",
        "  api.example.com /v1/ -> web (max_body 1024)",
        "  *.example.com, example.com:8081 / -> web",
        "  any host / -> web",
        "backend web: maglev, tcp check every 2s: 127.0.0.1:8081 w2",
        "2 listener(s), 1 backend(s) OK",
    ]
    broken = path.read_text().replace("maglev", "magic")
    broken = broken.replace("tcp, backend: web", "tcp, backend: x")
    path.write_text(broken)
    bad = anycastedge("forward", "check", "-c", str(path))
    assert bad.returncode == 1
    assert bad.stderr.splitlines() == [
        f"ERROR {path}, line 9, column 11: forward.backends.web.balance: must be one of "
        "round_robin, weighted, least_conn, p2c, least_time, source_hash, maglev, not 'magic'",
        f"ERROR {path}, line 4, column 50: forward.listeners.web.backend: no backend 'x' "
        "(defined: web)",
    ]
