"""Ports and child processes for tests and benches: loopback only, ended by our own PIDs."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any


def free_port(host: str = "127.0.0.1", attempts: int = 50) -> int:
    """A port on ``host`` that is free for both UDP and TCP right now."""
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise OSError(f"no port free for both UDP and TCP on {host} after {attempts} attempts")


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM a child we started, SIGKILL it if it has not exited within ``grace`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace)


# --- processes as /proc knows them ------------------------------------------------------------


def proc_stat(pid: int) -> list[Any]:
    """/proc/PID/stat's fields after the command name: the state (field 3) first, then the
    numbers (ppid, ...). OSError if there is no such process."""
    text = Path(f"/proc/{pid}/stat").read_text()
    rest = text[text.rindex(")") + 2 :].split()
    return [rest[0], *(int(f) for f in rest[1:])]


def parent(pid: int) -> int:
    """The parent PID of ``pid``."""
    ppid: int = proc_stat(pid)[1]
    return ppid


def gone(pid: int) -> bool:
    """Whether ``pid`` no longer runs (exited and reaped, or a zombie)."""
    try:
        return bool(proc_stat(pid)[0] == "Z")
    except OSError:
        return True


def children(pid: int) -> list[int]:
    """The PIDs whose parent is ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                if parent(int(entry)) == pid:
                    out.append(int(entry))
    return out
