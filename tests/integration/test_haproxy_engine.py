"""``forward.engine: haproxy`` run by serve: reloads under load, refused configs, restarts,
dying with serve, the one view of health (/status, /metrics, /forward/health) and access logs.

Every endpoint and client is on loopback and run by the test; the only processes signalled are
serve (started here) and the HAProxy master /status names, checked in /proc to be serve's child.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from anycastedge.forward.haproxy_files import check_config
from tests.support.forward import Endpoint, listener_ports
from tests.support.haproxy import (
    HAPROXY,
    HOST,
    POLL,
    Proc,
    echo_endpoint,
    echo_once,
    endpoint_of,
    engine_pop,
    get,
    kill_master,
    needs_haproxy,
    recv_exactly,
    wrapper,
)
from tests.support.http_backend import EndpointServer, endpoints
from tests.support.procs import children
from tests.support.server import metric_value, wait_for

pytestmark = needs_haproxy


def forward_yaml(
    ports: dict[str, int],
    app: list[tuple[EndpointServer, int]],
    echo: Endpoint | None = None,
    balance: str = "round_robin",
    extra: str = "",
    app_extra: str = "",
    web: str = "routes: [{backend: app}]",
) -> str:
    """forward: (engine haproxy) with an HTTP listener ``web`` to backend ``app`` (endpoints
    with weights) and, given ``echo``, a TCP listener ``tcp`` to it."""
    addresses = ", ".join(f'{{address: "{HOST}:{s.port}", weight: {w}}}' for s, w in app)
    lines = [
        "forward:",
        "  engine: haproxy",
        *[f"  {line}" for line in extra.splitlines() if line],
        "  listeners:",
        f'    web: {{bind: "{HOST}:{ports["web"]}", protocol: http, {web}}}',
    ]
    if echo is not None:
        lines.append(f'    tcp: {{bind: "{HOST}:{ports["tcp"]}", protocol: tcp, backend: echo}}')
    lines += [
        "  backends:",
        "    app:",
        f"      balance: {balance}",
        "      healthcheck: {kind: tcp, interval: 0.2, timeout: 0.2, fall: 2}",
        f"      endpoints: [{addresses}]",
        *[f"      {line}" for line in app_extra.splitlines() if line],
    ]
    if echo is not None:
        lines += [
            "    echo:",
            "      healthcheck: {kind: tcp, interval: 0.2}",
            f'      endpoints: [{{address: "{HOST}:{echo.port}"}}]',
        ]
    return "\n".join(lines) + "\n"


# --- 6. the access log ------------------------------------------------------------------------

# docs/forwarding.md, "Access log" and "Engines: ... What still differs": time, client, host,
# "METHOD target", status, bytes in, bytes out, backend, endpoint, upstream ms, total ms, and
# HAProxy's termination state in place of the reason.
LINE = re.compile(
    r'(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) (?P<client>\S+) (?P<host>\S+) '
    r'"(?P<method>\S+) (?P<target>\S+)" (?P<status>\d+) (?P<bytes_in>\d+) (?P<bytes_out>\d+) '
    r"(?P<backend>\S+) (?P<endpoint>\S+) (?P<upstream>-?\d+) (?P<total>-?\d+) (?P<state>\S{4})"
)


def test_access_log_one_line_per_request_in_the_documented_shape(tmp_path: Path) -> None:
    """Every request through an HTTP listener with access_log: FILE is one line of FILE, in
    order, with the documented fields: routed ones name the backend and endpoint, a local 404
    (no route) names the listener and no endpoint."""
    log = tmp_path / "web.log"
    ports = listener_ports("web")
    with endpoints("a") as (a,):
        routes = f'routes: [{{backend: app, hosts: ["app.test"]}}], access_log: "{log}"'
        with engine_pop(tmp_path, forward_yaml(ports, [(a, 1)], web=routes)) as pop:
            pop.usable("app")
            sent = []
            for i in range(5):
                conn = http.client.HTTPConnection(HOST, ports["web"], timeout=POLL)
                with contextlib.closing(conn):
                    conn.request("GET", f"/echo/{i}?q={i}", headers={"Host": "app.test"})
                    response = conn.getresponse()
                    assert response.status == 200
                    assert endpoint_of(response.read()) == "a"
                sent.append((f"/echo/{i}?q={i}", "app.test", 200))
            conn = http.client.HTTPConnection(HOST, ports["web"], timeout=POLL)
            with contextlib.closing(conn):
                conn.request("GET", "/nowhere", headers={"Host": "other.test"})
                assert conn.getresponse().status == 404
            sent.append(("/nowhere", "other.test", 404))

            def lines() -> list[str] | None:
                text = log.read_text() if log.exists() else ""
                found = text.splitlines()
                return found if len(found) >= len(sent) else None

            written = wait_for(lines, POLL, f"{len(sent)} lines in {log}")
            assert len(written) == len(sent), written  # one line per request, not more
            for line, (target, host, status) in zip(written, sent, strict=True):
                match = LINE.fullmatch(line)
                assert match is not None, line
                assert match["client"] == "127.0.0.1"
                assert (match["host"], match["method"], match["target"]) == (host, "GET", target)
                assert int(match["status"]) == status
                assert int(match["bytes_out"]) > 0
                if status == 200:
                    assert (match["backend"], match["endpoint"]) == ("app", f"{HOST}:{a.port}")
                    assert int(match["upstream"]) >= 0 and int(match["total"]) >= 0
                    assert match["state"] == "----"  # a normal end
                else:
                    assert match["backend"] == "web"  # a local answer: the frontend's name
                    assert match["upstream"] == "-1"  # no endpoint answered
            # A later request is logged after them: nothing was written twice.
            assert get(ports["web"], "/late")[0] == 404
            final = wait_for(lambda: len(log.read_text().splitlines()) > len(sent) or None,
                             POLL, "the later line")  # fmt: skip
            assert final and len(log.read_text().splitlines()) == len(sent) + 1


# --- 3. restarts, bounded, failing closed -----------------------------------------------------


def test_killed_haproxy_is_restarted_then_given_up_and_health_fails_closed(tmp_path: Path) -> None:
    """SIGKILL to HAProxy's master: serve starts it again (a new PID, restarts 1) and traffic
    flows. Once it cannot start any more (a wrapper that runs the real binary for the first two
    starts only), serve gives up after its bounded restarts and every view fails closed:
    /forward/health 503 "haproxy is not running", haproxy_up 0, no endpoint usable."""
    starts = tmp_path / "starts"
    # Counts the starts (not the -c checks) and runs HAProxy for the first two only.
    binary = wrapper(tmp_path / "haproxy-twice", f"""
case " $* " in *" -c "*) exec "$HAPROXY" "$@";; esac
echo start >> {starts}
[ "$(wc -l < {starts})" -le 2 ] || exit 1
exec "$HAPROXY" "$@"
""")
    ports = listener_ports("web")
    with endpoints("a") as (a,):
        forward = forward_yaml(ports, [(a, 1)], extra=f'haproxy: {{binary: "{binary}"}}')
        with engine_pop(tmp_path, forward) as pop:
            pop.usable("app")
            assert get(ports["web"], "/echo")[0] == 200
            first = pop.engine()
            assert (first["running"], first["restarts"], first["given_up"]) == (True, 0, False)

            killed = kill_master(pop)

            def restarted() -> dict[str, object] | None:
                engine = pop.engine()
                new = engine["pid"] != killed and engine["running"]
                return engine if new and engine["restarts"] == 1 else None

            again = wait_for(restarted, POLL, "HAProxy started again")
            assert again["given_up"] is False
            pop.usable("app")
            assert endpoint_of(get(ports["web"], "/echo")[1]) == "a"
            assert pop.server.http_get("/forward/health")[0] == 200

            kill_master(pop)
            # Down for good: every start after the second exits at once.
            gone = wait_for(lambda: (e := pop.engine())["given_up"] and e, POLL, "given up")
            assert gone["running"] is False
            assert gone["restarts"] >= 2
            code, body = pop.server.http_get("/forward/health")
            assert code == 503
            assert "haproxy is not running" in body
            assert pop.server.http_get("/forward/backends/app/health")[0] == 503
            metrics = pop.server.metrics()
            assert metric_value(metrics, "anycastedge_forward_haproxy_up") == 0
            assert metric_value(metrics, "anycastedge_forward_haproxy_restarts_total") >= 2
            usable = re.findall(r"(?m)^anycastedge_forward_endpoint_usable\{.*\} (\S+)$", metrics)
            assert usable and all(float(v) == 0 for v in usable), usable
            assert all(not e["usable"] for e in pop.backend("app")["endpoints"])
            with pytest.raises(OSError):
                get(ports["web"], "/echo", timeout=2.0)  # nothing listens any more


# --- 4. HAProxy dies with serve ---------------------------------------------------------------


def test_haproxy_ends_when_serve_is_killed(tmp_path: Path) -> None:
    """serve SIGKILLed (no chance to stop anything): HAProxy's master and workers end on their
    own (PR_SET_PDEATHSIG on the master; the workers follow their master), freeing the port."""
    ports = listener_ports("web")
    with endpoints("a") as (a,), engine_pop(tmp_path, forward_yaml(ports, [(a, 1)])) as pop:
        pop.usable("app")
        master = pop.haproxy_master()
        workers = children(master)
        assert workers, "HAProxy's master has no worker"
        processes = [Proc.of(pid) for pid in (master, *workers)]
        assert all(p.running() for p in processes)
        pop.server.process.send_signal(signal.SIGKILL)
        pop.server.process.wait(timeout=POLL)
        wait_for(lambda: not any(p.running() for p in processes), POLL,
                 f"HAProxy {[p.pid for p in processes]} to end")  # fmt: skip
        with pytest.raises(OSError):
            get(ports["web"], "/echo", timeout=2.0)


# --- 1. reloads under steady load -------------------------------------------------------------

MAX_REQUESTS = 3000  # per client: the load is bounded in count ...
LOAD_SECONDS = 40.0  # ... and in time


def dropped(sock: socket.socket | None) -> bool:
    """Whether an idle keep-alive connection was closed by the server (or sent something
    unasked): readable while idle. urllib3 checks a pooled connection so before reusing it."""
    if sock is None:
        return True
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


@dataclass
class Load:
    """Client threads: three HTTP and one TCP client opening a connection per request, and one
    HTTP keep-alive session; what each answer came from, and every failure."""

    web: int
    tcp: int
    allowed: set[str]  # endpoints an answer may come from (the test adds to it)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    answered: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    retried: int = 0  # keep-alive requests resent: their idle connection had been closed
    threads: list[threading.Thread] = field(default_factory=list)
    deadline: float = 0.0  # time.monotonic() the clients stop by

    def __enter__(self) -> Load:
        self.deadline = time.monotonic() + LOAD_SECONDS
        clients: list[Callable[[int], None]] = [self.http_new, self.http_new, self.http_new,
                                                 self.tcp_new]  # fmt: skip
        for n, client in enumerate(clients):
            self.threads.append(threading.Thread(target=self.loop, args=(client, n)))
        self.threads.append(threading.Thread(target=self.keep_alive))
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=POLL)
        assert not any(t.is_alive() for t in self.threads)

    def going(self, i: int) -> bool:
        return i < MAX_REQUESTS and not self.stop.is_set() and time.monotonic() < self.deadline

    def count(self) -> int:
        with self.lock:
            return sum(self.answered.values())

    def grew(self, to: int) -> bool:
        """Whether the clients have had ``to`` answers (or a failure: no use waiting)."""
        return self.count() >= to or bool(self.failures)

    def allow(self, name: str) -> None:
        with self.lock:
            self.allowed.add(name)

    def answer(self, status: int, body: bytes, what: str) -> None:
        name = endpoint_of(body) if status == 200 else None
        with self.lock:
            if name is None or name not in self.allowed:
                self.failures.append(f"{what}: {status} from {name}")
            else:
                self.answered[name] = self.answered.get(name, 0) + 1

    def fail(self, what: str, exc: BaseException) -> None:
        with self.lock:
            self.failures.append(f"{what}: {exc!r}")

    def loop(self, client: Callable[[int], None], n: int) -> None:
        i = 0
        while self.going(i):
            try:
                client(i)
            except Exception as exc:  # noqa: BLE001 - every failure is counted, none retried
                self.fail(f"client {n} request {i}", exc)
            i += 1

    def http_new(self, i: int) -> None:
        status, body = get(self.web, f"/echo/new/{i}")
        self.answer(status, body, f"GET /echo/new/{i}")

    def tcp_new(self, i: int) -> None:
        payload = b"ping %d\n" % i
        got = echo_once(self.tcp, payload)
        if got != payload:
            self.fail(f"tcp {i}", AssertionError(f"echoed {got!r}"))
        else:
            with self.lock:
                self.answered["echo"] = self.answered.get("echo", 0) + 1

    def keep_alive(self) -> None:
        conn: http.client.HTTPConnection | None = None
        i = 0
        while self.going(i):
            path = f"/echo/kept/{i}"
            i += 1
            reused = conn is not None and not dropped(conn.sock)
            if not reused:
                if conn is not None:
                    conn.close()  # closed by the server while idle: a new one, as clients do
                conn = http.client.HTTPConnection(HOST, self.web, timeout=POLL)
            assert conn is not None
            try:
                response = self.exchange(conn, path)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                conn.close()
                if not reused:
                    self.fail(f"keep-alive {path} (new connection)", exc)
                    conn = None
                    continue
                # The standard client behaviour (RFC 9112 9.3.1, urllib3, browsers): a request
                # on a reused keep-alive connection that the server closed without a byte of
                # answer -- it closed the idle connection before the request reached it -- is
                # sent once more on a new connection. Nothing else is retried.
                with self.lock:
                    self.retried += 1
                conn = http.client.HTTPConnection(HOST, self.web, timeout=POLL)
                try:
                    response = self.exchange(conn, path)
                except Exception as again:  # noqa: BLE001 - the resend failing is a failure
                    self.fail(f"keep-alive {path} (resent)", again)
                    conn.close()
                    conn = None
                    continue
            except Exception as exc:  # noqa: BLE001
                self.fail(f"keep-alive {path}", exc)
                conn.close()
                conn = None
                continue
            self.answer(*response[:2], f"keep-alive {path}")
            if response[2]:
                conn.close()  # the server said Connection: close (an old worker letting go)
                conn = None
        if conn is not None:
            conn.close()

    @staticmethod
    def exchange(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes, bool]:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read(), response.will_close


def test_reloads_under_steady_load_fail_no_request(tmp_path: Path) -> None:
    """Three reloads (weights with a balance change, an endpoint added, another balance) by
    SIGHUP while clients keep sending: no request fails, every answer comes from an endpoint
    configured at the time, the added endpoint gets traffic, and a TCP connection opened before
    the first reload still echoes after the last (the old workers keep their connections)."""
    echo = echo_endpoint()
    ports = listener_ports("web", "tcp")
    with endpoints("a", "b", "c") as (a, b, c):
        steps = [
            forward_yaml(ports, [(a, 1), (b, 1)], echo),
            forward_yaml(ports, [(a, 3), (b, 1)], echo, balance="weighted"),
            forward_yaml(ports, [(a, 3), (b, 1), (c, 1)], echo, balance="weighted"),
            forward_yaml(ports, [(a, 3), (b, 1), (c, 1)], echo, balance="least_conn"),
        ]
        with engine_pop(tmp_path, steps[0]) as pop:
            pop.usable("app", "echo")
            held = socket.create_connection((HOST, ports["tcp"]), timeout=POLL)
            with held:
                held.sendall(b"before\n")
                assert recv_exactly(held, 7) == b"before\n"
                with Load(ports["web"], ports["tcp"], {"a", "b"}) as load:
                    wait_for(lambda: load.count() >= 100 or load.failures, POLL, "load")
                    for n, step in enumerate(steps[1:], 1):
                        if n == 2:
                            load.allow("c")  # from this reload on
                        before = load.count()
                        engine = pop.reload(step)
                        assert engine["reloads"] == {"success": n, "failure": 0}, engine
                        assert engine["last_reload"]["ok"] is True
                        assert engine["last_reload"]["message"].startswith("reloaded: new worker")
                        # Traffic flowed after this reload too, before the next one.
                        wait_for(partial(load.grew, before + 100), POLL,
                                 f"requests after reload {n}")  # fmt: skip
                    wait_for(lambda: load.answered.get("c", 0) >= 10 or load.failures, POLL,
                             "answers from the added endpoint")  # fmt: skip
                assert load.failures == [], load.failures[:20]
                assert set(load.answered) == {"a", "b", "c", "echo"}, load.answered
                held.sendall(b"after\n")
                assert recv_exactly(held, 6) == b"after\n"
            backend = pop.backend("app")
            assert backend["balance"] == "least_conn"
            assert [e["weight"] for e in backend["endpoints"]] == [3, 1, 1]
            print(f"answers {load.answered}, keep-alive requests resent: {load.retried}")
    echo.stop()


# --- 2. a configuration HAProxy refuses -------------------------------------------------------


def test_a_config_haproxy_refuses_at_reload_is_not_applied(tmp_path: Path) -> None:
    """A change that pop.yaml validation accepts but ``haproxy -c`` refuses leaves HAProxy on
    the previous configuration: last_reload says why, one failure counted, haproxy.cfg as it
    was, and traffic still goes where the previous configuration sends it.

    The refusal comes from forward.haproxy.binary, which serve reads from the new pop.yaml for
    the check: a wrapper that refuses every ``-c`` (and runs HAProxy otherwise). What HAProxy
    itself refuses that validation lets through is a validation bug to fix, not a fixture."""
    refuse = wrapper(tmp_path / "haproxy-refuses", """
case " $* " in *" -c "*) echo "[ALERT] refused by the test's wrapper" >&2; exit 1;; esac
exec "$HAPROXY" "$@"
""")
    ports = listener_ports("web")
    with endpoints("a", "b") as (a, b):
        with engine_pop(tmp_path, forward_yaml(ports, [(a, 1)])) as pop:
            pop.usable("app")
            cfg = pop.state / "haproxy.cfg"
            before = cfg.read_bytes()
            changed = forward_yaml(ports, [(b, 1)], extra=f'haproxy: {{binary: "{refuse}"}}')
            engine = pop.reload(changed)
            assert engine["reloads"] == {"success": 0, "failure": 1}, engine
            last = engine["last_reload"]
            assert last["ok"] is False
            assert "haproxy -c refused it, still running the previous" in last["message"]
            assert "refused by the test's wrapper" in last["message"]
            assert cfg.read_bytes() == before
            assert not (pop.state / "haproxy.cfg.next").exists()
            assert engine["running"] is True and engine["restarts"] == 0
            # Still the previous configuration: endpoint a, and /status shows it.
            assert [endpoint_of(get(ports["web"], f"/echo/{i}")[1]) for i in range(5)] == ["a"] * 5
            assert not b.seen.requests
            addresses = [e["address"] for e in pop.backend("app")["endpoints"]]
            assert addresses == [f"{HOST}:{a.port}"]
            # The same change with the real binary is applied.
            engine = pop.reload(forward_yaml(ports, [(b, 1)]))
            assert engine["reloads"] == {"success": 1, "failure": 1}, engine
            pop.usable("app")
            assert endpoint_of(get(ports["web"], "/echo")[1]) == "b"
            assert cfg.read_bytes() != before


def test_haproxy_check_says_why_it_refuses(tmp_path: Path) -> None:
    """What serve reports when haproxy -c refuses (at start, at reload, forward render --check)
    carries HAProxy's own alert naming the fault, not an empty message."""
    cfg = tmp_path / "bad.cfg"
    cfg.write_text("defaults\n    mode tcp\nfrontend f\n    bind 127.0.0.1:1\n    no-such-kw 1\n")
    assert HAPROXY is not None
    ok, words = check_config(HAPROXY, str(cfg))
    assert ok is False
    assert "[ALERT]" in words and "no-such-kw" in words
    assert "[NOTICE]" not in words


# --- 5. one view: /status, /metrics, /forward/health ------------------------------------------


def test_critical_backend_down_and_back_in_every_view(tmp_path: Path) -> None:
    """A critical backend's only endpoint stops: HAProxy's check says so and the POP-health URL
    (what the BGP hook's http check asks) turns 503 naming the backend, as does the backend's
    own URL and /status; the endpoint back on its port, both are 200 again. /metrics, under
    traffic, passes promtool's checks."""
    ports = listener_ports("web")
    a = EndpointServer("a")
    threading.Thread(target=a.serve_forever, daemon=True).start()
    port = a.port
    forward = forward_yaml(ports, [(a, 1)], app_extra="critical: true")
    try:
        with engine_pop(tmp_path, forward) as pop:
            pop.usable("app")
            for i in range(20):
                assert get(ports["web"], f"/echo/{i}")[0] == 200
            wait_for(lambda: pop.backend("app")["endpoints"][0]["connections"] >= 20, POLL,
                     "HAProxy's counters in the view")  # fmt: skip
            metrics = pop.server.metrics()
            assert metric_value(metrics, "anycastedge_forward_haproxy_up") == 1
            assert metric_value(metrics, "anycastedge_forward_endpoint_connections_total",
                                backend="app") >= 20  # fmt: skip
            if shutil.which("promtool"):
                checked = subprocess.run(["promtool", "check", "metrics"], input=metrics,
                                         capture_output=True, text=True, timeout=POLL)  # fmt: skip
                assert checked.returncode == 0, checked.stdout + checked.stderr
            assert pop.server.http_get("/forward/health") == (200, "ok\n")
            assert pop.server.http_get("/forward/backends/app/health")[0] == 200

            a.shutdown()
            a.server_close()

            def health_down() -> tuple[int, str] | None:
                answer = pop.server.http_get("/forward/health")
                return answer if answer[0] == 503 else None

            down = wait_for(health_down, POLL, "/forward/health 503")
            assert "critical backends down: app" in down[1]
            assert "haproxy" not in down[1]  # HAProxy itself is fine
            assert pop.server.http_get("/forward/backends/app/health")[0] == 503
            assert pop.forward()["critical_down"] == ["app"]
            assert pop.server.metric("anycastedge_forward_endpoint_usable", backend="app") == 0
            assert pop.server.metric("anycastedge_forward_haproxy_up") == 1

            a = EndpointServer("a", port=port)  # back, on the same port
            threading.Thread(target=a.serve_forever, daemon=True).start()
            wait_for(lambda: pop.server.http_get("/forward/health")[0] == 200, POLL,
                     "/forward/health 200 again")  # fmt: skip
            assert pop.server.http_get("/forward/backends/app/health")[0] == 200
            assert pop.forward()["critical_down"] == []
            assert endpoint_of(get(ports["web"], "/echo")[1]) == "a"
    finally:
        a.shutdown()
        a.server_close()
