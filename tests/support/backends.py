"""Real HTTP(S) endpoints on loopback addresses for health-check tests: switchable answers."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer


@dataclass
class Backend:
    """What the test server answers (switchable by the test) and what it received."""

    status: int = 200
    body: bytes = b"OK"
    location: str | None = None
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Host header)
    sni: list[str | None] = field(default_factory=list)
    port: int = 0


class Handler(BaseHTTPRequestHandler):
    """Answers every GET from the server's Backend."""

    server: BackendServer
    timeout = 10  # a client that stalls cannot hold a handler thread for long

    def do_GET(self) -> None:  # noqa: N802
        backend = self.server.backend
        backend.requests.append((self.path, self.headers.get("Host")))
        self.send_response(backend.status)
        if backend.location is not None:
            self.send_header("Location", backend.location)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(backend.body)))
        self.end_headers()
        self.wfile.write(backend.body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests assert on what the server recorded."""


class BackendServer(ThreadingHTTPServer):
    """An HTTP(S) server for one Backend; TLS, when set, is handshaken in the request thread."""

    daemon_threads = True
    block_on_close = False

    def __init__(
        self, address: str, backend: Backend, tls: ssl.SSLContext | None = None, port: int = 0
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.backend = backend
        self.tls = tls
        super().__init__((address, port), Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the address's FQDN: DNS traffic that may leave loopback.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = "localhost", int(self.server_address[1])

    def finish_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        if self.tls is None:
            super().finish_request(request, client_address)  # type: ignore[arg-type]
            return
        with self.tls.wrap_socket(request, server_side=True) as tls_request:
            super().finish_request(tls_request, client_address)  # type: ignore[arg-type]

    def handle_error(self, request: object, client_address: object) -> None:
        """Quiet: a client that rejects our certificate or hangs up early is what some tests do."""


@contextmanager
def serving(
    address: str, backend: Backend, tls: ssl.SSLContext | None = None, port: int = 0
) -> Iterator[Backend]:
    """Run a BackendServer on ``address`` (``port``, or a free one) in a thread for the block."""
    server = BackendServer(address, backend, tls, port)
    backend.port = server.server_port
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield backend
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        assert not thread.is_alive()
