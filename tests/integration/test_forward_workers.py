"""forward: {workers: N}: `anycastedge serve` and its worker processes accepting on one shared
listening socket, over real loopback sockets; HTTP endpoints run by the test."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from tests.support.forward import HOST, POLL, Pop, backends_up, listener_ports, pop, write_config
from tests.support.http_backend import endpoints
from tests.support.procs import gone, parent
from tests.support.server import wait_for


def forward_yaml(port: int, backend_port: int, workers: str = "2") -> str:
    return (
        "forward:\n"
        f"  workers: {workers}\n"
        "  listeners:\n"
        "    web:\n"
        f'      bind: "{HOST}:{port}"\n'
        "      protocol: http\n"
        "      access_log: null\n"
        "      routes: [{backend: app}]\n"
        "  backends:\n"
        "    app:\n"
        "      healthcheck: {kind: tcp, interval: 0.2}\n"
        f'      endpoints: [{{address: "{HOST}:{backend_port}"}}]\n'
    )


# --- what /proc says about the processes --------------------------------------------------------


def listening_inode(port: int) -> str:
    """The inode of the socket listening on HOST:``port`` (/proc/net/tcp, state 0A)."""
    local = f"{0x0100007F:08X}:{port:04X}"  # 127.0.0.1, as the kernel prints it (little-endian)
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] == "0A":
            return fields[9]
    raise AssertionError(f"nothing listens on {HOST}:{port}")


def holds(pid: int, inode: str) -> bool:
    """Whether process ``pid`` has a descriptor on socket ``inode``."""
    fds = Path(f"/proc/{pid}/fd")
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd) == f"socket:[{inode}]":
                return True
    return False




# --- serve with workers -----------------------------------------------------------------------


@contextlib.contextmanager
def workers_pop(tmp_path: Path) -> Iterator[tuple[Pop, str]]:
    """serve with workers: 2 and one HTTP listener; yields once worker 1 is listening too."""
    with endpoints("a") as (server,):
        ports = listener_ports("web")
        with pop(tmp_path, forward_yaml(ports["web"], server.port), ports) as p:
            backends_up(p, "app")
            worker_listening(p, 1)
            yield p, f"http://{HOST}:{ports['web']}"


def worker(p: Pop, index: int) -> dict[str, Any]:
    for entry in p.status()["workers"]:
        if entry["index"] == index:
            return entry
    raise KeyError(index)


def worker_listening(p: Pop, index: int) -> int:
    """Wait until worker ``index`` runs and has started its listener (its log says so): its PID.

    A worker listens once its own checks have seen the endpoints (before, it could only 503).
    """

    def listening() -> int | None:
        entry = worker(p, index)
        if not entry["alive"] or entry["pid"] is None:
            return None
        prefix = f"worker {index} (pid {entry['pid']}): "
        pattern = re.escape(prefix) + r".*forward listener web on"
        return int(entry["pid"]) if re.search(pattern, p.server.log_text()) else None

    return wait_for(listening, POLL, f"worker {index} listening")


def get(url: str) -> int:
    """One request on a new connection: its status."""
    response = requests.get(url, headers={"Connection": "close"}, timeout=POLL)
    return response.status_code


def test_workers_share_the_socket_and_answer(tmp_path: Path) -> None:
    with workers_pop(tmp_path) as (p, url):
        entries = p.status()["workers"]
        assert [e["index"] for e in entries] == [0, 1]
        assert entries[0]["pid"] == p.server.pid
        pid = entries[1]["pid"]
        assert entries[1]["alive"] and entries[1]["restarts"] == 0
        assert parent(pid) == p.server.pid
        # One listening socket, held by both processes: bound once by serve, inherited.
        inode = listening_inode(p.ports["web"])
        assert holds(p.server.pid, inode) and holds(pid, inode)

        # Many requests, each on a new connection, from a few clients at once: all answered.
        # serve counts only what it accepted itself: fewer than sent means the worker took some.
        sent = 0
        with ThreadPoolExecutor(8) as pool:
            for _ in range(10):  # bounded: the kernel hands connections to whoever is first
                statuses = list(pool.map(lambda i: get(f"{url}/echo/{i}"), range(200)))
                assert statuses == [200] * 200
                sent += 200
                if p.status()["listeners"][0]["accepted"] < sent:
                    break
        accepted = p.status()["listeners"][0]["accepted"]
        assert 0 < accepted < sent, (accepted, sent)

        # SIGHUP is passed on: the worker applies pop.yaml's forward: anew too.
        p.server.sighup()
        wait_for(
            lambda: re.search(
                re.escape(f"worker 1 (pid {pid}): ") + r".*forwarding configuration applied",
                p.server.log_text(),
            ),
            POLL,
            "the worker's reload",
        )
        assert get(f"{url}/echo/after-reload") == 200


def test_a_killed_worker_loses_no_request_and_is_restarted(tmp_path: Path) -> None:
    """SIGKILL cuts the connections a worker had already accepted (no server could keep those);
    what the shared socket keeps is everything queued or arriving. So the worker is stopped
    first (SIGSTOP) while no request is in flight: it holds no accepted connection, takes no
    new one, and is killed while requests run. None fails, and none is refused."""
    with workers_pop(tmp_path) as (p, url):
        old = worker(p, 1)["pid"]
        os.kill(old, signal.SIGSTOP)
        results: list[int | str] = []
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set() and len(results) < 20_000:  # bounded
                try:
                    results.append(get(f"{url}/echo/{len(results)}"))
                except requests.RequestException as exc:
                    results.append(repr(exc))

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            wait_for(lambda: len(results) >= 20, POLL, "requests running")
            os.kill(old, signal.SIGKILL)
            wait_for(lambda: gone(old), POLL, "the worker killed")
            wait_for(lambda: worker(p, 1)["pid"] != old, POLL, "the worker restarted")
            new = worker_listening(p, 1)
            entry = worker(p, 1)
            assert entry["alive"] and entry["restarts"] == 1
            assert parent(new) == p.server.pid
            assert holds(new, listening_inode(p.ports["web"]))
            during = len(results)
            wait_for(lambda: len(results) >= during + 50, POLL, "requests after the restart")
        finally:
            stop.set()
            thread.join(POLL)
        assert results and all(r == 200 for r in results), [r for r in results if r != 200][:5]


def test_sigterm_stops_the_workers(tmp_path: Path) -> None:
    with workers_pop(tmp_path) as (p, _):
        pid = worker(p, 1)["pid"]
        assert p.server.stop() == 0
        wait_for(lambda: gone(pid), POLL, f"worker pid {pid} gone")


def forward_check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "anycastedge", "forward", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=POLL * 3,
        env={k: v for k, v in os.environ.items() if k != "ANYCASTEDGE_CONFIG"},
    )


def test_workers_refused_with_file_and_line(tmp_path: Path) -> None:
    for value in ("0", "many", "65", "true", "1.5"):
        config = write_config(tmp_path, forward_yaml(10_001, 10_002, value))
        line = config.read_text().splitlines().index(f"  workers: {value}") + 1
        proc = forward_check(config)
        assert proc.returncode == 1, (value, proc.stdout)
        assert f"{config}, line {line}," in proc.stderr, (value, proc.stderr)
        assert "forward.workers" in proc.stderr, proc.stderr
    config = write_config(tmp_path, forward_yaml(10_001, 10_002, "auto"))
    proc = forward_check(config)
    assert proc.returncode == 0, proc.stderr
    count = min(os.cpu_count() or 1, 64)
    assert (f"workers: {count} processes" in proc.stdout) == (count > 1), proc.stdout
