"""GSLB selection: rule matching with ECS scope, health and fallback, weights, stickiness."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import random
import subprocess
import sys
from collections import Counter

import dns.name
import dns.rdata
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anycastedge.gslb.decider import Decider, Regions
from anycastedge.gslb.geo import Client, GeoLocator, client_from_ecs, client_from_host, expand
from anycastedge.gslb.model import (
    DOWN,
    OBEY,
    UP,
    DynamicRecord,
    Pool,
    PoolValue,
    Rule,
    StickyPrefix,
)
from anycastedge.gslb.select import (
    DEFAULT_POOL,
    draw,
    healthy,
    make_choice,
    match,
    sticky,
    sticky_key,
)
from anycastedge.health.check import CheckTarget, HealthCheck

CHECK = HealthCheck(protocol="HTTP", port=8080)
LOCATOR = GeoLocator(
    (
        ("EU", ("192.0.2.0/25",)),
        ("EU-DE", ("192.0.2.0/26",)),
        ("NA-US-CA", ("198.51.100.0/24", "2001:db8:ca::/48")),
        ("AS", ("203.0.113.0/24",)),
    )
)


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def value(v: str, weight: int = 1, status: str = OBEY) -> PoolValue:
    target = CheckTarget(v, CHECK) if status == OBEY else None
    return PoolValue(v, weight, status, target)


def record(
    pools: dict[str, Pool],
    rules: tuple[Rule, ...],
    values: tuple[str, ...] = ("127.0.0.99",),
    answers: int = 1,
    is_sticky: bool = False,
) -> DynamicRecord:
    every = set(values) | {v.value for p in pools.values() for v in p.values}
    rdata = {v: dns.rdata.from_text("IN", "A", v) for v in every}
    return DynamicRecord(
        name=dns.name.from_text("www.example.test."),
        rdtype=1,
        ttl=60,
        pools=pools,
        rules=rules,
        values=values,
        rdata=rdata,
        answers=answers,
        sticky=is_sticky,
        sticky_prefix=StickyPrefix(24, 56),
        label="www.example.test. A",
    )


GEO_RECORD = record(
    {
        "lab": Pool("lab", (value("127.0.0.31"),)),
        "de": Pool("de", (value("127.0.0.41"),), fallback="eu"),
        "eu": Pool("eu", (value("127.0.0.11"),), fallback="na"),
        "ca": Pool("ca", (value("127.0.0.51"),)),
        "na": Pool("na", (value("127.0.0.21"), value("127.0.0.22"))),
    },
    (
        Rule("lab", subnets=(net("192.0.2.200/29"), net("2001:db8:1ab::/48"))),
        Rule("de", geos=("EU-DE",)),
        Rule("eu", geos=("EU",)),
        Rule("ca", geos=("NA-US-CA",)),
        Rule("na"),
    ),
)


def ecs_client(text: str) -> Client:
    network = ipaddress.ip_network(text)
    return Client(network.version, int(network.network_address), network.prefixlen)


@pytest.mark.parametrize(
    ("client", "pool", "scope"),
    [
        # Subnet rule: inside holds for the rule's /29; outside, for as far as no rule splits.
        ("192.0.2.200/32", "lab", 29),
        ("192.0.2.203/32", "lab", 29),
        ("2001:db8:1ab:5::/64", "lab", 48),
        # Geo: the most specific network decides; the scope is the longest boundary examined.
        ("192.0.2.0/26", "de", 26),
        ("192.0.2.64/26", "eu", 26),  # the EU-DE /26 next door bounds it
        ("198.51.100.0/24", "ca", 24),
        ("2001:db8:ca::/48", "ca", 48),
        # Unknown location: the catch-all, with the prefix that keeps clear of every network.
        ("203.0.113.0/24", "na", 24),  # AS is located but no rule wants it
        ("100.64.0.0/10", "na", 1),  # no network in 0.0.0.0/1 at all
        ("10.0.0.0/8", "na", 1),
        ("2001:db8:ffff::/48", "na", 33),
    ],
)
def test_rules_match_in_order_with_the_scope_they_hold_for(
    client: str, pool: str, scope: int
) -> None:
    """The first matching rule wins; the scope is the prefix over which the choice cannot change."""
    assert match(GEO_RECORD, ecs_client(client), LOCATOR) == (pool, scope)


@settings(max_examples=300, deadline=None)
@given(
    address=st.integers(0, 2**32 - 1), prefix=st.integers(0, 32), other=st.integers(0, 2**32 - 1)
)
def test_scope_is_never_contradicted(address: int, prefix: int, other: int) -> None:
    """Every address inside the reported scope gets the same pool (the scope is safe to cache)."""
    address = address >> (32 - prefix) << (32 - prefix) if prefix else 0
    pool, scope = match(GEO_RECORD, Client(4, address, prefix), LOCATOR)
    keep = 32 - scope
    sibling = (address >> keep << keep) | (other & ((1 << keep) - 1)) if keep < 32 else other
    assert match(GEO_RECORD, Client(4, sibling, 32), LOCATOR)[0] == pool


@pytest.mark.parametrize(
    ("down", "expected"),
    [
        (set(), ("de", ("127.0.0.41",))),
        ({"127.0.0.41"}, ("eu", ("127.0.0.11",))),
        ({"127.0.0.41", "127.0.0.11"}, ("na", ("127.0.0.21", "127.0.0.22"))),
        ({"127.0.0.41", "127.0.0.11", "127.0.0.21"}, ("na", ("127.0.0.22",))),
        ({"127.0.0.41", "127.0.0.11", "127.0.0.21", "127.0.0.22"}, (DEFAULT_POOL, ())),
    ],
)
def test_fallback_chain_then_record_values(down: set[str], expected: tuple[str, object]) -> None:
    """Healthy values of the pool; none: the fallback chain; all down: the record's values."""
    pool, values = healthy(GEO_RECORD, "de", lambda t: t.address not in down)
    assert (pool, tuple(v.value for v in values)) == expected


def test_status_up_and_down_force_whatever_the_checks_say() -> None:
    """``up`` is served with every check failing, ``down`` never, ``obey`` follows the checks."""
    rec = record(
        {"p": Pool("p", (value("127.0.0.1", status=UP), value("127.0.0.2", status=DOWN)))},
        (Rule("p"),),
    )
    assert [v.value for v in healthy(rec, "p", lambda t: False)[1]] == ["127.0.0.1"]
    forced_down = record({"p": Pool("p", (value("127.0.0.2", status=DOWN),))}, (Rule("p"),))
    assert healthy(forced_down, "p", lambda t: True) == (DEFAULT_POOL, ())


def test_all_down_answers_every_record_value() -> None:
    """With the chain exhausted, the answer is the record's own values, all of them."""
    choice = make_choice(GEO_RECORD, DEFAULT_POOL, ())
    assert draw(choice, random.Random(1)) == ("127.0.0.99",)
    both = ("127.0.0.98", "127.0.0.99")
    rec = record({"p": Pool("p", (value("127.0.0.1"),))}, (Rule("p"),), values=both)
    assert make_choice(rec, DEFAULT_POOL, ()).fixed == both


pools_strategy = st.lists(
    st.tuples(st.integers(1, 100), st.sampled_from([UP, DOWN, OBEY]), st.booleans()),
    min_size=1,
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(chain=st.lists(pools_strategy, min_size=1, max_size=4), seed=st.integers(0, 2**32))
def test_answers_never_hold_a_down_value_while_the_chain_has_one_up(
    chain: list[list[tuple[int, str, bool]]], seed: int
) -> None:
    """Whatever the statuses and check results, an answer holds only values that are up, and
    comes from the first pool of the chain that has one up."""
    pools: dict[str, Pool] = {}
    up_addresses: set[str] = set()
    for i, spec in enumerate(chain):
        values = []
        for j, (weight, status, passes) in enumerate(spec):
            address = f"127.0.{i}.{j + 1}"
            values.append(value(address, weight, status))
            if status == UP or (status == OBEY and passes):
                up_addresses.add(address)
        fallback = f"p{i + 1}" if i + 1 < len(chain) else None
        pools[f"p{i}"] = Pool(f"p{i}", tuple(values), fallback)
    rec = record(pools, (Rule("p0"),), answers=1 + seed % 3)
    pool, values = healthy(rec, "p0", lambda t: t.address in up_addresses)
    answer = draw(make_choice(rec, pool, values), random.Random(seed))
    first_up = next(
        (name for name, p in pools.items() if any(v.value in up_addresses for v in p.values)),
        None,
    )
    if first_up is None:
        assert pool == DEFAULT_POOL and answer == rec.values
    else:
        assert pool == first_up
        assert answer and set(answer) <= up_addresses
        assert len(answer) == min(rec.answers, len(values))


def test_weights_converge_over_many_draws() -> None:
    """Non-sticky draws follow the weights: 1:2:7 comes out near 10%/20%/70%."""
    rec = record(
        {"p": Pool("p", (value("127.0.0.1", 1), value("127.0.0.2", 2), value("127.0.0.3", 7)))},
        (Rule("p"),),
    )
    choice = make_choice(rec, "p", rec.pools["p"].values)
    rnd = random.Random(7)
    counts = Counter(draw(choice, rnd)[0] for _ in range(20_000))
    shares = {v: counts[v] / 20_000 for v in counts}
    assert shares["127.0.0.1"] == pytest.approx(0.1, abs=0.015)
    assert shares["127.0.0.2"] == pytest.approx(0.2, abs=0.015)
    assert shares["127.0.0.3"] == pytest.approx(0.7, abs=0.015)


def test_multi_value_answers_are_distinct_and_weighted() -> None:
    """answers: 2 gives two distinct values; the heavy value is in most answers."""
    rec = record(
        {"p": Pool("p", tuple(value(f"127.0.0.{i}", w) for i, w in ((1, 1), (2, 1), (3, 20))))},
        (Rule("p"),),
        answers=2,
    )
    choice = make_choice(rec, "p", rec.pools["p"].values)
    rnd = random.Random(3)
    answers = [draw(choice, rnd) for _ in range(2000)]
    assert all(len(set(a)) == 2 for a in answers)
    assert sum("127.0.0.3" in a for a in answers) > 1800


def sticky_answers(values: list[tuple[str, int]], clients: list[bytes]) -> dict[bytes, str]:
    rec = record({"p": Pool("p", tuple(value(v, w) for v, w in values))}, (Rule("p"),))
    choice = make_choice(rec, "p", rec.pools["p"].values)
    return {c: sticky(choice, c)[0] for c in clients}


CLIENTS = [bytes((4, 24)) + i.to_bytes(4, "big") for i in range(0, 2000 * 256, 256)]


@settings(max_examples=40, deadline=None)
@given(
    weights=st.lists(st.integers(1, 100), min_size=2, max_size=6),
    gone=st.integers(0, 5),
)
def test_sticky_answers_move_only_the_clients_of_a_removed_value(
    weights: list[int], gone: int
) -> None:
    """Removing a value moves exactly its clients; added back (last in the list, not where it
    was) it takes back exactly those clients: answers follow the set of values, not its order."""
    values = [(f"127.0.0.{i + 1}", w) for i, w in enumerate(weights)]
    removed = values[gone % len(values)]
    before = sticky_answers(values, CLIENTS)
    rest = [v for v in values if v != removed]
    after = sticky_answers(rest, CLIENTS)
    moved = {c for c in CLIENTS if before[c] != after[c]}
    assert moved == {c for c in CLIENTS if before[c] == removed[0]}
    back = sticky_answers([*rest, removed], CLIENTS)
    assert {c for c in CLIENTS if back[c] != after[c]} == moved
    assert all(back[c] == removed[0] for c in moved)


STICKY_IN_A_FRESH_PROCESS = """
import json, sys
from anycastedge.gslb.select import Choice, sticky
values, weights, keys = json.loads(sys.stdin.read())
choice = Choice("p", tuple(values), tuple(weights), (), 1)
print(json.dumps([sticky(choice, bytes.fromhex(k))[0] for k in keys]))
"""


@pytest.mark.parametrize("hash_seed", ["0", "1"])
def test_sticky_answers_are_the_same_in_every_process(hash_seed: str) -> None:
    """Sticky answers depend on content only: another process (another POP, other hash
    randomization) gives every client network the same value as this one."""
    values, weights = ["127.0.0.1", "127.0.0.2", "127.0.0.3"], [1, 2, 3]
    keys = CLIENTS[:300]
    here = list(sticky_answers(list(zip(values, weights, strict=True)), keys).values())
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    run = subprocess.run(
        [sys.executable, "-c", STICKY_IN_A_FRESH_PROCESS],
        input=json.dumps([values, weights, [k.hex() for k in keys]]),
        capture_output=True, text=True, timeout=60, env=env, check=True,
    )  # fmt: skip
    assert json.loads(run.stdout) == here
    assert set(here) == set(values)  # the premise: every value wins some clients


def test_sticky_shares_follow_weights() -> None:
    """Rendezvous hashing with weights splits client networks roughly by weight."""
    answers = sticky_answers([("127.0.0.1", 1), ("127.0.0.2", 3)], CLIENTS)
    share = sum(a == "127.0.0.2" for a in answers.values()) / len(CLIENTS)
    assert share == pytest.approx(0.75, abs=0.04)


def test_sticky_key_truncates_to_the_sticky_prefix_and_the_source_prefix() -> None:
    """Clients in one /24 share a key; a /16 ECS source is keyed at /16, not /24."""
    rec = GEO_RECORD
    a = sticky_key(rec, Client(4, int(ipaddress.ip_address("192.0.2.7")), 32))
    b = sticky_key(rec, Client(4, int(ipaddress.ip_address("192.0.2.250")), 32))
    c = sticky_key(rec, Client(4, int(ipaddress.ip_address("192.0.3.1")), 32))
    assert a == b != c
    assert sticky_key(rec, ecs_client("192.0.0.0/16"))[1] == 16


def test_clients_from_ecs_and_source_address() -> None:
    """ECS option data and source addresses (v4-mapped on dual-stack sockets) become Clients."""
    assert client_from_ecs(bytes((0, 1, 24, 0, 192, 0, 2))) == ecs_client("192.0.2.0/24")
    assert client_from_ecs(bytes((0, 2, 0, 0))) == Client(6, 0, 0)
    assert client_from_host("::ffff:192.0.2.1") == Client(4, 0xC0000201, 32)
    assert client_from_host("2001:db8::1").prefix == 128
    assert expand("NA-US-CA") == ("NA-US-CA", "NA-US", "NA")


def test_decider_caches_until_health_changes() -> None:
    """Decisions are cached per client network; a health change is seen by the next query."""
    down: set[str] = set()
    decider = Decider(LOCATOR, lambda t: t.address not in down, random.Random(1))
    ecs = bytes((0, 1, 26, 0, 192, 0, 2, 0))  # 192.0.2.0/26: EU-DE
    assert decider.decide(GEO_RECORD, ecs, "127.0.0.1") == (("127.0.0.41",), "de", 26, True)
    down.add("127.0.0.41")
    assert decider.decide(GEO_RECORD, ecs, "127.0.0.1")[1] == "de"  # cached: not yet told
    decider.health_changed()
    assert decider.decide(GEO_RECORD, ecs, "127.0.0.1") == (("127.0.0.11",), "eu", 26, True)


def test_decider_uses_the_source_address_without_ecs_or_with_source_prefix_zero() -> None:
    """No ECS, or ECS /0 (RFC 7871: do not use my clients' address): the resolver's address."""
    decider = Decider(LOCATOR, lambda t: True, random.Random(1))
    assert decider.decide(GEO_RECORD, None, "198.51.100.9")[1] == "ca"
    zero = bytes((0, 1, 0, 0))
    selection, pool, scope, _ = decider.decide(GEO_RECORD, zero, "198.51.100.9")
    assert (pool, scope) == ("ca", 0)


def test_non_sticky_weighted_answers_are_not_reusable() -> None:
    """A weighted draw is per query (not cacheable); one-value pools and sticky answers are."""
    decider = Decider(LOCATOR, lambda t: True, random.Random(1))
    ecs = bytes((0, 1, 24, 0, 10, 0, 0))
    assert decider.decide(GEO_RECORD, ecs, "x")[3] is False  # na: two values, one answered
    sticky_record = record(GEO_RECORD.pools, GEO_RECORD.rules, is_sticky=True)
    selection, pool, scope, fixed = decider.decide(sticky_record, ecs, "x")
    assert fixed and pool == "na" and scope == 24  # the sticky /24 is part of the scope


def test_sticky_prefix_widens_the_scope_only_when_there_is_a_choice() -> None:
    """Sticky answers hold per sticky network, but a one-value pool does not depend on it."""
    sticky_record = record(GEO_RECORD.pools, GEO_RECORD.rules, is_sticky=True)
    decider = Decider(LOCATOR, lambda t: True, random.Random(1))
    na = bytes((0, 1, 28, 0, 10, 0, 0, 16))  # 10.0.0.16/28: pool na, two values, rules say /1
    assert decider.decide(sticky_record, na, "x")[1:] == ("na", 24, True)
    ca = bytes((0, 2, 64, 0)) + bytes.fromhex("20010db800ca0000")  # in NA-US-CA's /48: one value
    assert decider.decide(sticky_record, ca, "x")[1:] == ("ca", 48, True)


@settings(max_examples=300, deadline=None)
@given(
    six=st.booleans(),
    address=st.binary(min_size=16, max_size=16),
    length=st.integers(0, 128),
    other=st.binary(min_size=16, max_size=16),
    shared=st.integers(0, 128),
)
def test_a_region_holds_for_every_address_of_its_prefix_and_no_other(
    six: bool, address: bytes, length: int, other: bytes, shared: int
) -> None:
    """A region /L answers for an address iff it shares the region's first L bits."""
    width = 16 if six else 4
    bits, length, shared = 8 * width, min(length, 8 * width), min(shared, 8 * width)
    address, other = address[:width], other[:width]
    # ``other`` keeps the first ``shared`` bits of ``address``: near misses as well as hits.
    keep = ((1 << bits) - 1) ^ ((1 << (bits - shared)) - 1)
    other_value = (int.from_bytes(address, "big") & keep) | (int.from_bytes(other, "big") & ~keep)
    other = other_value.to_bytes(width, "big")
    regions = Regions()
    regions.add(address, ("pool", length))
    assert regions.get(address) == ("pool", length)
    inside = (int.from_bytes(address, "big") ^ other_value) >> (bits - length) == 0
    assert regions.get(other) == (("pool", length) if inside else None)


def ecs_option(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bytes:
    """ECS option data as a resolver sends it: scope 0, the octets the source prefix needs."""
    octets = (network.prefixlen + 7) // 8
    family = 1 if network.version == 4 else 2
    return bytes((0, family, network.prefixlen, 0)) + network.network_address.packed[:octets]


@st.composite
def client_networks(draw: st.DrawFn) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """Client networks of any length: anywhere, or next to a network the rules or geos name."""
    six = draw(st.booleans())
    bits = 128 if six else 32
    if draw(st.booleans()):
        near = ("2001:db8:1ab::", "2001:db8:ca::") if six else ("192.0.2.200", "198.51.100.0")
        base = int(ipaddress.ip_address(draw(st.sampled_from(near))))
        address = base ^ draw(st.integers(0, 2 ** (bits - 20) - 1))  # same first 20 bits
    else:
        address = draw(st.integers(0, 2**bits - 1))
    prefix = draw(st.integers(1, bits))
    network = ipaddress.IPv6Network if six else ipaddress.IPv4Network
    return network((address, prefix), strict=False)


@settings(max_examples=150, deadline=None)
@given(
    networks=st.lists(client_networks(), min_size=1, max_size=30),
    is_sticky=st.booleans(),
    prefixes=st.tuples(st.sampled_from([0, 20, 24, 32]), st.sampled_from([0, 52, 56, 128])),
    limit=st.sampled_from([1, 3, 100_000]),
    down=st.sets(st.sampled_from(["127.0.0.41", "127.0.0.11", "127.0.0.21", "127.0.0.22"])),
)
def test_decisions_for_new_client_networks_are_the_rules_decisions(
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    is_sticky: bool,
    prefixes: tuple[int, int],
    limit: int,
    down: set[str],
) -> None:
    """Whatever networks came before (regions learned, tables reset at ``limit``), a client
    network gets the pool ``match`` picks, the scope it holds for (sticky networks included,
    never past the source prefix), and the sticky answer of its network."""
    rec = dataclasses.replace(
        record(GEO_RECORD.pools, GEO_RECORD.rules, is_sticky=is_sticky),
        sticky_prefix=StickyPrefix(*prefixes),
    )
    serving = lambda t: t.address not in down  # noqa: E731
    decider = Decider(LOCATOR, serving, random.Random(1), limit=limit)
    for network in networks:
        option = ecs_option(network)
        client = client_from_ecs(option)
        pool, scope = match(rec, client, LOCATOR)
        choice = make_choice(rec, *healthy(rec, pool, serving))
        if choice.fixed is None and is_sticky:
            key = sticky_key(rec, client)
            scope = max(scope, key[1])
            expected: tuple[str, ...] | None = sticky(choice, key)
        else:
            expected = choice.fixed  # None: a weighted draw
        selection, answered, got_scope, reusable = decider.decide(rec, option, "x")
        assert (answered, got_scope) == (choice.pool, min(scope, network.prefixlen)), network
        assert reusable == (expected is not None)
        if expected is not None:
            assert selection == expected
        else:
            assert len(selection) == 1 and selection[0] in choice.values
