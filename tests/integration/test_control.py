"""The control endpoint on loopback: /healthz, /status and /metrics of a running server."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.procs import free_port
from tests.support.server import (
    DEFAULT_POP,
    REPO_ZONES,
    ServerHandle,
    minimal_pop_yaml,
    running_server,
    zone_names,
)

QUERIES = "anycastedge_dns_queries_total"


def anycastedge_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would, bounded in time."""
    return subprocess.run(
        [sys.executable, "-m", "anycastedge", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def query_count(text: str, zone: str, qtype: str, rcode: str, transport: str) -> float:
    """anycastedge_dns_queries_total for these labels (zone with or without the final dot)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == QUERIES
                and labels.get("zone", "").rstrip(".") == zone.rstrip(".")
                and (labels.get("qtype"), labels.get("rcode"), labels.get("transport"))
                == (qtype, rcode, transport)
            ):
                total += sample.value
    return total


def test_healthz_is_ok(server: ServerHandle) -> None:
    """/healthz answers 200 while zones are served."""
    code, body = server.http_get("/healthz")
    assert code == 200
    assert body.strip() == "ok"


def test_unknown_path_is_404(server: ServerHandle) -> None:
    """Paths other than /healthz, /status and /metrics are 404."""
    code, _ = server.http_get("/no-such-page")
    assert code == 404


def test_status_names_pop_and_zones_with_serial_and_load_time(server: ServerHandle) -> None:
    """/status JSON: POP name, zones with serial and load time, last reload result."""
    status = server.status()
    assert status["pop"] == DEFAULT_POP
    zones = {z["name"]: z for z in status["zones"]}
    assert sorted(zones) == zone_names(REPO_ZONES)
    for name, zone in zones.items():
        assert zone["serial"] == server.soa_serial(name), zone
        assert isinstance(zone["loaded_at"], (int, float)), zone
        assert 0 < zone["loaded_at"] <= time.time(), zone
    last = status["last_reload"]
    assert last["ok"] is True and last["trigger"] == "start", last
    assert status["reloads"]["failure"] == 0


def test_metrics_count_queries_by_zone_qtype_rcode_transport(server: ServerHandle) -> None:
    """Query counters grow by exactly the queries sent, per zone/qtype/rcode/transport."""
    cases = [
        # (qname, qtype, tcp, zone label, rcode label, how many)
        ("www.example.com.", "A", False, "example.com", "NOERROR", 3),
        ("www.example.com.", "A", True, "example.com", "NOERROR", 2),
        ("example.net.", "SOA", True, "example.net", "NOERROR", 1),
        ("metrics-nx.example.com.", "AAAA", False, "example.com", "NXDOMAIN", 2),
        ("example.com.", "MX", False, "example.com", "NOERROR", 1),
    ]
    before = server.metrics()
    for qname, qtype, tcp, *_, count in cases:
        for _ in range(count):
            server.query(qname, qtype, tcp=tcp)
    after = server.metrics()
    for qname, qtype, tcp, zone, rcode, count in cases:
        transport = "tcp" if tcp else "udp"
        delta = query_count(after, zone, qtype, rcode, transport) - query_count(
            before, zone, qtype, rcode, transport
        )
        assert delta == count, (qname, qtype, transport, delta)


def test_metrics_count_refused_queries(server: ServerHandle) -> None:
    """Queries outside our zones are counted as REFUSED (zone label "-": no zone of ours)."""

    def refused(text: str) -> float:
        return sum(
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == QUERIES
            and s.labels.get("rcode") == "REFUSED"
            and s.labels.get("transport") == "udp"
        )

    before = server.metrics()
    for _ in range(4):
        reply = server.query("example.org.", "A")
        assert reply.rcode() == dns.rcode.REFUSED
    assert refused(server.metrics()) - refused(before) == 4


def test_metrics_export_reloads_and_serials(server: ServerHandle) -> None:
    """/metrics has the reload counters and a serial gauge per zone equal to the SOA serial."""
    text = server.metrics()
    assert server.metric("anycastedge_dns_reloads_total", result="success") >= 1
    assert 'anycastedge_dns_reloads_total{result="failure"}' in text
    for name in zone_names(REPO_ZONES):
        gauge = sum(
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "anycastedge_dns_zone_serial"
            and s.labels.get("zone", "").rstrip(".") == name.rstrip(".")
        )
        assert gauge == server.soa_serial(name), name


def test_healthz_is_503_without_zones(tmp_path: Path) -> None:
    """A server with an empty zones directory is unhealthy (503) and refuses every query."""
    empty = tmp_path / "zones"
    empty.mkdir()
    with running_server(empty) as server:
        code, _ = server.http_get("/healthz")
        assert code == 503
        reply = dns.query.udp(
            dns.message.make_query("example.com.", "SOA"),
            server.host,
            port=server.dns_port,
            timeout=5,
        )
        assert reply.rcode() == dns.rcode.REFUSED
        assert server.status()["zones"] == []


@pytest.mark.parametrize("path", ["/healthz", "/status", "/metrics"])
def test_control_endpoint_is_plain_http_on_loopback(server: ServerHandle, path: str) -> None:
    """Each control page answers 200 to a plain GET on 127.0.0.1."""
    code, body = server.http_get(path)
    assert code == 200 and body


def test_status_and_startup_line_name_the_pid(server: ServerHandle) -> None:
    """/status carries serve's PID, and so does its first log line (no hunting for it)."""
    assert server.status()["pid"] == server.pid
    assert f"(pid {server.pid})" in server.log_text().splitlines()[0]


def test_metrics_have_build_info_and_process_metrics(server: ServerHandle) -> None:
    """What Prometheus users expect of an exporter: build info and the process collector's."""
    families = {f.name: f for f in text_string_to_metric_families(server.metrics())}
    (build,) = families["anycastedge_build_info"].samples
    assert build.value == 1 and build.labels["version"] and build.labels["python"]
    assert families["process_cpu_seconds"].samples[0].value > 0
    assert families["process_resident_memory_bytes"].samples[0].value > 0


def test_metrics_pass_promtool(server: ServerHandle) -> None:
    """Prometheus's own linter accepts the exposition (names, help, types, units)."""
    server.query("www.example.com.", "A")
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=server.metrics(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_reload_command_reports_the_outcome(zones_copy: Path, tmp_path: Path) -> None:
    """`anycastedge reload` reloads a running serve through its control endpoint: a broken
    zone is rejected with file:line (exit 1) and the old zones keep serving; fixed, it loads."""
    # No file watcher: only the command reloads, so the counts below are exactly its own.
    config = minimal_pop_yaml(tmp_path, dns={"watch_interval": 0})
    with running_server(zones_copy, config=config) as server:
        control = f"127.0.0.1:{server.control_port}"
        zone = zones_copy / "example.net.yaml"
        good = zone.read_text()
        zone.write_text(good + "broken:\n  type: A\n  value: not-an-address\n")
        result = anycastedge_cli("reload", "--control", control, cwd=tmp_path)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "example.net.yaml, line" in result.stderr and "broken" in result.stderr
        assert server.query("example.net.", "SOA").rcode() == dns.rcode.NOERROR
        zone.write_text(good + "added:\n  type: A\n  value: 192.0.2.7\n")
        result = anycastedge_cli("reload", "--control", control, cwd=tmp_path)
        assert (result.returncode, result.stdout.strip()) == (0, "reloaded"), result.stderr
        assert server.query("added.example.net.", "A").answer
        assert server.status()["reloads"] == {"success": 2, "failure": 1}


def test_reload_command_without_a_server_fails_clearly(tmp_path: Path) -> None:
    """Nothing listening: a clear message and exit 1, not a traceback."""
    port = free_port()
    result = anycastedge_cli("reload", "--control", f"127.0.0.1:{port}", cwd=tmp_path)
    assert result.returncode == 1
    assert f"cannot reach serve at http://127.0.0.1:{port}/reload" in result.stderr


def test_every_exported_metric_is_documented(server: ServerHandle) -> None:
    """Each anycastedge_* family in /metrics has a row in docs/operations.md."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    families = text_string_to_metric_families(server.metrics())
    names = {f.name + ("_total" if f.type == "counter" else "") for f in families}
    ours = {n for n in names if n.startswith("anycastedge_")}
    assert {"anycastedge_bgp_prefix", "anycastedge_bgp_hook_state"} <= ours
    assert sorted(n for n in ours if f"`{n}`" not in doc) == []
