"""serve with ``forward.engine: haproxy`` for integration tests: its pop.yaml, reloads, the
HAProxy processes it runs (read from /status and /proc), echo endpoints and wrapper binaries.

Only loopback traffic; the only processes signalled are serve (started here) and the HAProxy
master whose PID serve's /status names, after /proc confirms it is serve's haproxy child.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.forward import Endpoint, removing, short_state_dir
from tests.support.procs import parent, proc_stat
from tests.support.server import ServerHandle, copy_repo_zones, running_server, wait_for

HAPROXY = shutil.which("haproxy")
needs_haproxy = pytest.mark.skipif(HAPROXY is None, reason="needs haproxy (make test installs it)")
HOST = "127.0.0.1"
POLL = 20.0  # bound of every wait


# --- endpoints --------------------------------------------------------------------------------


def _echo(endpoint: Endpoint, conn: socket.socket) -> None:
    while data := conn.recv(65536):
        conn.sendall(data)


def echo_endpoint() -> Endpoint:
    """A TCP echo endpoint on loopback (tests.support.forward's Endpoint), started."""
    return Endpoint(_echo).start()


def echo_once(port: int, payload: bytes) -> bytes:
    """Send ``payload`` on a new connection and read as many bytes back (bounded)."""
    with socket.create_connection((HOST, port), timeout=POLL) as sock:
        sock.sendall(payload)
        return recv_exactly(sock, len(payload))


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """``n`` bytes, or fewer if the peer closes first."""
    out = b""
    while len(out) < n:
        data = sock.recv(n - len(out))
        if not data:
            break
        out += data
    return out


def get(port: int, path: str, timeout: float = POLL) -> tuple[int, bytes]:
    """GET ``path`` on a new connection (closed after): (status, body)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def endpoint_of(body: bytes) -> str:
    """The name of the tests.support.http_backend endpoint that answered ``/echo``."""
    name: str = json.loads(body)["endpoint"]
    return name


# --- serve with engine: haproxy ---------------------------------------------------------------


def wrapper(path: Path, script: str) -> Path:
    """An executable shell script at ``path`` that runs ``script`` with HAPROXY set to the real
    binary (forward.haproxy.binary may name it: serve runs and checks what that names)."""
    assert HAPROXY is not None
    path.write_text(f"#!/bin/sh\nHAPROXY={HAPROXY}\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def pop_yaml(tmp_path: Path, forward: str) -> str:
    """pop.yaml with ``forward`` (a ``forward:`` section saying ``engine: haproxy``)."""
    assert "engine: haproxy" in forward
    # state_dir short: HAProxy's socket paths under it must stay within 97 bytes.
    state = short_state_dir(tmp_path)
    return f"pop: hx\nstate_dir: {state}\ndns:\n  watch_interval: 0\n{forward}"


@dataclass
class Engine:
    """A running serve whose forwarding is HAProxy."""

    server: ServerHandle
    config: Path
    tmp_path: Path

    @property
    def state(self) -> Path:
        """HAProxy's runtime directory (haproxy.cfg, sockets)."""
        return short_state_dir(self.tmp_path) / "haproxy"

    def forward(self) -> dict[str, Any]:
        """/status's ``forward``."""
        forward: dict[str, Any] = self.server.status()["forward"]
        return forward

    def engine(self) -> dict[str, Any]:
        """/status's ``forward.engine``."""
        engine: dict[str, Any] = self.forward()["engine"]
        return engine

    def backend(self, name: str) -> dict[str, Any]:
        """/status's entry for backend ``name``."""
        for backend in self.forward()["backends"]:
            if backend["name"] == name:
                return backend
        raise KeyError(name)

    def usable(self, *backends: str) -> None:
        """Wait until every endpoint of ``backends`` takes traffic (HAProxy's checks passed)."""

        def ready() -> bool:
            forward = self.forward()
            return all(e["usable"] for b in forward["backends"] if b["name"] in backends
                       for e in b["endpoints"])  # fmt: skip

        wait_for(ready, POLL, f"endpoints of {backends} usable")

    def reload(self, forward: str) -> dict[str, Any]:
        """Write pop.yaml with ``forward``, SIGHUP serve, and wait for the reload's outcome (a
        success or a failure more than before): /status's engine block after it."""
        before = self.engine()["reloads"]
        self.config.write_text(pop_yaml(self.tmp_path, forward))
        self.server.sighup()

        def done() -> dict[str, Any] | None:
            engine = self.engine()
            return engine if engine["reloads"] != before else None

        return wait_for(done, POLL, "the reload's outcome in /status")

    def haproxy_master(self) -> int:
        """HAProxy's master PID as /status names it, checked in /proc: a haproxy process
        whose parent is serve (so signalling it signals nothing else)."""
        pid = self.engine()["pid"]
        assert isinstance(pid, int)
        assert parent(pid) == self.server.pid, f"pid {pid} is not serve's child"
        assert "haproxy" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        return pid


@contextlib.contextmanager
def engine_pop(tmp_path: Path, forward: str) -> Iterator[Engine]:
    """serve (with the repo's zones) forwarding through HAProxy as ``forward`` says."""
    config = tmp_path / "pop.yaml"
    config.write_text(pop_yaml(tmp_path, forward))
    zones = copy_repo_zones(tmp_path / "zones")
    with removing(short_state_dir(tmp_path)), running_server(zones, config=config) as server:
        yield Engine(server, config, tmp_path)


# --- processes in /proc -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proc:
    """A process as /proc knows it: PID and start time (which tell a reused PID apart)."""

    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> Proc:
        return cls(pid, proc_stat(pid)[19])

    def running(self) -> bool:
        """Whether this very process still runs (not gone, not a zombie, PID not reused)."""
        try:
            fields = proc_stat(self.pid)
        except (FileNotFoundError, ProcessLookupError):
            return False
        return fields[0] != "Z" and fields[19] == self.start


def kill_master(engine: Engine) -> int:
    """SIGKILL HAProxy's master (checked to be serve's haproxy child); its PID."""
    pid = engine.haproxy_master()
    os.kill(pid, signal.SIGKILL)
    return pid
