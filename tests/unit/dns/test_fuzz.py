"""Bad input: random and mutated packets at the Responder and at the Twisted UDP/TCP protocols."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from anycastedge.dns.engine import Answer
from anycastedge.dns.rrl import RateLimiter, RrlConfig
from anycastedge.dns.server import DnsDatagramProtocol, DnsStreamFactory, DnsStreamProtocol
from anycastedge.dns.tcp_limits import TcpLimits
from anycastedge.dns.wire import Responder
from anycastedge.dns.zone import ZoneSet

POP = "ams1"
CLIENT = ("127.0.0.1", 53000)
WWW_ANSWER = {"www.engine.test. 300 IN A 192.0.2.80"}
FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def make_query(
    name: str, rdtype: str = "A", qid: int = 0x5151, edns: int = -1, **kwargs: Any
) -> bytes:
    """A query in wire format."""
    return dns.message.make_query(name, rdtype, use_edns=edns, id=qid, **kwargs).to_wire()


SEEDS = [
    make_query("www.engine.test."),
    make_query("WwW.EnGiNe.TeSt.", "AAAA", edns=0),
    make_query("nope.engine.test.", "MX", edns=0, want_dnssec=True),
    make_query("a.engine.test.", "A", edns=0, options=[dns.edns.GenericOption(3, b"")]),
    make_query("big.engine.test."),
    make_query("bigdeleg.engine.test.", "NS", edns=0, payload=512),
    make_query("foo.wild.engine.test.", "TXT"),
    make_query("www.old.engine.test.", "A", edns=0),
    make_query("id.server.", "TXT", rdclass="CH"),
    make_query("example.org.", "A"),
    make_query("engine.test.", "ANY", edns=0),
]


def www_answer(responder: Responder, tcp: bool = False) -> set[str]:
    """What a fresh, valid query for www.engine.test/A gets now."""
    response = dns.message.from_wire(_must(responder.respond(make_query("www.engine.test."), tcp)))
    assert response.rcode() == dns.rcode.NOERROR
    return {line for rrset in response.answer for line in rrset.to_text().splitlines()}


def _must(wire: bytes | None) -> bytes:
    assert wire is not None
    return wire


def check_response(sent: bytes, wire: bytes | None, tcp: bool) -> None:
    """A response is absent, or a parseable DNS response to ``sent``, within the size limit."""
    if wire is None:
        return
    assert len(sent) >= 12 and not sent[2] & 0x80, "replied to a response or a runt"
    assert wire[:2] == sent[:2]
    try:
        response = dns.message.from_wire(wire)
    except dns.exception.DNSException as exc:  # pragma: no cover - the failure report
        pytest.fail(f"unparseable response {wire!r} to {sent!r}: {exc!r}")
    assert response.id == int.from_bytes(sent[:2], "big")
    assert response.flags & dns.flags.QR
    assert not response.flags & dns.flags.RA
    if not tcp:
        assert len(wire) <= 1232


@contextmanager
def logged_failures() -> Iterator[list[dict[str, Any]]]:
    """Collect Twisted log events that carry a failure (a traceback) while the block runs."""
    events: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if "log_failure" in event:
            events.append(event)

    globalLogPublisher.addObserver(observer)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(observer)


@pytest.fixture(scope="module")
def shared_responder(engine_zones: ZoneSet) -> Responder:
    """One Responder for a whole fuzz run, so that its caches see every packet."""
    return Responder(engine_zones, POP, cache_size=64)


# --- the Responder ---------------------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=700), tcp=st.booleans())
def test_random_bytes_never_raise(shared_responder: Responder, data: bytes, tcp: bool) -> None:
    """Random bytes get no reply or a well-formed one with their ID; valid queries still work."""
    check_response(data, shared_responder.respond(data, tcp), tcp)
    assert www_answer(shared_responder, tcp) == WWW_ANSWER


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid query with a few bit flips, truncations, insertions, deletions or overwrites."""
    packet = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite"]))
        at = draw(st.integers(min_value=0, max_value=max(len(packet) - 1, 0)))
        if kind == "flip" and packet:
            packet[at] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif kind == "truncate":
            del packet[at:]
        elif kind == "insert":
            packet[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del packet[at : at + draw(st.integers(min_value=1, max_value=4))]
        elif kind == "overwrite" and packet:
            packet[at] = draw(st.integers(min_value=0, max_value=255))
    return bytes(packet)


@FUZZ
@given(packet=mutated(), tcp=st.booleans())
def test_mutated_queries_never_raise(shared_responder: Responder, packet: bytes, tcp: bool) -> None:
    """Mutated queries get no reply or a well-formed one with their ID; valid queries still work."""
    check_response(packet, shared_responder.respond(packet, tcp), tcp)
    assert www_answer(shared_responder, tcp) == WWW_ANSWER


@FUZZ
@given(
    labels=st.lists(st.binary(min_size=1, max_size=63), min_size=0, max_size=6),
    suffix=st.sampled_from(["engine.test.", "old.engine.test.", "ext.engine.test.", "org."]),
    qtype=st.integers(min_value=0, max_value=65535),
    qclass=st.sampled_from([1, 3, 4, 254, 255, 0, 65535]),
)
def test_any_well_formed_question_is_answered(
    shared_responder: Responder, labels: list[bytes], suffix: str, qtype: int, qclass: int
) -> None:
    """Any well-formed question (any octets in labels, any type and class) gets a response."""
    try:
        name = dns.name.Name([*labels, *dns.name.from_text(suffix).labels])
    except dns.name.NameTooLong:
        return
    sent = struct.pack("!HHHHHH", 0x0A0A, 0x0100, 1, 0, 0, 0) + name.to_wire()
    sent += struct.pack("!HH", qtype, qclass)
    wire = shared_responder.respond(sent, False)
    assert wire is not None
    check_response(sent, wire, False)
    response = dns.message.from_wire(wire)
    if qtype == dns.rdatatype.OPT:
        return  # dnspython cannot hold a question of type OPT, nothing more to compare
    assert response.question[0].name.labels == name.labels  # octet for octet


def test_long_name_through_a_dname_is_yxdomain(responder: Responder) -> None:
    """A DNAME substitution that would overflow 255 octets answers YXDOMAIN (RFC 6672 2.2)."""
    # ext.engine.test. (17 octets) becomes elsewhere.invalid. (19 octets): 2 octets longer.
    name = (
        (b"\x3f" + b"a" * 63) * 3
        + b"\x2d"
        + b"b" * 45
        + dns.name.from_text("ext.engine.test.").to_wire()
    )
    assert len(name) == 255  # legal; 257 after the substitution
    sent = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + name + b"\0\1\0\1"
    response = dns.message.from_wire(_must(responder.respond(sent, False)))
    assert response.rcode() == dns.rcode.YXDOMAIN
    assert [r.rdtype for r in response.answer] == [dns.rdatatype.DNAME]


# --- the UDP protocol ------------------------------------------------------------------------


@dataclass
class Source:
    """What the protocols read the Responder in service from (reload swaps ``responder``)."""

    responder: Responder

    @property
    def errors(self) -> int:
        return self.responder.counters.internal_errors

    @property
    def dropped(self) -> int:
        return self.responder.counters.udp_send_failures


@dataclass
class FakeSocket:
    """The socket under a fake datagram transport: records what is sent."""

    sent: list[tuple[bytes, Any]] = field(default_factory=list)
    options: dict[tuple[int, int], int] = field(default_factory=dict)
    refuse: bool = False

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.options[(level, option)] = value

    def sendto(self, data: bytes, addr: Any) -> int:
        if self.refuse:
            raise BlockingIOError("socket buffer full")
        self.sent.append((data, addr))
        return len(data)


@dataclass
class FakeDatagramTransport:
    """Just enough of a UDP transport: ``write`` and the ``socket`` under it."""

    socket: FakeSocket = field(default_factory=FakeSocket)
    written: list[tuple[bytes, Any]] = field(default_factory=list)

    def write(self, data: bytes, addr: Any = None) -> None:
        self.written.append((data, addr))

    @property
    def sent(self) -> list[tuple[bytes, Any]]:
        """Every datagram sent, by either path."""
        return self.written + self.socket.sent


def udp(source: Source) -> tuple[DnsDatagramProtocol, FakeDatagramTransport]:
    """A started DnsDatagramProtocol over a fake transport."""
    proto = DnsDatagramProtocol(source)
    transport = FakeDatagramTransport()
    proto.makeConnection(transport)  # type: ignore[arg-type]
    return proto, transport


def test_udp_answers_each_datagram_to_its_sender(responder: Responder) -> None:
    """Each query datagram gets one reply, to the address it came from."""
    proto, transport = udp(Source(responder))
    proto.datagramReceived(make_query("www.engine.test.", qid=1), CLIENT)
    proto.datagramReceived(make_query("nope.engine.test.", qid=2), ("127.0.0.2", 5353))
    assert [(dns.message.from_wire(d).id, a) for d, a in transport.sent] == [
        (1, CLIENT),
        (2, ("127.0.0.2", 5353)),
    ]


def test_udp_ignores_responses_and_runts(responder: Responder) -> None:
    """QR=1 packets and packets shorter than a header get no datagram back."""
    proto, transport = udp(Source(responder))
    reply = dns.message.make_response(dns.message.make_query("www.engine.test.", "A"))
    for packet in (b"", b"\0", b"\x12\x34\x01", reply.to_wire()):
        proto.datagramReceived(packet, CLIENT)
    assert transport.sent == []


def test_udp_full_socket_buffer_drops_the_reply(responder: Responder) -> None:
    """A send that fails (full buffer) is counted as dropped and does not stop the protocol."""
    source = Source(responder)
    proto, transport = udp(source)
    transport.socket.refuse = True
    with logged_failures() as failures:
        proto.datagramReceived(make_query("www.engine.test."), CLIENT)
    assert (source.dropped, source.errors, failures) == (1, 0, [])
    transport.socket.refuse = False
    proto.datagramReceived(make_query("www.engine.test."), CLIENT)
    assert len(transport.sent) == 1


def test_udp_applies_the_rate_limiter(responder: Responder) -> None:
    """With a limiter (1 a second, slip 2, clock stopped): the first answer goes out whole, then
    one in two is dropped and the other sent truncated, and one line is logged."""
    limiter = RateLimiter(RrlConfig(responses_per_second=1, exempt=()), clock=lambda: 50.0)
    proto = DnsDatagramProtocol(Source(responder), limiter)
    transport = FakeDatagramTransport()
    proto.makeConnection(transport)  # type: ignore[arg-type]
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        for qid in range(1, 6):
            proto.datagramReceived(make_query("www.engine.test.", qid=qid), CLIENT)
    finally:
        globalLogPublisher.removeObserver(events.append)
    replies = [dns.message.from_wire(data) for data, _ in transport.sent]
    assert [(r.id, bool(r.flags & dns.flags.TC), len(r.answer)) for r in replies] == [
        (1, False, 1),
        (3, True, 0),
        (5, True, 0),
    ]
    lines = [e for e in events if "rate limit" in str(e.get("log_format", ""))]
    assert len(lines) == 1 and lines[0]["account"].startswith("responses to 127.0.0.0/24")
    assert limiter.counts == {("dropped", "responses"): 2, ("slipped", "responses"): 2}


def test_udp_responder_exception_is_counted_not_raised(engine_zones: ZoneSet) -> None:
    """If answering raises, the error is counted and logged, nothing is sent, serving goes on."""

    def broken(
        zones: ZoneSet,
        qname: dns.name.Name,
        qtype: int,
        qclass: int,
        pop: str,
        choose: object = None,
    ) -> Answer:
        raise RuntimeError("boom")

    source = Source(Responder(engine_zones, POP, resolver=broken))
    proto, transport = udp(source)
    with logged_failures() as failures:  # SOA: answered by the engine, not the compiled zone
        proto.datagramReceived(make_query("engine.test.", "SOA"), CLIENT)
    assert source.errors == 1 and len(failures) == 1 and transport.sent == []
    source.responder = Responder(engine_zones, POP)  # a reload swaps the Responder
    proto.datagramReceived(make_query("www.engine.test."), CLIENT)
    assert len(transport.sent) == 1


@FUZZ
@given(packets=st.lists(st.one_of(mutated(), st.binary(max_size=300)), min_size=1, max_size=8))
def test_udp_protocol_survives_garbage(engine_zones: ZoneSet, packets: list[bytes]) -> None:
    """Random and mutated datagrams: no traceback, only well-formed replies; then a valid answer."""
    source = Source(Responder(engine_zones, POP))
    proto, transport = udp(source)
    with logged_failures() as failures:
        for packet in packets:
            before = len(transport.sent)
            proto.datagramReceived(packet, CLIENT)
            replies = transport.sent[before:]
            assert len(replies) <= 1
            for wire, addr in replies:
                assert addr == CLIENT
                check_response(packet, wire, False)
        proto.datagramReceived(make_query("www.engine.test.", qid=0xBEEF), CLIENT)
    assert failures == [] and source.errors == 0
    wire, _ = transport.sent[-1]
    response = dns.message.from_wire(wire)
    assert response.id == 0xBEEF
    assert {line for r in response.answer for line in r.to_text().splitlines()} == WWW_ANSWER


# --- the TCP protocol ------------------------------------------------------------------------


def framed(message: bytes) -> bytes:
    """A message with its two-octet length prefix (RFC 1035 4.2.2)."""
    return len(message).to_bytes(2, "big") + message


def unframe(stream: bytes) -> list[bytes]:
    """Split a TCP byte stream into messages; it must end on a frame boundary."""
    out = []
    pos = 0
    while pos < len(stream):
        assert pos + 2 <= len(stream), "a dangling length prefix"
        length = int.from_bytes(stream[pos : pos + 2], "big")
        assert pos + 2 + length <= len(stream), "a frame shorter than its prefix"
        out.append(stream[pos + 2 : pos + 2 + length])
        pos += 2 + length
    return out


def tcp_connection(
    factory: DnsStreamFactory,
) -> tuple[DnsStreamProtocol, StringTransport]:
    """A connected DnsStreamProtocol over a StringTransport."""
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 53001))
    assert isinstance(proto, DnsStreamProtocol)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def stream_factory(responder: Responder, **limits: Any) -> tuple[DnsStreamFactory, Source, Clock]:
    """A DnsStreamFactory on a fake clock, with these TcpLimits."""
    source = Source(responder)
    clock = Clock()
    return DnsStreamFactory(source, clock, TcpLimits(**limits)), source, clock


def ids(stream: bytes) -> list[int]:
    """The IDs of the messages in a TCP byte stream."""
    return [dns.message.from_wire(m).id for m in unframe(stream)]


def test_tcp_two_queries_in_one_write(responder: Responder) -> None:
    """Two pipelined queries in one segment get two framed responses, in order."""
    factory, _, _ = stream_factory(responder)
    proto, transport = tcp_connection(factory)
    proto.dataReceived(
        framed(make_query("www.engine.test.", qid=1))
        + framed(make_query("big.engine.test.", qid=2))
    )
    assert ids(transport.value()) == [1, 2]
    first, second = (dns.message.from_wire(m) for m in unframe(transport.value()))
    assert {line for r in first.answer for line in r.to_text().splitlines()} == WWW_ANSWER
    assert len(second.answer[0]) == 40 and not second.flags & dns.flags.TC
    assert not transport.disconnecting


def test_tcp_query_split_over_three_writes(responder: Responder) -> None:
    """A query arriving in three pieces (one inside the length prefix) is answered once, whole."""
    factory, _, _ = stream_factory(responder)
    proto, transport = tcp_connection(factory)
    data = framed(make_query("www.engine.test.", qid=7))
    proto.dataReceived(data[:1])
    proto.dataReceived(data[1:9])
    assert transport.value() == b""
    proto.dataReceived(data[9:])
    assert ids(transport.value()) == [7]


def test_tcp_pipelined_across_segment_boundaries(responder: Responder) -> None:
    """Queries whose frames straddle segments are all answered in order."""
    factory, _, _ = stream_factory(responder)
    proto, transport = tcp_connection(factory)
    stream = b"".join(framed(make_query("www.engine.test.", qid=i)) for i in range(1, 6))
    for start in range(0, len(stream), 13):
        proto.dataReceived(stream[start : start + 13])
    assert ids(transport.value()) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"hello",
        b"\x00\x01\x02",
        dns.message.make_response(dns.message.make_query("a.", "A")).to_wire(),
    ],
    ids=["empty", "short", "runt", "response"],
)
def test_tcp_garbage_closes_the_connection(responder: Responder, message: bytes) -> None:
    """A frame that cannot be answered closes the connection, with no traceback and no reply."""
    factory, source, _ = stream_factory(responder)
    proto, transport = tcp_connection(factory)
    with logged_failures() as failures:
        proto.dataReceived(framed(message) + framed(make_query("www.engine.test.")))
    assert transport.disconnecting
    assert transport.value() == b""
    assert failures == [] and source.errors == 0


def test_tcp_malformed_query_gets_formerr_and_the_connection_stays(responder: Responder) -> None:
    """A header-sized but malformed query gets FORMERR; later queries on the connection work."""
    factory, _, _ = stream_factory(responder)
    proto, transport = tcp_connection(factory)
    bad = struct.pack("!HHHHHH", 9, 0x0100, 2, 0, 0, 0)
    proto.dataReceived(framed(bad) + framed(make_query("www.engine.test.", qid=10)))
    first, second = (dns.message.from_wire(m) for m in unframe(transport.value()))
    assert (first.id, first.rcode()) == (9, dns.rcode.FORMERR)
    assert (second.id, second.rcode()) == (10, dns.rcode.NOERROR)
    assert not transport.disconnecting


def test_tcp_responder_exception_closes_only_that_connection(engine_zones: ZoneSet) -> None:
    """If answering raises, the error is counted and that connection is closed."""

    def broken(
        zones: ZoneSet,
        qname: dns.name.Name,
        qtype: int,
        qclass: int,
        pop: str,
        choose: object = None,
    ) -> Answer:
        raise RuntimeError("boom")

    factory, source, _ = stream_factory(Responder(engine_zones, POP, resolver=broken))
    proto, transport = tcp_connection(factory)
    with logged_failures() as failures:
        proto.dataReceived(framed(make_query("engine.test.", "SOA")))
    assert transport.disconnecting and source.errors == 1 and len(failures) == 1


def test_tcp_idle_timeout_closes(responder: Responder) -> None:
    """An idle connection is closed after the idle timeout; each query restarts the clock."""
    factory, _, clock = stream_factory(responder, idle_timeout=10.0, read_timeout=60.0)
    proto, transport = tcp_connection(factory)
    clock.advance(9)
    assert not transport.disconnecting
    proto.dataReceived(framed(make_query("www.engine.test.")))
    clock.advance(9)
    assert not transport.disconnecting
    proto.dataReceived(b"\x00")  # even part of a frame is activity
    clock.advance(9.5)
    assert not transport.disconnecting
    clock.advance(0.5)
    assert transport.disconnecting
    proto.connectionLost(Failure(ConnectionError("closed")))
    assert factory.open == 0
    assert clock.getDelayedCalls() == []


def test_tcp_closed_connection_leaves_no_timer(responder: Responder) -> None:
    """A connection closed by the client cancels its idle timer."""
    factory, _, clock = stream_factory(responder, idle_timeout=10.0)
    proto, _ = tcp_connection(factory)
    assert len(clock.getDelayedCalls()) == 1
    proto.connectionLost(Failure(ConnectionError("closed")))
    assert clock.getDelayedCalls() == [] and factory.open == 0


def test_tcp_connection_limit(responder: Responder) -> None:
    """Connections beyond the limit are closed at once; a freed slot is usable again."""
    factory, _, _ = stream_factory(responder, max_connections=2)
    first, first_t = tcp_connection(factory)
    _second, second_t = tcp_connection(factory)
    third, third_t = tcp_connection(factory)
    assert not first_t.disconnecting and not second_t.disconnecting
    assert third_t.disconnecting
    third.connectionLost(Failure(ConnectionError("closed")))
    first.connectionLost(Failure(ConnectionError("closed")))
    assert factory.open == 1
    fourth, fourth_t = tcp_connection(factory)
    assert not fourth_t.disconnecting
    fourth.dataReceived(framed(make_query("www.engine.test.", qid=4)))
    assert ids(fourth_t.value()) == [4]


@st.composite
def tcp_chunks(draw: st.DrawFn) -> list[bytes]:
    """A TCP byte stream of valid, mutated and random frames, cut into random segments."""
    frames = draw(
        st.lists(
            st.one_of(
                st.sampled_from(SEEDS).map(framed),
                mutated().map(framed),
                mutated(),  # unframed: the framing itself is garbage
                st.binary(max_size=64),
            ),
            min_size=1,
            max_size=6,
        )
    )
    stream = b"".join(frames)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    bounds = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


@FUZZ
@given(chunks=tcp_chunks())
def test_tcp_protocol_survives_garbage(engine_zones: ZoneSet, chunks: list[bytes]) -> None:
    """Random streams: no traceback, replies properly framed; a new connection is answered."""
    factory, source, _ = stream_factory(Responder(engine_zones, POP))
    proto, transport = tcp_connection(factory)
    with logged_failures() as failures:
        for chunk in chunks:
            if transport.disconnecting:
                break
            proto.dataReceived(chunk)
        for message in unframe(transport.value()):
            dns.message.from_wire(message)
            assert message[2] & 0x80
    assert failures == [] and source.errors == 0
    fresh, fresh_t = tcp_connection(factory)
    fresh.dataReceived(framed(make_query("www.engine.test.", qid=0xCAFE)))
    [message] = unframe(fresh_t.value())
    response = dns.message.from_wire(message)
    assert response.id == 0xCAFE
    assert {line for r in response.answer for line in r.to_text().splitlines()} == WWW_ANSWER
