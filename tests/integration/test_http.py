"""The L7 forwarding tier over real loopback sockets: `anycastedge serve` with HTTP listeners in
front of HTTP endpoints run by the test; `requests` as the client, raw sockets where it cannot."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from tests.support.forward import (
    HOST,
    POLL,
    Endpoint,
    Pop,
    backends_up,
    headers_of,
    listener_ports,
    pop,
    proxy,
    raw,
)
from tests.support.http_backend import encode_frame, endpoints, read_frame
from tests.support.server import wait_for

# --- routing and keep-alive -------------------------------------------------------------------


def test_host_and_path_routing_first_match_wins(tmp_path: Path, engine: str) -> None:
    routes = (
        "[{host: api.example.com, path_prefix: /v1/, backend: api},"
        ' {hosts: ["*.example.com"], backend: web},'
        " {host: example.net, backend: web}]"
    )
    with endpoints("api", "web") as (api, web), proxy(
        tmp_path, {"api": [api], "web": [web]}, routes, engine=engine
    ) as (p, url):
        def who(host: str, path: str) -> int | str:
            r = requests.get(url + path, headers={"Host": host}, timeout=POLL)
            return r.json()["endpoint"] if r.status_code == 200 else r.status_code

        assert who("api.example.com", "/v1/users") == "api"
        assert who("API.Example.COM.", "/v1/users") == "api"  # case and a trailing dot
        assert who("api.example.com:8080", "/v1/x") == "api"  # any port
        assert who("api.example.com", "/v2/users") == "web"  # falls to the wildcard
        assert who("www.example.com", "/v1/users") == "web"
        assert who("example.net", "/") == "web"
        assert who("example.com", "/") == 404  # the wildcard is below the name only
        assert who("other.test", "/") == 404
        r = requests.get(url + "/", headers={"Host": "other.test"}, timeout=POLL)
        assert r.text == "404 Not Found\n"
        # The path is matched normalised: a dot-segment cannot dodge the /v1/ route.
        sock_reply = raw(p, b"GET /v2/../v1/x HTTP/1.1\r\nHost: api.example.com\r\n"
                            b"Connection: close\r\n\r\n")  # fmt: skip
        assert b'"endpoint": "api"' in sock_reply
        assert p.status()["listeners"][0]["routes"][0]["backend"] == "api"


def test_keep_alive_both_ways_endpoints_see_fewer_connections(tmp_path: Path, engine: str) -> None:
    with endpoints("a", "b") as servers, proxy(
        tmp_path, {"app": servers}, engine=engine
    ) as (p, url):
        with requests.Session() as session:
            bodies = [session.get(url + f"/echo/{i}", timeout=POLL).json() for i in range(40)]
        assert {b["endpoint"] for b in bodies} == {"a", "b"}  # balanced per request
        seen = [r for s in servers for r in s.seen.requests]
        assert len(seen) == 40
        # Reused from the pool, not one per request (health checks connect too: not counted).
        assert len({(r["endpoint"], r["connection"]) for r in seen}) <= 4
        if engine == "builtin":  # HAProxy keeps no pool counters (docs/forwarding.md, engines)
            assert p.status()["listeners"][0]["pool"]["reused"] >= 36


def test_pipelined_requests_are_answered_in_order(tmp_path: Path, engine: str) -> None:
    with endpoints("a") as servers, proxy(tmp_path, {"app": servers}, engine=engine) as (p, _):
        batch = b"".join(
            b"GET /echo/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5)
        ) + b"GET /echo/last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        reply = raw(p, batch)
        bodies = [part.split(b"\r\n\r\n", 1)[1] for part in reply.split(b"HTTP/1.1 200 OK")[1:]]
        paths = [json.loads(body[: body.rindex(b"}") + 1])["path"] for body in bodies]
        assert paths == [f"/echo/{i}" for i in range(5)] + ["/echo/last"]


# --- bodies -----------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Sized:
    """A streamed body of known length: requests sends it with Content-Length."""

    def __init__(self, chunks: Iterator[bytes], size: int) -> None:
        self.chunks, self.size, self.rest = chunks, size, b""

    def __len__(self) -> int:
        return self.size

    def read(self, n: int = -1) -> bytes:
        while len(self.rest) < max(n, 1):
            chunk = next(self.chunks, b"")
            if not chunk:
                break
            self.rest += chunk
        out, self.rest = (self.rest, b"") if n < 0 else (self.rest[:n], self.rest[n:])
        return out


def test_large_bodies_stream_both_ways_in_bounded_memory(tmp_path: Path) -> None:
    """256 MiB up (Content-Length and chunked) and down (both framings): the proxy never holds
    a body whole, so its RSS grows by far less than one."""
    size = 256 << 20
    block = bytes(range(256)) * 4096  # 1 MiB

    def body() -> Iterator[bytes]:
        for _ in range(size // len(block)):
            yield block

    expected = hashlib.sha256(block * (size // len(block))).hexdigest()
    with endpoints("a") as servers, proxy(tmp_path, {"app": servers}) as (p, url):
        before = rss_kib(p.server.pid)
        with requests.Session() as s:
            up = s.post(url + "/upload", data=body(), timeout=120)  # chunked: a generator
            assert up.json()["length"] == size and up.json()["sha256"] == expected
            assert "Transfer-Encoding" in dict(servers[0].seen.requests[0]["headers"])
            up = s.post(url + "/upload", data=Sized(body(), size), timeout=120)
            assert up.json()["length"] == size and up.json()["sha256"] == expected
            assert dict(servers[0].seen.requests[1]["headers"])["Content-Length"] == str(size)
            for chunked in ("", "?chunked=1"):
                r = s.get(url + f"/bytes/{size}{chunked}", stream=True, timeout=120)
                digest = hashlib.sha256()
                for piece in r.iter_content(1 << 20):
                    digest.update(piece)
                assert digest.hexdigest() == expected
                te = r.headers.get("Transfer-Encoding")
                assert (te == "chunked") if chunked else (r.headers["Content-Length"] == str(size))
        grown = rss_kib(p.server.pid) - before
        assert grown < 32 * 1024, grown  # KiB: far below one body (256 MiB)


def test_expect_100_continue(tmp_path: Path, engine: str) -> None:
    """The client waits for 100 Continue before its body; the endpoint's 100 is passed on."""
    with endpoints("a") as servers, proxy(tmp_path, {"app": servers}, engine=engine) as (p, _):
        with p.connect("web") as sock:
            sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                         b"Expect: 100-continue\r\n\r\n")  # fmt: skip
            interim = sock.recv(4096)
            assert interim.startswith(b"HTTP/1.1 100 Continue\r\n"), interim
            sock.sendall(b"hello")
            reply = b""
            while b"}" not in reply:
                chunk = sock.recv(65536)
                assert chunk
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200 OK")
        assert b'"length": 5' in reply


def test_body_over_the_route_limit_is_413_before_the_endpoint_sees_it(
    tmp_path: Path, engine: str
) -> None:
    routes = "[{path_prefix: /small/, backend: app, max_body: 1000}, {backend: app}]"
    with endpoints("a") as servers, proxy(
        tmp_path, {"app": servers}, routes, engine=engine
    ) as (p, url):
        assert requests.post(url + "/small/x", data=b"x" * 1001, timeout=POLL).status_code == 413
        chunked = requests.post(url + "/small/x", data=iter([b"x" * 600] * 2), timeout=POLL)
        # HAProxy cannot count a chunked body: 411 (docs/forwarding.md, "What still differs").
        assert chunked.status_code == (413 if engine == "builtin" else 411)
        assert requests.post(url + "/small/x", data=b"x" * 1000, timeout=POLL).status_code == 200
        assert requests.post(url + "/big", data=b"x" * 5000, timeout=POLL).status_code == 200
        assert [r["path"] for r in servers[0].seen.requests] == ["/small/x", "/big"]
        if engine == "builtin":  # HAProxy's refusals have no reasons (one count)
            assert p.status()["listeners"][0]["refused"]["body_too_large"] == 2


# --- WebSocket --------------------------------------------------------------------------------


def test_websocket_upgrade_is_tunnelled(tmp_path: Path, engine: str) -> None:
    with endpoints("a") as servers, proxy(tmp_path, {"app": servers}, engine=engine) as (p, _):
        key = base64.b64encode(os.urandom(16))
        with p.connect("web") as sock:
            sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                         b"Sec-WebSocket-Key: " + key + b"\r\n\r\n")  # fmt: skip
            stream = sock.makefile("rb")
            status = stream.readline()
            assert status.startswith(b"HTTP/1.1 101"), status
            head = {}
            while (line := stream.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                head[name.strip().lower()] = value.strip()
            accept = base64.b64encode(
                hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC11B85").digest()
            ).decode()
            assert head["sec-websocket-accept"] == accept
            assert head["upgrade"].lower() == "websocket"
            for message in (b"hello", b"x" * 70_000):
                sock.sendall(encode_frame(0x1, message, mask=True))
                assert read_frame(stream) == (0x1, message)
            sock.sendall(encode_frame(0x8, b"", mask=True))


# --- client identity --------------------------------------------------------------------------


def test_forwarding_headers_and_spoofed_ones_replaced(tmp_path: Path, engine: str) -> None:
    spoof = {
        "X-Forwarded-For": "203.0.113.7",
        "X-Real-IP": "203.0.113.7",
        "Forwarded": "for=203.0.113.7",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.test",
    }
    with endpoints("a") as servers, proxy(tmp_path, {"app": servers}, engine=engine) as (p, url):
        got = headers_of(requests.get(url + "/echo", headers=spoof, timeout=POLL).json())
        assert got["x-forwarded-for"] == ["127.0.0.1"]
        assert got["x-real-ip"] == ["127.0.0.1"]
        assert got["x-forwarded-proto"] == ["http"]
        assert got["forwarded"] == [f'for=127.0.0.1;host="{url[7:]}";proto=http']
        assert "x-forwarded-host" not in got
        assert got["host"] == [url[7:]]  # preserved


def test_forwarding_headers_of_a_trusted_upstream_are_kept(tmp_path: Path, engine: str) -> None:
    with endpoints("a") as servers, proxy(
        tmp_path, {"app": servers}, extra="trusted_upstreams: [127.0.0.0/8]", engine=engine
    ) as (p, url):
        sent = {
            "X-Forwarded-For": "203.0.113.7",
            "Forwarded": "for=203.0.113.7;proto=https",
            "X-Real-IP": "203.0.113.7",
            "X-Forwarded-Proto": "https",
        }
        got = headers_of(requests.get(url + "/echo", headers=sent, timeout=POLL).json())
        assert got["x-real-ip"] == ["203.0.113.7"]
        assert got["x-forwarded-proto"] == ["https"]
        # HAProxy adds ours as one more header line; the built-in joins them (docs/forwarding.md,
        # "What still differs"): the same list to an HTTP reader.
        forwarded = ", ".join(got["forwarded"])
        assert ", ".join(got["x-forwarded-for"]) == "203.0.113.7, 127.0.0.1"
        assert forwarded.startswith("for=203.0.113.7;proto=https, for=127.0.0.1;")
        if engine == "builtin":
            assert len(got["x-forwarded-for"]) == len(got["forwarded"]) == 1


def test_hop_by_hop_headers_are_removed(tmp_path: Path) -> None:
    with endpoints("a") as servers, proxy(tmp_path, {"app": servers}) as (p, _):
        reply = raw(p, b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close, X-Secret\r\n"
                       b"X-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n"
                       b"X-Kept: yes\r\n\r\n")  # fmt: skip
        body = json.loads(reply.split(b"\r\n\r\n", 1)[1])
        got = headers_of(body)
        assert "x-secret" not in got and "keep-alive" not in got and "te" not in got
        assert got["x-kept"] == ["yes"]
        assert b"Connection: close" in reply.split(b"\r\n\r\n", 1)[0]


# --- balancing, stickiness, retries, errors ----------------------------------------------------


def test_sticky_cookie_keeps_a_client_on_its_endpoint_while_it_is_up(
    tmp_path: Path, engine: str
) -> None:
    with endpoints("a", "b", "c") as servers, proxy(
        tmp_path, {"app": servers}, backend_extra="sticky_cookie: AESTICKY", engine=engine
    ) as (p, url):
        with requests.Session() as s:
            first = s.get(url + "/echo", timeout=POLL)
            cookie = s.cookies.get("AESTICKY")
            assert cookie and "127.0.0.1" not in cookie
            assert "HttpOnly" in first.headers["Set-Cookie"]
            names = {s.get(url + "/echo", timeout=POLL).json()["endpoint"] for _ in range(12)}
            assert names == {first.json()["endpoint"]}
        # Without the cookie, requests spread again.
        spread = {requests.get(url + "/echo", timeout=POLL).json()["endpoint"] for _ in range(12)}
        assert len(spread) == 3


def test_get_is_retried_on_another_endpoint_a_sent_post_is_not(tmp_path: Path, engine: str) -> None:
    with endpoints("a", "b") as servers, proxy(
        tmp_path, {"app": servers}, engine=engine
    ) as (p, url):
        # An endpoint that accepts and resets: a GET is retried elsewhere; a POST with a body
        # that went out is not (it may have been acted on), so it gets 502.
        dead = Endpoint(reset_after_a_byte).start()
        try:
            forward = p.config.read_text().replace(
                f'{{address: "{HOST}:{servers[1].port}"}}', f'{{address: "{HOST}:{dead.port}"}}'
            )
            p.config.write_text(forward)
            p.server.sighup()
            dead_address = f"{HOST}:{dead.port}"

            def reloaded() -> bool:
                endpoints = p.status()["backends"][0]["endpoints"]
                return [e["address"] for e in endpoints][1] == dead_address and all(
                    e["up"] for e in endpoints
                )

            p.reloaded()
            wait_for(reloaded, POLL, "the dead endpoint in, both up")
            gets = [requests.get(url + "/echo", timeout=POLL) for _ in range(6)]
            assert all(r.status_code == 200 and r.json()["endpoint"] == "a" for r in gets)
            posts = [post_outcome(url + "/upload") for _ in range(4)]
            # HAProxy answers 502 too when the reset comes after the request went out, but cuts
            # the client off without an answer when it comes while the body is still being sent
            # (termination state SD; docs/forwarding.md, engines). Either way: never retried.
            failed = {502} if engine == "builtin" else {502, "closed"}
            assert sorted(o for o in posts if o == 200) == [200, 200]
            assert len([o for o in posts if o in failed]) == 2, posts
            # The access log names why (it is written within a second).
            logged = '"POST /upload" 502 ' if 502 in posts else '"POST /upload" -1 '
            wait_for(lambda: logged in p.server.log_text(), POLL, "the log")
            # HAProxy's line has its termination state in place of the reason: SH, the
            # endpoint closed before the response headers (docs/forwarding.md, engines).
            state = " SH--" if 502 in posts else " SD--"
            assert ("upstream_error" if engine == "builtin" else state) in p.server.log_text()
        finally:
            dead.stop()


def post_outcome(url: str) -> int | str:
    """A small POST's status, or "closed" when the proxy closed without an answer."""
    try:
        return requests.post(url, data=b"x" * 10, timeout=POLL).status_code
    except requests.ConnectionError:
        return "closed"


def reset_after_a_byte(endpoint: Endpoint, conn: socket.socket) -> None:
    """Reset the connection once it carried a byte (a health check carries none)."""
    if conn.recv(1):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_502_when_connects_fail_503_once_checks_say_down(tmp_path: Path, engine: str) -> None:
    with endpoints("a", "b") as servers, proxy(
        tmp_path, {"app": servers}, engine=engine
    ) as (p, url):
        for server in servers:
            server.shutdown()
            server.server_close()
        r = requests.get(url + "/echo", timeout=POLL)
        assert r.status_code in (502, 503)
        wait_for(lambda: not p.status()["backends"][0]["up"], POLL, "the backend down")
        r = requests.get(url + "/echo", timeout=POLL)
        assert r.status_code == 503
        if engine == "builtin":  # HAProxy answers with its own (HTML) error page
            assert r.text == "503 Service Unavailable\n"


def test_a_burst_of_5xx_ejects_an_endpoint(tmp_path: Path, engine: str) -> None:
    # HAProxy counts 5xx and connect failures in one count, holds an endpoint out until its
    # check passes, and ejects any share of a backend (docs/forwarding.md, engines).
    ejection = ("{consecutive_5xx: 3, base_time: 60}" if engine == "builtin"
                else "{consecutive_5xx: 3, consecutive_failures: 3}")  # fmt: skip
    with endpoints("a", "b") as servers, proxy(
        tmp_path, {"app": servers}, backend_extra=f"ejection: {ejection}", engine=engine
    ) as (p, url):
        codes = [requests.get(url + "/status/500", timeout=POLL).status_code for _ in range(6)]
        assert codes == [500] * 6
        if engine == "haproxy":  # ejected until its check passes again (no max_percent)
            def ejected() -> bool:
                return any(e["ejections"] >= 1 for e in p.status()["backends"][0]["endpoints"])

            wait_for(ejected, POLL, "an endpoint ejected")
            return
        ejected = [e for e in p.status()["backends"][0]["endpoints"] if e["ejected"]]
        assert len(ejected) == 1  # max_percent (50) keeps the other
        names = {requests.get(url + "/echo", timeout=POLL).json()["endpoint"] for _ in range(6)}
        assert len(names) == 1


# --- limits -----------------------------------------------------------------------------------


def test_slowloris_is_cut_at_the_header_deadline(tmp_path: Path, engine: str) -> None:
    with endpoints("a") as servers, proxy(
        tmp_path, {"app": servers}, extra="header_timeout: 1", engine=engine
    ) as (p, url):
        with p.connect("web") as sock:
            started = time.monotonic()
            sock.sendall(b"GET / HTTP/1.1\r\n")
            reply = b""
            # A header line now and then: each resets nothing.
            while time.monotonic() - started < POLL:
                with contextlib.suppress(OSError):
                    sock.sendall(b"X-A: b\r\n")
                sock.settimeout(0.3)
                try:
                    chunk = sock.recv(4096)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 408 ")  # HAProxy's reason is "Request Time-out"
        if engine == "builtin":  # HAProxy's refusals have no reasons (one count)
            assert p.status()["listeners"][0]["refused"]["header_timeout"] == 1
        assert requests.get(url + "/echo", timeout=POLL).status_code == 200


def test_oversized_and_too_many_headers_get_431(tmp_path: Path, engine: str) -> None:
    with endpoints("a") as servers, proxy(
        tmp_path, {"app": servers}, extra="max_header_size: 4096\nmax_headers: 20", engine=engine
    ) as (p, url):
        # HAProxy answers 400 to a request over tune.bufsize or tune.http.maxhdr, not 431
        # (docs/forwarding.md, "What still differs").
        too_large = b"HTTP/1.1 431 " if engine == "builtin" else b"HTTP/1.1 400 "
        big = raw(p, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n")
        assert big.startswith(too_large)
        many = b"".join(b"X-%d: v\r\n" % i for i in range(25))
        reply = raw(p, b"GET / HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
        assert reply.startswith(too_large)
        # One huge header in many small pieces is cut too (the parser would gather it).
        with p.connect("web") as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
            reply = b""
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # separate segments
                for _ in range(100):
                    sock.sendall(b"a" * 100)
                sock.settimeout(POLL)
                reply = sock.recv(4096)
            # HAProxy may reset the connection before its 400 is read.
            assert reply.startswith(too_large) or (engine == "haproxy" and reply == b"")
        assert servers[0].seen.requests == []
        assert requests.get(url + "/echo", timeout=POLL).status_code == 200


def test_malformed_requests_get_400_and_the_proxy_keeps_serving(tmp_path: Path) -> None:
    with endpoints("a") as servers, proxy(tmp_path, {"app": servers}) as (p, url):
        host = b"GET / HTTP/1.1\r\nHost: x\r\n"
        for junk in (
            b"\x00\x01\x02\r\n\r\n",
            b"GET / HTTP/9.9\r\n\r\n",
            host + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n",
            host + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",  # smuggling
            b"GET /\r\n\r\n",  # HTTP/0.9
            b"GET / HTTP/1.1\r\n\r\n",  # no Host
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ):
            assert raw(p, junk).startswith(b"HTTP/1.1 400 "), junk
        assert servers[0].seen.requests == []
        assert requests.get(url + "/echo", timeout=POLL).status_code == 200


def test_access_log_and_metrics(tmp_path: Path, engine: str) -> None:
    log_file = tmp_path / "access.log"
    with endpoints("a") as servers, proxy(
        tmp_path, {"app": servers}, extra=f"access_log: {log_file}", engine=engine
    ) as (p, url):
        assert requests.get(url + "/echo/x?q=1", headers={"Host": "h.test"}, timeout=POLL).ok
        assert requests.get(url + "/status/503", timeout=POLL).status_code == 503
        wait_for(lambda: log_file.exists() and len(log_file.read_text().splitlines()) >= 2,
                 POLL, "two access log lines")  # fmt: skip
        first, second = log_file.read_text().splitlines()[:2]
        assert ' h.test "GET /echo/x?q=1" 200 ' in first
        assert f" app {HOST}:{servers[0].port} " in first
        assert '"GET /status/503" 503 ' in second
        if engine == "haproxy":  # no anycastedge_http_* families (docs/forwarding.md, engines)
            return
        metrics = p.server.metrics()
        labels = 'backend="app",listener="web",route="*/"'
        assert f'anycastedge_http_requests_total{{{labels},status="2xx"}} 1.0' in metrics
        assert f'anycastedge_http_requests_total{{{labels},status="5xx"}} 1.0' in metrics
        assert "anycastedge_http_request_duration_seconds_bucket" in metrics


# --- framing edge cases, against a raw endpoint -----------------------------------------------


class RawEndpoint(Endpoint):
    """Answers every request on a connection with ``reply`` (bytes), closing after it when
    ``close``; records the requests' heads."""

    def __init__(self, reply: bytes, close: bool) -> None:
        super().__init__(RawEndpoint.serve)
        self.reply, self.close = reply, close
        self.heads: list[bytes] = []
        self.closed = 0  # connections that carried a request, then were closed by the proxy
        self.start()

    def serve(self, conn: socket.socket) -> None:
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    self.closed += bool(self.heads)
                    return
                data += chunk
            head, data = data.split(b"\r\n\r\n", 1)
            self.heads.append(head)
            conn.sendall(self.reply)
            if self.close:
                return


@contextlib.contextmanager
def raw_proxy(
    tmp_path: Path,
    endpoint: RawEndpoint,
    backend_extra: str = "",
    check: str = "",
    engine: str = "builtin",
) -> Iterator[tuple[Pop, str]]:
    ports = listener_ports("web")
    forward = (
        "forward:\n  listeners:\n    web:\n"
        f'      bind: "{HOST}:{ports["web"]}"\n      protocol: http\n'
        "      routes: [{backend: app}]\n  backends:\n    app:\n"
        f"      healthcheck: {{kind: tcp, interval: 0.2{check}}}\n"
        f'      endpoints: [{{address: "{HOST}:{endpoint.port}"}}]\n'
        + "".join(f"      {line}\n" for line in backend_extra.splitlines())
    )
    try:
        with pop(tmp_path, forward, ports, engine) as p:
            backends_up(p, "app")
            yield p, f"http://{HOST}:{ports['web']}"
    finally:
        endpoint.stop()


def test_a_response_delimited_by_close_is_rechunked_for_1_1_and_closes_1_0(
    tmp_path: Path,
) -> None:
    endpoint = RawEndpoint(b"HTTP/1.0 200 OK\r\nX-E: 1\r\n\r\nuntil the close", close=True)
    with raw_proxy(tmp_path, endpoint) as (p, url):
        with requests.Session() as s:
            for _ in range(3):  # the client connection is kept: the proxy re-frames
                r = s.get(url + "/", timeout=POLL)
                assert r.text == "until the close"
                assert r.headers["Transfer-Encoding"] == "chunked"
        reply = raw(p, b"GET / HTTP/1.0\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
        assert reply.endswith(b"\r\n\r\nuntil the close")  # no framing: the close ends it
        assert b"Connection: close" in reply
        # The HTTP/1.0 request had no Host: the endpoint still gets one (HTTP/1.1 needs it).
        assert endpoint.heads[-1].startswith(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:")


def test_head_204_and_304_have_no_body_and_keep_the_connection(tmp_path: Path) -> None:
    for status, method in ((200, "HEAD"), (204, "GET"), (304, "GET")):
        endpoint = RawEndpoint(
            b"HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\n" % status
            + (b"" if method == "HEAD" or status != 200 else b"hello"),
            close=False,
        )
        (tmp_path / str(status)).mkdir()
        with raw_proxy(tmp_path / str(status), endpoint) as (p, _):
            with p.connect("web") as sock:
                for _ in range(3):
                    sock.sendall(f"{method} / HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    head = b""
                    while b"\r\n\r\n" not in head:
                        chunk = sock.recv(4096)
                        assert chunk
                        head += chunk
                    assert head.startswith(b"HTTP/1.1 %d " % status)
                    assert head.endswith(b"\r\n\r\n")  # nothing after the head
            assert len(endpoint.heads) == 3


def test_idle_pooled_connections_expire_and_close_when_their_endpoint_goes_down(
    tmp_path: Path,
) -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    endpoint = RawEndpoint(reply, close=False)
    (tmp_path / "a").mkdir()
    with raw_proxy(tmp_path / "a", endpoint, "http: {pool_idle_timeout: 0.5}") as (p, url):
        assert requests.get(url + "/", timeout=POLL).text == "ok"
        wait_for(lambda: endpoint.closed == 1, POLL, "the idle connection closed")
    # The check runs on another port, so the endpoint's connection outlives "down".
    check = socket.socket()
    check.bind((HOST, 0))
    check.listen(16)
    endpoint = RawEndpoint(reply, close=False)
    (tmp_path / "b").mkdir()
    with raw_proxy(tmp_path / "b", endpoint, check=f", port: {check.getsockname()[1]}") as (
        p,
        url,
    ):
        assert requests.get(url + "/", timeout=POLL).text == "ok"
        assert p.status()["backends"][0]["endpoints"][0]["http_connections"]["idle"] == 1
        check.close()
        wait_for(lambda: endpoint.closed == 1, POLL, "the pooled connection closed")
        assert not p.status()["backends"][0]["up"]


def test_max_connections_per_endpoint_caps_the_pool(tmp_path: Path, engine: str) -> None:
    import threading

    with endpoints("a") as servers, proxy(
        tmp_path, {"app": servers}, backend_extra="http: {max_connections: 1}", engine=engine
    ) as (p, url):
        slow: list[int] = []
        thread = threading.Thread(
            target=lambda: slow.append(requests.get(url + "/slow/2", timeout=POLL).status_code)
        )
        thread.start()
        wait_for(lambda: bool(servers[0].seen.requests), POLL, "the slow request in")
        # HAProxy queues the request (timeout queue: connect_timeout, 5 s) until the slow one
        # is done; the built-in answers 503 at once (docs/forwarding.md, engines).
        waiting = requests.get(url + "/echo", timeout=POLL).status_code
        thread.join(POLL)
        assert slow == [200]
        assert waiting == (503 if engine == "builtin" else 200)
        assert requests.get(url + "/echo", timeout=POLL).status_code == 200  # reuses the one
        if engine == "builtin":
            assert p.status()["listeners"][0]["refused"]["no_endpoint"] == 1
