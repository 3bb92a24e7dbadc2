"""What the forwarding integration tests share: serve with a forward: section, its ports, and
waits on its status."""

from __future__ import annotations

import contextlib
import hashlib
import random
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.http_backend import EndpointServer
from tests.support.server import ServerHandle, copy_repo_zones, running_server, wait_for

POLL = 20.0  # bound of every wait in these tests
HOST = "127.0.0.1"


@dataclass
class Endpoint:
    """A TCP server on loopback with a per-connection handler; counts connections."""

    handler: Any
    port: int = 0
    connections: int = 0
    received: list[bytes] = field(default_factory=list)
    sock: socket.socket | None = None
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Endpoint:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, self.port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        self.sock = sock
        thread = threading.Thread(target=self._accept, args=(sock,), daemon=True)
        thread.start()
        return self

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return  # stopped
            self.connections += 1
            conn.settimeout(POLL)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            self.handler(self, conn)

    def stop(self) -> None:
        if self.sock is not None:
            # Closing alone leaves the port listening while the accept thread is blocked in
            # accept() (the kernel keeps the socket for it): a connect then still succeeds
            # whenever the connection is reset before the thread takes it (HAProxy's checks
            # do that). shutdown() stops the listening and wakes the thread.
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
            self.sock = None


@dataclass
class Pop:
    server: ServerHandle
    ports: dict[str, int]
    config: Path
    engine: str = "builtin"

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

    def counted(self) -> None:
        """Wait until /status and /metrics count everything done before this call: the
        built-in engine's counters are live, HAProxy's are read once a second."""
        if self.engine == "builtin":
            return
        start = time.monotonic()

        def read_since() -> bool:
            asked = time.monotonic()
            age = self.status()["engine"]["stats_age_seconds"]
            return age is not None and age < asked - start  # read after ``start``

        wait_for(read_since, POLL, "HAProxy's statistics read again")

    def reloaded(self, count: int = 1) -> None:
        """Wait until HAProxy runs the ``count``-th forwarding change (its new worker started):
        /status shows a change's listeners and endpoints as soon as serve has it, while
        HAProxy's old worker may still be serving. The built-in engine applies it at once."""
        if self.engine == "builtin":
            return
        wait_for(lambda: self.status()["engine"]["reloads"]["success"] >= count, POLL,
                 f"HAProxy reload {count} done")  # fmt: skip

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


ENGINES = ("builtin", "haproxy")


def with_engine(forward: str, engine: str) -> str:
    """pop.yaml's ``forward:`` section run by ``engine``: ``engine: haproxy`` as its first key
    (builtin, the default, is left unsaid so the section stays as the test wrote it)."""
    if engine not in ENGINES:
        raise ValueError(f"no such engine: {engine!r}")
    if engine == "builtin":
        return forward
    head = "forward:\n"
    if not forward.startswith(head):
        raise ValueError("a forward: section starts with 'forward:' on a line of its own")
    return f"{head}  engine: {engine}\n{forward[len(head):]}"


def short_state_dir(tmp_path: Path) -> Path:
    """A state_dir for the test at ``tmp_path`` short enough for HAProxy's UNIX sockets (97
    bytes: a pytest-xdist tmp_path alone may be longer): /tmp/ae-HASH, the same for one test.
    Whoever starts serve with it removes it (``removing``)."""
    digest = hashlib.blake2s(str(tmp_path).encode(), digest_size=6).hexdigest()
    return Path(tempfile.gettempdir()) / f"ae-{digest}"


@contextlib.contextmanager
def removing(directory: Path) -> Iterator[Path]:
    """``directory``, removed on exit (with whatever serve left in it)."""
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def write_config(tmp_path: Path, forward: str, engine: str = "builtin") -> Path:
    config = tmp_path / "pop.yaml"
    config.write_text(
        f"pop: fw\nstate_dir: {short_state_dir(tmp_path)}\ndns:\n  watch_interval: 0\n"
        + with_engine(forward, engine)
    )
    return config


@contextlib.contextmanager
def pop(
    tmp_path: Path, forward: str, ports: dict[str, int], engine: str = "builtin"
) -> Iterator[Pop]:
    """serve with pop.yaml's ``forward:`` section as given, its listeners on ``ports``, run by
    ``engine`` (tests/integration/conftest.py's ``engine`` fixture)."""
    config = write_config(tmp_path, forward, engine)
    zones = copy_repo_zones(tmp_path / "zones")
    with removing(short_state_dir(tmp_path)), running_server(zones, config=config) as server:
        p = Pop(server, ports, config, engine)
        if engine == "haproxy":
            # Until serve has read HAProxy's statistics once, every endpoint shows down and no
            # listener as listening: wait for the first reading (once a second).
            wait_for(lambda: p.status()["engine"]["stats_age_seconds"] is not None, POLL,
                     "HAProxy's first statistics")  # fmt: skip
        yield p


def backends_up(p: Pop, *backends: str) -> None:
    """Wait until every endpoint of ``backends`` has passed its first check."""

    def ready() -> bool:
        return all(
            e["up"] for b in p.status()["backends"] if b["name"] in backends for e in b["endpoints"]
        )

    wait_for(ready, POLL, f"endpoints of {backends} up")


# --- HTTP listeners ---------------------------------------------------------------------------


def config(port: int, backends: dict[str, list[EndpointServer]], routes: str, extra: str = "",
           backend_extra: str = "") -> str:  # fmt: skip
    """pop.yaml's forward: with one HTTP listener ``web`` and the given backends."""
    lines = [
        "forward:",
        "  listeners:",
        "    web:",
        f'      bind: "{HOST}:{port}"',
        "      protocol: http",
        f"      routes: {routes}",
    ]
    lines += [f"      {line}" for line in extra.splitlines() if line]
    lines.append("  backends:")
    for name, servers in backends.items():
        addresses = ", ".join(f'{{address: "{HOST}:{s.port}"}}' for s in servers)
        lines += [
            f"    {name}:",
            "      healthcheck: {kind: tcp, interval: 0.2}",
            f"      endpoints: [{addresses}]",
        ]
        lines += [f"      {line}" for line in backend_extra.splitlines() if line]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def proxy(
    tmp_path: Path,
    backends: dict[str, list[EndpointServer]],
    routes: str = "[{backend: app}]",
    extra: str = "",
    backend_extra: str = "",
    engine: str = "builtin",
) -> Iterator[tuple[Pop, str]]:
    """serve with one HTTP listener; yields it and its base URL once every endpoint is up."""
    ports = listener_ports("web")
    forward = config(ports["web"], backends, routes, extra, backend_extra)
    with pop(tmp_path, forward, ports, engine) as p:
        backends_up(p, *backends)
        yield p, f"http://{HOST}:{ports['web']}"


def raw(p: Pop, data: bytes, read_until_close: bool = True) -> bytes:
    """Send ``data`` on a new connection; what comes back until the proxy closes (bounded)."""
    with p.connect("web") as sock:
        sock.sendall(data)
        out = b""
        deadline = time.monotonic() + POLL
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
            if not read_until_close and b"\r\n\r\n" in out:
                break
        return out


def headers_of(body: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in body["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out
