"""A Twisted process using anycastedge.forward.tls, for tests to talk to over loopback.

``python -m tests.support.tls_peer serve SPEC``: a TLS echo server on 127.0.0.1 (SPEC is JSON:
``certificates`` [{cert, key, hosts}], optional ``min_version``, ``ciphers``, and ``adopt`` to
listen through ``reactor.adoptStreamPort`` instead of ``listenSSL``). It prints ``ready PORT``;
each line then read on standard input ``reload`` answers ``reloaded`` or ``error MESSAGE``.
A client's data is echoed after ``sni=NAME alpn=PROTO|`` (``-`` for none).

``python -m tests.support.tls_peer fetch SPEC``: one HTTP/1.0 GET over ClientTls (SPEC: ``http``,
the BackendHttp fields; ``host``; ``port``) printing JSON {"status": line} or {"error": reason}.
"""

from __future__ import annotations

import json
import socket
import sys
from typing import Any

from twisted.internet import protocol, reactor, stdio
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from anycastedge.forward.model import BackendHttp, Certificate, ListenerTls
from anycastedge.forward.tls import ClientTls, ServerTls, TlsError, server_name

REACTOR: Any = reactor  # Twisted's reactor module is untyped as the reactor it becomes


class Echo(protocol.Protocol):
    """Echoes data after the connection's SNI name and negotiated ALPN protocol."""

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        alpn = self.transport.negotiatedProtocol  # type: ignore[union-attr]
        name = server_name(self.transport) or "-"
        proto = alpn.decode() if alpn else "-"
        self.transport.write(f"sni={name} alpn={proto}|".encode() + data)  # type: ignore[union-attr]


class Control(LineReceiver):
    """Standard input: ``reload`` reloads the server's certificates."""

    delimiter = b"\n"

    def __init__(self, server: ServerTls) -> None:
        self.server = server

    def lineReceived(self, line: bytes) -> None:  # noqa: N802
        if line.strip() != b"reload":
            self.sendLine(b"error unknown command")
            return
        try:
            self.server.reload()
        except TlsError as e:
            self.sendLine(f"error {e}".encode())
        else:
            self.sendLine(b"reloaded")

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:  # noqa: N802
        if REACTOR.running:
            REACTOR.stop()


def serve(spec: dict[str, Any]) -> None:
    """Run the echo server until standard input closes."""
    tls = ListenerTls(
        certificates=tuple(
            Certificate(c["cert"], c["key"], tuple(c.get("hosts", ())))
            for c in spec["certificates"]
        ),
        min_version=spec.get("min_version", "1.2"),
        **({"ciphers": spec["ciphers"]} if "ciphers" in spec else {}),
    )
    try:
        server = ServerTls(tls)
    except TlsError as e:
        print(f"error {e}", flush=True)
        sys.exit(1)
    factory = protocol.Factory.forProtocol(Echo)
    if spec.get("adopt"):
        # As a socket handed over by a parent process would be: bound and listening already.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(50)
        sock.setblocking(False)
        port = REACTOR.adoptStreamPort(sock.fileno(), socket.AF_INET, server.wrap(factory))
        sock.close()  # the reactor has its own copy of the descriptor
    else:
        port = REACTOR.listenSSL(0, factory, server, interface="127.0.0.1")
    print(f"ready {port.getHost().port}", flush=True)
    stdio.StandardIO(Control(server))
    REACTOR.run()


class Fetch(protocol.Protocol):
    """Sends one GET and keeps what comes back."""

    def __init__(self, host: str, result: dict[str, str]) -> None:
        self.host = host
        self.result = result
        self.received = b""

    def connectionMade(self) -> None:  # noqa: N802
        request = f"GET / HTTP/1.0\r\nHost: {self.host}\r\n\r\n"
        self.transport.write(request.encode())  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.received += data

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:  # noqa: N802
        if self.received:
            self.result["status"] = self.received.split(b"\r\n", 1)[0].decode()
        else:
            self.result["error"] = str(reason.value)
        if REACTOR.running:
            REACTOR.stop()


class FetchFactory(protocol.ClientFactory):
    """Creates the Fetch and reports a failed connect."""

    def __init__(self, host: str, result: dict[str, str]) -> None:
        self.host = host
        self.result = result

    def buildProtocol(self, addr: Any) -> Fetch:  # noqa: N802
        return Fetch(self.host, self.result)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:  # noqa: N802
        self.result["error"] = str(reason.value)
        REACTOR.stop()


def fetch(spec: dict[str, Any]) -> None:
    """One GET to 127.0.0.1:port over ClientTls; print the outcome as JSON."""
    result: dict[str, str] = {}
    try:
        creator = ClientTls(BackendHttp(**spec["http"])).creator(spec["host"])
    except TlsError as e:
        print(json.dumps({"error": f"TlsError {e}"}), flush=True)
        return
    REACTOR.connectSSL("127.0.0.1", spec["port"], FetchFactory(spec["host"], result), creator)

    def give_up() -> None:
        result["error"] = "timed out"
        REACTOR.stop()

    timeout = REACTOR.callLater(20, give_up)
    REACTOR.run()
    if timeout.active():
        timeout.cancel()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    command, spec_json = sys.argv[1:3]
    {"serve": serve, "fetch": fetch}[command](json.loads(spec_json))
