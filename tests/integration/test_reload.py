"""Reload without loss: SIGHUP and file changes swap in a new zone set only if it validates."""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.support.server import (
    DEFAULT_POP,
    ServerHandle,
    minimal_pop_yaml,
    running_server,
    wait_for,
)

#: Bound for every poll in this file: the watcher runs each second, a reload takes milliseconds.
POLL = 20.0
RECORD = "reload-test"
FQDN = f"{RECORD}.example.com."


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` as deploy tools do (temp file + rename), so no reader sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")  # not *.yaml: never taken for a zone
    tmp.write_text(text)
    os.replace(tmp, path)


def zone_with_record(base: str, value: str) -> str:
    """example.com.yaml from the repo plus one A record at ``reload-test`` (last in the file)."""
    return base.rstrip("\n") + f"\n{RECORD}:\n  type: A\n  value: {value}\n"


def record_line(text: str) -> int:
    """1-based line of the ``reload-test`` record's first key (where problems are reported)."""
    return text.splitlines().index(f"{RECORD}:") + 2


def answered_a(server: ServerHandle, name: str, tcp: bool = False) -> set[str]:
    """The A addresses in the answer to ``name`` A; empty unless NOERROR with AA (for polls)."""
    reply = server.query(name, "A", tcp=tcp)
    if reply.rcode() != dns.rcode.NOERROR or not reply.flags & dns.flags.AA:
        return set()
    return {rd.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset}


def a_values(server: ServerHandle, name: str, tcp: bool = False) -> set[str]:
    """The A addresses answered for ``name`` (the CNAME chain's end included), asserting
    NOERROR with AA."""
    reply = server.query(name, "A", tcp=tcp)
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA, reply
    return {rd.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset}


def reloads(server: ServerHandle) -> dict[str, Any]:
    """The reload counters from /status."""
    counters: dict[str, Any] = server.status()["reloads"]
    return counters


@pytest.fixture
def zones(zones_copy: Path) -> Path:
    """The repo's zones with the test's own record added to example.com."""
    path = zones_copy / "example.com.yaml"
    path.write_text(zone_with_record(path.read_text(), "192.0.2.200"))
    return zones_copy


@pytest.fixture
def sighup_only_config(tmp_path: Path) -> Path:
    """pop.yaml with the file watcher off (dns.watch_interval: 0): only SIGHUP reloads."""
    (tmp_path / "conf").mkdir()
    return minimal_pop_yaml(tmp_path / "conf", DEFAULT_POP, dns={"watch_interval": 0})


@pytest.fixture
def sighup_server(zones: Path, sighup_only_config: Path) -> Iterator[ServerHandle]:
    """A server for ``zones`` that reloads on SIGHUP only."""
    with running_server(zones, config=sighup_only_config) as handle:
        yield handle


@pytest.fixture
def watching_server(zones: Path) -> Iterator[ServerHandle]:
    """A server for ``zones`` with the default file watcher (every second)."""
    with running_server(zones) as handle:
        yield handle


def test_broken_zone_keeps_old_answers_then_fix_is_served(sighup_server: ServerHandle) -> None:
    """Bad IPv4 + SIGHUP: old answers stay, /status and /metrics say why; fixed + SIGHUP: new."""
    server = sighup_server
    assert server.zones_dir is not None
    path = server.zones_dir / "example.com.yaml"
    good = path.read_text()
    serial = server.soa_serial("example.com.")
    assert a_values(server, FQDN) == {"192.0.2.200"}
    before = reloads(server)

    broken = good.replace("value: 192.0.2.200", "value: 192.0.2.999")
    assert broken != good
    write_atomically(path, broken)
    server.sighup()
    wait_for(lambda: reloads(server)["failure"] > before["failure"], POLL, "a rejected reload")

    status = server.status()
    assert status["last_reload"]["ok"] is False, status
    assert status["last_reload"]["trigger"] == "SIGHUP", status
    expected = (
        f'"{RECORD}": invalid IPv4 address "192.0.2.999" '
        f"({path}, line {record_line(broken)}, column 3)"
    )
    assert expected in status["last_reload"]["problems"], status
    # The old zone set keeps serving, unchanged.
    assert a_values(server, FQDN) == {"192.0.2.200"}
    assert a_values(server, "www.example.com.") == {"192.0.2.80", "192.0.2.81"}
    assert server.soa_serial("example.com.") == serial
    assert {z["name"] for z in status["zones"]} == {"example.com.", "example.net."}
    assert server.metric("anycastedge_dns_reloads_total", result="failure") >= 1
    assert server.metric("anycastedge_dns_last_reload_ok") == 0
    log = wait_for(
        lambda: expected in server.log_text() and server.log_text(), POLL, "the reason in the log"
    )
    assert "reload rejected" in log

    write_atomically(path, good.replace("value: 192.0.2.200", "value: 192.0.2.201"))
    server.sighup()
    wait_for(lambda: answered_a(server, FQDN) == {"192.0.2.201"}, POLL, "the fixed value")
    assert server.soa_serial("example.com.") > serial
    status = server.status()
    assert status["last_reload"]["ok"] is True, status
    assert server.metric("anycastedge_dns_last_reload_ok") == 1
    assert a_values(server, FQDN, tcp=True) == {"192.0.2.201"}


def test_every_problem_of_a_rejected_reload_is_reported(sighup_server: ServerHandle) -> None:
    """Two broken files in one reload: /status lists a reason for each, with file and line."""
    server = sighup_server
    assert server.zones_dir is not None
    com = server.zones_dir / "example.com.yaml"
    net = server.zones_dir / "example.net.yaml"
    before = reloads(server)
    com_text = com.read_text().replace("value: 192.0.2.200", "value: 192.0.2.999")
    write_atomically(com, com_text)
    net_text = (
        net.read_text().rstrip("\n") + "\nbad-ttl:\n  ttl: -1\n  type: A\n  value: 127.0.0.9\n"
    )
    write_atomically(net, net_text)
    server.sighup()
    wait_for(lambda: reloads(server)["failure"] > before["failure"], POLL, "a rejected reload")
    problems = server.status()["last_reload"]["problems"]
    net_line = net_text.splitlines().index("bad-ttl:") + 2
    assert (
        f'"{RECORD}": invalid IPv4 address "192.0.2.999" '
        f"({com}, line {record_line(com_text)}, column 3)"
    ) in problems, problems
    assert f'"bad-ttl": invalid ttl "-1" ({net}, line {net_line}, column 3)' in problems, problems
    assert a_values(server, FQDN) == {"192.0.2.200"}


def test_sighup_without_changes_keeps_the_serial(sighup_server: ServerHandle) -> None:
    """A SIGHUP that finds the same content reloads successfully and keeps every SOA serial."""
    server = sighup_server
    serials = {z: server.soa_serial(z) for z in ("example.com.", "example.net.")}
    before = reloads(server)
    server.sighup()
    wait_for(lambda: reloads(server)["success"] > before["success"], POLL, "a reload")
    assert server.status()["last_reload"]["ok"] is True
    assert {z: server.soa_serial(z) for z in serials} == serials


def test_a_reload_reads_only_the_files_that_changed(sighup_server: ServerHandle) -> None:
    """One of two zone files changes: that zone is built anew, the other is kept as it was
    (same load time in /status) and, shared by the old and new zone sets, still answers after
    the old set is taken apart."""
    server = sighup_server
    assert server.zones_dir is not None
    path = server.zones_dir / "example.com.yaml"

    def loaded() -> dict[str, float]:
        return {z["name"]: z["loaded_at"] for z in server.status()["zones"]}

    before = loaded()
    net_answer = a_values(server, "www.example.net.")
    assert net_answer
    write_atomically(path, path.read_text().replace("192.0.2.200", "192.0.2.203"))
    server.sighup()
    wait_for(lambda: answered_a(server, FQDN) == {"192.0.2.203"}, POLL, "the new value")
    after = loaded()
    assert after["example.com."] > before["example.com."]
    assert after["example.net."] == before["example.net."]
    assert a_values(server, "www.example.net.") == net_answer
    assert a_values(server, "www.example.net.", tcp=True) == net_answer


def test_watcher_off_means_no_reload_without_sighup(sighup_server: ServerHandle) -> None:
    """With dns.watch_interval 0 a changed file is served after SIGHUP, by exactly one reload."""
    server = sighup_server
    assert server.zones_dir is not None
    path = server.zones_dir / "example.com.yaml"
    write_atomically(path, path.read_text().replace("192.0.2.200", "192.0.2.202"))
    # No reload may have happened on its own: the counters only move on SIGHUP.
    before = reloads(server)
    assert a_values(server, FQDN) == {"192.0.2.200"}
    server.sighup()
    wait_for(lambda: answered_a(server, FQDN) == {"192.0.2.202"}, POLL, "the new value")
    assert reloads(server)["success"] == before["success"] + 1


def test_file_change_is_picked_up_without_sighup(watching_server: ServerHandle) -> None:
    """Editing a zone file (no signal) reloads it: the new answer appears, the serial grows."""
    server = watching_server
    assert server.zones_dir is not None
    path = server.zones_dir / "example.com.yaml"
    serial = server.soa_serial("example.com.")
    write_atomically(path, path.read_text().replace("192.0.2.200", "192.0.2.203"))
    wait_for(lambda: answered_a(server, FQDN) == {"192.0.2.203"}, POLL, "the edited value")
    assert server.soa_serial("example.com.") > serial
    last = server.status()["last_reload"]
    assert last["ok"] is True and last["trigger"] == "file change", last


def test_file_edited_in_place_is_picked_up(watching_server: ServerHandle) -> None:
    """An in-place edit (same inode, as `vi` or `echo >>` do it) is noticed too."""
    server = watching_server
    assert server.zones_dir is not None
    path = server.zones_dir / "example.net.yaml"
    with path.open("a") as handle:
        handle.write("inplace:\n  type: A\n  value: 127.0.0.44\n")
    wait_for(lambda: answered_a(server, "inplace.example.net.") == {"127.0.0.44"}, POLL, "new name")


def test_broken_file_change_is_rejected_without_sighup(watching_server: ServerHandle) -> None:
    """A broken edit noticed by the watcher is rejected (trigger: file change), old data stays."""
    server = watching_server
    assert server.zones_dir is not None
    path = server.zones_dir / "example.com.yaml"
    before = reloads(server)
    write_atomically(path, path.read_text().replace("192.0.2.200", "not-an-address"))
    wait_for(lambda: reloads(server)["failure"] > before["failure"], POLL, "a rejected reload")
    last = server.status()["last_reload"]
    assert last["ok"] is False and last["trigger"] == "file change", last
    assert any('invalid IPv4 address "not-an-address"' in p for p in last["problems"]), last
    assert a_values(server, FQDN) == {"192.0.2.200"}


def test_new_zone_file_is_served_and_removed_zone_is_dropped(watching_server: ServerHandle) -> None:
    """A zone file that appears is served; one that disappears stops being served (REFUSED)."""
    server = watching_server
    assert server.zones_dir is not None
    new = server.zones_dir / "added.test.yaml"
    write_atomically(
        new,
        "'':\n  type: NS\n  value: ns.added.test.\nns:\n  type: A\n  value: 127.0.0.45\n",
    )
    wait_for(lambda: answered_a(server, "ns.added.test.") == {"127.0.0.45"}, POLL, "the new zone")
    assert "added.test." in {z["name"] for z in server.status()["zones"]}
    new.unlink()
    wait_for(
        lambda: server.query("ns.added.test.", "A").rcode() == dns.rcode.REFUSED,
        POLL,
        "the removed zone to be dropped",
    )
    assert a_values(server, "www.example.com.") == {"192.0.2.80", "192.0.2.81"}


def test_serial_does_not_go_back_across_a_restart(zones: Path, tmp_path: Path) -> None:
    """After an edit and a rollback, a restart (same state_dir) does not serve a lower serial."""
    config = minimal_pop_yaml(tmp_path)
    path = zones / "example.com.yaml"
    original = path.read_text()
    month_ago = time.time() - 30 * 86400  # e.g. a file restored from a backup with its mtime
    os.utime(path, (month_ago, month_ago))
    with running_server(zones, config=config) as server:
        first = server.soa_serial("example.com.")
        write_atomically(path, original.replace("192.0.2.200", "192.0.2.220"))
        server.sighup()
        wait_for(lambda: answered_a(server, FQDN) == {"192.0.2.220"}, POLL, "the edit")
        write_atomically(path, original)
        os.utime(path, (month_ago, month_ago))
        server.sighup()
        wait_for(lambda: answered_a(server, FQDN) == {"192.0.2.200"}, POLL, "the rollback")
        served = server.soa_serial("example.com.")
        assert served > first
    with running_server(zones, config=config) as server:
        assert answered_a(server, FQDN) == {"192.0.2.200"}
        assert server.soa_serial("example.com.") >= served


def _open_gate_writer(fifo: Path) -> int | None:
    """A write end of ``fifo`` once a reader (the reload thread) has it open, else None."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: nobody reads it yet
        return None


def test_sighup_during_a_reload_is_not_lost(sighup_server: ServerHandle) -> None:
    """A file changed and signalled while a reload is in flight is served once it completes."""
    server = sighup_server
    assert server.zones_dir is not None
    path = server.zones_dir / "example.com.yaml"
    base = path.read_text()
    before = reloads(server)
    # A FIFO sorted after example.com.yaml holds the reload in flight: the reload thread opens
    # it (after reading example.com.yaml) and blocks until this test writes to it.
    gate = server.zones_dir / "zzz-gate.test.yaml"
    gate_zone = "'':\n  type: NS\n  value: ns.zzz-gate.test.\n"
    os.mkfifo(gate)
    write_atomically(path, base.replace("192.0.2.200", "192.0.2.231"))
    server.sighup()  # reload 1: reads .231, then blocks on the gate
    writer = wait_for(lambda: _open_gate_writer(gate), POLL, "the reload to open the gate")
    try:
        write_atomically(path, base.replace("192.0.2.200", "192.0.2.232"))
        write_atomically(gate, gate_zone)  # a plain file from now on; reload 1 holds the FIFO
        server.sighup()  # reload 2 is due: .232 was written after reload 1 read the file
        for _ in range(5):  # the reactor has run several iterations: it has seen the signal
            assert reloads(server) == before
    finally:
        os.write(writer, gate_zone.encode())
        os.close(writer)
    wait_for(lambda: reloads(server)["success"] > before["success"], POLL, "reload 1 to finish")
    assert answered_a(server, FQDN) in ({"192.0.2.231"}, {"192.0.2.232"})
    # Reload 2 (or reload 1 redone) must follow; it takes milliseconds for these small zones.
    wait_for(lambda: answered_a(server, FQDN) == {"192.0.2.232"}, 5.0, "the second change")


# No query fails during a reload -----------------------------------------------------------------

#: Queries sent in the loop: at least this many, and at least FLIPS completed reloads.
MIN_QUERIES = 2000
FLIPS = 5
#: Hard bounds of the loop (it stops with a failure if reloads never complete).
MAX_QUERIES = 20000
MAX_SECONDS = 60.0


class TcpClient:
    """One persistent TCP connection, queries sent one after another."""

    def __init__(self, server: ServerHandle) -> None:
        self.sock = socket.create_connection(server.address, timeout=5)

    def query(self, message: dns.message.Message) -> dns.message.Message:
        wire = message.to_wire()
        self.sock.sendall(struct.pack("!H", len(wire)) + wire)
        reply, _ = dns.query.receive_tcp(self.sock, time.time() + 5)
        return reply

    def close(self) -> None:
        self.sock.close()


def test_no_query_fails_during_reloads(watching_server: ServerHandle) -> None:
    """Every UDP and TCP query is answered while the zone set is swapped again and again."""
    server = watching_server
    assert server.zones_dir is not None
    path = server.zones_dir / "example.com.yaml"
    base = path.read_text()
    values = itertools.cycle([f"192.0.2.{210 + i}" for i in range(4)])
    current, target = "192.0.2.200", next(values)
    write_atomically(path, base.replace("192.0.2.200", target))
    server.sighup()

    questions = [
        (FQDN, "A"),
        ("www.example.com.", "A"),
        ("example.com.", "SOA"),
        ("no-such-name.example.com.", "A"),
        ("www.example.net.", "A"),
    ]
    tcp = TcpClient(server)
    failures: list[str] = []
    flips = 0
    sent = 0
    last_serial = 0
    deadline = time.monotonic() + MAX_SECONDS
    try:
        while sent < MIN_QUERIES or flips < FLIPS:
            assert sent < MAX_QUERIES and time.monotonic() < deadline, (
                f"reloads did not complete: {flips} of {FLIPS} after {sent} queries"
            )
            name, rdtype = questions[sent % len(questions)]
            query = dns.message.make_query(name, rdtype)
            over_tcp = sent % 2 == 1
            sent += 1
            try:
                if over_tcp:
                    reply = tcp.query(query)
                else:
                    reply = dns.query.udp(query, server.host, port=server.dns_port, timeout=2)
            except (OSError, dns.exception.DNSException) as error:
                failures.append(f"{name} {rdtype} over {'TCP' if over_tcp else 'UDP'}: {error!r}")
                continue
            expected = dns.rcode.NXDOMAIN if name.startswith("no-such") else dns.rcode.NOERROR
            if (
                reply.id != query.id
                or reply.rcode() != expected
                or not reply.answer
                and (expected == dns.rcode.NOERROR)
            ):
                failures.append(f"{name} {rdtype}: {reply.rcode()!r} {reply.answer}")
                continue
            if rdtype == "SOA":
                serial = int(reply.answer[0][0].serial)
                if serial < last_serial:
                    failures.append(f"serial went back from {last_serial} to {serial}")
                last_serial = max(last_serial, serial)
            if name == FQDN:
                seen = {rd.address for rd in reply.answer[0]}
                if seen not in ({current}, {target}):
                    failures.append(f"{FQDN}: {seen}, expected {current} or {target}")
                elif seen == {target}:  # swapped in: start the next change
                    flips += 1
                    current, target = target, next(values)
                    write_atomically(path, base.replace("192.0.2.200", target))
                    if flips % 2:
                        server.sighup()  # every other change: SIGHUP; else the watcher finds it
    finally:
        tcp.close()
    assert failures == [], f"{len(failures)} of {sent} queries failed: {failures[:10]}"
    assert server.alive()
    assert server.status()["reloads"]["failure"] == 0
