"""Response rate limiting: the limiter with an injected clock, and the keys the Responder gives."""

from __future__ import annotations

import ipaddress
import math
import struct
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from anycastedge.config.pop import SoaConfig
from anycastedge.config.zones import load_zones
from anycastedge.dns import rrl
from anycastedge.dns.rrl import DROP, LOG, SLIP, RateLimiter, RrlConfig
from anycastedge.dns.wire import Responder, truncate
from anycastedge.health.check import PROBE_EDNS_OPTION

REPO_ZONES = Path(__file__).resolve().parents[3] / "zones"
WWW_A = rrl.key(rrl.RESPONSES, dns.name.from_text("www.example.com.").to_wire() + b"\0\1\0\1")
NX = rrl.key(rrl.NXDOMAINS, dns.name.from_text("example.com.").to_wire())


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, **settings: object) -> RateLimiter:
    """A limiter with nothing exempt unless ``settings`` say otherwise."""
    config = RrlConfig(**{"exempt": (), **settings})  # type: ignore[arg-type]
    return RateLimiter(config, clock)


def flood(lim: RateLimiter, clock: Clock, n: int, host: str = "192.0.2.1", key: bytes = WWW_A,
          gap: float = 0.0) -> list[int]:  # fmt: skip
    """``n`` responses to ``host``, ``gap`` seconds apart: their verdicts."""
    verdicts = []
    for _ in range(n):
        verdicts.append(lim.check(host, key))
        clock.now += gap
    return verdicts


# --- the rate over time ----------------------------------------------------------------------


@given(
    rate=st.integers(1, 50),
    window=st.integers(1, 30),
    gaps=st.lists(st.floats(0, 0.5, allow_nan=False), min_size=1, max_size=400),
)
def test_passes_never_exceed_rate_times_elapsed_plus_one_second(
    rate: int, window: int, gaps: list[float]
) -> None:
    """However the responses arrive, at most rate x (elapsed + 1) are let through: the bucket
    holds one second's credit and earns ``rate`` a second."""
    clock = Clock()
    lim = limiter(clock, responses_per_second=rate, window=window, slip=0)
    start, passed = clock.now, 0
    for gap in gaps:
        clock.now += gap
        passed += lim.check("192.0.2.1", WWW_A) == 0
    assert passed <= math.floor(rate * (clock.now - start + 1) + 1e-6)


@given(
    rate=st.integers(1, 100),
    extras=st.lists(st.floats(1e-6, 2.0, allow_nan=False), min_size=1, max_size=300),
)
def test_a_client_within_the_rate_is_never_limited(rate: int, extras: list[float]) -> None:
    """Responses at most ``rate`` a second (each 1/rate s or more after the last) all pass."""
    clock = Clock()
    lim = limiter(clock, responses_per_second=rate)
    assert lim.check("192.0.2.1", WWW_A) == 0
    for extra in extras:
        clock.now += 1 / rate + extra
        assert lim.check("192.0.2.1", WWW_A) == 0


def test_a_burst_gets_one_seconds_worth_then_nothing() -> None:
    """At one instant, ``rate`` responses pass and every later one is limited."""
    clock = Clock()
    lim = limiter(clock, responses_per_second=5)
    verdicts = flood(lim, clock, 100)
    assert verdicts[:5] == [0] * 5
    assert all(verdicts[5:])


def test_a_flood_above_the_rate_is_limited_for_its_whole_length() -> None:
    """While a client asks faster than the rate, its balance stays at the floor: after the first
    second's credit nothing passes (as BIND: the limit is on the average over the window)."""
    clock = Clock()
    lim = limiter(clock, responses_per_second=10, window=5)
    verdicts = flood(lim, clock, 2000, gap=0.01)  # 100 a second for 20 s
    passed = [i for i, v in enumerate(verdicts) if v == 0]
    assert len(passed) < 20  # the first second's credit, and what it earned before the floor
    assert max(passed) < 200  # ... all within the first two seconds


@given(rate=st.integers(1, 20), window=st.integers(1, 60))
def test_after_a_flood_the_client_waits_out_the_window(rate: int, window: int) -> None:
    """The debt is at most window x rate: after a flood, a client is answered again once
    ``window`` seconds (plus one response's worth) have passed, not before."""
    clock = Clock()
    lim = limiter(clock, responses_per_second=rate, window=window, slip=0)
    early, late = "192.0.2.1", "198.51.100.1"  # two clients, flooded alike
    for host in (early, late):
        flood(lim, clock, rate * window * 3 + 10, host=host)
    end = clock.now
    clock.now = end + window - 0.01
    assert lim.check(early, WWW_A) == DROP
    clock.now = end + window + 1 / rate + 0.001
    assert lim.check(late, WWW_A) == 0


# --- slip, log, log_only ---------------------------------------------------------------------


@given(slip=st.integers(0, 10), n=st.integers(1, 60))
def test_every_slip_th_limited_response_is_truncated(slip: int, n: int) -> None:
    """Of the limited responses, the slip-th, 2 x slip-th, ... are SLIP, the rest DROP (slip
    0: all dropped; 1: all truncated); the first carries LOG."""
    clock = Clock()
    lim = limiter(clock, responses_per_second=2, slip=slip)
    verdicts = flood(lim, clock, 2 + n)[2:]
    assert verdicts[0] & LOG
    assert not any(v & LOG for v in verdicts[1:])
    actions = [v & ~LOG for v in verdicts]
    expected = [SLIP if slip and i % slip == 0 else DROP for i in range(1, n + 1)]
    assert actions == expected
    counts = lim.counts
    assert counts.get(("slipped", "responses"), 0) == expected.count(SLIP)
    assert counts.get(("dropped", "responses"), 0) == expected.count(DROP)


def test_errors_slip_as_they_are() -> None:
    """An error's slip is the error itself (nothing to truncate): verdict 0, counted slipped."""
    clock = Clock()
    lim = limiter(clock, errors_per_second=1, slip=2)
    verdicts = [v & ~LOG for v in flood(lim, clock, 7, key=rrl.ERRORS_KEY)]
    assert verdicts == [0, DROP, 0, DROP, 0, DROP, 0]
    assert lim.counts == {("dropped", "errors"): 3, ("slipped", "errors"): 3}


def test_log_only_answers_everything_and_counts_what_it_would_do() -> None:
    """log_only: no DROP or SLIP ever; LOG at the start of the burst; would_* counted."""
    clock = Clock()
    lim = limiter(clock, responses_per_second=3, slip=2, log_only=True)
    verdicts = flood(lim, clock, 23)
    assert verdicts[3] == LOG
    assert all(v == 0 for i, v in enumerate(verdicts) if i != 3)
    assert lim.counts == {("would_drop", "responses"): 10, ("would_slip", "responses"): 10}


def test_log_lines_are_bounded_per_second() -> None:
    """Many accounts starting to be limited in one second: LOG on the first few only."""
    clock = Clock()
    lim = limiter(clock, responses_per_second=1)
    logged = 0
    for i in range(50):
        host = f"198.51.{i}.1"
        lim.check(host, WWW_A)
        logged += bool(lim.check(host, WWW_A) & LOG)
    assert logged == rrl.LOG_LINES_PER_SECOND
    clock.now += 1
    lim.check("203.0.113.1", WWW_A)
    assert lim.check("203.0.113.1", WWW_A) & LOG


def test_an_account_answered_again_logs_its_next_burst() -> None:
    """The LOG mark is per burst: once a response passes, the next limited one logs again."""
    clock = Clock()
    lim = limiter(clock, responses_per_second=2, window=1)
    assert flood(lim, clock, 3)[2] & LOG
    clock.now += 5
    verdicts = flood(lim, clock, 3)
    assert verdicts[:2] == [0, 0] and verdicts[2] & LOG


# --- who shares an account -------------------------------------------------------------------


def exhaust(lim: RateLimiter, host: str, key: bytes = WWW_A) -> None:
    """Use up ``host``'s account for ``key`` (rate 1: one response)."""
    assert lim.check(host, key) == 0
    assert lim.check(host, key) & (DROP | SLIP)


@given(a=st.integers(0, 2**32 - 1), b=st.integers(0, 2**32 - 1))
def test_ipv4_clients_share_an_account_per_24(a: int, b: int) -> None:
    """Two IPv4 sources are one client exactly when they are in the same /24."""
    clock = Clock()
    lim = limiter(clock, responses_per_second=1, slip=0)
    exhaust(lim, str(ipaddress.IPv4Address(a)))
    limited = lim.check(str(ipaddress.IPv4Address(b)), WWW_A) != 0
    assert limited == (a >> 8 == b >> 8)


@given(a=st.integers(0, 2**128 - 1), b=st.integers(0, 2**128 - 1), same=st.booleans())
def test_ipv6_clients_share_an_account_per_56(a: int, b: int, same: bool) -> None:
    """Two IPv6 sources are one client exactly when they are in the same /56."""
    if same:
        b = (a >> 72 << 72) | (b & (2**72 - 1))
    mapped = ipaddress.IPv6Network("::ffff:0:0/96")
    assume(ipaddress.IPv6Address(a) not in mapped and ipaddress.IPv6Address(b) not in mapped)
    clock = Clock()
    lim = limiter(clock, responses_per_second=1, slip=0)
    exhaust(lim, str(ipaddress.IPv6Address(a)))
    limited = lim.check(str(ipaddress.IPv6Address(b)), WWW_A) != 0
    assert limited == (a >> 72 == b >> 72)


def test_prefix_lengths_are_configurable_and_families_apart() -> None:
    """ipv4_prefix 16 groups a /16; an IPv4-mapped IPv6 source is its IPv4 address; IPv4 and
    IPv6 networks with the same bits are different clients."""
    clock = Clock()
    lim = limiter(clock, responses_per_second=1, ipv4_prefix=16, ipv6_prefix=64)
    exhaust(lim, "192.0.2.1")
    assert lim.check("192.0.77.1", WWW_A)
    assert lim.check("::ffff:192.0.3.9", WWW_A)
    assert lim.check("192.1.2.1", WWW_A) == 0
    assert lim.check("::c000:201", WWW_A) == 0  # 192.0.2.1's bits, as IPv6
    exhaust(lim, "2001:db8:0:1:aaaa::1")
    assert lim.check("2001:db8:0:1:bbbb::2", WWW_A)
    assert lim.check("2001:db8:0:2::1", WWW_A) == 0


@given(
    net=st.integers(0, 2**32 - 1),
    length=st.integers(8, 32),
    host=st.integers(0, 2**32 - 1),
)
def test_exempt_sources_are_never_limited(net: int, length: int, host: int) -> None:
    """A source inside an exempt network is never limited, however much it asks; one outside
    is limited as usual."""
    network = ipaddress.IPv4Network((net >> (32 - length) << (32 - length), length))
    clock = Clock()
    lim = limiter(clock, responses_per_second=1, exempt=(str(network),))
    address = ipaddress.IPv4Address(host)
    verdicts = flood(lim, clock, 20, host=str(address))
    if address in network:
        assert verdicts == [0] * 20
    else:
        assert verdicts[0] == 0 and all(verdicts[1:])


def test_loopback_is_exempt_by_default() -> None:
    """The default exempt list: 127.0.0.0/8 and ::1 (the host itself is not a reflection
    victim; tests and `make run` query from there)."""
    clock = Clock()
    lim = RateLimiter(RrlConfig(responses_per_second=1), clock)
    for host in ("127.0.0.1", "127.9.9.9", "::1"):
        assert flood(lim, clock, 10, host=host) == [0] * 10
    assert all(flood(lim, clock, 3, host="192.0.2.1")[1:])


def test_classes_are_separate_accounts_with_their_own_rates() -> None:
    """A limited positive answer does not limit NXDOMAIN to the same client, nor another
    question; a class whose rate is 0 is never limited."""
    clock = Clock()
    lim = limiter(clock, responses_per_second=1, nxdomains_per_second=3, errors_per_second=0)
    exhaust(lim, "192.0.2.1")
    assert flood(lim, clock, 3, key=NX) == [0, 0, 0]
    assert lim.check("192.0.2.1", NX) & DROP
    other = rrl.key(rrl.RESPONSES, dns.name.from_text("www.example.com.").to_wire() + b"\0\x1c\0\1")
    assert lim.check("192.0.2.1", other) == 0
    assert flood(lim, clock, 100, key=rrl.ERRORS_KEY) == [0] * 100


# --- the table -------------------------------------------------------------------------------


@given(
    size=st.integers(2, 50),
    clients=st.lists(st.integers(0, 2**24 - 1), min_size=1, max_size=400),
)
def test_the_table_never_holds_more_than_max_table_size(size: int, clients: list[int]) -> None:
    """However many networks ask, the table holds at most ``max_table_size`` accounts."""
    clock = Clock()
    lim = limiter(clock, max_table_size=size)
    for network in clients:
        lim.check(str(ipaddress.IPv4Address(network << 8)), WWW_A)
        clock.now += 0.001
        assert len(lim) <= size


def test_an_account_in_use_survives_a_table_full_of_others() -> None:
    """The flooding client keeps its debt while many one-off clients churn the table, and the
    table counts as evictions only accounts that had not recovered."""
    clock = Clock()
    lim = limiter(clock, responses_per_second=1, slip=0, max_table_size=100)
    for i in range(2000):
        assert lim.check("192.0.2.1", WWW_A) & ~LOG == (0 if i == 0 else DROP)
        lim.check(f"10.{i // 256}.{i % 256}.1", WWW_A)
        clock.now += 0.001
    assert len(lim) <= 100
    assert lim.evictions > 0  # the one-off clients' fresh accounts went while still young


def test_accounts_that_recovered_are_not_counted_as_evicted() -> None:
    """Accounts idle for longer than window + 1 s have recovered in full: dropping them is not
    an eviction."""
    clock = Clock()
    lim = limiter(clock, window=2, max_table_size=10)
    for i in range(5):
        lim.check(f"10.0.{i}.1", WWW_A)
    clock.now += 10
    for i in range(5, 40):
        lim.check(f"10.0.{i}.1", WWW_A)
    # 40 accounts opened, len(lim) still held, the first 5 dropped after they had recovered.
    assert len(lim) <= 10
    assert lim.evictions == 40 - len(lim) - 5


def test_describe_names_the_class_network_and_name() -> None:
    """The log line's account: class, network and the name it counts under."""
    lim = limiter(Clock())
    assert lim.describe("192.0.2.77", WWW_A) == "responses to 192.0.2.0/24 for www.example.com. A"
    assert lim.describe("2001:db8::1", NX) == "nxdomains to 2001:db8::/56 for example.com."
    assert lim.describe("192.0.2.77", rrl.ERRORS_KEY) == "errors to 192.0.2.0/24"


# --- the keys the Responder gives ------------------------------------------------------------


@pytest.fixture(scope="module")
def responder() -> Responder:
    """A Responder over the repo's zones (example.com has a delegation and a wildcard)."""
    zones, _ = load_zones([REPO_ZONES], SoaConfig())
    return Responder(zones, "pop1")


def key_of(responder: Responder, name: str, rdtype: str = "A", **make: object) -> bytes | None:
    """The rate-limiting key of the answer to ``name``/``rdtype``, asked twice (the second
    answer comes from the exact cache and must carry the same key)."""
    wire = dns.message.make_query(name, rdtype, **make).to_wire()  # type: ignore[arg-type]
    assert responder.respond(wire, False, "192.0.2.1") is not None
    first = responder.rrl_key
    assert responder.respond(wire, False, "192.0.2.1") is not None
    assert responder.rrl_key == first
    return first


def wire(name: str) -> bytes:
    return dns.name.from_text(name).to_wire()


def test_positive_answers_count_per_question(responder: Responder) -> None:
    """A positive answer's key is the question, lower-cased: case does not make a new one."""
    assert key_of(responder, "www.example.com.") == WWW_A
    assert key_of(responder, "WwW.ExAmPlE.cOm.") == WWW_A
    assert key_of(responder, "www.example.com.", "AAAA") != WWW_A


def test_nxdomain_and_nodata_count_per_zone(responder: Responder) -> None:
    """Random names in one zone are one NXDOMAIN account; NODATA counts per zone too."""
    assert key_of(responder, "a1b2c3.example.com.") == NX
    assert key_of(responder, "zz.yy.example.com.", "TXT") == NX
    nodata = rrl.key(rrl.NODATA, wire("example.com."))
    assert key_of(responder, "web.example.com.", "HINFO") == nodata
    assert key_of(responder, "sip.example.com.", "HINFO") == nodata
    # ... but NODATA at the end of a CNAME is an answer (ANCOUNT > 0, as NSD counts it)
    www_hinfo = rrl.key(rrl.RESPONSES, wire("www.example.com.") + b"\0\x0d\0\1")
    assert key_of(responder, "www.example.com.", "HINFO") == www_hinfo


def test_referrals_count_per_delegation(responder: Responder) -> None:
    """Names at or below a delegation count under the delegation point."""
    referral = rrl.key(rrl.REFERRALS, wire("sub.example.com."))
    assert key_of(responder, "host.sub.example.com.") == referral
    assert key_of(responder, "other.deep.sub.example.com.", "AAAA") == referral


def test_wildcard_answers_count_per_zone_and_type(responder: Responder) -> None:
    """Answers synthesised from a wildcard: random names share one account per type."""
    first = key_of(responder, "one.apps.example.com.")
    assert first is not None and first[0] == rrl.RESPONSES
    assert key_of(responder, "two.apps.example.com.") == first


def test_errors_count_in_one_account(responder: Responder) -> None:
    """REFUSED (not our zone), FORMERR, NOTIMP and BADVERS all use the errors key."""
    assert key_of(responder, "www.example.org.") == rrl.ERRORS_KEY
    assert key_of(responder, "www.example.com.", use_edns=1) == rrl.ERRORS_KEY
    formerr = struct.pack("!HHHHHH", 1, 0x0100, 2, 0, 0, 0) + b"\0\0\1\0\1" * 2
    assert responder.respond(formerr, False, "192.0.2.1") is not None
    assert responder.rrl_key == rrl.ERRORS_KEY
    notimp = struct.pack("!HHHHHH", 1, 0x2800, 1, 0, 0, 0) + b"\0\0\1\0\1"
    assert responder.respond(notimp, False, "192.0.2.1") is not None
    assert responder.rrl_key == rrl.ERRORS_KEY


def test_the_engine_path_gives_the_same_classes(responder: Responder) -> None:
    """Answers the engine renders (ANY, DS, CHAOS) are classed like the fast path's."""
    assert key_of(responder, "www.example.com.", "ANY") == rrl.key(
        rrl.RESPONSES, wire("www.example.com.") + b"\0\xff\0\1"
    )
    assert key_of(responder, "nope.example.com.", "ANY") == NX
    chaos = key_of(responder, "id.server.", "TXT", rdclass="CH")
    assert chaos is not None and chaos[0] == rrl.RESPONSES


def test_our_own_health_checks_are_never_limited(responder: Responder) -> None:
    """A query carrying the BGP hook's probe option has no key."""
    message = dns.message.make_query(
        "example.com.", "SOA", use_edns=0,
        options=[dns.edns.GenericOption(PROBE_EDNS_OPTION, b"")],
    )  # fmt: skip
    assert responder.respond(message.to_wire(), False, "192.0.2.1") is not None
    assert responder.rrl_key is None


@pytest.mark.parametrize(
    ("name", "rdtype"),
    [("www.example.com.", "A"), ("nx.example.com.", "A"), ("sub.example.com.", "NS")],
)
def test_truncate_keeps_the_header_and_question_only(
    responder: Responder, name: str, rdtype: str
) -> None:
    """The slip: same ID, flags and rcode plus TC, the question as asked (with EDNS too), no
    records at all."""
    query = dns.message.make_query(name.upper(), rdtype, use_edns=0, id=4242)
    full = responder.respond(query.to_wire(), False, "192.0.2.1")
    assert full is not None
    slipped = dns.message.from_wire(truncate(full))
    original = dns.message.from_wire(full)
    assert slipped.id == 4242
    assert slipped.flags == original.flags | dns.flags.TC
    assert slipped.rcode() == original.rcode()
    assert slipped.question[0].to_text() == query.question[0].to_text()
    assert not slipped.answer and not slipped.authority and not slipped.additional
    assert slipped.edns < 0


def test_truncate_a_header_only_error() -> None:
    """A FORMERR without a question stays a header, with TC."""
    header = struct.pack("!HHHHHH", 7, 0x8101, 0, 0, 0, 0)
    assert truncate(header) == struct.pack("!HHHHHH", 7, 0x8301, 0, 0, 0, 0)
