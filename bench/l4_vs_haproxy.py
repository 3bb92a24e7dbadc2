#!/usr/bin/env python3
"""anycastedge's L4 forwarding vs HAProxy and nginx: TCP bulk, TCP connection rate, UDP echo.

Run with the project's venv python (`make bench`, or `.venv/bin/python bench/l4_vs_haproxy.py`;
`--quick` checks the script end to end in well under a minute). Three proxies forward to the same
loopback endpoints, one after the other in the same run: `anycastedge serve` (its `forward:`
listeners), HAProxy (`mode tcp`, `nbthread 1`) and nginx (`stream {}`, one worker). Each proxy is
pinned to CPU 0 with taskset; the endpoints (a Python process: a sendfile sender, a TCP echo, a UDP
echo) and the load generators (Python processes) run on CPU 1. Measured per proxy:

1. TCP bulk: ``--bulk-gib`` GiB through one connection, then the same total through ``--streams``
   parallel connections (GB/s, and the proxy's CPU seconds per GB).
2. TCP connection rate: short connections (connect, send ``--payload`` bytes, read the echo,
   close) from ``--conn-clients`` processes keeping ``--concurrency`` connections each in flight,
   for ``--seconds`` (connections/s and the proxy's CPU us per connection).
3. UDP request/reply: ``--udp-sockets`` client sockets, each keeping ``--window`` datagrams in
   flight to a UDP echo, for ``--seconds`` (replies/s, CPU us per reply). HAProxy 2.6 does not
   proxy UDP: n/a.

Proxy CPU time is utime+stime of the proxy and its child processes from /proc/PID/stat, before and
after each timed run (dns_vs_nsd.cpu_seconds). Every load loop is bounded in time and count; only
127.0.0.1 is contacted; only the processes this script started are stopped, by their PIDs; the
temp directory is removed. A proxy that does not come up (anycastedge before its forwarding tier
exists) is reported as "failed to start" with its log tail, and the others are measured anyway.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import multiprocessing
import multiprocessing.pool
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.context import ForkProcess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from dns_vs_nsd import CLK_TCK, HOST, LOAD_CPU, SERVER_CPU, cpu_seconds  # noqa: E402

from tests.support.procs import free_port, stop_process  # noqa: E402

PROXIES = ("anycastedge", "ae+haproxy", "haproxy", "nginx")
LABELS = {"anycastedge": "anycastedge", "ae+haproxy": "ae+HAProxy", "haproxy": "HAProxy",
          "nginx": "nginx"}  # fmt: skip
GB, GIB, MIB = 10**9, 1 << 30, 1 << 20
HEADER = struct.Struct("!Q")  # a bulk request: the number of bytes the endpoint is to send
DATA_FILE_SIZE = 16 * MIB  # the sender's file, sent over and over (page cache, sendfile)
RECV_BUFFER = 1 * MIB
MAX_BULK_BYTES = 256 * GIB  # the sender refuses to send more on one connection
IO_TIMEOUT = 10.0  # seconds a blocking send/recv may stall before the run is abandoned
CONN_TIMEOUT = 5.0  # seconds one short connection may take before it counts as failed
MAX_CONN_RATE = 100_000  # per second: the connection runs stop after seconds x this many
MAX_UDP_RATE = 500_000  # per second: the UDP runs stop after seconds x this many replies
UDP_RESEND = 0.2  # seconds without a reply on a socket before its window is sent again
UDP_PAYLOAD = 64
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")  # Debian: libnginx-mod-stream
CTX = multiprocessing.get_context("fork")
APT_HINT = "apt-get install -y --no-install-recommends haproxy nginx libnginx-mod-stream util-linux"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bulk-gib", type=float, help="GiB per bulk run (default 4; --quick 0.25)")
    p.add_argument("--streams", type=int, default=8, help="parallel bulk connections (default 8)")
    p.add_argument("--seconds", type=float, help="per connection/UDP run (default 10; --quick 2)")
    p.add_argument("--warmup", type=float, help="untimed conn/UDP run first (default 1; --quick 0)")
    p.add_argument("--conn-clients", type=int, default=4, help="connection client processes (4)")
    p.add_argument("--concurrency", type=int, default=16, help="connections in flight per client")
    p.add_argument("--payload", type=int, default=100, help="bytes echoed per connection (100)")
    p.add_argument("--udp-clients", type=int, default=2, help="UDP client processes (default 2)")
    p.add_argument("--udp-sockets", type=int, default=8, help="UDP client sockets in all (8)")
    p.add_argument("--window", type=int, default=16, help="datagrams in flight per UDP socket")
    p.add_argument("--start-timeout", type=float, help="seconds for a proxy to forward (20; 10)")
    p.add_argument("--rounds", type=int, default=1, help="runs per test, fastest kept (1)")
    p.add_argument("--only", default=",".join(PROXIES), help="comma-separated subset of proxies")
    p.add_argument("--quick", action="store_true", help="small sizes, short runs: a check")
    args = p.parse_args(argv)
    quick = args.quick
    for name, full, short in (
        ("bulk_gib", 4.0, 0.25),
        ("seconds", 10.0, 2.0),
        ("warmup", 1.0, 0.0),
        ("start_timeout", 20.0, 10.0),
    ):
        if getattr(args, name) is None:
            setattr(args, name, short if quick else full)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(PROXIES))
    if unknown or not args.only:
        p.error(f"--only takes some of {', '.join(PROXIES)} (got {unknown or 'nothing'})")
    if not 0 < args.bulk_gib * GIB <= MAX_BULK_BYTES:
        p.error(f"--bulk-gib must be above 0 and at most {MAX_BULK_BYTES // GIB}")
    if not 0 < args.seconds <= 600 or not 0 <= args.warmup <= 60:
        p.error("--seconds must be in (0, 600], --warmup in [0, 60]")
    counts = ("rounds", "streams", "conn_clients", "concurrency", "udp_clients", "udp_sockets")
    for name in (*counts, "window"):
        if not 1 <= getattr(args, name) <= 1024:
            p.error(f"--{name.replace('_', '-')} must be between 1 and 1024")
    if not 1 <= args.payload <= 65536:
        p.error("--payload must be between 1 and 65536")
    if args.udp_sockets < args.udp_clients:
        p.error("--udp-sockets must be at least --udp-clients")
    return args


# --- the endpoints: one process on LOAD_CPU -----------------------------------------------------


def set_io_timeout(sock: socket.socket, seconds: float) -> None:
    """A blocking socket whose send/recv give up (EAGAIN) after ``seconds`` (SO_*TIMEO): bounded
    without Python's own timeout machinery, which polls before every call."""
    sock.settimeout(None)
    tv = struct.pack("ll", int(seconds), int((seconds % 1) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


def recv_exact(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def bulk_send(conn: socket.socket, fd: int) -> None:
    """One bulk connection: read the 8-byte count, sendfile that many bytes, half-close, wait
    (bounded) for the peer to close. A health check connects and closes: nothing is sent."""
    with conn:
        try:
            set_io_timeout(conn, IO_TIMEOUT)
            header = recv_exact(conn, HEADER.size)
            if header is None:
                return
            count = min(HEADER.unpack(header)[0], MAX_BULK_BYTES)
            sent, offset = 0, 0
            while sent < count:
                size = min(count - sent, DATA_FILE_SIZE - offset)
                n = os.sendfile(conn.fileno(), fd, offset, size)
                if n <= 0:
                    return
                sent += n
                offset = (offset + n) % DATA_FILE_SIZE
            conn.shutdown(socket.SHUT_WR)
            conn.recv(1)
        except OSError:
            return


def bulk_acceptor(listener: socket.socket, data_file: Path) -> None:
    fd = os.open(data_file, os.O_RDONLY)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=bulk_send, args=(conn, fd), daemon=True).start()


def udp_echo(sock: socket.socket) -> None:
    while True:
        data, peer = sock.recvfrom(65536)
        with contextlib.suppress(OSError):
            sock.sendto(data, peer)


def tcp_echo_loop(echo: socket.socket, check: socket.socket) -> None:
    """The TCP echo and the UDP echo's health-check port (accepts and closes), in one selector
    loop. The echo writes back everything it reads, and closes after a read that ends with a
    newline (a request answered, then closed by the server, as HTTP/1.0 does) or at the peer's
    EOF. The server closing first leaves TIME_WAIT on the listening side of each connection,
    not on the ephemeral ports that every new connection must find free."""
    sel = selectors.DefaultSelector()
    for listener, kind in ((echo, "echo"), (check, "check")):
        listener.setblocking(False)
        sel.register(listener, selectors.EVENT_READ, kind)
    while True:
        for key, _ in sel.select(timeout=1.0):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            if key.data in ("echo", "check"):
                while True:
                    try:
                        conn, _ = sock.accept()
                    except OSError:
                        break
                    if key.data == "check":
                        conn.close()
                    else:
                        conn.setblocking(False)
                        sel.register(conn, selectors.EVENT_READ, None)
                continue
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                with contextlib.suppress(OSError):
                    sock.send(data)
            if not data or data.endswith(b"\n"):
                sel.unregister(sock)
                sock.close()


def serve_endpoints(
    bulk: socket.socket,
    echo: socket.socket,
    check: socket.socket,
    udp: socket.socket,
    data_file: Path,
) -> None:
    """The endpoints process (forked): pinned to LOAD_CPU, serves until SIGTERM."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops us
    os.sched_setaffinity(0, {LOAD_CPU})
    threading.Thread(target=bulk_acceptor, args=(bulk, data_file), daemon=True).start()
    threading.Thread(target=udp_echo, args=(udp,), daemon=True).start()
    tcp_echo_loop(echo, check)


@dataclass(frozen=True, slots=True)
class Endpoints:
    bulk: int  # TCP: sends the count of bytes asked for
    echo: int  # TCP echo
    udp: int  # UDP echo
    udp_check: int  # TCP port of the UDP echo process, for health checks
    pid: int


def listening(kind: int = socket.SOCK_STREAM) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind((HOST, 0))
    if kind == socket.SOCK_STREAM:
        sock.listen(4096)
    return sock


@contextlib.contextmanager
def endpoints(work: Path) -> Iterator[Endpoints]:
    """The endpoints process, its sockets bound here first (no port race); stopped by PID."""
    data_file = work / "bulk.data"
    data_file.write_bytes(bytes(range(256)) * (DATA_FILE_SIZE // 256))
    socks = [listening(), listening(), listening(), listening(socket.SOCK_DGRAM)]
    ports = [int(s.getsockname()[1]) for s in socks]
    proc: ForkProcess = CTX.Process(
        target=serve_endpoints, args=(*socks, data_file), name="l4-endpoints", daemon=True
    )
    proc.start()
    for sock in socks:
        sock.close()
    try:
        assert proc.pid is not None
        bulk, echo, check, udp = ports
        yield Endpoints(bulk=bulk, echo=echo, udp=udp, udp_check=check, pid=proc.pid)
    finally:
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGTERM)  # type: ignore[arg-type]
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(10)


# --- load generators: forked processes pinned to LOAD_CPU ---------------------------------------


def pin_load() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.sched_setaffinity(0, {LOAD_CPU})


def bulk_client(port: int, nbytes: int, limit: float) -> tuple[int, float, float, str]:
    """Ask the sender for ``nbytes`` through the proxy and read them all (recv_into one buffer),
    for at most ``limit`` seconds: (bytes read, start, end, error)."""
    view = memoryview(bytearray(RECV_BUFFER))
    got, error = 0, ""
    start = time.monotonic()
    deadline = start + limit
    try:
        with socket.create_connection((HOST, port), timeout=IO_TIMEOUT) as sock:
            set_io_timeout(sock, IO_TIMEOUT)
            sock.sendall(HEADER.pack(nbytes))
            while True:
                n = sock.recv_into(view)
                if n == 0:
                    break
                got += n
                if got > nbytes or time.monotonic() > deadline:
                    error = "over the time limit" if got <= nbytes else "more bytes than asked"
                    break
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}"
    if not error and got != nbytes:
        error = f"closed after {got} of {nbytes} bytes"
    return got, start, time.monotonic(), error


class Conn:
    __slots__ = ("sock", "got", "since", "connected")

    def __init__(self, sock: socket.socket, since: float) -> None:
        self.sock, self.got, self.since, self.connected = sock, 0, since, False


def conn_client(
    port: int, seconds: float, max_conns: int, concurrency: int, size: int
) -> tuple[int, int, float, float, str]:
    """Short connections, ``concurrency`` in flight (one selector loop): connect, send ``size``
    bytes ending with a newline, read them back until the server closes, close. Stops after
    ``seconds`` or ``max_conns`` connections: (completed, failed, start, end, last error)."""
    payload = b"q" * (size - 1) + b"\n"
    sel = selectors.DefaultSelector()
    start = now = time.monotonic()
    deadline = start + seconds
    opened = done = failed = 0
    last_error = ""
    live: dict[socket.socket, Conn] = {}
    next_sweep = start + 0.5

    def finish(conn: Conn, error: str = "") -> None:
        nonlocal done, failed, last_error
        sel.unregister(conn.sock)
        conn.sock.close()
        del live[conn.sock]
        if error:
            failed, last_error = failed + 1, error
        else:
            done += 1

    while now < deadline and done + failed < max_conns:
        while len(live) < concurrency and opened < max_conns:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            opened += 1
            code = sock.connect_ex((HOST, port))
            if code not in (0, errno.EINPROGRESS):
                sock.close()
                failed, last_error = failed + 1, f"connect: {os.strerror(code)}"
                continue
            live[sock] = Conn(sock, now)
            sel.register(sock, selectors.EVENT_WRITE, live[sock])
        for key, _ in sel.select(timeout=0.2):
            conn: Conn = key.data
            if not conn.connected:
                code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    finish(conn, f"connect: {os.strerror(code)}")
                    continue
                try:
                    conn.sock.send(payload)
                except OSError as exc:
                    finish(conn, f"send: {exc}")
                    continue
                conn.connected = True
                sel.modify(conn.sock, selectors.EVENT_READ, conn)
                continue
            try:
                chunk = conn.sock.recv(size)
            except BlockingIOError:
                continue
            except OSError as exc:
                finish(conn, f"recv: {exc}")
                continue
            if chunk:
                conn.got += len(chunk)
                if conn.got > size:
                    finish(conn, f"{conn.got} bytes echoed, {size} sent")
            elif conn.got == size:
                finish(conn)
            else:
                finish(conn, f"closed after {conn.got} of {size} bytes")
        now = time.monotonic()
        if now >= next_sweep:
            next_sweep = now + 0.5
            for conn in [c for c in live.values() if now - c.since > CONN_TIMEOUT]:
                finish(conn, f"no echo within {CONN_TIMEOUT:.0f} s")
    end = time.monotonic()
    for conn in list(live.values()):  # cut off by the deadline: neither done nor failed
        sel.unregister(conn.sock)
        conn.sock.close()
    sel.close()
    return done, failed, start, end, last_error


def udp_client(
    port: int, seconds: float, max_replies: int, sockets: int, window: int
) -> tuple[int, int, float, float, str]:
    """``sockets`` connected UDP sockets, each keeping ``window`` datagrams in flight (a reply
    sends the next; a socket silent for UDP_RESEND seconds sends its window again). Stops after
    ``seconds`` or ``max_replies`` replies: (replies, datagrams sent, start, end, last error)."""
    payload = b"u" * UDP_PAYLOAD
    sel = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    replies = sent = 0
    last_error = ""
    start = now = time.monotonic()
    deadline = start + seconds
    quiet_since: dict[socket.socket, float] = {}

    def burst(sock: socket.socket, count: int) -> None:
        nonlocal sent, last_error
        for _ in range(count):
            try:
                sock.send(payload)
            except OSError as exc:
                last_error = f"send: {exc}"
                return
            sent += 1

    try:
        for _ in range(sockets):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(sock)
            sock.connect((HOST, port))
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
            quiet_since[sock] = now
            burst(sock, window)
        next_check = now + UDP_RESEND / 4
        while now < deadline and replies < max_replies:
            for key, _ in sel.select(timeout=UDP_RESEND / 4):
                sock = key.fileobj  # type: ignore[assignment]
                while replies < max_replies:
                    try:
                        sock.recv(65536)
                    except BlockingIOError:
                        break
                    except OSError as exc:  # ICMP unreachable: nobody listens on the port
                        last_error = f"recv: {exc}"
                        break
                    replies += 1
                    burst(sock, 1)
                quiet_since[sock] = now
            now = time.monotonic()
            if now >= next_check:
                next_check = now + UDP_RESEND / 4
                for sock in socks:
                    if now - quiet_since[sock] > UDP_RESEND:
                        quiet_since[sock] = now
                        burst(sock, window)
    finally:
        end = time.monotonic()
        sel.close()
        for sock in socks:
            sock.close()
    return replies, sent, start, end, last_error


def run_pool(fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]], limit: float) -> list[Any]:
    """``fn`` over ``jobs`` in as many forked processes pinned to LOAD_CPU; all of them are
    terminated (their PIDs, by multiprocessing) if they have not returned within ``limit``."""
    with CTX.Pool(len(jobs), initializer=pin_load) as pool:
        return list(pool.starmap_async(fn, jobs).get(timeout=limit))


# --- the proxies --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ports:
    bulk: int
    echo: int
    udp: int | None  # None: the proxy does not do UDP


class ProxyFailed(Exception):
    pass


def log_tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


def probe(ports: Ports) -> None:
    """One round trip through each listener (raises OSError, or ProxyFailed on a wrong reply)."""
    with socket.create_connection((HOST, ports.echo), timeout=2.0) as sock:
        sock.sendall(b"ping\n")
        if recv_exact(sock, 5) != b"ping\n":
            raise ProxyFailed("echo listener: wrong or no reply")
    with socket.create_connection((HOST, ports.bulk), timeout=2.0) as sock:
        sock.sendall(HEADER.pack(4))
        if recv_exact(sock, 4) is None:
            raise ProxyFailed("bulk listener: no data")
    if ports.udp is not None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.5)
            sock.connect((HOST, ports.udp))
            sock.send(b"ping")
            if sock.recv(64) != b"ping":
                raise ProxyFailed("UDP listener: wrong reply")


def wait_forwarding(proc: subprocess.Popen[bytes], ports: Ports, timeout: float) -> None:
    """Poll until every listener forwards a round trip, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = "nothing tried"
    while True:
        if proc.poll() is not None:
            raise ProxyFailed(f"exited with status {proc.returncode}")
        try:
            probe(ports)
            return
        except (OSError, ProxyFailed) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise ProxyFailed(f"listeners not forwarding within {timeout:.0f} s ({last})")
        time.sleep(0.2)


@contextlib.contextmanager
def running(
    name: str,
    cmd: list[str],
    log: Path,
    ready: Callable[[subprocess.Popen[bytes]], None],
    env: dict[str, str] | None = None,
    cpus: str = str(SERVER_CPU),
) -> Iterator[int]:
    """``cmd`` pinned to ``cpus`` (its output to ``log``); yields its PID once ``ready(proc)``
    returns. Raises ProxyFailed with the log's tail if it raises that; always stops it (by its
    PID)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["taskset", "-c", cpus, *cmd],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            ready(proc)
        except ProxyFailed as exc:
            raise ProxyFailed(f"{exc}; {name} log:\n{log_tail(log)}") from None
        yield proc.pid
    finally:
        stop_process(proc)


def check_config(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise ProxyFailed(f"{what} rejected its configuration:\n{proc.stdout}{proc.stderr}")


def free_ports(udp: bool) -> Ports:
    return Ports(free_port(), free_port(), free_port() if udp else None)


@contextlib.contextmanager
def anycastedge_proxy(
    work: Path, ep: Endpoints, timeout: float, engine: str = "builtin"
) -> Iterator[tuple[int, Ports]]:
    """`anycastedge serve -c pop.yaml` with the forward listeners of docs (and its DNS server on a
    free port, serving one tiny zone); ``engine: haproxy``: serve renders them for HAProxy and
    runs it (no UDP listener, which that engine refuses; the CPU time counted is serve's tree)."""
    haproxy = engine == "haproxy"
    base = work / ("ae-haproxy" if haproxy else "anycastedge")
    (base / "zones").mkdir(parents=True)
    (base / "state").mkdir()
    zone = {
        "": {"type": "NS", "values": ["ns1.bench.test."]},
        "ns1": {"type": "A", "value": "127.0.0.1"},
    }
    (base / "zones" / "bench.test.yaml").write_text(yaml.safe_dump(zone, sort_keys=False))
    ports = free_ports(udp=not haproxy)

    def backend(port: int, check_port: int | None = None) -> dict[str, Any]:
        check: dict[str, Any] = {"kind": "tcp"}
        if check_port is not None:
            check["port"] = check_port
        return {
            "balance": "round_robin",
            "healthcheck": check,
            "endpoints": [{"address": f"{HOST}:{port}"}],
        }

    pop = {
        "pop": "bench",
        "state_dir": str(base / "state"),
        "dns": {
            "listen": [f"{HOST}:{free_port()}"],
            "zones": str(base / "zones"),
            "watch_interval": 0,
        },
        "forward": {
            "listeners": {
                "bulk": {"bind": f"{HOST}:{ports.bulk}", "protocol": "tcp", "backend": "bulk"},
                "echo": {"bind": f"{HOST}:{ports.echo}", "protocol": "tcp", "backend": "echo"},
            },
            "backends": {"bulk": backend(ep.bulk), "echo": backend(ep.echo)},
        },
    }
    if haproxy:
        pop["forward"]["engine"] = "haproxy"
    else:
        pop["forward"]["listeners"]["uecho"] = {
            "bind": f"{HOST}:{ports.udp}", "protocol": "udp", "backend": "uecho"
        }
        pop["forward"]["backends"]["uecho"] = backend(ep.udp, ep.udp_check)
    config = base / "pop.yaml"
    config.write_text(yaml.safe_dump(pop, sort_keys=False))
    cmd = [sys.executable, "-m", "anycastedge", "serve", "-c", str(config)]
    cmd += ["--control", f"{HOST}:{free_port()}"]  # not the default 9053: may be in use
    env = {k: v for k, v in os.environ.items() if k != "ANYCASTEDGE_CONFIG"}
    forwarding = functools.partial(wait_forwarding, ports=ports, timeout=timeout)
    with running("anycastedge", cmd, base / "serve.log", forwarding, env) as pid:
        yield pid, ports


def haproxy_config(ports: Ports, ep: Endpoints) -> str:
    sections = []
    for name, listen, target in (("bulk", ports.bulk, ep.bulk), ("echo", ports.echo, ep.echo)):
        sections.append(
            f"frontend {name}\n    bind {HOST}:{listen}\n    default_backend {name}_servers\n\n"
            f"backend {name}_servers\n    server {name}1 {HOST}:{target} check inter 2s\n"
        )
    return (
        "global\n    nbthread 1\n    maxconn 4000\n\n"
        "defaults\n    mode tcp\n    maxconn 4000\n    timeout connect 5s\n"
        "    timeout client 60s\n    timeout server 60s\n\n" + "\n".join(sections)
    )


@contextlib.contextmanager
def haproxy_proxy(work: Path, ep: Endpoints, timeout: float) -> Iterator[tuple[int, Ports]]:
    """HAProxy in the foreground (-db), one thread, TCP only, after `haproxy -c` passes."""
    base = work / "haproxy"
    base.mkdir()
    ports = free_ports(udp=False)
    config = base / "haproxy.cfg"
    config.write_text(haproxy_config(ports, ep))
    check_config(["haproxy", "-c", "-f", str(config)], "haproxy -c")
    forwarding = functools.partial(wait_forwarding, ports=ports, timeout=timeout)
    with running("haproxy", ["haproxy", "-f", str(config), "-db"], base / "log", forwarding) as pid:
        yield pid, ports


def nginx_config(base: Path, ports: Ports, ep: Endpoints) -> str:
    assert ports.udp is not None
    load = f"load_module {STREAM_MODULE};\n" if STREAM_MODULE.exists() else ""
    return (
        f"{load}worker_processes 1;\ndaemon off;\nmaster_process on;\n"
        f"pid {base}/nginx.pid;\nerror_log {base}/error.log warn;\n"
        "worker_rlimit_nofile 16384;\n"
        "events {\n    worker_connections 8192;\n}\n"
        "stream {\n"
        f"    server {{ listen {HOST}:{ports.bulk}; proxy_pass {HOST}:{ep.bulk}; }}\n"
        f"    server {{ listen {HOST}:{ports.echo}; proxy_pass {HOST}:{ep.echo}; }}\n"
        f"    server {{ listen {HOST}:{ports.udp} udp; proxy_pass {HOST}:{ep.udp}; "
        "proxy_timeout 10s; }\n"
        "}\n"
    )


@contextlib.contextmanager
def nginx_proxy(work: Path, ep: Endpoints, timeout: float) -> Iterator[tuple[int, Ports]]:
    """nginx in the foreground (daemon off), one worker, `stream {}` (TCP and UDP), everything it
    writes inside the temp dir, after `nginx -t` passes. As root its worker runs as nobody (no
    `user` directive): the directories it may need are made world-readable."""
    base = work / "nginx"
    base.mkdir()
    base.chmod(0o755)
    ports = free_ports(udp=True)
    config = base / "nginx.conf"
    config.write_text(nginx_config(base, ports, ep))
    config.chmod(0o644)
    flags = ["-c", str(config), "-p", f"{base}/", "-e", str(base / "error.log")]
    check_config(["nginx", "-t", *flags], "nginx -t")
    forwarding = functools.partial(wait_forwarding, ports=ports, timeout=timeout)
    with running("nginx", ["nginx", *flags], base / "log", forwarding) as pid:
        yield pid, ports


STARTERS = {
    "anycastedge": anycastedge_proxy,
    "ae+haproxy": functools.partial(anycastedge_proxy, engine="haproxy"),
    "haproxy": haproxy_proxy,
    "nginx": nginx_proxy,
}


# --- measuring ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Result:
    test: str
    rate: float = float("nan")  # GB/s, connections/s or replies/s
    cpu: float = float("nan")  # proxy CPU seconds during the timed run
    per_unit: float = float("nan")  # CPU s/GB, or CPU us per connection / reply
    busy: float = float("nan")  # the proxy's CPU time / the run's wall time
    note: str = ""


@dataclass(slots=True)
class ProxyResults:
    proxy: str
    failed: str = ""  # why it was not measured at all
    tests: dict[str, Result] = field(default_factory=dict)


TESTS = {
    "bulk1": ("TCP bulk, 1 conn", "GB/s", "CPU s/GB"),
    "bulkN": ("TCP bulk, N conns", "GB/s", "CPU s/GB"),
    "conn": ("TCP conn/s", "conn/s", "CPU us/conn"),
    "udp": ("UDP req/s", "req/s", "CPU us/req"),
}


def cpu_busy_jiffies() -> dict[str, int]:
    """Busy time (all but idle and iowait) per CPU so far, in clock ticks, from /proc/stat."""
    busy = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if re.match(r"cpu\d", line):
            name, *ticks = line.split()
            values = [int(t) for t in ticks]
            busy[name] = sum(values) - values[3] - values[4]
    return busy


class Meter:
    """The proxy's CPU time during a run, and how busy CPU 0 and CPU 1 were with other work
    than the proxy, the endpoints and the load generators (other users of a shared machine)."""

    def __init__(self, pid: int, endpoints_pid: int) -> None:
        self.pid, self.endpoints_pid = pid, endpoints_pid
        self.proxy = cpu_seconds(pid)
        self.ours = cpu_seconds(endpoints_pid) + self.children()
        self.cpus = cpu_busy_jiffies()
        self.start = time.monotonic()

    @staticmethod
    def children() -> float:
        """CPU time of our waited-for children (the load generators, once their pool is shut)."""
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    def stop(self) -> tuple[float, str]:
        """(proxy CPU seconds, "others: CPU0 x %, CPU1 y %")."""
        proxy = cpu_seconds(self.pid) - self.proxy
        ours = cpu_seconds(self.endpoints_pid) + self.children() - self.ours
        cpus = cpu_busy_jiffies()
        wall = max(1e-9, time.monotonic() - self.start)
        busy = {n: (cpus[n] - self.cpus.get(n, 0)) / CLK_TCK for n in cpus}
        on0 = busy.get(f"cpu{SERVER_CPU}", 0.0) - proxy
        on1 = busy.get(f"cpu{LOAD_CPU}", 0.0) - ours
        return (
            proxy,
            f"others: CPU{SERVER_CPU} {max(0.0, on0) / wall:.0%}, "
            f"CPU{LOAD_CPU} {max(0.0, on1) / wall:.0%}",
        )


def measure_bulk(
    pid: int, ep_pid: int, port: int, streams: int, args: argparse.Namespace
) -> Result:
    total = int(args.bulk_gib * GIB)
    each = total // streams
    limit = max(30.0, args.bulk_gib * 60)  # 60 s per GiB: even 20 MB/s finishes
    meter = Meter(pid, ep_pid)
    runs = run_pool(bulk_client, [(port, each, limit)] * streams, limit + 30)
    cpu, others = meter.stop()
    got = sum(r[0] for r in runs)
    elapsed = max(r[2] for r in runs) - min(r[1] for r in runs)
    errors = sorted({r[3] for r in runs if r[3]})
    gb = got / GB
    return Result(
        TESTS["bulk1" if streams == 1 else "bulkN"][0].replace("N", str(streams)),
        rate=gb / elapsed if elapsed > 0 else float("nan"),
        cpu=cpu,
        per_unit=cpu / gb if gb else float("nan"),
        busy=cpu / elapsed if elapsed > 0 else float("nan"),
        note="; ".join([f"{got / GIB:.2f} GiB in {elapsed:.2f} s", others, *errors]),
    )


def measure_conn(
    pid: int, ep_pid: int, port: int, args: argparse.Namespace, seconds: float
) -> Result:
    clients = args.conn_clients
    bound = max(1, int(seconds * MAX_CONN_RATE) // clients)
    job = (port, seconds, bound, args.concurrency, args.payload)
    meter = Meter(pid, ep_pid)
    runs = run_pool(conn_client, [job] * clients, seconds + CONN_TIMEOUT + 30)
    cpu, others = meter.stop()
    done, failed = sum(r[0] for r in runs), sum(r[1] for r in runs)
    return pooled_result("conn", runs, done, f"{done} done, {failed} failed", cpu, others)


def measure_udp(
    pid: int, ep_pid: int, port: int, args: argparse.Namespace, seconds: float
) -> Result:
    clients = args.udp_clients
    bound = max(1, int(seconds * MAX_UDP_RATE) // clients)
    per, extra = divmod(args.udp_sockets, clients)
    shares = [per + (i < extra) for i in range(clients)]
    jobs = [(port, seconds, bound, n, args.window) for n in shares]
    meter = Meter(pid, ep_pid)
    runs = run_pool(udp_client, jobs, seconds + 30)
    cpu, others = meter.stop()
    replies, sent = sum(r[0] for r in runs), sum(r[1] for r in runs)
    note = f"{replies} replies to {sent} datagrams"
    return pooled_result("udp", runs, replies, note, cpu, others)


def pooled_result(
    test: str, runs: list[Any], count: int, note: str, cpu: float, others: str
) -> Result:
    """A Result from client processes' runs, each (count, other count, start, end, error)."""
    elapsed = max(r[3] for r in runs) - min(r[2] for r in runs)
    errors = sorted({r[4] for r in runs if r[4]})
    if errors:
        note += f" ({'; '.join(errors)[:120]})"
    return Result(
        TESTS[test][0],
        rate=count / elapsed if elapsed > 0 else float("nan"),
        cpu=cpu,
        per_unit=1e6 * cpu / count if count else float("nan"),
        busy=cpu / elapsed if elapsed > 0 else float("nan"),
        note=f"{note}; {others}",
    )


def attempt(key: str, fn: Callable[[], Result], rounds: int = 1) -> Result:
    """``fn`` ``rounds`` times, the fastest kept (on a shared machine other work only slows a
    run down); a test that fails is reported as such, and the others still run."""
    results: list[Result] = []
    for _ in range(rounds):
        try:
            results.append(fn())
        except (OSError, multiprocessing.TimeoutError, RuntimeError) as exc:
            results.append(Result(TESTS[key][0], note=f"failed: {type(exc).__name__}: {exc}"))
    measured = [r for r in results if r.rate == r.rate]
    if not measured:
        return results[-1]
    best = max(measured, key=lambda r: r.rate)
    if rounds > 1:
        fmt = "{:.2f}" if best.rate < 100 else "{:.0f}"
        rates = "/".join("failed" if r.rate != r.rate else fmt.format(r.rate) for r in results)
        best.note += f"; rounds: {rates}"
    return best


def measure_proxy(name: str, work: Path, ep: Endpoints, args: argparse.Namespace) -> ProxyResults:
    out = ProxyResults(name)
    print(f"{LABELS[name]}: starting", flush=True)
    rounds = args.rounds
    try:
        with STARTERS[name](work, ep, args.start_timeout) as (pid, ports):
            tests = out.tests
            tests["bulk1"] = attempt(
                "bulk1", lambda: measure_bulk(pid, ep.pid, ports.bulk, 1, args), rounds
            )
            tests["bulkN"] = attempt(
                "bulkN", lambda: measure_bulk(pid, ep.pid, ports.bulk, args.streams, args), rounds
            )
            if args.warmup > 0:
                attempt("conn", lambda: measure_conn(pid, ep.pid, ports.echo, args, args.warmup))
            tests["conn"] = attempt(
                "conn", lambda: measure_conn(pid, ep.pid, ports.echo, args, args.seconds), rounds
            )
            udp = ports.udp
            if udp is None:
                tests["udp"] = Result(TESTS["udp"][0], note="n/a: no UDP proxying in HAProxy 2.6")
            else:
                if args.warmup > 0:
                    attempt("udp", lambda: measure_udp(pid, ep.pid, udp, args, args.warmup))
                tests["udp"] = attempt(
                    "udp", lambda: measure_udp(pid, ep.pid, udp, args, args.seconds), rounds
                )
    except ProxyFailed as exc:
        out.failed = f"failed to start: {exc}"
    for result in out.tests.values():
        print(f"  {format_result(result)}", flush=True)
    if out.failed:
        print(f"  {out.failed.splitlines()[0]}", flush=True)
    return out


# --- reporting ----------------------------------------------------------------------------------


def format_result(r: Result) -> str:
    if r.rate != r.rate:  # nan: not measured
        return f"{r.test:<20} {r.note}"
    rate = f"{r.rate:.2f}" if r.rate < 100 else f"{r.rate:,.0f}"
    per = f"{r.per_unit:.3f}" if r.per_unit < 100 else f"{r.per_unit:,.0f}"
    return f"{r.test:<20} {rate:>10} {r.cpu:>8.2f} {per:>10} {r.busy:>6.0%}   {r.note}"


def print_table(results: Sequence[ProxyResults]) -> None:
    print()
    head = f"{'proxy':<12} {'test':<20} {'rate':>10} {'CPU s':>8} {'CPU/unit':>10} {'busy':>6}"
    print(f"{head}   (rate: GB/s, conn/s, req/s; CPU/unit: s/GB, us/conn, us/req)")
    for pr in results:
        if pr.failed:
            first, _, rest = pr.failed.partition("\n")
            print(f"{LABELS[pr.proxy]:<12} {first}")
            for line in rest.splitlines():
                print(f"{'':<14}| {line}")
            continue
        for r in pr.tests.values():
            print(f"{LABELS[pr.proxy]:<12} {format_result(r)}")


TARGETS = {"bulk1": 0.8, "bulkN": 0.8, "conn": 0.3}  # anycastedge / HAProxy and / nginx


def ratio_line(ours: ProxyResults, base: ProxyResults, streams: int) -> str:
    label = f"{LABELS[ours.proxy]}/{LABELS[base.proxy]}"
    if ours.failed or base.failed:
        who = ours if ours.failed else base
        return f"{label}: n/a ({LABELS[who.proxy]} failed to start)"
    parts = []
    for key in ("bulk1", "bulkN", "conn", "udp"):
        a, b = ours.tests.get(key), base.tests.get(key)
        name = {"bulk1": "bulk 1 conn", "bulkN": f"bulk {streams} conns", "conn": "conn/s",
                "udp": "UDP req/s"}[key]  # fmt: skip
        if a is None or b is None or a.rate != a.rate or b.rate != b.rate or not b.rate:
            if key != "udp":
                parts.append(f"{name} n/a")
            continue
        text = f"{name} {a.rate / b.rate:.2f}x"
        if key in TARGETS and ours.proxy == "anycastedge":
            met = "met" if a.rate / b.rate >= TARGETS[key] else "NOT met"
            text += f" (target {TARGETS[key]}x: {met})"
        if a.per_unit == a.per_unit and b.per_unit == b.per_unit and b.per_unit:
            text += f", CPU/unit {a.per_unit / b.per_unit:.2f}x"
        parts.append(text)
    return f"{label}: " + "; ".join(parts)


# --- main ---------------------------------------------------------------------------------------


def missing_tools(selected: Sequence[str]) -> list[str]:
    tools = {"ae+haproxy": "haproxy", "anycastedge": None}
    wanted = ["taskset", *{tools.get(p, p) for p in selected} - {None}]
    missing = [t for t in sorted(wanted) if t and shutil.which(t) is None]
    if "nginx" in selected and shutil.which("nginx"):
        built = subprocess.run(["nginx", "-V"], capture_output=True, text=True, timeout=30).stderr
        if "--with-stream=dynamic" in built and not STREAM_MODULE.exists():
            missing.append("libnginx-mod-stream (nginx's stream module)")
    return missing


def version(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except OSError:
        return "?"
    found = re.search(r"(?:version|nginx/)\s*v?([\w.+~-]+)", proc.stdout + proc.stderr)
    return found.group(1) if found else "?"


def can_run(missing: list[str], apt_hint: str, cpus_for: str) -> bool:
    """Whether the tools and the two CPUs a bench needs are there; if not, says so on stderr."""
    if missing:
        print(
            f"error: {', '.join(missing)} not installed; on Debian: {apt_hint} "
            "(or run `make bench`; --only picks the targets to measure)",
            file=sys.stderr,
        )
        return False
    if not {SERVER_CPU, LOAD_CPU} <= os.sched_getaffinity(0):
        print(f"error: needs CPUs {SERVER_CPU} and {LOAD_CPU} ({cpus_for})", file=sys.stderr)
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not can_run(missing_tools(args.only), APT_HINT, "proxy / load"):
        return 2
    versions = [f"Python {sys.version.split()[0]}"]
    if "haproxy" in args.only:
        versions.append(f"HAProxy {version(['haproxy', '-v'])}")
    if "nginx" in args.only:
        versions.append(f"nginx {version(['nginx', '-v'])}")
    print(
        f"proxy on CPU {SERVER_CPU}, endpoints and load on CPU {LOAD_CPU}; bulk "
        f"{args.bulk_gib:g} GiB through 1 and {args.streams} connections; conn/s: "
        f"{args.conn_clients} x {args.concurrency} in flight, {args.payload} B echoed, "
        f"{args.seconds:g} s; UDP: {args.udp_sockets} sockets x {args.window} in flight, "
        f"{UDP_PAYLOAD} B, {args.seconds:g} s; {', '.join(versions)}",
        flush=True,
    )
    results: list[ProxyResults] = []
    with tempfile.TemporaryDirectory(prefix="bench-l4-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # nginx's worker (nobody, when run as root) reads below it
        with endpoints(work) as ep:
            for name in args.only:
                results.append(measure_proxy(name, work, ep, args))
    print_table(results)
    by_name = {r.proxy: r for r in results}
    print()
    for ours, base in (("anycastedge", "haproxy"), ("anycastedge", "nginx"), ("nginx", "haproxy")):
        if ours in by_name and base in by_name:
            print(ratio_line(by_name[ours], by_name[base], args.streams))
    print(
        "targets: anycastedge/HAProxy TCP bulk >= 0.8x, connection rate >= 0.3x (the same against "
        f"nginx). busy: the proxy's CPU time / wall time. The load and endpoints share CPU "
        f"{LOAD_CPU}: a proxy well below 100 % busy ran at their ceiling, so compare CPU per unit."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
