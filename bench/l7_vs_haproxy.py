#!/usr/bin/env python3
"""anycastedge's HTTP reverse proxy vs HAProxy and nginx (and no proxy at all) under wrk.

Run with the project's venv python (`make bench`, or `.venv/bin/python bench/l7_vs_haproxy.py`;
`--quick` checks the script end to end in about a minute). One backend, nginx serving two static
files from the temp dir (13 bytes and 1 MiB), is reached in turn through: `anycastedge serve` (an
http listener of its `forward:` section), HAProxy (`mode http`, `http-reuse safe`), nginx
(`proxy_pass` to an `upstream` with `keepalive 32`), and directly (the ceiling). The servers (the
proxy and the backend) are pinned to CPU 0 and wrk to CPU 1 with taskset. Measured per target:

1. small keep-alive: ``wrk -t1 -c{--connections} --latency`` for the 13-byte file;
2. 1 MiB responses over ``--big-connections`` keep-alive connections;
3. a new connection per request (``-H "Connection: close"``), the 13-byte file.

For each: requests/s, p99 latency (wrk's --latency distribution), MiB/s for the 1 MiB run, and
the proxy's CPU microseconds per request (utime+stime of the proxy's processes from
/proc/PID/stat, before and after; dns_vs_nsd.cpu_seconds), with both as a ratio to HAProxy's.
With ``--workers 1,2`` (the default) the proxies are measured again with 2 threads or processes
(HAProxy ``nbthread``, nginx ``worker_processes``, anycastedge ``forward: {workers: N}`` if its
configuration accepts the key) on CPUs 0..N-1; on a 2-CPU machine wrk then competes with them.

Bounded: wrk always runs with -d (and is killed 30 s after it should have ended), every wait for
readiness is a bounded poll. Only 127.0.0.1 is contacted; only the processes this script started
are stopped, by their PIDs; the temp directory is removed. anycastedge's http listener may be
refused by its configuration (before the L7 tier lands): it is then reported as not available
and the others are measured anyway.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from dns_vs_nsd import CLK_TCK, HOST, LOAD_CPU, SERVER_CPU, cpu_seconds  # noqa: E402
from l4_vs_haproxy import (  # noqa: E402
    ProxyFailed,
    can_run,
    check_config,
    cpu_busy_jiffies,
    running,
    version,
)

from tests.support.procs import free_port  # noqa: E402

TARGETS = ("anycastedge", "ae+haproxy", "haproxy-same", "haproxy", "nginx", "direct")
LABELS = {"anycastedge": "anycastedge", "ae+haproxy": "ae+HAProxy", "haproxy-same": "HAProxy=",
          "haproxy": "HAProxy", "nginx": "nginx", "direct": "direct"}  # fmt: skip
MIB = 1 << 20
SMALL_PATH, SMALL_BODY = "/hello.txt", b"hello, world\n"
BIG_PATH, BIG_SIZE = "/1m.bin", MIB
RUNS = {  # key: (label, path, keep-alive)
    "small": ("13 B keep-alive", SMALL_PATH, True),
    "big": ("1 MiB keep-alive", BIG_PATH, True),
    "close": ("13 B conn/request", SMALL_PATH, False),
}
WRK_TIMEOUT = "5s"  # wrk's per-request timeout (a slower reply counts as a timeout error)
WRK_GRACE = 30.0  # seconds past -d after which a wrk still running is killed
PROBE_TIMEOUT = 2.0
APT_HINT = "apt-get install -y --no-install-recommends wrk haproxy nginx util-linux"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, help="seconds per wrk run (default 10; --quick 2)")
    p.add_argument("--warmup", type=int, help="untimed wrk run first, seconds (1; --quick 0)")
    p.add_argument("--connections", type=int, default=50, help="wrk -c, 13 B runs (default 50)")
    p.add_argument("--big-connections", type=int, default=8, help="wrk -c, 1 MiB run (8)")
    p.add_argument("--workers", default="1,2", help="comma-separated proxy worker counts (1,2)")
    p.add_argument("--backend-cpu", type=int, default=SERVER_CPU, help="the backend's CPU (0)")
    p.add_argument("--start-timeout", type=float, help="seconds for a proxy to answer (20; 10)")
    p.add_argument("--only", default=",".join(TARGETS), help="comma-separated subset of targets")
    p.add_argument("--quick", action="store_true", help="short runs: a check of the script")
    args = p.parse_args(argv)
    for name, full, short in (("duration", 10, 2), ("warmup", 1, 0), ("start_timeout", 20.0, 10.0)):
        if getattr(args, name) is None:
            setattr(args, name, short if args.quick else full)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(TARGETS))
    if unknown or not args.only:
        p.error(f"--only takes some of {', '.join(TARGETS)} (got {unknown or 'nothing'})")
    try:
        args.workers = sorted({int(n) for n in args.workers.split(",") if n.strip()})
    except ValueError:
        p.error("--workers takes comma-separated counts, e.g. 1,2")
    cpus = len(os.sched_getaffinity(0))
    if not args.workers or not all(1 <= n <= cpus for n in args.workers):
        p.error(f"--workers counts must be between 1 and the {cpus} CPUs available")
    if not 1 <= args.duration <= 600 or not 0 <= args.warmup <= 60:
        p.error("--duration must be in [1, 600] seconds, --warmup in [0, 60]")
    if not 1 <= args.connections <= 4096 or not 1 <= args.big_connections <= 4096:
        p.error("--connections and --big-connections must be between 1 and 4096")
    if args.backend_cpu not in os.sched_getaffinity(0):
        p.error(f"--backend-cpu {args.backend_cpu} is not available")
    return args


def cpu_list(workers: int) -> str:
    """The servers' CPUs for ``workers`` threads or processes: 0..N-1."""
    return str(SERVER_CPU) if workers == 1 else f"{SERVER_CPU}-{SERVER_CPU + workers - 1}"


def wrk_cpu(workers: int) -> int:
    """wrk's CPU: LOAD_CPU with one worker, else the first CPU past the proxy's if there is one
    (on a 2-CPU machine there is not: wrk shares the proxy's last CPU)."""
    if workers == 1:
        return LOAD_CPU
    return min(SERVER_CPU + workers, max(os.sched_getaffinity(0)))


# --- processes ----------------------------------------------------------------------------------


def http_get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=PROBE_TIMEOUT)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def answering(port: int, timeout: float) -> Callable[[subprocess.Popen[bytes]], None]:
    """What ``running`` waits for: a proxy answering on ``port``."""
    return functools.partial(wait_answering, port=port, timeout=timeout)


def wait_answering(proc: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    """Poll until a GET of the small file on ``port`` returns 200 and its body (the proxy is up
    and its backend healthy), for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = "nothing tried"
    while True:
        if proc.poll() is not None:
            raise ProxyFailed(f"exited with status {proc.returncode}")
        try:
            status, body = http_get(port, SMALL_PATH)
            if status == 200 and body == SMALL_BODY:
                return
            last = f"HTTP {status}, {len(body)} bytes"
        except (OSError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise ProxyFailed(f"no 200 for GET {SMALL_PATH} within {timeout:.0f} s ({last})")
        time.sleep(0.2)


def nginx_common(base: Path, workers: int) -> str:
    """The top of an nginx config: foreground, ``workers`` worker processes, and every file it
    writes (pid, logs, temp files) inside ``base``: Debian's build puts them under /var."""
    temps = "".join(
        f"    {kind}_temp_path {base}/{kind}_temp;\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"worker_processes {workers};\ndaemon off;\nmaster_process on;\n"
        f"pid {base}/nginx.pid;\nerror_log {base}/error.log warn;\n"
        "worker_rlimit_nofile 16384;\n"
        "events {\n    worker_connections 8192;\n}\n"
        "http {\n    access_log off;\n    default_type application/octet-stream;\n"
        "    keepalive_requests 1000000;\n    keepalive_timeout 60s;\n" + temps
    )


@contextlib.contextmanager
def nginx(
    base: Path, server: str, port: int, workers: int, cpus: str, timeout: float
) -> Iterator[int]:
    """nginx in the foreground with one ``server`` block, after `nginx -t` passes. As root its
    worker runs as nobody (no `user` directive): what it reads is world-readable."""
    base.mkdir()
    base.chmod(0o755)
    config = base / "nginx.conf"
    config.write_text(nginx_common(base, workers) + server + "}\n")
    config.chmod(0o644)
    flags = ["-c", str(config), "-p", f"{base}/", "-e", str(base / "error.log")]
    check_config(["nginx", "-t", *flags], "nginx -t")
    with running("nginx", ["nginx", *flags], base / "log", answering(port, timeout),
                 cpus=cpus) as pid:  # fmt: skip
        yield pid


@dataclass(frozen=True, slots=True)
class Backend:
    port: int
    pid: int


@contextlib.contextmanager
def backend(work: Path, args: argparse.Namespace) -> Iterator[Backend]:
    """The backend: nginx, one worker, serving the 13-byte and the 1 MiB file (sendfile)."""
    www = work / "www"
    www.mkdir()
    www.chmod(0o755)
    for path, data in ((SMALL_PATH, SMALL_BODY), (BIG_PATH, bytes(range(256)) * (BIG_SIZE // 256))):
        target = www / path.lstrip("/")
        target.write_bytes(data)
        target.chmod(0o644)
    port = free_port()
    server = (
        f"    server {{\n        listen {HOST}:{port} backlog=4096;\n        root {www};\n"
        "        sendfile on;\n        tcp_nopush on;\n    }\n"
    )
    cpus = str(args.backend_cpu)
    with nginx(work / "backend", server, port, 1, cpus, args.start_timeout) as pid:
        yield Backend(port, pid)


@dataclass(frozen=True, slots=True)
class Started:
    pid: int  # the proxy (its CPU time: this process and its descendants)
    port: int


class NotAvailable(Exception):
    """The target cannot run here (anycastedge's configuration refuses a key): not a failure."""


def anycastedge_pop(
    base: Path, port: int, be: Backend, workers: int, engine: str = "builtin"
) -> Path:
    """pop.yaml: one http listener routing everything to one backend (and DNS on a free port,
    serving one tiny zone, the control endpoint on another); ``engine: haproxy``: serve renders
    it for HAProxy and runs that (workers are its threads)."""
    (base / "zones").mkdir(parents=True)
    (base / "state").mkdir()
    zone = {
        "": {"type": "NS", "values": ["ns1.bench.test."]},
        "ns1": {"type": "A", "value": "127.0.0.1"},
    }
    (base / "zones" / "bench.test.yaml").write_text(yaml.safe_dump(zone, sort_keys=False))
    forward: dict[str, Any] = {}
    if engine != "builtin":
        forward["engine"] = engine
    if workers > 1:
        forward["workers"] = workers
    forward["listeners"] = {
        "web": {
            "bind": f"{HOST}:{port}",
            "protocol": "http",
            "access_log": None,
            "routes": [{"backend": "app"}],
        }
    }
    forward["backends"] = {
        "app": {
            "balance": "round_robin",
            "healthcheck": {"kind": "tcp", "interval": 1},
            "endpoints": [{"address": f"{HOST}:{be.port}"}],
        }
    }
    pop = {
        "pop": "bench",
        "state_dir": str(base / "state"),
        "dns": {"listen": [f"{HOST}:{free_port()}"], "zones": str(base / "zones")},
        "control": {"listen": f"{HOST}:{free_port()}"},
        "forward": forward,
    }
    config = base / "pop.yaml"
    config.write_text(yaml.safe_dump(pop, sort_keys=False))
    return config


def anycastedge_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "ANYCASTEDGE_CONFIG"}


def config_refusal(config: Path) -> list[str]:
    """`anycastedge forward check -c` on ``config``: its errors (none: accepted)."""
    cmd = [sys.executable, "-m", "anycastedge", "forward", "check", "-c", str(config)]
    proc = subprocess.run(
        cmd, cwd=REPO, env=anycastedge_env(), capture_output=True, text=True, timeout=60
    )
    if proc.returncode == 0:
        return []
    lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
    errors = [line.split(": ", 1)[-1] for line in lines if line.startswith("ERROR")]
    return errors or lines[-3:] or [f"exit status {proc.returncode}"]


@contextlib.contextmanager
def anycastedge_proxy(
    base: Path, be: Backend, workers: int, timeout: float, engine: str = "builtin"
) -> Iterator[Started]:
    """`anycastedge serve` (with engine: haproxy, serve and the HAProxy it runs: the CPU time
    counted is every process of serve's tree)."""
    port = free_port()
    config = anycastedge_pop(base, port, be, workers, engine)
    refused = config_refusal(config)
    about_workers = [e for e in refused if "workers" in e]
    if workers > 1 and about_workers:
        raise NotAvailable(f"workers: not supported ({'; '.join(about_workers)})")
    if refused:
        raise NotAvailable(f"ours: not available (config refused: {'; '.join(refused)})")
    cmd = [sys.executable, "-m", "anycastedge", "serve", "-c", str(config)]
    log = base / "serve.log"
    with contextlib.ExitStack() as stack:  # stops serve however the measurements end
        try:
            pid = stack.enter_context(
                running(
                    "anycastedge", cmd, log, answering(port, timeout), anycastedge_env(),
                    cpus=cpu_list(workers),
                )  # fmt: skip
            )
        except ProxyFailed as exc:  # the key passed the check, but serve did not start with it
            if workers > 1:
                raise NotAvailable(f"workers: not supported (serve failed: {exc})") from None
            raise
        yield Started(pid, port)


def haproxy_config(port: int, be: Backend, workers: int) -> str:
    return (
        f"global\n    nbthread {workers}\n    maxconn 4000\n\n"
        "defaults\n    mode http\n    http-reuse safe\n    option http-keep-alive\n"
        "    maxconn 4000\n    timeout connect 5s\n    timeout client 60s\n"
        "    timeout server 60s\n    timeout http-keep-alive 60s\n\n"
        f"frontend web\n    bind {HOST}:{port}\n    default_backend app\n\n"
        f"backend app\n    server app1 {HOST}:{be.port} check inter 2s\n"
    )


# What an operator would write by hand for the job ae+HAProxy's pop.yaml asks (the client's
# identity to the endpoint, safe L7 retries, passive ejection): the peer that shows whether
# rendering costs anything, beside the minimal configuration above (HAProxy's ceiling).
SAME_JOB_FRONTEND = (
    "    option forwardfor\n"
    "    http-request del-header Forwarded\n"
    "    http-request set-header X-Real-IP %[src]\n"
    "    http-request set-header X-Forwarded-Proto http\n"
    '    http-request add-header Forwarded "for=%[src];host=%[req.hdr(host)];proto=http"\n'
)
SAME_JOB_BACKEND = (
    "    retries 2\n    option redispatch 1\n    retry-on conn-failure empty-response\n"
    "    http-request disable-l7-retry unless METH_GET or METH_HEAD\n"
)


def haproxy_same_config(port: int, be: Backend, workers: int) -> str:
    return (
        haproxy_config(port, be, workers)
        .replace("    default_backend app\n", SAME_JOB_FRONTEND + "    default_backend app\n")
        .replace("\nbackend app\n", "\nbackend app\n" + SAME_JOB_BACKEND)
        .replace("check inter 2s", "check inter 2s observe layer7 error-limit 5 on-error mark-down")
    )


@contextlib.contextmanager
def haproxy_proxy(
    base: Path, be: Backend, workers: int, timeout: float, same_job: bool = False
) -> Iterator[Started]:
    """HAProxy in the foreground (-db), ``workers`` threads, no logging, after `haproxy -c`;
    ``same_job``: the configuration doing what ae+HAProxy's pop.yaml asks, hand-written."""
    base.mkdir()
    port = free_port()
    config = base / "haproxy.cfg"
    make = haproxy_same_config if same_job else haproxy_config
    config.write_text(make(port, be, workers))
    check_config(["haproxy", "-c", "-f", str(config)], "haproxy -c")
    cmd = ["haproxy", "-f", str(config), "-db"]
    with running("haproxy", cmd, base / "log", answering(port, timeout),
                 cpus=cpu_list(workers)) as pid:  # fmt: skip
        yield Started(pid, port)


@contextlib.contextmanager
def nginx_proxy(base: Path, be: Backend, workers: int, timeout: float) -> Iterator[Started]:
    """nginx `proxy_pass` to an upstream keeping 32 idle connections (HTTP/1.1, the client's
    Connection header dropped), ``workers`` worker processes. `proxy_max_temp_file_size 0`: a
    response larger than the buffers is passed on as the client reads it, not spooled to disk."""
    port = free_port()
    server = (
        f"    upstream app {{\n        server {HOST}:{be.port};\n        keepalive 32;\n    }}\n"
        f"    server {{\n        listen {HOST}:{port} backlog=4096;\n"
        "        location / {\n            proxy_pass http://app;\n"
        "            proxy_http_version 1.1;\n"
        '            proxy_set_header Connection "";\n'
        "            proxy_max_temp_file_size 0;\n        }\n    }\n"
    )
    with nginx(base, server, port, workers, cpu_list(workers), timeout) as pid:
        yield Started(pid, port)


@contextlib.contextmanager
def direct(base: Path, be: Backend, workers: int, timeout: float) -> Iterator[Started]:
    """No proxy: wrk talks to the backend (its CPU is the "proxy" CPU of this row)."""
    yield Started(be.pid, be.port)


STARTERS = {
    "anycastedge": anycastedge_proxy,
    "ae+haproxy": functools.partial(anycastedge_proxy, engine="haproxy"),
    "haproxy-same": functools.partial(haproxy_proxy, same_job=True),
    "haproxy": haproxy_proxy,
    "nginx": nginx_proxy,
    "direct": direct,
}


# --- wrk ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Result:
    run: str
    rps: float = float("nan")  # requests/s
    p99_ms: float = float("nan")
    mib_s: float = float("nan")  # response bytes/s (wrk's Transfer/sec), MiB
    cpu_us: float = float("nan")  # the proxy's CPU microseconds per request
    busy: float = float("nan")  # the servers' (proxy and backend) CPU time / wall time
    note: str = ""


TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}  # to milliseconds
SIZE_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


def parse_wrk(text: str) -> dict[str, Any]:
    """What we use of wrk's output: requests done, requests/s, p99 (ms), transfer (bytes/s) and
    the error counters (socket errors, non-2xx/3xx responses)."""
    out: dict[str, Any] = {}
    if m := re.search(r"^\s*(\d+) requests in ([\d.]+)(\w+), ([\d.]+)(\w+) read", text, re.M):
        out["requests"] = int(m.group(1))
    if m := re.search(r"^Requests/sec:\s*([\d.]+)", text, re.M):
        out["rps"] = float(m.group(1))
    if m := re.search(r"^Transfer/sec:\s*([\d.]+)(\w+)", text, re.M):
        out["bytes_s"] = float(m.group(1)) * SIZE_UNITS.get(m.group(2), float("nan"))
    if m := re.search(r"^\s*99(?:\.0+)?%\s+([\d.]+)(\w+)", text, re.M):
        out["p99_ms"] = float(m.group(1)) * TIME_UNITS.get(m.group(2), float("nan"))
    errors = []
    if m := re.search(r"Socket errors: (.*)", text):  # "connect 0, read 3, write 0, timeout 0"
        parts = [part.strip() for part in m.group(1).split(",")]
        nonzero = [part for part in parts if not part.endswith(" 0")]
        if nonzero:
            errors.append("socket errors: " + ", ".join(nonzero))
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        errors.append(f"{m.group(1)} non-2xx/3xx")
    out["errors"] = errors
    return out


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk(port: int, run: str, seconds: int, connections: int, cpu: int) -> tuple[str, float, float]:
    """One wrk run (killed WRK_GRACE s after -d if still running): (output, wall s, wrk CPU s)."""
    _, path, keepalive = RUNS[run]
    cmd = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    cmd += ["--latency", "--timeout", WRK_TIMEOUT]
    if not keepalive:
        cmd += ["-H", "Connection: close"]
    cmd.append(f"http://{HOST}:{port}{path}")
    before, start = children_cpu(), time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + WRK_GRACE)
    wall, used = time.monotonic() - start, children_cpu() - before
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}: {proc.stderr.strip()[:200]}")
    return proc.stdout, wall, used


def measure(
    run: str, started: Started, be: Backend, workers: int, args: argparse.Namespace
) -> Result:
    """One timed wrk run: the proxy's (and the backend's) CPU time around it, and how much CPU
    time anything else on the machine took meanwhile (other users of a shared machine)."""
    connections = args.big_connections if run == "big" else args.connections
    result = Result(RUNS[run][0])
    proxy0 = cpu_seconds(started.pid)
    backend0 = cpu_seconds(be.pid) if be.pid != started.pid else 0.0
    cpus0 = cpu_busy_jiffies()
    try:
        text, wall, wrk_cpu_s = wrk(started.port, run, args.duration, connections,
                                    wrk_cpu(workers))  # fmt: skip
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        result.note = f"failed: {type(exc).__name__}: {exc}"
        return result
    proxy = cpu_seconds(started.pid) - proxy0
    backend_cpu = cpu_seconds(be.pid) - backend0 if be.pid != started.pid else 0.0
    cpus1 = cpu_busy_jiffies()
    busy_all = sum(cpus1[n] - cpus0.get(n, 0) for n in cpus1) / CLK_TCK
    others = max(0.0, busy_all - proxy - backend_cpu - wrk_cpu_s) / wall
    parsed = parse_wrk(text)
    if "rps" not in parsed or "requests" not in parsed:
        result.note = "failed: wrk's output not understood: " + " ".join(text.split())[:200]
        return result
    requests = parsed["requests"]
    result.rps = parsed["rps"]
    result.p99_ms = parsed.get("p99_ms", float("nan"))
    if run == "big":
        result.mib_s = parsed.get("bytes_s", float("nan")) / MIB
    result.cpu_us = 1e6 * proxy / requests if requests else float("nan")
    result.busy = (proxy + backend_cpu) / wall
    notes = [f"{requests} req"]
    if be.pid != started.pid and requests:
        notes.append(f"backend {1e6 * backend_cpu / requests:.0f} us/req")
    notes += [f"others {others:.0%} of a CPU", *parsed["errors"]]
    result.note = ", ".join(notes)
    return result


@dataclass(slots=True)
class TargetResults:
    target: str
    workers: int
    unavailable: str = ""  # why it was not measured at all
    runs: dict[str, Result] = field(default_factory=dict)


def measure_target(
    name: str, workers: int, work: Path, be: Backend, args: argparse.Namespace
) -> TargetResults:
    out = TargetResults(name, workers)
    print(f"{LABELS[name]}, {workers} worker(s): starting", flush=True)
    base = work / f"{name}-{workers}"
    try:
        with STARTERS[name](base, be, workers, args.start_timeout) as started:
            if args.warmup > 0:
                with contextlib.suppress(OSError, RuntimeError, subprocess.TimeoutExpired):
                    wrk(started.port, "small", args.warmup, args.connections, wrk_cpu(workers))
            for run in RUNS:
                out.runs[run] = measure(run, started, be, workers, args)
                print(f"  {format_result(out.runs[run])}", flush=True)
    except NotAvailable as exc:
        out.unavailable = str(exc)
    except ProxyFailed as exc:
        out.unavailable = f"failed to start: {exc}"
    if out.unavailable:
        print(f"  {out.unavailable.splitlines()[0]}", flush=True)
    return out


# --- reporting ----------------------------------------------------------------------------------


def number(value: float, digits: int = 0) -> str:
    return "-" if value != value else f"{value:,.{digits}f}"


def format_result(r: Result, base: Result | None = None) -> str:
    if r.rps != r.rps:
        return f"{r.run:<18} {r.note}"
    ratio = cpu_ratio = "-"
    if base is not None and base.rps == base.rps and base.rps:
        ratio = f"{r.rps / base.rps:.2f}x"
        if r.cpu_us == r.cpu_us and base.cpu_us == base.cpu_us and base.cpu_us:
            cpu_ratio = f"{r.cpu_us / base.cpu_us:.2f}x"
    p99 = number(r.p99_ms, 2 if r.p99_ms < 100 else 0)
    return (
        f"{r.run:<18} {number(r.rps):>9} {p99:>8} {number(r.mib_s):>7} "
        f"{number(r.cpu_us, 1):>7} {number(r.busy * 100):>4}% {ratio:>7} {cpu_ratio:>7}   {r.note}"
    )


def print_table(results: Sequence[TargetResults], args: argparse.Namespace) -> None:
    head = (
        f"{'target':<12} {'run':<18} {'req/s':>9} {'p99 ms':>8} {'MiB/s':>7} {'us/req':>7} "
        f"{'busy':>5} {'xHAProxy':>7} {'CPU x':>7}"
    )
    for workers in args.workers:
        rows = [r for r in results if r.workers == workers]
        if not rows:
            continue
        compete = "" if wrk_cpu(workers) >= SERVER_CPU + workers else ": wrk competes with them"
        print(
            f"\n{workers} worker(s): proxies on CPU {cpu_list(workers)}, backend on CPU "
            f"{args.backend_cpu}, wrk on CPU {wrk_cpu(workers)}{compete}"
        )
        print(head)
        haproxy = next((r for r in rows if r.target == "haproxy"), None)
        for tr in rows:
            label = LABELS[tr.target]
            if tr.unavailable:
                first, _, rest = tr.unavailable.partition("\n")
                print(f"{label:<12} {first}")
                for line in rest.splitlines():
                    print(f"{'':<14}| {line}")
                continue
            for key, r in tr.runs.items():
                base = haproxy.runs.get(key) if haproxy and not haproxy.unavailable else None
                print(f"{label:<12} {format_result(r, base)}")


# --- main ---------------------------------------------------------------------------------------


def missing_tools(selected: Sequence[str]) -> list[str]:
    haproxy = {"haproxy", "ae+haproxy", "haproxy-same"} & set(selected)
    needed = ["taskset", "wrk", "nginx", *(["haproxy"] if haproxy else [])]
    return [t for t in needed if shutil.which(t) is None]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not can_run(missing_tools(args.only), APT_HINT, "servers / wrk"):
        return 2
    versions = [f"Python {sys.version.split()[0]}", f"nginx {version(['nginx', '-v'])}"]
    if "haproxy" in args.only:
        versions.append(f"HAProxy {version(['haproxy', '-v'])}")
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=30)
    found = re.search(r"wrk (\S+)", wrk_version.stdout + wrk_version.stderr)
    versions.append(f"wrk {found.group(1) if found else '?'}")
    print(
        f"servers on CPU {SERVER_CPU}, wrk on CPU {LOAD_CPU}; wrk -t1 for {args.duration} s per "
        f"run: 13 B over {args.connections} keep-alive connections, 1 MiB over "
        f"{args.big_connections}, 13 B with a new connection per request over "
        f"{args.connections}; workers {','.join(map(str, args.workers))}; {', '.join(versions)}",
        flush=True,
    )
    results: list[TargetResults] = []
    with tempfile.TemporaryDirectory(prefix="bench-l7-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # nginx's worker (nobody, when run as root) reads below it
        try:
            with backend(work, args) as be:
                for workers in args.workers:
                    for name in args.only:
                        if name == "direct" and workers > 1:
                            continue  # the backend has one worker whatever the proxies have
                        results.append(measure_target(name, workers, work, be, args))
        except ProxyFailed as exc:
            print(f"error: the backend (nginx) did not start: {exc}", file=sys.stderr)
            return 1
    print_table(results, args)
    print(
        "\nus/req: the proxy's CPU time (all its processes) per request; busy: the proxy's and "
        "the backend's CPU time / wall time (100 % per CPU they have: CPU-bound); xHAProxy: "
        "req/s ratio to HAProxy's (same workers); CPU x: us/req ratio (lower is cheaper). The "
        "proxy shares CPU 0 with the backend (and, with 2 workers on 2 CPUs, CPU 1 with wrk): "
        "us/req is the figure to compare. ae+HAProxy: pop.yaml's forward: with engine: haproxy, "
        "rendered and run by serve; HAProxy=: the same job (client identity headers, safe L7 "
        "retries, passive ejection) in a hand-written config; HAProxy: a minimal hand-written "
        "config (the ceiling). direct: no proxy (us/req is the backend's). Other "
        "work on the machine shows as 'others' in the notes: figures on a busy machine are noisy."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
