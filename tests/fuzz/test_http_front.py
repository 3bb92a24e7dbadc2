"""Fuzz target: the HTTP listener's client side, ``forward.http.ClientConnection``, in memory.

tests/integration/test_http_fuzz.py sends its cases (tests/support/http_cases.py) to a real
`anycastedge serve` over real sockets, each in one write. Here the same cases, and any bytes,
arrive in pieces cut anywhere, on a connection whose transports, endpoints and clock are in
memory (Twisted's StringTransport and MemoryReactorClock), so each example takes a millisecond
and every timer can be run out. The endpoints answer 200 to each request; in the wild variant
they also refuse connects, close, stall, send garbage, interim and informational responses,
bodies delimited by the close, and agree to upgrades.

Whatever arrives, and however it is cut:
- nothing raises out of ``dataReceived`` (or any other callback the harness makes);
- what the client gets is a sequence of whole HTTP/1.1 responses (in the wild variant the last
  may be cut by an abort, and an upgrade's tunnel ends the HTTP part), the statuses the case
  requires, malformed requests never reaching an endpoint;
- an endpoint can parse every request it gets, with no NUL, CR or LF in a header value and no
  Transfer-Encoding but chunked (no smuggling through the proxy);
- once the timers ran out, the client's connection is closed, every endpoint connection too,
  and nothing is left counted: active connections, the upstream pool, the endpoints' loads.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httptools
import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from anycastedge.forward.http import ClientConnection, HttpListener
from anycastedge.forward.http_stats import AccessLog
from anycastedge.forward.model import Backend, BackendHttp, Endpoint, Listener, ListenerHttp, Route
from anycastedge.forward.pool import Pool
from anycastedge.forward.upstream import UpstreamPools
from tests.fuzz.profiles import fuzz_settings
from tests.support.http_cases import SENTINEL, TAG, VALID, Case, cases, responses

ENDPOINTS = (("127.0.0.1", 18001), ("127.0.0.1", 18002))  # in memory: never connected to
# As the integration test's LIMITS, and a response timeout a run of the clock reaches.
LISTENER = Listener(
    "web", "127.0.0.1", 8080, "http", "", idle_timeout=3.0,
    http=ListenerHttp(routes=(Route("app"),), header_timeout=3.0, max_header_size=8192,
                      max_headers=50, max_body=100_000, access_log=None),
)  # fmt: skip
BACKEND = Backend("app", tuple(Endpoint(h, p) for h, p in ENDPOINTS),
                  http=BackendHttp(response_timeout=5.0, pool_idle_timeout=4.0))  # fmt: skip
OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
SIMULATED = 600.0  # seconds of clock a connection may take to end: far past every timeout
STEPS = 20_000  # bound of the harness's loop


class Recorder(AccessLog):
    """The access log, which also keeps each exchange's method, status and bytes sent, in the
    order they ended (the order the client got the responses in)."""

    def __init__(self) -> None:
        super().__init__(io.StringIO())
        self.exchanges: list[tuple[bytes, int, int]] = []

    def request(self, client: str, method: str, host: str, target: str, status: int,
                bytes_in: int, bytes_out: int, *rest: Any) -> None:  # fmt: skip
        super().request(client, method, host, target, status, bytes_in, bytes_out, *rest)
        self.flush()
        self.exchanges.append((method.encode("latin-1"), status, bytes_out))


class Socket(StringTransport):
    """One side of a connection in memory. A close takes effect once the callback that asked for
    it returns (``Net.reap``), as a reactor does; after it, writes are dropped."""

    def __init__(self, net: Net, peer: IPv4Address, host: IPv4Address) -> None:
        super().__init__(hostAddress=host, peerAddress=peer)
        self.net = net
        self.protocol: Any = None
        self.lost = False
        self.aborted = False  # closed at once with writes maybe still queued (a cut response)
        self.write_shut = False
        self.taken = 0  # how much of value() the far side has read

    def write(self, data: bytes) -> None:
        if not self.lost and not self.write_shut and not self.aborted:
            super().write(data)

    def loseConnection(self) -> None:  # noqa: N802
        super().loseConnection()
        self.net.closing.append(self)

    def abortConnection(self) -> None:  # noqa: N802
        # What was written before the write side was shut (a lingering close) is all out.
        self.aborted = not self.write_shut
        self.write_shut = True
        self.loseConnection()

    def loseWriteConnection(self) -> None:  # noqa: N802
        self.write_shut = True

    def unregisterProducer(self) -> None:  # noqa: N802
        self.producer = None  # as Twisted's TCP transports: no error when there is none

    def readable(self) -> bool:
        """Whether the reactor would deliver what the peer sends now."""
        return not self.lost and not self.disconnecting and self.producerState == "producing"

    def fresh(self) -> bytes:
        """What was written since the far side last read."""
        data = self.value()[self.taken :]
        self.taken += len(data)
        return data


@dataclass
class Seen:
    """One request as an endpoint parsed it."""

    method: bytes
    url: bytes
    headers: list[tuple[bytes, bytes]]


class FakeEndpoint:
    """The endpoint end of one connection the proxy made: parses requests, answers each."""

    def __init__(self, net: Net, behaviour: str, sock: Socket) -> None:
        self.net, self.behaviour, self.sock = net, behaviour, sock
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.done: list[Seen] = []
        self.tunnel = False
        self.closed = False

    def on_message_begin(self) -> None:
        self.url, self.headers = b"", []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_message_complete(self) -> None:
        self.done.append(Seen(self.parser.get_method(), self.url, self.headers))

    def step(self) -> bool:
        """Read what the proxy sent; answer the requests it completed. Whether anything moved."""
        if self.sock.lost or self.closed:
            return False
        data = self.sock.fresh()
        if not data:
            return False
        if self.tunnel:
            self.deliver(data)  # an echo, once upgraded
            return True
        upgraded = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            upgraded = True
            self.done.append(Seen(self.parser.get_method(), self.url, self.headers))
        except httptools.HttpParserError as exc:
            self.net.unparsed.append((data, str(exc)))
            self.close()
            return True
        requests, self.done = self.done, []
        self.net.seen += requests
        for request in requests:
            self.answer(request, upgraded)
            if self.closed:
                break
        return True

    def answer(self, request: Seen, upgraded: bool) -> None:
        """As ``behaviour`` says; `ok` answers 200 with a two-byte body (none to HEAD)."""
        head = request.method == b"HEAD"
        kind = self.behaviour
        if kind == "wild":
            kind = self.net.draw_behaviour()
        if kind == "close":
            self.close()
        elif kind == "silent":
            pass
        elif kind == "garbage":
            self.deliver(self.net.draw_garbage())
            self.close()
        elif kind == "until_close":
            self.deliver(b"HTTP/1.1 200 OK\r\n\r\n" + (b"" if head else b"streamed"))
            self.close()
        elif kind == "chunked":
            for piece in (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"3\r\nabc\r\n",
                          b"0\r\n\r\n"):  # fmt: skip
                self.deliver(piece if not head or piece.startswith(b"HTTP") else b"")
        elif kind == "interim":
            self.deliver(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
            )
            self.deliver(OK_RESPONSE[:-2] if head else OK_RESPONSE)
        elif kind == "error":
            self.deliver(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.close()
        elif kind == "switch":
            self.deliver(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"
            )
            self.tunnel = True
        else:
            self.deliver(OK_RESPONSE[:-2] if head else OK_RESPONSE)
        if upgraded and not self.tunnel:
            self.close()  # the parser cannot go on after an upgrade request it declined

    def deliver(self, data: bytes) -> None:
        if data and not self.sock.lost and not self.closed:
            self.sock.protocol.dataReceived(data)

    def close(self) -> None:
        """The endpoint closes its end."""
        if not self.closed:
            self.closed = True
            self.net.closing.append(self.sock)


WILD = ["ok", "ok", "ok", "close", "silent", "garbage", "until_close", "chunked", "interim",
        "error", "switch"]  # fmt: skip
GARBAGE = [
    b"HTTP/1.1 2x OK\r\n\r\n",
    b"\x00\x01\x02",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n",
    b"SSH-2.0-x\r\n",
]


class Net:
    """The reactor, the endpoints, and every connection in memory."""

    def __init__(self, behaviours: list[str], draws: Iterator[int] | None = None) -> None:
        self.reactor = MemoryReactorClock()
        self.behaviours = itertools.cycle(behaviours)
        self.draws = draws if draws is not None else itertools.repeat(0)
        self.closing: list[Socket] = []
        self.endpoints: list[FakeEndpoint] = []
        self.connects = 0  # of reactor.tcpClients, those handled
        self.seen: list[Seen] = []
        self.unparsed: list[tuple[bytes, str]] = []
        self.pool = Pool.build(BACKEND, self.reactor.seconds)
        for index in range(len(BACKEND.endpoints)):
            self.pool.check_result(index, True, True)
        self.log = Recorder()
        self.listener = HttpListener(
            LISTENER, {"app": self.pool}.get, self.reactor, UpstreamPools(self.reactor), self.log
        )
        peer = IPv4Address("TCP", "127.0.0.1", 50000)
        client = self.listener.buildProtocol(peer)
        assert isinstance(client, ClientConnection)
        self.client = client
        self.client_sock = Socket(self, peer, IPv4Address("TCP", "127.0.0.1", 8080))
        self.client_sock.protocol = client
        client.makeConnection(self.client_sock)

    def draw_behaviour(self) -> str:
        return WILD[next(self.draws) % len(WILD)]

    def draw_garbage(self) -> bytes:
        return GARBAGE[next(self.draws) % len(GARBAGE)]

    def connect(self) -> bool:
        """Connections the proxy asked for: made (an endpoint answers) or refused."""
        moved = False
        while self.connects < len(self.reactor.tcpClients):
            host, port, factory, _, _ = self.reactor.tcpClients[self.connects]
            self.connects += 1
            moved = True
            behaviour = next(self.behaviours)
            if behaviour == "wild":
                behaviour = self.draw_behaviour()
                if behaviour == "close" and next(self.draws) % 2:
                    factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
                    continue
                behaviour = "wild"  # each request decides anew
            address = IPv4Address("TCP", host, port)
            sock = Socket(self, address, IPv4Address("TCP", "127.0.0.1", 40000 + self.connects))
            sock.protocol = factory.buildProtocol(address)
            self.endpoints.append(FakeEndpoint(self, behaviour, sock))
            sock.protocol.makeConnection(sock)
        return moved

    def reap(self) -> bool:
        """Closes asked for: each connection learns it was lost, once."""
        moved = False
        while self.closing:
            sock = self.closing.pop(0)
            if not sock.lost:
                sock.lost = True
                sock.protocol.connectionLost(Failure(ConnectionDone()))
                moved = True
        return moved

    def settle(self) -> None:
        """Run until nothing moves without the clock."""
        for _ in range(STEPS):
            moved = self.connect()
            for endpoint in self.endpoints:
                moved = endpoint.step() or moved
            moved = self.reap() or moved
            if not moved:
                return
        pytest.fail("the connections never settle")

    def run(self, pieces: list[bytes], half_close: bool) -> None:
        """Send ``pieces`` as the reactor would deliver them, then run every timer out."""
        pieces = [p for p in pieces if p]
        start = self.reactor.seconds()
        for _ in range(STEPS):
            self.settle()
            if pieces and self.client_sock.readable():
                self.client.dataReceived(pieces.pop(0))
                continue
            if not pieces and half_close:
                half_close = False
                self.closing.append(self.client_sock)  # no half-close for this protocol: lost
                continue
            calls = [c.getTime() for c in self.reactor.getDelayedCalls() if c.active()]
            if not calls:
                return
            assert min(calls) - start <= SIMULATED, "timers that never end"
            self.reactor.advance(max(min(calls) - self.reactor.seconds(), 0))
        pytest.fail("the exchange never ends")

    def check_ended(self) -> None:
        """Everything closed and nothing left counted."""
        assert self.client_sock.lost, "the client connection is still open after every timer"
        assert self.listener.active == 0
        assert all(e.sock.lost for e in self.endpoints), "an endpoint connection never closed"
        assert self.listener.upstreams.open == {} and self.listener.upstreams.idle == {}
        assert [s.active for s in self.pool.stats] == [0] * len(self.pool.stats)
        assert self.unparsed == [], f"an endpoint could not parse what it got: {self.unparsed}"
        for request in self.seen:
            for name, value in request.headers:
                assert not any(c in value for c in b"\x00\r\n"), (name, value)
                assert name.lower() != b"transfer-encoding" or value.lower() == b"chunked"


@contextmanager
def no_logged_errors() -> Iterator[None]:
    """Fail if anything is logged at error level or with a traceback while the block runs."""
    events: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        level = getattr(event.get("log_level"), "name", "")
        if "log_failure" in event or level in ("error", "critical"):
            events.append(event)

    globalLogPublisher.addObserver(observer)
    try:
        yield
    finally:
        globalLogPublisher.removeObserver(observer)
    assert events == [], events


def cut(payload: bytes, points: list[int]) -> list[bytes]:
    """``payload`` in pieces, cut at ``points`` (any offsets)."""
    edges = sorted({p % (len(payload) + 1) for p in points} | {0, len(payload)})
    return [payload[a:b] for a, b in itertools.pairwise(edges)]


CUTS = st.lists(st.integers(0, 10_000), max_size=8)


def exchange(case: Case, points: list[int], net: Net) -> bytes:
    """``case`` over ``net``'s client connection, cut at ``points``; what the client got."""
    with no_logged_errors():
        net.run(cut(case.payload.replace(TAG, b"fz"), points), case.half_close)
    net.check_ended()
    return net.client_sock.value()


# --- the cases of the integration test, cut anywhere ------------------------------------------


@fuzz_settings(300)
@given(case=cases, points=CUTS)
def test_cases_in_pieces(case: Case, points: list[int]) -> None:
    """The integration test's cases get the same answers however their bytes are cut."""
    net = Net(["ok"])
    data = exchange(case, points, net)
    statuses = responses(data, case.methods)
    if not statuses:
        assert case.empty_ok or case.statuses == [], f"no answer to {case.payload[:300]!r}"
    else:
        assert statuses[0] in case.first, (statuses, case.payload[:300])
        if case.statuses is not None:
            assert statuses == case.statuses, (statuses, case.payload[:300])
    paths = [r.url for r in net.seen if not r.url.startswith(b"/fuzz-end")]
    if case.reaches_endpoint is False:
        assert not paths, case.payload[:300]
    elif case.reaches_endpoint:
        assert paths, case.payload[:300]
    if case.marker:
        expected = [p.replace(TAG.decode(), "fz").encode() for p in case.expected_paths]
        assert [p for p in paths if case.marker.encode() in p] == expected, case.payload[:300]


# --- any bytes --------------------------------------------------------------------------------


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """Valid requests, random bytes and the integration cases' payloads, one after another."""
    parts = draw(st.lists(
        st.sampled_from(VALID) | st.binary(max_size=64) | cases.map(lambda c: c.payload)
        | st.just(SENTINEL) | st.sampled_from([b"\r\n", b"\r\n\r\n", b"0\r\n\r\n",
                                               b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: ws\r\n"
                                               b"Connection: upgrade\r\n\r\n"]),
        min_size=1, max_size=5))  # fmt: skip
    return b"".join(parts)


def check_stream(net: Net) -> None:
    """What the client got is whole responses, up to a tunnel, the statuses the access log has
    for the exchanges that sent something; the last may be cut by an abort."""
    data = net.client_sock.value()
    tunnel = data.find(b"HTTP/1.1 101 ")
    if tunnel >= 0:
        data = data[: data.find(b"\r\n\r\n", tunnel) + 4]
    sent = [(method, status) for method, status, out in net.log.exchanges if out]
    try:
        statuses = responses(data, [method for method, _ in sent])
    except AssertionError:
        if not net.client_sock.aborted:
            raise
        return
    logged = [status for _, status in sent]
    if tunnel >= 0 or net.client_sock.aborted:
        assert statuses == logged[: len(statuses)], (statuses, logged)
    else:
        assert statuses == logged, (statuses, logged)


@fuzz_settings(300)
@given(payload=streams(), points=CUTS, half_close=st.booleans())
def test_any_bytes_in_pieces(payload: bytes, points: list[int], half_close: bool) -> None:
    """Any bytes, cut anywhere, to endpoints that answer 200."""
    net = Net(["ok"])
    exchange(Case("stream", payload, frozenset(), half_close=half_close), points, net)
    check_stream(net)


@fuzz_settings(300)
@given(
    payload=streams(),
    points=CUTS,
    half_close=st.booleans(),
    draws=st.lists(st.integers(0, 255), min_size=1, max_size=16),
)
def test_wild_endpoints(
    payload: bytes, points: list[int], half_close: bool, draws: list[int]
) -> None:
    """Any bytes, cut anywhere, to endpoints that refuse, close, stall, send garbage, interim
    responses, bodies ended by the close, or switch protocols."""
    net = Net(["wild"], itertools.cycle(draws))
    exchange(Case("wild", payload, frozenset(), half_close=half_close), points, net)
    check_stream(net)


def test_the_harness_answers_a_valid_request() -> None:
    """Sound harness: a request in one piece and one cut in every byte both get 200, and the
    connection then closes by its idle timeout."""
    for points in ([], list(range(len(VALID[0])))):
        net = Net(["ok"])
        data = exchange(Case("one", VALID[0], frozenset()), points, net)
        assert responses(data, [b"GET"]) == [200]
        assert [r.url for r in net.seen] == [b"/echo/t?fz"]
