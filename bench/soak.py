#!/usr/bin/env python3
"""Soak: `anycastedge serve` under DNS and HTTP load for minutes, zones reloading and health
flipping all along; its memory must stay bounded.

Run with the project's venv python (`.venv/bin/python bench/soak.py`, default 5 minutes;
`--minutes`). `serve` runs the repo's zones (a copy: example.com's GSLB record `cdn` has its
health check pointed at a TCP endpoint of ours) and an HTTP listener in front of two endpoints
(`python -m anycastedge.lab.backend`, HTTP health checks). For the whole run, at once:

- dnsperf (pinned to CPU 1, rate-capped with ``--qps``) asks the zones' names and types
  (bench/dns_vs_nsd.py's query file) and ``--random-names`` distinct random names (NXDOMAIN, the
  `*.apps` wildcard) and the dynamic `cdn` record: more distinct questions than the answer caches
  hold, so they fill and are cleared over and over;
- wrk (or, without it, a bounded Python client) sends GETs through the HTTP listener;
- every ``--reload-every`` seconds a zone file changes (`www.example.net`'s address) and a reload
  follows, by SIGHUP, by POST /reload or by the zone watcher in turn (SIGHUP and POST /reload also
  apply pop.yaml's `forward:` anew);
- every ``--flip-every`` seconds one HTTP endpoint, or the GSLB check's endpoint, is stopped or
  started again, in turn; after each GSLB flip an ECS query from the EU network checks (a bounded
  poll) that `cdn` follows it.

Reported: dnsperf's queries per second and lost queries, HTTP requests and failed ones (non-2xx
and socket errors), reloads (serve's own count, by result), flips, and serve's resident memory
(VmRSS from /proc/PID/status) at start, after warm-up, in the middle and at the end. Memory must
not grow without bound: growth from the end of warm-up to the end beyond ``--rss-bound`` percent
fails the run (exit status 1). Everything is on loopback and bounded in time; every process is
ours and stopped by its PID; the temp directory is removed.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.edns
import dns.exception
import dns.message
import dns.name
import dns.query
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from dns_vs_nsd import HOST, anycastedge, dnsperf, make_query_file  # noqa: E402
from l7_vs_haproxy import SMALL_BODY, SMALL_PATH, nginx, parse_wrk  # noqa: E402

from tests.support.nsd import zone_yaml_to_bind  # noqa: E402
from tests.support.procs import free_port, stop_process  # noqa: E402

ZONE = "example.com."
EU_SUBNET = "192.0.2.0/24"  # cdn's rule for the eu pool (zones/example.com.yaml)
EU_VALUE = "127.0.0.11"  # the eu pool's value; its check goes to 127.0.0.1 (addresses:)
POLL = 0.25
DNSPERF_GRACE = 60  # seconds past -l after which dnsperf is killed (dns_vs_nsd.dnsperf)
WRK_GRACE = 30.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5.0, help="length of the run (default 5)")
    p.add_argument("--warmup", type=float, default=30.0,
                   help="seconds before the memory baseline is taken (default 30)")  # fmt: skip
    p.add_argument("--qps", type=int, default=5000, help="dnsperf -Q (default 5000)")
    p.add_argument("--clients", type=int, default=10, help="dnsperf -c (default 10)")
    p.add_argument("--outstanding", type=int, default=100, help="dnsperf -q (default 100)")
    p.add_argument("--random-names", type=int, default=150_000,
                   help="distinct random names in the query file (default 150000)")  # fmt: skip
    p.add_argument("--http-connections", type=int, default=8, help="wrk -c (default 8)")
    p.add_argument("--reload-every", type=float, default=5.0, help="seconds (default 5)")
    p.add_argument("--flip-every", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument("--sample-every", type=float, default=5.0, help="RSS samples, seconds (5)")
    p.add_argument("--rss-bound", type=float, default=20.0,
                   help="allowed RSS growth after warm-up, percent (default 20)")  # fmt: skip
    p.add_argument("--cache-size", type=int, default=100_000, help="pop.yaml dns.cache_size")
    args = p.parse_args()
    if not 0.2 <= args.minutes <= 240:
        p.error("--minutes must be between 0.2 and 240")
    if args.warmup >= args.minutes * 60 / 2:
        p.error("--warmup must be shorter than half the run")
    return args


# --- endpoints --------------------------------------------------------------------------------


@dataclass
class Endpoint:
    """An HTTP endpoint we start and stop: nginx serving ``www`` (l7_vs_haproxy.nginx), or
    without nginx `python -m anycastedge.lab.backend` (which answers keep-alive requests ~40 ms
    late: Nagle's algorithm meets delayed ACKs, its head and body being two writes)."""

    name: str
    port: int
    work: Path
    www: Path | None = None  # nginx's root; None: the lab backend
    proc: subprocess.Popen[bytes] | None = None
    nginx: contextlib.ExitStack | None = None
    flips: int = 0
    starts: int = 0

    @property
    def running(self) -> bool:
        return self.proc is not None or self.nginx is not None

    def start(self) -> None:
        self.starts += 1
        if self.www is not None:
            server = (f"    server {{\n        listen {HOST}:{self.port};\n"
                      f"        root {self.www};\n    }}\n")  # fmt: skip
            stack = contextlib.ExitStack()
            base = self.work / f"{self.name}-{self.starts}"  # nginx() wants a new directory
            stack.enter_context(nginx(base, server, self.port, 1, "0-1", 20.0))
            self.nginx = stack
            return
        log = self.work / f"{self.name}.log"
        cmd = [sys.executable, "-m", "anycastedge.lab.backend", self.name, f"{HOST}:{self.port}"]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 20
        while not listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"endpoint {self.name} did not start: {log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.close()  # stops that nginx, by its PID
            self.nginx = None
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def flip(self) -> bool:
        """Stop it if it runs, else start it; whether it runs now."""
        self.flips += 1
        if self.running:
            self.stop()
            return False
        self.start()
        return True


def web_root(work: Path) -> Path:
    """What nginx endpoints serve: l7_vs_haproxy's small file, and /health."""
    www = work / "www"
    www.mkdir()
    www.chmod(0o755)
    for name, body in ((SMALL_PATH.lstrip("/"), SMALL_BODY), ("health", b"ok\n")):
        (www / name).write_bytes(body)
        (www / name).chmod(0o644)
    return www


def listening(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1).close()
    except OSError:
        return False
    return True


# --- serve's configuration and zones ------------------------------------------------------------


def write_zones(served: Path, gslb_port: int) -> None:
    """The repo's zones, cdn's check aimed at ``gslb_port`` and made quicker (every 2 s)."""
    shutil.copytree(REPO / "zones", served)
    path = served / "example.com.yaml"
    text = path.read_text()
    for old, new in (("port: 5300", f"port: {gslb_port}"), ("interval: 5", "interval: 2")):
        assert old in text, f"zones/example.com.yaml has no {old!r} any more"
        text = text.replace(old, new)
    path.write_text(text)


def write_pop(work: Path, served: Path, http_port: int, endpoints: list[Endpoint],
              cache_size: int) -> Path:  # fmt: skip
    pop = {
        "pop": "soak",
        "state_dir": str(work / "state"),
        "dns": {"zones": str(served), "cache_size": cache_size, "watch_interval": 1},
        "forward": {
            "listeners": {
                "web": {"bind": f"{HOST}:{http_port}", "protocol": "http", "access_log": None,
                        "routes": [{"backend": "app"}]},  # fmt: skip
            },
            "backends": {
                "app": {
                    "healthcheck": {"kind": "http", "path": "/health", "interval": 1, "rise": 2,
                                    "fall": 2},  # fmt: skip
                    "endpoints": [{"address": f"{HOST}:{e.port}"} for e in endpoints],
                },
            },
        },
    }
    (work / "state").mkdir()
    config = work / "pop.yaml"
    config.write_text(yaml.safe_dump(pop, sort_keys=False))
    return config


def write_queries(served: Path, work: Path, count: int) -> tuple[Path, int]:
    """The DNS bench's query file for both zones, plus ``count`` random names and `cdn`."""
    lines: list[str] = []
    for zone in ("example.com.", "example.net."):
        bind = zone_yaml_to_bind(served, zone, work / "bind")
        qfile, _ = make_query_file(bind, dns.name.from_text(zone), work / f"q-{zone}")
        lines += qfile.read_text().split()
    pairs = [" ".join(lines[i : i + 2]) for i in range(0, len(lines), 2)]
    rng = random.Random(7)
    for n in range(count):
        label = f"{rng.getrandbits(48):012x}"
        pairs.append(f"{label}.apps.example.com A" if n % 3 == 0 else
                     f"soak-{label}.example.com {rng.choice(['A', 'AAAA', 'TXT'])}")  # fmt: skip
    pairs += ["cdn.example.com A"] * max(1, count // 50)
    rng.shuffle(pairs)
    out = work / "queries"
    out.write_text("\n".join(pairs) + "\n")
    return out, len(pairs)


# --- what runs alongside ------------------------------------------------------------------------


@dataclass
class Load:
    """A load generator in a thread of its own: its result, or why it failed."""

    name: str
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    thread: threading.Thread | None = None

    def run(self, target: Any, *args: Any) -> Load:
        def body() -> None:
            try:
                self.result = target(*args)
            except Exception as exc:  # noqa: BLE001 - reported with the figures
                self.error = f"{type(exc).__name__}: {exc}"

        self.thread = threading.Thread(target=body, name=self.name, daemon=True)
        self.thread.start()
        return self

    def join(self, timeout: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout)
            if self.thread.is_alive():
                self.error = self.error or "still running past its bound"


def wrk_load(port: int, path: str, seconds: int, connections: int) -> dict[str, Any]:
    """wrk for ``seconds`` (killed WRK_GRACE s later if still running): its figures."""
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
           "--timeout", "5s", f"http://{HOST}:{port}{path}"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + WRK_GRACE)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}: {proc.stderr.strip()[:200]}")
    parsed = parse_wrk(proc.stdout)
    failed = 0
    for error in parsed["errors"]:  # "socket errors: read 3, timeout 1" or "12 non-2xx/3xx"
        numbers = [int(w) for w in error.replace(",", " ").split() if w.isdigit()]
        failed += sum(numbers)
    return {"requests": parsed.get("requests", 0), "rps": parsed.get("rps", 0.0),
            "failed": failed, "detail": "; ".join(parsed["errors"]) or "none"}  # fmt: skip


def python_load(port: int, path: str, seconds: int, connections: int) -> dict[str, Any]:
    """Without wrk: ``connections`` threads of keep-alive GETs for ``seconds``, each request
    bounded by a 5 s timeout; a failure is an exception or a status other than 200."""
    counts = {"requests": 0, "failed": 0}
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=5)
        while time.monotonic() < end:
            ok = False
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=5)
            with lock:
                counts["requests"] += 1
                counts["failed"] += not ok
        conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 10)
    return {**counts, "rps": counts["requests"] / seconds, "detail": "python client"}


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def control(cport: int, path: str, method: str = "GET") -> bytes:
    request = urllib.request.Request(f"http://{HOST}:{cport}{path}", method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        data: bytes = response.read()
    return data


def reload_counts(cport: int) -> dict[str, int]:
    """serve's own count of zone loads, by result (its /metrics)."""
    counts = {}
    for line in control(cport, "/metrics").decode().splitlines():
        if line.startswith("anycastedge_dns_reloads_total{") or line.startswith(
            "anycastedge_dns_reloads{"
        ):
            result = line.split('result="', 1)[1].split('"', 1)[0]
            counts[result] = int(float(line.rsplit(" ", 1)[1]))
    return counts


def cdn_from_eu(port: int) -> set[str]:
    """What an EU client (ECS) gets for cdn.example.com A now."""
    query = dns.message.make_query("cdn.example.com.", "A", use_edns=0,
                                   options=[dns.edns.ECSOption.from_text(EU_SUBNET)])  # fmt: skip
    reply = dns.query.udp(query, HOST, port=port, timeout=2)
    return {rr.to_text() for rrset in reply.answer for rr in rrset}


@dataclass
class Reloader:
    """Changes www.example.net's address and reloads, by each trigger in turn."""

    served: Path
    pid: int
    cport: int
    address: int = 101  # 192.0.2.101, as zones/example.net.yaml has it
    done: int = 0
    by: dict[str, int] = field(default_factory=lambda: {"sighup": 0, "post": 0, "watcher": 0})

    def __call__(self) -> None:
        path = self.served / "example.net.yaml"
        text = path.read_text()
        new = self.address + 1 if self.address < 199 else 101
        old_line, new_line = f"value: 192.0.2.{self.address}\n", f"value: 192.0.2.{new}\n"
        assert text.count(old_line) == 1, f"{path} has no single {old_line!r}"
        path.write_text(text.replace(old_line, new_line))
        self.address = new
        kind = ("sighup", "post", "watcher")[self.done % 3]
        if kind == "sighup":
            os.kill(self.pid, signal.SIGHUP)  # serve: ours, by its PID
        elif kind == "post":
            control(self.cport, "/reload", "POST")
        self.by[kind] += 1
        self.done += 1


def main() -> int:
    args = parse_args()
    if shutil.which("dnsperf") is None or shutil.which("taskset") is None:
        print("error: dnsperf and taskset are needed (apt-get install dnsperf util-linux, or "
              "`make bench`)", file=sys.stderr)  # fmt: skip
        return 2
    seconds = int(args.minutes * 60)
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        work.chmod(0o755)  # nginx's worker (nobody, when run as root) reads below it
        www = web_root(work) if shutil.which("nginx") else None
        endpoints = [Endpoint(n, free_port(), work, www) for n in ("web-a", "web-b")]
        gslb = Endpoint("gslb-eu", free_port(), work)  # only connected to (a TCP check)
        for e in (*endpoints, gslb):
            stack.callback(e.stop)
            e.start()
        served = work / "zones"
        write_zones(served, gslb.port)
        http_port = free_port()
        config = write_pop(work, served, http_port, endpoints, args.cache_size)
        qfile, entries = write_queries(served, work, args.random_names)
        cport = free_port()
        pid, port = stack.enter_context(
            anycastedge(served, ZONE, work / "serve.log", config, control_port=cport)
        )
        path = SMALL_PATH if www is not None else "/"
        wait_for(lambda: http_ok(http_port, path), 30, "the HTTP listener to answer 200")
        wait_for(lambda: EU_VALUE in cdn_from_eu(port), 30, "cdn to answer the eu pool")
        rss = {"start": rss_kib(pid)}
        samples: list[tuple[float, int]] = []
        reloads0 = reload_counts(cport)
        use_wrk = shutil.which("wrk") is not None
        print(f"soak: {args.minutes:g} min; serve pid {pid}, DNS {HOST}:{port}, HTTP "
              f"{HOST}:{http_port}; {entries} query lines ({args.random_names} random), dnsperf "
              f"-Q {args.qps}; HTTP load: {'wrk' if use_wrk else 'python client'} "
              f"-c {args.http_connections} to {'nginx' if www else 'lab backend'} endpoints; "
              f"RSS at start {rss['start'] / 1024:.1f} MiB", flush=True)  # fmt: skip
        dns_args = argparse.Namespace(clients=args.clients, outstanding=args.outstanding)
        rate = ["-Q", str(args.qps)]
        dns_load = Load("dnsperf").run(dnsperf, port, qfile, seconds, dns_args, 0, 1000, rate)
        http_load = Load("http").run(wrk_load if use_wrk else python_load, http_port, path,
                                     seconds, args.http_connections)  # fmt: skip
        reloader = Reloader(served, pid, cport)
        flips: list[Endpoint] = [endpoints[1], gslb]
        followed: list[float] = []
        unfollowed = 0
        start = time.monotonic()
        next_reload = start + args.reload_every
        next_flip = start + args.flip_every
        next_sample = start
        while (now := time.monotonic()) < start + seconds:
            if now >= next_sample:
                samples.append((now - start, rss_kib(pid)))
                next_sample += args.sample_every
            if now >= next_reload:
                reloader()
                next_reload += args.reload_every
            if now >= next_flip:
                target = flips[sum(e.flips for e in flips) % len(flips)]
                up = target.flip()
                if target is gslb:
                    began = time.monotonic()
                    try:
                        wait_for(lambda up=up: (EU_VALUE in cdn_from_eu(port)) == up, 20,
                                 "cdn to follow its check")  # fmt: skip
                        followed.append(time.monotonic() - began)
                    except TimeoutError:
                        unfollowed += 1
                next_flip += args.flip_every
            time.sleep(min(POLL, max(0.0, min(next_sample, next_reload, next_flip) - now)))
        dns_load.join(DNSPERF_GRACE + 10)
        http_load.join(WRK_GRACE + 10)
        samples.append((time.monotonic() - start, rss_kib(pid)))
        reloads1 = reload_counts(cport)
        alive = Path(f"/proc/{pid}").exists()
    return report(args, rss, samples, dns_load, http_load, reloader, reloads0, reloads1,
                  endpoints[1].flips, gslb.flips, followed, unfollowed, alive)  # fmt: skip


def http_ok(port: int, path: str) -> bool:
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=2)
        conn.request("GET", path)
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except (OSError, http.client.HTTPException):
        return False


def wait_for(check: Any, timeout: float, what: str) -> None:
    """Poll ``check`` (exceptions count as not yet) until true, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, dns.exception.DNSException):
            if check():
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(POLL)


def report(args: argparse.Namespace, rss: dict[str, int], samples: list[tuple[float, int]],
           dns_load: Load, http_load: Load, reloader: Reloader, before: dict[str, int],
           after: dict[str, int], endpoint_flips: int, gslb_flips: int, followed: list[float],
           unfollowed: int, alive: bool) -> int:  # fmt: skip
    """Print the figures; 1 if memory grew past the bound, a load failed or serve died."""
    mib = 1024.0
    warm = next(kib for t, kib in samples if t >= args.warmup)
    middle = min(samples, key=lambda s: abs(s[0] - samples[-1][0] / 2))[1]
    end = samples[-1][1]
    peak = max(kib for _, kib in samples)
    growth = 100.0 * (end - warm) / warm
    print(f"RSS MiB: start {rss['start'] / mib:.1f}, after warm-up ({args.warmup:g} s) "
          f"{warm / mib:.1f}, middle {middle / mib:.1f}, end {end / mib:.1f}, "
          f"peak {peak / mib:.1f}; growth after warm-up {growth:+.1f}% "
          f"(bound {args.rss_bound:g}%)")  # fmt: skip
    step = max(1, len(samples) // 12)
    series = ", ".join(f"{t:.0f}s {kib / mib:.0f}" for t, kib in samples[::step])
    print(f"  samples (s MiB): {series}")
    failed = False
    if dns_load.error:
        print(f"dnsperf: FAILED: {dns_load.error}")
        failed = True
    else:
        r = dns_load.result
        print(f"dnsperf: {float(r['Queries per second']):.0f} qps, sent {r['Queries sent']}, "
              f"completed {r['Queries completed']}, lost {r['Queries lost']}; "
              f"{r.get('Response codes', '?')}")  # fmt: skip
    if http_load.error:
        print(f"HTTP: FAILED: {http_load.error}")
        failed = True
    else:
        h = http_load.result
        print(f"HTTP: {h['requests']} requests, {h['rps']:.0f}/s, failed {h['failed']} "
              f"({h['detail']})")  # fmt: skip
    done = {k: after.get(k, 0) - before.get(k, 0) for k in ("success", "failure")}
    print(f"reloads: {reloader.done} triggered ({reloader.by}); serve counted {done['success']} "
          f"accepted, {done['failure']} rejected")  # fmt: skip
    mean = sum(followed) / len(followed) if followed else float("nan")
    print(f"flips: HTTP endpoint web-b {endpoint_flips}, GSLB check target {gslb_flips} (cdn "
          f"followed {len(followed)} in {mean:.1f} s on average, {unfollowed} not within 20 s)")
    if not alive:
        print("serve: DIED during the run")
        failed = True
    grew = growth > args.rss_bound
    print(f"memory: {'GREW past the bound' if grew else 'bounded'}")
    return 1 if grew or failed else 0


if __name__ == "__main__":
    sys.exit(main())
