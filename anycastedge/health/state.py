"""The rise/fall state machine, after ExaBGP's healthcheck states. Pure: no I/O, no clock."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    """Health states; only UP and FALLING mean 'serving'."""

    INIT = "INIT"
    RISING = "RISING"
    UP = "UP"
    FALLING = "FALLING"
    DOWN = "DOWN"
    DISABLED = "DISABLED"
    EXIT = "EXIT"

    @property
    def serving(self) -> bool:
        """Whether the service counts as up (FALLING still does until ``fall`` is reached)."""
        return self in (State.UP, State.FALLING)

    @property
    def changing(self) -> bool:
        """States in which checks run at the fast interval."""
        return self in (State.INIT, State.RISING, State.FALLING)


@dataclass(frozen=True, slots=True)
class Health:
    """A state and how many consecutive results led into it."""

    state: State = State.INIT
    count: int = 0


def transition(health: Health, ok: bool, rise: int, fall: int) -> Health:
    """The next Health after one check round that passed (``ok``) or failed."""
    state, count = health.state, health.count
    if state in (State.DISABLED, State.EXIT):
        return health
    if ok:
        if state in (State.UP, State.FALLING):
            return Health(State.UP, 0)
        count = count + 1 if state == State.RISING else 1
        return Health(State.UP, 0) if count >= rise else Health(State.RISING, count)
    if state in (State.UP, State.FALLING):
        count = count + 1 if state == State.FALLING else 1
        return Health(State.DOWN, 0) if count >= fall else Health(State.FALLING, count)
    return Health(State.DOWN, 0)
