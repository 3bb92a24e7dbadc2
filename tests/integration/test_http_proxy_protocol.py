"""The PROXY protocol on HTTP listeners, over real loopback sockets: a trusted peer's v1 header
names the client the endpoint is told about; a ``proxy_protocol: v2`` backend gets a v2 header at
the start of each new upstream connection, then HTTP/1.1."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import requests

from tests.support.forward import HOST, POLL, Endpoint, headers_of, proxy, raw
from tests.support.http_backend import EndpointServer, endpoints

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def test_proxy_v1_header_names_the_client_in_forwarding_fields(
    tmp_path: Path, engine: str
) -> None:
    with endpoints("a") as servers, proxy(
        tmp_path, {"app": servers}, extra="accept_proxy: [127.0.0.0/8]", engine=engine
    ) as (p, url):
        header = b"PROXY TCP4 192.0.2.1 198.51.100.7 41234 443\r\n"
        reply = raw(p, header + b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9"
                             b"\r\nConnection: close\r\n\r\n")  # fmt: skip
        assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
        got = headers_of(json.loads(reply.split(b"\r\n\r\n", 1)[1]))
        assert got["x-forwarded-for"] == ["192.0.2.1"]  # the client's own claim is dropped
        assert got["x-real-ip"] == ["192.0.2.1"]
        assert got["forwarded"] == ["for=192.0.2.1;host=x;proto=http"]
        # IPv6 in the header: bracketed and quoted in Forwarded.
        header6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 41234 80\r\n"
        reply = raw(p, header6 + b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = headers_of(json.loads(reply.split(b"\r\n\r\n", 1)[1]))
        assert got["x-forwarded-for"] == ["2001:db8::7"]
        assert got["forwarded"] == ['for="[2001:db8::7]";host=x;proto=http']
        # A peer that must send a header and sends HTTP instead is closed unanswered.
        try:
            refused = raw(p, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        except ConnectionResetError:
            refused = b""
        assert refused == b""
        assert [r["path"] for r in servers[0].seen.requests] == ["/echo", "/echo"]
        # Keep-alive after the header: several requests, one header.
        with p.connect("web") as sock:
            sock.sendall(header + b"GET /echo/1 HTTP/1.1\r\nHost: x\r\n\r\n")
            stream = sock.makefile("rb")
            for n in (1, 2):
                status = stream.readline()
                assert status.startswith(b"HTTP/1.1 200 "), status
                length = 0
                while (line := stream.readline()) != b"\r\n":
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = json.loads(stream.read(length))
                assert body["path"] == f"/echo/{n}"
                assert headers_of(body)["x-real-ip"] == ["192.0.2.1"]
                if n == 1:
                    sock.sendall(b"GET /echo/2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")


# --- a v2 endpoint ----------------------------------------------------------------------------


class V2Endpoint(Endpoint):
    """Reads a PROXY v2 header at the start of each connection, then answers each HTTP/1.1
    request on it with a fixed response naming the header's source and the connection."""

    def __init__(self) -> None:
        super().__init__(V2Endpoint.handle)
        self.headers: list[tuple[str, str]] = []  # per connection with a header
        self.requests: list[tuple[int, bytes]] = []  # (connection, request line)
        self.lock = threading.Lock()

    def handle(self, conn: socket.socket) -> None:
        with contextlib.suppress(ValueError, struct.error):
            data = b""
            while len(data) < 16:
                chunk = conn.recv(4096)
                if not chunk:
                    return  # a health check: connects and closes
                data += chunk
            assert data.startswith(V2_SIGNATURE), data[:32]
            ver_cmd, family, length = struct.unpack("!BBH", data[12:16])
            if ver_cmd == 0x20:
                return  # LOCAL: the proxy's own connection (HAProxy's health check), no client
            assert ver_cmd == 0x21 and family == 0x11, (ver_cmd, family)  # PROXY, TCP4
            while len(data) < 16 + length:
                data += conn.recv(4096)
            src, dst, sport, dport = struct.unpack("!4s4sHH", data[16:28])
            with self.lock:
                self.headers.append((f"{socket.inet_ntoa(src)}:{sport}",
                                     f"{socket.inet_ntoa(dst)}:{dport}"))  # fmt: skip
                number = len(self.headers)
            rest = data[16 + length :]
            while True:
                while b"\r\n\r\n" not in rest:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    rest += chunk
                head, rest = rest.split(b"\r\n\r\n", 1)
                assert not head.startswith(V2_SIGNATURE)  # one header, at the start only
                with self.lock:
                    self.requests.append((number, head.split(b"\r\n")[0]))
                body = f"conn={number} source={self.headers[number - 1][0]}".encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))  # fmt: skip


@contextlib.contextmanager
def v2_endpoint() -> Iterator[V2Endpoint]:
    endpoint = V2Endpoint()
    endpoint.start()
    try:
        yield endpoint
    finally:
        endpoint.stop()


def test_proxy_v2_backend_gets_a_header_per_new_upstream_connection(
    tmp_path: Path, engine: str
) -> None:
    with v2_endpoint() as endpoint, proxy(
        tmp_path,
        {"app": [cast(EndpointServer, endpoint)]},
        backend_extra="proxy_protocol: v2",
        engine=engine,
    ) as (p, url):
        with requests.Session() as one, requests.Session() as two:
            first = [one.get(url + f"/a/{i}", timeout=POLL).text for i in range(3)]
            second = [two.get(url + f"/b/{i}", timeout=POLL).text for i in range(2)]
            me_one = one.get(url + "/a/last", timeout=POLL)
        assert me_one.status_code == 200
        # Every request arrived after a header naming its client connection, on an upstream
        # connection never shared between clients.
        conns_one, conns_two = {t.split()[0] for t in first}, {t.split()[0] for t in second}
        assert not conns_one & conns_two
        if engine == "builtin":
            # A client's keep-alive requests share its upstream connection (and its header).
            # HAProxy keeps such a private connection with the client's session but may open
            # another (docs/forwarding.md: reuse is HAProxy's http-reuse safe).
            assert len(conns_one) == len(conns_two) == 1
        for texts in (first, second):  # each client's requests name that client's one source
            assert len({t.split()[1] for t in texts}) == 1
        for text in first + second:
            assert text.split()[1].startswith(f"source={HOST}:")
        sources = {text.split()[1] for text in first + second}
        assert len(sources) == 2  # two client connections, two source ports
        for source, destination in endpoint.headers:
            assert source.startswith(f"{HOST}:")
            assert destination == f"{HOST}:{p.ports['web']}"
        lines = [line for _, line in endpoint.requests]
        assert lines[:3] == [f"GET /a/{i} HTTP/1.1".encode() for i in range(3)]
        assert len(endpoint.requests) == 6
        # Each connection's requests came after exactly one header: checked by the endpoint,
        # which would have dropped the connection (and the proxy answered 502) otherwise.
        assert len(endpoint.headers) == len({n for n, _ in endpoint.requests})

