"""dns: {workers: N}: `anycastedge serve` and its DNS worker processes reading the same UDP and TCP
sockets, over real loopback sockets.

Which process answered a query is not visible on the wire (NSID and id.server stay the POP's
name): each process counts what it answered, and /status lists the counts per process. So "every
process answers" is: many queries over fresh sockets (new source ports), and every process's count
grew.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from anycastedge.statedir.serials import ServedSerial, write_serials
from tests.support.backends import Backend, serving
from tests.support.procs import free_port, gone, parent
from tests.support.server import (
    HOST,
    LOOPBACK_NETWORKS,
    ServerHandle,
    metric_value,
    minimal_pop_yaml,
    running_server,
    wait_for,
)

POLL = 30.0  # bound of every wait: a worker starts in about a second, a reload in milliseconds
BATCH = 200  # queries per round when spreading over the processes
ROUNDS = 20  # rounds at most before concluding a process answers nothing
RECORD = "workers-test"
FQDN = f"{RECORD}.example.com."


# --- the server and its processes ----------------------------------------------------------------


def processes(server: ServerHandle) -> list[dict[str, Any]]:
    """/status's DNS processes, serve first."""
    entries: list[dict[str, Any]] = server.status()["dns"]["workers"]
    return entries


def in_step(server: ServerHandle) -> list[dict[str, Any]] | None:
    """The processes, if every one runs and follows serve: the same (re)load, answered OK, the
    same serials, the same GSLB health; else None (for polls)."""
    entries = processes(server)
    serve = entries[0]
    for entry in entries[1:]:
        last = entry["last_reload"]
        if not (entry["alive"] and last and last["ok"]):
            return None
        if entry["generation"] != serve["generation"] or entry["serials"] != serve["serials"]:
            return None
        if entry["health_version"] != serve["health_version"]:
            return None
    return entries


def wait_in_step(server: ServerHandle) -> list[dict[str, Any]]:
    return wait_for(lambda: in_step(server), POLL, "every DNS worker in step with serve")


def workers_config(directory: Path, workers: int = 2, **dns_settings: Any) -> Path:
    """pop.yaml with DNS workers and no file watcher (only SIGHUP and POST /reload reload)."""
    directory.mkdir(exist_ok=True)
    settings = {"workers": workers, "watch_interval": 0, **dns_settings}
    return minimal_pop_yaml(directory, dns=settings)


@contextlib.contextmanager
def workers_server(zones: Path, config: Path) -> Iterator[ServerHandle]:
    """serve with DNS workers, yielded once every worker has loaded and follows serve."""
    with running_server(zones, config=config) as server:
        wait_in_step(server)
        yield server


@pytest.fixture
def zones(zones_copy: Path) -> Path:
    """The repo's zones with one record of the test's own."""
    path = zones_copy / "example.com.yaml"
    path.write_text(with_record(path.read_text(), "192.0.2.200"))
    return zones_copy


@pytest.fixture
def server(zones: Path, tmp_path: Path) -> Iterator[ServerHandle]:
    with workers_server(zones, workers_config(tmp_path / "conf")) as handle:
        yield handle


def with_record(base: str, value: str) -> str:
    return base.rstrip("\n") + f"\n{RECORD}:\n  type: A\n  value: {value}\n"


# --- queries -------------------------------------------------------------------------------------


def udp(server: ServerHandle, qname: str, rdtype: str, **make: Any) -> dns.message.Message:
    """One query from a fresh socket (a new source port: the kernel may hand it to any process)."""
    return server.query(qname, rdtype, timeout=5.0, **make)


def tcp(server: ServerHandle, qname: str, rdtype: str) -> dns.message.Message:
    """One query on a fresh TCP connection."""
    return server.query(qname, rdtype, tcp=True, timeout=5.0)


def a_values(reply: dns.message.Message) -> frozenset[str]:
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA, reply
    return frozenset(rd.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A
                     for rd in rrset)  # fmt: skip


def soa_serial(reply: dns.message.Message) -> int:
    assert reply.rcode() == dns.rcode.NOERROR and reply.answer, reply
    return int(reply.answer[0][0].serial)


def answers(ask: Callable[[int], Any], count: int = BATCH) -> list[Any]:
    """``ask(i)`` for i < count, eight at a time: what each returned."""
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(ask, range(count)))


def counts(server: ServerHandle) -> list[int]:
    return [entry["queries"] for entry in processes(server)]


def every_process_answers(server: ServerHandle, ask: Callable[[int], Any]) -> list[Any]:
    """Rounds of ``ask`` until every process's count grew (each reports within a second): what
    every query returned. Fails if a process answered none of ROUNDS x BATCH queries."""
    before = counts(server)
    seen: list[Any] = []
    for _ in range(ROUNDS):
        seen += answers(ask)
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: all(n > b for n, b in zip(counts(server), before, strict=True)),
                     3.0, "every process's count to grow")  # fmt: skip
            return seen
    raise AssertionError(f"a process answered none of {len(seen)} queries: {counts(server)}")


# --- /proc ---------------------------------------------------------------------------------------




def socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                out.add(target)
    return out


def bound_inodes(port: int) -> set[str]:
    """The sockets bound to HOST:``port``, UDP and TCP (listening), from /proc/net."""
    local = f"{0x0100007F:08X}:{port:04X}"  # 127.0.0.1, as the kernel prints it
    out = set()
    for table, state in (("udp", "07"), ("tcp", "0A")):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[3] == state:
                out.add(f"socket:[{fields[9]}]")
    return out


# --- the tests -----------------------------------------------------------------------------------


def test_every_process_answers_on_one_pair_of_sockets(server: ServerHandle) -> None:
    entries = processes(server)
    assert [e["index"] for e in entries] == [0, 1]
    assert entries[0]["pid"] == server.pid
    worker = entries[1]["pid"]
    assert parent(worker) == server.pid
    # One UDP and one TCP socket, bound once by serve and inherited: both processes hold them.
    shared = bound_inodes(server.dns_port)
    assert len(shared) == 2
    assert shared <= socket_inodes(server.pid) and shared <= socket_inodes(worker)

    # Over UDP and over TCP, every process answers, and answers the same.
    for ask in (lambda i: a_values(udp(server, FQDN, "A")),
                lambda i: a_values(tcp(server, FQDN, "A"))):  # fmt: skip
        assert set(every_process_answers(server, ask)) == {frozenset({"192.0.2.200"})}
    # NSID and CHAOS id.server name the POP whichever process answers (and say nothing more).
    pop = server.status()["pop"]

    def identity(i: int) -> tuple[str, bytes]:
        chaos = server.query("id.server.", "TXT", rdclass="CH", timeout=5.0)
        nsid = udp(server, "example.com.", "SOA", use_edns=0, options=[dns.edns.NSIDOption(b"")])
        (option,) = [o for o in nsid.options if o.otype == dns.edns.OptionType.NSID]
        return chaos.answer[0][0].strings[0].decode(), option.to_wire()

    assert set(answers(identity, 100)) == {(pop, pop.encode())}


def test_metrics_sum_every_process(server: ServerHandle) -> None:
    """anycastedge_dns_queries_total counts every process's answers: once all are answered and
    each worker has reported (within a second), exactly the number sent; never more."""
    sent_udp = every_process_answers(server, lambda i: udp(server, "example.com.", "MX"))
    sent_tcp = answers(lambda i: tcp(server, "example.com.", "MX"), 100)
    assert all(r.rcode() == dns.rcode.NOERROR for r in sent_udp + sent_tcp)

    def total() -> float | None:
        text = server.metrics()
        value = metric_value(text, "anycastedge_dns_queries_total", qtype="MX")
        assert value <= len(sent_udp) + len(sent_tcp), value
        return value if value == len(sent_udp) + len(sent_tcp) else None

    wait_for(total, POLL, "the MX queries counted")
    text = server.metrics()
    assert metric_value(text, "anycastedge_dns_queries_total", qtype="MX", transport="tcp") == 100
    for worker in ("0", "1"):
        assert metric_value(text, "anycastedge_dns_worker_up", worker=worker) == 1
        assert metric_value(text, "anycastedge_dns_worker_last_reload_ok", worker=worker) == 1
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def anycastedge_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ANYCASTEDGE_CONFIG"}
    return subprocess.run([sys.executable, "-m", "anycastedge", *args], capture_output=True,
                          text=True, timeout=POLL * 2, env=env)  # fmt: skip


def test_sighup_and_reload_reach_every_process(server: ServerHandle, zones: Path) -> None:
    """A changed zone, reloaded by SIGHUP or POST /reload: once the reload is reported OK, no
    process answers the old record, and every one answers the same new serial."""
    zone = zones / "example.com.yaml"
    text = zone.read_text()
    old_serial = soa_serial(udp(server, "example.com.", "SOA"))

    # SIGHUP: reported OK when every process's last reload is serve's and OK (/status).
    generation = processes(server)[0]["generation"]
    zone.write_text(text.replace("192.0.2.200", "192.0.2.201"))
    server.sighup()
    wait_for(lambda: processes(server)[0]["generation"] > generation, POLL, "serve's reload")
    entries = wait_in_step(server)
    assert [e["last_reload"]["trigger"] for e in entries] == ["SIGHUP", "SIGHUP"]
    serial = entries[0]["serials"]["example.com."]
    assert serial > old_serial
    seen = every_process_answers(
        server, lambda i: (a_values(udp(server, FQDN, "A")), soa_serial(udp(server, "example.com.",
                                                                                "SOA")))
    )  # fmt: skip
    assert set(seen) == {(frozenset({"192.0.2.201"}), serial)}

    # POST /reload (`anycastedge reload`): it answers once every process has reloaded.
    zone.write_text(text.replace("192.0.2.200", "192.0.2.202"))
    result = anycastedge_cli("reload", "--control", f"{HOST}:{server.control_port}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "reloaded by 2 DNS processes"
    seen = every_process_answers(server, lambda i: a_values(udp(server, FQDN, "A")))
    assert set(seen) == {frozenset({"192.0.2.202"})}

    # A broken file: rejected by serve, passed on to no worker; every process keeps answering.
    zone.write_text(text + "broken:\n  type: A\n  value: not-an-address\n")
    result = anycastedge_cli("reload", "--control", f"{HOST}:{server.control_port}")
    assert result.returncode == 1
    assert "reload rejected, the previous zones keep serving" in result.stderr
    assert "not-an-address" in result.stderr
    seen = every_process_answers(server, lambda i: a_values(udp(server, FQDN, "A")))
    assert set(seen) == {frozenset({"192.0.2.202"})}
    entries = processes(server)
    assert entries[0]["last_reload"]["ok"] is False and entries[1]["last_reload"]["ok"] is True


def test_workers_serve_serves_serials(zones: Path, tmp_path: Path) -> None:
    """serials.json says example.com. was served with a higher serial and other content: serve
    serves one more, and so does every worker (they continue from serve's serials, not from the
    file's mtime)."""
    config = workers_config(tmp_path / "conf")
    state = tmp_path / "conf" / "state"
    state.mkdir()
    write_serials(state, {"example.com.": ServedSerial("0" * 64, 4_000_000_000)})
    with workers_server(zones, config) as server:
        seen = every_process_answers(server, lambda i: soa_serial(udp(server, "example.com.",
                                                                      "SOA")))  # fmt: skip
        assert set(seen) == {4_000_000_001}
        assert {e["serials"]["example.com."] for e in processes(server)} == {4_000_000_001}


GSLB_ZONE = "gslb.test"


def gslb_zone(check_port: int) -> str:
    return f"""---
'':
  - type: NS
    values: [ns1.{GSLB_ZONE}.]
ns1:
  type: A
  value: 127.0.0.1
www:
  type: A
  ttl: 30
  values: [127.0.0.99]
  octodns:
    healthcheck: {{protocol: HTTP, port: {check_port}, path: /health, host: www.{GSLB_ZONE}}}
  anycastedge:
    healthcheck: {{interval: 0.3, timeout: 0.2, rise: 1, fall: 1}}
  dynamic:
    pools:
      eu:
        fallback: na
        values:
          - value: 127.0.0.11
      na:
        values:
          - value: 127.0.0.12
    rules:
      - geos: [EU]
        pool: eu
      - pool: na
"""


def test_workers_follow_serves_gslb_health(tmp_path: Path) -> None:
    """serve alone checks the GSLB values; a change of health reaches every worker, which then
    answers as serve does."""
    port = free_port(HOST)
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / f"{GSLB_ZONE}.yaml").write_text(gslb_zone(port))
    config = workers_config(tmp_path / "conf", check_networks=LOOPBACK_NETWORKS,
                            geo={"networks": {"EU": ["192.0.2.0/25"]}})  # fmt: skip
    eu = dns.edns.ECSOption.from_text("192.0.2.0/25")

    def ask(i: int) -> frozenset[str]:
        return a_values(udp(server, f"www.{GSLB_ZONE}", "A", use_edns=0, options=[eu]))

    with (
        serving("127.0.0.11", Backend(), port=port) as backend,
        serving("127.0.0.12", Backend(), port=port),
        workers_server(zones, config) as server,
    ):
        assert set(every_process_answers(server, ask)) == {frozenset({"127.0.0.11"})}
        version = processes(server)[0]["health_version"]
        backend.status = 503
        wait_for(lambda: processes(server)[0]["health_version"] > version, POLL, "eu down")
        wait_in_step(server)
        assert set(every_process_answers(server, ask)) == {frozenset({"127.0.0.12"})}


def test_a_killed_worker_is_restarted_and_serving_goes_on(server: ServerHandle) -> None:
    """SIGKILL a worker (stopped first: it then holds no query it took from the socket): every
    query is answered meanwhile, serve restarts it, it answers again, and no count goes down."""
    old = processes(server)[1]["pid"]
    every_process_answers(server, lambda i: udp(server, FQDN, "A"))
    wait_for(lambda: processes(server)[1]["counters_age_seconds"] is not None, POLL, "a report")
    before = counts(server)
    os.kill(old, signal.SIGSTOP)
    failures: list[str] = []
    answered = [0]
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set() and answered[0] < 50_000:  # bounded
            try:
                assert a_values(udp(server, FQDN, "A")) == {"192.0.2.200"}
                answered[0] += 1
            except (dns.exception.DNSException, OSError, AssertionError) as exc:
                failures.append(repr(exc))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        wait_for(lambda: answered[0] >= 20, POLL, "queries running")
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: gone(old), POLL, "the worker killed")
        entries = wait_for(lambda: (e := in_step(server)) and e[1]["pid"] != old and e,
                           POLL, "the worker restarted")  # fmt: skip
        assert entries[1]["restarts"] == 1 and parent(entries[1]["pid"]) == server.pid
        during = answered[0]
        wait_for(lambda: answered[0] >= during + 50, POLL, "queries after the restart")
    finally:
        stop.set()
        thread.join(POLL)
    assert not failures, failures[:5]
    # The killed process's last report is kept: the worker's count did not go down.
    assert counts(server)[1] >= before[1]
    every_process_answers(server, lambda i: udp(server, FQDN, "A"))


def test_a_worker_that_cannot_load_is_left_down_until_a_reload_succeeds(
    server: ServerHandle, zones: Path
) -> None:
    """Zone files broken on disk (not reloaded: serve serves the previous ones) and a worker
    killed: it cannot start, says why, is restarted a bounded number of times and left down while
    serve answers alone. A reload serve accepts (the file fixed) starts it again."""
    zone = zones / "example.net.yaml"
    good = zone.read_text()
    zone.write_text(good + "broken:\n  type: A\n  value: not-an-address\n")
    old = processes(server)[1]["pid"]
    os.kill(old, signal.SIGKILL)

    def left_down() -> dict[str, Any] | None:
        entry = processes(server)[1]
        return entry if entry["restarts"] == 5 and not entry["alive"] else None

    entry = wait_for(left_down, POLL * 2, "the worker left down")
    wait_for(lambda: "dns worker 1 exited (status 1) after 5 restarts" in server.log_text(), POLL,
             "the log saying the worker is left down")  # fmt: skip
    last = entry["last_reload"]
    assert last["ok"] is False and last["trigger"] == "start"
    assert any("example.net.yaml" in p and "not-an-address" in p for p in last["problems"])
    assert set(answers(lambda i: a_values(udp(server, FQDN, "A")))) == {frozenset({"192.0.2.200"})}
    assert entry["serials"] == {}  # it serves nothing
    control = f"{HOST}:{server.control_port}"
    assert anycastedge_cli("reload", "--control", control).returncode == 1  # still broken

    zone.write_text(good)
    result = anycastedge_cli("reload", "--control", control)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "reloaded by 2 DNS processes"
    entries = wait_in_step(server)
    assert entries[1]["alive"] and entries[1]["pid"] != old
    every_process_answers(server, lambda i: udp(server, FQDN, "A"))


def test_sigterm_stops_every_worker(server: ServerHandle) -> None:
    worker = processes(server)[1]["pid"]
    assert server.stop() == 0
    wait_for(lambda: gone(worker), POLL, f"worker pid {worker} gone")
    # Nothing holds the DNS port any more: a new socket binds it.
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind((HOST, server.dns_port))


def test_a_worker_stops_when_serve_is_killed(server: ServerHandle) -> None:
    """serve killed with SIGKILL cannot stop its workers: each notices its link closed."""
    worker = processes(server)[1]["pid"]
    server.send_signal(signal.SIGKILL)
    server.process.wait(timeout=POLL)
    wait_for(lambda: gone(worker), POLL, f"worker pid {worker} gone")


def test_workers_refused_with_file_and_line(tmp_path: Path) -> None:
    """`config check` names dns.workers and where it is for every bad value; auto is a count."""
    env = {k: v for k, v in os.environ.items() if k != "ANYCASTEDGE_CONFIG"}
    (tmp_path / "zones").mkdir()
    for value in ("0", "65", "many", "true", "1.5", "auto"):
        config = tmp_path / "pop.yaml"
        config.write_text(f"pop: p\ndns:\n  zones: zones\n  workers: {value}\n")
        proc = subprocess.run(
            [sys.executable, "-m", "anycastedge", "config", "check", "-c", str(config)],
            capture_output=True, text=True, timeout=POLL, env=env,
        )  # fmt: skip
        if value == "auto":
            assert proc.returncode == 0, proc.stderr
            count = min(os.cpu_count() or 1, 64)
            assert (f", {count} processes," in proc.stdout) == (count > 1), proc.stdout
            continue
        assert proc.returncode == 1, (value, proc.stdout)
        assert f"{config}, line 4," in proc.stderr and "dns.workers" in proc.stderr, proc.stderr
