"""Twisted shells around the Responder: UDP datagrams and RFC 7766 TCP streams."""

from __future__ import annotations

import socket
from typing import Any, Protocol

from twisted.internet import protocol
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from zope.interface import implementer

from anycastedge.dns.rrl import DROP, LOG, SLIP, RateLimiter
from anycastedge.dns.wire import Responder, truncate

log = Logger()

UDP_BUFFER_BYTES = 4 * 1024 * 1024


class ResponderSource(Protocol):
    """Holds the Responder currently in service; reload swaps it."""

    @property
    def responder(self) -> Responder: ...


class DnsDatagramProtocol(protocol.DatagramProtocol):
    """One UDP socket: each datagram is one query; ``limiter``: response rate limiting."""

    def __init__(self, source: ResponderSource, limiter: RateLimiter | None = None) -> None:
        self.source = source
        self.limiter = limiter
        self._sendto: Any = None

    def startProtocol(self) -> None:  # noqa: N802
        sock = self.transport.socket
        # Bursts beyond the default ~200 KiB receive buffer are lost before we can read them;
        # the kernel caps the request at net.core.rmem_max.
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, UDP_BUFFER_BYTES)
            except OSError:
                log.warn("could not enlarge the UDP socket buffer")
        # Straight to the socket: Twisted's write() re-validates the address on every packet,
        # which is a measurable share of a cached answer's cost.
        self._sendto = sock.sendto

    def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802 (Twisted API)
        responder = self.source.responder
        try:
            response = responder.respond(data, False, addr[0])
        except Exception:
            responder.counters.raised()
            log.failure("query from {addr} raised", addr=addr)
            return
        if response is not None:
            limiter = self.limiter
            if limiter is not None:
                limit_key = responder.rrl_key
                if limit_key is not None:
                    verdict = limiter.check(addr[0], limit_key)
                    if verdict:
                        if verdict & LOG:
                            self._log_limit(limiter, addr[0], limit_key)
                        if verdict & DROP:
                            return
                        if verdict & SLIP:
                            response = truncate(response)
            try:
                self._sendto(response, addr)
            except OSError:
                # Full socket buffer (EAGAIN/ENOBUFS) or an unreachable peer: a UDP reply is
                # best-effort, the client retries.
                responder.counters.send_failed()

    def _log_limit(self, limiter: RateLimiter, host: str, limit_key: bytes) -> None:
        """The start of a limited burst (at most a few lines a second: rrl.LOG_LINES_PER_SECOND)."""
        what = "would limit" if limiter.log_only else "limiting"
        log.info(
            "rate limit: {what} {account} (slip {slip}, window {window} s)",
            what=what,
            account=limiter.describe(host, limit_key),
            slip=limiter.config.slip,
            window=limiter.config.window,
        )


@implementer(IPushProducer)
class DnsStreamProtocol(protocol.Protocol, TimeoutMixin):
    """One TCP connection: two-byte length framing, pipelined queries, idle timeout.

    It registers itself as the producer of its own replies: when a client pipelines queries but
    does not read the answers, the transport's buffer fills, and we stop reading its queries.
    """

    factory: DnsStreamFactory

    def __init__(self) -> None:
        self._buffer = b""
        self._host = ""

    def connectionMade(self) -> None:  # noqa: N802
        self.factory.open += 1
        if self.factory.open > self.factory.max_connections:
            self.transport.loseConnection()
            return
        self._host = getattr(self.transport.getPeer(), "host", "")
        self.callLater = self.factory.clock.callLater
        self.setTimeout(self.factory.idle_timeout)
        self.transport.registerProducer(self, True)

    def pauseProducing(self) -> None:  # noqa: N802
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:  # noqa: N802
        self.transport.resumeProducing()

    def stopProducing(self) -> None:  # noqa: N802
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        self.factory.open -= 1
        self.setTimeout(None)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.resetTimeout()
        buffer = self._buffer + data if self._buffer else data
        pos = 0
        responder = self.factory.source.responder
        while len(buffer) - pos >= 2:
            length = (buffer[pos] << 8) | buffer[pos + 1]
            if len(buffer) - pos - 2 < length:
                break
            message = buffer[pos + 2 : pos + 2 + length]
            pos += 2 + length
            try:
                response = responder.respond(message, True, self._host)
            except Exception:
                responder.counters.raised()
                log.failure("TCP query raised")
                response = None
            if response is None:
                self.transport.loseConnection()  # garbage that cannot be answered
                return
            self.transport.write(len(response).to_bytes(2, "big") + response)
        self._buffer = buffer[pos:]

    def timeoutConnection(self) -> None:  # noqa: N802
        self.transport.loseConnection()


class DnsStreamFactory(protocol.Factory):
    """Makes DnsStreamProtocols that share one ResponderSource and connection limit."""

    protocol = DnsStreamProtocol

    def __init__(
        self,
        source: ResponderSource,
        clock: IReactorTime,
        idle_timeout: float = 10.0,
        max_connections: int = 1000,
    ) -> None:
        self.source = source
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.open = 0
