#!/usr/bin/env python3
"""Large zones and uncached traffic: anycastedge vs NSD 4 at 100k and 1M records, in one run.

Run with the project's venv python (`make bench`, or `.venv/bin/python bench/zone_scale.py
--records 100000`; `--quick` checks the script in under two minutes). For each size it generates
an octoDNS YAML zone from a seed (mostly A, plus AAAA, CNAME with some chains of two, MX, TXT,
wildcards and delegations with glue, over three levels of names) into a temporary directory, and
writes NSD's zone file directly from the same data (octoDNS's own YAML->BIND conversion takes
minutes at 1M records; ``--quick`` checks the direct file against octoDNS's, record for record).

Then, for anycastedge and for NSD in turn, each alone, pinned to CPU 0 with taskset (dnsperf on
CPU 1), exactly as bench/dns_vs_nsd.py does:

- load time: from process start until the zone's SOA answers over UDP;
- memory from /proc, summed over the server's processes (NSD's children included): VmRSS and
  Pss after load, the largest VmHWM (peak RSS while loading), VmRSS after the query runs;
- dnsperf qps and server CPU microseconds per answered query for (a) every existing name of the
  zone once, in random order (``-n 1``: nothing repeats, so no answer cache helps), (b) random
  names that do not exist (NXDOMAIN), each asked once, (c) a handful of names repeated (the
  static case of dns_vs_nsd.py, for reference);
- anycastedge only: a reload (SIGHUP; done when /status reports it), the latency of a small
  paced query loop running meanwhile (worst, p99, timeouts) and the peak RSS during the reload.

Sample answers of both servers (existing, wildcard, delegated and missing names) are compared
after the timed runs (not before: they would repeat names). Every dnsperf run is bounded by time
(-l) and count (-n), as is every loop; only 127.0.0.1 is contacted; only the processes this
script started are stopped, by PID; the temporary directory is removed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.zone
from natsort import natsorted

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from dns_vs_nsd import (  # noqa: E402
    HOST,
    LOAD_CPU,
    SERVER_CPU,
    anycastedge,
    measure,
    missing_tools,
    process_tree,
)

from anycastedge.config.pop import SoaConfig  # noqa: E402
from tests.support.nsd import NsdServer, zone_yaml_to_bind  # noqa: E402
from tests.support.procs import free_port  # noqa: E402

ZONE = "scale.test."
DEFAULT_SIZES = (100_000, 1_000_000)
QUICK_SIZE = 20_000
MIB = 1024 * 1024

# The mix, by share of the zone's RRsets; a delegation is three (NS and two glue A records).
MIX: dict[str, float] = {
    "A": 0.60,
    "AAAA": 0.12,
    "CNAME": 0.10,
    "TXT": 0.08,
    "MX": 0.05,
    "wildcard": 0.02,
    "delegation": 0.03,
}
TTLS = (60, 300, 300, 3600, 3600, 3600)  # octoDNS's default TTL (3600) is the common one
WORDS = ("www", "api", "app", "cdn", "db", "edge", "host", "mail", "node", "srv", "vm", "web")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--records",
        type=int,
        action="append",
        help="zone size in RRsets; repeatable (default: 100000 and 1000000)",
    )
    p.add_argument("--quick", action="store_true", help="20k records, 2 s runs: checks the script")
    p.add_argument("--seed", type=int, default=53, help="zone and query generator seed")
    p.add_argument("--seconds", type=int, default=10, help="dnsperf -l, repeated names (10)")
    p.add_argument(
        "--max-seconds",
        type=int,
        default=60,
        help="dnsperf -l cap of the ask-once runs (existing / missing names; default 60)",
    )
    p.add_argument("--nxdomain", type=int, default=200_000, help="missing names asked (200000)")
    p.add_argument("--warmup", type=int, default=1, help="untimed run before repeated names (s)")
    p.add_argument("--clients", type=int, default=20, help="dnsperf -c (default 20)")
    p.add_argument("--outstanding", type=int, default=200, help="dnsperf -q (default 200)")
    p.add_argument(
        "--start-timeout",
        type=float,
        help="seconds a server may take to load (default: 120, or 600 per million records)",
    )
    p.add_argument("--check-octodns", action="store_true", help="check the NSD file (as --quick)")
    args = p.parse_args()
    if args.quick:
        args.records = args.records or [QUICK_SIZE]
        args.seconds, args.max_seconds, args.nxdomain = 2, 5, 20_000
        args.check_octodns = True
    args.records = args.records or list(DEFAULT_SIZES)
    if min(args.records) < 100 or args.nxdomain < 1:
        p.error("--records must be at least 100, --nxdomain at least 1")
    return args


# --- the zone ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rrset:
    """One record set; ``values`` in zone-file presentation form (TXT unquoted)."""

    rtype: str
    ttl: int
    values: tuple[str, ...]


@dataclass(slots=True)
class GeneratedZone:
    """A zone's records by relative owner name ('' is the apex) and the queries that go with it."""

    origin: str
    names: dict[str, dict[str, Rrset]] = field(default_factory=dict)
    existing: list[str] = field(default_factory=list)  # dnsperf lines: each name asked once
    missing: list[str] = field(default_factory=list)  # dnsperf lines: names that do not exist
    repeated: list[str] = field(default_factory=list)  # dnsperf lines: a handful of names
    counts: Counter[str] = field(default_factory=Counter)  # RRsets by kind, for the report
    rrsets: int = 0

    def add(self, name: str, rrset: Rrset, kind: str | None = None) -> bool:
        """Add ``rrset`` unless ``name`` already has one of its type (False then)."""
        types = self.names.setdefault(name, {})
        if rrset.rtype in types:
            return False
        types[rrset.rtype] = rrset
        self.counts[kind or rrset.rtype] += 1
        self.rrsets += 1
        return True

    def fqdn(self, name: str) -> str:
        return f"{name}.{self.origin}" if name else self.origin


def generate_zone(records: int, seed: int, nxdomain: int) -> GeneratedZone:
    """About ``records`` RRsets drawn from MIX with ``seed``, over names one to three labels
    below the apex, and the three query lists."""
    rng = random.Random(seed)
    z = GeneratedZone(ZONE)
    z.add("", Rrset("NS", 3600, (f"ns1.{ZONE}", f"ns2.{ZONE}")), "apex")
    for i in (1, 2):
        z.add(f"ns{i}", Rrset("A", 3600, (f"192.0.2.{i}",)), "apex")
    # Parents spread hosts over three levels (host, host.site, host.site.region); their own names
    # are empty non-terminals, as in most large zones.
    regions = [f"r{j}" for j in range(10)]
    sites = [f"s{k}.{rng.choice(regions)}" for k in range(max(10, records // 400))]
    hosts: list[str] = []  # names holding an A record: CNAME and MX targets
    cnames: list[str] = []  # CNAMEs to hosts: the second link of chains of two
    kinds, weights = list(MIX), list(MIX.values())
    serial = 0

    def new_name() -> str:
        nonlocal serial
        serial += 1
        label = f"{rng.choice(WORDS)}{serial}"
        level = rng.random()
        if level < 0.4:
            return label
        site = rng.choice(sites)
        return f"{label}.{site.split('.')[0]}" if level < 0.7 else f"{label}.{site}"

    def ttl() -> int:
        return rng.choice(TTLS)

    def v4() -> str:
        return f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"

    while z.rrsets < records:
        kind = rng.choices(kinds, weights)[0]
        if kind == "A" or not hosts:
            name = new_name()
            z.add(name, Rrset("A", ttl(), tuple(v4() for _ in range(rng.choice((1, 1, 1, 2))))))
            hosts.append(name)
        elif kind == "AAAA":  # half dual-stack hosts, half IPv6-only names
            name = rng.choice(hosts) if rng.random() < 0.5 else new_name()
            value = f"2001:db8:{rng.randrange(65536):x}::{rng.randrange(1, 65536):x}"
            z.add(name, Rrset("AAAA", ttl(), (value,)))
        elif kind == "CNAME":
            name = new_name()
            roll = rng.random()
            if roll < 0.25 and cnames:  # a chain of two: name -> CNAME -> host
                target = z.fqdn(rng.choice(cnames))
            elif roll < 0.4:
                target = f"{name.split('.')[0]}.cdn.example.net."  # out of zone: not chased
            else:
                target = z.fqdn(rng.choice(hosts))
                cnames.append(name)
            z.add(name, Rrset("CNAME", ttl(), (target,)))
        elif kind == "TXT":  # verification tokens, at hosts or beside them as _acme-challenge
            host = rng.choice(hosts)
            name = host if rng.random() < 0.5 else f"_acme-challenge.{host}"
            z.add(name, Rrset("TXT", ttl(), (f"site-verification={rng.getrandbits(64):016x}",)))
        elif kind == "MX":
            name = new_name()
            exchanges = rng.sample(hosts, min(2, len(hosts)))
            values = tuple(f"{10 * (n + 1)} {z.fqdn(h)}" for n, h in enumerate(exchanges))
            z.add(name, Rrset("MX", ttl(), values))
        elif kind == "wildcard":
            z.add(f"*.wild-{serial}", Rrset("A", ttl(), (v4(),)), "wildcard")
            serial += 1
        else:  # a delegation with its two name servers' glue below the cut
            cut = f"sub-{serial}"
            serial += 1
            z.add(cut, Rrset("NS", 86400, (z.fqdn(f"ns1.{cut}"), z.fqdn(f"ns2.{cut}"))), "NS")
            for n in (1, 2):
                z.add(f"ns{n}.{cut}", Rrset("A", 86400, (v4(),)), "glue A")
    z.existing = existing_queries(z, rng)
    rng.shuffle(z.existing)
    z.missing = missing_queries(z, rng, nxdomain)
    z.repeated = repeated_queries(z)
    return z


def existing_queries(z: GeneratedZone, rng: random.Random) -> list[str]:
    """One query per owner name, of one of its types: wildcards through a name they synthesize,
    delegations through a name below the cut (a referral), glue not at all (it is occluded)."""
    lines = []
    for name, types in z.names.items():
        if name.startswith("*."):
            lines.append(f"q{rng.getrandbits(32):08x}.{z.fqdn(name[2:])} A")
        elif "NS" in types and name:
            lines.append(f"www.{z.fqdn(name)} A")
        elif name.startswith("ns") and ".sub-" in name:
            continue
        else:
            rtype = rng.choice(sorted(types))
            lines.append(f"{z.fqdn(name)} {'A' if rtype == 'CNAME' else rtype}")
    return lines


def missing_queries(z: GeneratedZone, rng: random.Random, count: int) -> list[str]:
    """``count`` distinct random labels right below the apex (a random-subdomain flood). They are
    twelve letters; every label the generator makes has a digit or an underscore: none exists."""
    seen: set[str] = set()
    lines: list[str] = []
    letters = "abcdefghijklmnopqrstuvwxyz"
    while len(lines) < count:
        label = "".join(rng.choices(letters, k=12))
        if label not in seen:
            seen.add(label)
            lines.append(f"{label}.{z.origin} A")
    return lines


def repeated_queries(z: GeneratedZone) -> list[str]:
    """A handful of names, one of each kind, asked over and over (the cacheable case)."""
    picks: dict[str, str] = {}
    for line in z.existing:
        name, rtype = line.split()
        kind = "wildcard" if ".wild-" in name else "referral" if ".sub-" in name else rtype
        if kind == "A" and any(
            rs.rtype == "CNAME" for rs in z.names.get(name[: -len(z.origin) - 1], {}).values()
        ):
            kind = "CNAME"
        picks.setdefault(kind, line)
    return sorted(picks.values())


def write_yaml(z: GeneratedZone, path: Path) -> None:
    """The zone as octoDNS YAML, one line per single-type name (fast to write at 1M records),
    every mapping's keys in the order octoDNS's YamlProvider enforces (as octoDNS writes it)."""

    def record(rrset: Rrset) -> str:
        head = f"ttl: {rrset.ttl}, type: {rrset.rtype}"
        if rrset.rtype == "CNAME":
            return f"{{{head}, value: '{rrset.values[0]}'}}"
        if rrset.rtype == "MX":
            mx = [v.split() for v in rrset.values]
            values = ", ".join(f"{{exchange: '{x}', preference: {p}}}" for p, x in mx)
        else:  # A, AAAA, NS, TXT: no value the generator makes needs escaping
            values = ", ".join(f"'{v}'" for v in rrset.values)
        return f"{{{head}, values: [{values}]}}"

    with path.open("w") as out:
        for name in natsorted(z.names):
            types = z.names[name]
            if len(types) == 1:
                out.write(f"'{name}': {record(next(iter(types.values())))}\n")
            else:
                out.write(f"'{name}':\n")
                for rrset in types.values():
                    out.write(f"  - {record(rrset)}\n")


def write_bind(z: GeneratedZone, path: Path) -> None:
    """The same zone as an RFC 1035 file for NSD, with anycastedge's default SOA timers (the
    serial differs: anycastedge uses the YAML file's mtime; no timed answer carries it)."""
    soa = SoaConfig()
    apex_ns = z.names[""]["NS"].values[0]
    with path.open("w") as out:
        out.write(f"$ORIGIN {z.origin}\n")
        out.write(
            f"@ {soa.ttl} IN SOA {apex_ns} hostmaster.{z.origin} 1 {soa.refresh} {soa.retry} "
            f"{soa.expire} {soa.minimum}\n"
        )
        for name, types in z.names.items():
            owner = name or "@"
            for rrset in types.values():
                for value in rrset.values:
                    rdata = f'"{value}"' if rrset.rtype == "TXT" else value
                    out.write(f"{owner} {rrset.ttl} IN {rrset.rtype} {rdata}\n")


def zone_records(path: Path, origin: str) -> set[tuple[str, str, int, str]]:
    """Every record but the SOA as (owner, type, TTL, rdata), for comparing zone files."""
    parsed = dns.zone.from_file(str(path), origin, relativize=False, check_origin=False)
    return {
        (name.to_text(), dns.rdatatype.to_text(rds.rdtype), rds.ttl, rd.to_text())
        for name, node in parsed.nodes.items()
        for rds in node.rdatasets
        if rds.rdtype != dns.rdatatype.SOA
        for rd in rds
    }


def check_against_octodns(zones_dir: Path, bind_file: Path, work: Path) -> None:
    """Fail unless octoDNS's own BIND conversion of the YAML holds exactly our direct file."""
    ours = zone_records(bind_file, ZONE)
    theirs = zone_records(zone_yaml_to_bind(zones_dir, ZONE, work, timeout=600), ZONE)
    if ours != theirs:
        extra, missing = sorted(ours - theirs)[:5], sorted(theirs - ours)[:5]
        raise RuntimeError(f"NSD zone file differs from octoDNS's: ours only {extra}, "
                           f"octoDNS only {missing}")  # fmt: skip
    print(f"  checked: the direct NSD zone file equals octoDNS's conversion ({len(ours)} records)")


# --- memory -----------------------------------------------------------------------------------


def status_kib(pid: int, key: str) -> int:
    """A ``key: N kB`` line of /proc/PID/status (0 if the process is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    return 0


def pss_kib(pid: int) -> int:
    """Proportional set size: shared pages split among their users, so that NSD's forked
    children (which share the zone copy-on-write with their parent) are not counted twice."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


@dataclass(frozen=True, slots=True)
class Memory:
    """A server's memory at one moment."""

    rss: float  # MiB, VmRSS summed over the server's processes
    pss: float  # MiB, Pss summed likewise
    peak: float  # MiB, the largest VmHWM of any one of them


def memory(pid: int) -> Memory:
    tree = process_tree(pid)
    return Memory(
        sum(status_kib(p, "VmRSS") for p in tree) / 1024,
        sum(pss_kib(p) for p in tree) / 1024,
        max((status_kib(p, "VmHWM") for p in tree), default=0) / 1024,
    )


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux: "5" into clear_refs), so that it shows the peak of
    what follows; False where that is not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


# --- runs -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Perf:
    """One dnsperf run against one server."""

    qps: float
    us_per_q: float
    completed: int
    lost: int
    seconds: float  # server CPU seconds
    rcodes: str


@dataclass(frozen=True, slots=True)
class Reload:
    """One anycastedge reload and the probe's latencies meanwhile (from 0.2 s before SIGHUP to
    the /status poll that saw it done)."""

    seconds: float
    ok: bool
    queries: int
    timeouts: int
    worst_ms: float
    p99_ms: float
    p50_ms: float
    peak: float  # MiB


@dataclass(slots=True)
class ServerRun:
    """Everything measured of one server for one zone size."""

    server: str
    load: float = 0.0
    loaded: Memory | None = None
    after: Memory | None = None
    perf: dict[str, Perf] = field(default_factory=dict)
    reload: Reload | None = None
    answers: dict[str, tuple[Any, ...]] = field(default_factory=dict)


SETS = ("existing", "missing", "repeated")


def run_sets(
    run: ServerRun, pid: int, port: int, files: dict[str, Path], args: argparse.Namespace
) -> None:
    """The three dnsperf sets against one server, then its memory."""
    for label in SETS:
        once = label != "repeated"
        r = measure(
            f"{run.server} {label}",
            pid,
            port,
            files[label],
            args,
            seconds=args.max_seconds if once else args.seconds,
            runs=1 if once else None,  # -n 1: each name asked once, no cache can help
            warmup=not once,
        )
        run.perf[label] = Perf(
            r["qps"], r["us_per_q"], r["completed"], r["lost"], r["cpu"], r["rcodes"]
        )
        print(
            f"  {run.server:<11} {label:<8} {r['qps']:>9.0f} qps {r['us_per_q']:>8.1f} us/q "
            f"answered {r['completed']} lost {r['lost']}  {r['rcodes']}",
            flush=True,
        )
    run.after = memory(pid)


def sample_lines(z: GeneratedZone, seed: int, count: int = 200) -> list[str]:
    """Queries whose answers both servers must agree on: existing names of every kind, a few
    missing ones, and the repeated set."""
    rng = random.Random(seed + 1)
    existing = rng.sample(z.existing, min(count, len(z.existing)))
    return existing + z.missing[: count // 10] + z.repeated


def answer_key(reply: dns.message.Message) -> tuple[Any, ...]:
    """What must match between servers: rcode, AA, answer and authority (SOA by type only:
    the serials differ), glue addresses. TTLs included."""

    def rrsets(section: list[Any], soa_by_type: bool = False) -> tuple[str, ...]:
        out = []
        for rrset in section:
            if soa_by_type and rrset.rdtype == dns.rdatatype.SOA:
                out.append(f"{rrset.name} SOA")
            else:
                out += sorted(f"{rrset.name} {rrset.ttl} {rrset.rdtype!r} {rd}" for rd in rrset)
        return tuple(sorted(out))

    glue = [r for r in reply.additional if r.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)]
    return (
        dns.rcode.to_text(reply.rcode()),
        bool(reply.flags & dns.flags.AA),
        rrsets(reply.answer),
        rrsets(reply.authority, soa_by_type=True),
        rrsets(glue) if not reply.answer else (),
    )


def sample_answers(port: int, lines: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    """Each sample query once over UDP (bounded: len(lines) queries, 2 s timeout each)."""
    out: dict[str, tuple[Any, ...]] = {}
    for line in lines:
        name, rtype = line.split()
        query = dns.message.make_query(name, rtype, use_edns=0, payload=1232)
        try:
            out[line] = answer_key(dns.query.udp(query, HOST, port=port, timeout=2.0))
        except (OSError, dns.exception.DNSException) as error:
            out[line] = ("error", repr(error))
    return out


def status(control: int) -> dict[str, Any] | None:
    """anycastedge's /status, or None if it did not answer within 10 s (a reload may hold the
    reactor up: the caller polls again)."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{control}/status", timeout=10) as response:
            body: dict[str, Any] = json.load(response)
    except OSError:
        return None
    return body


class LatencyProbe(threading.Thread):
    """Paced UDP queries (one per millisecond at most) for a handful of names until stopped or
    bounded by ``limit`` seconds; keeps each query's latency, or counts it as timed out."""

    def __init__(self, port: int, lines: Sequence[str], limit: float, timeout: float = 5.0):
        super().__init__(daemon=True)
        self.port, self.limit, self.timeout = port, limit, timeout
        self.wires = [
            dns.message.make_query(n, t, use_edns=0, payload=1232).to_wire()
            for n, t in (line.split() for line in lines)
        ]
        self.latencies: list[float] = []
        self.timeouts = 0
        self.stop = threading.Event()

    def run(self) -> None:
        # pid 0 is the calling thread: the probe shares dnsperf's CPU, never the server's.
        os.sched_setaffinity(0, {LOAD_CPU})
        deadline = time.monotonic() + self.limit
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((HOST, self.port))
            for n in range(10_000_000):  # a count bound besides the time bound
                if self.stop.is_set() or time.monotonic() > deadline:
                    break
                qid = n % 65536
                wire = struct.pack("!H", qid) + self.wires[n % len(self.wires)][2:]
                sent = time.monotonic()
                sock.send(wire)
                if self._await(sock, qid, sent):
                    self.latencies.append(time.monotonic() - sent)
                else:
                    self.timeouts += 1
                time.sleep(0.001)

    def _await(self, sock: socket.socket, qid: int, sent: float) -> bool:
        """Read replies until ours (late replies to earlier, timed-out queries are skipped)."""
        while (left := sent + self.timeout - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                reply = sock.recv(65535)
            except (TimeoutError, ConnectionRefusedError):
                return False
            if reply[:2] == struct.pack("!H", qid):
                return True
        return False


def measure_reload(
    pid: int, port: int, control: int, z: GeneratedZone, zone_file: Path, limit: float
) -> Reload:
    """Touch the zone file (a reload keeps zones whose files did not change: this one must be
    built again), SIGHUP, then poll /status (every 0.1 s, bounded by ``limit``) until the reload
    counts go up, while a LatencyProbe asks the repeated names and VmRSS is sampled."""
    first = status(control)
    if first is None:
        raise RuntimeError("anycastedge: /status did not answer")
    before = first["reloads"]
    reset = reset_peak_rss(pid)
    probe = LatencyProbe(port, z.repeated, limit + 10)
    probe.start()
    time.sleep(0.2)  # the probe is sending before the reload starts
    sampled = memory(pid).rss
    st = zone_file.stat()
    os.utime(zone_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    started = time.monotonic()
    os.kill(pid, signal.SIGHUP)
    done: dict[str, Any] | None = None
    while time.monotonic() - started < limit:
        time.sleep(0.1)
        sampled = max(sampled, memory(pid).rss)
        now = status(control)
        if now is not None and now["reloads"] != before:
            done = now
            break
    elapsed = time.monotonic() - started
    probe.stop.set()
    probe.join(timeout=probe.timeout + 5)
    if done is None:
        raise RuntimeError(f"anycastedge: no reload reported within {limit:.0f}s")
    peak = max(sampled, memory(pid).peak) if reset else sampled
    lat = sorted(probe.latencies) or [float("nan")]
    return Reload(
        seconds=elapsed,
        ok=bool(done["last_reload"] and done["last_reload"]["ok"]),
        queries=len(probe.latencies) + probe.timeouts,
        timeouts=probe.timeouts,
        worst_ms=1000 * (probe.timeout if probe.timeouts else lat[-1]),
        p99_ms=1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        p50_ms=1000 * statistics.median(lat),
        peak=peak,
    )


def bench_size(records: int, args: argparse.Namespace) -> list[ServerRun]:
    timeout = args.start_timeout or max(120.0, 600.0 * records / 1_000_000)
    with tempfile.TemporaryDirectory(prefix="bench-zone-scale-") as tmp:
        work = Path(tmp)
        started = time.monotonic()
        z = generate_zone(records, args.seed, args.nxdomain)
        (work / "zones").mkdir()
        (work / "state").mkdir()
        write_yaml(z, work / "zones" / f"{ZONE[:-1]}.yaml")
        bind_file = work / f"{ZONE[:-1]}.zone"
        write_bind(z, bind_file)
        files = {label: work / f"{label}.queries" for label in SETS}
        for label, queries in zip(SETS, (z.existing, z.missing, z.repeated), strict=True):
            files[label].write_text("\n".join(queries) + "\n")
        mix = ", ".join(f"{k} {v}" for k, v in z.counts.most_common())
        print(
            f"\n== {z.rrsets} RRsets in {len(z.names)} names ({mix}); generated in "
            f"{time.monotonic() - started:.1f}s; queries: {len(z.existing)} existing names, "
            f"{len(z.missing)} missing, {len(z.repeated)} repeated",
            flush=True,
        )
        if args.check_octodns:
            check_against_octodns(work / "zones", bind_file, work / "octodns")
        # anycastedge reads its own state dir and no file watcher: the reload measured is
        # exactly the one SIGHUP asks for.
        config = work / "pop.yaml"
        config.write_text(
            f"pop: zone-scale\nstate_dir: {work / 'state'}\ndns:\n  watch_interval: 0\n"
        )
        lines = sample_lines(z, args.seed)
        ours, nsd = ServerRun("anycastedge"), ServerRun("nsd")
        control = free_port()
        log = work / "anycastedge.log"
        started = time.monotonic()  # the with line starts the server, returns once it answers
        with anycastedge(
            work / "zones", ZONE, log, config, timeout=timeout, control_port=control
        ) as (pid, port):
            ours.load = time.monotonic() - started
            ours.loaded = memory(pid)
            print(f"  anycastedge loaded in {ours.load:.1f}s", flush=True)
            run_sets(ours, pid, port, files, args)
            ours.answers = sample_answers(port, lines)
            zone_file = work / "zones" / f"{ZONE[:-1]}.yaml"
            ours.reload = measure_reload(pid, port, control, z, zone_file, timeout)
        started = time.monotonic()
        with NsdServer({ZONE: bind_file}, cpu=SERVER_CPU, startup_timeout=timeout) as server:
            nsd.load = time.monotonic() - started
            nsd.loaded = memory(server.pid)
            print(f"  nsd loaded in {nsd.load:.1f}s", flush=True)
            run_sets(nsd, server.pid, server.port, files, args)
            nsd.answers = sample_answers(server.port, lines)
    return [ours, nsd]


# --- report -----------------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def report(records: int, ours: ServerRun, nsd: ServerRun) -> str:
    """Prints the table for one size; returns its one-line summary."""
    assert ours.loaded and nsd.loaded and ours.after and nsd.after and ours.reload
    rows: list[tuple[str, float, float | None]] = [
        ("load time (s)", ours.load, nsd.load),
        ("RSS after load (MiB)", ours.loaded.rss, nsd.loaded.rss),
        ("PSS after load (MiB)", ours.loaded.pss, nsd.loaded.pss),
        ("peak RSS loading, 1 process (MiB)", ours.loaded.peak, nsd.loaded.peak),
        ("RSS after runs (MiB)", ours.after.rss, nsd.after.rss),
    ]
    titles = {"existing": "existing names once", "missing": "NXDOMAIN once",
              "repeated": "repeated names"}  # fmt: skip
    for label in SETS:
        rows.append((f"{titles[label]} qps", ours.perf[label].qps, nsd.perf[label].qps))
        rows.append((f"{titles[label]} CPU us/q", ours.perf[label].us_per_q,
                     nsd.perf[label].us_per_q))  # fmt: skip
    r = ours.reload
    rows += [
        ("reload (s)", r.seconds, None),
        ("worst query during reload (ms)", r.worst_ms, None),
        ("p99 query during reload (ms)", r.p99_ms, None),
        ("median query during reload (ms)", r.p50_ms, None),
        ("peak RSS reloading (MiB)", r.peak, None),
    ]
    print(f"\n{f'{records} records':<34} {'anycastedge':>12} {'nsd':>12} {'ae/nsd':>8}")
    for title, a, b in rows:
        if b is None:
            print(f"  {title:<34} {a:>12.1f} {'-':>12}")
        else:
            print(f"  {title:<34} {a:>12.1f} {b:>12.1f} {ratio(a, b):>8}")
    print(
        f"  reload: {'ok' if r.ok else 'REJECTED'}, {r.queries} probe queries, "
        f"{r.timeouts} timed out (5 s)"
    )
    differ = [line for line in ours.answers if ours.answers[line] != nsd.answers.get(line)]
    print(f"  answers compared on {len(ours.answers)} sample queries: {len(differ)} differ")
    for line in differ[:3]:
        print(f"    {line}\n      anycastedge {ours.answers[line]}\n      nsd         "
              f"{nsd.answers[line]}")  # fmt: skip
    e, m, p = (ours.perf[k] for k in SETS)
    ne, nm, np_ = (nsd.perf[k] for k in SETS)
    return (
        f"{records} records, anycastedge/nsd: load {ratio(ours.load, nsd.load)}, "
        f"RSS {ratio(ours.loaded.rss, nsd.loaded.rss)}, qps existing-once "
        f"{ratio(e.qps, ne.qps)} (CPU/q {ratio(e.us_per_q, ne.us_per_q)}), NXDOMAIN "
        f"{ratio(m.qps, nm.qps)} (CPU/q {ratio(m.us_per_q, nm.us_per_q)}), repeated "
        f"{ratio(p.qps, np_.qps)} (CPU/q {ratio(p.us_per_q, np_.us_per_q)}); reload "
        f"{r.seconds:.1f}s, worst query {r.worst_ms:.0f} ms"
    )


def main() -> int:
    args = parse_args()
    missing = missing_tools()
    if missing:
        print(
            f"error: {', '.join(missing)} not installed; on Debian: apt-get install -y "
            "--no-install-recommends nsd dnsperf util-linux (or run `make bench`)",
            file=sys.stderr,
        )
        return 2
    if not {SERVER_CPU, LOAD_CPU} <= os.sched_getaffinity(0):
        print(f"error: needs CPUs {SERVER_CPU} and {LOAD_CPU} (server / dnsperf)", file=sys.stderr)
        return 2
    print(
        f"zone {ZONE}, seed {args.seed}; dnsperf -c {args.clients} -q {args.outstanding} on CPU "
        f"{LOAD_CPU}, server on CPU {SERVER_CPU}; ask-once runs -n 1 -l {args.max_seconds}, "
        f"repeated names -l {args.seconds}; NSD's zone file written directly from the generated "
        "data" + (" and checked against octoDNS's conversion" if args.check_octodns else ""),
        flush=True,
    )
    summaries = []
    for records in args.records:
        ours, nsd = bench_size(records, args)
        summaries.append(report(records, ours, nsd))
    print()
    for line in summaries:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
