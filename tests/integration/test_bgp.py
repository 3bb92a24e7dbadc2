"""The hook under real ExaBGP 5 against a real BIRD 2 router, all on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.bgp import (
    BIRD_CONF,
    FALL,
    FAST,
    INTERVAL,
    POP_AS,
    PREFIX,
    PREFIX6,
    REPO,
    SETTLE,
    lab,
    write_pop,
)
from tests.support.procs import free_port
from tests.support.server import wait_for

pytestmark = [
    pytest.mark.skipif(
        shutil.which("bird") is None or not Path(sys.executable).with_name("exabgp").exists(),
        reason="needs bird2 and exabgp",
    ),
    # Alone (make test runs it after the parallel part): these tests hold the hook to its
    # detection time, which other tests' load on the same CPUs would stretch.
    pytest.mark.exclusive,
]

DETECTION = FALL * FAST + INTERVAL + 1.0  # the bound for a stopped server


def test_rendered_config_validates(tmp_path: Path) -> None:
    """`exabgp validate` accepts what `bgp render` writes."""
    pop_yaml = write_pop(tmp_path, 1790, 5300, 9053)
    conf = tmp_path / "exabgp.conf"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "anycastedge",
            "bgp",
            "render",
            "-c",
            str(pop_yaml),
            "-o",
            str(conf),
        ],
        check=True,
        timeout=30,
    )
    env = dict(os.environ)
    env.update(line.split("=", 1) for line in Path(f"{conf}.env").read_text().splitlines() if line)
    exabgp = str(Path(sys.executable).with_name("exabgp"))
    result = subprocess.run(
        [exabgp, "validate", str(conf)], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"connect {1790}" in conf.read_text()


def test_committed_bird_conf_parses_as_is(tmp_path: Path) -> None:
    """`bird -p -c bgp/bird.conf` accepts the walkthrough's router, from any directory."""
    result = subprocess.run(
        ["bird", "-p", "-c", str(BIRD_CONF)], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Without its port file it does not: the include is real, not a comment.
    shutil.copyfile(BIRD_CONF, tmp_path / "bird.conf")
    result = subprocess.run(
        ["bird", "-p", "-c", str(tmp_path / "bird.conf")], capture_output=True, text=True
    )
    assert result.returncode != 0 and "bird-port.conf" in result.stderr


def render_example(out: Path) -> subprocess.CompletedProcess[str]:
    """`anycastedge bgp render -c examples/pop.yaml --portable -o OUT`, from the repository."""
    return subprocess.run(
        [sys.executable, "-m", "anycastedge", "bgp", "render", "-c", "examples/pop.yaml"]
        + ["--portable", "-o", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )


def test_committed_exabgp_conf_is_a_fresh_render(tmp_path: Path) -> None:
    """bgp/exabgp.conf and its .env are exactly what render writes today; no machine path."""
    rendered = render_example(tmp_path / "exabgp.conf")
    assert rendered.returncode == 0, rendered.stderr
    for name in ("exabgp.conf", "exabgp.conf.env"):
        committed = (REPO / "bgp" / name).read_text()
        assert committed == (tmp_path / name).read_text(), f"re-render bgp/{name}"
        assert str(REPO) not in committed and str(Path(sys.executable).parent) not in committed
    assert "    run anycastedge bgp hook;\n" in (REPO / "bgp" / "exabgp.conf").read_text()


def test_committed_exabgp_conf_validates() -> None:
    """ExaBGP 5 accepts bgp/exabgp.conf, started as the walkthrough starts it."""
    conf = REPO / "bgp" / "exabgp.conf"
    env = dict(os.environ)
    env.update(line.split("=", 1) for line in Path(f"{conf}.env").read_text().splitlines() if line)
    venv_bin = Path(sys.executable).parent
    env["PATH"] = f"{venv_bin}:{env.get('PATH', '')}"  # where ExaBGP finds `anycastedge`
    env["ANYCASTEDGE_CONFIG"] = str(REPO / "examples" / "pop.yaml")
    result = subprocess.run(
        [str(venv_bin / "exabgp"), "validate", str(conf)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_announce_drain_withdraw_announce(tmp_path: Path) -> None:
    """Healthy: MED 100; withdraw: GRACEFUL_SHUTDOWN and prepends, then gone; announce: back."""
    with lab(tmp_path) as pod:
        up = pod.router.wait_route(PREFIX, SETTLE, med=100)
        assert up.as_path == (POP_AS,)
        pod.router.wait_route(PREFIX6, SETTLE, med=100)
        status = pod.cli("pop", "status", "--json")
        assert status.returncode == 0, status.stdout + status.stderr

        started = time.monotonic()
        result = pod.cli("pop", "withdraw", "--reason", "test", "--drain", "2")
        assert result.returncode == 0, result.stderr
        drained = pod.router.wait_route(PREFIX, 5, med=1000)
        to_drain = time.monotonic() - started
        assert (65535, 0) in drained.communities
        assert drained.as_path == (POP_AS,) * 4
        drained6 = pod.router.wait_route(PREFIX6, 5, med=1000)
        assert (65535, 0) in drained6.communities
        drain_seen = time.monotonic()
        pod.router.wait_gone(PREFIX, 10)
        pod.router.wait_gone(PREFIX6, 10)
        print(f"withdraw->drain visible {to_drain:.3f}s; drain->gone "
              f"{time.monotonic() - drain_seen:.3f}s")  # fmt: skip
        status = pod.cli("pop", "status")
        assert status.returncode == 2 and "maintenance: since" in status.stdout

        assert pod.cli("pop", "announce").returncode == 0
        back = pod.router.wait_route(PREFIX, 10, med=100)
        assert back.communities == ()
        pod.router.wait_route(PREFIX6, 10, med=100)


def test_stopped_server_is_withdrawn_within_detection_time(tmp_path: Path) -> None:
    """Stopping serve withdraws the route within fall * fast_interval + interval + 1 s."""
    with lab(tmp_path) as pod:
        pod.router.wait_route(PREFIX, SETTLE, med=100)
        started = time.monotonic()
        pod.serve.stop()
        pod.router.wait_gone(PREFIX, DETECTION)
        pod.router.wait_gone(PREFIX6, DETECTION)
        print(f"serve stopped -> route gone at BIRD: {time.monotonic() - started:.3f}s")


def test_respawned_hook_withdraws_what_it_cannot_vouch_for(tmp_path: Path) -> None:
    """A hook SIGKILLed while serve is down is respawned and withdraws ExaBGP's stale route."""
    with lab(tmp_path) as pod:
        pod.router.wait_route(PREFIX, SETTLE, med=100)
        first = pod.exabgp.kill_hook()  # ExaBGP keeps the dead hook's route announced
        pod.serve.stop()
        pod.router.wait_gone(PREFIX, DETECTION)
        successor = wait_for(lambda: pod.exabgp.hook_pids(), 10, "the respawned hook")
        assert first not in successor


def test_hook_that_cannot_start_takes_exabgp_down(tmp_path: Path) -> None:
    """With an unreadable pop.yaml every respawn dies; ExaBGP gives up and the route goes."""
    with lab(tmp_path) as pod:
        pod.router.wait_route(PREFIX, SETTLE, med=100)
        pod.pop_yaml.write_text("pop: [unclosed\n")
        pod.exabgp.kill_hook()
        assert pod.exabgp.process is not None
        pod.exabgp.process.wait(timeout=120)
        assert "Too many death" in pod.exabgp.log_text() or pod.exabgp.process.returncode != 0
        pod.router.wait_gone(PREFIX, 30)


def test_sigterm_to_exabgp_leaves_no_hook(tmp_path: Path) -> None:
    """SIGTERM to ExaBGP ends it and its hook: no helper process lives on."""
    with lab(tmp_path) as pod:
        pod.router.wait_route(PREFIX, SETTLE, med=100)
        hooks = pod.exabgp.hook_pids()
        assert hooks
        assert pod.exabgp.process is not None
        pod.exabgp.process.send_signal(signal.SIGTERM)
        pod.exabgp.process.wait(timeout=30)
        wait_for(
            lambda: not any(Path(f"/proc/{pid}").exists() for pid in hooks), 10, "the hook to exit"
        )
        pod.router.wait_gone(PREFIX, 30)


def test_pop_with_its_critical_backend_down_is_withdrawn(tmp_path: Path) -> None:
    """The hook's http check on /forward/health: while the critical backend's only endpoint is
    down the POP is withdrawn, and announced again once it is back."""
    backend = socket.socket()
    backend.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    backend.bind(("127.0.0.1", 0))
    backend.listen(16)
    port = backend.getsockname()[1]
    control = free_port()
    extra = f"""      - {{kind: http, url: "http://127.0.0.1:{control}/forward/health"}}
forward:
  backends:
    app:
      critical: true
      healthcheck: {{kind: tcp, interval: 0.2, timeout: 0.2, rise: 1, fall: 1}}
      endpoints: [{{address: "127.0.0.1:{port}"}}]
"""
    with lab(tmp_path, extra, control) as pod:
        pod.router.wait_route(PREFIX, SETTLE, med=100)
        backend.close()  # the endpoint goes away: its check fails, the backend has none up
        pod.router.wait_gone(PREFIX, DETECTION + 1.0)
        revived = socket.socket()
        revived.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        revived.bind(("127.0.0.1", port))
        revived.listen(16)
        try:
            pod.router.wait_route(PREFIX, SETTLE, med=100)
        finally:
            revived.close()
