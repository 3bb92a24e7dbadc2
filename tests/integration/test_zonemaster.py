"""Zonemaster's `nameserver` and `syntax` test modules against `anycastedge serve` for each example
zone: no ERROR (or CRITICAL), and positive proof that every name server of the zone answered.

zonemaster-cli sends its queries to the addresses of the zone's name servers (loopback in the
example zones), on port 53 only. So it and the server run in a network namespace of this test's
own that has nothing but a loopback interface: nothing it sends can leave the machine. The test
skips, with the reason, when not root, when a namespace cannot be made, or without zonemaster-cli
(Debian package `zonemaster-cli`); it deletes its namespace and stops the server (by PID) whatever
happens.

Zonemaster reports "Looks OK" when a name server does not answer at all, so the absence of errors
alone proves nothing: each name server must also appear in the informational results (not a
recursor, EDNS0 supported, the case of the question preserved).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.procs import stop_process
from tests.support.server import copy_repo_zones, wait_for

#: The example zones and their name servers (name, address), as zones/*.yaml define them.
ZONES = {
    "example.com": (("ns1.example.com", "127.0.0.1"), ("ns2.example.com", "127.0.0.2")),
    "example.net": (("ns.example.net", "127.0.0.4"),),
}
MODULES = ("nameserver", "syntax")
RUN_TIMEOUT = 300.0  # bound on one zonemaster-cli run (about a second when all answer)
FAILING = {"ERROR", "CRITICAL"}


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (a network namespace, and port 53 inside it)"
    if shutil.which("zonemaster-cli") is None:
        return "needs zonemaster-cli (Debian package zonemaster-cli)"
    for tool in ("ip", "dig"):
        if shutil.which(tool) is None:
            return f"needs {tool} (iproute2, bind9-dnsutils)"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")


@dataclass
class Namespace:
    """A network namespace with only a loopback interface, and what runs in it."""

    name: str

    def run(self, *cmd: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture(scope="module")
def namespace() -> Iterator[Namespace]:
    name = f"zonemaster-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"network namespaces cannot be created here: {made.stderr.strip()}")
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=30)
        yield Namespace(name)
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def serving(namespace: Namespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """`anycastedge serve` on port 53 of every name server address, inside the namespace."""
    base = tmp_path_factory.mktemp("zonemaster")
    zones = copy_repo_zones(base / "zones")
    listen = [f"{address}:53" for servers in ZONES.values() for _, address in servers]
    config = base / "pop.yaml"
    config.write_text(
        "pop: zonemaster\n"
        f"state_dir: {json.dumps(str(base / 'state'))}\n"
        "dns:\n"
        f"  zones: {json.dumps(str(zones))}\n"
        f"  listen: {json.dumps(listen)}\n"
        "  check_networks: [127.0.0.0/8]\n"
        "control:\n"
        "  listen: null\n"
    )
    log = base / "serve.log"
    env = {k: v for k, v in os.environ.items() if k != "ANYCASTEDGE_CONFIG"}
    with log.open("wb") as out:
        # `ip netns exec` execs the command in place, so this PID is the server's.
        process = subprocess.Popen(
            ["ip", "netns", "exec", namespace.name, sys.executable, "-m", "anycastedge", "serve",
             "-c", str(config)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=base, env=env,
        )  # fmt: skip
    try:
        for servers in ZONES.values():
            for _, address in servers:

                def up(address: str = address) -> bool:
                    return process.poll() is not None or _answers(namespace, address)

                wait_for(up, 30.0, f"serve to answer on {address}:53 in {namespace.name}")
                assert process.poll() is None, log.read_text(errors="replace")
        yield
    finally:
        stop_process(process)


def _answers(namespace: Namespace, address: str) -> bool:
    result = namespace.run(
        "dig", "+short", "+time=1", "+tries=1", f"@{address}", "example.com", "SOA", timeout=10
    )
    return result.returncode == 0 and "hostmaster" in result.stdout


def zonemaster(namespace: Namespace, zone: str) -> list[dict[str, Any]]:
    """zonemaster-cli's results (INFO and up) for ``zone``, run inside the namespace."""
    name, address = ZONES[zone][0]
    tests = [arg for module in MODULES for arg in ("--test", module)]
    result = namespace.run(
        "zonemaster-cli", "--no-ipv6", "--ns", f"{name}/{address}", *tests,
        "--level", "INFO", "--json", zone,
        timeout=RUN_TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    entries: list[dict[str, Any]] = json.loads(result.stdout)
    return entries


def _show(entries: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{e['level']:8} {e.get('testcase', '')}: {e['tag']} {e.get('args', {})}" for e in entries
    )


@pytest.mark.parametrize("zone", sorted(ZONES))
def test_zonemaster_finds_no_error(zone: str, namespace: Namespace, serving: None) -> None:
    entries = zonemaster(namespace, zone)
    failing = [e for e in entries if e["level"] in FAILING]
    assert failing == [], _show(failing)
    # Every name server really answered (Zonemaster is silent about one that does not).
    for name, address in ZONES[zone]:
        ns = f"{name}/{address}"
        for tag in ("NO_RECURSOR", "QNAME_CASE_SENSITIVE"):
            assert any(e["tag"] == tag and e["args"].get("ns") == ns for e in entries), (
                f"no {tag} for {ns}:\n{_show(entries)}"
            )
        assert any(
            e["tag"] == "EDNS0_SUPPORT" and ns in e["args"].get("ns_list", "").split(";")
            for e in entries
        ), f"{ns} not listed as supporting EDNS0:\n{_show(entries)}"
    assert any(e["tag"] == "CASE_QUERIES_RESULTS_OK" for e in entries), _show(entries)
    assert {e["testcase"] for e in entries} >= {"SYNTAX01", "SYNTAX05", "SYNTAX07"}, _show(entries)
