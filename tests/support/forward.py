"""What the forwarding integration tests share: serve with a forward: section, its ports, and
waits on its status."""

from __future__ import annotations

import contextlib
import random
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.server import ServerHandle, copy_repo_zones, running_server, wait_for

POLL = 20.0  # bound of every wait in these tests
HOST = "127.0.0.1"


@dataclass
class Pop:
    server: ServerHandle
    ports: dict[str, int]
    config: Path

    def status(self) -> dict[str, Any]:
        forward = self.server.status()["forward"]
        assert forward is not None
        return forward

    def endpoint(self, backend: str, port: int) -> dict[str, Any]:
        for b in self.status()["backends"]:
            if b["name"] == backend:
                for e in b["endpoints"]:
                    if e["address"] == f"{HOST}:{port}":
                        return e  # type: ignore[no-any-return]
        raise KeyError((backend, port))

    def connect(self, listener: str) -> socket.socket:
        return socket.create_connection((HOST, self.ports[listener]), timeout=POLL)


def listener_ports(*names: str) -> dict[str, int]:
    """A free loopback port for each listener, below the kernel's ephemeral range: the ports
    the server picks for DNS (bound to port 0) and its outgoing connects never land there."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports: list[int] = []
    for port in random.Random().sample(range(10_000, low), 200):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                tcp.bind((HOST, port))
                udp.bind((HOST, port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == len(names):
            return dict(zip(names, ports, strict=True))
    raise OSError("no free ports below the ephemeral range")


def write_config(tmp_path: Path, forward: str) -> Path:
    config = tmp_path / "pop.yaml"
    config.write_text(
        f"pop: fw\nstate_dir: {tmp_path / 'state'}\ndns:\n  watch_interval: 0\n{forward}"
    )
    return config


@contextlib.contextmanager
def pop(tmp_path: Path, forward: str, ports: dict[str, int]) -> Iterator[Pop]:
    """serve with pop.yaml's ``forward:`` section as given, its listeners on ``ports``."""
    config = write_config(tmp_path, forward)
    zones = copy_repo_zones(tmp_path / "zones")
    with running_server(zones, config=config) as server:
        yield Pop(server, ports, config)


def backends_up(p: Pop, *backends: str) -> None:
    """Wait until every endpoint of ``backends`` has passed its first check."""

    def ready() -> bool:
        return all(
            e["up"] for b in p.status()["backends"] if b["name"] in backends for e in b["endpoints"]
        )

    wait_for(ready, POLL, f"endpoints of {backends} up")
