"""dnspython over real UDP and TCP sockets: framing, pipelining, idle timeout, bad input."""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from tests.support.server import (
    DEFAULT_POP,
    ServerHandle,
    copy_repo_zones,
    minimal_pop_yaml,
    running_server,
    wait_for,
)

WEB = {"192.0.2.80", "192.0.2.81"}
#: Bound on any single socket wait in this file; a healthy server answers in milliseconds.
WAIT = 10.0


def addresses(reply: dns.message.Message, name: str) -> set[str]:
    """The A addresses at ``name`` in the answer section."""
    owner = dns.name.from_text(name)
    return {
        rd.address
        for rrset in reply.answer
        if rrset.name == owner and rrset.rdtype == dns.rdatatype.A
        for rd in rrset
    }


def assert_still_answers(server: ServerHandle) -> None:
    """The server is alive and answers www.example.com over UDP and TCP correctly."""
    assert server.alive(), server.log_text()
    for tcp in (False, True):
        reply = server.query("www.example.com.", "A", tcp=tcp, timeout=WAIT)
        assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA, reply
        assert addresses(reply, "web.example.com.") == WEB


def tcp_connect(server: ServerHandle) -> socket.socket:
    """A TCP connection to the server's DNS port, with a bounded timeout."""
    sock = socket.create_connection(server.address, timeout=WAIT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def frame(wire: bytes) -> bytes:
    """RFC 1035 4.2.2 / RFC 7766 two-octet length prefix."""
    return struct.pack("!H", len(wire)) + wire


def read_eof(sock: socket.socket) -> bytes:
    """Read until the server closes the connection; return what came before EOF."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


@pytest.fixture(scope="module")
def short_idle_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """A server whose pop.yaml sets dns.tcp_idle_timeout: 0.5."""
    base = tmp_path_factory.mktemp("idle")
    config = minimal_pop_yaml(base, DEFAULT_POP, dns={"tcp_idle_timeout": 0.5})
    with running_server(copy_repo_zones(base / "zones"), config=config) as handle:
        yield handle


@pytest.fixture(scope="module")
def two_connection_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """A server whose pop.yaml sets dns.tcp_max_connections: 2."""
    base = tmp_path_factory.mktemp("maxconn")
    config = minimal_pop_yaml(base, DEFAULT_POP, dns={"tcp_max_connections": 2})
    with running_server(copy_repo_zones(base / "zones"), config=config) as handle:
        yield handle


@pytest.fixture(scope="module")
def victim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """A server of its own for the bad-input tests, so a crash cannot hide in other tests."""
    zones = copy_repo_zones(tmp_path_factory.mktemp("victim") / "zones")
    with running_server(zones) as handle:
        yield handle


# Plain UDP and TCP -------------------------------------------------------------------------------


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_answer_over_udp_and_tcp(server: ServerHandle, tcp: bool) -> None:
    """dnspython gets the same authoritative CNAME-chain answer over UDP and TCP."""
    reply = server.query("www.example.com.", "A", tcp=tcp)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AA and not reply.flags & dns.flags.RA
    assert reply.answer[0].rdtype == dns.rdatatype.CNAME
    assert addresses(reply, "web.example.com.") == WEB


def test_edns_reply_advertises_buffer_and_version_0(server: ServerHandle) -> None:
    """An EDNS query gets an OPT back: version 0, the server's UDP payload size (1232)."""
    reply = server.query("example.com.", "SOA", use_edns=0, payload=4096)
    assert reply.edns == 0
    assert reply.payload == 1232


def test_no_opt_in_reply_to_query_without_edns(server: ServerHandle) -> None:
    """A query without EDNS gets a reply without OPT (RFC 6891 section 7)."""
    reply = server.query("example.com.", "SOA", use_edns=False)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.edns == -1


# TCP: framing, pipelining, idle timeout ---------------------------------------------------------

PIPELINED = [
    ("www.example.com.", "A", dns.rcode.NOERROR),
    ("no-such-name.example.com.", "A", dns.rcode.NXDOMAIN),
    ("example.net.", "SOA", dns.rcode.NOERROR),
    ("example.org.", "A", dns.rcode.REFUSED),
    ("mail.example.com.", "AAAA", dns.rcode.NOERROR),
    ("www.example.net.", "A", dns.rcode.NOERROR),
    ("example.com.", "MX", dns.rcode.NOERROR),
    ("_sip._tcp.example.com.", "SRV", dns.rcode.NOERROR),
    ("sub.example.com.", "NS", dns.rcode.NOERROR),
    ("WWW.EXAMPLE.COM.", "A", dns.rcode.NOERROR),
]


def test_pipelined_queries_on_one_tcp_connection(server: ServerHandle) -> None:
    """Many queries written at once on one TCP connection are all answered, matched by ID."""
    queries = {}
    for i, (name, rdtype, rcode) in enumerate(PIPELINED):
        q = dns.message.make_query(name, rdtype)
        q.id = 1000 + i
        queries[q.id] = (q, rcode)
    with tcp_connect(server) as sock:
        sock.sendall(b"".join(frame(q.to_wire()) for q, _ in queries.values()))
        replies = {}
        for _ in queries:
            reply, _ = dns.query.receive_tcp(sock, time.time() + WAIT)
            replies[reply.id] = reply
        assert sorted(replies) == sorted(queries)
        for qid, (query, rcode) in queries.items():
            reply = replies[qid]
            assert reply.question == query.question, (query, reply)
            assert reply.question[0].name.labels == query.question[0].name.labels  # case too
            assert reply.rcode() == rcode, reply
        # The connection stays usable after the batch.
        last = dns.message.make_query("example.com.", "SOA")
        dns.query.send_tcp(sock, last, time.time() + WAIT)
        reply, _ = dns.query.receive_tcp(sock, time.time() + WAIT)
        assert reply.id == last.id and reply.rcode() == dns.rcode.NOERROR


def test_query_split_across_tcp_writes(server: ServerHandle) -> None:
    """A query written in small pieces (length prefix split too) is reassembled and answered."""
    first = dns.message.make_query("www.example.com.", "A")
    second = dns.message.make_query("example.net.", "SOA")
    stream = frame(first.to_wire()) + frame(second.to_wire())
    with tcp_connect(server) as sock:
        for i in range(0, len(stream), 7):  # boundaries fall inside prefixes and messages
            sock.sendall(stream[i : i + 7])
        a, _ = dns.query.receive_tcp(sock, time.time() + WAIT)
        b, _ = dns.query.receive_tcp(sock, time.time() + WAIT)
    assert {a.id, b.id} == {first.id, second.id}
    by_id = {a.id: a, b.id: b}
    assert addresses(by_id[first.id], "web.example.com.") == WEB
    assert by_id[second.id].answer[0].rdtype == dns.rdatatype.SOA


def test_tcp_idle_connection_is_closed(short_idle_server: ServerHandle) -> None:
    """With dns.tcp_idle_timeout 0.5 a connection that sends nothing is closed by the server."""
    with tcp_connect(short_idle_server) as sock:
        sock.settimeout(WAIT)  # a bound, not the expectation: EOF should come after ~0.5 s
        assert read_eof(sock) == b""


def test_tcp_connection_closed_after_idle_following_answers(
    short_idle_server: ServerHandle,
) -> None:
    """After answering, an idle connection is closed (the answer arrives before the EOF)."""
    query = dns.message.make_query("www.example.com.", "A")
    with tcp_connect(short_idle_server) as sock:
        sock.sendall(frame(query.to_wire()))
        sock.settimeout(WAIT)
        data = read_eof(sock)
    (length,) = struct.unpack("!H", data[:2])
    assert len(data) == 2 + length
    reply = dns.message.from_wire(data[2:])
    assert reply.id == query.id and addresses(reply, "web.example.com.") == WEB


def _tcp_answers(server: ServerHandle) -> bool:
    """Whether a new TCP connection gets an answer (False if the server closes it)."""
    query = dns.message.make_query("example.com.", "SOA")
    with tcp_connect(server) as sock:
        try:
            sock.sendall(frame(query.to_wire()))
            reply, _ = dns.query.receive_tcp(sock, time.time() + WAIT)
        except (OSError, EOFError):
            return False
    return reply.id == query.id and reply.rcode() == dns.rcode.NOERROR


def test_tcp_connections_over_the_limit_are_closed(two_connection_server: ServerHandle) -> None:
    """Over dns.tcp_max_connections a connection is closed; freed slots serve again."""
    server = two_connection_server
    held = [tcp_connect(server), tcp_connect(server)]
    try:
        for sock in held:  # both are really established and served
            query = dns.message.make_query("www.example.com.", "A")
            sock.sendall(frame(query.to_wire()))
            reply, _ = dns.query.receive_tcp(sock, time.time() + WAIT)
            assert reply.id == query.id
        with tcp_connect(server) as third:
            third.settimeout(WAIT)
            assert read_eof(third) == b""
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: _tcp_answers(server), WAIT, "a TCP answer after the connections closed")
    assert server.query("www.example.com.", "A").rcode() == dns.rcode.NOERROR


# Bad input --------------------------------------------------------------------------------------


def _header(
    qid: int, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0
) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def _qname(name: str) -> bytes:
    return dns.name.from_text(name).to_wire()


_Q = _qname("www.example.com.") + struct.pack("!HH", 1, 1)
_OPT = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)
FORMERR = {dns.rcode.FORMERR}
FORMERR_OR_ANSWER = {dns.rcode.FORMERR, dns.rcode.NOERROR}
DROP_ONLY: set[int] = set()

#: (label, packet, the rcodes its one reply may carry; none: it gets no reply at all).
CRAFTED: list[tuple[str, bytes, set[int]]] = [
    ("empty datagram", b"", DROP_ONLY),
    ("3-octet header", b"\x12\x34\x01", DROP_ONLY),
    ("11-octet header", _header(0x2001)[:11], DROP_ONLY),
    ("header only, qdcount 1", _header(0x2002), FORMERR),
    ("qdcount 0", _header(0x2003, qd=0), FORMERR),
    ("qdcount 2", _header(0x2004, qd=2) + _Q + _Q, FORMERR),
    ("question name pointing at itself", _header(0x2005) + b"\xc0\x0c\x00\x01\x00\x01", FORMERR),
    (
        "two pointers pointing at each other",
        _header(0x2006) + b"\x01a\xc0\x0e\xc0\x0c\x00\x01\x00\x01",
        FORMERR,
    ),
    ("label of 64 octets", _header(0x2007) + b"\x40" + b"a" * 64 + b"\0\0\1\0\1", FORMERR),
    (
        "name of 5 x 63-octet labels (> 255 octets)",
        _header(0x2009) + (b"\x3f" + b"b" * 63) * 5 + b"\x00\x00\x01\x00\x01",
        FORMERR,
    ),
    ("question without type and class", _header(0x200A) + _qname("www.example.com."), FORMERR),
    ("question name runs off the end", _header(0x200B) + b"\x07example\x03co", FORMERR),
    # NSD ignores octets after the question (and answers); FORMERR is as good.
    ("trailing garbage", _header(0x200C) + _Q + b"\xde\xad\xbe\xef", FORMERR_OR_ANSWER),
    ("arcount 1 but nothing there", _header(0x200D, ar=1) + _Q, FORMERR),
    ("two OPT records", _header(0x200E, ar=2) + _Q + _OPT + _OPT, FORMERR),
    (
        "EDNS option overruns OPT",
        _header(0x200F, ar=1) + _Q + b"\x00" + struct.pack("!HHIHHH", 41, 1232, 0, 4, 3, 99),
        FORMERR,
    ),
    ("ancount 1 in a query", _header(0x2010, an=1) + _Q, FORMERR),
    (
        "qtype OPT",
        _header(0x2011) + _qname("www.example.com.") + struct.pack("!HH", 41, 1),
        FORMERR_OR_ANSWER,
    ),
    ("opcode UPDATE", _header(0x2012, flags=0x2800) + _Q, {dns.rcode.NOTIMP, dns.rcode.REFUSED}),
    ("opcode 15", _header(0x2013, flags=0x7900) + _Q, {dns.rcode.NOTIMP}),
    ("a response (QR=1)", _header(0x2014, flags=0x8400) + _Q, DROP_ONLY),
]


def _udp_exchange(server: ServerHandle, packet: bytes) -> list[bytes]:
    """Send ``packet`` then a valid sentinel query from one fresh socket; return every datagram
    that arrived before the sentinel's answer (i.e. the server's reply to ``packet``, if any)."""
    sentinel = dns.message.make_query("example.com.", "SOA")
    sentinel.id = 0xFFFF
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(WAIT)
        sock.connect(server.address)
        sock.send(packet)
        sock.send(sentinel.to_wire())
        before = []
        while True:
            data = sock.recv(65535)
            if data[:2] == b"\xff\xff" and len(data) > 12 and data[2] & 0x80:
                reply = dns.message.from_wire(data)
                if reply.question == sentinel.question:
                    return before
            before.append(data)


@pytest.mark.parametrize(("label", "packet", "allowed"), CRAFTED, ids=[c[0] for c in CRAFTED])
def test_malformed_udp_packet_is_rejected_or_dropped(
    victim: ServerHandle, label: str, packet: bytes, allowed: set[int]
) -> None:
    """A malformed query with a whole header gets exactly one reply, FORMERR/NOTIMP with its ID
    echoed and QR set; runts and responses get none; the server lives on."""
    replies = _udp_exchange(victim, packet)
    if not allowed:
        assert replies == [], f"{label}: expected no reply, got {replies!r}"
    else:
        assert len(replies) == 1, f"{label}: expected one reply, got {replies!r}"
        [data] = replies
        assert len(data) >= 12 and data[:2] == packet[:2], data
        assert data[2] & 0x80, "QR must be set"
        rcode = data[3] & 0x0F
        assert rcode in allowed, f"{label}: rcode {dns.rcode.to_text(rcode)}"
    assert_still_answers(victim)


def test_random_junk_over_udp_does_not_kill_the_server(victim: ServerHandle) -> None:
    """500 random (seeded) datagrams and mutated queries; afterwards valid queries still answer."""
    rng = random.Random(20240229)
    valid = dns.message.make_query("www.example.com.", "A", use_edns=0).to_wire()
    errors_before = victim.metric("anycastedge_dns_internal_errors_total")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i in range(500):
            if i % 2:
                packet = rng.randbytes(rng.randrange(0, 600))
            else:  # a valid query with a few octets flipped or cut short
                mutated = bytearray(valid)
                for _ in range(rng.randrange(1, 6)):
                    mutated[rng.randrange(len(mutated))] = rng.randrange(256)
                packet = bytes(mutated[: rng.randrange(1, len(mutated) + 1)])
            sock.sendto(packet, victim.address)
    assert_still_answers(victim)
    assert victim.metric("anycastedge_dns_internal_errors_total") == errors_before
    assert "Traceback" not in victim.log_text(), victim.log_text()


@pytest.mark.parametrize(
    ("label", "stream"),
    [
        ("3 junk octets framed", frame(b"\x01\x02\x03")),
        ("empty message", frame(b"")),
        ("length prefix promising more than comes", b"\xff\xff" + b"abc"),
        ("half a length prefix", b"\x00"),
        ("pointer loop query", frame(_header(0x3001) + b"\xc0\x0c\x00\x01\x00\x01")),
        ("a response", frame(_header(0x3002, flags=0x8400) + _Q)),
        ("random junk", random.Random(7).randbytes(3000)),
    ],
)
def test_garbage_on_tcp_does_not_kill_the_server(
    victim: ServerHandle, label: str, stream: bytes
) -> None:
    """Garbage on a TCP connection gets FORMERR or the connection closed; the server lives on."""
    with tcp_connect(victim) as sock:
        sock.sendall(stream)
        sock.shutdown(socket.SHUT_WR)  # we are done: the server must answer or close, not wait
        data = read_eof(sock)
    while data:  # whatever came back must be well-framed error replies
        (length,) = struct.unpack("!H", data[:2])
        message, data = data[2 : 2 + length], data[2 + length :]
        assert len(message) == length >= 12, label
        assert message[2] & 0x80 and message[3] & 0x0F in (dns.rcode.FORMERR,), (label, message)
    assert_still_answers(victim)


def test_no_internal_errors_logged_after_bad_input(victim: ServerHandle) -> None:
    """After every bad-input test on this server: no query raised inside it, no traceback."""
    assert victim.metric("anycastedge_dns_internal_errors_total") == 0
    assert "Traceback" not in victim.log_text(), victim.log_text()
    assert_still_answers(victim)


def test_ixfr_query_over_udp_is_refused(server: ServerHandle) -> None:
    """IXFR with the client's SOA in authority (as RFC 1995 sends it) is REFUSED, not FORMERR."""
    query = dns.message.make_query("example.com.", "IXFR")
    soa = dns.rrset.from_text(
        "example.com.", 0, "IN", "SOA", "ns1.example.com. hostmaster.example.com. 1 2 3 4 5"
    )
    query.authority.append(soa)
    reply = dns.query.udp(query, server.host, port=server.dns_port, timeout=WAIT)
    assert reply.rcode() == dns.rcode.REFUSED, reply
