"""Fuzz target: the DNS wire fast path, ``Responder.respond(data, tcp, host)``, over the repo's
zones, the engine's fixture zone and a GSLB zone of dynamic records (weighted, fallback, sticky,
a dynamic CNAME and wildcard), with the GSLB decider wired as `serve` wires it.

For any bytes, either transport and any client address it must not raise, and must answer
nothing (a runt or a response) or a well-formed DNS response: the query's ID, opcode and RD,
QR set, RA clear, within the transport's size, and the question as asked, octet for octet,
whenever it has one (only FORMERR and NOTIMP may leave it out; a valid query never gets those,
but for QTYPE OPT and the types the engine does not implement).

Its caches must never change an answer: every response of the Responder the whole run shares
must say what a fresh Responder over the same zones, health and configuration answers to the
same bytes (the GSLB draw is made deterministic for that), and so must the answer to the same
bytes sent again (a cache hit) and to the plain form of the same question. "Say the same": the
same header, question and records; the general path renders through dnspython, which shuffles
the records of an RRset (once per answer it caches), so their order is not compared.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.name
import dns.rcode
import pytest
from hypothesis import given
from hypothesis import strategies as st

from anycastedge.config.pop import SoaConfig
from anycastedge.config.zones import load_zones
from anycastedge.dns.wire import OPT_ECS, OPT_NSID, Responder
from anycastedge.dns.zone import ZoneSet
from anycastedge.gslb.decider import Decider
from anycastedge.gslb.geo import GeoLocator
from anycastedge.health.check import PROBE_EDNS_OPTION, CheckTarget
from tests.fuzz.profiles import fuzz_settings

REPO = Path(__file__).resolve().parents[2]
ZONE_DIRS = (REPO / "zones", REPO / "tests" / "fixtures" / "zones")
POP = "ams1"
FORMERR, NOTIMP = int(dns.rcode.FORMERR), int(dns.rcode.NOTIMP)

# Every address in it is documentation or loopback: nothing here is ever probed, the health the
# decider reads is the test's own switchboard.
GSLB_ZONE = """---
'':
  - type: NS
    values: [ns1.gslb.fuzz., ns2.gslb.fuzz.]
'*.wild':
  type: A
  values: [192.0.2.98]
  dynamic:
    pools:
      eu: {values: [{value: 192.0.2.12}, {value: 192.0.2.13, weight: 5}]}
    rules:
      - pool: eu
alias:
  type: CNAME
  value: www.gslb.fuzz.
  dynamic:
    pools:
      eu: {values: [{value: www.gslb.fuzz.}]}
      na: {values: [{value: plain.gslb.fuzz., status: up}]}
    rules:
      - geos: [EU]
        pool: eu
      - pool: na
chain:
  type: CNAME
  value: alias.gslb.fuzz.
ns1:
  type: A
  value: 127.0.0.1
ns2:
  type: A
  value: 127.0.0.2
plain:
  type: A
  value: 192.0.2.1
six:
  anycastedge:
    answers: 2
    sticky: true
    sticky_prefix: {ipv4: 20, ipv6: 48}
  dynamic:
    pools:
      ap:
        fallback: eu
        values: [{value: '2001:db8::31'}, {value: '2001:db8::32', weight: 2}]
      eu:
        values: [{value: '2001:db8::11'}, {value: '2001:db8::12'}, {value: '2001:db8::13'}]
    rules:
      - pool: ap
        subnets: [2001:db8:ac::/48, 203.0.113.0/24]
      - pool: eu
  type: AAAA
  values: ['2001:db8::99']
www:
  anycastedge:
    sticky: true
  dynamic:
    pools:
      eu:
        fallback: na
        values: [{value: 192.0.2.11}, {value: 192.0.2.14, weight: 3}]
      na:
        values: [{value: 198.51.100.21, status: up}, {value: 198.51.100.22, weight: 3}]
      office:
        values: [{value: 203.0.113.31, status: up}]
    rules:
      - pool: office
        subnets: [203.0.113.0/24]
      - geos: [EU]
        pool: eu
      - pool: na
  type: A
  values: [198.51.100.99]
"""

# Health the fuzzer may flip: the values of every pool above that is checked (status obey).
CHECKED = ("192.0.2.11", "192.0.2.14", "192.0.2.12", "192.0.2.13", "198.51.100.22",
           "2001:db8::31", "2001:db8::32", "2001:db8::11", "2001:db8::12", "2001:db8::13",
           "127.0.0.21", "127.0.0.22", "127.0.0.11")  # fmt: skip
NETWORKS = (("EU", ("192.0.2.0/24", "2001:db8:e0::/48")), ("NA", ("198.51.100.0/24",)))
HOSTS = ["127.0.0.1", "192.0.2.7", "198.51.100.9", "203.0.113.5", "2001:db8:e0::1", "::1",
         "2001:db8:ac::7", "::ffff:192.0.2.1", "fe80::1%eth0", "", "not an address"]  # fmt: skip
# Responders as `serve` may be configured: (max_udp, nsid, cache_size, with the GSLB decider).
# The small caches are cleared every few queries, so that clearing is fuzzed too.
VARIANTS = ((1232, True, 100_000, True), (512, False, 8, True), (4096, True, 64, False))


class Steady(random.Random):
    """The weighted draw made deterministic, so that two Responders must agree on it."""

    def random(self) -> float:
        return 0.5


@dataclass
class Health:
    """The checks' verdicts, as the monitor's ``serving`` gives them."""

    down: set[str] = field(default_factory=set)

    def serving(self, target: CheckTarget) -> bool:
        return target.address not in self.down


@dataclass
class World:
    """The zones, the health, the Responders the whole run shares, and names to ask for."""

    zones: ZoneSet
    health: Health
    names: tuple[bytes, ...]  # wire form, lower case: every name of every zone, and some not
    shared: list[Responder]

    def fresh(self, variant: int) -> Responder:
        """A new Responder of ``variant``: empty caches, the same zones and health."""
        max_udp, nsid, cache_size, gslb = VARIANTS[variant]
        decider = Decider(GeoLocator(NETWORKS), self.health.serving, Steady()) if gslb else None
        return Responder(self.zones, POP, max_udp, nsid, cache_size, decider=decider)

    def flip(self, address: str) -> None:
        """A health check changes its verdict: the server tells the Responder in service."""
        self.health.down ^= {address}
        for responder in self.shared:
            responder.health_changed()


def build_world(directory: Path) -> World:
    """The zones (the GSLB zone written into ``directory``), healthy, and shared Responders."""
    gslb = directory / "gslb.fuzz.yaml"
    gslb.write_text(GSLB_ZONE)
    zones, _ = load_zones([*ZONE_DIRS, gslb], SoaConfig())
    names = {key for zone in zones for key in zone.compiled.nodes}
    names |= {b"\x07example\x03org\x00", b"\x00", b"\x04fuzz\x00", b"\x02id\x06server\x00"}
    w = World(zones, Health(), tuple(sorted(names)), [])
    w.shared = [w.fresh(n) for n in range(len(VARIANTS))]
    return w


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("gslb"))


# --- queries ---------------------------------------------------------------------------------

QTYPES = [1, 2, 5, 6, 12, 15, 16, 28, 33, 35, 39, 41, 43, 46, 52, 64, 65, 251, 252, 255, 256, 257]
QCLASSES = [1, 1, 1, 3, 4, 254, 255, 0]
LOCAL_SUBNETS = [(1, bytes([192, 0, 2, 0])), (1, bytes([198, 51, 100, 0])),
                 (1, bytes([203, 0, 113, 0])), (2, bytes.fromhex("20010db800e0") + bytes(10)),
                 (2, bytes.fromhex("20010db800ac") + bytes(10))]  # fmt: skip


@dataclass(frozen=True)
class Query:
    """Bytes to send, and what the fuzzer knows of them."""

    wire: bytes
    valid: bool  # built as a standard query: it must get its question back (check())
    tcp: bool
    host: str

    @property
    def question_end(self) -> int:
        """Where the first question ends (valid queries only)."""
        pos = 12
        while self.wire[pos]:
            pos += self.wire[pos] + 1
        return pos + 5


def _mixed_case(name: bytes, mask: int) -> bytes:
    out = bytearray(name)
    for i, octet in enumerate(out):
        if 0x61 <= octet <= 0x7A and mask >> (i % 64) & 1:
            out[i] = octet - 0x20
    return bytes(out)


@st.composite
def names(draw: st.DrawFn, world: World) -> bytes:
    """A wire name: one of the zones' names, a name below one, or any labels (<= 255 octets)."""
    base = draw(st.sampled_from(world.names))
    kind = draw(st.integers(0, 3))
    if kind == 1:
        labels = draw(st.lists(st.binary(min_size=1, max_size=20), min_size=1, max_size=3))
        base = b"".join(bytes((len(label),)) + label for label in labels) + base
    elif kind == 2:
        labels = draw(st.lists(st.binary(min_size=1, max_size=63), max_size=6))
        base = b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"
    while len(base) > 255:
        base = base[base[0] + 1 :]
    return _mixed_case(base, draw(st.integers(0, 2**64 - 1)))


@st.composite
def ecs_options(draw: st.DrawFn) -> bytes:
    """A well-formed ECS option (RFC 7871 6): often a subnet the zones' rules name."""
    if draw(st.booleans()):
        family, address = draw(st.sampled_from(LOCAL_SUBNETS))
    else:
        family = draw(st.sampled_from([1, 2]))
        address = draw(st.binary(min_size=4, max_size=4) if family == 1 else
                       st.binary(min_size=16, max_size=16))  # fmt: skip
    width = 32 if family == 1 else 128
    source = draw(st.integers(0, width))
    kept = bytearray(address[: (source + 7) // 8])
    if source % 8:
        kept[-1] &= 0xFF00 >> (source % 8) & 0xFF
    return struct.pack("!HBB", family, source, 0) + bytes(kept)


@st.composite
def edns_options(draw: st.DrawFn) -> tuple[bytes, bool]:
    """OPT RDATA, and whether the options are all ones a server must accept."""
    options = []
    valid = True
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.integers(0, 6))
        if kind == 0:
            options.append((OPT_NSID, b"" if draw(st.booleans()) else draw(st.binary(max_size=8))))
        elif kind == 1 and not any(code == OPT_ECS for code, _ in options):
            options.append((OPT_ECS, draw(ecs_options())))
        elif kind == 2:
            options.append((OPT_ECS, draw(st.binary(max_size=20))))
            valid = False  # a malformed or second ECS: FORMERR, whatever else it is
        elif kind == 3:
            options.append((10, draw(st.binary(min_size=8, max_size=8))))  # a client cookie
        elif kind == 4:
            options.append((PROBE_EDNS_OPTION, draw(st.binary(max_size=4))))
        else:
            code = draw(st.integers(0, 65535).filter(lambda c: c not in (OPT_ECS,)))
            options.append((code, draw(st.binary(max_size=12))))
    rdata = b"".join(struct.pack("!HH", code, len(data)) + data for code, data in options)
    return rdata, valid


@st.composite
def queries(draw: st.DrawFn, world: World) -> Query:
    """A query built field by field (most of them valid), then maybe mutated."""
    opcode = draw(st.sampled_from([0] * 8 + list(range(1, 16))))
    flags = opcode << 11 | draw(st.integers(0, 0x07FF))  # AA, TC, RD, RA, Z, AD, CD, RCODE
    qr = draw(st.integers(0, 19)) == 0
    flags |= 0x8000 if qr else 0
    name = draw(names(world))
    qtype = draw(st.sampled_from(QTYPES) | st.integers(0, 65535))
    qclass = draw(st.sampled_from(QCLASSES) | st.integers(0, 65535))
    question = name + struct.pack("!HH", qtype, qclass)
    authority = b""
    if draw(st.integers(0, 9)) == 0:  # an IXFR query's SOA (RFC 1995), its owner a pointer
        timers = draw(st.lists(st.integers(0, 2**32 - 1), min_size=5, max_size=5))
        rdata = b"\xc0\x0c\xc0\x0c" + struct.pack("!IIIII", *timers)
        authority = b"\xc0\x0c" + struct.pack("!HHIH", 6, qclass, 0, len(rdata)) + rdata
    additional = []
    valid = opcode == 0 and not qr
    if draw(st.booleans()):
        rdata, options_valid = draw(edns_options())
        valid = valid and options_valid
        payload = draw(st.sampled_from([0, 512, 1232, 4096, 65535]) | st.integers(0, 65535))
        version = draw(st.sampled_from([0] * 6 + [1, 255]))
        ttl = draw(st.integers(0, 255)) << 24 | version << 16 | draw(st.integers(0, 0xFFFF))
        additional.append(b"\x00" + struct.pack("!HHIH", 41, payload, ttl, len(rdata)) + rdata)
    if draw(st.integers(0, 9)) == 0:  # some other record beside it (an A, say)
        address = draw(st.binary(min_size=4, max_size=4))
        other = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + address
        additional.insert(draw(st.integers(0, len(additional))), other)
    counts = struct.pack("!HHHH", 1, 0, 1 if authority else 0, len(additional))
    wire = struct.pack("!HH", draw(st.integers(0, 65535)), flags) + counts + question
    wire += authority + b"".join(additional)
    if draw(st.integers(0, 3)) == 0:
        wire, valid = draw(mutations(wire)), False
    return Query(wire, valid, draw(st.booleans()), draw(st.sampled_from(HOSTS)))


@st.composite
def mutations(draw: st.DrawFn, wire: bytes) -> bytes:
    """A few bit flips, truncations, insertions, deletions or overwrites."""
    packet = bytearray(wire)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite"]))
        at = draw(st.integers(0, max(len(packet) - 1, 0)))
        if kind == "flip" and packet:
            packet[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del packet[at:]
        elif kind == "insert":
            packet[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del packet[at : at + draw(st.integers(1, 4))]
        elif kind == "overwrite" and packet:
            packet[at] = draw(st.integers(0, 255))
    return bytes(packet)


def raw() -> st.SearchStrategy[Query]:
    """Any bytes at all, or a header of a plausible query followed by any bytes."""
    header = st.builds(lambda qid, body: struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + body,
                       st.integers(0, 65535), st.binary(max_size=300))  # fmt: skip
    return st.builds(Query, st.binary(max_size=600) | header, st.just(False), st.booleans(),
                     st.sampled_from(HOSTS))  # fmt: skip


# --- what a response must be -----------------------------------------------------------------


def udp_limit(query: bytes, max_udp: int) -> int:
    """The largest UDP response ``query`` may get: 512, or its EDNS payload capped by ours."""
    try:
        message = dns.message.from_wire(query)
    except dns.exception.DNSException:
        return max_udp  # whatever we took from it, never more than our own limit
    if message.edns < 0:
        return 512
    return min(max(message.payload, 512), max_udp)


def check(query: Query, response: bytes | None, max_udp: int) -> None:
    """``response`` is what ``query`` may get (module docstring)."""
    data = query.wire
    if len(data) < 12 or data[2] & 0x80:
        assert response is None, "answered a runt or a response"
        return
    assert response is not None, f"no answer to {data!r}"
    try:
        message = dns.message.from_wire(response)
    except dns.exception.DNSException as exc:  # pragma: no cover - the failure report
        pytest.fail(f"unparseable response {response!r} to {data!r}: {exc!r}")
    assert response[:2] == data[:2], "ID not echoed"
    assert response[2] & 0x80, "QR not set"
    assert response[2] & 0x78 == data[2] & 0x78, "opcode not echoed"
    if data[2] & 0x78:
        # An opcode other than QUERY: NOTIMP, with none of QUERY's flags (genreport's checks).
        assert response[3] & 0x0F == dns.rcode.NOTIMP and not response[2] & 0x05, "NOTIMP"
        assert not response[3] & 0xB0, "RA, AD or CD in a NOTIMP"
        return
    assert response[2] & 0x01 == data[2] & 0x01, "RD not echoed"
    assert not response[3] & 0x80, "RA set by an authoritative server"
    assert len(response) <= (65535 if query.tcp else udp_limit(data, max_udp))
    rcode = message.rcode()
    qdcount = (response[4] << 8) | response[5]
    if qdcount:
        assert qdcount == 1
        end = 12
        while response[end]:
            end += response[end] + 1
        end += 5
        assert response[12:end] == data[12:end], "the question not echoed as asked"
    else:
        assert rcode in (FORMERR, NOTIMP), f"no question in a {dns.rcode.to_text(rcode)}"
    if query.valid:
        assert qdcount == 1, data
        qtype = int.from_bytes(data[query.question_end - 4 : query.question_end - 2], "big")
        # The engine's own refusals of a question: OPT as QTYPE, and types it does not serve.
        allowed = {FORMERR} if qtype == 41 else {NOTIMP} if qtype in (249, 253, 254) else set()
        assert rcode not in {FORMERR, NOTIMP} - allowed, (rcode, data)


def same_answer(one: bytes | None, other: bytes | None) -> bool:
    """Whether two responses say the same: the same header and question, and the same records
    in each section. The order of the records in an RRset may differ: the general path renders
    with dnspython, which shuffles them (``want_shuffle``), once per cached answer."""
    if one is None or other is None or one == other:
        return one == other
    a, b = dns.message.from_wire(one), dns.message.from_wire(other)
    return (
        one[:12] == other[:12]
        and a.question == b.question
        and a == b
        and (a.edns, a.ednsflags, a.payload, a.options)
        == (b.edns, b.ednsflags, b.payload, b.options)
    )


def plain(query: Query) -> bytes:
    """The question of a valid query, asked again with RD and nothing else."""
    return struct.pack("!HHHHHH", 0x0B0B, 0x0100, 1, 0, 0, 0) + query.wire[12 : query.question_end]


def exchange(world: World, variant: int, query: Query) -> None:
    """Ask the shared Responder, check the answer, and compare it with a fresh one's."""
    shared = world.shared[variant]
    max_udp = VARIANTS[variant][0]
    response = shared.respond(query.wire, query.tcp, query.host)
    check(query, response, max_udp)
    fresh = world.fresh(variant)
    first = fresh.respond(query.wire, query.tcp, query.host)
    assert same_answer(first, response), "a fresh Responder answers otherwise"
    if response is None:
        return
    again = bytes((query.wire[0] ^ 0xFF, query.wire[1])) + query.wire[2:]
    replay = shared.respond(again, query.tcp, query.host)
    assert same_answer(replay, again[:2] + response[2:]), "the same bytes answered differently"
    if query.valid:
        question = plain(query)
        assert same_answer(
            shared.respond(question, query.tcp, query.host),
            fresh.respond(question, query.tcp, query.host),
        ), "the plain question answered differently"


VARIANT = st.integers(0, len(VARIANTS) - 1)


@pytest.mark.parametrize("variant", range(len(VARIANTS)))
def test_the_zones_answer_before_fuzzing(world: World, variant: int) -> None:
    """The harness is sound: a valid query gets its answer and a fresh Responder agrees."""
    query = dns.message.make_query("www.gslb.fuzz.", "A", use_edns=0, id=7)
    wire = query.to_wire()
    response = world.shared[variant].respond(wire, False, "192.0.2.7")
    assert response is not None
    assert same_answer(response, world.fresh(variant).respond(wire, False, "192.0.2.7"))
    answer = dns.message.from_wire(response)
    assert answer.rcode() == dns.rcode.NOERROR and answer.id == 7
    expected = {"192.0.2.11", "192.0.2.14"} if VARIANTS[variant][3] else {"198.51.100.99"}
    assert {rr.to_text() for rrset in answer.answer for rr in rrset} <= expected


@fuzz_settings(300)
@given(data=st.data(), variant=VARIANT, flip=st.none() | st.sampled_from(CHECKED))
def test_structured_queries(
    world: World, data: st.DataObject, variant: int, flip: str | None
) -> None:
    """Queries built field by field, some mutated, while health flips now and then."""
    if flip is not None:
        world.flip(flip)
    exchange(world, variant, data.draw(queries(world)))


@fuzz_settings(200)
@given(data=st.data(), variant=VARIANT)
def test_any_bytes(world: World, data: st.DataObject, variant: int) -> None:
    """Any bytes, or a query header followed by any bytes."""
    exchange(world, variant, data.draw(raw()))
