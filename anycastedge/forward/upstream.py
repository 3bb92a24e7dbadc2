"""HTTP/1.1 connections to endpoints, and the pool of idle keep-alive ones.

A connection carries one request at a time (never pipelined). Once its response is complete
and both sides allow keep-alive it goes back to the pool of its endpoint, at most
``pool_size`` idle there, each for ``pool_idle_timeout`` seconds; an idle connection that
receives anything or is closed by the endpoint leaves the pool. The response is parsed by
httptools (llhttp) and handed, event by event, to the exchange that owns the connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import httptools
from twisted.internet import interfaces, protocol, task, tcp
from twisted.logger import Logger
from zope.interface import implementer

log = Logger()

# (endpoint host, port, TLS server name or "" for plain HTTP, owner: "" when shared by every
# request to the endpoint, else the backend (TLS) or the client (PROXY protocol) it belongs to)
PoolKey = tuple[str, int, str, str | int]


class Owner(Protocol):
    """What a connection reports to the exchange it carries (forward/http.py's Exchange)."""

    def upstream_connected(self, conn: UpstreamConnection) -> None: ...
    def upstream_failed(self, reason: str) -> None: ...
    def response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> bool: ...
    def response_body(self, data: bytes) -> None: ...
    def flush(self) -> None: ...
    def feeder(self) -> Any: ...
    def response_complete(self, reusable: bool) -> None: ...
    def response_upgraded(self, rest: bytes) -> None: ...
    def upstream_lost(self, conn: UpstreamConnection) -> None: ...
    def upstream_timeout(self) -> None: ...


@implementer(interfaces.IPushProducer)
class Flow:
    """Registered once on a connection's socket (client or endpoint side): while its buffer is
    full, the connection feeding it now, ``feeder()``, stops reading (backpressure)."""

    __slots__ = ("feeder", "paused")

    def __init__(self, feeder: Callable[[], Any]) -> None:
        self.feeder = feeder
        self.paused = False

    def pauseProducing(self) -> None:  # noqa: N802
        self.paused = True
        feeder = self.feeder()
        if feeder is not None:
            feeder.pause_reading()

    def resumeProducing(self) -> None:  # noqa: N802
        self.paused = False
        feeder = self.feeder()
        if feeder is not None:
            feeder.resume_reading()

    def stopProducing(self) -> None:  # noqa: N802
        """The connection is gone: what it carried learns it in connectionLost."""


class UpstreamConnection(protocol.Protocol):
    """One connection to one endpoint; owned by an exchange while it carries a request."""

    transport: Any

    def __init__(self, pools: UpstreamPools, key: PoolKey) -> None:
        self.pools = pools
        self.key = key
        self.owner: Owner | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.reason = b""
        self.no_body = False  # the response to a HEAD: complete with its head
        self.spent = False  # the parser saw a bodiless response end: a fresh one for the next
        self.tunnel: Any = None  # upgraded: the client connection its bytes go to as they are
        self.uses = 0
        self.timer: Any = None
        self.timeout = 0.0
        self.lost = False
        self.idle_until = 0.0
        self.flow = Flow(self.feeder)

    # --- connection life

    def connectionMade(self) -> None:  # noqa: N802
        no_delay(self.transport)
        self.transport.registerProducer(self.flow, True)
        if self.owner is not None:
            self.owner.upstream_connected(self)

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        self.lost = True
        self.pools.closed(self)
        self._cancel_timer()
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.upstream_lost(self)
        if self.tunnel is not None:
            self.tunnel.close()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self.tunnel is not None:
            self.tunnel.timer.reset(self.tunnel.factory.listener.idle_timeout)
            self.tunnel.transport.write(data)
            return
        owner = self.owner
        if owner is None:
            # Nothing is asked of an idle connection: whatever comes is garbage or a late 408.
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._cancel_timer()
            if self.owner is not None:
                self.owner.response_upgraded(data[upgrade.args[0] :])
            return
        except httptools.HttpParserError as exc:
            log.info("malformed response from {key}: {exc}", key=self.key[:2], exc=str(exc))
            self.owner = None
            self.close()
            owner.upstream_failed("malformed response")
            return
        if self.spent:
            self.spent = False
            self.parser = httptools.HttpResponseParser(self)
        if self.owner is not None:  # the response goes on: its timeout starts over
            self.owner.flush()
            if self.timer is not None:
                self.timer.reset(self.timeout)

    # --- one request

    def carry(self, owner: Owner, head: bytes, no_body: bool, timeout: float) -> None:
        """Send a request head for ``owner``; the response comes back to it."""
        self.owner = owner
        self.no_body = no_body
        self.uses += 1
        self.timeout = timeout
        if self.timer is None or not self.timer.active():
            self.timer = self.pools.reactor.callLater(timeout, self._timed_out)
        else:
            self.timer.reset(timeout)
        write_now(self.transport, head)

    def close(self) -> None:
        """Close once what is buffered is sent (the producer goes first: a TLS transport with
        one registered would never close)."""
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def pause_reading(self) -> None:
        """Its client's socket is full: read nothing more from the endpoint for now."""
        self.transport.pauseProducing()

    def resume_reading(self) -> None:
        """Its client's socket has room again."""
        self.transport.resumeProducing()

    def busy(self) -> None:
        """Request bytes went out: the response timeout starts over."""
        if self.timer is not None:
            self.timer.reset(self.timeout)

    def release(self) -> None:
        """The owner is done with the connection."""
        if self.flow.paused:
            client = self.feeder()
            if client is not None:
                client.resume_reading()  # no longer feeding this connection
        self.owner = None

    def feeder(self) -> Any:
        """The client connection whose bytes this connection carries now, if any."""
        if self.tunnel is not None:
            return self.tunnel
        owner = self.owner
        return owner.feeder() if owner is not None else None

    def _timed_out(self) -> None:
        self.timer = None
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.upstream_timeout()
        self.close()

    def _cancel_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def idle(self, seconds: float) -> None:
        """Kept in the pool: closed after ``seconds`` unless used (by the pools' sweep, which
        costs less than moving this connection's timer earlier and back for every request)."""
        self.idle_until = self.pools.reactor.seconds() + seconds

    # --- httptools callbacks

    def on_message_begin(self) -> None:
        self.headers = []

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        reason, self.reason = self.reason, b""
        owner = self.owner
        if owner is None:
            return
        final = owner.response_head(status, reason, self.headers, self.parser.should_keep_alive())
        if final and self.no_body and status != 101:
            # llhttp cannot be told that a HEAD's response has no body: it ends here.
            self.spent = True
            self._complete()

    def on_body(self, body: bytes) -> None:
        if self.spent:
            self.owner = None  # a body after a bodiless response: unusable
            self.close()
            return
        if self.owner is not None:
            self.owner.response_body(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 or self.spent:
            return  # interim responses are passed on as they come; the final one follows
        self._complete()

    def _complete(self) -> None:
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.response_complete(self.parser.should_keep_alive() and not self.lost)


class UpstreamPools:
    """Idle keep-alive connections by endpoint, and how many are open to each."""

    SWEEP = 1.0  # seconds between looks for idle connections past their time

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.idle: dict[PoolKey, list[UpstreamConnection]] = {}
        self._sweeper = task.LoopingCall(self.sweep)
        self._sweeper.clock = reactor
        self.open: dict[tuple[str, int], int] = {}  # by endpoint: busy, idle and connecting
        self.reused = 0
        self.created = 0

    def take(self, key: PoolKey) -> UpstreamConnection | None:
        """An idle connection to ``key``'s endpoint, the most recently used first (warmest)."""
        idle = self.idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.lost:
                self.reused += 1
                return conn
        return None

    def give(self, conn: UpstreamConnection, size: int, timeout: float) -> None:
        """Keep ``conn`` for reuse, unless ``size`` are idle there already."""
        idle = self.idle.setdefault(conn.key, [])
        if len(idle) >= size or conn.lost:
            conn.close()
            return
        conn.idle(timeout)
        idle.append(conn)
        if not self._sweeper.running:
            self._sweeper.start(self.SWEEP, now=False)

    def sweep(self) -> None:
        """Close idle connections past their pool_idle_timeout (the oldest are first)."""
        now = self.reactor.seconds()
        for key in list(self.idle):
            idle = self.idle[key]
            while idle and idle[0].idle_until <= now:
                idle.pop(0).close()
            if not idle:
                del self.idle[key]
        if not self.idle and self._sweeper.running:
            self._sweeper.stop()

    def connecting(self, endpoint: tuple[str, int]) -> None:
        """A new connection to ``endpoint`` is being made (counted until it closes)."""
        self.open[endpoint] = self.open.get(endpoint, 0) + 1
        self.created += 1

    def failed(self, endpoint: tuple[str, int]) -> None:
        """A connect to ``endpoint`` failed: it no longer counts."""
        self._uncount(endpoint)

    def closed(self, conn: UpstreamConnection) -> None:
        """``conn`` is gone: out of the pool and the count."""
        idle = self.idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)
        self._uncount(conn.key[:2])

    def _uncount(self, endpoint: tuple[str, int]) -> None:
        left = self.open.get(endpoint, 0) - 1
        if left > 0:
            self.open[endpoint] = left
        else:
            self.open.pop(endpoint, None)

    def count(self, endpoint: tuple[str, int]) -> int:
        """Connections open (or opening) to ``endpoint``."""
        return self.open.get(endpoint, 0)

    def idle_count(self, endpoint: tuple[str, int]) -> int:
        """Idle pooled connections to ``endpoint``."""
        return sum(len(v) for k, v in self.idle.items() if k[:2] == endpoint)

    def close_endpoint(self, endpoint: tuple[str, int]) -> None:
        """Close the idle connections to ``endpoint`` (it went down)."""
        for key in [k for k in self.idle if k[:2] == endpoint]:
            for conn in self.idle.pop(key):
                conn.close()

    def close_all(self) -> None:
        """Close every idle connection (the service stops)."""
        for key in list(self.idle):
            for conn in self.idle.pop(key):
                conn.close()
        if self._sweeper.running:
            self._sweeper.stop()


class UpstreamFactory(protocol.ClientFactory):
    """Makes one connection for one exchange."""

    noisy = False

    def __init__(
        self,
        pools: UpstreamPools,
        key: PoolKey,
        owner: Owner,
        failed: Callable[[str], None],
    ) -> None:
        self.pools, self.key, self.owner, self.failed = pools, key, owner, failed
        self.conn: UpstreamConnection | None = None

    def buildProtocol(self, addr: Any) -> UpstreamConnection:  # noqa: N802
        conn = UpstreamConnection(self.pools, self.key)
        conn.owner = self.owner
        self.conn = conn
        return conn

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:  # noqa: N802
        self.pools.failed(self.key[:2])
        self.failed(reason.getErrorMessage())


def no_delay(transport: Any) -> None:
    """Heads and small bodies go out at once (a proxy adds no Nagle delay to either side)."""
    setno_delay = getattr(transport, "setTcpNoDelay", None)
    if setno_delay is not None:
        setno_delay(True)


_PLAIN_TCP = (tcp.Server, tcp.Client)


def write_now(transport: Any, data: bytes) -> None:
    """``transport.write(data)``, but sent at once when nothing is queued before it.

    Twisted queues every write for the next turn of the reactor, which costs two epoll_ctl
    calls and a loop iteration per write; a proxy writes small heads and bodies on sockets that
    are almost always writable. Whatever the socket does not take now is queued as usual, so
    ordering and backpressure (producers) are Twisted's.
    """
    if (
        type(transport) in _PLAIN_TCP
        and transport.connected
        and not transport.disconnecting
        and not transport._tempDataBuffer
        and transport.offset == len(transport.dataBuffer)
    ):
        try:
            sent = transport.socket.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = 0  # reset or closed: the queued write meets the error, as Twisted reports it
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)
