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


def reference_serving(results: list[bool], rise: int, fall: int) -> list[bool]:
    """Whether the service counts as serving after each result, by streak counting alone.

    An independent model of the rule (not the state machine): not serving, ``rise`` passes in
    a row start serving; serving, ``fall`` failures in a row stop it. It starts not serving.
    """
    serving, streak_ok, streak_fail, out = False, 0, 0, []
    for ok in results:
        streak_ok, streak_fail = (streak_ok + 1, 0) if ok else (0, streak_fail + 1)
        if not serving and streak_ok >= rise:
            serving = True
        elif serving and streak_fail >= fall:
            serving = False
        out.append(serving)
    return out


@given(st.lists(st.booleans(), max_size=60), st.integers(1, 6), st.integers(1, 6))
def test_serving_follows_rise_and_fall_streaks(results: list[bool], rise: int, fall: int) -> None:
    """Serving starts exactly when ``rise`` passes in a row are reached, and ends exactly when
    ``fall`` failures in a row are: after every result, as the streak model says."""
    health = Health()
    serving = []
    for ok in results:
        health = transition(health, ok, rise, fall)
        serving.append(health.state.serving)
    assert serving == reference_serving(results, rise, fall)
