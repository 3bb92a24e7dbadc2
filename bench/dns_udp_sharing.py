#!/usr/bin/env python3
"""Two DNS processes on one UDP port: one shared socket vs one SO_REUSEPORT socket each.

Why `dns: {workers: N}` shares one socket (docs/dns-behaviour.md, "More than one core"): this
runs two processes answering with anycastedge's own Responder and UDP protocol
(dns/server.py), first both reading one inherited socket (what serve does), then each reading its
own socket of an SO_REUSEPORT group (the alternative), and loads each setup with dnsperf pinned to
CPU 1: at full speed and at a fixed low rate (where every datagram on a shared socket wakes both
processes). Prints qps, CPU per answered query (both processes, from /proc) and how the queries
were split between the two processes. Bounded by time (-l) and count (-n); only 127.0.0.1 is
contacted. Run with the project's venv python.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import dns.name  # noqa: E402
from dns_vs_nsd import LOAD_CPU, cpu_seconds, dnsperf, make_query_file  # noqa: E402

from tests.support.nsd import zone_yaml_to_bind  # noqa: E402
from tests.support.procs import free_port, stop_process  # noqa: E402

HOST = "127.0.0.1"
MODES = ("shared", "reuseport")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--zones", type=Path, default=REPO / "zones", help="zone YAML directory")
    p.add_argument("--zone", default="example.com", help="the zone served and queried")
    p.add_argument("--seconds", type=int, default=10, help="dnsperf -l per run (default 10)")
    p.add_argument("--rates", default="0,5000", help="dnsperf -Q per run, 0: as fast as it goes")
    p.add_argument("--repeat", type=int, default=2, help="runs of each mode and rate (default 2)")
    p.add_argument("--clients", type=int, default=20, help="dnsperf -c (default 20)")
    p.add_argument("--outstanding", type=int, default=200, help="dnsperf -q (default 200)")
    p.add_argument("--warmup", type=int, default=1, help="untimed dnsperf run first (seconds)")
    p.add_argument("--child", nargs=2, metavar=("ZONES", "FD"), help=argparse.SUPPRESS)
    return p.parse_args()


def child(zones: str, fd: int) -> int:
    """One answering process: the zones, a Responder, DnsDatagramProtocol on inherited ``fd``;
    prints how many queries it answered when stopped (SIGTERM)."""
    from twisted.internet import reactor

    from anycastedge.config.pop import SoaConfig
    from anycastedge.config.zones import load_zones
    from anycastedge.dns.counters import DnsCounters
    from anycastedge.dns.server import DnsDatagramProtocol
    from anycastedge.dns.wire import Responder
    from anycastedge.supervise import adopt_udp

    loaded, _ = load_zones([Path(zones)], SoaConfig())
    counters = DnsCounters()

    class Source:
        responder = Responder(loaded, "bench", 1232, True, 100_000, counters)

    sock = socket.socket(fileno=fd)
    adopt_udp(sock, DnsDatagramProtocol(Source()), reactor)
    sock.close()
    answered = lambda: print(sum(counters.responses.values()), flush=True)  # noqa: E731
    reactor.addSystemEventTrigger("before", "shutdown", answered)  # type: ignore[attr-defined]
    print("ready", flush=True)
    reactor.run()  # type: ignore[attr-defined]
    return 0


def bind(port: int, reuseport: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((HOST, port))
    sock.setblocking(False)
    return sock


def run(mode: str, rate: int, zones: Path, qfile: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Two processes in ``mode``, dnsperf at ``rate`` (0: unbounded): qps, CPU/query, split."""
    port = free_port()
    if mode == "shared":
        one = bind(port, False)
        sockets = [one, one]
    else:
        sockets = [bind(port, True), bind(port, True)]
    procs = []
    try:
        for sock in sockets:
            cmd = [sys.executable, __file__, "--child", str(zones), str(sock.fileno())]
            procs.append(subprocess.Popen(cmd, pass_fds=(sock.fileno(),), stdout=subprocess.PIPE,
                                          text=True, cwd=REPO))  # fmt: skip
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for sock in {id(s): s for s in sockets}.values():
            sock.close()  # the children hold them now
        extra = ["-Q", str(rate)] if rate else []
        if args.warmup:
            dnsperf(port, qfile, args.warmup, args, extra=extra)
        before = sum(cpu_seconds(p.pid) for p in procs)
        stats = dnsperf(port, qfile, args.seconds, args, extra=extra)
        cpu = sum(cpu_seconds(p.pid) for p in procs) - before
    finally:
        for proc in procs:
            stop_process(proc)  # type: ignore[arg-type]
    split = [int(p.stdout.read().split()[-1]) for p in procs if p.stdout is not None]
    completed = int(stats["Queries completed"].split()[0])
    return {
        "mode": mode,
        "rate": rate,
        "qps": float(stats["Queries per second"]),
        "lost": int(stats["Queries lost"].split()[0]),
        "us_per_q": 1e6 * cpu / max(completed, 1),
        "split": min(split) / max(sum(split), 1),
    }


def main() -> int:
    args = parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]))
    if shutil.which("dnsperf") is None or shutil.which("taskset") is None:
        print("error: dnsperf and taskset needed (Debian: dnsperf, util-linux)", file=sys.stderr)
        return 2
    if LOAD_CPU not in os.sched_getaffinity(0):
        print(f"error: needs CPU {LOAD_CPU} for dnsperf", file=sys.stderr)
        return 2
    zone = f"{args.zone.rstrip('.')}."
    with tempfile.TemporaryDirectory(prefix="bench-udp-sharing-") as tmp:
        work = Path(tmp)
        zones = work / "zones"
        zones.mkdir()
        shutil.copy(args.zones / f"{zone[:-1]}.yaml", zones)
        bind_file = zone_yaml_to_bind(zones, zone, work / "bind")
        qfile, mix = make_query_file(bind_file, dns.name.from_text(zone), work / "queries")
        print(f"zone {zone}: queries {mix}; two processes on any CPU, dnsperf -c {args.clients} "
              f"-q {args.outstanding} -l {args.seconds} on CPU {LOAD_CPU}", flush=True)  # fmt: skip
        header = ("mode", "rate", "qps", "lost", "CPU us/q", "smaller share")
        print("{:<10} {:>6} {:>9} {:>6} {:>9} {:>14}".format(*header))
        for rate in (int(r) for r in args.rates.split(",")):
            for _ in range(args.repeat):
                for mode in MODES:
                    r = run(mode, rate, zones, qfile, args)
                    print(f"{r['mode']:<10} {r['rate'] or 'max':>6} {r['qps']:>9.0f} "
                          f"{r['lost']:>6} {r['us_per_q']:>9.2f} {r['split']:>13.0%}",
                          flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
