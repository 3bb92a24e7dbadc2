"""The announcement decision and the ExaBGP API lines (no I/O)."""

from __future__ import annotations

import pytest

from anycastedge.bgp.decision import (
    ANNOUNCED,
    DRAINING,
    WITHDRAWN,
    Desired,
    Maintenance,
    api_line,
    decide,
)
from anycastedge.config.bgp import BgpConfig, RouteAttributes

CONFIG = BgpConfig(
    local_as=65011,
    up=RouteAttributes(100, ()),
    drain=RouteAttributes(1000, ("65535:0",), 3),
    require_local_address=True,
)


@pytest.mark.parametrize(
    ("serving", "was", "maintenance", "now", "local", "status"),
    [
        (True, False, None, 0, True, ANNOUNCED),
        (False, True, None, 0, True, WITHDRAWN),
        (True, True, None, 0, False, WITHDRAWN),  # not on a local interface
        (True, True, Maintenance(100, 30), 110, True, DRAINING),
        (True, True, Maintenance(100, 30), 130, True, WITHDRAWN),  # drain over
        (True, False, Maintenance(100, 30), 110, True, WITHDRAWN),  # nothing to drain
        (False, True, Maintenance(100, 30), 110, True, WITHDRAWN),  # unhealthy: no drain
    ],
)
def test_decide(
    serving: bool, was: bool, maintenance: Maintenance | None, now: float, local: bool, status: str
) -> None:
    """Health, maintenance, drain time and the local-address rule decide each prefix."""
    assert decide(serving, was, maintenance, now, CONFIG, local).status == status


def test_local_address_rule_can_be_relaxed() -> None:
    """require_local_address: false announces a prefix that is not on an interface."""
    config = BgpConfig(require_local_address=False)
    assert decide(True, False, None, 0, config, False).status == ANNOUNCED


@pytest.mark.parametrize(
    ("prefix", "desired", "line"),
    [
        (
            "203.0.113.53/32",
            Desired(ANNOUNCED, CONFIG.up),
            "announce route 203.0.113.53/32 next-hop self med 100",
        ),
        (
            "203.0.113.53/32",
            Desired(DRAINING, CONFIG.drain),
            "announce route 203.0.113.53/32 next-hop self med 1000 community [65535:0] "
            "as-path [65011 65011 65011 65011]",
        ),
        ("203.0.113.53/32", Desired(WITHDRAWN), "withdraw route 203.0.113.53/32 next-hop self"),
        (
            "2001:db8:53::53/128",
            Desired(ANNOUNCED, CONFIG.up),
            "announce route 2001:db8:53::53/128 next-hop ::ffff:127.0.0.2 med 100",
        ),
    ],
)
def test_api_lines(prefix: str, desired: Desired, line: str) -> None:
    """The ExaBGP 5 text API lines, prepend N as the local AS N+1 times."""
    assert api_line(prefix, desired, CONFIG) == line
