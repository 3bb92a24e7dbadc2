"""The Responder's dynamic path: ECS parsing and echo, branches, caches and their invalidation."""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anycastedge.config.pop import SoaConfig
from anycastedge.config.zones import load_zones
from anycastedge.dns.wire import Responder
from anycastedge.gslb.decider import Decider
from anycastedge.gslb.geo import GeoLocator, client_from_ecs
from anycastedge.gslb.select import match
from anycastedge.health.check import CheckTarget

ZONE = """---
'':
  - type: NS
    values: [ns1.dyn.test.]
ns1:
  type: A
  value: 127.0.0.1
plain:
  type: A
  value: 127.0.0.1
www:
  type: A
  values: [127.0.0.99]
  octodns:
    healthcheck: {protocol: TCP, port: 9}
  dynamic:
    pools:
      eu:
        fallback: na
        values: [{value: 127.0.0.11}]
      na:
        values: [{value: 127.0.0.21, status: up}, {value: 127.0.0.22, status: up, weight: 3}]
    rules:
      - geos: [EU]
        pool: eu
      - pool: na
alias:
  type: CNAME
  value: www.dyn.test.
  dynamic:
    pools:
      eu: {values: [{value: www.dyn.test., status: up}]}
      na: {values: [{value: plain.dyn.test., status: up}]}
    rules:
      - geos: [EU]
        pool: eu
      - pool: na
'*.wild':
  type: A
  values: [127.0.0.98]
  dynamic:
    pools:
      eu: {values: [{value: 127.0.0.12, status: up}]}
    rules:
      - pool: eu
"""

EU = "192.0.2.0/24"
NA = "198.51.100.0/24"


class Checks:
    """A switchable view of the checks, standing in for the monitor."""

    def __init__(self) -> None:
        self.down: set[str] = set()

    def serving(self, target: CheckTarget) -> bool:
        return target.address not in self.down


@pytest.fixture
def health() -> Checks:
    return Checks()


@pytest.fixture
def responder(tmp_path: Path, health: Checks) -> Responder:
    (tmp_path / "dyn.test.yaml").write_text(ZONE)
    zones, _ = load_zones([tmp_path], SoaConfig())
    locator = GeoLocator((("EU", ("192.0.2.0/24",)),))
    return Responder(zones, "ams1", decider=Decider(locator, health.serving, random.Random(5)))


def ask(
    responder: Responder,
    qname: str,
    subnet: str | None = EU,
    host: str = "127.0.0.1",
    tcp: bool = False,
    qid: int = 1,
) -> dns.message.Message:
    options = [dns.edns.ECSOption.from_text(subnet)] if subnet else []
    query = dns.message.make_query(qname, "A", use_edns=0, options=options)
    query.id = qid
    wire = responder.respond(query.to_wire(), tcp, host)
    assert wire is not None
    return dns.message.from_wire(wire)


def answer(reply: dns.message.Message) -> list[str]:
    return [f"{rr.name} {rr.rdtype.name} {r}" for rr in reply.answer for r in rr]


def ecs(reply: dns.message.Message) -> tuple[str, int, int] | None:
    for option in reply.options:
        if isinstance(option, dns.edns.ECSOption):
            return option.address, option.srclen, option.scopelen
    return None


def test_health_change_invalidates_cached_dynamic_answers(
    responder: Responder, health: Checks
) -> None:
    """A cached answer survives repeats, and is dropped by health_changed()."""
    assert answer(ask(responder, "www.dyn.test.")) == ["www.dyn.test. A 127.0.0.11"]
    health.down.add("127.0.0.11")
    assert answer(ask(responder, "www.dyn.test.", qid=2)) == ["www.dyn.test. A 127.0.0.11"]
    responder.health_changed()
    reply = ask(responder, "www.dyn.test.", qid=3)
    assert answer(reply)[0].split()[-1] in ("127.0.0.21", "127.0.0.22")
    assert reply.id == 3 and ecs(reply) == ("192.0.2.0", 24, 24)


def test_weighted_answers_are_drawn_per_query_not_cached(responder: Responder) -> None:
    """A multi-value pool answering one value is a fresh draw each time (3:1 weights)."""
    seen = [answer(ask(responder, "www.dyn.test.", NA, qid=i))[0] for i in range(400)]
    heavy = sum(a.endswith("127.0.0.22") for a in seen)
    assert 240 < heavy < 360
    pools = responder.counters.pool_answers
    assert pools[("www.dyn.test. A", "na")] == 400


def test_cached_answers_still_count_per_pool(responder: Responder) -> None:
    """Answers served from the response cache are counted per pool like the first one."""
    for qid in range(5):
        ask(responder, "www.dyn.test.", qid=qid)
    assert responder.counters.pool_answers[("www.dyn.test. A", "eu")] == 5


def test_dynamic_cname_then_dynamic_a(responder: Responder) -> None:
    """A dynamic CNAME into a dynamic A decides both for the client; counts both pools."""
    eu = ask(responder, "alias.dyn.test.")
    assert answer(eu) == ["alias.dyn.test. CNAME www.dyn.test.", "www.dyn.test. A 127.0.0.11"]
    na = ask(responder, "alias.dyn.test.", NA)
    assert answer(na) == ["alias.dyn.test. CNAME plain.dyn.test.", "plain.dyn.test. A 127.0.0.1"]
    assert responder.counters.pool_answers[("alias.dyn.test. CNAME", "eu")] == 1
    assert responder.counters.pool_answers[("www.dyn.test. A", "eu")] == 1


def test_dynamic_wildcard_answers_with_the_query_name(responder: Responder) -> None:
    """A dynamic record at a wildcard synthesizes its pool's answer at the asked name."""
    assert answer(ask(responder, "x.wild.dyn.test.")) == ["x.wild.dyn.test. A 127.0.0.12"]


def test_without_ecs_answers_follow_the_source_address_and_are_cached_per_address(
    responder: Responder,
) -> None:
    """The same bytes from two sources get the answer for each source."""
    assert answer(ask(responder, "www.dyn.test.", None, host="192.0.2.7")) == [
        "www.dyn.test. A 127.0.0.11"
    ]
    other = answer(ask(responder, "www.dyn.test.", None, host="198.51.100.7"))
    assert other[0].split()[-1] in ("127.0.0.21", "127.0.0.22")
    again = ask(responder, "www.dyn.test.", None, host="192.0.2.7")
    assert answer(again) == ["www.dyn.test. A 127.0.0.11"] and ecs(again) is None


@pytest.mark.parametrize(
    ("subnet", "expected", "echo"),
    [
        (EU, ["www.dyn.test. A 127.0.0.11"], ("192.0.2.0", 24, 24)),
        ("192.0.2.0/25", ["www.dyn.test. A 127.0.0.11"], ("192.0.2.0", 25, 24)),
    ],
)
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_dynamic_answers_over_udp_and_tcp(
    responder: Responder,
    tcp: bool,
    subnet: str,
    expected: list[str],
    echo: tuple[str, int, int],
) -> None:
    """Over either transport an EU client gets the eu pool's value and ECS with the EU /24
    scope (the rule's network, whatever the client's source prefix)."""
    reply = ask(responder, "www.dyn.test.", subnet, tcp=tcp)
    assert answer(reply) == expected
    assert ecs(reply) == echo


@pytest.mark.parametrize(
    "option",
    [
        bytes((0, 3, 0, 0)),  # unknown family
        bytes((0, 1, 33, 0, 1, 2, 3, 4, 5)),  # prefix longer than IPv4
        bytes((0, 1, 24, 0, 192, 0)),  # too few address octets
        bytes((0, 1, 16, 0, 192, 0, 2)),  # too many
        bytes((0, 1, 23, 0, 192, 0, 3)),  # a bit past the prefix
        bytes((0, 1)),  # too short
    ],
)
def test_malformed_ecs_is_formerr(responder: Responder, option: bytes) -> None:
    """RFC 7871 section 6: malformed ECS options are rejected with FORMERR."""
    query = dns.message.make_query(
        "plain.dyn.test.", "A", use_edns=0, options=[dns.edns.GenericOption(8, option)]
    )
    reply = dns.message.from_wire(responder.respond(query.to_wire(), False, "127.0.0.1") or b"")
    assert reply.rcode() == dns.rcode.FORMERR


def ecs_is_well_formed(option: bytes) -> bool:
    """RFC 7871 section 6, written out here apart from the server's parser: a known family,
    a source prefix that fits it, exactly the octets the prefix needs, nothing set past it."""
    if len(option) < 4:
        return False
    bits = {1: 32, 2: 128}.get(int.from_bytes(option[:2], "big"))
    source, address = option[2], option[4:]
    if bits is None or source > bits or len(address) != -(-source // 8):
        return False
    value = int.from_bytes(address.ljust(bits // 8, b"\0"), "big")
    return value & ((1 << (bits - source)) - 1) == 0


@st.composite
def ecs_like(draw: st.DrawFn) -> bytes:
    """ECS option data near the valid shape: any family and prefix, the address one octet short,
    exact or long, its bits past the prefix cleared or not (random bytes rarely get that far)."""
    family = draw(st.sampled_from([1, 2, 0, 3]))
    source = draw(st.integers(0, 136))
    scope = draw(st.sampled_from([0, 24, 255]))
    length = max(0, -(-source // 8) + draw(st.integers(-1, 1)))
    address = bytearray(draw(st.binary(min_size=length, max_size=length)))
    if address and source % 8 and draw(st.booleans()):
        address[-1] &= 0xFF << (8 - source % 8) & 0xFF
    return family.to_bytes(2, "big") + bytes((source, scope)) + bytes(address)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    option=st.one_of(ecs_like(), st.binary(max_size=24)),
    name=st.sampled_from(["www", "plain", "alias", "nx"]),
)
def test_any_ecs_option_is_answered_or_rejected(
    responder: Responder, option: bytes, name: str
) -> None:
    """Arbitrary ECS bytes never raise; a well-formed option (by RFC 7871's rules) is answered
    and echoed as sent with a scope no longer than its source; any other is FORMERR."""
    query = dns.message.make_query(
        f"{name}.dyn.test.", "A", use_edns=0, options=[dns.edns.GenericOption(8, option)]
    )
    wire = responder.respond(query.to_wire(), False, "127.0.0.1")
    assert wire is not None
    reply = dns.message.from_wire(wire)
    if not ecs_is_well_formed(option):
        assert reply.rcode() == dns.rcode.FORMERR
        return
    assert reply.rcode() == (dns.rcode.NXDOMAIN if name == "nx" else dns.rcode.NOERROR)
    [echoed] = [o for o in reply.options if isinstance(o, dns.edns.ECSOption)]
    sent = echoed.to_wire()
    assert sent is not None
    assert sent[:3] + sent[4:] == option[:3] + option[4:]  # family, source, address as sent
    assert echoed.scopelen <= echoed.srclen


@st.composite
def new_networks(draw: st.DrawFn) -> str:
    """A client network of any length, often inside or next to the EU /24."""
    if draw(st.booleans()):
        network = ipaddress.IPv6Network(
            (draw(st.integers(0, 2**128 - 1)), draw(st.integers(1, 128))), strict=False
        )
    else:
        near = int(ipaddress.IPv4Address("192.0.2.0")) ^ draw(st.integers(0, 2**12 - 1))
        address = draw(st.one_of(st.just(near), st.integers(0, 2**32 - 1)))
        network = ipaddress.IPv4Network((address, draw(st.integers(1, 32))), strict=False)
    return str(network)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    subnet=new_networks(),
    qid=st.integers(0, 65535),
    flags=st.sampled_from([0, dns.flags.RD, dns.flags.CD, dns.flags.RD | dns.flags.CD]),
    do=st.booleans(),
    nsid=st.booleans(),
    tcp=st.booleans(),
    upper=st.lists(st.booleans(), min_size=13, max_size=13),
)
def test_new_client_networks_get_the_rules_answer_and_their_query_echoed(
    responder: Responder,
    subnet: str,
    qid: int,
    flags: int,
    do: bool,
    nsid: bool,
    tcp: bool,
    upper: list[bool],
) -> None:
    """A network never seen before gets the pool the rules pick and ECS echoed with the scope
    they hold for; ID, RD, CD, the question's case, DO and NSID as asked; the same bytes again
    (from the cache) get the same response."""
    qname = "".join(c.upper() if up else c for c, up in zip("www.dyn.test.", upper, strict=True))
    options = [dns.edns.ECSOption.from_text(subnet)]
    if nsid:
        options.append(dns.edns.GenericOption(dns.edns.OptionType.NSID, b""))
    query = dns.message.make_query(qname, "A", use_edns=0, want_dnssec=do, options=options)
    query.id, query.flags = qid, flags
    wire = responder.respond(query.to_wire(), tcp, "127.0.0.1")
    assert wire is not None
    reply = dns.message.from_wire(wire)
    assert reply.id == qid and reply.flags & (dns.flags.RD | dns.flags.CD) == flags
    assert reply.question[0].name.to_text() == qname  # the case as asked
    assert bool(reply.ednsflags & dns.flags.DO) == do
    assert [o.to_wire() for o in reply.options if o.otype == dns.edns.OptionType.NSID] == (
        [b"ams1"] if nsid else []
    )
    [zone] = [z for z in responder.zones if z.dynamic]
    record = zone.dynamic[(dns.name.from_text("www.dyn.test."), dns.rdatatype.A)]
    assert responder.decider is not None
    client = client_from_ecs(options[0].to_wire() or b"")
    pool, scope = match(record, client, responder.decider.locator)
    values = {v.value for v in record.pools[pool].values}
    assert len(answer(reply)) == 1 and answer(reply)[0].split()[-1] in values
    echoed = ecs(reply)
    assert echoed is not None
    network = ipaddress.ip_network(subnet)
    assert ipaddress.ip_address(echoed[0]) == network.network_address
    assert echoed[1:] == (network.prefixlen, min(scope, network.prefixlen))
    if pool == "eu":  # one value: every query from the network gets the cached response
        again = responder.respond(query.to_wire(), tcp, "127.0.0.1")
        assert again == wire
