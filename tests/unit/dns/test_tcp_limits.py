"""DNS over TCP limits: admission per client and in total, the read and idle timers, the query
cap per connection, and the reasons counted (on a fake clock and transport; the integration test
tests/integration/test_tcp_limits.py does the same over real sockets)."""

from __future__ import annotations

from typing import Any

import dns.message
import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from anycastedge.dns import tcp_limits
from anycastedge.dns.counters import DnsCounters
from anycastedge.dns.server import DnsStreamFactory, DnsStreamProtocol
from anycastedge.dns.tcp_limits import ConnectionTable, TcpLimits, client_key
from anycastedge.dns.wire import Responder
from tests.unit.dns.test_fuzz import Source, framed, ids, logged_failures, make_query

WWW = "www.engine.test."


class Transport(StringTransport):
    """A StringTransport that records a reset (abortConnection) too."""

    aborted = False

    def abortConnection(self) -> None:  # noqa: N802 (Twisted API)
        self.aborted = True
        self.loseConnection()


def factory_for(responder: Responder, **limits: Any) -> tuple[DnsStreamFactory, Clock]:
    """A DnsStreamFactory with these TcpLimits on a fake clock."""
    clock = Clock()
    return DnsStreamFactory(Source(responder), clock, TcpLimits(**limits)), clock


def connect(
    factory: DnsStreamFactory, host: str = "127.0.0.1"
) -> tuple[DnsStreamProtocol, Transport]:
    """A connection from ``host`` over a fake transport."""
    address = IPv6Address("TCP", host, 53001) if ":" in host else IPv4Address("TCP", host, 53001)
    proto = factory.buildProtocol(address)
    assert isinstance(proto, DnsStreamProtocol)
    transport = Transport(peerAddress=address)
    proto.makeConnection(transport)
    return proto, transport


def lose(proto: DnsStreamProtocol) -> None:
    """What the reactor does once a closed transport is gone."""
    proto.connectionLost(Failure(ConnectionError("closed")))


def closed(factory: DnsStreamFactory) -> dict[str, int]:
    return dict(factory.counts.closed)


# client_key and ConnectionTable (pure) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),  # a dual-stack socket's IPv4 client
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("::1", "::/64"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_client_key(host: str, key: str) -> None:
    """IPv4 clients count by address, IPv6 clients by /64."""
    assert client_key(host) == key


def test_table_refuses_over_the_total_before_the_per_client_cap() -> None:
    """The total cap is checked first; a refusal takes no slot; a release frees one."""
    table = ConnectionTable(TcpLimits(max_connections=3, max_connections_per_client=2))
    assert [table.admit("a"), table.admit("a")] == [None, None]
    assert table.admit("a") == tcp_limits.MAX_CONNECTIONS_PER_CLIENT
    assert table.admit("b") is None
    assert table.admit("c") == tcp_limits.MAX_CONNECTIONS
    assert (table.open, table.by_client) == (3, {"a": 2, "b": 1})
    table.release("a")
    table.release("b")
    assert (table.open, table.by_client) == (1, {"a": 1})
    assert table.admit("c") is None


@given(st.lists(st.tuples(st.booleans(), st.sampled_from("abcd")), max_size=200))
def test_table_counts_stay_consistent(steps: list[tuple[bool, str]]) -> None:
    """Any sequence of admissions and releases keeps the total the sum of the per-client counts,
    within both caps, and leaves no client at zero in the table (it stays bounded)."""
    limits = TcpLimits(max_connections=5, max_connections_per_client=2)
    table = ConnectionTable(limits)
    held: list[str] = []
    for admit, client in steps:
        if admit:
            if table.admit(client) is None:
                held.append(client)
        elif client in held:
            held.remove(client)
            table.release(client)
        assert table.open == len(held) == sum(table.by_client.values())
        assert table.open <= limits.max_connections
        assert all(0 < n <= limits.max_connections_per_client for n in table.by_client.values())


# The protocol ------------------------------------------------------------------------------------


def test_per_client_cap_refuses_only_that_client(responder: Responder) -> None:
    """The connection over a client's cap is closed at once and counted; another client (and a
    freed slot) is served."""
    factory, _ = factory_for(responder, max_connections_per_client=2)
    first, first_t = connect(factory)
    connect(factory)
    third, third_t = connect(factory)
    assert third_t.disconnecting and not first_t.disconnecting
    lose(third)
    assert closed(factory) == {tcp_limits.MAX_CONNECTIONS_PER_CLIENT: 1}
    other, other_t = connect(factory, "127.0.0.2")
    other.dataReceived(framed(make_query(WWW, qid=2)))
    assert ids(other_t.value()) == [2] and not other_t.disconnecting
    lose(first)
    again, again_t = connect(factory)
    again.dataReceived(framed(make_query(WWW, qid=3)))
    assert ids(again_t.value()) == [3]
    assert factory.open == 3 == factory.counts.open
    assert closed(factory) == {
        tcp_limits.MAX_CONNECTIONS_PER_CLIENT: 1,
        tcp_limits.CLIENT_CLOSED: 1,
    }


def test_total_cap_is_counted(responder: Responder) -> None:
    """Over dns.tcp_max_connections the refusal is counted under its own reason."""
    factory, _ = factory_for(responder, max_connections=1)
    connect(factory)
    refused, refused_t = connect(factory, "127.0.0.2")
    assert refused_t.disconnecting
    lose(refused)
    assert closed(factory) == {tcp_limits.MAX_CONNECTIONS: 1}
    assert factory.counts.open == 1


def test_silent_client_is_closed_at_the_idle_timeout(responder: Responder) -> None:
    """A client that connects and sends nothing holds its slot only until the idle timeout."""
    factory, clock = factory_for(responder, idle_timeout=3.0, read_timeout=1.0)
    proto, transport = connect(factory)
    clock.advance(2.9)
    assert not transport.disconnecting
    clock.advance(0.1)
    assert transport.disconnecting and not transport.aborted
    lose(proto)
    assert closed(factory) == {tcp_limits.IDLE_TIMEOUT: 1}
    assert factory.open == 0 and clock.getDelayedCalls() == []


def test_trickling_client_is_closed_at_the_read_timeout(responder: Responder) -> None:
    """Bytes of one query sent slowly keep the idle timer from firing, but not the read timer,
    which starts with the query's first byte."""
    factory, clock = factory_for(responder, idle_timeout=10.0, read_timeout=2.0)
    proto, transport = connect(factory)
    data = framed(make_query(WWW))
    for i in range(4):  # 4 bytes, 0.6 s apart: 1.8 s
        proto.dataReceived(data[i : i + 1])
        clock.advance(0.6)
    assert transport.disconnecting  # 2.4 s after the first byte
    assert transport.value() == b""
    lose(proto)
    assert closed(factory) == {tcp_limits.READ_TIMEOUT: 1}
    assert clock.getDelayedCalls() == []


def test_read_timer_is_per_query(responder: Responder) -> None:
    """Each query gets the whole read timeout from its own first byte; a complete query stops
    the timer, and pipelined queries completing within it are all answered."""
    factory, clock = factory_for(responder, idle_timeout=10.0, read_timeout=2.0)
    proto, transport = connect(factory)
    first, second = framed(make_query(WWW, qid=1)), framed(make_query(WWW, qid=2))
    proto.dataReceived(first[:5])
    clock.advance(1.5)
    proto.dataReceived(first[5:] + second[:5])  # the first completes, the second begins
    clock.advance(1.5)  # 3 s after the first began, 1.5 s after the second
    assert not transport.disconnecting
    proto.dataReceived(second[5:])
    clock.advance(5)  # nothing pending: only the idle timer runs
    assert not transport.disconnecting
    assert ids(transport.value()) == [1, 2]


def test_max_queries_answers_then_closes(responder: Responder) -> None:
    """N+1 pipelined queries: N answers, then the connection closes; the rest is not answered."""
    factory, clock = factory_for(responder, max_queries=3)
    proto, transport = connect(factory)
    proto.dataReceived(b"".join(framed(make_query(WWW, qid=i)) for i in range(1, 5)))
    assert ids(transport.value()) == [1, 2, 3]
    assert transport.disconnecting
    proto.dataReceived(framed(make_query(WWW, qid=9)))  # already in flight: ignored
    assert ids(transport.value()) == [1, 2, 3]
    lose(proto)
    assert closed(factory) == {tcp_limits.MAX_QUERIES: 1}
    assert clock.getDelayedCalls() == []


def test_max_queries_zero_is_no_limit(responder: Responder) -> None:
    """dns.tcp_max_queries: 0 answers every query (NSD's tcp-query-count: 0)."""
    factory, _ = factory_for(responder, max_queries=0)
    proto, transport = connect(factory)
    proto.dataReceived(b"".join(framed(make_query(WWW, qid=i)) for i in range(1, 51)))
    assert ids(transport.value()) == list(range(1, 51)) and not transport.disconnecting


def test_client_that_does_not_read_is_reset(responder: Responder) -> None:
    """Closed for being idle while its answers wait to be sent, a client that never reads them
    gets one more idle timeout, then the connection is reset and its slot is free."""
    factory, clock = factory_for(responder, idle_timeout=5.0)
    proto, transport = connect(factory)
    proto.dataReceived(framed(make_query(WWW)))
    clock.advance(5)
    assert transport.disconnecting and not transport.aborted  # close: answers first
    clock.advance(5)
    assert transport.aborted
    lose(proto)
    assert closed(factory) == {tcp_limits.IDLE_TIMEOUT: 1} and factory.open == 0


def test_garbage_and_errors_are_counted(engine_responder_raising: Responder) -> None:
    """A frame that cannot be answered, and a query that raises, close with their own reasons."""
    counters = engine_responder_raising.counters
    factory, _ = factory_for(engine_responder_raising)
    proto, _ = connect(factory)
    proto.dataReceived(framed(b"\x00\x01"))
    lose(proto)
    proto, _ = connect(factory)
    with logged_failures() as failures:
        proto.dataReceived(framed(make_query("engine.test.", "SOA")))  # the engine's to answer
    lose(proto)
    assert len(failures) == 1
    assert closed(factory) == {tcp_limits.UNANSWERABLE: 1, tcp_limits.INTERNAL_ERROR: 1}
    assert counters.internal_errors == 1


@pytest.fixture
def engine_responder_raising(engine_zones: Any) -> Responder:
    """A Responder whose answer engine raises on every query it is asked."""

    def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    return Responder(engine_zones, "ams1", counters=DnsCounters(), resolver=broken)


def test_counts_go_to_the_servers_counters(responder: Responder) -> None:
    """By default the factory counts into the Responder's DnsCounters (what /metrics reads)."""
    factory, _ = factory_for(responder)
    proto, _ = connect(factory)
    assert responder.counters.tcp.open == 1
    lose(proto)
    assert responder.counters.tcp.closed == {tcp_limits.CLIENT_CLOSED: 1}
    assert responder.counters.tcp.open == 0


def test_answers_are_unchanged_by_the_limits(responder: Responder) -> None:
    """Within the limits a TCP answer is the Responder's own."""
    factory, _ = factory_for(responder)
    proto, transport = connect(factory)
    query = make_query(WWW, qid=77)
    proto.dataReceived(framed(query))
    reply = dns.message.from_wire(transport.value()[2:])
    assert reply.id == 77 and transport.value()[2:] == responder.respond(query, True, "127.0.0.1")
