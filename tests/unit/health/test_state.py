"""The health state machine: rise and fall as ExaBGP's healthcheck counts them (no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anycastedge.health.state import Health, State, transition

N, R, U, F, D = State.INIT, State.RISING, State.UP, State.FALLING, State.DOWN


@pytest.mark.parametrize(
    ("state", "count", "ok", "rise", "fall", "expected"),
    [
        (N, 0, True, 3, 2, Health(R, 1)),
        (N, 0, True, 1, 2, Health(U, 0)),
        (N, 0, False, 3, 2, Health(D, 0)),
        (R, 1, True, 3, 2, Health(R, 2)),
        (R, 2, True, 3, 2, Health(U, 0)),
        (R, 2, False, 3, 2, Health(D, 0)),
        (U, 0, True, 3, 2, Health(U, 0)),
        (U, 0, False, 3, 2, Health(F, 1)),
        (U, 0, False, 3, 1, Health(D, 0)),
        (F, 1, False, 3, 2, Health(D, 0)),
        (F, 1, False, 3, 3, Health(F, 2)),
        (F, 1, True, 3, 2, Health(U, 0)),
        (D, 0, False, 3, 2, Health(D, 0)),
        (D, 0, True, 3, 2, Health(R, 1)),
        (State.DISABLED, 0, True, 3, 2, Health(State.DISABLED, 0)),
        (State.EXIT, 0, False, 3, 2, Health(State.EXIT, 0)),
    ],
)
def test_transition_table(
    state: State, count: int, ok: bool, rise: int, fall: int, expected: Health
) -> None:
    """Each (state, result) moves as ExaBGP's healthcheck does, counting rise and fall."""
    assert transition(Health(state, count), ok, rise, fall) == expected


@given(st.lists(st.booleans(), max_size=60), st.integers(1, 6), st.integers(1, 6))
def test_up_only_after_rise_consecutive_passes(results: list[bool], rise: int, fall: int) -> None:
    """Serving starts only after ``rise`` passes in a row, ends only after ``fall`` failures."""
    health = Health()
    streak_ok = streak_fail = 0
    for ok in results:
        was_serving = health.state.serving
        health = transition(health, ok, rise, fall)
        streak_ok, streak_fail = (streak_ok + 1, 0) if ok else (0, streak_fail + 1)
        if health.state.serving and not was_serving:
            assert streak_ok >= rise
        if was_serving and not health.state.serving:
            assert streak_fail >= fall
