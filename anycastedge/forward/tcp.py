"""TCP listeners: each accepted connection is carried, byte for byte, to one endpoint.

Each side is registered as the other's streaming producer, so a slow reader slows the writer
and a connection holds at most a socket buffer's worth of data in memory. A FIN from either side
is passed on as a half-close (the other direction keeps flowing). A failed connect is retried on
another endpoint (nothing has reached the client yet). The client's first bytes may be a PROXY
header, taken only from configured upstream addresses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet import interfaces, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from anycastedge.forward.model import Listener, is_trusted
from anycastedge.forward.pool import Pool, client_key
from anycastedge.forward.proxy_protocol import NeedMore, ProxyHeaderError, header_for, parse

log = Logger()
PROXY_HEADER_TIMEOUT = 5.0  # seconds a trusted peer has to send its PROXY header


class TcpListener(protocol.Factory):
    """Accepts clients on one listener and forwards each to an endpoint of its backend."""

    noisy = False
    def __init__(self, listener: Listener, pool: Callable[[], Pool], reactor: Any) -> None:
        self.listener = listener
        self.pool = pool  # the backend's pool now (a reload may replace it)
        self.reactor = reactor
        self.active = 0
        self.accepted = 0
        self.refused = 0  # over max_connections, or no endpoint could take the client
        self.proxy_errors = 0

    def buildProtocol(self, addr: Any) -> protocol.Protocol | None:  # noqa: N802
        if self.active >= self.listener.max_connections:
            self.refused += 1
            return None  # Twisted closes the connection at once
        return ClientSide(self)


@implementer(interfaces.IHalfCloseableProtocol)
class ClientSide(protocol.Protocol):
    """The client's connection to our listener."""

    transport: Any  # a TCP transport: half-close, producers
    def __init__(self, factory: TcpListener) -> None:
        self.factory = factory
        self.upstream: UpstreamSide | None = None
        self.index: int | None = None  # the endpoint of the pool it is forwarded to
        self.pool: Pool | None = None
        self.tried: frozenset[int] = frozenset()
        self.pending: list[bytes] = []  # client bytes read before the endpoint connected
        self.header = b""  # a PROXY header being read
        self.awaiting_header = False
        self.source: tuple[str, int] = ("", 0)  # the client, or whom a PROXY header names
        self.destination: tuple[str, int] = ("", 0)
        self.client_eof = False  # the client sent FIN
        self.client_write_closed = False  # our FIN to the client is out
        self.timer: Any = None
        self.closed = False

    # --- the client's side

    def connectionMade(self) -> None:  # noqa: N802
        factory = self.factory
        factory.active += 1
        factory.accepted += 1
        peer, host = self.transport.getPeer(), self.transport.getHost()
        self.source, self.destination = (peer.host, peer.port), (host.host, host.port)
        if factory.listener.accept_proxy and is_trusted(peer.host, factory.listener.accept_proxy):
            # The header's deadline first; the idle timeout starts once it is read.
            self.awaiting_header = True
            self.timer = factory.reactor.callLater(PROXY_HEADER_TIMEOUT, self.close)
            return
        self.touch()
        self.connect()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.touch()
        if self.awaiting_header:
            self.read_header(data)
        elif self.upstream is not None:
            self.count(len(data), 0)
            self.upstream.transport.write(data)
        else:
            self.pending.append(data)

    def readConnectionLost(self) -> None:  # noqa: N802
        self.client_eof = True
        if self.upstream is not None:
            self.upstream.transport.loseWriteConnection()
        elif self.awaiting_header:
            self.close()
        self.maybe_done()

    def writeConnectionLost(self) -> None:  # noqa: N802
        self.client_write_closed = True
        self.maybe_done()

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        self.factory.active -= 1
        self.closed = True
        self.cancel_timer()
        self.release()
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.loseConnection()

    # --- PROXY header from a trusted peer

    def read_header(self, data: bytes) -> None:
        self.header += data
        try:
            parsed = parse(self.header)
        except ProxyHeaderError as exc:
            self.factory.proxy_errors += 1
            listener = self.factory.listener.name
            log.info(
                "listener {name}: bad PROXY header from {peer}: {exc}",
                name=listener,
                peer=self.source[0],
                exc=str(exc),
            )
            self.close()
            return
        if isinstance(parsed, NeedMore):
            return  # more to come
        self.awaiting_header = False
        self.cancel_timer()
        self.touch()
        if parsed.source is not None and parsed.destination is not None:
            self.source, self.destination = parsed.source, parsed.destination
        rest = self.header[parsed.length :]
        self.header = b""
        if rest:
            self.pending.append(rest)
        self.connect()

    # --- the endpoint's side

    def connect(self) -> None:
        """Connect to the next endpoint the balancer picks; close the client if none is left."""
        listener = self.factory.listener
        pool = self.factory.pool()
        if len(self.tried) >= listener.connect_attempts:
            self.close()
            return
        index = pool.pick(client_key(self.source[0]), self.tried)
        if index is None:
            if not self.tried:
                pool.refused += 1
                self.factory.refused += 1
            self.close()
            return
        self.transport.pauseProducing()  # hold the client's bytes
        self.pool, self.index = pool, index
        self.tried |= {index}
        stats = pool.stats[index]
        stats.active += 1
        endpoint = stats.endpoint
        connector = UpstreamFactory(self, pool, index, time.monotonic())
        self.factory.reactor.connectTCP(
            endpoint.host, endpoint.port, connector, timeout=listener.connect_timeout
        )

    def upstream_connected(
        self, upstream: UpstreamSide, pool: Pool, index: int, started: float
    ) -> None:
        """The endpoint accepted: send the PROXY header and what the client sent, then stream."""
        pool.connected(index, time.monotonic() - started)
        if self.closed:
            upstream.transport.loseConnection()
            return
        self.upstream = upstream
        version = pool.backend.proxy_protocol
        first = b"".join(self.pending)
        self.pending = []
        if version:
            first = header_for(version, self.source, self.destination) + first
        if first:
            self.count(len(first), 0)
            upstream.transport.write(first)
        upstream.transport.registerProducer(self.transport, True)
        self.transport.registerProducer(upstream.transport, True)
        if self.client_eof:
            upstream.transport.loseWriteConnection()
        self.transport.resumeProducing()

    def upstream_failed(self, pool: Pool, index: int) -> None:
        """The connect failed: note it (ejection) and try another endpoint."""
        pool.connect_failed(index)
        self.release()
        if not self.closed:
            self.connect()

    def from_upstream(self, data: bytes) -> None:
        self.touch()
        self.count(0, len(data))
        self.transport.write(data)

    def upstream_read_done(self) -> None:
        self.transport.loseWriteConnection()

    def upstream_lost(self) -> None:
        """The endpoint's connection is gone (both halves, or reset): so goes the client's."""
        if self.transport is not None:
            self.transport.loseConnection()

    # --- bookkeeping

    def count(self, sent: int, received: int) -> None:
        if self.pool is not None and self.index is not None:
            stats = self.pool.stats[self.index]
            stats.bytes_in += sent
            stats.bytes_out += received

    def release(self) -> None:
        """The endpoint no longer counts this connection (or connect attempt) as active."""
        if self.pool is not None and self.index is not None:
            self.pool.stats[self.index].active -= 1
        self.pool = None
        self.index = None

    def maybe_done(self) -> None:
        """Both directions ended with a FIN: close."""
        if self.client_eof and self.client_write_closed:
            self.transport.loseConnection()

    def touch(self) -> None:
        """Data moved: the idle timeout starts over."""
        if self.awaiting_header:
            return
        idle = self.factory.listener.idle_timeout
        if self.timer is not None and self.timer.active():
            self.timer.reset(idle)  # cheaper than a new call per chunk of a bulk transfer
        else:
            self.timer = self.factory.reactor.callLater(idle, self.close)

    def cancel_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def close(self) -> None:
        """Close both sides (what is buffered is still sent)."""
        if self.transport is not None:
            self.transport.loseConnection()
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.loseConnection()


class UpstreamFactory(protocol.ClientFactory):
    """Connects one client to one endpoint."""

    noisy = False  # one per connection: no "Starting factory" line each time
    def __init__(self, client: ClientSide, pool: Pool, index: int, started: float) -> None:
        self.client, self.pool, self.index, self.started = client, pool, index, started

    def buildProtocol(self, addr: Any) -> UpstreamSide:  # noqa: N802
        return UpstreamSide(self)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:  # noqa: N802
        self.client.upstream_failed(self.pool, self.index)


@implementer(interfaces.IHalfCloseableProtocol)
class UpstreamSide(protocol.Protocol):
    """Our connection to the endpoint."""

    transport: Any
    def __init__(self, factory: UpstreamFactory) -> None:
        self.factory = factory
        self.eof = False  # the endpoint sent FIN
        self.write_closed = False  # our FIN to the endpoint is out

    def connectionMade(self) -> None:  # noqa: N802
        f = self.factory
        f.client.upstream_connected(self, f.pool, f.index, f.started)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.factory.client.from_upstream(data)

    def readConnectionLost(self) -> None:  # noqa: N802
        self.eof = True
        self.factory.client.upstream_read_done()
        self.maybe_done()

    def writeConnectionLost(self) -> None:  # noqa: N802
        self.write_closed = True
        self.maybe_done()

    def maybe_done(self) -> None:
        """Both directions ended with a FIN: close."""
        if self.eof and self.write_closed:
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        self.factory.client.upstream_lost()
