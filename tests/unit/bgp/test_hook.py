"""The hook loop stepped with an injected clock, probes and stdout; probes against local sockets."""

from __future__ import annotations

import http.server
import io
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from anycastedge.bgp.hook import ConfigFile, Hook, prefix_is_local
from anycastedge.config.bgp import BgpConfig, HealthConfig
from anycastedge.config.pop import PopConfig
from anycastedge.health.check import CheckTarget, HealthCheck
from anycastedge.health.probes import ProbeResult, probe
from anycastedge.statedir.hook import read_hook_status
from anycastedge.statedir.maintenance import Maintenance, set_maintenance

PREFIXES = ("203.0.113.53/32", "2001:db8:53::53/128")
TCP_CHECK = CheckTarget("127.0.0.1", HealthCheck("TCP", port=1, timeout=0.5))


class InlinePool(Executor):
    """Runs each probe at once on the caller's thread: a round is then deterministic."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


@dataclass(slots=True)
class Clock:
    """Monotonic and wall time that move only when the test says."""

    now: float = 0.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_700_000_000.0 + self.now


@dataclass(slots=True)
class Rig:
    hook: Hook
    out: io.StringIO
    clock: Clock
    healthy: list[bool]
    pool: InlinePool

    def lines(self) -> list[str]:
        return self.out.getvalue().splitlines()

    def rounds(self, n: int) -> None:
        """Run the next ``n`` check rounds, each at the time it is due."""
        for _ in range(n):
            self.clock.now = max(self.clock.now, self.hook.next_round)
            self.hook.tick(self.pool)

    def run_for(self, seconds: float) -> None:
        """Step the loop as ``run`` would, without sleeping: jump to each next pass."""
        end = self.clock.now + seconds
        while self.clock.now < end:
            self.clock.now += max(self.hook.tick(self.pool), 0.001)


def make_rig(tmp_path: Path, **bgp: Any) -> Rig:
    health = HealthConfig(
        interval=1.0, fast_interval=0.2, rise=2, fall=2, timeout=0.5, checks=(TCP_CHECK,)
    )
    config = PopConfig(
        pop="t",
        state_dir=tmp_path,
        anycast=PREFIXES,
        bgp=BgpConfig(**{"require_local_address": False, "health": health, **bgp}),
    )
    out, clock, healthy = io.StringIO(), Clock(), [False]
    hook = Hook(
        config,
        out,
        probe_fn=lambda target: ProbeResult(healthy[0], 0.001, "fake"),
        clock=clock.monotonic,
        wall=clock.wall,
    )
    hook.start()
    return Rig(hook, out, clock, healthy, InlinePool())


def test_starts_by_withdrawing_everything(tmp_path: Path) -> None:
    """A fresh hook withdraws every prefix before it has checked anything (fail closed)."""
    rig = make_rig(tmp_path)
    assert rig.lines() == [
        "withdraw route 203.0.113.53/32 next-hop self",
        "withdraw route 2001:db8:53::53/128 next-hop ::ffff:127.0.0.2",
    ]
    status = read_hook_status(tmp_path)
    assert status is not None and status.state == "INIT"
    assert {p.why for p in status.prefixes.values()} == {"hook starting"}


def test_announces_after_rise_and_withdraws_on_fall_and_stop(tmp_path: Path) -> None:
    """Healthy rounds announce both prefixes after ``rise``; ``fall`` failures withdraw them;
    stopping (SIGTERM) withdraws what is announced."""
    rig = make_rig(tmp_path)
    rig.healthy[0] = True
    rig.rounds(1)
    assert sum("announce" in line for line in rig.lines()) == 0  # one pass of rise 2
    rig.rounds(1)
    assert sum("announce route" in line for line in rig.lines()) == 2
    status = read_hook_status(tmp_path)
    assert status is not None and status.state == "UP"
    assert {p.status for p in status.prefixes.values()} == {"announced"}
    rig.healthy[0] = False
    rig.rounds(1)  # the first failure only makes it FALLING
    assert sum("withdraw route" in line for line in rig.lines()) == 2
    rig.rounds(1)
    assert sum("withdraw route" in line for line in rig.lines()) == 4
    rig.healthy[0] = True
    rig.run_for(2.0)
    assert sum("announce route" in line for line in rig.lines()) == 4
    rig.hook.stop.set()  # what SIGTERM does
    rig.hook.finish()
    assert sum("withdraw route" in line for line in rig.lines()) == 6
    status = read_hook_status(tmp_path)
    assert status is not None and status.state == "EXIT"


def test_stdin_closing_ends_the_hook_without_output(tmp_path: Path) -> None:
    """When ExaBGP is gone (stdin closed) the hook prints nothing more, even if announced."""
    rig = make_rig(tmp_path)
    rig.healthy[0] = True
    rig.run_for(2.0)
    assert sum("announce route" in line for line in rig.lines()) == 2
    printed = len(rig.lines())
    rig.hook.stdin_closed.set()
    rig.hook.stop.set()
    rig.hook.finish()
    assert len(rig.lines()) == printed


def test_run_returns_once_stdin_closes(tmp_path: Path) -> None:
    """The real loop (threads, real time) ends when ExaBGP closes stdin."""
    rig = make_rig(tmp_path)
    hook = replace(rig.hook, clock=Clock().monotonic)
    thread = threading.Thread(target=hook.run)
    thread.start()
    hook.stdin_closed.set()
    hook.stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_no_checks_never_announce(tmp_path: Path) -> None:
    """A hook with nothing to check vouches for nothing: it never announces."""
    rig = make_rig(tmp_path, health=HealthConfig(rise=1, checks=()))
    rig.healthy[0] = True
    rig.run_for(10.0)
    assert not any("announce" in line for line in rig.lines())


def test_status_names_the_real_reason_for_a_withdrawal(tmp_path: Path) -> None:
    """A prefix not on a local interface is withdrawn, and the status file says so by address."""
    rig = make_rig(tmp_path, require_local_address=True)
    rig.healthy[0] = True
    rig.run_for(3.0)
    assert not any("announce" in line for line in rig.lines())
    status = read_hook_status(tmp_path)
    assert status is not None
    why = status.prefixes["203.0.113.53/32"].why
    assert why == "203.0.113.53 is not configured on a local interface"


def test_maintenance_drains_then_withdraws(tmp_path: Path) -> None:
    """`pop withdraw` re-announces with the drain attributes for drain_seconds, then withdraws."""
    rig = make_rig(tmp_path)
    rig.healthy[0] = True
    rig.run_for(2.0)
    set_maintenance(tmp_path, Maintenance(rig.clock.wall(), 5.0, "test", "me"))
    rig.run_for(0.2)
    drained = [line for line in rig.lines() if "community [65535:0]" in line]
    assert len(drained) == 2 and all("med 1000" in line for line in drained)
    rig.run_for(4.0)
    assert sum("withdraw route" in line for line in rig.lines()) == 2  # still draining
    rig.run_for(1.5)
    assert sum("withdraw route" in line for line in rig.lines()) == 4
    status = read_hook_status(tmp_path)
    assert status is not None and status.state == "DISABLED"


def test_unreadable_maintenance_file_withdraws(tmp_path: Path) -> None:
    """Garbage in maintenance.json counts as maintenance: fail closed."""
    rig = make_rig(tmp_path)
    rig.healthy[0] = True
    rig.run_for(2.0)
    (tmp_path / "maintenance.json").write_text("{not json")
    rig.run_for(0.2)
    assert sum("withdraw route" in line for line in rig.lines()) == 4
    status = read_hook_status(tmp_path)
    assert status is not None
    assert "unreadable maintenance file" in status.prefixes["203.0.113.53/32"].why


def _pop_yaml(path: Path, anycast: list[str], med: int, **extra: Any) -> None:
    data = {
        "pop": "t",
        "state_dir": str(path.parent),
        "anycast": anycast,
        "bgp": {
            "require_local_address": False,
            "neighbors": [{"address": "127.0.0.1", "peer_as": 64500}],
            "up": {"med": med},
            "health": {"rise": 1, "checks": [{"kind": "tcp", "address": "127.0.0.1:1"}]},
            **extra,
        },
    }
    path.write_text(yaml.safe_dump(data))


def _touch(path: Path, mtime: int) -> None:
    import os

    os.utime(path, ns=(mtime, mtime))  # distinct mtimes, whatever the filesystem's resolution


def test_changed_pop_yaml_applies_without_a_restart(tmp_path: Path) -> None:
    """A changed pop.yaml is picked up: a dropped prefix is withdrawn, a new MED announced; an
    invalid change is refused and the config in use stays."""
    path = tmp_path / "pop.yaml"
    _pop_yaml(path, list(PREFIXES), 100)
    _touch(path, 1)
    config_file = ConfigFile(path)
    clock, out = Clock(), io.StringIO()
    hook = Hook(
        config_file.load(),
        out,
        probe_fn=lambda target: ProbeResult(True, 0.001, "fake"),
        clock=clock.monotonic,
        wall=clock.wall,
        config_file=config_file,
    )
    rig = Rig(hook, out, clock, [True], InlinePool())
    hook.start()
    rig.run_for(2.0)
    assert sum("announce route" in line and "med 100" in line for line in rig.lines()) == 2

    _pop_yaml(path, [PREFIXES[0]], 200)
    _touch(path, 2)
    rig.run_for(2.0)
    assert "withdraw route 2001:db8:53::53/128 next-hop ::ffff:127.0.0.2" in rig.lines()
    assert rig.lines()[-1] == "announce route 203.0.113.53/32 next-hop self med 200"

    path.write_text("pop: t\nbgp: {health: {checks: [{kind: nope}]}}\n")
    _touch(path, 3)
    printed = len(rig.lines())
    rig.run_for(2.0)
    assert len(rig.lines()) == printed
    assert hook.config.bgp.up.med == 200


def test_prefix_is_local() -> None:
    """Loopback addresses are local; a documentation address is not configured here."""
    assert prefix_is_local("127.0.0.1/32")
    assert not prefix_is_local("203.0.113.53/32")


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = b"all good" if self.path == "/healthz" else b"nope"
        self.send_response(200 if self.path == "/healthz" else 503)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_http_and_tcp_probes_against_a_local_server() -> None:
    """HTTP passes on an expected status and body; TCP on a connect; a closed port fails."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    http_check = HealthCheck(
        "HTTP", path="/healthz", port=port, timeout=2, expect_status=frozenset({200}), body="good"
    )
    try:
        assert probe(CheckTarget("127.0.0.1", http_check)).ok
        assert not probe(CheckTarget("127.0.0.1", replace(http_check, body="bad"))).ok
        assert not probe(CheckTarget("127.0.0.1", replace(http_check, path="/x"))).ok
        assert probe(CheckTarget("127.0.0.1", HealthCheck("TCP", port=port, timeout=2))).ok
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    assert not probe(CheckTarget("127.0.0.1", HealthCheck("TCP", port=closed, timeout=2))).ok
    dns_check = HealthCheck("DNS", port=closed, timeout=2, qname="example.com.")
    assert probe(CheckTarget("127.0.0.1", dns_check)).detail in ("port unreachable", "timeout")


@pytest.mark.parametrize(
    ("check", "label"),
    [
        (HealthCheck("TCP", port=8443), "tcp://127.0.0.1:8443"),
        (HealthCheck("HTTP", port=8080, path="/healthz"), "http://127.0.0.1:8080/healthz"),
        (
            HealthCheck("DNS", port=5300, qname="example.com."),
            "dns://127.0.0.1:5300 example.com. SOA",
        ),
    ],
)
def test_check_labels(check: HealthCheck, label: str) -> None:
    """Checks are named in status and metrics by protocol, address and what is asked."""
    assert str(CheckTarget("127.0.0.1", check)) == label
