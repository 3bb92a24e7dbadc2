"""A lab HTTP endpoint: ``python -m anycastedge.lab.backend NAME HOST:PORT``.

``GET /health`` answers 200; any other GET answers ``{"endpoint": NAME}``, so that a client can
tell which POP's endpoint (and so which POP) carried its request.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from anycastedge.config.reader import parse_hostport


def serve(name: str, host: str, port: int) -> None:
    """Serve until killed."""
    body = json.dumps({"endpoint": name}).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Head and body leave in two writes: without TCP_NODELAY, Nagle and the client's
        # delayed ACK hold every keep-alive answer for about 40 ms.
        disable_nagle_algorithm = True

        def do_GET(self) -> None:  # noqa: N802
            payload = b"ok\n" if self.path == "/health" else body
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass  # the access log of the POP's forwarding tier says enough

    ThreadingHTTPServer((host, port), Handler).serve_forever()


if __name__ == "__main__":
    address = parse_hostport(sys.argv[2])
    serve(sys.argv[1], *address)
