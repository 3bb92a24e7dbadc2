"""Twisted shells around the Responder: UDP datagrams and RFC 7766 TCP streams."""

from __future__ import annotations

import socket
from typing import Any, Protocol

from twisted.internet import protocol
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from anycastedge.dns import tcp_limits
from anycastedge.dns.counters import TcpCounts
from anycastedge.dns.rrl import DROP, LOG, SLIP, RateLimiter
from anycastedge.dns.tcp_limits import ConnectionTable, TcpLimits, client_key
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
class DnsStreamProtocol(protocol.Protocol):
    """One TCP connection: two-byte length framing, pipelined queries, the limits of TcpLimits.

    Two clocks run: the idle timer restarts with every byte received (a client that connects and
    sends nothing is closed when it fires), and the read timer starts with the first byte of a
    query and is not restarted by the rest of it, so a client trickling a query a byte at a time
    cannot hold its slot for longer than ``read_timeout``. The connection registers itself as the
    producer of its own replies: when a client pipelines queries but does not read the answers,
    the transport's buffer fills, and we stop reading its queries.
    """

    factory: DnsStreamFactory

    def __init__(self) -> None:
        self._buffer = b""
        self._host = ""
        self._client: str | None = None  # the per-client key, once admitted
        self._closing: str | None = None  # why we are closing it, once we are
        self._answered = 0
        self._idle: IDelayedCall | None = None
        self._read: IDelayedCall | None = None
        self._abort: IDelayedCall | None = None

    def connectionMade(self) -> None:  # noqa: N802
        factory = self.factory
        self._host = getattr(self.transport.getPeer(), "host", "")
        client = client_key(self._host)
        refused = factory.table.admit(client)
        if refused is not None:
            self._close(refused)
            return
        self._client = client
        factory.counts.open = factory.table.open
        self._idle = factory.clock.callLater(factory.limits.idle_timeout, self._timed_out, False)
        self.transport.registerProducer(self, True)

    def pauseProducing(self) -> None:  # noqa: N802
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:  # noqa: N802
        self.transport.resumeProducing()

    def stopProducing(self) -> None:  # noqa: N802
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        factory = self.factory
        for timer in (self._idle, self._read, self._abort):
            if timer is not None and timer.active():
                timer.cancel()
        self._idle = self._read = self._abort = None
        if self._client is not None:
            factory.table.release(self._client)
            factory.counts.open = factory.table.open
            self._client = None
        factory.counts.close(self._closing or tcp_limits.CLIENT_CLOSED)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self._closing is not None:
            return  # closing: what is still buffered is not answered
        factory = self.factory
        if self._idle is not None:
            self._idle.reset(factory.limits.idle_timeout)
        buffer = self._buffer + data if self._buffer else data
        pos = 0
        responder = factory.source.responder
        max_queries = factory.limits.max_queries
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
                self._close(tcp_limits.INTERNAL_ERROR)
                return
            if response is None:
                self._close(tcp_limits.UNANSWERABLE)  # garbage that cannot be answered
                return
            self.transport.write(len(response).to_bytes(2, "big") + response)
            self._answered += 1
            if self._answered == max_queries:
                self._close(tcp_limits.MAX_QUERIES)  # after the answers written so far
                return
        self._buffer = buffer = buffer[pos:]
        read = self._read
        if not buffer:
            if read is not None and read.active():
                read.cancel()
            self._read = None
        elif pos or read is None or not read.active():
            # A new query has begun in this segment: its own deadline starts now.
            if read is not None and read.active():
                read.cancel()
            self._read = factory.clock.callLater(factory.limits.read_timeout, self._timed_out, True)

    def _timed_out(self, reading: bool) -> None:
        self._close(tcp_limits.READ_TIMEOUT if reading else tcp_limits.IDLE_TIMEOUT)

    def _close(self, reason: str) -> None:
        """Close after what is written so far, counting ``reason`` when the connection ends.

        A client that does not read its answers would keep the connection (and its slot) open
        while they wait to be sent: it gets ``idle_timeout`` more, then the connection is reset.
        """
        if self._closing is not None:
            return
        self._closing = reason
        self.transport.loseConnection()
        if self._answered:
            clock = self.factory.clock
            self._abort = clock.callLater(self.factory.limits.idle_timeout, self._reset)

    def _reset(self) -> None:
        self.transport.abortConnection()


class DnsStreamFactory(protocol.Factory):
    """Makes DnsStreamProtocols that share one ResponderSource, TcpLimits and connection table.

    ``counts`` (the server's ``DnsCounters.tcp`` by default) gets the connections open and the
    reason each one closed.
    """

    protocol = DnsStreamProtocol

    def __init__(
        self,
        source: ResponderSource,
        clock: IReactorTime,
        limits: TcpLimits | None = None,
        counts: TcpCounts | None = None,
    ) -> None:
        self.source = source
        self.clock = clock
        self.limits = limits if limits is not None else TcpLimits()
        self.table = ConnectionTable(self.limits)
        self.counts = counts if counts is not None else source.responder.counters.tcp

    @property
    def open(self) -> int:
        """Connections open now (admitted, not yet closed)."""
        return self.table.open
