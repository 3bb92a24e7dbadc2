"""Shared fixtures for the unit tests: the `engine.test.` zone and Responders over it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from anycastedge.config.pop import SoaConfig
from anycastedge.config.zones import load_zones
from anycastedge.dns.wire import Responder
from anycastedge.dns.zone import ZoneSet

FIXTURE_ZONES = Path(__file__).resolve().parents[1] / "fixtures" / "zones"
ENGINE_ZONE = FIXTURE_ZONES / "engine.test.yaml"
POP = "ams1"


@pytest.fixture(scope="session")
def engine_zones() -> ZoneSet:
    """The fixture zones, loaded once with the default SOA timers."""
    zones, _warnings = load_zones([FIXTURE_ZONES], SoaConfig())
    return zones


@pytest.fixture
def make_responder(engine_zones: ZoneSet) -> Callable[..., Responder]:
    """A factory of fresh Responders (empty caches and counts) over the fixture zones."""

    def make(**kwargs: object) -> Responder:
        return Responder(engine_zones, POP, **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture
def responder(make_responder: Callable[..., Responder]) -> Responder:
    """A fresh Responder over the fixture zones, POP name `ams1`."""
    return make_responder()
