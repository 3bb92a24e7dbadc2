"""A backend's pool: health, passive ejection, slow start, and state kept across reloads."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from anycastedge.forward.model import Backend, Ejection, Endpoint
from anycastedge.forward.pool import Pool
from anycastedge.health.check import HealthCheck


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def backend(n: int = 4, **kwargs: object) -> Backend:
    endpoints = tuple(Endpoint("127.0.0.1", 8000 + i) for i in range(n))
    return Backend("web", endpoints, **kwargs)  # type: ignore[arg-type]


def up_pool(b: Backend, clock: Clock) -> Pool:
    pool = Pool.build(b, clock)
    for i in range(len(b.endpoints)):
        pool.check_result(i, True, True)
    return pool


def test_nothing_is_usable_before_its_first_passing_check() -> None:
    """Fail closed: an endpoint never checked takes no traffic; a passing check makes it usable."""
    clock = Clock()
    pool = Pool.build(backend(2), clock)
    assert pool.usable() == () and pool.pick(b"\x7f\0\0\1") is None and not pool.any_up()
    pool.check_result(1, True, True)
    assert pool.usable() == (1,) and pool.pick(b"\x7f\0\0\1") == 1
    pool.check_result(1, False, False)
    assert pool.usable() == ()


def test_consecutive_connect_failures_eject_for_a_growing_capped_time() -> None:
    """After `consecutive_failures` in a row the endpoint is out for base_time x ejections,
    capped at max_time; a success in between resets the count."""
    clock = Clock()
    pool = up_pool(backend(4, ejection=Ejection(3, base_time=10.0, max_time=25.0)), clock)
    pool.connect_failed(0)
    pool.connect_failed(0)
    pool.connected(0, 0.001)
    pool.connect_failed(0)
    pool.connect_failed(0)
    assert 0 in pool.usable()
    pool.connect_failed(0)
    assert 0 not in pool.usable() and pool.is_ejected(0)
    clock.now += 10.0
    assert 0 in pool.usable()  # back after base_time
    for _ in range(3):
        pool.connect_failed(0)
    clock.now += 19.9
    assert 0 not in pool.usable()  # second ejection: 2 x 10 s
    clock.now += 0.2
    assert 0 in pool.usable()
    for _ in range(3):
        pool.connect_failed(0)
    clock.now += 24.9
    assert 0 not in pool.usable()  # third: 30 s, capped at 25
    clock.now += 0.2
    assert 0 in pool.usable()
    assert pool.stats[0].ejections == 3


def test_a_passing_active_check_brings_an_ejected_endpoint_back() -> None:
    clock = Clock()
    pool = up_pool(backend(4, ejection=Ejection(1)), clock)
    pool.connect_failed(2)
    assert 2 not in pool.usable()
    pool.check_result(2, True, True)
    assert 2 in pool.usable() and not pool.is_ejected(2)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 12),
    percent=st.integers(0, 100),
    failing=st.lists(st.integers(0, 11), max_size=40),
)
def test_never_more_than_max_percent_ejected(n: int, percent: int, failing: list[int]) -> None:
    """Whatever fails, ejected endpoints never exceed max_percent of the backend."""
    clock = Clock()
    pool = up_pool(backend(n, ejection=Ejection(1, max_percent=percent)), clock)
    for index in failing:
        pool.connect_failed(index % n)
        ejected = sum(pool.is_ejected(i) for i in range(n))
        assert ejected * 100 <= percent * n


def test_slow_start_ramps_the_weight_of_a_returning_endpoint() -> None:
    """An endpoint back after being down starts at a tenth of its weight and reaches it after
    slow_start seconds; the first time an endpoint comes up there is no ramp."""
    clock = Clock()
    pool = up_pool(backend(2, slow_start=20.0), clock)
    assert pool.weight == [1.0, 1.0]
    pool.check_result(0, False, False)
    clock.now += 5
    pool.check_result(0, True, True)
    assert pool.weight[0] == 0.1
    clock.now += 10
    assert pool.weight[0] == 0.5
    clock.now += 10
    assert pool.weight[0] == 1.0


def test_a_rebuilt_pool_keeps_the_state_of_endpoints_that_stay() -> None:
    """Reload: an endpoint kept (even with a new weight) keeps health and active connections;
    a new one starts unchecked."""
    clock = Clock()
    first = up_pool(backend(2), clock)
    first.stats[1].active = 5
    changed = Backend(
        "web", (Endpoint("127.0.0.1", 8001, weight=3), Endpoint("127.0.0.1", 9000))
    )
    second = Pool.build(changed, clock, first)
    assert second.stats[0] is first.stats[1] and second.stats[0].active == 5
    assert second.stats[0].endpoint.weight == 3
    assert second.usable() == (0,)  # 9000 is not checked yet


def test_weight_zero_drains_an_endpoint() -> None:
    """A weight of 0 keeps an endpoint checked but gives it no new traffic."""
    clock = Clock()
    b = Backend("web", (Endpoint("127.0.0.1", 1, 0), Endpoint("127.0.0.1", 2, 1)))
    pool = up_pool(b, clock)
    assert pool.usable() == (1,)


def test_consecutive_5xx_eject_and_only_an_http_check_ends_it_early() -> None:
    """A burst of 5xx ejects (any other status resets the count); a passing TCP check says
    nothing about 5xx, so only time (or an HTTP check) brings the endpoint back."""
    clock = Clock()
    rule = Ejection(consecutive_5xx=3, base_time=10.0)
    pool = up_pool(backend(4, ejection=rule), clock)
    for status in (500, 503, 200, 502, 500):
        pool.responded(1, status)
    assert 1 in pool.usable()  # the 200 reset the count
    pool.responded(1, 504)
    assert 1 not in pool.usable() and pool.stats[1].responses_5xx == 5
    pool.check_result(1, True, True)  # the default check: a TCP connect
    assert pool.is_ejected(1)
    clock.now += 10.0
    assert 1 in pool.usable()

    http_check = Backend(
        "web",
        backend(4).endpoints,
        ejection=rule,
        healthcheck=HealthCheck(protocol="HTTP", interval=2.0, timeout=1.0),
    )
    pool = up_pool(http_check, clock)
    for _ in range(3):
        pool.responded(2, 500)
    assert pool.is_ejected(2)
    pool.check_result(2, True, True)
    assert not pool.is_ejected(2)
    # Connect-failure ejections end at any passing check, as before.
    pool = up_pool(backend(4, ejection=Ejection(consecutive_failures=1)), clock)
    pool.connect_failed(0)
    assert pool.is_ejected(0)
    pool.check_result(0, True, True)
    assert not pool.is_ejected(0)
