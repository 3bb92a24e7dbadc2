#!/usr/bin/env python3
"""anycastedge vs NSD 4 under dnsperf: the same zone, the same queries, the same time budget.

Run with the project's venv python (`make bench`, or `.venv/bin/python bench/dns_vs_nsd.py`).
Each server runs alone, pinned to CPU 0 with taskset, and dnsperf to CPU 1; every run is bounded
by time (-l) and by count (-n). Prints queries per second and server CPU time per answered query
(utime+stime of the server and its child processes, from /proc, before and after the run). Only
127.0.0.1 is ever contacted. NSD gets the zone as octoDNS writes it for BIND (tests/support/nsd.py).

``--rrl-cost`` measures response rate limiting instead of NSD: anycastedge with ``dns.rrl`` off,
then on with nothing exempt (dnsperf's 127.0.0.1 is exempt by default) and limits no query
reaches, so that every answer takes the limiter's whole path and none is limited; alternated
``--rounds`` times, with the on/off ratio of qps and of CPU per answered query.

``--workers 1,2`` measures anycastedge alone with each number of DNS processes (pop.yaml
``dns: {workers: N}``) instead: the server may run on both CPUs (taskset -c 0,1), dnsperf stays
pinned to CPU 1, and the CPU time is the sum over serve and its workers.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.name
import dns.rdatatype
import dns.zone

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.nsd import (  # noqa: E402
    NsdNotInstalled,
    NsdServer,
    find_nsd,
    wait_until_answers,
    zone_yaml_to_bind,
)
from tests.support.procs import free_port, stop_process  # noqa: E402

HOST = "127.0.0.1"
SERVER_CPU, LOAD_CPU = 0, 1
MAX_QPS_BOUND = 300_000  # -n is chosen so dnsperf stops after at most this rate x seconds
CLK_TCK = os.sysconf("SC_CLK_TCK")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--zones", type=Path, default=REPO / "zones", help="zone YAML directory")
    p.add_argument("--zone", help="zone to serve and query (default: the first in --zones)")
    p.add_argument("--seconds", type=int, default=10, help="dnsperf -l per server (default 10)")
    p.add_argument("--warmup", type=int, default=1, help="untimed dnsperf run first (seconds)")
    p.add_argument("--clients", type=int, default=20, help="dnsperf -c (default 20)")
    p.add_argument("--outstanding", type=int, default=200, help="dnsperf -q (default 200)")
    p.add_argument("--queries", type=Path, help="dnsperf query file (default: drawn from zone)")
    p.add_argument(
        "--rrl-cost",
        action="store_true",
        help="instead of NSD: anycastedge with dns.rrl off vs on (nothing limited); the ratio",
    )
    p.add_argument("--rounds", type=int, default=2, help="--rrl-cost: off/on pairs (default 2)")
    p.add_argument(
        "--workers",
        help="comma-separated dns.workers counts to compare (e.g. 1,2): anycastedge only, the "
        "server on CPUs 0-1",
    )
    return p.parse_args()


def missing_tools() -> list[str]:
    missing = [t for t in ("dnsperf", "taskset") if shutil.which(t) is None]
    try:
        find_nsd()
    except NsdNotInstalled:
        missing.append("nsd")
    return missing


def make_query_file(zone_file: Path, origin: dns.name.Name, out: Path) -> tuple[Path, str]:
    """A dnsperf file: every name and type in the zone, plus ~10% NXDOMAIN and ~10% NODATA."""
    zone = dns.zone.from_file(str(zone_file), origin, relativize=False, check_origin=False)
    positive, nodata = [], []
    for name, node in sorted(zone.nodes.items()):
        text = name.to_text()
        if name.labels[0] == b"*":  # a wildcard: ask for a name it synthesizes
            text = "bench-wild." + name.parent().to_text()
        for rds in node.rdatasets:
            positive.append(f"{text} {dns.rdatatype.to_text(rds.rdtype)}")
        nodata.append(f"{text} HINFO")
    extra = max(1, len(positive) // 8)
    rng = random.Random(53)
    negative = [f"bench-nx-{i}.{origin.to_text()} A" for i in range(extra)]
    lines = positive + rng.sample(nodata, min(extra, len(nodata))) + negative
    rng.shuffle(lines)
    out.write_text("\n".join(lines) + "\n")
    mix = f"{len(positive)} positive, {min(extra, len(nodata))} NODATA, {extra} NXDOMAIN"
    return out, mix


def process_tree(pid: int) -> list[int]:
    """``pid`` and every descendant still alive (NSD answers in a child process)."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        if not Path(f"/proc/{current}").exists():
            continue
        tree.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in task.read_text().split()]
    return tree


def cpu_seconds(pid: int) -> float:
    """utime+stime of ``pid`` and every descendant still alive (NSD answers in a child)."""
    total = 0
    for current in process_tree(pid):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / CLK_TCK


def dnsperf(
    port: int,
    qfile: Path,
    seconds: int,
    args: argparse.Namespace,
    messages: int = 0,
    runs: int | None = None,
    extra: tuple[str, ...] | list[str] = (),
) -> dict[str, str]:
    """dnsperf bounded by -l and -n; ``messages`` > 0: ``qfile`` holds that many wire messages
    (``dnsperf -B``), else one ``name TYPE`` per line. ``runs`` is -n, the passes over the file
    (default: as many as MAX_QPS_BOUND x ``seconds`` queries need; 1: every query asked once).
    ``extra``: more dnsperf options (``-Q RATE``)."""
    if runs is None:
        entries = messages or max(1, sum(1 for _ in qfile.open()))
        runs = max(1, math.ceil(MAX_QPS_BOUND * seconds / entries))
    cmd = ["taskset", "-c", str(LOAD_CPU), "dnsperf", "-s", HOST, "-p", str(port)]
    if messages:
        cmd.append("-B")
    cmd += ["-d", str(qfile), "-l", str(seconds), "-n", str(runs)]
    cmd += ["-c", str(args.clients), "-q", str(args.outstanding), "-t", "2", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"dnsperf failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    # Within one line: "Statistics:" alone on its line must not take the next line's figure.
    found = dict(re.findall(r"^[ \t]*([A-Z][A-Za-z ()]+?):[ \t]+(.*)$", proc.stdout, re.MULTILINE))
    return {k: v.strip() for k, v in found.items()}


def measure(
    label: str,
    pid: int,
    port: int,
    qfile: Path,
    args: argparse.Namespace,
    messages: int = 0,
    *,
    seconds: int | None = None,
    runs: int | None = None,
    warmup: bool = True,
) -> dict[str, Any]:
    """A warm-up run (unless ``warmup`` is false), then a timed one of ``seconds`` (default
    ``args.seconds``) and ``runs`` (dnsperf()): qps, and the server's CPU per answered query."""
    if warmup and args.warmup > 0:
        dnsperf(port, qfile, args.warmup, args, messages)
    before = cpu_seconds(pid)
    stats = dnsperf(port, qfile, seconds or args.seconds, args, messages, runs)
    cpu = cpu_seconds(pid) - before
    completed = int(stats["Queries completed"].split()[0])
    if completed == 0:
        raise RuntimeError(f"{label}: no query answered (dnsperf: {stats})")
    return {
        "server": label,
        "qps": float(stats["Queries per second"]),
        "completed": completed,
        "lost": int(stats["Queries lost"].split()[0]),
        "cpu": cpu,
        "us_per_q": 1e6 * cpu / completed if completed else float("nan"),
        "rcodes": stats.get("Response codes", "?"),
    }


@contextlib.contextmanager
def anycastedge(
    zones_dir: Path,
    zone: str,
    log: Path,
    config: Path | None = None,
    *,
    timeout: float = 30.0,
    control_port: int | None = None,
    cpus: str = str(SERVER_CPU),
) -> Iterator[tuple[int, int]]:
    """`anycastedge serve` pinned to ``cpus`` (default SERVER_CPU), logging to ``log``; yields
    (pid, port) once the zone's SOA answers (within ``timeout`` seconds). The control endpoint
    listens on ``control_port`` (default: any free port) of HOST."""
    port, cport = free_port(), control_port or free_port()
    cmd = ["taskset", "-c", cpus, sys.executable, "-m", "anycastedge", "serve"]
    cmd += ["--zones", str(zones_dir), "--listen", f"{HOST}:{port}", "--control", f"{HOST}:{cport}"]
    if config is not None:
        cmd += ["-c", str(config)]
    env = {k: v for k, v in os.environ.items() if k != "ANYCASTEDGE_CONFIG"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        try:
            wait_until_answers([zone], HOST, port, timeout=timeout, proc=proc)
        except (RuntimeError, TimeoutError) as error:
            raise RuntimeError(f"anycastedge serve: {error}\n{log.read_text()}") from None
        yield proc.pid, port
    finally:
        stop_process(proc)


# dns.rrl for --rrl-cost: on, nothing exempt, every class at 1M/s (no account of a dnsperf run
# comes near: a few hundred questions share ~140k qps); or off.
RRL_ON = "{responses_per_second: 1000000, exempt: []}"
RRL_OFF = "{enabled: false}"


def pop_yaml(work: Path, name: str, rrl: str) -> Path:
    """A pop.yaml with only ``dns.rrl`` set (the zones and sockets come from the command line)."""
    path = work / f"{name}.yaml"
    path.write_text(f"pop: bench\nstate_dir: {work / 'state'}\ndns:\n  rrl: {rrl}\n")
    return path


def scrape(port: int) -> dict[str, float]:
    """The rate limiter's figures from /metrics: responses it acted on, accounts in its table."""
    from prometheus_client.parser import text_string_to_metric_families

    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    found = {"limited": 0.0, "accounts": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "anycastedge_dns_rrl_responses_total":
                found["limited"] += sample.value
            elif sample.name == "anycastedge_dns_rrl_accounts":
                found["accounts"] = sample.value
    return found


def rrl_cost(args: argparse.Namespace, work: Path, served: Path, zone: str, qfile: Path) -> int:
    """anycastedge with dns.rrl off and on, alternated ``args.rounds`` times; prints each run
    and the on/off ratios (of the sums over the rounds)."""
    runs: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        for label, rrl in (("rrl off", RRL_OFF), ("rrl on", RRL_ON)):
            config = pop_yaml(work, label.replace(" ", "-"), rrl)
            cport = free_port()
            log = work / f"{label.replace(' ', '-')}-{round_}.log"
            with anycastedge(served, zone, log, config, control_port=cport) as (pid, port):
                result = measure(label, pid, port, qfile, args)
                seen = scrape(cport)
            if label == "rrl on" and (seen["limited"] or not seen["accounts"]):
                raise RuntimeError(f"the limiter limited or did not run: {seen}")
            runs.append(result)
            print(
                f"round {round_ + 1} {label:<8} {result['qps']:>10.0f} qps "
                f"{result['us_per_q']:>6.2f} us/q  lost {result['lost']}",
                flush=True,
            )
    totals = {}
    for label in ("rrl off", "rrl on"):
        mine = [r for r in runs if r["server"] == label]
        totals[label] = (
            sum(r["qps"] for r in mine) / len(mine),
            sum(r["cpu"] for r in mine) * 1e6 / sum(r["completed"] for r in mine),
        )
    (off_qps, off_us), (on_qps, on_us) = totals["rrl off"], totals["rrl on"]
    print(
        f"rrl on/off: qps {on_qps:.0f}/{off_qps:.0f} = {on_qps / off_qps:.3f}x, server CPU per "
        f"answered query {on_us:.2f}/{off_us:.2f} us = {on_us / off_us:.3f}x"
    )
    return 0


def pick_zone(zones_dir: Path, zone: str | None) -> str:
    if zone:
        zone = zone.rstrip(".")
        if not (zones_dir / f"{zone}.yaml").is_file():
            sys.exit(f"error: no {zone}.yaml in {zones_dir}")
        return f"{zone}."
    found = sorted(zones_dir.glob("*.yaml"))
    if not found:
        sys.exit(f"error: no zone YAML files in {zones_dir}")
    return f"{found[0].stem}."


def workers_ready(control_port: int, count: int, timeout: float = 60.0) -> None:
    """Wait until /status lists ``count`` DNS processes, each alive and loaded."""
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(f"http://{HOST}:{control_port}/status", timeout=5) as reply:
            entries = json.load(reply)["dns"]["workers"]
        ready = [e for e in entries if e["alive"] and (e["last_reload"] or {}).get("ok")]
        if len(ready) == count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"DNS workers not ready after {timeout:g} s: {entries}")
        time.sleep(0.1)  # a bounded poll


def scaling(args: argparse.Namespace, counts: list[int], zones_dir: Path, zone: str) -> int:
    """anycastedge with each dns.workers count: qps and CPU per answered query, all processes."""
    with tempfile.TemporaryDirectory(prefix="bench-dns-workers-") as tmp:
        work = Path(tmp)
        served = work / "zones"
        served.mkdir()
        shutil.copy(zones_dir / f"{zone[:-1]}.yaml", served)
        if args.queries:
            qfile, mix = args.queries.resolve(), f"from {args.queries}"
        else:
            bind_file = zone_yaml_to_bind(served, zone, work / "bind")
            qfile, mix = make_query_file(bind_file, dns.name.from_text(zone), work / "queries")
        print(
            f"zone {zone}: queries {mix}; dnsperf -l {args.seconds} -c {args.clients} "
            f"-q {args.outstanding} on CPU {LOAD_CPU}, anycastedge on CPUs {SERVER_CPU},{LOAD_CPU}",
            flush=True,
        )
        results = []
        for count in counts:
            config = work / f"pop-{count}.yaml"
            config.write_text(json.dumps({"pop": "bench", "state_dir": str(work / "state"),
                                          "dns": {"workers": count}}))  # fmt: skip
            cport = free_port()
            log = work / f"anycastedge-{count}.log"
            cpus = f"{SERVER_CPU},{LOAD_CPU}"
            with anycastedge(served, zone, log, config, control_port=cport, cpus=cpus) as served_at:
                pid, port = served_at
                workers_ready(cport, count)
                results.append(measure(f"workers {count}", pid, port, qfile, args))
    header = ("anycastedge", "qps", "answered", "lost", "CPU s", "CPU us/q")
    print("{:<12} {:>10} {:>10} {:>6} {:>7} {:>9}".format(*header))
    for r in results:
        print(
            f"{r['server']:<12} {r['qps']:>10.0f} {r['completed']:>10} {r['lost']:>6} "
            f"{r['cpu']:>7.2f} {r['us_per_q']:>9.2f}"
        )
    first = results[0]
    for r in results[1:]:
        print(f"{r['server']} / {first['server']}: qps {r['qps'] / first['qps']:.2f}x, "
              f"CPU per answered query {r['us_per_q'] / first['us_per_q']:.2f}x")  # fmt: skip
    return 0


def main() -> int:
    args = parse_args()
    if args.workers:
        counts = [int(n) for n in args.workers.split(",")]
        if shutil.which("dnsperf") is None or shutil.which("taskset") is None:
            print("error: dnsperf and taskset needed", file=sys.stderr)
            return 2
        zones_dir = args.zones.resolve()
        return scaling(args, counts, zones_dir, pick_zone(zones_dir, args.zone))
    missing = missing_tools()
    if missing:
        print(
            f"error: {', '.join(missing)} not installed; on Debian: apt-get install -y "
            "--no-install-recommends nsd dnsperf util-linux (or run `make bench`)",
            file=sys.stderr,
        )
        return 2
    if len(os.sched_getaffinity(0)) < 2 or not {SERVER_CPU, LOAD_CPU} <= os.sched_getaffinity(0):
        print(f"error: needs CPUs {SERVER_CPU} and {LOAD_CPU} (server / dnsperf)", file=sys.stderr)
        return 2
    zones_dir = args.zones.resolve()
    zone = pick_zone(zones_dir, args.zone)
    with tempfile.TemporaryDirectory(prefix="bench-dns-") as tmp:
        work = Path(tmp)
        served = work / "zones"  # anycastedge serves only the zone under test, as NSD does
        served.mkdir()
        shutil.copy(zones_dir / f"{zone[:-1]}.yaml", served)
        bind_file = zone_yaml_to_bind(served, zone, work / "bind")
        if args.queries:
            qfile, mix = args.queries.resolve(), f"from {args.queries}"
        else:
            qfile, mix = make_query_file(bind_file, dns.name.from_text(zone), work / "queries")
        print(
            f"zone {zone}: queries {mix}; dnsperf -l {args.seconds} -c {args.clients} "
            f"-q {args.outstanding} on CPU {LOAD_CPU}, server on CPU {SERVER_CPU}",
            flush=True,
        )
        if args.rrl_cost:
            return rrl_cost(args, work, served, zone, qfile)
        results = []
        with anycastedge(served, zone, work / "anycastedge.log") as (pid, port):
            results.append(measure("anycastedge", pid, port, qfile, args))
        with NsdServer({zone: bind_file}, cpu=SERVER_CPU) as nsd:
            results.append(measure("nsd", nsd.pid, nsd.port, qfile, args))

    print(f"{'server':<12} {'qps':>10} {'answered':>10} {'lost':>6} {'CPU s':>7} {'CPU us/q':>9}")
    for r in results:
        print(
            f"{r['server']:<12} {r['qps']:>10.0f} {r['completed']:>10} {r['lost']:>6} "
            f"{r['cpu']:>7.2f} {r['us_per_q']:>9.2f}   {r['rcodes']}"
        )
    ours, nsd_r = results
    print(
        f"anycastedge/nsd: qps {ours['qps'] / nsd_r['qps']:.2f}x, "
        f"server CPU per answered query {ours['us_per_q'] / nsd_r['us_per_q']:.2f}x "
        "(dnsperf saturates one core near 140k qps: compare CPU/query when both are that fast)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
