"""An HTTP/1.1 endpoint for the L7 forwarding tests: keep-alive, bodies streamed both ways
(Content-Length and chunked), 100-continue, a WebSocket echo, and counters of what it saw.

Paths:
- ``/echo...``: 200 with a JSON body naming the endpoint, the request and its headers;
- ``/upload``: reads the request body as it streams (either framing), answers its length and
  SHA-256 without keeping it;
- ``/bytes/N`` (``?chunked=1``): N bytes of response body, streamed in 64 KiB writes;
- ``/status/N``: answers status N;
- ``/slow/S``: answers after S seconds;
- ``/ws``: a WebSocket handshake (RFC 6455), then echoes each frame's payload back.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B85"


@dataclass
class Seen:
    """What one endpoint received."""

    name: str
    connections: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body are separate writes: no 40 ms between them
    server: EndpointServer
    timeout = 30

    def setup(self) -> None:
        super().setup()
        with self.server.seen.lock:
            self.server.seen.connections += 1
        self.connection_id = self.server.seen.connections

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests assert on Seen."""

    def record(self, **extra: Any) -> dict[str, Any]:
        entry = {
            "endpoint": self.server.seen.name,
            "connection": self.connection_id,
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            **extra,
        }
        with self.server.seen.lock:
            self.server.seen.requests.append(entry)
        return entry

    def reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def read_body(self) -> tuple[int, str]:
        """Stream the request body (either framing) through SHA-256."""
        digest = hashlib.sha256()
        total = 0
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                left = size
                while left:
                    data = self.rfile.read(min(left, 1 << 16))
                    digest.update(data)
                    left -= len(data)
                    total += len(data)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                data = self.rfile.read(min(left, 1 << 16))
                if not data:
                    break
                digest.update(data)
                left -= len(data)
                total += len(data)
        return total, digest.hexdigest()

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        if path.startswith("/bytes/"):
            self.send_bytes(int(path.rsplit("/", 1)[1]), "chunked=1" in self.path)
        elif path.startswith("/status/"):
            self.record()
            status = int(path.rsplit("/", 1)[1])
            self.reply(status, b"status %d\n" % status)
        elif path.startswith("/slow/"):
            self.record()
            time.sleep(float(path.rsplit("/", 1)[1]))
            self.reply(200, b"slow\n")
        elif path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            self.websocket()
        else:
            entry = self.record()
            body = json.dumps(entry).encode()
            self.reply(200, body, {"Content-Type": "application/json"})

    do_HEAD = do_GET  # noqa: N815
    do_DELETE = do_GET  # noqa: N815

    def do_POST(self) -> None:  # noqa: N802
        total, digest = self.read_body()
        entry = self.record(length=total, sha256=digest)
        path = self.path.split("?")[0]
        if path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
            self.reply(status, b"status %d\n" % status)
            return
        body = json.dumps(entry).encode()
        self.reply(200, body, {"Content-Type": "application/json"})

    do_PUT = do_POST  # noqa: N815

    def send_bytes(self, n: int, chunked: bool) -> None:
        self.record()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(n))
        self.end_headers()
        block = bytes(range(256)) * 256  # 64 KiB
        left = n
        while left:
            piece = block[: min(left, len(block))]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            left -= len(piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def websocket(self) -> None:
        self.record()
        key = self.headers["Sec-WebSocket-Key"].encode()
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        while True:
            frame = read_frame(self.rfile)
            if frame is None or frame[0] == 0x8:  # closed, or a close frame
                return
            self.wfile.write(encode_frame(frame[0], frame[1], mask=False))
            self.wfile.flush()


def read_frame(stream: Any) -> tuple[int, bytes] | None:
    """One WebSocket frame (opcode, payload), unmasked; None at EOF."""
    head = stream.read(2)
    if len(head) < 2:
        return None
    opcode, length = head[0] & 0x0F, head[1] & 0x7F
    if length == 126:
        length = int.from_bytes(stream.read(2), "big")
    elif length == 127:
        length = int.from_bytes(stream.read(8), "big")
    mask = stream.read(4) if head[1] & 0x80 else b""
    payload = stream.read(length)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return opcode, payload


def encode_frame(opcode: int, payload: bytes, mask: bool) -> bytes:
    """A final WebSocket frame; clients mask (RFC 6455 5.3)."""
    head = bytes([0x80 | opcode])
    bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = b"\x01\x02\x03\x04"
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class EndpointServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, name: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.seen = Seen(name)
        super().__init__((host, port), Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: the tests assert on what the endpoint saw, and a proxy's TCP health check (a
        connect and a reset) is no error."""


@contextlib.contextmanager
def endpoints(*names: str, host: str = "127.0.0.1") -> Iterator[list[EndpointServer]]:
    """Serve one endpoint per name on loopback (threads), stopped on exit."""
    servers = [EndpointServer(name, host) for name in names]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    try:
        yield servers
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
