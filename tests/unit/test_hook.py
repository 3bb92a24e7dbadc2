"""The hook loop with injected probes and a captured stdout; the probes against local sockets."""

from __future__ import annotations

import dataclasses
import http.server
import io
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from anycastedge.bgp.hook import Hook, prefix_is_local
from anycastedge.config.bgp import BgpConfig, Check, HealthConfig
from anycastedge.config.pop import PopConfig
from anycastedge.control.maintenance import HOOK_STATUS_FILE
from anycastedge.control.statefile import read_json
from anycastedge.health.probes import ProbeResult, probe

PREFIXES = ("203.0.113.53/32", "2001:db8:53::53/128")


def wait_until(predicate: object, timeout: float = 10.0) -> None:
    """Bounded poll."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def make_hook(tmp_path: Path, healthy: threading.Event) -> tuple[Hook, io.StringIO]:
    health = HealthConfig(
        interval=0.05, fast_interval=0.02, rise=2, fall=2, timeout=0.5, checks=(Check("tcp", "x"),)
    )
    bgp = BgpConfig(require_local_address=False, health=health)
    config = PopConfig(pop="t", state_dir=tmp_path, anycast=PREFIXES, bgp=bgp)
    out = io.StringIO()

    def fake_probe(check: Check, timeout: float) -> ProbeResult:
        return ProbeResult(healthy.is_set(), 0.001, "fake")

    return Hook(config, out, probe_fn=fake_probe), out


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Hook, io.StringIO, threading.Event]]:
    healthy = threading.Event()
    hook, out = make_hook(tmp_path, healthy)
    thread = threading.Thread(target=hook.run)
    thread.start()
    yield hook, out, healthy
    hook.stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_starts_by_withdrawing_everything(
    running: tuple[Hook, io.StringIO, threading.Event],
) -> None:
    """A fresh hook withdraws every prefix before it has checked anything (fail closed)."""
    hook, out, _ = running
    wait_until(lambda: out.getvalue().count("withdraw route") >= 2)
    first = out.getvalue().splitlines()[:2]
    assert all(line.startswith("withdraw route") for line in first)


def test_announces_after_rise_and_withdraws_on_fall_and_sigterm(
    running: tuple[Hook, io.StringIO, threading.Event], tmp_path: Path
) -> None:
    """Healthy rounds announce both prefixes; failing ones withdraw; stopping withdraws too."""
    hook, out, healthy = running
    healthy.set()
    wait_until(lambda: out.getvalue().count("announce route") == 2)
    status = read_json(tmp_path / HOOK_STATUS_FILE)
    assert status["state"] == "UP"
    assert {p["status"] for p in status["prefixes"].values()} == {"announced"}
    healthy.clear()
    wait_until(lambda: out.getvalue().count("withdraw route") == 4)
    healthy.set()
    wait_until(lambda: out.getvalue().count("announce route") == 4)
    hook.stop.set()  # what SIGTERM does
    wait_until(lambda: out.getvalue().count("withdraw route") == 6)
    assert read_json(tmp_path / HOOK_STATUS_FILE)["state"] == "EXIT"


def test_stdin_closing_ends_the_hook_without_output(tmp_path: Path) -> None:
    """When ExaBGP is gone (stdin closed) the hook exits and prints nothing more."""
    healthy = threading.Event()
    hook, out = make_hook(tmp_path, healthy)
    thread = threading.Thread(target=hook.run)
    thread.start()
    wait_until(lambda: out.getvalue().count("withdraw route") == 2)
    hook.stdin_closed.set()
    hook.stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert out.getvalue().count("\n") == 2


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
    try:
        base = Check("http", f"http://127.0.0.1:{port}/healthz", body="good")
        assert probe(base, 2).ok
        assert not probe(dataclasses.replace(base, body="bad"), 2).ok
        assert not probe(dataclasses.replace(base, target=f"http://127.0.0.1:{port}/x"), 2).ok
        assert probe(Check("tcp", f"127.0.0.1:{port}"), 2).ok
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    assert not probe(Check("tcp", f"127.0.0.1:{closed}"), 2).ok
    assert probe(Check("dns", f"127.0.0.1:{closed}", name="example.com."), 2).detail in (
        "port unreachable",
        "timeout",
    )


def test_a_round_without_checks_fails(tmp_path: Path) -> None:
    """Nothing checked vouches for nothing: with no checks the POP never rises (fail closed)."""
    hook, _ = make_hook(tmp_path, threading.Event())
    health = dataclasses.replace(hook.config.bgp.health, checks=())
    hook.config = dataclasses.replace(
        hook.config, bgp=dataclasses.replace(hook.config.bgp, health=health)
    )
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert hook.check_round(pool) is False
