"""HTTP listeners: an HTTP/1.1 reverse proxy with host and path routing.

Each client connection is parsed by httptools (llhttp). A request is routed (first matching
route), balanced onto an endpoint of the route's backend (sticky cookie first, if the backend
has one), and sent over a pooled keep-alive connection to that endpoint or a new one. Bodies
stream both ways with backpressure: the side that reads is paused while the other side's
socket buffer is full, so a request holds at most a socket buffer of body in memory.

Safety rules:
- a request is sent again to another endpoint only when the connect failed, or when it is
  idempotent, had no body and no byte of a response had arrived (Twisted's ``_shouldRetry``,
  nginx's ``proxy_next_upstream``), at most ``retries`` times;
- pipelined requests are answered in order: the next is only parsed once the current response
  is complete (the client's socket is paused meanwhile);
- the whole request head must arrive within ``header_timeout`` (slowloris); between requests a
  connection may idle ``idle_timeout``;
- forwarding headers a client sent are replaced unless it is a trusted upstream.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httptools
from twisted.internet import protocol
from twisted.logger import Logger

from anycastedge.forward.headers import (
    BUILT,
    RETRYABLE,
    SPOOFABLE,
    cookie_value,
    end_to_end,
    forwarding,
    set_cookie,
    split_hop_by_hop,
    sticky_id,
)
from anycastedge.forward.http_stats import AccessLog, HttpStats
from anycastedge.forward.model import Backend, Listener, ListenerHttp, Route, is_trusted
from anycastedge.forward.pool import Pool, client_key
from anycastedge.forward.proxy_protocol import NeedMore, ProxyHeaderError, header_for, parse
from anycastedge.forward.routing import RouteTable, route_label, split_target
from anycastedge.forward.tls import TlsError
from anycastedge.forward.upstream import (
    Flow,
    PoolKey,
    UpstreamConnection,
    UpstreamFactory,
    UpstreamPools,
    no_delay,
    write_now,
)

log = Logger()
PROXY_HEADER_TIMEOUT = 5.0
LINGER = 2.0  # seconds a connection closed after an error answer still drains the client

_STATUS_TEXT = {
    400: b"Bad Request",
    404: b"Not Found",
    408: b"Request Timeout",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}
_NO_BODY_STATUS = frozenset({204, 304})
# Answers after which the client's connection cannot be trusted to be in step: closed.
_CLOSING = frozenset({400, 408, 413, 431})
# How a response body goes to the client.
_NONE, _AS_IS, _CHUNKED, _UNTIL_CLOSE = 0, 1, 2, 3


class HttpListener(protocol.Factory):
    """Accepts HTTP clients on one listener."""

    noisy = False

    def __init__(
        self,
        listener: Listener,
        pools: Callable[[str], Pool | None],
        reactor: Any,
        upstreams: UpstreamPools,
        access_log: AccessLog | None,
        client_tls: Callable[[Backend, str], Any] | None = None,
    ) -> None:
        self.pools = pools  # backend name -> its pool now (a reload replaces them)
        self.reactor = reactor
        self.upstreams = upstreams
        self.access_log = access_log
        self.client_tls = client_tls  # (backend, host) -> a TLS connection creator
        self.stats = HttpStats()
        self.active = 0
        self.accepted = 0
        self.sticky: dict[tuple[str, str, int], bytes] = {}
        self.listener = listener

    @property
    def listener(self) -> Listener:
        """The listener's configuration now."""
        return self._listener

    @listener.setter
    def listener(self, listener: Listener) -> None:
        # A reload: new routes and limits for the next requests; open connections stay.
        self._listener = listener
        self.http: ListenerHttp = _http(listener)
        https = listener.protocol == "https"
        self.proto = b"https" if https else b"http"
        # A Host without a port names the scheme's default port.
        self.routes = RouteTable(self.http.routes, default_port=443 if https else 80)
        self.labels = {id(r): route_label(r) for r in self.http.routes}

    def buildProtocol(self, addr: Any) -> protocol.Protocol | None:  # noqa: N802
        if self.active >= self._listener.max_connections:
            self.stats.refused["max_connections"] += 1
            return None
        return ClientConnection(self)

    def sticky_id(self, backend: str, host: str, port: int) -> bytes:
        """The sticky cookie value of an endpoint (cached: it is a hash)."""
        key = (backend, host, port)
        value = self.sticky.get(key)
        if value is None:
            value = self.sticky[key] = sticky_id(backend, host, port)
        return value


def _http(listener: Listener) -> ListenerHttp:
    if listener.http is None:
        raise ValueError(f"listener {listener.name!r} has no HTTP options")
    return listener.http


class ClientConnection(protocol.Protocol):
    """One client connection: parses requests, one exchange at a time."""

    transport: Any

    def __init__(self, factory: HttpListener) -> None:
        self.factory = factory
        self.parser = httptools.HttpRequestParser(self)
        self.exchange: Exchange | None = None
        self.held: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self.holding = False  # a request is parsed, its response is not complete
        self.pauses: set[str] = set()
        self.flow = Flow(self.feeding)  # the endpoint side stops while this socket is full
        self.timer: Any = None
        self.in_head = False
        self.head_bytes = 0
        self.client = ""  # the client's address (a trusted peer's PROXY header may name it)
        self.client_port = 0
        self.client_key: bytes | None = None
        self.peer = ""
        self.trusted = False
        self.awaiting_proxy = False
        self.proxy_buffer = b""
        self.closing = False  # an error answer: no further request on this connection
        self.unreadable = False  # the parser failed: what follows cannot be read as requests
        self.closed = False
        self.tunnel: UpstreamConnection | None = None
        self.pending: Exchange | None = None  # a request to send once the parser is done
        self.private: UpstreamConnection | None = None  # PROXY-protocol backends: not shared
        # Per-request parse state
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0

    # --- connection life

    def connectionMade(self) -> None:  # noqa: N802
        f = self.factory
        f.active += 1
        f.accepted += 1
        self.peer = self.client = self.transport.getPeer().host
        no_delay(self.transport)
        self.transport.registerProducer(self.flow, True)
        http = f.http
        self.trusted = is_trusted(self.peer, http.trusted_upstreams)
        listener = f.listener
        if listener.accept_proxy and is_trusted(self.peer, listener.accept_proxy):
            self.awaiting_proxy = True
            self.timer = f.reactor.callLater(PROXY_HEADER_TIMEOUT, self.abort)
            return
        self.timer = f.reactor.callLater(http.header_timeout, self.timed_out)

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        self.factory.active -= 1
        self.closed = True
        self.stop_timer()
        exchange = self.exchange
        if exchange is not None:
            exchange.client_lost()
        if self.tunnel is not None:
            self.tunnel.close()
        if self.private is not None and self.private.owner is None:
            self.private.close()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self.tunnel is not None:
            self.timer.reset(self.factory.listener.idle_timeout)
            self.tunnel.transport.write(data)
            return
        if self.closing or self.unreadable:
            return  # an error answer is out (or owed): nothing more is read as requests
        if self.awaiting_proxy:
            data = self.read_proxy(data)
            if not data:
                return
        self.factory.stats.bytes_in += len(data)
        exchange = self.exchange
        if exchange is not None and exchange.body_pending:
            self.timer.reset(self.factory.listener.idle_timeout)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            exchange = self.exchange
            if exchange is None or not exchange.upgrade or self.held:
                self.abort()
                return
            self.start_pending()
            exchange.early_tunnel(data[upgrade.args[0] :])
            return
        except httptools.HttpParserError as exc:
            self.parse_error(exc)
            return
        self.start_pending()
        if self.in_head:
            # A head arriving in pieces: it has header_timeout from now to arrive whole
            # (slowloris; a head in one piece, the common case, never moves the timer), and
            # what it has taken so far counts against the limit (httptools would otherwise
            # gather a header of any length).
            if not self.head_bytes:
                self.timer.reset(self.factory.http.header_timeout)
            self.head_bytes += len(data)
            if self.head_bytes > self.factory.http.max_header_size:
                self.refuse(431, "header_too_large")

    def read_proxy(self, data: bytes) -> bytes:
        """Take a trusted peer's PROXY header; what follows it is returned."""
        self.proxy_buffer += data
        try:
            parsed = parse(self.proxy_buffer)
        except ProxyHeaderError as exc:
            log.info("listener {name}: bad PROXY header from {peer}: {exc}",
                     name=self.factory.listener.name, peer=self.peer, exc=str(exc))  # fmt: skip
            self.abort()
            return b""
        if isinstance(parsed, NeedMore):
            return b""
        self.awaiting_proxy = False
        if parsed.source is not None:
            self.client, self.client_port = parsed.source
            self.client_key = None
        rest = self.proxy_buffer[parsed.length :]
        self.proxy_buffer = b""
        self.timer.cancel()
        self.timer = self.factory.reactor.callLater(
            self.factory.http.header_timeout, self.timed_out
        )
        return rest

    # --- flow control

    def pause(self, reason: str) -> None:
        """Stop reading from the client for ``reason`` (reasons add up)."""
        if not self.pauses and not self.closed:
            self.transport.pauseProducing()
        self.pauses.add(reason)

    def pause_reading(self) -> None:
        """The endpoint connection this client feeds is full (Flow)."""
        self.pause("upstream")

    def resume_reading(self) -> None:
        """It has room again."""
        self.resume("upstream")

    def resume(self, reason: str) -> None:
        """``reason`` no longer holds; read again when no other does."""
        if reason not in self.pauses:
            return
        self.pauses.discard(reason)
        if not self.pauses and not self.closed:
            self.transport.resumeProducing()

    # --- httptools callbacks (held back while an earlier response is not complete)

    def on_message_begin(self) -> None:
        if self.holding:
            if not self.held:
                self.pause("pipeline")  # a pipelined request: read no more until its turn
            self.held.append((ClientConnection.on_message_begin, (self,)))
            return
        self.url = b""
        self.headers = []
        self.head_size = 0
        self.in_head = True
        self.head_bytes = 0

    def on_url(self, url: bytes) -> None:
        if self.holding:
            self.held.append((ClientConnection.on_url, (self, url)))
            return
        self.url += url
        self.head_size += len(url)
        if self.head_size > self.factory.http.max_header_size:
            raise _Refused(431, "header_too_large")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.holding:
            self.held.append((ClientConnection.on_header, (self, name, value)))
            return
        headers = self.headers
        headers.append((name, value))
        self.head_size += len(name) + len(value) + 4
        http = self.factory.http
        if len(headers) > http.max_headers or self.head_size > http.max_header_size:
            raise _Refused(431, "header_too_large")

    def on_headers_complete(self) -> None:
        # Read from the parser now: by the time a held request is replayed, it has moved on.
        parser = self.parser
        head = (
            parser.get_method(),
            parser.get_http_version(),
            parser.should_keep_alive(),
            parser.should_upgrade(),
        )
        if self.holding:
            self.held.append((ClientConnection.head_complete, (self, *head)))
            return
        self.head_complete(*head)

    def head_complete(
        self, method: bytes, version: str, keep_alive: bool, upgrade: bool
    ) -> None:
        if self.closing:
            return
        # The header deadline's timer runs on: a body's pieces reset it to idle_timeout, and a
        # request waiting for its response is no client's fault (timed_out).
        self.in_head = False
        if version not in ("1.1", "1.0"):
            self.refuse(400, "bad_request")  # HTTP/0.9 has no headers: no Host, no framing
            return
        self.begin(method, version == "1.1", keep_alive, upgrade)

    def on_body(self, body: bytes) -> None:
        if self.holding:
            self.held.append((ClientConnection.on_body, (self, body)))
            return
        if self.exchange is not None:
            self.exchange.request_body(body)

    def on_message_complete(self) -> None:
        if self.holding:
            self.held.append((ClientConnection.on_message_complete, (self,)))
            return
        exchange = self.exchange
        if exchange is not None:
            self.holding = True
            exchange.request_complete()

    # --- requests

    def begin(self, method: bytes, http11: bool, keep_alive: bool, upgrade: bool) -> None:
        """A request head is complete: route it and start the exchange."""
        f = self.factory
        url = self.url
        headers = self.headers
        uri_host, path = split_target(url)
        host = uri_host
        hosts = 0
        length: int | None = None
        chunked = False
        codings = 0
        for name, value in headers:
            low = name.lower()
            if low == b"host":
                hosts += 1
                if host is None:
                    host = value
            elif low == b"content-length":
                length = int(value)
            elif low == b"transfer-encoding":
                codings += 1
                chunked = value.strip().lower() == b"chunked"
        exchange = Exchange(
            self, method, url, headers, host, http11, keep_alive, upgrade, length, chunked
        )
        exchange.uri_host = uri_host is not None
        self.exchange = exchange
        if hosts > 1 or (http11 and hosts == 0):
            exchange.local(400, "bad_request")  # RFC 9112 3.2: exactly one Host
            return
        if codings and (codings > 1 or not chunked):
            # Only chunked frames a request body (RFC 9112 6.1): anything else could be read
            # differently by the endpoint (request smuggling).
            exchange.local(400, "bad_request")
            return
        route = f.routes.match(host, path)
        if route is None:
            exchange.local(404, "no_route")
            return
        exchange.route = route
        limit = route.max_body if route.max_body is not None else f.http.max_body
        exchange.max_body = limit
        if limit is not None and length is not None and length > limit:
            exchange.local(413, "body_too_large")
            return
        self.pending = exchange  # started once the parser has taken the bytes at hand

    def exchange_done(self, exchange: Exchange, keep_alive: bool) -> None:
        """The response is complete: the next request (if any, and allowed) may be parsed."""
        if exchange is not self.exchange:
            return
        self.exchange = None
        if self.closed or self.tunnel is not None:
            return
        if self.closing and not self.held:
            self.linger()
            return
        if not keep_alive:
            self.close()
            return
        self.timer.reset(self.factory.listener.idle_timeout)
        self.holding = False
        held, self.held = self.held, []
        for i, (callback, args) in enumerate(held):
            if self.holding:
                self.held = held[i:] + self.held
                break
            try:
                callback(*args)
            except _Refused as exc:
                self.refuse(exc.status, exc.reason)
                return
            self.start_pending()
        if not self.holding and not self.closing and not self.unreadable:
            self.resume("pipeline")

    def start_pending(self) -> None:
        """Send the request whose head the last bytes completed. Not before: llhttp refuses
        some heads (a Transfer-Encoding it cannot frame) only after on_headers_complete, and a
        refused request must never reach an endpoint."""
        exchange, self.pending = self.pending, None
        if exchange is not None and not exchange.done:
            exchange.start()

    def parse_error(self, exc: Exception) -> None:
        """What llhttp refused: answered in turn, after any response still owed."""
        if self.holding:
            self.start_pending()  # parsed whole before the error: a good request
        self.pending = None  # the request the error is in: never sent
        refused = exc.__context__ if isinstance(exc.__context__, _Refused) else None
        status, reason = (refused.status, refused.reason) if refused else (400, "bad_request")
        if self.holding:
            # A pipelined request went wrong while an earlier one waits for its response:
            # that one is answered first; nothing after the error is read. Bytes after a
            # request that closes the connection are no request at all: just dropped.
            self.unreadable = True
            self.pause("pipeline")
            exchange = self.exchange
            if exchange is None or exchange.keep_alive:
                self.held.append((ClientConnection.refuse, (self, status, reason)))
            return
        self.refuse(status, reason)

    def linger(self) -> None:
        """Close after an error answer with the request maybe not read whole: stop writing, then
        read and drop what the client still sends for a moment, so that the reset a close with
        unread data causes does not destroy the answer before the client read it (nginx's
        lingering close)."""
        if self.factory.proto == b"https":
            self.close()  # TLS has no half-close
            return
        self.transport.unregisterProducer()
        self.transport.loseWriteConnection()
        self.stop_timer()
        self.timer = self.factory.reactor.callLater(LINGER, self.abort)

    def refuse(self, status: int, reason: str) -> None:
        """Answer ``status`` and close: the rest of what the client sent cannot be read."""
        if self.closing:
            return  # one error answer per connection: it closes
        self.closing = True
        exchange = self.exchange
        if exchange is not None and exchange.response_started:
            self.factory.stats.refused[reason] += 1
            self.abort()
            return
        if exchange is None:
            try:
                method = self.parser.get_method()  # known once the request line parsed
            except httptools.HttpParserError:
                method = b"-"
            exchange = Exchange(self, method, self.url, [], None, True, False, False, None, False)
            self.exchange = exchange
        exchange.local(status, reason)

    def timed_out(self) -> None:
        """No complete head (or body piece) in time: 408 if a request had begun; else idle."""
        exchange = self.exchange
        if exchange is not None and exchange.body_pending and self.pauses:
            # The body waits for the endpoint (a connect, a full socket): not the client's fault.
            self.timer = self.factory.reactor.callLater(
                self.factory.listener.idle_timeout, self.timed_out
            )
        elif self.in_head or (exchange is not None and exchange.body_pending):
            self.refuse(408, "header_timeout")
        elif exchange is None or self.tunnel is not None:
            self.timer = None
            self.close()
            if self.tunnel is not None:
                self.tunnel.close()
        else:
            # The request is sent and waits for its response: the backend's timeout rules.
            self.timer = self.factory.reactor.callLater(
                self.factory.listener.idle_timeout, self.timed_out
            )

    def feeding(self) -> UpstreamConnection | None:
        """The endpoint connection whose bytes go to this client now."""
        if self.tunnel is not None:
            return self.tunnel
        exchange = self.exchange
        return exchange.conn if exchange is not None else None

    def key(self) -> bytes:
        """The client's address as hashing balancers take it (worked out once)."""
        if self.client_key is None:
            self.client_key = client_key(self.client)
        return self.client_key

    def stop_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def addresses(self) -> tuple[tuple[str, int], tuple[str, int]]:
        """The client's address and port (as a PROXY header named them, if one did), and ours."""
        peer, host = self.transport.getPeer(), self.transport.getHost()
        return (self.client, self.client_port or peer.port), (host.host, host.port)

    def close(self) -> None:
        """Close once what is buffered is sent (the producer goes first: a TLS transport with
        one registered would never close)."""
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def abort(self) -> None:
        """Close at once."""
        if not self.closed:
            self.transport.abortConnection()


class _Refused(Exception):
    """Raised in a parser callback to stop parsing with a status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class Exchange:
    """One request and its response."""

    __slots__ = (
        "client", "method", "target", "headers", "host", "http11", "keep_alive", "upgrade",
        "length", "chunked", "route", "max_body", "started", "body_seen", "request_done",
        "pool", "index", "counted", "tried", "conn", "response_started", "status",
        "framing", "until_close", "bytes_out", "reason", "sent_at", "head_at", "head", "buffered",
        "done", "retried_stale", "set_cookie", "endpoint", "held_head", "uri_host",
    )  # fmt: skip

    def __init__(
        self,
        client: ClientConnection,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        host: bytes | None,
        http11: bool,
        keep_alive: bool,
        upgrade: bool,
        length: int | None,
        chunked: bool,
    ) -> None:
        self.client = client
        self.method = method
        self.target = target
        self.headers = headers
        self.host = host
        self.http11 = http11
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.length = length
        self.chunked = chunked
        self.route: Route | None = None
        self.max_body: int | None = None
        self.started = time.monotonic()
        self.body_seen = 0
        self.request_done = False
        self.pool: Pool | None = None
        self.index: int | None = None  # the endpoint of the current attempt
        self.counted = False  # the endpoint counts this request as active
        self.tried: frozenset[int] = frozenset()
        self.conn: UpstreamConnection | None = None
        self.response_started = False  # a byte of the response went to the client
        self.status = 0
        self.framing = _NONE  # how the response body goes to the client
        self.until_close = False  # the endpoint's response ends when it closes
        self.bytes_out = 0
        self.reason = ""
        self.sent_at = 0.0
        self.head_at: float | None = None
        self.head = b""
        self.buffered: list[bytes] = []  # request body read before the upstream was ready
        self.done = False
        self.retried_stale = False
        self.set_cookie: bytes | None = None
        self.endpoint = ""
        self.held_head = b""  # the response head, until its body's first piece comes
        self.uri_host = False  # the host came from an absolute-form target: it is the Host

    @property
    def body_pending(self) -> bool:
        """Whether a request body is still to be read from the client."""
        return not self.request_done and (bool(self.length) or self.chunked)

    # --- choosing an endpoint and sending

    def start(self) -> None:
        """Pick an endpoint and send the request there (a new attempt after a failed one)."""
        client = self.client
        f = client.factory
        route = self.route
        assert route is not None
        pool = f.pools(route.backend)
        if pool is None:
            self.local(503, "no_endpoint")
            return
        index = self.pick(pool)
        if index is None:
            if self.tried:
                self.local(502, self.reason or "upstream_error")
            else:
                pool.refused += 1
                self.local(503, "no_endpoint")
            return
        backend = pool.backend
        self.pool, self.index, self.counted = pool, index, True
        self.tried |= {index}
        stats = pool.stats[index]
        stats.active += 1
        endpoint = stats.endpoint
        self.endpoint = str(endpoint)
        if not self.head:
            self.head = self.request_head(self.endpoint)
        key = self.pool_key(backend, endpoint.host, endpoint.port)
        if backend.proxy_protocol:
            conn = client.private  # its PROXY header names this client: never shared
            conn = conn if conn is not None and conn.key == key and not conn.lost else None
        else:
            conn = f.upstreams.take(key)
        if conn is not None:
            self.send(conn)
            return
        f.upstreams.connecting((endpoint.host, endpoint.port))
        factory = UpstreamFactory(f.upstreams, key, self, self.connect_failed)
        timeout = f.listener.connect_timeout
        self.sent_at = time.monotonic()
        client.pause("connect")
        if backend.http.tls and f.client_tls is not None:
            try:
                creator = f.client_tls(backend, key[2])
            except TlsError:
                client.resume("connect")
                f.upstreams.failed((endpoint.host, endpoint.port))
                self.release_endpoint()
                self.local(502, "upstream_error")  # no name to verify the endpoint by
                return
            f.reactor.connectSSL(endpoint.host, endpoint.port, factory, creator, timeout=timeout)
        else:
            f.reactor.connectTCP(endpoint.host, endpoint.port, factory, timeout=timeout)

    def pick(self, pool: Pool) -> int | None:
        """The sticky endpoint if the client names a usable one, else the balancer's choice."""
        f = self.client.factory
        backend = pool.backend
        cookie = backend.http.sticky_cookie
        exclude = self.tried
        cap = backend.http.max_connections
        if cap:
            exclude = exclude | {
                i
                for i, s in enumerate(pool.stats)
                if f.upstreams.count(s.endpoint.host_port()) >= cap
                and not f.upstreams.idle_count(s.endpoint.host_port())
            }
        if cookie is not None:
            wanted = cookie_value(self.headers, cookie.encode())
            if wanted is not None:
                for i in pool.usable():
                    e = pool.stats[i].endpoint
                    if i not in exclude and f.sticky_id(backend.name, e.host, e.port) == wanted:
                        return i
        index = pool.pick(self.client.key(), exclude)
        if index is not None and cookie is not None:
            e = pool.stats[index].endpoint
            value = f.sticky_id(backend.name, e.host, e.port)
            self.set_cookie = set_cookie(cookie.encode(), value, f.proto == b"https")
        return index

    def pool_key(self, backend: Backend, host: str, port: int) -> PoolKey:
        """Connections are shared between requests to the same endpoint and TLS name, of the same
        backend (TLS) or client (PROXY protocol)."""
        server_name = ""
        if backend.http.tls:
            server_name = backend.http.server_name or _bare_host(self.host) or host
        # A PROXY header names one client; TLS verification settings are the backend's.
        owner: str | int = id(self.client) if backend.proxy_protocol else ""
        if backend.http.tls and not owner:
            owner = backend.name
        return (host, port, server_name, owner)

    def request_head(self, endpoint: str) -> bytes:
        """The request as the endpoint gets it: hop-by-hop fields out, the client named."""
        client = self.client
        target = self.target
        if not target.startswith(b"/") and b"://" in target:
            start = target.find(b"/", target.find(b"://") + 3)  # absolute-form: origin-form
            target = target[start:] if start >= 0 else b"/"
        parts = [self.method, b" ", target, b" HTTP/1.1\r\n"]
        drop = BUILT if client.trusted else SPOOFABLE
        if self.host is None:
            # An HTTP/1.0 request without Host: HTTP/1.1 to the endpoint needs one.
            parts += (b"Host: ", endpoint.encode(), b"\r\n")
        elif self.uri_host:
            # RFC 9112 3.2.2: an absolute-form target's host replaces the Host field.
            parts += (b"Host: ", self.host, b"\r\n")
            drop = drop | {b"host"}
        for name, value in end_to_end(self.headers, drop):
            parts += (name, b": ", value, b"\r\n")
        proto = client.factory.proto
        for name, value in forwarding(self.headers, client.client, proto, self.host,
                                      client.trusted):  # fmt: skip
            parts += (name, b": ", value, b"\r\n")
        if self.upgrade:
            for name, value in self.headers:
                if name.lower() == b"upgrade":
                    parts += (b"Upgrade: ", value, b"\r\n")
            parts.append(b"Connection: upgrade\r\n")
        elif self.chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def connect_failed(self, why: str) -> None:
        """A new connection could not be made: another endpoint, while retries are left."""
        self.client.resume("connect")
        pool, index = self.pool, self.index
        self.release_endpoint()
        if pool is not None and index is not None:
            pool.connect_failed(index)
        self.reason = "upstream_error"
        if self.done:
            return
        if self.retries_left():
            self.start()
        else:
            self.local(502, "upstream_error")

    def upstream_connected(self, conn: UpstreamConnection) -> None:
        """A new connection is made: note its connect time, and send."""
        self.client.resume("connect")
        pool, index = self.pool, self.index
        if pool is not None and index is not None:
            pool.connected(index, time.monotonic() - self.sent_at)
        if self.done or pool is None:
            conn.close()
            return
        version = pool.backend.proxy_protocol
        if version:
            self.client.private = conn
            conn.transport.write(header_for(version, *self.client.addresses()))
        self.send(conn)

    def send(self, conn: UpstreamConnection) -> None:
        """Send the head and what body there is; the rest streams as it comes."""
        assert self.pool is not None
        self.conn = conn
        self.sent_at = time.monotonic()
        conn.carry(self, self.head, self.method == b"HEAD", self.pool.backend.http.response_timeout)
        if self.client.flow.paused:
            conn.transport.pauseProducing()  # the client is not reading: nor do we for it
        if self.buffered:
            for chunk in self.buffered:
                self.write_body(chunk)
            self.buffered = []
            self.client.resume("connect")
        if self.request_done and self.chunked:
            conn.transport.write(b"0\r\n\r\n")

    def request_body(self, data: bytes) -> None:
        """A piece of the request body."""
        self.body_seen += len(data)
        if self.max_body is not None and self.body_seen > self.max_body:
            self.client.refuse(413, "body_too_large")
            return
        if self.conn is None:
            if not self.done:
                self.buffered.append(data)
                self.client.pause("connect")  # nothing more until the upstream is ready
            return
        self.write_body(data)

    def write_body(self, data: bytes) -> None:
        conn = self.conn
        assert conn is not None
        conn.busy()
        if self.chunked:
            write_now(conn.transport, b"%x\r\n%s\r\n" % (len(data), data))
        else:
            write_now(conn.transport, data)

    def request_complete(self) -> None:
        """The request has been read whole (its body too)."""
        self.request_done = True
        if self.done:
            self.client.exchange_done(self, self.client_keeps_alive())
            return
        if self.conn is not None and self.chunked:
            self.conn.transport.write(b"0\r\n\r\n")

    # --- the response

    def response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> bool:
        """The endpoint's response head, interim ones too; True for the final one."""
        if self.head_at is None:
            self.head_at = time.monotonic()
        if status < 200:
            if status != 101:
                if self.http11:  # 100 Continue and friends go to the client as they come
                    self.write(_head(status, reason, end_to_end(headers)))
                return False
            if not self.upgrade:
                return True  # a 101 nobody asked for: response_upgraded refuses it
        self.status = status
        if self.upgrade and status != 101:
            # The endpoint declined the upgrade: what the client sends next may not be HTTP.
            self.keep_alive = False
        if self.pool is not None and self.index is not None:
            self.pool.responded(self.index, status)
        out, framing = split_hop_by_hop(headers)
        if status == 101:
            out += [(n, v) for n, v in headers if n.lower() == b"upgrade"]
            out.append((b"Connection", b"upgrade"))
            self.response_started = True
            self.write(_head(status, reason, out))
            return True
        length = b"content-length" in framing
        chunked = b"transfer-encoding" in framing
        if self.method == b"HEAD" or status in _NO_BODY_STATUS:
            self.framing = _NONE
        else:
            self.until_close = not length and not chunked
            if length and not chunked:
                self.framing = _AS_IS
            elif self.http11:
                self.framing = _CHUNKED
                out.append((b"Transfer-Encoding", b"chunked"))
            else:
                self.framing = _UNTIL_CLOSE  # an HTTP/1.0 client: the close ends the body
        if self.set_cookie is not None:
            out.append((b"Set-Cookie", self.set_cookie))
        if not self.client_keeps_alive():
            out.append((b"Connection", b"close"))
        elif not self.http11:
            out.append((b"Connection", b"keep-alive"))
        self.response_started = True
        # Held until the body's first piece or the end of what the endpoint sent this time:
        # a small response then leaves in one send, not two.
        self.held_head = _head(status, reason, out)
        return True

    def feeder(self) -> ClientConnection:
        """The client connection whose request this exchange carries."""
        return self.client

    def flush(self) -> None:
        """Send a held response head (the endpoint's data so far is handled)."""
        if self.held_head:
            self.write(b"")

    def response_body(self, data: bytes) -> None:
        """A piece of the response body."""
        if self.framing == _CHUNKED:
            self.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.write(data)

    def response_complete(self, reusable: bool) -> None:
        """The response ended: its connection goes back to the pool if both sides allow."""
        self.write(b"0\r\n\r\n" if self.framing == _CHUNKED else b"")
        conn, self.conn = self.conn, None
        if conn is not None:
            self.detach(conn, reusable and self.request_done)
        if not self.request_done:
            # Answered before the request body ended (a 413, say): the rest of that body
            # cannot be skipped safely, so the client connection ends with this response.
            self.client.closing = True
        self.finish()

    def response_upgraded(self, rest: bytes) -> None:
        """101 Switching Protocols: from now on, bytes flow both ways as they are."""
        conn, client = self.conn, self.client
        if conn is None or not self.upgrade or self.status != 101:
            self.reason = "upstream_error"
            self.abort_both()
            return
        self.conn = None
        self.release_endpoint()
        conn.release()
        conn.tunnel = client  # both directions keep their backpressure (the flows' feeding)
        client.tunnel = conn
        client.timer.reset(client.factory.listener.idle_timeout)  # the tunnel's idle timeout
        if self.buffered:
            conn.transport.write(b"".join(self.buffered))
            self.buffered = []
        client.pauses.clear()
        client.transport.resumeProducing()
        if rest:
            self.write(rest)
        self.finish()

    def early_tunnel(self, rest: bytes) -> None:
        """What the client sent right after its Upgrade request: held for the tunnel."""
        if rest:
            self.buffered.append(rest)
        self.request_done = True
        self.client.pause("upgrade")  # nothing more until the endpoint said yes or no

    # --- failures

    def upstream_lost(self, conn: UpstreamConnection) -> None:
        """The endpoint's connection closed while it carried this exchange."""
        if self.done or conn is not self.conn:
            return
        self.conn = None
        self.release_endpoint()
        self.unhook(conn)
        if self.until_close and self.status:
            self.response_complete(False)  # a response without length ends with the close
            return
        self.reason = "upstream_error"
        if self.response_started:
            self.abort_both()
        elif self.may_resend(conn):
            self.start()
        else:
            self.local(502, "upstream_error")

    def upstream_failed(self, reason: str) -> None:
        """A malformed response: 502 if the client got nothing of it yet."""
        self.fail(502, "upstream_error")

    def upstream_timeout(self) -> None:
        """No response, or no byte of it for response_timeout."""
        self.fail(504, "upstream_timeout")

    def fail(self, status: int, reason: str) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            self.drop(conn)
        self.reason = reason
        if self.response_started:
            self.abort_both()
        else:
            self.local(status, reason)

    def may_resend(self, conn: UpstreamConnection) -> bool:
        """Whether sending the request again is safe (no body, idempotent) and allowed."""
        if self.body_seen or self.chunked or self.length or self.method not in RETRYABLE:
            return False
        if conn.uses > 1 and not self.retried_stale:
            # A pooled connection the endpoint had just closed: once more on a new one, to any
            # endpoint (this one is not at fault).
            self.retried_stale = True
            self.tried -= {self.index} if self.index is not None else frozenset()
            return not self.client.closed
        return self.retries_left()

    def retries_left(self) -> bool:
        retries = self.pool.backend.http.retries if self.pool is not None else 0
        return len(self.tried) <= retries and not self.client.closed

    # --- endings

    def local(self, status: int, reason: str) -> None:
        """Answer from the proxy itself; the client connection closes after unless the request
        is read whole (its body could not be skipped safely)."""
        if self.done:
            return
        client = self.client
        stats = client.factory.stats
        self.reason = reason
        stats.refused[reason] += 1
        conn, self.conn = self.conn, None
        if conn is not None:
            self.drop(conn)
        self.status = status
        if self.response_started or client.closed:
            self.abort_both()
            return
        if status in _CLOSING or self.body_pending:
            client.closing = True
        text = _STATUS_TEXT[status]
        body = b"%d %s\n" % (status, text)
        close = b"" if self.keep_alive and not client.closing else b"Connection: close\r\n"
        head = (
            b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
            b"Cache-Control: no-store\r\n%s\r\n"
        ) % (status, text, len(body), close)
        self.response_started = True
        self.framing = _NONE
        self.write(head if self.method == b"HEAD" else head + body)
        self.finish()

    def client_keeps_alive(self) -> bool:
        """Whether the client connection stays open after this exchange."""
        return (
            self.keep_alive
            and self.request_done
            and self.framing != _UNTIL_CLOSE
            and not self.client.closing
        )

    def write(self, data: bytes) -> None:
        if self.held_head:
            data, self.held_head = self.held_head + data, b""
        elif not data:
            return
        self.bytes_out += len(data)
        write_now(self.client.transport, data)

    def detach(self, conn: UpstreamConnection, reusable: bool) -> None:
        """Done with ``conn``: back to the pool if it can carry another request, else closed."""
        self.release_endpoint()
        self.unhook(conn)
        pool = self.pool
        if not reusable or pool is None or conn.lost:
            conn.close()
            return
        http = pool.backend.http
        if pool.backend.proxy_protocol:
            conn.idle(http.pool_idle_timeout)  # kept by its client only
        else:
            self.client.factory.upstreams.give(conn, http.pool_size, http.pool_idle_timeout)

    def unhook(self, conn: UpstreamConnection) -> None:
        """Undo what tied ``conn`` to this exchange (pauses either way)."""
        conn.release()
        if self.client.flow.paused and not conn.lost:
            conn.transport.resumeProducing()  # paused for a slow client: pooled, it must read

    def drop(self, conn: UpstreamConnection) -> None:
        """Close ``conn`` (its request failed)."""
        self.release_endpoint()
        self.unhook(conn)
        if not conn.lost:
            conn.close()

    def release_endpoint(self) -> None:
        """The endpoint no longer counts this request as active."""
        if self.counted and self.pool is not None and self.index is not None:
            self.pool.stats[self.index].active -= 1
        self.counted = False

    def client_lost(self) -> None:
        """The client went away: so does the request."""
        if self.done:
            return
        self.reason = self.reason or "client_aborted"
        if self.reason == "client_aborted":
            self.client.factory.stats.refused["client_aborted"] += 1
        conn, self.conn = self.conn, None
        if conn is not None:
            self.drop(conn)
        self.finish()

    def abort_both(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            self.drop(conn)
        self.client.closing = True
        self.client.abort()
        self.finish()

    def finish(self) -> None:
        """Count and log the exchange; the client connection goes on to its next request."""
        if self.done:
            return
        self.done = True
        self.release_endpoint()
        self.log()
        if self.request_done or self.client.closing:
            self.client.exchange_done(self, self.client_keeps_alive())
        # else: request_complete hands over once the parser saw the request's end.

    def log(self) -> None:
        client = self.client
        f = client.factory
        total = time.monotonic() - self.started
        upstream = self.head_at - self.sent_at if self.head_at is not None else None
        route = self.route
        backend = route.backend if route is not None else ""
        if self.pool is not None and self.index is not None:
            stats = self.pool.stats[self.index]
            stats.bytes_in += len(self.head) + self.body_seen
            stats.bytes_out += self.bytes_out
        label = f.labels.get(id(route), "") if route is not None else ""
        f.stats.answered(label, backend, self.status, total, upstream)
        f.stats.bytes_out += self.bytes_out
        if f.access_log is not None:
            f.access_log.request(
                client.client,
                self.method.decode("latin-1"),
                (self.host or b"").decode("latin-1"),
                self.target.decode("latin-1"),
                self.status,
                len(self.head) + self.body_seen,
                self.bytes_out,
                backend,
                self.endpoint,
                upstream,
                total,
                self.reason,
            )


def _bare_host(host: bytes | None) -> str:
    """The name of a Host value, without port or IPv6 brackets."""
    if not host:
        return ""
    text = host.decode("latin-1")
    if text.startswith("["):
        return text[1 : text.find("]")]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def _head(status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)
