"""The GSLB model: dynamic records as octoDNS writes them, with our health-check settings."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from dns.name import Name
from dns.rdata import Rdata

from anycastedge.health.check import CheckTarget

UP, DOWN, OBEY = "up", "down", "obey"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class PoolValue:
    """One value of a pool; ``target`` is set when its status is ``obey``."""

    value: str
    weight: int = 1
    status: str = OBEY
    target: CheckTarget | None = None


@dataclass(frozen=True, slots=True)
class Pool:
    """A named set of values and the pool to try when none of them is up."""

    name: str
    values: tuple[PoolValue, ...]
    fallback: str | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """Clients in ``subnets`` or in ``geos`` go to ``pool``; neither makes a catch-all."""

    pool: str
    subnets: tuple[Network, ...] = ()
    geos: tuple[str, ...] = ()

    @property
    def catch_all(self) -> bool:
        """Whether the rule matches every client."""
        return not self.subnets and not self.geos


@dataclass(frozen=True, slots=True)
class StickyPrefix:
    """How much of the client address keeps a sticky answer: one answer per such network."""

    ipv4: int = 24
    ipv6: int = 56


@dataclass(frozen=True, slots=True, eq=False)
class DynamicRecord:
    """An A, AAAA or CNAME record whose answer depends on the client and on health.

    Compared and hashed by identity: caches key on the record object, and a reload makes new ones.
    """

    name: Name
    rdtype: int
    ttl: int
    pools: Mapping[str, Pool]
    rules: tuple[Rule, ...]
    values: tuple[str, ...]  # the record's own values: the last resort
    rdata: Mapping[str, Rdata]  # every value that can be answered, parsed once
    answers: int = 1  # how many values one answer carries (octoDNS providers answer one)
    sticky: bool = False
    sticky_prefix: StickyPrefix = field(default_factory=StickyPrefix)
    source: str = ""  # file:line, for /status
    label: str = ""  # "www.example.com. A": names the record in metrics and /status

    @property
    def targets(self) -> frozenset[CheckTarget]:
        """Everything the health monitor must probe for this record."""
        return frozenset(
            v.target for pool in self.pools.values() for v in pool.values if v.target is not None
        )
