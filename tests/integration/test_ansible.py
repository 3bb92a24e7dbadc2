"""The playbooks in ansible/, run for real against this host (``-c local``).

ansible-lint and --syntax-check on every playbook; site.yml into a prefix directory with the
services off, twice (the second run changes nothing), and what it rendered checked by the tools
that will read it (our config check, serve and dig, exabgp validate, systemd-analyze); zones.yml
refusing a broken zone before any change, and pushing a good one; verify.yml against two serve
processes; maintenance.yml against a POP announcing to a real BIRD through ExaBGP.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import pytest

from tests.support.ansible import (
    ANSIBLE_DIR,
    BIN,
    PLAYBOOKS,
    Run,
    ansible_env,
    local_host,
    playbook,
    write_inventory,
)
from tests.support.bgp import PREFIX, SETTLE, lab
from tests.support.procs import free_port
from tests.support.server import (
    REPO_ZONES,
    ServerHandle,
    minimal_pop_yaml,
    serving,
    start_server,
    wait_for,
)

pytestmark = [
    pytest.mark.skipif(
        not (BIN / "ansible-playbook").exists(), reason="needs ansible-core (make venv installs it)"
    ),
    # The module's deployment (site.yml twice, a virtualenv with every dependency) takes about
    # 100 s alone; beside another test process, longer than the suite's 120 s per test.
    pytest.mark.timeout(600),
]

HOST = "pop1"
POP = "test1"
LOOPBACK = ["127.0.0.0/8", "::1/128"]


def _dig(port: int, name: str, rdtype: str, *flags: str) -> str:
    result = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(port), name, rdtype, "+norec", "+time=2", "+tries=2",
         *flags],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _soa_serial(port: int, zone: str) -> int:
    reply = dns.query.udp(dns.message.make_query(zone, "SOA"), "127.0.0.1", port=port, timeout=2)
    return int(reply.answer[0][0].serial)


def test_ansible_lint_production_profile(tmp_path: Path) -> None:
    """ansible-lint's strictest profile passes on the roles, playbooks and example inventory."""
    result = subprocess.run(
        [str(BIN / "ansible-lint"), "--profile", "production", "--offline", "--nocolor",
         str(ANSIBLE_DIR)],
        capture_output=True, text=True, env=ansible_env(tmp_path), cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Profile 'production' was required, and it passed" in result.stderr


@pytest.mark.parametrize("name", PLAYBOOKS)
def test_syntax_check(name: str, tmp_path: Path) -> None:
    """Every playbook parses with the example inventory (which nothing here ever runs)."""
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), "--syntax-check", "-i",
         str(ANSIBLE_DIR / "inventories" / "example"), str(ANSIBLE_DIR / name)],
        capture_output=True, text=True, env=ansible_env(tmp_path), cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@dataclass
class Deployment:
    """One POP deployed by site.yml under ``root``, and both runs of it."""

    base: Path
    root: Path
    zones_src: Path
    inventory: Path
    dns_port: int
    control_port: int
    first: Run
    second: Run

    @property
    def venv_bin(self) -> Path:
        return self.root / "opt" / "anycastedge" / "venv" / "bin"

    @property
    def config_dir(self) -> Path:
        return self.root / "etc" / "anycastedge"

    @property
    def pop_yaml(self) -> Path:
        return self.config_dir / "pop.yaml"

    def zones(self, source: Path | None = None) -> Run:
        """zones.yml against this POP, from ``source`` (default: the deployed zones)."""
        extra = {"anycastedge_zones_src": str(source)} if source is not None else None
        return playbook("zones.yml", self.inventory, self.base / "home", extra)

    def serve(self) -> ServerHandle:
        """The installed anycastedge serving the rendered pop.yaml."""
        return start_server(
            ["serve", "-c", str(self.pop_yaml)],
            dns_port=self.dns_port,
            control_port=self.control_port,
            probe_zone="example.com.",
            cwd=self.base,
            workdir=self.base,
            python=str(self.venv_bin / "python"),
        )


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    """site.yml run twice into a fresh prefix, the services off (PID 1 here is not systemd)."""
    base = tmp_path_factory.mktemp("site")
    zones_src = base / "zones-src"
    shutil.copytree(REPO_ZONES, zones_src)  # modification times kept: they are the serials
    root = base / "root"
    dns_port, control_port = free_port(), free_port()
    host = local_host(
        anycastedge_prefix=str(root),
        anycastedge_systemd=False,
        anycastedge_user=pwd.getpwuid(os.getuid()).pw_name,
        anycastedge_group=grp.getgrgid(os.getgid()).gr_name,
        anycastedge_local_address="127.0.0.1",
        anycastedge_dns_listen=[f"127.0.0.1:{dns_port}"],
        anycastedge_control_listen=f"127.0.0.1:{control_port}",
        # Written into pop.yaml and the units only: nothing here contacts them.
        anycastedge_anycast=["203.0.113.53/32", "2001:db8:53::53/128"],
        anycastedge_bgp_local_as=65011,
        anycastedge_bgp_neighbors=[{"address": "127.0.0.1", "peer_as": 65000, "port": 1790}],
        anycastedge_dns={"check_networks": LOOPBACK},
        anycastedge_zones_src=str(zones_src),
    )
    inventory = write_inventory(base / "hosts.yml", {POP: {HOST: host}})
    first = playbook("site.yml", inventory, base / "home")
    assert first.returncode == 0, first.output
    second = playbook("site.yml", inventory, base / "home")
    return Deployment(base, root, zones_src, inventory, dns_port, control_port, first, second)


def test_site_converges_and_a_second_run_changes_nothing(deployed: Deployment) -> None:
    """The first run changes things and fails nothing; the second reports changed=0."""
    first = deployed.first.counts(HOST)
    assert first["failed"] == 0 and first["changed"] > 0, deployed.first.output
    second = deployed.second.counts(HOST)
    assert second["failed"] == 0 and second["changed"] == 0, deployed.second.output


def test_rendered_pop_yaml_passes_the_config_check(deployed: Deployment) -> None:
    """The installed anycastedge accepts the pop.yaml rendered from the inventory."""
    result = subprocess.run(
        [str(deployed.venv_bin / "anycastedge"), "config", "check", "-c", str(deployed.pop_yaml)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"POP {POP} OK" in result.stdout and "2 zone(s)" in result.stdout


def test_serve_from_the_rendered_config_answers_dig(deployed: Deployment) -> None:
    """serve started from what site.yml wrote answers for every synced zone, names its POP in
    NSID, and serves the controller's modification time as the SOA serial."""
    with serving(deployed.serve()):
        for source in sorted(deployed.zones_src.glob("*.yaml")):
            zone = source.name.removesuffix(".yaml") + "."
            out = _dig(deployed.dns_port, zone, "SOA", "+nsid")
            assert "status: NOERROR" in out and " aa" in out.split("flags:")[1].split(";")[0]
            assert f'NSID: {" ".join(f"{b:02x}" for b in POP.encode())} ("{POP}")' in out
            assert _soa_serial(deployed.dns_port, zone) == int(source.stat().st_mtime)


def test_rendered_exabgp_config_validates(deployed: Deployment) -> None:
    """`exabgp validate` of the installed ExaBGP accepts the rendered config and environment."""
    conf = deployed.config_dir / "exabgp.conf"
    env = dict(os.environ)
    for line in Path(f"{conf}.env").read_text().splitlines():
        key, _, value = line.partition("=")
        env[key] = value
    result = subprocess.run(
        [str(deployed.venv_bin / "exabgp"), "validate", str(conf)],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"-c {deployed.pop_yaml}" in conf.read_text()  # the hook reads the deployed pop.yaml


def test_units_are_hardened_bound_and_verified(deployed: Deployment) -> None:
    """serve runs as the service user with only CAP_NET_BIND_SERVICE and a read-only system
    but for its state directory; ExaBGP is bound to serve; systemd-analyze verified them."""
    units = deployed.root / "etc" / "systemd" / "system"
    serve = (units / "anycastedge.service").read_text().splitlines()
    for line in [
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        f"ReadWritePaths={deployed.root / 'var' / 'lib' / 'anycastedge'}",
        f"User={pwd.getpwuid(os.getuid()).pw_name}",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ]:
        assert line in serve
    exabgp = (units / "anycastedge-exabgp.service").read_text().splitlines()
    assert "BindsTo=anycastedge.service" in exabgp and "WantedBy=anycastedge.service" in exabgp
    anycast = (units / "anycastedge-anycast.service").read_text()
    assert "address replace 203.0.113.53/32 dev anycast0" in anycast
    if Path("/usr/bin/systemd-analyze").exists():
        assert "systemd-analyze verify] ***" in deployed.first.output
        task = deployed.first.output.split("systemd-analyze verify] ***")[1]
        assert task.split("\n", 2)[1].startswith(f"ok: [{HOST}]"), task[:500]
        # Exposure is shown out of 10 and thresholded out of 100: at most 3.0 ("OK").
        exposure = subprocess.run(
            ["/usr/bin/systemd-analyze", "security", "--offline=yes", "--threshold=30",
             "--no-pager", str(units / "anycastedge.service")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert exposure.returncode == 0, exposure.stdout + exposure.stderr


def _snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.iterdir()}


def test_zones_yml_refuses_a_broken_zone_before_anything_changes(
    deployed: Deployment, tmp_path: Path
) -> None:
    """A zone file that does not load stops zones.yml, naming the controller's file and the
    line; the live zones are untouched."""
    live = deployed.config_dir / "zones"
    before = _snapshot(live)
    broken = tmp_path / "zones"
    shutil.copytree(deployed.zones_src, broken)
    bad = broken / "example.com.yaml"
    lines = bad.read_text().splitlines()
    bad.write_text("\n".join([*lines, "broken: {type: A, value: not-an-address}"]) + "\n")
    run = deployed.zones(broken)
    assert run.returncode != 0
    assert f"{bad}, line {len(lines) + 1}" in run.output, run.output
    assert run.counts(HOST)["changed"] == 0
    assert _snapshot(live) == before


def test_zones_yml_pushes_a_change_and_serve_answers_it(
    deployed: Deployment, tmp_path: Path
) -> None:
    """A new record reaches the live zones and the running serve (reloaded by the handler)
    answers it when the playbook returns, with the controller's modification time as serial."""
    source = tmp_path / "zones"
    shutil.copytree(deployed.zones_src, source)
    changed = source / "example.net.yaml"
    changed.write_text(changed.read_text() + "pushed:\n  type: A\n  value: 192.0.2.77\n")
    with serving(deployed.serve()):
        run = deployed.zones(source)
        assert run.returncode == 0, run.output
        assert "RUNNING HANDLER [anycastedge : Reload anycastedge without systemd]" in run.output
        out = _dig(deployed.dns_port, "pushed.example.net.", "A")
        assert "192.0.2.77" in out and "status: NOERROR" in out
        assert _soa_serial(deployed.dns_port, "example.net.") == int(changed.stat().st_mtime)
    assert deployed.zones(source).counts(HOST)["changed"] == 0


@pytest.fixture
def two_pops(tmp_path: Path) -> Iterator[tuple[dict[str, ServerHandle], Path]]:
    """serve processes "a" and "b" on loopback, each with its own copy of the same zone files."""
    handles: dict[str, ServerHandle] = {}
    try:
        for name in ("a", "b"):
            directory = tmp_path / name
            zones = directory / "zones"
            shutil.copytree(REPO_ZONES, zones)
            config = minimal_pop_yaml(directory, pop=name, dns={"zones": str(zones)})
            port, control = free_port(), free_port()
            handles[name] = start_server(
                ["serve", "-c", str(config), "--listen", f"127.0.0.1:{port}",
                 "--control", f"127.0.0.1:{control}"],
                dns_port=port, control_port=control, probe_zone="example.com.",
                cwd=directory, workdir=directory,
            )  # fmt: skip
        yield handles, tmp_path
    finally:
        for handle in handles.values():
            handle.stop()


def _verify_inventory(path: Path, handles: dict[str, ServerHandle]) -> Path:
    pops = {
        name: {
            f"{name}-edge1": local_host(
                anycastedge_pop=name,
                anycastedge_local_address="127.0.0.1",
                anycastedge_verify_address=f"127.0.0.1:{handle.dns_port}",
                anycastedge_anycast=["203.0.113.53/32"],  # not asked: verify_anycast is loopback
                anycastedge_verify_anycast=[f"127.0.0.1:{handles['a'].dns_port}"],
                anycastedge_verify_command=str(BIN / "anycastedge"),
                anycastedge_zones_src=str(REPO_ZONES),
            )
        }
        for name, handle in handles.items()
    }
    return write_inventory(path, pops)


def test_verify_yml_passes_when_pops_agree_and_names_the_zone_one_serves_older(
    two_pops: tuple[dict[str, ServerHandle], Path],
) -> None:
    """Two POPs with the same files agree (and "a" answers the anycast address); once "a" has
    a newer example.net, verify.yml fails naming POP "b", the zone and its older serial."""
    handles, tmp_path = two_pops
    inventory = _verify_inventory(tmp_path / "hosts.yml", handles)
    agree = playbook("verify.yml", inventory, tmp_path / "home")
    assert agree.returncode == 0, agree.output
    anycast = f"anycast 127.0.0.1:{handles['a'].dns_port}: answered by POP a (NSID)"
    assert anycast in agree.output, agree.output

    older = handles["b"].soa_serial("example.net.")
    newer = tmp_path / "a" / "zones" / "example.net.yaml"
    newer.write_text(newer.read_text() + "added:\n  type: A\n  value: 192.0.2.78\n")
    os.utime(newer, (time.time(), older + 3600))
    handles["a"].sighup()
    wait_for(lambda: handles["a"].soa_serial("example.net.") > older, 10, "a's new serial")
    drift = playbook("verify.yml", inventory, tmp_path / "home")
    assert drift.returncode != 0
    rows = [line for line in drift.output.splitlines() if "older serial" in line]
    assert rows and all("b" in row and "example.net" in row for row in rows), drift.output


@pytest.mark.skipif(
    shutil.which("bird") is None or not (BIN / "exabgp").exists(), reason="needs bird2 and exabgp"
)
@pytest.mark.parametrize("fails", [False, True], ids=["tasks-pass", "tasks-fail"])
def test_maintenance_yml_withdraws_runs_the_tasks_and_announces(
    tmp_path: Path, fails: bool
) -> None:
    """maintenance.yml drains and withdraws (BIRD loses the route), runs the operator's tasks
    while withdrawn, then announces and sees it UP. If the tasks fail, the rollout stops and
    says the POP is left withdrawn, which it is."""
    with lab(tmp_path) as pod:
        pod.router.wait_route(PREFIX, SETTLE, med=100)
        during = tmp_path / "during.json"
        routes = tmp_path / "routes.txt"
        tasks = tmp_path / "operator-tasks.yml"
        tasks.write_text(json.dumps([
            {"name": "What the hook reports meanwhile",
             "ansible.builtin.command": {"argv": [str(BIN / "anycastedge"), "pop", "status", "-c",
                                                  str(pod.pop_yaml), "--json"]},
             "register": "during", "changed_when": False, "failed_when": False},
            {"name": "Keep it", "ansible.builtin.copy": {
                "content": "{{ during.stdout }}", "dest": str(during), "mode": "0644"}},
            {"name": "What the router has meanwhile",
             "ansible.builtin.command": {"argv": ["birdc", "-s", str(pod.router.socket), "show",
                                                  "route", "all"]},
             "register": "routes", "changed_when": False},
            {"name": "Keep that", "ansible.builtin.copy": {
                "content": "{{ routes.stdout }}", "dest": str(routes), "mode": "0644"}},
            *([{"name": "Break", "ansible.builtin.fail": {"msg": "disk on fire"}}] * fails),
        ]))  # fmt: skip
        inventory = write_inventory(tmp_path / "hosts.yml", {"lab": {"lab-edge1": local_host(
            anycastedge_pop="bgp-test",
            anycastedge_venv=str(BIN.parent),
            anycastedge_config_dir=str(pod.pop_yaml.parent),
            anycastedge_maintenance_drain=1,
            anycastedge_maintenance_timeout=60,
            anycastedge_maintenance_tasks=str(tasks),
        )}})  # fmt: skip
        run = playbook("maintenance.yml", inventory, tmp_path / "home")

        report = json.loads(during.read_text())
        assert report["withdrawn"] and report["maintenance"]["drain_seconds"] == 1
        assert PREFIX.split("/")[0] not in routes.read_text()  # withdrawn at the router too
        status = pod.cli("pop", "status", "--json")
        if fails:
            assert run.returncode != 0
            assert "LEFT WITHDRAWN" in run.output and "disk on fire" in run.output, run.output
            assert status.returncode == 2 and json.loads(status.stdout)["maintenance"] is not None
            pod.router.wait_gone(PREFIX, 10)
        else:
            assert run.returncode == 0, run.output
            assert status.returncode == 0, status.stdout
            pod.router.wait_route(PREFIX, 10, med=100)


@pytest.mark.parametrize(("engine", "haproxy"), [("builtin", False), ("haproxy", True)])
def test_haproxy_is_a_package_of_a_pop_whose_engine_is_haproxy(
    engine: str, haproxy: bool, tmp_path: Path
) -> None:
    """The role's package list (what its apt task installs) follows forward.engine."""
    role = ANSIBLE_DIR / "roles" / "anycastedge"
    play = tmp_path / "packages.yml"
    play.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        f"    - ansible.builtin.include_vars: {{file: {role / 'defaults' / 'main.yml'}}}\n"
        f"    - ansible.builtin.include_vars: {{file: {role / 'vars' / 'main.yml'}}}\n"
        "    - ansible.builtin.copy:\n"
        "        content: '{{ anycastedge_all_packages | to_json }}'\n"
        f"        dest: {tmp_path / 'packages.json'}\n"
        "        mode: '0644'\n"
    )
    extra = {"anycastedge_forward": {"engine": engine}, **local_host()}
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(play),
         "-e", json.dumps(extra)],
        capture_output=True, text=True, env=ansible_env(tmp_path), cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    packages = json.loads((tmp_path / "packages.json").read_text())
    assert ("haproxy" in packages) is haproxy
    assert "python3-venv" in packages
