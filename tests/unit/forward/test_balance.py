"""The balancers: distributions, bounds on the usable set, hashing stability, Maglev fairness."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anycastedge.forward import balance
from anycastedge.forward.balance import Load, is_prime, maglev_table, make_balancer
from anycastedge.forward.model import BALANCE_ALGORITHMS, MAGLEV_TABLE_SIZE, Backend, Endpoint


def backend(weights: Sequence[int], algorithm: str, size: int = MAGLEV_TABLE_SIZE) -> Backend:
    endpoints = tuple(Endpoint(f"10.0.0.{i + 1}", 8000 + i, w) for i, w in enumerate(weights))
    return Backend("b", endpoints, balance=algorithm, maglev_table_size=size)


def keys(count: int, seed: int = 7) -> list[bytes]:
    """Distinct packed IPv4 client addresses."""
    rnd = random.Random(seed)
    return [k.to_bytes(4, "big") for k in rnd.sample(range(1 << 32), count)]


# -- every algorithm ---------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", BALANCE_ALGORITHMS)
def test_empty_or_drained_usable_gives_none(algorithm: str) -> None:
    b = backend([1, 2, 3], algorithm, size=251)
    chooser = make_balancer(b, random.Random(1))
    load = Load.idle(b)
    assert chooser.pick(b"\x01\x02\x03\x04", (), load) is None
    drained = Load([0, 0, 0], [None, None, None], [0.0, 0.0, 0.0])
    assert chooser.pick(b"\x01\x02\x03\x04", (0, 1, 2), drained) is None
    assert chooser.pick(b"\x01\x02\x03\x04", [1], load) == 1


def test_unknown_algorithm_and_bad_maglev_size_refused() -> None:
    with pytest.raises(ValueError, match="unknown balance algorithm"):
        make_balancer(backend([1], "fastest"))
    with pytest.raises(ValueError, match="not a prime"):
        make_balancer(backend([1, 1], "maglev", size=65536))
    with pytest.raises(ValueError, match="below"):
        make_balancer(backend([1, 1, 1], "maglev", size=2))


def test_is_prime() -> None:
    small = [n for n in range(60) if is_prime(n)]
    assert small == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59]
    assert is_prime(MAGLEV_TABLE_SIZE) and not is_prime(65535) and not is_prime(251 * 257)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[int], list[float], list[int], list[tuple[int, ...]]]:
    """Configured weights, effective weights (0 where drained), active counts, usable sets."""
    n = draw(st.integers(1, 10))
    configured = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    factors = draw(st.lists(st.sampled_from([0.0, 0.25, 1.0]), min_size=n, max_size=n))
    effective = [w * f for w, f in zip(configured, factors, strict=True)]
    active = draw(st.lists(st.integers(0, 20), min_size=n, max_size=n))
    sets = draw(
        st.lists(
            st.sets(st.integers(0, n - 1)).map(lambda s: tuple(sorted(s))), min_size=1, max_size=6
        )
    )
    return configured, effective, active, sets


@settings(max_examples=60, deadline=None)
@given(
    algorithm=st.sampled_from(BALANCE_ALGORITHMS),
    scenario=scenarios(),
    times=st.lists(st.none() | st.floats(0.0001, 1.0), min_size=10, max_size=10),
    seed=st.integers(0, 2**32),
)
def test_picks_only_usable_endpoints_with_weight(
    algorithm: str,
    scenario: tuple[list[int], list[float], list[int], list[tuple[int, ...]]],
    times: list[float | None],
    seed: int,
) -> None:
    configured, effective, active, sets = scenario
    b = backend(configured, algorithm, size=251)
    chooser = make_balancer(b, random.Random(seed))
    load = Load(active, times[: len(configured)], effective)
    rnd = random.Random(seed)
    for usable in sets:
        for _ in range(5):
            key = rnd.getrandbits(32).to_bytes(4, "big")
            chosen = chooser.pick(key, usable, load)
            if any(effective[i] > 0 for i in usable):
                assert chosen in usable
                assert effective[chosen] > 0
            else:
                assert chosen is None


# -- round_robin -------------------------------------------------------------------------------


def test_round_robin_takes_turns_ignoring_weights() -> None:
    b = backend([1, 5, 2, 9], "round_robin")
    chooser = make_balancer(b)
    load = Load.idle(b)
    picks = [chooser.pick(b"", (0, 1, 2, 3), load) for _ in range(40)]
    assert picks == [0, 1, 2, 3] * 10


def test_round_robin_cursor_survives_a_change_of_set() -> None:
    b = backend([1, 1, 1, 1], "round_robin")
    chooser = make_balancer(b)
    load = Load.idle(b)
    assert [chooser.pick(b"", (0, 1, 2, 3), load) for _ in range(2)] == [0, 1]
    # 1 leaves, 2 is next in rotation; then 1 returns after 3 and takes its turn.
    assert [chooser.pick(b"", (0, 2, 3), load) for _ in range(2)] == [2, 3]
    assert [chooser.pick(b"", (0, 1, 2, 3), load) for _ in range(5)] == [0, 1, 2, 3, 0]
    drained = Load([0] * 4, [None] * 4, [1.0, 0.0, 1.0, 1.0])
    assert [chooser.pick(b"", (0, 1, 2, 3), drained) for _ in range(3)] == [2, 3, 0]


# -- weighted ----------------------------------------------------------------------------------


def test_weighted_interleaves_as_nginx() -> None:
    # nginx's own example (ngx_http_upstream_round_robin.c): weights 5, 1, 1 give a a b a c a a.
    b = backend([5, 1, 1], "weighted")
    chooser = make_balancer(b)
    load = Load.idle(b)
    picks = [chooser.pick(b"", (0, 1, 2), load) for _ in range(14)]
    assert picks == [0, 0, 1, 0, 2, 0, 0] * 2


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(1, 12), min_size=1, max_size=8), st.integers(1, 3))
def test_weighted_is_exact_over_each_cycle(weights: list[int], cycles: int) -> None:
    b = backend(weights, "weighted")
    chooser = make_balancer(b)
    load = Load.idle(b)
    usable = tuple(range(len(weights)))
    total = sum(weights)
    for _ in range(cycles):
        counts = Counter(chooser.pick(b"", usable, load) for _ in range(total))
        assert counts == {i: w for i, w in enumerate(weights)}
    # Smooth: no endpoint runs a whole pick ahead of its share at any point (credits > -total).
    seen: Counter[int | None] = Counter()
    for t in range(1, total + 1):
        seen[chooser.pick(b"", usable, load)] += 1
        for i, w in enumerate(weights):
            assert seen[i] - Fraction(t * w, total) < 1


def test_weighted_restarts_credits_when_the_set_changes() -> None:
    b = backend([3, 1, 2], "weighted")
    chooser = make_balancer(b)
    load = Load.idle(b)
    chooser.pick(b"", (0, 1, 2), load)
    chooser.pick(b"", (0, 1, 2), load)
    counts = Counter(chooser.pick(b"", [0, 2], load) for _ in range(5))  # a list works too
    assert counts == {0: 3, 2: 2}


# -- least_conn --------------------------------------------------------------------------------


def test_least_conn_ties_rotate_and_load_wins() -> None:
    b = backend([1, 1, 1], "least_conn")
    chooser = make_balancer(b)
    idle = Load.idle(b)
    assert [chooser.pick(b"", (0, 1, 2), idle) for _ in range(6)] == [0, 1, 2, 0, 1, 2]
    busy = Load([4, 2, 3], [None] * 3, [1.0, 1.0, 1.0])
    assert chooser.pick(b"", (0, 1, 2), busy) == 1
    weighted = Load([4, 2, 3], [None] * 3, [4.0, 1.0, 1.0])  # 1.0 per weight beats 2 and 3
    assert chooser.pick(b"", (0, 1, 2), weighted) == 0


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(1, 8), min_size=1, max_size=8), st.integers(0, 200))
def test_least_conn_fills_in_proportion_to_weight(weights: list[int], picks: int) -> None:
    """Connections that stay open: every endpoint's last connection was taken when its
    active/weight was the lowest, so (a_i - 1)/w_i <= a_j/w_j for all i, j with a_i > 0."""
    b = backend(weights, "least_conn")
    chooser = make_balancer(b)
    load = Load.idle(b)
    active = load.active
    assert isinstance(active, list)
    usable = tuple(range(len(weights)))
    for _ in range(picks):
        chosen = chooser.pick(b"", usable, load)
        assert chosen is not None
        active[chosen] += 1
    assert sum(active) == picks
    for i, wi in enumerate(weights):
        for j, wj in enumerate(weights):
            if active[i]:
                assert Fraction(active[i] - 1, wi) <= Fraction(active[j], wj)


# -- p2c ---------------------------------------------------------------------------------------


def test_p2c_two_distinct_choices_so_the_busier_of_two_never_wins() -> None:
    b = backend([1, 1], "p2c")
    chooser = make_balancer(b, random.Random(3))
    load = Load([0, 5], [None, None], [1.0, 1.0])
    assert {chooser.pick(b"", (0, 1), load) for _ in range(500)} == {0}
    b = backend([1, 1, 1, 1], "p2c")
    chooser = make_balancer(b, random.Random(4))
    load = Load([3, 1, 9, 2], [None] * 4, [1.0] * 4)
    counts = Counter(chooser.pick(b"", (0, 1, 2, 3), load) for _ in range(20_000))
    assert 2 not in counts  # the busiest loses every pair it is in
    # The least loaded wins whenever drawn: in 3 of the 6 pairs. Binomial sd 0.0035.
    assert abs(counts[1] / 20_000 - 0.5) < 0.02
    assert abs(counts[3] / 20_000 - 2 / 6) < 0.02  # wins against 0 and 2


def test_p2c_draws_in_proportion_to_weight() -> None:
    # Idle: the first draw wins every tie, and it is drawn in proportion to weight.
    b = backend([1, 1, 2], "p2c")
    chooser = make_balancer(b, random.Random(5))
    load = Load.idle(b)
    n = 40_000
    counts = Counter(chooser.pick(b"", (0, 1, 2), load) for _ in range(n))
    for i, share in enumerate((0.25, 0.25, 0.5)):
        assert abs(counts[i] / n - share) < 0.015
    # Equal weights, one drained: the others share evenly.
    drained = Load([0, 0, 0], [None] * 3, [1.0, 0.0, 1.0])
    counts = Counter(chooser.pick(b"", (0, 1, 2), drained) for _ in range(n))
    assert set(counts) == {0, 2} and abs(counts[0] / n - 0.5) < 0.015


def test_p2c_is_reproducible_with_a_seed() -> None:
    b = backend([1, 2, 3, 4], "p2c")
    load = Load([1, 2, 3, 4], [None] * 4, [1.0, 2.0, 3.0, 4.0])
    runs = []
    for _ in range(2):
        chooser = make_balancer(b, random.Random(9))
        runs.append([chooser.pick(b"", (0, 1, 2, 3), load) for _ in range(50)])
    assert runs[0] == runs[1] and len(set(runs[0])) > 1


# -- least_time --------------------------------------------------------------------------------


def test_least_time_prefers_unsampled_then_fastest() -> None:
    b = backend([1, 1, 1, 1], "least_time")
    chooser = make_balancer(b)
    load = Load([0, 0, 0, 0], [0.010, None, 0.002, None], [1.0] * 4)
    # The two unsampled endpoints take turns first.
    assert [chooser.pick(b"", (0, 1, 2, 3), load) for _ in range(4)] == [1, 3, 1, 3]
    sampled = Load([0, 0, 0, 0], [0.010, 0.004, 0.002, 0.003], [1.0] * 4)
    assert chooser.pick(b"", (0, 1, 2, 3), sampled) == 2
    assert chooser.pick(b"", (0, 1, 3), sampled) == 3
    # Among the unsampled, the fewest active per weight.
    load = Load([0, 2, 0, 1], [0.010, None, 0.002, None], [1.0] * 4)
    assert chooser.pick(b"", (0, 1, 2, 3), load) == 3


def test_least_time_weighs_time_by_load_and_weight() -> None:
    b = backend([1, 1, 1], "least_time")
    chooser = make_balancer(b)
    # 2 ms with 4 open (10 ms * 1) loses to 3 ms with none open.
    load = Load([4, 0, 0], [0.002, 0.003, 0.004], [1.0, 1.0, 1.0])
    assert chooser.pick(b"", (0, 1, 2), load) == 1
    # Weight 4 makes 10 ms the cheapest: 2.5 ms per unit of weight.
    load = Load([0, 0, 0], [0.010, 0.003, 0.004], [4.0, 1.0, 1.0])
    assert chooser.pick(b"", (0, 1, 2), load) == 0
    # Equal figures rotate.
    load = Load([0, 0, 0], [0.003, 0.003, 0.003], [1.0, 1.0, 1.0])
    assert [chooser.pick(b"", (0, 1, 2), load) for _ in range(3)] == [1, 2, 0]


# -- source_hash -------------------------------------------------------------------------------


def test_source_hash_is_stable_and_removal_moves_only_that_endpoints_clients() -> None:
    n = 10
    b = backend([1] * n, "source_hash")
    load = Load.idle(b)
    clients = keys(5000)
    everyone = tuple(range(n))
    before = {k: make_balancer(b).pick(k, everyone, load) for k in clients[:50]}
    chooser = make_balancer(b)
    before.update((k, chooser.pick(k, everyone, load)) for k in clients)
    assert all(chooser.pick(k, everyone, load) == before[k] for k in clients)
    assert min(Counter(before.values()).values()) > 350  # ~500 each
    for removed in range(n):
        rest = tuple(i for i in everyone if i != removed)
        for k in clients:
            after = chooser.pick(k, rest, load)
            if before[k] == removed:
                assert after != removed
            else:
                assert after == before[k]  # zero other clients move


def test_source_hash_shares_by_weight_and_raising_a_weight_only_draws_clients() -> None:
    weights = [1, 2, 3, 4]
    b = backend(weights, "source_hash")
    chooser = make_balancer(b)
    clients = keys(40_000, seed=11)
    usable = (0, 1, 2, 3)
    load = Load.idle(b)
    before = {k: chooser.pick(k, usable, load) for k in clients}
    counts = Counter(before.values())
    for i, w in enumerate(weights):
        assert abs(counts[i] / len(clients) - w / 10) < 0.01
    # Slow start ramping endpoint 0 from 1 to 3: clients only move to it.
    ramped = Load([0] * 4, [None] * 4, [3.0, 2.0, 3.0, 4.0])
    for k in clients:
        after = chooser.pick(k, usable, ramped)
        assert after == before[k] or after == 0


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=4, max_size=16), st.sets(st.integers(0, 7), min_size=1))
def test_source_hash_key_stable(key: bytes, members: set[int]) -> None:
    b = backend([1, 2, 1, 3, 1, 1, 2, 1], "source_hash")
    usable = tuple(sorted(members))
    load = Load.idle(b)
    first = make_balancer(b).pick(key, usable, load)
    second = make_balancer(b)
    assert all(second.pick(key, usable, load) == first for _ in range(3))


# -- maglev ------------------------------------------------------------------------------------

# Removing one of 10 endpoints (M=65537) reassigns some of the other endpoints' slots too (Maglev
# trades perfect stability for even shares). Measured over 40 random 10-endpoint configurations,
# equal and random weights: mean 0.2-0.3%, worst 1.7%. The tests hold every case under 2% and the
# mean of the sampled configurations under 0.6%.
MAGLEV_DISRUPTION_BOUND = 0.02
MAGLEV_MEAN_DISRUPTION_BOUND = 0.006


def moved_share(
    names: list[str], weights: list[int], removed: int, size: int = MAGLEV_TABLE_SIZE
) -> float:
    """The share of slots of endpoints other than ``removed`` that change owner without it."""
    full = maglev_table(names, weights, size)
    rest_names = names[:removed] + names[removed + 1 :]
    rest = maglev_table(rest_names, weights[:removed] + weights[removed + 1 :], size)
    others = [s for s in range(size) if full[s] != removed]
    changed = sum(1 for s in others if names[full[s]] != rest_names[rest[s]])
    return changed / len(others)


@pytest.mark.parametrize("removed", range(10))
def test_maglev_removal_disrupts_few_other_slots_equal_weights(removed: int) -> None:
    names = [f"10.0.0.{i + 1}:{8000 + i}" for i in range(10)]
    assert moved_share(names, [1] * 10, removed) < MAGLEV_DISRUPTION_BOUND


def test_maglev_removal_disrupts_few_other_slots_random_configurations() -> None:
    rnd = random.Random(2016)
    shares = []
    for trial in range(12):
        names = [
            f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}:"
            f"{rnd.randrange(1, 65536)}"
            for _ in range(10)
        ]
        weights = [rnd.randint(1, 256) for _ in range(10)] if trial % 2 else [1] * 10
        shares.append(moved_share(names, weights, rnd.randrange(10)))
    assert max(shares) < MAGLEV_DISRUPTION_BOUND
    assert sum(shares) / len(shares) < MAGLEV_MEAN_DISRUPTION_BOUND


def test_maglev_balancer_is_stable_and_moves_only_the_removed_endpoints_clients_mostly() -> None:
    n = 10
    b = backend([1] * n, "maglev")
    chooser = make_balancer(b)
    load = Load.idle(b)
    clients = keys(5000)
    everyone = tuple(range(n))
    before = {k: chooser.pick(k, everyone, load) for k in clients}
    again = make_balancer(b)  # a new balancer (as after a restart) builds the same table
    assert all(again.pick(k, everyone, load) == before[k] for k in clients)
    assert min(Counter(before.values()).values()) > 350
    rest = everyone[1:]
    after = {k: chooser.pick(k, rest, load) for k in clients}
    assert all(after[k] != 0 for k in clients)
    others = [k for k in clients if before[k] != 0]
    moved = sum(1 for k in others if after[k] != before[k])
    assert moved / len(others) < MAGLEV_DISRUPTION_BOUND
    # Back to the full set: every client returns to where it was.
    assert all(chooser.pick(k, everyone, load) == before[k] for k in clients)


def test_maglev_runtime_drain_moves_only_the_drained_endpoints_clients() -> None:
    n = 6
    b = backend([1] * n, "maglev", size=4099)
    chooser = make_balancer(b)
    usable = tuple(range(n))
    load = Load.idle(b)
    clients = keys(3000)
    before = {k: chooser.pick(k, usable, load) for k in clients}
    drained = Load([0] * n, [None] * n, [1.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    for k in clients:
        after = chooser.pick(k, usable, drained)
        assert after != 2
        if before[k] != 2:
            assert after == before[k]
    # A slow start (effective weight below configured) does not reshuffle the table.
    ramping = Load([0] * n, [None] * n, [1.0, 1.0, 0.1, 1.0, 1.0, 1.0])
    assert all(chooser.pick(k, usable, ramping) == before[k] for k in clients)


def test_maglev_tables_are_cached_per_usable_set(monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[int] = []
    real = balance.maglev_table

    def counting(names: Sequence[str], weights: Sequence[int], size: int = 0) -> object:
        builds.append(len(names))
        return real(names, weights, size)

    monkeypatch.setattr(balance, "maglev_table", counting)
    b = backend([1, 1, 1, 1], "maglev", size=1009)
    chooser = make_balancer(b)
    load = Load.idle(b)
    for k in keys(200):
        chooser.pick(k, (0, 1, 2, 3), load)
    assert builds == [4]
    for k in keys(200):
        chooser.pick(k, [0, 1, 3], load)  # a list equal each time: no rebuild either
    assert builds == [4, 3]
    for k in keys(200):
        chooser.pick(k, (0, 1, 2, 3), load)
    assert builds == [4, 3]  # the first table was kept


@settings(max_examples=40, deadline=None)
@given(
    weights=st.lists(st.integers(1, 256), min_size=1, max_size=24),
    size=st.sampled_from([251, 1009, 4099, 65537]),
)
def test_maglev_fill_is_within_one_slot_of_each_weights_share(
    weights: list[int], size: int
) -> None:
    """The bound: |slots_i - M * w_i / sum(w)| < 1 for every endpoint, and every slot owned."""
    names = [f"192.0.2.{i + 1}:53" for i in range(len(weights))]
    table = maglev_table(names, weights, size)
    assert len(table) == size
    counts = Counter(table)
    assert set(counts) <= set(range(len(weights)))
    total = sum(weights)
    for i, w in enumerate(weights):
        assert abs(counts[i] - Fraction(size * w, total)) < 1


def test_maglev_weighted_balancer_shares_clients_by_weight() -> None:
    weights = [1, 2, 3, 4]
    b = backend(weights, "maglev")
    chooser = make_balancer(b)
    load = Load.idle(b)
    clients = keys(40_000, seed=3)
    counts = Counter(chooser.pick(k, (0, 1, 2, 3), load) for k in clients)
    for i, w in enumerate(weights):
        assert abs(counts[i] / len(clients) - w / 10) < 0.01
    drained_by_config = backend([1, 0, 1, 1], "maglev")
    chooser = make_balancer(drained_by_config)
    assert 1 not in {chooser.pick(k, (0, 1, 2, 3), load) for k in clients[:2000]}
